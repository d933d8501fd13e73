//! The GC controller's figures (live heap, goal, GOGC, GOMEMLIMIT, the
//! runtime's allocation total) are found in every build, stripped ones
//! included, and agree with what the runtime itself reports.
use gcprobe::{
    tracee::binary::Binary,
    tracee::buildinfo,
    tracee::gcctl::{self, AddressSource, Check, Layout, LayoutSource},
    tracee::gomaps::MapImpl,
    tracee::memory::TargetMemory,
    tracee::pclntab::Pclntab,
    tracee::symbols::Symbols,
};
use gcprobe_tests::*;

fn open(exe: &std::path::Path) -> (Binary, buildinfo::GoVersion) {
    let bin = Binary::open(exe).unwrap();
    let go = buildinfo::parse(bin.section_data(".go.buildinfo"), bin.data()).unwrap().version;
    (bin, go)
}

/// Every Go of the matrix: the machine code names the same address as the
/// symbol table, and the per-version layout is the one DWARF describes.
#[test]
fn machine_code_and_layout_table_agree_with_symbols_and_dwarf() {
    for go in fixtures::go_versions() {
        let exe = fixtures::build("gcstress", go, Flavor::Default).unwrap();
        let (bin, version) = open(&exe);
        let pcln = Pclntab::parse(&bin, version).unwrap();
        let syms = Symbols { bin: &bin, pclntab: pcln.as_ref() };
        let symbol = bin.symbol("runtime.gcController").expect("symbol").addr;
        let (addr, calls) = gcctl::find_controller(&syms).unwrap_or_else(|e| panic!("go {go}: {e}"));
        assert_eq!(addr, symbol, "go {go}: machine code vs symbol table");
        assert!(calls >= 4, "go {go}: only {calls} calls");
        // Which map header the runtime lays out, hmap before 1.24, swiss maps from it.
        let want = if version < buildinfo::GoVersion::new(1, 24, 0) { MapImpl::Classic } else { MapImpl::Swiss };
        assert_eq!(MapImpl::for_binary(&syms, version), want, "go {go}");
        assert_eq!(gcprobe::plan::mem_profile_rate_in_code(&syms), Some(bin.symbol("runtime.MemProfileRate").expect("symbol").addr), "go {go}: MemProfileRate");
        let dwarf = Layout::from_dwarf(&bin).unwrap().expect("DWARF layout");
        assert_eq!(Layout::for_version(version), Some(dwarf), "go {go}: table vs DWARF");
        // &work.cpuStats, where the runtime keeps its GC CPU counters (1.21+).
        if version >= buildinfo::GoVersion::new(1, 21, 0) {
            let work = bin.symbol("runtime.work").expect("runtime.work").addr;
            let fields = gcprobe::tracee::symbolize::dwarf::member_offsets(bin.data(), "runtime.workType").unwrap().expect("workType");
            let (cpu, _) = gcctl::find_cpu_stats(&syms).unwrap_or_else(|e| panic!("go {go}: {e}"));
            assert_eq!(cpu, work + fields["cpuStats"], "go {go}: work.cpuStats");
            let stats = gcprobe::tracee::symbolize::dwarf::member_offsets(bin.data(), "runtime.cpuStats").unwrap().expect("cpuStats");
            let at = |a: &str, b: &str| stats.get(a).or_else(|| stats.get(b)).copied();
            assert_eq!((at("gcIdleTime", "GCIdleTime"), at("gcTotalTime", "GCTotalTime"), at("totalTime", "TotalTime")), (Some(16), Some(32), Some(80)), "go {go}");
        }
    }
}

/// Stripped builds: found through the machine code and the table, and the
/// values read from a running program are the GOGC and GOMEMLIMIT it was
/// started with. No root: a parent may read its child's memory.
#[test]
fn stripped_builds_read_the_settings_the_program_was_given() {
    for go in fixtures::go_versions() {
        let exe = fixtures::build("gcstress", go, Flavor::Stripped).unwrap();
        let (bin, version) = open(&exe);
        assert!(bin.symbol("runtime.gcController").is_none() && !bin.has_dwarf);
        let pcln = Pclntab::parse(&bin, version).unwrap();
        let located = gcctl::locate(&Symbols { bin: &bin, pclntab: pcln.as_ref() }, version);
        let c = located.found().unwrap_or_else(|| panic!("go {go}: {:?}", located.reason())).clone();
        assert!(matches!(c.address_from, AddressSource::MachineCode { .. }), "go {go}: {c:?}");
        assert_eq!(c.layout_from, LayoutSource::Table);

        let t = Target::start(&exe, &["-cycles=1"], &[("GOGC", "37"), ("GOMEMLIMIT", "1234567890")]);
        let mem = TargetMemory::open(t.pid()).unwrap();
        let s = c.settings(0, |a| mem.read_u64(a)).expect("readable");
        assert_eq!((s.gc_percent, s.memory_limit, s.heap_minimum), (37, 1_234_567_890, (4 << 20) * 37 / 100), "go {go}");
        assert_eq!(s.check(), Check::Consistent);
        assert!(s.total_alloc >= 256 * (64 << 10), "go {go}: gcstress holds 16 MiB live, allocated {}", s.total_alloc);
    }
}

