//! Sampled mode (the default): the culprit from bounded-cost bursts, and the
//! runtime's own samples weighted like pprof, checked against `go tool pprof`.
use gcprobe_tests::*;

/// Byte shares per line of main.go from `go tool pprof -top -lines`.
fn pprof_shares(exe: &std::path::Path, profile: &std::path::Path) -> Vec<(u32, f64)> {
    let go = xtask::tools::go_bin(pins::GO_DEFAULT);
    let out = std::process::Command::new(go)
        .args(["tool", "pprof", "-sample_index=alloc_space", "-lines", "-top", "-nodecount=10"])
        .arg(exe)
        .arg(profile)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let line = f.last()?.rsplit_once("main.go:")?.1.parse().ok()?;
            let pct: f64 = f.get(1)?.strip_suffix('%')?.parse().ok()?;
            Some((line, pct / 100.0))
        })
        .collect()
}

/// gcprobe's report, and allocrate's own account (its JSON line).
fn run_allocrate(args: &[&str], gcprobe_args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let exe = fixture("allocrate");
    let mut t = Target::start(&exe, args, &[]);
    let (own, r) = attach_until_exit(&mut t, gcprobe_args);
    (r, own)
}

#[test]
fn runtime_samples_agree_with_go_tool_pprof() {
    if !privileged("runtime_samples_agree_with_go_tool_pprof") {
        return;
    }
    let prof = std::env::temp_dir().join(format!("gcprobe-allocrate-{}.prof", std::process::id()));
    let (r, own) = run_allocrate(&["-rate=300000", "-duration=4s", &format!("-pprof={}", prof.display())], &[]);
    let s = &r["sampling"];
    assert_eq!(s["mode"], "sampled");
    assert_eq!(s["mem_profile_rate"], 512 * 1024, "{s:#}");
    assert!(s["runtime_samples"].as_u64().unwrap() > 50, "{s:#}");
    assert!(s["duty"].as_f64().unwrap() < 0.5, "{s:#}");
    assert!(s["calibration"]["empty_ns"].as_f64().unwrap() > 0.0, "{s:#}");

    // gcprobe's runtime-sampled rates per line, as shares.
    let rows: Vec<(u32, f64)> = r["callsites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["file"].as_str().is_some_and(|f| f.ends_with("allocrate/main.go")))
        .filter_map(|c| Some((c["line"].as_u64()? as u32, c["runtime_sampled_bytes_per_s"].as_f64()?)))
        .collect();
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let mut ours: Vec<(u32, f64)> = rows.iter().map(|&(l, b)| (l, b / total)).collect();
    ours.sort_by(|a, b| b.1.total_cmp(&a.1));
    let theirs = pprof_shares(&fixture("allocrate"), &prof);
    let _ = std::fs::remove_file(&prof);
    eprintln!("gcprobe runtime samples: {ours:?}\ngo tool pprof: {theirs:?}");
    assert_eq!(ours[0].0, theirs[0].0, "top line");
    for &(line, share) in theirs.iter().take(3) {
        let mine = ours.iter().find(|o| o.0 == line).map_or(0.0, |o| o.1);
        assert!((mine - share).abs() < 0.12, "line {line}: gcprobe {mine:.3} vs pprof {share:.3}");
    }
    // The bursts name the same append as the culprit.
    let c = culprits(&r).first().unwrap_or_else(|| panic!("{:#}", r["callsites"]));
    assert_eq!(c["line"], fixtures::marker_line("allocrate", "gcprobe:culprit"), "{c:#}");

    // Rates are the unprobed program's, paced by the runtime's own total:
    // the bursts alone see a target slowed by its traps.
    assert_eq!(s["alloc_rate_source"], "runtime_total_alloc", "{s:#}");
    let go_bytes_per_s = own["bytes"].as_f64().unwrap() / own["wall_s"].as_f64().unwrap();
    let ours: f64 = r["callsites"].as_array().unwrap().iter().filter_map(|c| c["bytes_per_s"].as_f64()).sum();
    eprintln!("allocation rate: gcprobe {ours:.0} B/s, Go's TotalAlloc {go_bytes_per_s:.0} B/s, bursts alone {}", s["burst_alloc_bytes_per_s"]);
    assert!((ours / go_bytes_per_s - 1.0).abs() < 0.25, "gcprobe {ours:.0} B/s vs Go {go_bytes_per_s:.0} B/s");
    // The switching's own traps were counted, and the probe sets were linked
    // as uprobe_multi on kernels that have them (6.6+, as CI's).
    let k = &r["kernel"];
    assert!(k["gated"].as_u64().unwrap() > 0, "{k:#}");
    if kernel_at_least(6, 6) {
        assert_eq!(k["mechanism"], "uprobe_multi", "{k:#}");
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = rel.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse::<u32>().ok());
    (v.next().unwrap(), v.next().unwrap()) >= (major, minor)
}

#[test]
fn without_runtime_samples_the_bursts_still_name_the_culprit() {
    if !privileged("without_runtime_samples_the_bursts_still_name_the_culprit") {
        return;
    }
    let (r, _) = run_allocrate(&["-rate=0", "-duration=4s", "-memprofilerate=0"], &["--overhead-budget", "2%"]);
    let s = &r["sampling"];
    assert_eq!(s["mem_profile_rate"], 0, "{s:#}");
    // A thread may still take the one sample it scheduled under the old rate.
    assert!(s["runtime_samples"].as_u64().unwrap() <= 2, "{s:#}");
    assert!(s["bursts"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(r["kernel"]["aggregated"].as_u64().unwrap() > 0, "{:#}", r["kernel"]);
    let c = culprits(&r).first().unwrap_or_else(|| panic!("{:#}", r["callsites"]));
    assert_eq!(c["line"], fixtures::marker_line("allocrate", "gcprobe:culprit"), "{c:#}");
}
