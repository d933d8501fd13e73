//! `gcprobe run`'s exit status: gcprobe's verdict, never the program's
//! status mistaken for one, unless `--exit-with-program` asks for it (root).
use std::process::{Command, Output};

use gcprobe_tests::*;

/// `gcprobe run` over appendloop for a moment, ending as `end` says
/// (`-exit N` or `-kill`); returns gcprobe's output and the JSON report.
fn run(name: &str, gcprobe_args: &[&str], end: &[&str]) -> (Output, serde_json::Value) {
    let report = std::env::temp_dir().join(format!("gcprobe-run-{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let out = Command::new(gcprobe_bin())
        .args(["run", "--quiet", "--mode", "exact", "--format", "json", "-o"])
        .arg(&report)
        .args(gcprobe_args)
        .arg("--")
        .arg(fixture("appendloop"))
        .args(["-for", "500ms"])
        .args(end)
        .output()
        .expect("running gcprobe");
    let text = std::fs::read(&report).unwrap_or_else(|e| panic!("{name}: no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let _ = std::fs::remove_file(&report);
    (out, serde_json::from_slice(&text).expect("report is JSON"))
}

/// A program exiting 3, 7 or 10 (gcprobe's own statuses for privileges, a
/// missing symbol and a rule held) or killed by SIGKILL: 11 by default, its
/// own status with --exit-with-program; its status on stderr and in the report.
#[test]
fn run_exits_11_for_a_failed_program_and_its_status_when_asked() {
    if !privileged("run_exits_11_for_a_failed_program_and_its_status_when_asked") {
        return;
    }
    let exe = fixture("appendloop");
    let exe = exe.to_str().unwrap();
    for (end, code, signal, said, passed) in [
        (&["-exit", "3"][..], Some(3), None, "exited with status 3".to_owned(), 3),
        (&["-exit", "7"][..], Some(7), None, "exited with status 7".to_owned(), 7),
        (&["-exit", "10"][..], Some(10), None, "exited with status 10".to_owned(), 10),
        (&["-kill"][..], None, Some(9), "was killed by signal 9 (SIGKILL)".to_owned(), 137),
    ] {
        for (flag, expected) in [(None, 11), (Some("--exit-with-program"), passed)] {
            let name = format!("{}{}", end.join(""), flag.unwrap_or(""));
            let (out, r) = run(&name, flag.as_slice(), end);
            let err = stderr_text(&out);
            assert_eq!(out.status.code(), Some(expected), "{end:?} {flag:?}: {err}");
            assert!(err.lines().any(|l| l == format!("gcprobe: {exe} {said}")), "{end:?} {flag:?}: {err}");
            assert_eq!(r["window"]["program_exit"], serde_json::json!({ "code": code, "signal": signal }), "{end:?} {flag:?}");
            assert_eq!(r["window"]["ended_by"], "target-exited");
            // The report is whole: the program's failure did not cost it its culprit.
            assert_appendloop_culprit(&r);
        }
    }
}

/// A rule that held is 10 when the program succeeded; when the program
/// failed too, its failure comes first (11, or its status when asked), and
/// both verdicts are on stderr.
#[test]
fn run_exits_10_for_a_rule_held_unless_the_program_failed() {
    if !privileged("run_exits_10_for_a_rule_held_unless_the_program_failed") {
        return;
    }
    let rule = ["--fail-on", "growslice.share > 30%"];
    for (end, flag, expected) in [(&[][..], None, 10), (&["-exit", "3"][..], None, 11), (&["-exit", "3"][..], Some("--exit-with-program"), 3)] {
        let args: Vec<&str> = rule.iter().copied().chain(flag).collect();
        let (out, r) = run(&format!("rule{}{}", end.join(""), flag.unwrap_or("")), &args, end);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(expected), "{end:?} {flag:?}: {err}");
        assert!(err.contains("gcprobe: FAIL growslice.share > 30%"), "{err}");
        assert_eq!(err.contains("exited with status 3"), !end.is_empty(), "{err}");
        assert_eq!(r["window"]["program_exit"]["code"], if end.is_empty() { 0 } else { 3 });
    }
}