/// `-s -w` builds of the oldest, a middle and the newest Go: rates paced by
/// the runtime's own total agree with the program's MemStats.TotalAlloc,
/// and every heap figure is the runtime's (no register leftovers).
#[test]
fn stripped_sampled_rates_agree_with_total_alloc() {
    if !privileged("stripped_sampled_rates_agree_with_total_alloc") {
        return;
    }
    for go in [pins::GO_DEBIAN, "1.23.9", "1.27.3"] {
        let exe = fixtures::build("allocrate", go, Flavor::Stripped).unwrap();
        let mut t = Target::start(&exe, &["-rate=300000", "-duration=4s"], &[]);
        let (own, r) = attach_until_exit(&mut t, &[]);
        let sm = &r["sampling"];
        assert_eq!(sm["alloc_rate_source"], "runtime_total_alloc", "go {go}: {sm:#}");
        let go_rate = own["bytes"].as_f64().unwrap() / own["wall_s"].as_f64().unwrap();
        let ours: f64 = r["callsites"].as_array().unwrap().iter().filter_map(|c| c["bytes_per_s"].as_f64()).sum();
        eprintln!("go {go}: gcprobe {ours:.0} B/s, Go's TotalAlloc {go_rate:.0} B/s");
        assert!((ours / go_rate - 1.0).abs() < 0.25, "go {go}: gcprobe {ours:.0} B/s vs TotalAlloc {go_rate:.0} B/s");

        let gc = &r["gc"];
        assert_eq!(gc["heap_unavailable"], serde_json::Value::Null, "go {go}: {gc:#}");
        assert_eq!(gc["settings"]["gogc"], 100, "go {go}: {gc:#}");
        assert_eq!(gc["settings"]["memory_limit_bytes"], serde_json::Value::Null, "go {go}");
        // Many cycles a second on a heap far under the minimum goal: said so.
        assert!(str_of(gc, "diagnosis").contains("is under the 4.0 MiB minimum goal; GOGC=100; allocation"), "go {go}: {gc:#}");
        let heap = gc["heap_live"].as_array().unwrap();
        assert!(!heap.is_empty() && heap.len() as u64 <= gc["cycles"].as_u64().unwrap(), "go {go}: {gc:#}");
        // allocrate's two ReadMemStats calls stop the world too, and are no GC.
        let reasons = gc["stw"]["by_reason"].as_object().unwrap();
        let named = |r: &str| reasons.get(r).map(|v| v["gc"].clone());
        assert_eq!((named("GC sweep termination"), named("GC mark termination")), (Some(true.into()), Some(true.into())), "go {go}: {reasons:#?}");
        let others: Vec<_> = reasons.iter().filter(|(_, v)| v["gc"] == false).map(|(k, _)| k.as_str()).collect();
        let want = if go == pins::GO_DEBIAN { "outside GC" } else { "read mem stats" };
        assert!(others.iter().any(|r| r.contains(want)), "go {go}: {reasons:#?}");
        // GC's share of the CPU from the same counters the program reads
        // through runtime/metrics (Go 1.21+; 1.19 has none and says so).
        if go == pins::GO_DEBIAN {
            assert_eq!(gc["cpu_share"], serde_json::Value::Null, "go {go}");
            assert!(str_of(gc, "cpu_share_unavailable").contains("no cumulative GC CPU counters"), "go {go}: {gc:#}");
        } else {
            let theirs = own["gc_cpu_s"].as_f64().unwrap() / own["total_cpu_s"].as_f64().unwrap();
            let ours = gc["cpu_share"].as_f64().unwrap_or_else(|| panic!("go {go}: {gc:#}"));
            eprintln!("go {go}: GC CPU share gcprobe {ours:.4}, runtime/metrics {theirs:.4}");
            assert!(theirs > 0.0 && (ours / theirs - 1.0).abs() < 0.2, "go {go}: GC CPU share {ours:.4} vs the program's {theirs:.4}");
        }
        // allocrate keeps almost nothing live: every cycle is paced by the
        // 4 MiB minimum, so each heap figure sits between a few KiB and it.
        for h in heap {
            let (start, goal) = (h["bytes"].as_u64().unwrap(), h["goal"].as_u64().unwrap());
            assert!((64 << 10..=6 << 20).contains(&start), "go {go}: heap at start {start}");
            assert!((4 << 20..=6 << 20).contains(&goal), "go {go}: goal {goal}");
        }
    }
}

