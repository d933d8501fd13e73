//! `gcprobe diff` proves a fix (root): the appendloop fixture run growing
//! its slice (`-mode grow`, the culprit) and preallocating it (`-mode
//! prealloc`, its fix), under the same workload, each recorded and reported.
use std::{
    path::{Path, PathBuf},
    process::Output,
};

use gcprobe_tests::*;

/// `gcprobe run --mode exact` of appendloop in `mode` for 3 s: its recording and its JSON report.
fn session(dir: &Path, exe: &Path, mode: &str) -> (PathBuf, PathBuf) {
    let (rec, json) = (dir.join(format!("{mode}.gcprobe")), dir.join(format!("{mode}.json")));
    let out = gcprobe(&["run", "--mode", "exact", "--quiet", "--record", rec.to_str().unwrap(), "--format", "json", "-o", json.to_str().unwrap(), "--", exe.to_str().unwrap(), "-mode", mode, "-for", "3s"]);
    assert!(out.status.success(), "run -mode {mode}: {}\n{}", out.status, stderr_text(&out));
    (rec, json)
}

fn diff(before: &Path, after: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["diff", before.to_str().unwrap(), after.to_str().unwrap()];
    args.extend_from_slice(extra);
    gcprobe(&args)
}

fn diff_json(before: &Path, after: &Path) -> serde_json::Value {
    let out = diff(before, after, &["--format", "json"]);
    assert!(out.status.success(), "{}\n{}", out.status, stderr_text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn metric<'a>(d: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    d["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == name).unwrap_or_else(|| panic!("no {name} in {:#}", d["metrics"]))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn diff_proves_the_appendloop_fix() {
    if !privileged("diff_proves_the_appendloop_fix") {
        return;
    }
    let dir = scratch_dir("diff", "fix");
    let exe = fixture("appendloop");
    let (grow_rec, grow_json) = session(&dir, &exe, "grow");
    let (fixed_rec, fixed_json) = session(&dir, &exe, "prealloc");

    let d = diff_json(&grow_rec, &fixed_rec);
    assert_eq!((d["schema"].as_str(), d["before"]["source"].as_str(), d["after"]["mode"].as_str()), (Some("gcprobe.diff/v1"), Some("recording"), Some("exact")));
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let rows = d["callsites"].as_array().unwrap();
    let culprit_row = rows.iter().find(|c| c["probe"] == "growslice" && c["function"] == "main.(*Index).Names" && c["line"] == line).unwrap_or_else(|| panic!("no row for main.go:{line}: {rows:#?}"));
    let bytes = &culprit_row["bytes_per_s"];
    // The fixed program never calls Names: the row is gone, measured as 0 where allocations were.
    assert_eq!(culprit_row["presence"], "gone", "{culprit_row:#}");
    assert!(f(&bytes["before"]) > 1e6 && f(&bytes["after"]) < f(&bytes["before"]) / 2.0, "{culprit_row:#}");
    assert_eq!(f(&bytes["change_pct"]), -100.0, "{culprit_row:#}");
    // The biggest change comes first.
    assert_eq!(rows[0], *culprit_row);
    let cycles = metric(&d, "gc.cycles_per_s");
    assert!(cycles["unit"] == "per_s" && f(&cycles["after"]) < f(&cycles["before"]) && f(&cycles["change"]) < 0.0, "{cycles:#}");
    let heap = metric(&d, "heap.live_max");
    assert!(f(&heap["before"]) > 0.0 && f(&heap["after"]) > 0.0, "{heap:#}");
    let gone = d["culprits_gone"].as_array().unwrap();
    assert!(gone.iter().any(|c| c["function"] == "main.(*Index).Names" && c["line"] == line), "{:#}", d["culprits_gone"]);
    assert!(d["culprits_new"].as_array().unwrap().is_empty() && d["culprits_kept"].as_array().unwrap().is_empty(), "{d:#}");

    // A JSON report reads as its recording does: mixed, the figures are the same.
    let written = dir.join("diff.json");
    let out = diff(&grow_json, &fixed_rec, &["--format", "json", "-o", written.to_str().unwrap()]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", stderr_text(&out));
    let mixed: serde_json::Value = serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(mixed["before"]["source"], "json_report");
    assert_eq!((&mixed["metrics"], &mixed["callsites"], &mixed["culprits_gone"]), (&d["metrics"], &d["callsites"], &d["culprits_gone"]));
    // And a session against its own JSON report changes nothing.
    let same = diff_json(&fixed_rec, &fixed_json);
    for m in same["metrics"].as_array().unwrap() {
        assert!(m["change"] == 0.0 || (m["before"].is_null() && m["after"].is_null()), "{m:#}");
    }
    assert!(same["callsites"].as_array().unwrap().iter().all(|c| c["presence"] == "both" && c["bytes_per_s"]["change"] == 0.0), "{same:#}");

    // The gate: the fix passes it; the fix undone (before and after swapped) is a regression.
    let gate = ["--fail-on", "alloc.bytes_per_s +10%"];
    let fixed = diff(&grow_rec, &fixed_json, &gate);
    assert_eq!(fixed.status.code(), Some(0), "{}", stderr_text(&fixed));
    assert!(stderr_text(&fixed).starts_with("gcprobe: ok   alloc.bytes_per_s +10%: alloc.bytes_per_s: "), "{}", stderr_text(&fixed));
    let undone = diff(&fixed_rec, &grow_rec, &gate);
    assert_eq!(undone.status.code(), Some(10), "{}", stderr_text(&undone));
    assert!(stderr_text(&undone).starts_with("gcprobe: FAIL alloc.bytes_per_s +10%: "), "{}", stderr_text(&undone));

    // For people: the culprit's row first, the culprit gone.
    let out = diff(&grow_rec, &fixed_rec, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("{text}");
    let first_row = text.lines().skip_while(|l| !l.starts_with("callsites")).nth(2).unwrap_or_default();
    assert!(first_row.starts_with(&format!("- growslice main.(*Index).Names main.go:{line} ")) && first_row.contains(" 0 B/s ") && first_row.contains("(-100.0%)"), "{text}");
    assert!(text.contains(&format!("culprits gone:\n  main.(*Index).Names main.go:{line} (")), "{text}");

    // A file that is no report, in either place: one line naming it, exit 1.
    let garbage = dir.join("notes.txt");
    std::fs::write(&garbage, "GC got faster, trust me\n").unwrap();
    let out = diff(&grow_rec, &garbage, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr_text(&out), format!("gcprobe: error: {}: neither a gcprobe recording (no GCPROBE header) nor a JSON report\n", garbage.display()));
}

/// Every file that is not one report fails with one line that names it.
#[test]
fn diff_refuses_what_is_not_a_report() {
    let dir = scratch_dir("diff", "refuse");
    let file = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let cases = [
        (file("notes.txt", b"hello\n"), "neither a gcprobe recording (no GCPROBE header) nor a JSON report".to_owned()),
        (file("empty", b""), "neither a gcprobe recording (no GCPROBE header) nor a JSON report".into()),
        (file("v2.json", br#"{"schema": "gcprobe.report/v2"}"#), "schema \"gcprobe.report/v2\" is not gcprobe.report/v1".into()),
        (file("several.json", br#"{"schema": "gcprobe.reports/v1", "reports": []}"#), "holds several reports (gcprobe.reports/v1): give one target's gcprobe.report/v1".into()),
        (file("cut.json", br#"{"schema": "gcprobe.report/v1", "target": {"#), "not JSON: EOF while parsing an object at line 1 column 43".into()),
        (file("thin.json", br#"{"schema": "gcprobe.report/v1"}"#), "not a valid gcprobe.report/v1 report: missing field `target`".into()),
        (dir.join("missing"), "cannot read it: No such file or directory (os error 2)".into()),
    ];
    for (path, says) in cases {
        let out = diff(&path, &path, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert_eq!(stderr_text(&out), format!("gcprobe: error: {}: {says}\n", path.display()));
        assert!(out.stdout.is_empty());
    }
    let rec = file("cut.gcprobe", b"GCPROBE\0\x01");
    let out = diff(&rec, &rec, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(err.starts_with(&format!("gcprobe: error: recording: {}: ", rec.display())) && err.lines().count() == 1, "{err}");
}
