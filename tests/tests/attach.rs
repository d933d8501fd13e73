//! Attach to real Go programs and check what gcprobe reports (root).
use std::{io::BufRead as _, time::Duration};

use gcprobe_tests::*;

#[test]
fn culprit_is_the_append_in_a_range_over_a_map() {
    if !privileged("culprit_is_the_append_in_a_range_over_a_map") {
        return;
    }
    let exe = fixture("appendloop");
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    let r = attach_json(t.pid(), "4s");
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let c = &culprits(&r)[0];
    assert_eq!(str_of(c, "function"), "main.(*Index).Names", "{c:#}");
    assert!(str_of(c, "file").ends_with("tests/fixtures/appendloop/main.go"), "{c:#}");
    assert!(str_of(c, "file").starts_with('/'), "file is the full recorded path: {c:#}");
    assert_eq!(c["line"], line, "{c:#}");
    assert_eq!(str_of(c, "kind"), "append-growth");
    assert!(c["share_of_bytes"].as_f64().unwrap() > 0.5, "{c:#}");

    // The callsite keeps its full stack, and callsites are sorted by bytes.
    let cs = r["callsites"].as_array().unwrap();
    let top = &cs[0];
    assert_eq!(top["line"], line);
    assert_eq!(str_of(top, "probe"), "growslice");
    let frames: Vec<&str> = top["frames"].as_array().unwrap().iter().map(|f| str_of(f, "function")).collect();
    assert!(frames.contains(&"main.main"), "{frames:?}");
    let bytes: Vec<u64> = cs.iter().map(|c| c["bytes"].as_u64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");

    // Background noise is attributed to its own line, not to the culprit.
    let noise = cs.iter().find(|c| str_of(c, "function") == "main.noise").expect("noise callsite");
    assert_eq!(str_of(noise, "probe"), "mallocgc");

    assert_eq!(r["schema"], "gcprobe.report/v1");
    assert_eq!(r["target"]["pid"], t.pid());
    assert_eq!(r["target"]["go_version"].as_str().unwrap(), format!("go{}", pins::GO_DEFAULT));
    assert_eq!(r["events"]["lost"], 0);
    assert!(r["probes"].as_array().unwrap().iter().filter(|p| p["attached"] == true).count() >= 4);
}

#[test]
fn pie_binaries_symbolize_through_the_load_bias() {
    if !privileged("pie_binaries_symbolize_through_the_load_bias") {
        return;
    }
    let exe = fixtures::build("appendloop", pins::GO_DEFAULT, Flavor::Pie).unwrap();
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    // ASLR puts a PIE far from its link-time addresses.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    assert!(maps.lines().any(|l| l.ends_with("appendloop-pie") && !l.starts_with("00")), "{maps}");
    let r = attach_json(t.pid(), "3s");
    assert_appendloop_culprit(&r);
    assert!(r["sizes"]["mallocgc"]["count"].as_u64().unwrap() > 0, "{:#}", r["sizes"]);
}

#[test]
fn preallocated_twin_has_no_culprit() {
    if !privileged("preallocated_twin_has_no_culprit") {
        return;
    }
    let exe = fixture("appendloop");
    let t = Target::start(&exe, &["-mode=prealloc"], &[]);
    let r = attach_json(t.pid(), "3s");
    let marked: Vec<u32> = ["gcprobe:prealloc-append", "gcprobe:prealloc-make", "gcprobe:culprit"]
        .iter()
        .map(|m| fixtures::marker_line("appendloop", m))
        .collect();
    for c in culprits(&r) {
        assert!(!marked.contains(&(c["line"].as_u64().unwrap() as u32)), "twin reported: {c:#}");
    }
    // The append itself never grows: no growslice callsite at that line.
    let append = marked[0];
    assert!(
        !r["callsites"].as_array().unwrap().iter().any(|c| c["line"] == append && str_of(c, "probe") == "growslice"),
        "{:#}",
        r["callsites"]
    );
    // The allocation that does happen is the right-sized make.
    assert!(r["callsites"].as_array().unwrap().iter().any(|c| c["line"] == marked[1]));
}

#[test]
fn another_process_of_the_same_binary_does_not_leak_in() {
    if !privileged("another_process_of_the_same_binary_does_not_leak_in") {
        return;
    }
    let exe = fixture("appendloop");
    // Same executable, same inode: the uprobes are shared; only the PID filter separates them.
    let _noisy = Target::start(&exe, &["-mode=grow"], &[]);
    let quiet = Target::start(&exe, &["-mode=prealloc"], &[]);
    let r = attach_json(quiet.pid(), "3s");
    let culprit = fixtures::marker_line("appendloop", "gcprobe:culprit");
    assert!(culprits(&r).is_empty(), "{:#}", r["culprits"]);
    assert!(!r["callsites"].as_array().unwrap().iter().any(|c| c["line"] == culprit), "other process leaked in");
}

#[test]
fn gc_cycles_and_stw_match_gctrace() {
    if !privileged("gc_cycles_and_stw_match_gctrace") {
        return;
    }
    let exe = fixture("gcstress");
    let mut t = Target::start(&exe, &["-cycles=40"], &[("GODEBUG", "gctrace=1")]);
    let stderr = std::io::BufReader::new(t.child.stderr.take().unwrap());
    let trace = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
    let pid = t.pid().to_string();
    // No --duration: the session must end by itself when the target exits.
    let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--format", "json", "--interval", "1h"]);
    t.send_line("go");
    let status = t.child.wait().unwrap();
    assert!(status.success());
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "target-exited");

    let lines = trace.join().unwrap();
    let start = lines.iter().position(|l| l == "START").expect("START marker");
    let gc: Vec<(f64, f64)> = lines[start..].iter().filter_map(|l| parse_gctrace(l)).collect();
    let (sweep, mark): (f64, f64) = gc.iter().fold((0.0, 0.0), |a, g| (a.0 + g.0, a.1 + g.1));
    let trace_stw_ms = sweep + mark;
    let cycles = r["gc"]["cycles"].as_u64().unwrap() as i64;
    let stw_ms = r["gc"]["stw"]["total_ms"].as_f64().unwrap();
    eprintln!("gctrace: {} cycles, STW {trace_stw_ms:.3} ms; gcprobe: {cycles} cycles, STW {stw_ms:.3} ms", gc.len());
    assert!((cycles - gc.len() as i64).abs() <= 2, "cycles {cycles} vs gctrace {}", gc.len());
    assert!(gc.len() >= 40);
    let ratio = stw_ms / trace_stw_ms;
    assert!((0.65..=1.35).contains(&ratio), "STW total {stw_ms:.3} ms vs gctrace {trace_stw_ms:.3} ms (ratio {ratio:.2})");
    let by_reason = &r["gc"]["stw"]["by_reason"];
    assert!(by_reason["GC sweep termination"]["count"].as_u64().unwrap() as i64 >= cycles);
    assert!(by_reason["GC mark termination"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn gctrace_lines_parse() {
    assert_eq!(parse_gctrace("gc 7 @0.213s 1%: 0.021+0.52+0.004 ms clock, 0.08+0/0.1/0+0.01 ms cpu, 4->4->0 MB, 4 MB goal, 2 P (forced)"), Some((0.021, 0.004)));
    assert_eq!(parse_gctrace("START"), None);
}

#[test]
fn sigterm_ends_the_session_with_a_report() {
    if !privileged("sigterm_ends_the_session_with_a_report") {
        return;
    }
    let exe = fixture("appendloop");
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--interval", "1h"]);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    assert!(text.contains("ended by signal"), "{text}");
    assert!(text.contains(&format!("#1 main.(*Index).Names grows []string at main.go:{line} inside a map loop over ix.byName")), "{text}");
    assert!(text.contains(&format!("appendloop/main.go:{line} (append-growth)")), "{text}");
}

/// The demo service, serving for a moment so its request loop is under way.
fn running_demo_service() -> Target {
    let t = Target::spawn(&fixture("demo-service"), &[]);
    std::thread::sleep(Duration::from_millis(800));
    t
}

#[test]
fn demo_service_culprit_is_its_append() {
    if !privileged("demo_service_culprit_is_its_append") {
        return;
    }
    let t = running_demo_service();
    let r = attach_json(t.pid(), "3s");
    let c = &culprits(&r)[0];
    assert_eq!(str_of(c, "function"), "main.(*Market).OpenOrderIDs", "{c:#}");
    assert_eq!(c["line"], fixtures::marker_line("demo-service", "the culprit:"));
}

/// Default (sampled) sessions on the same service name the same culprit
/// with the same suggested size every time: a percentile of the calls'
/// final capacities, not one call's.
#[test]
fn sampled_sessions_agree_on_the_culprit_and_its_size() {
    if !privileged("sampled_sessions_agree_on_the_culprit_and_its_size") {
        return;
    }
    let t = running_demo_service();
    let line = fixtures::marker_line("demo-service", "the culprit:");
    let sizes: Vec<u64> = (0..3)
        .map(|_| {
            let r = attach_json_with(t.pid(), "4s", &[]);
            let c = culprits(&r).first().unwrap_or_else(|| panic!("no culprit: {:#}", r["callsites"])).clone();
            assert_eq!((str_of(&c, "function"), &c["line"]), ("main.(*Market).OpenOrderIDs", &line.into()), "{c:#}");
            c["per_call"]["final_cap_p90"].as_u64().expect("a size")
        })
        .collect();
    // 2000 orders per market, up to 2528 open: a capacity that holds 9 in 10 calls.
    assert!(sizes.iter().all(|&s| s == sizes[0] && (2048..=3200).contains(&s)), "{sizes:?}");
}

#[test]
fn every_loop_kind_is_named_with_its_for_line_and_element_type() {
    if !privileged("every_loop_kind_is_named_with_its_for_line_and_element_type") {
        return;
    }
    let mut failures = Vec::new();
    for version in [pins::GO_DEBIAN, pins::GO_PYPI[0], *pins::GO_PYPI.last().unwrap()] {
        let exe = fixtures::build("loopkinds", version, Flavor::Default).unwrap();
        let t = Target::start(&exe, &[], &[]);
        let r = attach_json(t.pid(), "4s");
        for &(name, kind, elem, (_, since), _) in loopkinds::compiled_by(version) {
            let (file, append_line) = loopkinds::marker(&format!("gcprobe:append-{name}"));
            let (_, for_line) = loopkinds::marker(&format!("gcprobe:for-{name}"));
            let Some(c) = culprits(&r).iter().find(|c| c["line"] == append_line && str_of(c, "file").ends_with(&file)) else {
                failures.push(format!("Go {version} {name}: no culprit at {file}:{append_line}"));
                continue;
            };
            let got = (c["loop"]["line"].as_u64(), str_of(&c["loop"], "kind"), str_of(&c["elem_type"], "name"));
            if got != (Some(u64::from(for_line)), kind, elem) {
                failures.push(format!("Go {version} {name}: loop/kind/elem {got:?}, want ({for_line}, {kind}, {elem}) (since Go 1.{since})"));
            }
        }
        // An append inside strings.Builder: the loop is the caller's, the fix is Grow.
        let (_, for_line) = loopkinds::marker("gcprobe:for-builder");
        match culprits(&r).iter().find(|c| str_of(c, "function").starts_with("strings.(*Builder).")) {
            Some(c) if c["loop"]["line"] == for_line && str_of(c, "suggestion").contains("b.Grow(") => {}
            other => failures.push(format!("Go {version} builder: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_map_that_only_grows_is_flagged_beside_the_climbing_heap() {
    if !privileged("a_map_that_only_grows_is_flagged_beside_the_climbing_heap") {
        return;
    }
    let leak_line = fixtures::marker_line("mapleak", "gcprobe:map-insert");
    let bounded_line = fixtures::marker_line("mapleak", "gcprobe:bounded-insert");
    let mut failures = Vec::new();
    // Classic hmap (1.19, 1.21) and swiss maps (1.27).
    for version in [pins::GO_DEBIAN, pins::GO_PYPI[0], *pins::GO_PYPI.last().unwrap()] {
        let exe = fixtures::build("mapleak", version, Flavor::Default).unwrap();
        let mut t = Target::start(&exe, &[], &[]);
        let pid = t.pid().to_string();
        // The cache starts filling once gcprobe is attached: calibration
        // takes a moment, and an unprobed head start would change the story.
        let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--duration", "6s", "--format", "json", "--interval", "1h"]);
        t.send_line("go");
        let out = s.finish();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let maps = r["maps"].as_array().unwrap();
        match maps.iter().find(|m| m["line"] == leak_line) {
            Some(m) if m["likely_leak"] == true && str_of(m, "function") == "main.remember" => {}
            other => failures.push(format!("Go {version}: leaking map {other:?}")),
        }
        if let Some(m) = maps.iter().find(|m| m["line"] == bounded_line && m["likely_leak"] == true) {
            failures.push(format!("Go {version}: bounded map flagged: {m}"));
        }
        if r["gc"]["heap_climbing"] != true || r["gc"]["heap_live"].as_array().unwrap().len() < 6 {
            failures.push(format!("Go {version}: heap not seen climbing: {}", r["gc"]["heap_live"]));
        }
        if !r["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("likely leak")) {
            failures.push(format!("Go {version}: no leak warning: {}", r["warnings"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