/// `gc N @t s P%: ... A->B->C MB, D MB goal, ...` → (A, C, D) in MB.
fn gctrace_heap(l: &str) -> Option<(u64, u64, u64)> {
    let mb = l.split(" MB, ").collect::<Vec<_>>();
    let heaps: Vec<u64> = mb.first()?.rsplit(", ").next()?.split("->").map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let goal = mb.get(1)?.split(' ').next()?.parse().ok()?;
    (l.starts_with("gc ") && heaps.len() == 3).then(|| (heaps[0], heaps[2], goal))
}

#[test]
fn gctrace_heap_lines_parse() {
    let l = "gc 7 @0.213s 1%: 0.021+0.52+0.004 ms clock, 0.08+0/0.1/0+0.01 ms cpu, 17->17->16 MB, 33 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)";
    assert_eq!(gctrace_heap(l), Some((17, 16, 33)));
    assert_eq!(gctrace_heap("gc 1 @0.01s 0%: 0.01+1+0.01 ms clock, 0+0/0/0+0 ms cpu, 4->4->0 MB, 4 MB goal, 2 P"), Some((4, 0, 4)));
    assert_eq!(gctrace_heap("START"), None);
}

/// Each cycle's heap at start, live heap and goal against gctrace's own
/// `A->B->C MB, D MB goal`, on a stripped build (found by machine code).
#[test]
fn cycle_heaps_match_gctrace_on_a_stripped_build() {
    if !privileged("cycle_heaps_match_gctrace_on_a_stripped_build") {
        return;
    }
    let exe = fixtures::build("gcstress", "1.23.9", Flavor::Stripped).unwrap();
    // A live heap 1 MiB larger at each cycle: every line differs.
    let mut t = Target::start(&exe, &["-cycles=30", "-grow=1"], &[("GODEBUG", "gctrace=1")]);
    let stderr = std::io::BufReader::new(t.child.stderr.take().unwrap());
    let trace = std::thread::spawn(move || std::io::BufRead::lines(stderr).map_while(Result::ok).collect::<Vec<_>>());
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--format", "json", "--interval", "1h"]);
    t.send_line("go");
    assert!(t.child.wait().unwrap().success());
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_totals_agree(&r);
    let lines = trace.join().unwrap();
    let start = lines.iter().position(|l| l == "START").expect("START marker");
    let theirs: Vec<(u64, u64, u64)> = lines[start..].iter().filter_map(|l| gctrace_heap(l)).collect();
    let mb = |v: &serde_json::Value| v.as_u64().unwrap() >> 20;
    let ours: Vec<(u64, u64, u64)> = r["gc"]["heap_live"].as_array().unwrap().iter().map(|h| (mb(&h["bytes"]), mb(&h["marked"]), mb(&h["goal"]))).collect();
    eprintln!("gctrace {theirs:?}\ngcprobe {ours:?}");
    assert!(theirs.len() >= 30 && ours.len() >= 30, "{} vs {}", theirs.len(), ours.len());
    // The same cycles, last ones aligned (the session may see one more at attach).
    let n = theirs.len().min(ours.len());
    for (a, b) in theirs[theirs.len() - n..].iter().zip(&ours[ours.len() - n..]) {
        let close = |x: u64, y: u64| x.abs_diff(y) <= 1;
        assert!(close(a.0, b.0) && close(a.1, b.1) && close(a.2, b.2), "gctrace {a:?} vs gcprobe {b:?}");
    }
    assert_eq!(r["gc"]["settings"]["gogc"], 100);
}

