//! Record a session, report on it elsewhere, export it, and gate on it (root).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use gcprobe_tests::*;

/// A fresh directory anyone can read (the report runs as nobody).
fn scratch(name: &str) -> PathBuf {
    let d = scratch_dir("record", name);
    run_ok(Command::new("chmod").args(["755"]).arg(&d));
    d
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// `gcprobe report` as user nobody: no root, no capabilities. A recording
/// is private to whoever wrote it (0600): it is handed to nobody first, as
/// a user would chown it or copy it as themselves.
fn report_unprivileged(file: &Path, extra: &[&str]) -> Output {
    std::os::unix::fs::chown(file, Some(65534), Some(65534)).unwrap_or_else(|e| panic!("chown {}: {e}", file.display()));
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(gcprobe_bin())
        .arg("report")
        .arg(file)
        .args(extra)
        .output()
        .expect("running gcprobe report under setpriv")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn wait_for_size(file: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(Instant::now() < deadline, "{} stayed under {bytes} bytes", file.display());
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sampled mode (the default), ended by SIGTERM; the target's binary is
/// then deleted, and the file is copied elsewhere and reported on without
/// root: the report is the one the live session printed, field for field.
#[test]
fn report_from_a_copy_without_the_binary_equals_the_live_report() {
    if !privileged("report_from_a_copy_without_the_binary_equals_the_live_report") {
        return;
    }
    let dir = scratch("equal");
    let exe = dir.join("appendloop");
    std::fs::copy(fixture("appendloop"), &exe).unwrap();
    let mut t = Target::start(&exe, &[], &[]);
    let file = dir.join("session.gcprobe");
    let s = Session::start(&["record", "--pid", &t.pid().to_string(), "-o", file.to_str().unwrap(), "--format", "json", "--interval", "1h"]);
    thread::sleep(Duration::from_secs(5));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let out = s.finish();
    let live = json(&out);
    assert_eq!(live["window"]["ended_by"], "signal");
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(live["sampling"]["bursts"].as_u64().unwrap() >= 2, "{:#}", live["sampling"]);

    let _ = t.child.kill();
    let _ = t.child.wait();
    std::fs::remove_file(&exe).unwrap();
    let copy = dir.join("copy.gcprobe");
    std::fs::copy(&file, &copy).unwrap();
    std::fs::remove_file(&file).unwrap();

    let out = report_unprivileged(&copy, &["--format", "json"]);
    let replayed = json(&out);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replayed, live, "replayed report differs from the live one");
    // Symbolized from the recording alone.
    let top = &replayed["callsites"][0];
    assert!(str_of(top, "file").ends_with("appendloop/main.go"), "{top:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exact mode, killed with SIGKILL halfway: the file still reports and names
/// the culprit; cut inside a frame, it says how much it lost; and its pprof
/// and Perfetto exports open in the real tools.
#[test]
fn killed_recording_reports_and_exports() {
    if !privileged("killed_recording_reports_and_exports") {
        return;
    }
    let dir = scratch("killed");
    let t = Target::start(&fixture("appendloop"), &[], &[]);
    let file = dir.join("killed.gcprobe");
    let mut s = Session::start(&["record", "--pid", &t.pid().to_string(), "--mode", "exact", "-o", file.to_str().unwrap(), "--interval", "1h"]);
    // Several seconds of flushes (each 200 ms), then no chance to finish.
    wait_for_size(&file, 400_000);
    thread::sleep(Duration::from_secs(2));
    s.child.kill().unwrap();
    let _ = s.child.wait();
    drop(t);

    let r = json(&report_unprivileged(&file, &["--format", "json"]));
    assert_eq!(r["window"]["ended_by"], "recording-cut-short");
    assert!(r["window"]["duration_s"].as_f64().unwrap() > 1.0, "{:#}", r["window"]);
    assert!(r["events"]["growslice"].as_u64().unwrap() > 100, "{:#}", r["events"]);
    assert_appendloop_culprit(&r);

    // Cut inside the last frame, as a full disk or a crash mid-write would.
    let data = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.gcprobe");
    std::fs::write(&cut, &data[..data.len() - 7]).unwrap();
    let out = report_unprivileged(&cut, &["--format", "json"]);
    let rc = json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cut short") && stderr.contains("bytes were lost"), "{stderr}");
    assert!(rc["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("bytes were lost")), "{:#}", rc["warnings"]);
    assert_appendloop_culprit(&rc);

    // pprof: the culprit line leads by alloc_space, in the real `go tool pprof`.
    let prof = dir.join("allocs.pb.gz");
    run_ok(report_cmd(&file).args(["--format", "pprof", "-o"]).arg(&prof));
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let top = pprof(&dir, &["-top", "-lines", "-sample_index=alloc_space"], &prof);
    let first = top.lines().skip_while(|l| !l.trim_start().starts_with("flat")).nth(1).unwrap_or_else(|| panic!("no rows:\n{top}"));
    assert!(first.contains("main.(*Index).Names") && first.contains(&format!("main.go:{line}")), "top row {first:?}:\n{top}");
    // Every sample type is there, and growslice calls lead with the same line.
    let raw = pprof(&dir, &["-raw"], &prof);
    assert!(raw.contains("alloc_objects/count alloc_space/bytes[dflt] growslice/count"), "{raw}");
    let grow = pprof(&dir, &["-top", "-lines", "-sample_index=growslice"], &prof);
    let first = grow.lines().skip_while(|l| !l.trim_start().starts_with("flat")).nth(1).unwrap_or_default();
    assert!(first.contains(&format!("main.go:{line}")), "{grow}");

    // Perfetto: the GC timeline, its pauses named by reason, one slice per cycle.
    let out = report_unprivileged(&file, &["--format", "perfetto"]);
    let trace = json(&out);
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    for e in events {
        for k in ["ph", "pid", "tid", "ts", "name"] {
            assert!(e.get(k).is_some(), "{k} missing: {e}");
        }
    }
    let slices = |tid: u64| events.iter().filter(move |e| e["ph"] == "X" && e["tid"] == tid);
    let stw: Vec<_> = slices(0x7fff_0002).collect();
    assert_eq!(stw.len() as u64, r["gc"]["stw"]["count"].as_u64().unwrap());
    assert!(stw.iter().all(|e| e["dur"].as_f64().unwrap() >= 0.0));
    assert!(stw.iter().any(|e| e["name"] == "GC sweep termination") && stw.iter().any(|e| e["name"] == "GC mark termination"));
    let cycles = slices(0x7fff_0001).count() as i64;
    let reported = r["gc"]["cycles"].as_i64().unwrap();
    // The last cycle may still be marking when the window closes.
    assert!(cycles == reported || cycles == reported - 1, "{cycles} cycle slices, {reported} cycles");
    let assists = events.iter().filter(|e| e["ph"] == "i").count() as u64;
    assert_eq!(assists, r["events"]["assist"].as_u64().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

fn report_cmd(file: &Path) -> Command {
    let mut c = Command::new(gcprobe_bin());
    c.arg("report").arg(file);
    c
}

/// `go tool pprof` with nothing written outside `dir`.
fn pprof(dir: &Path, args: &[&str], prof: &Path) -> String {
    let out = run_ok(
        Command::new(xtask::tools::go_bin(pins::GO_DEFAULT))
            .args(["tool", "pprof"])
            .args(args)
            .arg(prof)
            .env("HOME", dir)
            .env("PPROF_TMPDIR", dir)
            .env("GOTOOLCHAIN", "local")
            .stdin(Stdio::null()),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `gcprobe run` starts the program under probes and gates on rules: the
/// culprit program fails `growslice.share > 30%`, the fixed one passes.
#[test]
fn run_fails_on_rules() {
    if !privileged("run_fails_on_rules") {
        return;
    }
    let dir = scratch("run");
    let exe = fixture("appendloop");
    let run = |mode: &str, extra: &[&str]| {
        let mut c = Command::new(gcprobe_bin());
        c.args(["run", "--quiet", "--format", "json", "--fail-on", "growslice.share > 30%", "--fail-on", "stw.max > 10s"]).args(extra);
        c.arg("--").arg(&exe).args(["-for", "4s", "-mode", mode]);
        c.output().unwrap()
    };
    let rec = dir.join("run.gcprobe");
    let out = run("grow", &["--record", rec.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("FAIL growslice.share > 30%") && stderr.contains("ok   stw.max > 10s"), "{stderr}");
    // The program's stdout and then the report.
    let text = String::from_utf8_lossy(&out.stdout);
    let report_at = text.find('{').expect("report on stdout");
    let r: serde_json::Value = serde_json::from_str(&text[report_at..]).unwrap();
    assert_eq!(r["window"]["ended_by"], "target-exited");
    // From its first instruction: the runtime's own start-up allocations are seen.
    assert!(r["callsites"].as_array().unwrap().iter().any(|c| str_of(c, "function").starts_with("runtime.schedinit")
        || c["frames"].as_array().unwrap().iter().any(|f| str_of(f, "function") == "runtime.schedinit")), "{:#}", r["callsites"]);
    // The recording made alongside reports the same, and gates the same.
    let again = report_unprivileged(&rec, &["--format", "json", "--fail-on", "growslice.share > 30%"]);
    assert_eq!(again.status.code(), Some(10), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap(), r);

    let out = run("prealloc", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok   growslice.share > 30%"));

    // A typo is an error before anything starts, not a rule that never holds.
    let out = gcprobe(&["run", "--fail-on", "growslice.shar > 30%", "--", exe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean growslice.share?"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files that are not recordings, or are not there, are one-line errors.
#[test]
fn bad_recordings_are_clear_errors() {
    let dir = scratch("bad");
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, b"not a recording at all").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    for (file, says) in [(garbage, "not a gcprobe recording"), (empty, "not a gcprobe recording"), (dir.join("missing"), "No such file")] {
        let out = report_cmd(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says) && stderr.lines().count() == 1, "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_metrics_name_the_culprit_and_pass_promtool() {
    if !privileged("prometheus_metrics_name_the_culprit_and_pass_promtool") {
        return;
    }
    let t = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let out = std::env::temp_dir().join(format!("gcprobe-om-{}.txt", std::process::id()));
    let pid = t.pid().to_string();
    let run = gcprobe(&["attach", "--pid", &pid, "-d", "3s", "-q", "--mode", "exact", "--format", "prometheus", "-o", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    // Debian's promtool, the Prometheus project's own linter.
    let mut check = std::process::Command::new("promtool").args(["check", "metrics"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("promtool (Debian package prometheus, which cargo xtask test installs)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let verdict = check.wait_with_output().unwrap();
    assert!(verdict.status.success(), "promtool: {}{}\n{text}", String::from_utf8_lossy(&verdict.stdout), String::from_utf8_lossy(&verdict.stderr));
    assert!(!text.contains("# EOF"), "{text}");
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let culprit = text.lines().find(|l| l.starts_with("gcprobe_culprit_share{") && l.contains(&format!("pid=\"{pid}\"")) && l.contains(&format!("main.go:{line}\""))).unwrap_or_else(|| panic!("no culprit series for line {line}:\n{text}"));
    assert!(culprit.contains("callsite=\"main.(*Index).Names "), "{culprit}");
    let share: f64 = culprit.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(share > 0.5 && share <= 1.0, "{culprit}");
    // Its bytes are counted at the same callsite, and the target is named once.
    assert!(text.lines().any(|l| l.starts_with("gcprobe_alloc_bytes_total{") && l.contains(&format!("main.go:{line}\""))), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("gcprobe_target_info{")).count(), 1, "{text}");
}
