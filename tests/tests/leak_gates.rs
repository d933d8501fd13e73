//! Leak gates for CI: `--fail-on 'maps.likely_leaks > 0'` and `--fail-on
//! 'heap.live_growth > X'` fail a program whose cache only grows (exit 10,
//! with the measured values) and pass its bounded twin (exit 0), under
//! `gcprobe run` and again from the run's recording (`gcprobe report FILE`).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use gcprobe_tests::*;

/// Measured here under `run`'s sampled default: the leaking fixture's live heap
/// grew 7.0–8.3 MiB/s in five runs (5.7 built with Go 1.19; ~17k requests a
/// second kept, ~400 bytes each), its bounded twin's 83–137 KiB/s (the noise of
/// its scratch buffers after the first fill): 2 MB/s sits well apart from both.
const RULES: [&str; 2] = ["maps.likely_leaks > 0", "heap.live_growth > 2MB/s"];

/// A leak needs length reads over 3 s to be called one (culprits::map_leaks):
/// a second more than that, for a late first burst.
const FOR: &str = "5s";

/// One verdict line of stderr: (FAIL or ok, rule, what was shown).
fn verdicts(out: &Output) -> Vec<(bool, String, String)> {
    stderr_text(out)
        .lines()
        .filter_map(|l| {
            let (held, rest) = if let Some(r) = l.strip_prefix("gcprobe: FAIL ") { (true, r) } else { (false, l.strip_prefix("gcprobe: ok   ")?) };
            let (rule, shown) = rest.split_once(": ")?;
            Some((held, rule.to_owned(), shown.to_owned()))
        })
        .collect()
}

fn rule_args() -> Vec<&'static str> {
    RULES.iter().flat_map(|r| ["--fail-on", r]).collect()
}

/// `gcprobe run --fail-on ... -- leakcache ARGS`, recording to `record` when given.
fn run(name: &str, args: &[&str], record: Option<&Path>) -> (Output, serde_json::Value) {
    let report = std::env::temp_dir().join(format!("gcprobe-leakgates-{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(gcprobe_bin());
    cmd.args(["run", "--quiet", "--format", "json", "-o"]).arg(&report).args(rule_args());
    if let Some(f) = record {
        cmd.arg("--record").arg(f);
    }
    let out = cmd.arg("--").arg(fixture("leakcache")).args(["-for", FOR]).args(args).output().expect("running gcprobe");
    (out, read_report(name, &report))
}

fn read_report(name: &str, path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: no report ({e})"));
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&text).expect("report is JSON")
}

/// "9.1 MiB/s" (or "-12.0 KiB/s") in bytes per second.
fn byte_rate(shown: &str) -> f64 {
    let (n, unit) = shown.trim_end_matches("/s").split_once(' ').unwrap_or_else(|| panic!("not a byte rate: {shown:?}"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        _ => panic!("not a byte unit: {shown:?}"),
    };
    n.parse::<f64>().unwrap_or_else(|e| panic!("{shown:?}: {e}")) * scale
}

/// The two verdicts of a run: likely leaks counted, growth in bytes per second.
fn measured(name: &str, out: &Output) -> (bool, u64, bool, f64) {
    let v = verdicts(out);
    let rules: Vec<&str> = v.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(rules, RULES, "{name}: {}", stderr_text(out));
    let leaks = v[0].2.strip_prefix("maps.likely_leaks = ").unwrap_or_else(|| panic!("{name}: {:?}", v[0].2));
    let growth = v[1].2.strip_prefix("heap.live_growth = ").unwrap_or_else(|| panic!("{name}: {:?}", v[1].2));
    eprintln!("{name}: likely leaks {leaks}, live heap growth {growth}");
    (v[0].0, leaks.parse().unwrap(), v[1].0, byte_rate(growth))
}

#[test]
fn a_leaking_cache_fails_the_gates_and_its_bounded_twin_passes() {
    if !privileged("a_leaking_cache_fails_the_gates_and_its_bounded_twin_passes") {
        return;
    }
    let recording = std::env::temp_dir().join(format!("gcprobe-leakgates-{}.rec", std::process::id()));
    let _ = std::fs::remove_file(&recording);

    let (out, r) = run("leak", &[], Some(&recording));
    assert_eq!(out.status.code(), Some(10), "{}", stderr_text(&out));
    let (leak_held, leaks, growth_held, growth) = measured("leak", &out);
    // One map only grows: the cache, flagged at its insert line.
    assert!(leak_held && growth_held);
    assert_eq!(leaks, 1);
    assert_eq!(r["likely_leaks"], 1);
    let leak = r["maps"].as_array().unwrap().iter().find(|m| m["likely_leak"] == true).expect("a map flagged");
    assert_eq!((str_of(leak, "function"), leak["line"].as_u64()), ("main.serve", Some(u64::from(fixtures::marker_line("leakcache", "gcprobe:cache-insert")))));
    // Above the gate with margin, below what the program could keep at all.
    assert!((4e6..40e6).contains(&growth), "leak growth {growth}");

    // The recording gives the same verdicts, to the digit.
    let report = std::env::temp_dir().join(format!("gcprobe-leakgates-replay-{}.json", std::process::id()));
    let replay = Command::new(gcprobe_bin()).arg("report").arg(&recording).args(["--format", "json", "-o"]).arg(&report).args(rule_args()).output().expect("running gcprobe report");
    let _ = std::fs::remove_file(&recording);
    assert_eq!(replay.status.code(), Some(10), "{}", stderr_text(&replay));
    assert_eq!(verdicts(&replay), verdicts(&out));
    assert_eq!(read_report("replay", &report)["likely_leaks"], 1);

    let (out, r) = run("bounded", &["-bounded"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let (leak_held, leaks, growth_held, growth) = measured("bounded", &out);
    assert!(!leak_held && !growth_held);
    // Its maps were watched and none only grows; its live heap stays level.
    assert_eq!(leaks, 0);
    assert_eq!(r["likely_leaks"], 0);
    assert!(growth.abs() < 1e6, "bounded growth {growth}");
}
