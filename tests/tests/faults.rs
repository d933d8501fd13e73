//! Faults a production target must survive: gcprobe killed mid-burst, the target killed
//! or replaced by exec mid-session, a ring buffer that fills. Each against the workload
//! fixture, whose "ops N" lines give its throughput.
use std::time::{Duration, Instant};

use gcprobe_tests::*;

fn workload() -> std::path::PathBuf {
    fixture("workload")
}

/// The operation count the target printed most recently, and when it was read. Lines come
/// every 100 ms; older ones are skipped.
fn ops_now(t: &Target) -> (u64, Instant) {
    let line = t.next_line();
    let n = line.strip_prefix("ops ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (n, Instant::now())
}

/// Operations per second over about `secs`.
fn rate(t: &Target, secs: f64) -> f64 {
    let (a, ta) = ops_now(t);
    let mut last = (a, ta);
    while last.1.duration_since(ta).as_secs_f64() < secs {
        last = ops_now(t);
    }
    (last.0 - a) as f64 / last.1.duration_since(ta).as_secs_f64()
}

/// Skips the lines queued before now, so the next rate starts fresh.
fn drain(t: &Target) {
    let start = Instant::now();
    while ops_now(t).1.duration_since(start) < Duration::from_millis(50) {}
}

fn bpftool_links() -> String {
    let out = std::process::Command::new("bpftool").args(["link", "show"]).output().expect("bpftool (cargo xtask test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGKILL is the one end gcprobe cannot clean up after: the kernel must. The target keeps
/// running, the breakpoint bytes are gone from its code, no uprobe link is left, and its
/// throughput is back to bare at once.
#[test]
fn gcprobe_killed_mid_burst_leaves_the_target_running_unprobed() {
    if !privileged("gcprobe_killed_mid_burst_leaves_the_target_running_unprobed") {
        return;
    }
    let exe = workload();
    let malloc = probe_site(&exe, "runtime.mallocgc");
    let mut t = Target::start(&exe, &["-every", "100ms"], &[]);
    let pid = t.pid();
    let original = code_byte(pid, malloc);
    assert_ne!(original, 0xcc);
    let bare = rate(&t, 1.0);
    // Exact mode: every allocation traps, so the whole session is one burst.
    let pid_s = pid.to_string();
    let mut s = Session::start(&["attach", "--pid", &pid_s, "--mode", "exact", "--duration", "60s"]);
    drain(&t);
    let probed = rate(&t, 1.0);
    assert_eq!(code_byte(pid, malloc), 0xcc, "the uprobe's breakpoint is in the target's code while attached");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = s.child.wait();
    drain(&t);
    assert_eq!(code_byte(pid, malloc), original, "the original instruction is back");
    assert!(!bpftool_links().contains("uprobe_multi"), "{}", bpftool_links());
    let after = rate(&t, 0.5);
    let within = killed.elapsed();
    eprintln!("ops/s: bare {bare:.0}, probed {probed:.0}, after the kill {after:.0} (measured by {within:?})");
    assert!(probed < 0.5 * bare, "the probes were not in the way while attached: {probed:.0} vs bare {bare:.0}");
    assert!(after > 0.7 * bare, "throughput {after:.0}/s within {within:?} of the kill, bare {bare:.0}/s");
    assert!(t.child.try_wait().is_ok_and(|st| st.is_none()), "the target is still running");
}

/// The target dies mid-session: its report is still written, ended by the exit.
#[test]
fn a_target_killed_mid_session_still_gets_its_report() {
    if !privileged("a_target_killed_mid_session_still_gets_its_report") {
        return;
    }
    let mut t = Target::start(&workload(), &["-every", "100ms"], &[]);
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--duration", "60s", "--format", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    t.child.kill().unwrap();
    let started = Instant::now();
    let out = s.finish();
    assert!(started.elapsed() < Duration::from_secs(5), "gcprobe took {:?} to notice", started.elapsed());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "target-exited");
    let line = fixtures::marker_line("workload", "gcprobe:workload-append");
    assert!(r["callsites"].as_array().unwrap().iter().any(|c| str_of(c, "function") == "main.op" && c["line"] == line), "{:#}", r["callsites"]);
}

/// Same PID, another program: the session of the first one ends with its report, and
/// nothing read from the new image is reported as the old one's.
#[test]
fn a_target_that_execs_another_program_ends_its_session() {
    if !privileged("a_target_that_execs_another_program_ends_its_session") {
        return;
    }
    let mut t = Target::start(&workload(), &["-every", "100ms"], &[]);
    let other = fixtures::build("workload", pins::GO_DEBIAN, Flavor::Default).unwrap();
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--duration", "60s", "--format", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    t.send_line(&format!("exec {}", other.display()));
    let started = Instant::now();
    let out = s.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(5), "gcprobe took {:?} to notice", started.elapsed());
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("gcprobe: pid {pid} exec'd {}: its session ends here", other.display())), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "target-exec");
    assert_eq!(r["target"]["go_version"], format!("go{}", pins::GO_DEFAULT));
    assert!(t.child.try_wait().is_ok_and(|st| st.is_none()), "the new program runs on");
}

