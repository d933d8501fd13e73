//! Helpers for the integration tests: the gcprobe binary, Go fixtures, target
//! processes that are killed on drop, and the root requirement.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStderr, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

pub use xtask::{fixtures::{self, Flavor}, pins};

/// The gcprobe executable under test: $GCPROBE_BIN (set by `cargo xtask test`),
/// else the newest of target/{release,debug}/gcprobe.
pub fn gcprobe_bin() -> PathBuf {
    let root = xtask::workspace_root();
    if let Some(p) = std::env::var_os("GCPROBE_BIN") {
        // cargo runs each test binary in its own package directory.
        return root.join(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> =
        ["release", "debug"].iter().map(|p| root.join("target").join(p).join("gcprobe")).filter(|p| p.exists()).collect();
    candidates.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    candidates.pop().expect("no gcprobe binary: run `cargo xtask test`")
}

/// Privileged tests load BPF. Without root they skip, except in CI, where a
/// skipped privileged test would hide a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root, and CI=true forbids skipping it");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Builds a fixture with the default Go.
pub fn fixture(name: &str) -> PathBuf {
    fixtures::build(name, pins::GO_DEFAULT, Flavor::Default).unwrap_or_else(|e| panic!("building {name}: {e:#}"))
}

/// A running Go fixture; killed when dropped.
pub struct Target {
    pub child: Child,
    /// The target's stdout after `ready`, line by line.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Target {
    /// Starts `exe` and waits for it to print `ready` on stdout.
    pub fn start(exe: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{} did not start", exe.display());
        // Keep draining stdout so the target never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self { child, lines: Some(rx) }
    }

    /// Starts `exe` without waiting for a ready line.
    pub fn spawn(exe: &PathBuf, args: &[&str]) -> Self {
        let child = Command::new(exe).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        Self { child, lines: None }
    }

    /// The next line the target printed after `ready` (waits up to a minute).
    pub fn next_line(&self) -> String {
        let rx = self.lines.as_ref().expect("started with Target::start");
        rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a line from the target")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send_line(&mut self, s: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs gcprobe to completion.
pub fn gcprobe(args: &[&str]) -> Output {
    Command::new(gcprobe_bin()).args(args).output().expect("running gcprobe")
}

/// `gcprobe attach --mode exact --format json` for `duration`; returns the
/// parsed report. Exact mode: these tests compare counts with Go's own.
pub fn attach_json(pid: u32, duration: &str) -> serde_json::Value {
    attach_json_with(pid, duration, &["--mode", "exact"])
}

/// `gcprobe attach --format json` with extra arguments.
pub fn attach_json_with(pid: u32, duration: &str, extra: &[&str]) -> serde_json::Value {
    let pid = pid.to_string();
    let mut args = vec!["attach", "--pid", &pid, "--duration", duration, "--format", "json", "--quiet"];
    args.extend_from_slice(extra);
    let out = gcprobe(&args);
    assert!(out.status.success(), "gcprobe failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let r = serde_json::from_slice(&out.stdout).expect("report is JSON");
    assert_totals_agree(&r);
    r
}

/// A gcprobe attach running in the background, once it has attached.
pub struct Session {
    pub child: Child,
    pub stderr: BufReader<ChildStderr>,
}

impl Session {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(gcprobe_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning gcprobe");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("gcprobe exited before attaching: {:?}", child.wait());
            }
            if line.contains("attached") {
                break;
            }
            assert!(Instant::now() < deadline, "gcprobe did not attach in time");
        }
        Self { child, stderr }
    }

    pub fn finish(self) -> Output {
        let Session { child, mut stderr } = self;
        let rest = thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let mut out = child.wait_with_output().expect("waiting for gcprobe");
        out.stderr = rest.join().unwrap().into_bytes();
        out
    }
}

/// The culprits array of a report.
pub fn culprits(r: &serde_json::Value) -> &Vec<serde_json::Value> {
    r["culprits"].as_array().expect("culprits array")
}

pub fn str_of<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// The appendloop fixture's culprit: `main.(*Index).Names` at its marked append.
pub fn assert_appendloop_culprit(r: &serde_json::Value) {
    let c = culprits(r).first().unwrap_or_else(|| panic!("no culprit: {:#}", r["callsites"]));
    assert_eq!(str_of(c, "function"), "main.(*Index).Names", "{c:#}");
    assert_eq!(c["line"], fixtures::marker_line("appendloop", "gcprobe:culprit"), "{c:#}");
}

/// Every total in a report equals the sum of its parts, whichever section shows it.
pub fn assert_totals_agree(r: &serde_json::Value) {
    let gc = &r["gc"];
    let stw = &gc["stw"];
    let reasons = stw["by_reason"].as_object().expect("by_reason");
    let by_reason: u64 = reasons.values().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(r["events"]["stw"], stw["count"], "events.stw vs gc.stw.count");
    assert_eq!(stw["count"].as_u64().unwrap(), by_reason, "stw count vs the sum by reason");
    let total_ms: f64 = reasons.values().map(|v| v["total_ms"].as_f64().unwrap()).sum();
    assert!((total_ms - stw["total_ms"].as_f64().unwrap()).abs() < 1e-6, "stw total vs the sum by reason");
    let sweeps = reasons.get("GC sweep termination").map_or(0, |v| v["count"].as_u64().unwrap());
    assert_eq!(gc["cycles"].as_u64().unwrap(), sweeps, "cycles vs sweep-termination pauses");
    let dur = r["window"]["duration_s"].as_f64().unwrap();
    assert!((gc["cycles_per_s"].as_f64().unwrap() * dur - sweeps as f64).abs() < 1e-6, "cycles_per_s × window vs cycles");
    assert!(gc["heap_live"].as_array().unwrap().len() as u64 <= sweeps, "more heap samples than cycles");
    let rows = r["callsites"].as_array().expect("callsites");
    if !rows.is_empty() {
        for share in ["share_of_bytes", "share_of_allocs"] {
            let sum: f64 = rows.iter().map(|c| c[share].as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-6 || sum == 0.0, "{share} sums to {sum}");
        }
    }
}
