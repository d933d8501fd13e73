//! `gcprobe plan --exe` on arm64 builds, read on whatever host runs the
//! tests: the arch, the growslice ABI and probe addresses that agree with
//! the ELF's own headers and symbols, for default, stripped and PIE builds.
//! No root: nothing is attached.
use object::{
    elf,
    read::elf::{FileHeader as _, ProgramHeader as _},
    Object as _, ObjectSymbol as _,
};

use gcprobe_tests::{fixtures::{self, GoArch}, pins, *};

const PROBED: [&str; 3] = ["runtime.mallocgc", "runtime.growslice", "runtime.startTheWorldWithSema"];

/// `MOVD 16(R28), R16`: every Go function that may grow its stack starts by
/// loading g.stackguard0, so a probe's file offset must hold this word.
const STACK_CHECK: u32 = 0xf9400b90;

/// The growslice ABI line `plan` prints for Go `version`.
fn abi_line(version: &str) -> &'static str {
    match version {
        "1.19" => "growslice ABI Go119; stopTheWorld reason argument: false; startTheWorld worldStop argument: false",
        "1.21.13" => "growslice ABI Go120; stopTheWorld reason argument: true; startTheWorld worldStop argument: false",
        _ => "growslice ABI Go120; stopTheWorld reason argument: true; startTheWorld worldStop argument: true",
    }
}

/// (vaddr, file offset) of `symbol`'s probe line.
fn probe(plan: &str, symbol: &str) -> Option<(u64, u64)> {
    let line = plan.lines().find(|l| l.trim_start().strip_prefix("probe ").is_some_and(|r| r.split_whitespace().next() == Some(symbol)))?;
    let hex = |key: &str| u64::from_str_radix(line.split(key).nth(1)?.split_whitespace().next()?.strip_prefix("0x")?, 16).ok();
    Some((hex(" vaddr ")?, hex(" file offset ")?))
}

fn plan(exe: &std::path::Path) -> String {
    let out = gcprobe(&["plan", "--exe", exe.to_str().unwrap()]);
    assert!(out.status.success(), "plan --exe {}: {}", exe.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The executable PT_LOAD: (vaddr, file offset, file size, alignment).
fn text_load(data: &[u8]) -> (u64, u64, u64, u64) {
    let f = elf::FileHeader64::<object::LittleEndian>::parse(data).unwrap();
    let e = f.endian().unwrap();
    let mut text = f.program_headers(e, data).unwrap().iter().filter(|p| p.p_type(e) == elf::PT_LOAD && p.p_flags(e).0 & elf::PF_X.0 != 0);
    let p = text.next().expect("an executable PT_LOAD");
    assert!(text.next().is_none(), "one executable PT_LOAD");
    (p.p_vaddr(e), p.p_offset(e), p.p_filesz(e), p.p_align(e))
}

#[test]
fn plan_of_arm64_builds_agrees_with_their_elf_headers() {
    let mut failures = Vec::new();
    for version in [pins::GO_DEBIAN, pins::GO_PYPI[0], *pins::GO_PYPI.last().unwrap()] {
        // Addresses from the unstripped build's symbol table: -s -w drops
        // the table but leaves the text where it was.
        let default = fixtures::build_for("loopkinds", version, Flavor::Default, GoArch::Arm64).unwrap();
        let data = std::fs::read(&default).unwrap();
        let syms = object::File::parse(&*data).unwrap();
        let addr_of = |name: &str| syms.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
        for flavor in [Flavor::Default, Flavor::Stripped, Flavor::Pie] {
            let exe = fixtures::build_for("loopkinds", version, flavor, GoArch::Arm64).unwrap();
            let at = format!("Go {version} {}", flavor.name());
            let out = plan(&exe);
            let head = out.lines().next().unwrap_or_default();
            let has_tables = flavor != Flavor::Stripped;
            let want = format!(" arm64 pie={} dwarf={has_tables} symtab={has_tables} gopclntab=", flavor == Flavor::Pie);
            if !head.starts_with(&format!("{} go{version}", exe.display())) || !head.contains(&want) || head.contains("gopclntab=absent") {
                failures.push(format!("{at}: header {head:?}, want go{version} and {want:?} with a .gopclntab"));
            }
            if !out.lines().any(|l| l == abi_line(version)) {
                failures.push(format!("{at}: no line {:?} in\n{out}", abi_line(version)));
            }
            let data = std::fs::read(&exe).unwrap();
            let (load_vaddr, load_offset, load_size, align) = text_load(&data);
            // Go's arm64 linker starts text at 64 KiB, PIE or not; amd64's at 4 MiB.
            if (load_vaddr, load_offset, align) != (0x10000, 0, 0x10000) {
                failures.push(format!("{at}: text PT_LOAD at {load_vaddr:#x}, offset {load_offset:#x}, align {align:#x}"));
            }
            let own = object::File::parse(&*data).unwrap();
            for sym in PROBED {
                let Some((vaddr, off)) = probe(&out, sym) else {
                    failures.push(format!("{at}: no probe on {sym} in\n{out}"));
                    continue;
                };
                let want_vaddr = match flavor {
                    Flavor::Stripped => addr_of(sym),
                    _ => own.symbols().find(|s| s.name() == Ok(sym)).map(|s| s.address()),
                };
                let word = data.get(off as usize..off as usize + 4).map(|w| u32::from_le_bytes(w.try_into().unwrap()));
                if Some(vaddr) != want_vaddr || off != vaddr - load_vaddr + load_offset || off + 4 > load_offset + load_size || word != Some(STACK_CHECK) {
                    failures.push(format!("{at} {sym}: vaddr {vaddr:#x} (symbol {want_vaddr:x?}), file offset {off:#x}, first word {word:x?}"));
                }
            }
        }
        // The amd64 build of the same source reads growslice's arguments the same way.
        let amd64 = plan(&fixtures::build_for("loopkinds", version, Flavor::Default, GoArch::Amd64).unwrap());
        if !amd64.lines().any(|l| l == abi_line(version)) {
            failures.push(format!("Go {version} amd64: no line {:?}", abi_line(version)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