/// gcprobe stopped (SIGSTOP) while every allocation traps: the kernel's ring fills, the
/// events it had no room for are counted and reported, and the session still ends on time.
#[test]
fn a_full_ring_is_counted_and_the_session_ends_on_time() {
    if !privileged("a_full_ring_is_counted_and_the_session_ends_on_time") {
        return;
    }
    let t = Target::start(&workload(), &["-every", "100ms"], &[]);
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--duration", "6s", "--format", "json"]);
    let gid = s.child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(gid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(gid, libc::SIGCONT) };
    let started = Instant::now();
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "the session ended {:?} after SIGCONT", started.elapsed());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "duration");
    let full = r["kernel"]["ringbuf_full"].as_u64().unwrap();
    assert!(full > 0, "{:#}", r["kernel"]);
    assert_eq!(r["events"]["lost"].as_u64(), Some(full), "{:#}", r["events"]);
    assert!(r["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("lost")), "{:#}", r["warnings"]);
    drop(t);
}

/// Starts `exe` under PID `pid`: the kernel gives the next process ns_last_pid + 1. Another
/// fork on the host can take it first, so this tries a few times.
fn start_as_pid(pid: u32, exe: &std::path::PathBuf, args: &[&str]) -> Target {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("writing ns_last_pid (root)");
        let t = Target::start(exe, args, &[]);
        if t.pid() == pid {
            return t;
        }
    }
    panic!("could not start a process as PID {pid}");
}

/// A PID that comes back as another program: node mode reports the new one as itself, with
/// nothing of the old one's books, binary or callsites.
#[test]
fn a_reused_pid_is_a_new_target_in_node_mode() {
    if !privileged("a_reused_pid_is_a_new_target_in_node_mode") {
        return;
    }
    // Built first: node mode watches the Go toolchain too, and a build in the middle would
    // keep it busy with compilers.
    let (appendloop, exe) = (fixture("appendloop"), workload());
    let node = Node::start(&["--mode", "exact"]);
    let first = Target::start(&appendloop, &[], &[]);
    let pid = first.pid();
    assert!(node.wait_for(pid, Duration::from_secs(5)), "{}", node.get("/targets"));
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.target_pids().contains(&pid) {
        assert!(Instant::now() < deadline, "the exited process is still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _second = start_as_pid(pid, &exe, &["-every", "100ms"]);
    assert!(node.wait_for(pid, Duration::from_secs(5)), "{}", node.get("/targets"));
    let targets: serde_json::Value = serde_json::from_str(&node.get("/targets")).unwrap();
    let t = targets["targets"].as_array().unwrap().iter().find(|t| t["pid"] == pid).unwrap();
    assert_eq!(str_of(t, "exe"), exe.to_str().unwrap(), "{t:#}");
    std::thread::sleep(Duration::from_secs(2));
    let r: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    assert_eq!(str_of(&r["target"], "exe"), exe.to_str().unwrap());
    let functions: Vec<&str> = r["callsites"].as_array().unwrap().iter().map(|c| str_of(c, "function")).collect();
    assert!(functions.contains(&"main.op"), "{functions:?}");
    assert!(!functions.iter().any(|f| f.starts_with("main.(*Index)")), "the old program's callsites: {functions:?}");
}

/// A map freed by the program, its memory reused, before gcprobe reads its length again:
/// the read is refused (the header no longer looks like a map's: zeroed memory has no hash
/// seed) and counted, and no garbage passes for a length. The map is filled and then left
/// while the program sleeps: its length is still read before it is freed. Classic maps
/// (Go 1.19) and swiss maps (1.24, 1.27), three runs each: the heap's layout and the
/// moment of each read differ from run to run.
#[test]
fn a_freed_map_is_not_read_as_a_length_and_says_so() {
    if !privileged("a_freed_map_is_not_read_as_a_length_and_says_so") {
        return;
    }
    let line = fixtures::marker_line("mapfree", "gcprobe:mapfree-insert");
    for go in [pins::GO_DEBIAN, pins::GO_DEFAULT, "1.27.3", pins::GO_DEBIAN, pins::GO_DEFAULT, "1.27.3", pins::GO_DEBIAN, pins::GO_DEFAULT, "1.27.3"] {
        let exe = fixtures::build("mapfree", go, Flavor::Default).unwrap();
        let mut t = Target::start(&exe, &[], &[]);
        let pid = t.pid().to_string();
        let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--format", "json", "--interval", "1h"]);
        t.send_line("go");
        assert_eq!(t.next_line(), "filled");
        assert_eq!(t.next_line(), "freed");
        let out = s.finish();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["window"]["ended_by"], "target-exited");
        let m = r["maps"].as_array().unwrap().iter().find(|m| m["line"] == line).unwrap_or_else(|| panic!("Go {go}: {:#}", r["maps"]));
        assert_eq!((m["len_first"].as_u64(), m["len_last"].as_u64()), (Some(5000), Some(5000)), "Go {go}: {m:#}");
        assert!(m["len_unread"].as_u64().unwrap() >= 1, "Go {go}: the freed map was read as a length: {m:#}");
    }
}

/// A program that makes maps by the hundred thousand, each kept a while at its own address:
/// the agent's table of maps stays bounded (200,000 per target). The quietest are dropped,
/// counted and said, and the leaking cache beside them is still followed from its first insert.
#[test]
fn a_flood_of_maps_stays_bounded_counted_and_the_leak_is_still_followed() {
    if !privileged("a_flood_of_maps_stays_bounded_counted_and_the_leak_is_still_followed") {
        return;
    }
    let leak_line = fixtures::marker_line("mapleak", "gcprobe:map-insert");
    let exe = fixtures::build("mapleak", pins::GO_DEFAULT, Flavor::Default).unwrap();
    let t = Target::start(&exe, &["-now", "-garbage=0", "-batch=16", "-throwaway=8"], &[]);
    let pid = t.pid().to_string();
    let s = Session::start(&["attach", "--pid", &pid, "--mode", "exact", "--format", "json", "--interval", "1h"]);
    // Past the table's 200,000 and an eighth more, made under the probes at this machine's pace.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let line = t.next_line();
        if line.strip_prefix("made ").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 300_000) {
            break;
        }
        assert!(Instant::now() < deadline, "mapleak made too few maps in 5 minutes: {line}");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    let out = s.finish();
    assert!(out.status.success(), "{}", stderr_text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = r["warnings"].as_array().unwrap().iter().filter_map(|w| w.as_str()).collect();
    let said = warnings.iter().find_map(|w| w.strip_suffix(" maps quiet longest were dropped from the full map table (it follows 200000 per target); one active again is followed anew"));
    let dropped: u64 = said.unwrap_or_else(|| panic!("no eviction said in {warnings:#?}")).parse().unwrap();
    assert!(dropped > 200_000 / 8, "{dropped} maps dropped: a full table drops an eighth at a time");
    let maps = r["maps"].as_array().unwrap();
    let leak = maps.iter().find(|m| m["line"] == leak_line).unwrap_or_else(|| panic!("the leaking cache is gone from {} maps", maps.len()));
    let len = leak["len_last"].as_u64().unwrap();
    // Followed from its first insert, never dropped and begun again (which would
    // count a fraction); a few inserts fall outside the two length reads.
    let grown = len.saturating_sub(leak["len_first"].as_u64().unwrap());
    assert!(leak["inserts"].as_u64().unwrap() * 100 >= grown * 95, "the cache's inserts are counted since the first: {leak:#}");
    eprintln!("{dropped} maps dropped; the cache: {len} entries, {} inserts seen", leak["inserts"]);
}
