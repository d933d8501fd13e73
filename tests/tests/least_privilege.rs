//! `attach`, `record` and `run` as user nobody with exactly the capabilities
//! the README lists for them, against a root-owned Go program (root, to set
//! it up). Node mode's own test is in node.rs.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use gcprobe_tests::*;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities of the README's "Capabilities" row that starts with `row`, as setpriv names them.
fn readme_capabilities(row: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(xtask::workspace_root().join("README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no README row {row:?}"));
    let caps = line.split('|').nth(2).expect("a capabilities column");
    caps.split(',').map(|c| c.trim().trim_matches('`').strip_prefix("CAP_").expect("CAP_ names").to_ascii_lowercase()).collect()
}

/// A capability set of /proc/PID/status (or .../task/TID/status), as a mask.
fn cap_set(status: &str, field: &str) -> u64 {
    let v = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field}"));
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// `setpriv ... gcprobe ARGS` as nobody with `caps`, stdout and stderr piped.
fn spawn_as_nobody(bin: &Path, caps: &[String], args: &[&str]) -> Child {
    let prefix = as_nobody_with(caps);
    Command::new(&prefix[0]).args(&prefix[1..]).arg(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("setpriv (util-linux)")
}

/// Reads the session's stderr up to its "attached" line; returns the PID it names and what was read.
fn attached_pid(stderr: &mut BufReader<std::process::ChildStderr>) -> (u32, String) {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "gcprobe ended before attaching:\n{seen}");
        seen.push_str(&line);
        if let Some(rest) = line.strip_prefix("gcprobe: attached ") {
            let pid = rest.split(" to pid ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok());
            return (pid.unwrap_or_else(|| panic!("no pid in {line:?}")), seen);
        }
    }
}

/// Waits for the session; its output with everything it said on stderr.
fn finish(mut child: Child, mut stderr: BufReader<std::process::ChildStderr>, mut seen: String) -> Output {
    let mut stdout = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    Output { status, stdout, stderr: seen.into_bytes() }
}

fn report_of(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every thread of gcprobe, once attached: BPF, PERFMON and SYS_PTRACE still
/// effective (bursts and re-attaching need them), DAC_READ_SEARCH given up in
/// every set. The "attached" line comes just before the drop: given 2 s.
fn assert_setup_capabilities_dropped(gcprobe_pid: u32, keeps_ptrace: bool) {
    let kept = (1 << CAP_BPF) | (1 << CAP_PERFMON) | if keeps_ptrace { 1 << CAP_SYS_PTRACE } else { 0 };
    let sets = || -> Vec<(PathBuf, [u64; 4])> {
        let tasks = std::fs::read_dir(format!("/proc/{gcprobe_pid}/task")).unwrap().map(|e| e.unwrap().path());
        tasks.map(|t| {
            let status = std::fs::read_to_string(t.join("status")).unwrap();
            let sets = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"].map(|f| cap_set(&status, f));
            (t, sets)
        }).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while sets().iter().any(|(_, s)| s[2] & (1 << CAP_DAC_READ_SEARCH) != 0) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let all = sets();
    assert!(!all.is_empty());
    for (task, s) in all {
        assert_eq!(s, [kept; 4], "{}: CapInh, CapPrm, CapEff, CapAmb", task.display());
    }
}

/// A directory nobody may write in (recordings, reports), with a root-owned copy of the fixture.
fn nobody_dir(bin: &Path) -> (PathBuf, PathBuf) {
    let dir = bin.parent().unwrap().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let exe = bin.parent().unwrap().join("appendloop");
    std::fs::copy(fixture("appendloop"), &exe).unwrap();
    (dir, exe)
}

/// `attach` (sampled: bursts attach and detach probes all session) and
/// `record`, as nobody with the README's four, against a root process: the
/// culprit is found, heap figures read, and DAC_READ_SEARCH is gone once attached.
#[test]
fn attach_and_record_as_nobody_with_the_listed_capabilities() {
    if !privileged("attach_and_record_as_nobody_with_the_listed_capabilities") {
        return;
    }
    let caps = readme_capabilities("| `attach`, `record` (a process of another user)");
    assert_eq!(caps, ["bpf", "perfmon", "sys_ptrace", "dac_read_search"]);
    assert_eq!(readme_capabilities("| `attach`, `record` (a process of your own user)"), ["bpf", "perfmon"]);
    let bin = gcprobe_for_nobody();
    let (dir, exe) = nobody_dir(&bin);
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    let pid = t.pid().to_string();

    let mut child = spawn_as_nobody(&bin, &caps, &["attach", "--pid", &pid, "-d", "6s", "--format", "json", "--interval", "1h"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (attached, seen) = attached_pid(&mut stderr);
    assert_eq!(attached, t.pid());
    assert_setup_capabilities_dropped(child.id(), true);
    let r = report_of(&finish(child, stderr, seen));
    assert_appendloop_culprit(&r);
    assert!(r["sampling"]["bursts"].as_u64().unwrap() >= 2, "{:#}", r["sampling"]);
    assert!(r["gc"]["heap_unavailable"].is_null(), "{}", r["gc"]["heap_unavailable"]);

    let rec = dir.join("nobody.gcprobe");
    let mut child = spawn_as_nobody(&bin, &caps, &["record", "--pid", &pid, "-d", "3s", "--mode", "exact", "--format", "json", "--interval", "1h", "-o", rec.to_str().unwrap()]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (_, seen) = attached_pid(&mut stderr);
    assert_setup_capabilities_dropped(child.id(), true);
    let live = report_of(&finish(child, stderr, seen));
    assert_appendloop_culprit(&live);
    let replayed = report_of(&gcprobe(&["report", rec.to_str().unwrap(), "--format", "json"]));
    assert_eq!(replayed, live);
    drop(t);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// `run` as nobody with the README's two: the culprit is found, and the
/// program it starts holds no capability in any set.
#[test]
fn run_as_nobody_with_the_listed_capabilities_gives_the_program_none() {
    if !privileged("run_as_nobody_with_the_listed_capabilities_gives_the_program_none") {
        return;
    }
    let caps = readme_capabilities("| `run`");
    assert_eq!(caps, ["bpf", "perfmon"]);
    let bin = gcprobe_for_nobody();
    let (_, exe) = nobody_dir(&bin);
    let mut child = spawn_as_nobody(&bin, &caps, &["run", "--mode", "exact", "--format", "json", "--interval", "1h", "--", exe.to_str().unwrap(), "-for", "3s"]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (program, seen) = attached_pid(&mut stderr);
    let status = std::fs::read_to_string(format!("/proc/{program}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:\t65534\t")), "{status}");
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(cap_set(&status, set), 0, "the program's {set}\n{status}");
    }
    assert_setup_capabilities_dropped(child.id(), false);
    let out = finish(child, stderr, seen);
    let text = String::from_utf8_lossy(&out.stdout);
    // The program's own lines, then the report.
    let r: serde_json::Value = serde_json::from_str(&text[text.find('{').expect("a report")..]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_appendloop_culprit(&r);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}
