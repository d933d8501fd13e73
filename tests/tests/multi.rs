//! One agent, several targets (root): each target's report is its own,
//! a binary's probes are placed once when every process of it is a target,
//! and per target when another process runs it.
use std::process::Output;

use gcprobe_tests::*;

/// `gcprobe attach` over `pids` in exact mode; its output, checked for success.
fn attach_all(pids: &[u32], duration: &str, format: &str) -> Output {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut args = vec!["attach", "--duration", duration, "--format", format, "--mode", "exact", "--interval", "1h"];
    for p in &pids {
        args.extend(["--pid", p.as_str()]);
    }
    let out = gcprobe(&args);
    assert!(out.status.success(), "gcprobe failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// The line announcing `pid`'s probes.
fn attached_line(stderr: &str, pid: u32) -> &str {
    stderr.lines().find(|l| l.contains("attached") && l.contains(&format!(" to pid {pid} "))).unwrap_or_else(|| panic!("no attached line for {pid}:\n{stderr}"))
}

fn growslice_hits(r: &serde_json::Value) -> u64 {
    r["kernel"]["hits_by_kind"]["Growslice"].as_u64().unwrap_or(0)
}

/// No callsite of `r` is the growing append of appendloop: another
/// process's appends did not leak into this report.
fn assert_no_culprit_line(r: &serde_json::Value) {
    let culprit = fixtures::marker_line("appendloop", "gcprobe:culprit");
    assert!(!r["callsites"].as_array().unwrap().iter().any(|c| c["line"] == culprit), "another process leaked in: {:#}", r["callsites"]);
    // The runtime and fmt grow a slice now and then; the culprit thousands of times.
    assert!(growslice_hits(r) < 20, "{:#}", r["kernel"]);
}

#[test]
fn processes_of_one_binary_share_probes_and_each_gets_its_own_report() {
    if !privileged("processes_of_one_binary_share_probes_and_each_gets_its_own_report") {
        return;
    }
    let exe = fixture("appendloop");
    let pie = fixtures::build("appendloop", pins::GO_DEFAULT, Flavor::Pie).unwrap();
    let grow = Target::start(&exe, &["-mode=grow"], &[]);
    let twin = Target::start(&exe, &["-mode=prealloc"], &[]);
    let other = Target::start(&pie, &["-mode=grow"], &[]);
    let out = attach_all(&[grow.pid(), twin.pid(), other.pid()], "4s", "json");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["schema"], "gcprobe.reports/v1");
    let reports = doc["reports"].as_array().unwrap();
    let pids: Vec<u64> = reports.iter().map(|r| r["target"]["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, [grow.pid() as u64, twin.pid() as u64, other.pid() as u64], "in the order given");
    for r in reports {
        assert_eq!(r["schema"], "gcprobe.report/v1");
        assert_totals_agree(r);
        assert_eq!(r["window"]["ended_by"], "duration");
    }
    // Each process's hits are its own: the kernel routes them by tgid.
    assert_appendloop_culprit(&reports[0]);
    assert_appendloop_culprit(&reports[2]);
    assert!(growslice_hits(&reports[0]) > 100, "{:#}", reports[0]["kernel"]);
    assert_no_culprit_line(&reports[1]);

    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only these two run appendloop-default: one set of probes serves both.
    for pid in [grow.pid(), twin.pid()] {
        assert!(attached_line(&stderr, pid).contains("shared by every process of its binary"), "{stderr}");
    }
    // A lone target of a binary keeps probes filtered to it.
    assert!(!attached_line(&stderr, other.pid()).contains("shared"), "{stderr}");
}

#[test]
fn a_replica_outside_the_targets_keeps_the_probes_per_target() {
    if !privileged("a_replica_outside_the_targets_keeps_the_probes_per_target") {
        return;
    }
    let exe = fixture("appendloop");
    let a = Target::start(&exe, &["-mode=prealloc"], &[]);
    let b = Target::start(&exe, &["-mode=prealloc"], &[]);
    let replica = Target::start(&exe, &["-mode=grow"], &[]);
    let out = attach_all(&[a.pid(), b.pid()], "3s", "json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for pid in [a.pid(), b.pid()] {
        assert!(!attached_line(&stderr, pid).contains("shared"), "a replica runs the same binary:\n{stderr}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The growing replica's appends reach neither report.
    for r in doc["reports"].as_array().unwrap() {
        assert_no_culprit_line(r);
    }
    drop(replica);
}

#[test]
fn a_process_that_starts_later_makes_shared_probes_per_target() {
    if !privileged("a_process_that_starts_later_makes_shared_probes_per_target") {
        return;
    }
    let exe = fixture("appendloop");
    let a = Target::start(&exe, &["-mode=prealloc"], &[]);
    let b = Target::start(&exe, &["-mode=prealloc"], &[]);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let s = Session::start(&["attach", "--pid", &pa, "--pid", &pb, "--duration", "5s", "--format", "json", "--mode", "exact", "--interval", "1h"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let late = Target::start(&exe, &["-mode=grow"], &[]);
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("a process that is not a target runs a probed binary: the probes of pids {}, {} are now placed per target", a.pid(), b.pid())), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in doc["reports"].as_array().unwrap() {
        assert_no_culprit_line(r);
        assert!(r["kernel"]["hits_by_kind"]["StwStart"].as_u64().unwrap() > 0, "the targets are still probed after the switch: {:#}", r["kernel"]);
    }
    drop(late);
}

#[test]
fn a_target_that_exits_keeps_its_report_while_the_others_run_on() {
    if !privileged("a_target_that_exits_keeps_its_report_while_the_others_run_on") {
        return;
    }
    let exe = fixture("appendloop");
    let short = Target::start(&exe, &["-mode=grow", "-for=1500ms"], &[]);
    let long = Target::start(&exe, &["-mode=grow"], &[]);
    let out = attach_all(&[short.pid(), long.pid()], "4s", "text");
    let text = String::from_utf8_lossy(&out.stdout);
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("gcprobe report: pid ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    assert!(headers[0].starts_with(&format!("gcprobe report: pid {} ", short.pid())), "{text}");
    let windows: Vec<&str> = text.lines().filter(|l| l.starts_with("window ")).collect();
    assert!(windows[0].contains("ended by target-exited"), "{windows:?}");
    assert!(windows[1].contains("ended by duration"), "{windows:?}");
    assert_eq!(text.matches("CULPRITS").count(), 2, "{text}");
}

#[test]
fn a_target_gone_at_start_is_left_out_and_the_others_are_watched() {
    if !privileged("a_target_gone_at_start_is_left_out_and_the_others_are_watched") {
        return;
    }
    // Exited and not reaped: /proc/PID stays, its executable is gone.
    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let live = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let out = attach_all(&[zombie.id(), live.pid()], "2s", "json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("gcprobe: warning: process {} exited before gcprobe could attach; watching the others", zombie.id())), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "gcprobe.reports/v1", "several --pid, one document");
    let reports = doc["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["target"]["pid"], live.pid());
    assert_appendloop_culprit(&reports[0]);
    let _ = zombie.wait();
}

#[test]
fn several_targets_refuse_single_target_outputs() {
    // Root-free: checked before any privilege is needed.
    let dup = gcprobe(&["attach", "--pid", "1", "--pid", "1", "--duration", "1s"]);
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&dup.stderr).trim(), "gcprobe: error: pid 1 is given twice");
    let pprof = gcprobe(&["attach", "--pid", "1", "--pid", "2", "--format", "pprof", "-o", "/dev/null"]);
    assert_eq!(pprof.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&pprof.stderr).trim(), "gcprobe: error: --format pprof reports on one target: give --pid once");
    let record = gcprobe(&["record", "--pid", "1", "--pid", "2", "-o", "/tmp/x.gcprobe"]);
    assert_eq!(record.status.code(), Some(2), "record takes one --pid (a usage error)");
}