/// A service whose cache only grows and which collects rarely, attached 30 s
/// after it started, is flagged in a 15 s default-mode session, with the
/// filling line, the types, the size, the growth rate and the fact that it
/// never deletes; the bounded map beside it is not flagged. Classic maps
/// (1.23) and swiss maps (1.27), stripped. Both sessions run at once, and
/// each returns within half a second of its --duration.
#[test]
fn a_leak_is_found_whenever_you_attach() {
    if !privileged("a_leak_is_found_whenever_you_attach") {
        return;
    }
    let leak_line = fixtures::marker_line("mapleak", "gcprobe:map-insert");
    let versions = ["1.23.9", "1.27.3"];
    let targets: Vec<Target> = versions
        .iter()
        .map(|v| Target::start(&fixtures::build("mapleak", v, Flavor::Stripped).unwrap(), &["-now", "-garbage=0", "-batch=16"], &[]))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(30));
    let sessions: Vec<_> = targets
        .iter()
        .map(|t| {
            let started = std::time::Instant::now();
            let pid = t.pid().to_string();
            let child = std::process::Command::new(gcprobe_bin())
                .args(["attach", "--pid", &pid, "--duration", "15s", "--format", "json", "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (started, child)
        })
        .collect();
    for (go, (started, child)) in versions.iter().zip(sessions) {
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "go {go}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(took < 15.5, "go {go}: a 15 s session took {took:.2} s");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_totals_agree(&r);
        let maps = r["maps"].as_array().unwrap();
        let leak = maps.iter().find(|m| m["line"] == leak_line).unwrap_or_else(|| panic!("go {go}: no leaking map in {maps:#?}"));
        assert_eq!(leak["likely_leak"], true, "go {go}: {leak:#}");
        assert_eq!(str_of(leak, "function"), "main.remember");
        assert_eq!(leak["map_type"], "map[string]*main.Session", "go {go}");
        assert_eq!((leak["key_type"]["size"].as_u64(), leak["value_type"]["size"].as_u64()), (Some(16), Some(8)), "go {go}");
        assert_eq!(leak["deletes_in_program"], 0, "go {go}");
        // -batch=16 paces about 16 inserts per millisecond, less the work.
        let g = leak["growth_per_s"].as_f64().unwrap();
        assert!((2_000.0..20_000.0).contains(&g), "go {go}: {g} entries/s");
        let entries = leak["len_last"].as_u64().unwrap();
        assert!(entries > 300_000, "go {go}: {entries} entries after 45 s");
        assert_eq!(leak["bytes_held_min"].as_u64(), Some(entries * 24), "go {go}");
        assert!(str_of(leak, "summary").contains("never calls delete() or clear()"), "go {go}: {}", leak["summary"]);
        let bounded = maps.iter().find(|m| m["map_type"] == "map[int]*main.Session").unwrap_or_else(|| panic!("go {go}: bounded map unseen"));
        assert_eq!(bounded["likely_leak"], false, "go {go}: {bounded:#}");
        assert_eq!(bounded["len_last"], 512, "go {go}");
        assert!(bounded["deletes_in_program"].as_u64().unwrap() >= 1, "go {go}: {bounded:#}");
        assert!(bounded["deleted_at"][0].as_str().unwrap().starts_with("main.touch main.go:"), "go {go}: {bounded:#}");
    }
}

/// The arm64 decoders (ADRP+ADD into R0 before BL, ADRP+LDR/STR) find the
/// same runtime variables as the symbol table, in every Go of the matrix
/// cross-built for arm64. Nothing runs: only the file is read.
#[test]
fn arm64_machine_code_agrees_with_symbols() {
    for go in fixtures::go_versions() {
        let out = fixtures::build_for("gcstress", go, Flavor::Default, xtask::fixtures::GoArch::Arm64).unwrap();
        let (bin, version) = open(&out);
        assert_eq!(bin.arch, gcprobe::tracee::binary::Arch::Aarch64);
        let pcln = Pclntab::parse(&bin, version).unwrap();
        let syms = Symbols { bin: &bin, pclntab: pcln.as_ref() };
        let sym = |n: &str| bin.symbol(n).unwrap_or_else(|| panic!("{n}")).addr;
        assert_eq!(gcctl::find_controller(&syms).map(|f| f.0), Ok(sym("runtime.gcController")), "go {go}");
        assert_eq!(gcprobe::plan::mem_profile_rate_in_code(&syms), Some(sym("runtime.MemProfileRate")), "go {go}");
        if version >= buildinfo::GoVersion::new(1, 21, 0) {
            let fields = gcprobe::tracee::symbolize::dwarf::member_offsets(bin.data(), "runtime.workType").unwrap().expect("workType");
            assert_eq!(gcctl::find_cpu_stats(&syms).map(|f| f.0), Ok(sym("runtime.work") + fields["cpuStats"]), "go {go}");
        }
    }
}
