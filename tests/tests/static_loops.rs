//! The loop analysis a live report runs, asked of the growslice calls found
//! in the machine code instead of those caught at run time: tests/fixtures/
//! loopkinds built for amd64 and for arm64 must name the same `for` line and
//! loop kind as the markers say. No root and no process, so arm64 builds are
//! checked on any host; the element type, read from growslice's argument at
//! run time, is left to the live test in attach.rs.
use gcprobe::{
    analysis::{
        facts::{BinaryFacts, Facts as _},
        loops::{self, Flow},
    },
    report,
    session::inspect_exe,
};
use gcprobe_tests::{
    fixtures::{self, GoArch},
    loopkinds, pins, Flavor,
};

/// What a report would say of one growslice call: the append's line and
/// (inlined) function, the loop's line and kind.
#[derive(Debug)]
struct Seen {
    append_line: Option<u32>,
    function: String,
    loop_line: Option<u32>,
    kind: String,
}

/// Every call to runtime.growslice in `function`, analysed as a growslice
/// stack whose first return address is the call's own.
fn growslice_calls(facts: &mut BinaryFacts, function: &str) -> Vec<Seen> {
    let funcs = facts.sym.functions();
    let entry_of = |name: &str| funcs.iter().find(|f| f.0 == name).map(|f| (f.1, f.2)).unwrap_or_else(|| panic!("no {name} in the binary"));
    let (growslice, _) = entry_of("runtime.growslice");
    let (entry, size) = entry_of(function);
    let code = facts.bin.bytes_at(entry, size as usize).expect("the function's code is in the file");
    let returns: Vec<u64> = loops::decode(facts.bin.arch, code, entry).iter().filter(|i| i.flow == Flow::Call(Some(growslice))).map(|i| i.ip + i.len).collect();
    returns
        .into_iter()
        .map(|ret| {
            let frames = facts.frames(ret);
            let lp = report::growslice_loop(facts, &[ret]);
            Seen {
                append_line: frames[0].line,
                function: frames[0].function.clone(),
                loop_line: lp.as_ref().and_then(|l| l.line),
                kind: lp.map(|l| l.kind.name().to_owned()).unwrap_or_default(),
            }
        })
        .collect()
}

#[test]
fn amd64_and_arm64_builds_name_the_same_loops_as_the_markers() {
    let mut failures = Vec::new();
    for version in [pins::GO_DEBIAN, pins::GO_PYPI[0], *pins::GO_PYPI.last().unwrap()] {
        let mut abis = Vec::new();
        for arch in [GoArch::Amd64, GoArch::Arm64] {
            let exe = fixtures::build_for("loopkinds", version, Flavor::Default, arch).unwrap();
            let info = inspect_exe(&exe, "loopkinds").unwrap();
            assert_eq!(info.binary.arch.go_name(), arch.name());
            abis.push(info.plan.growslice_abi);
            let mut facts = BinaryFacts::new(info.binary, info.pclntab).unwrap();
            let at = format!("Go {version} {}", arch.name());
            for &(name, kind, _, _, function) in loopkinds::compiled_by(version) {
                let (_, append_line) = loopkinds::marker(&format!("gcprobe:append-{name}"));
                let (_, for_line) = loopkinds::marker(&format!("gcprobe:for-{name}"));
                let calls = growslice_calls(&mut facts, function);
                if calls.is_empty() {
                    failures.push(format!("{at} {name}: no growslice call in {function}"));
                }
                for c in calls {
                    if (c.append_line, c.loop_line, c.kind.as_str()) != (Some(append_line), Some(for_line), kind) {
                        failures.push(format!("{at} {name}: append/loop/kind {c:?}, want ({append_line}, {for_line}, {kind})"));
                    }
                }
            }
            // strings.Builder's append is inlined into joinAll; its row is
            // the Builder method's, its loop the caller's.
            let (_, for_line) = loopkinds::marker("gcprobe:for-builder");
            match growslice_calls(&mut facts, "main.joinAll").as_slice() {
                [c] if c.function.starts_with("strings.(*Builder).") && (c.loop_line, c.kind.as_str()) == (Some(for_line), "slice") => {}
                other => failures.push(format!("{at} builder: {other:?}, want the loop at {for_line}, slice")),
            }
        }
        // Which growslice argument holds the element type is the same slot on both arches.
        let want = if version == pins::GO_DEBIAN { gcprobe::plan::GrowsliceAbi::Go119 } else { gcprobe::plan::GrowsliceAbi::Go120 };
        if abis != [want, want] {
            failures.push(format!("Go {version}: growslice ABI {abis:?} (amd64, arm64), want {want:?} on both"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
