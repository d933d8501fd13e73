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
        Self::spawn_with(exe, args, &[])
    }

    /// The same, with `env` added to its environment.
    pub fn spawn_with(exe: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Self {
        let child = Command::new(exe).args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        Self { child, lines: None }
    }

    /// The next line the target printed after `ready` (waits up to a minute).
    pub fn next_line(&self) -> String {
        let rx = self.lines.as_ref().expect("started with Target::start");
        rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a line from the target")
    }

    /// Every line the target has printed since the last read, without waiting.
    pub fn lines_now(&self) -> Vec<String> {
        let rx = self.lines.as_ref().expect("started with Target::start");
        rx.try_iter().collect()
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

/// gcprobe, copied where user nobody can run it (a root-owned directory, 0755).
pub fn gcprobe_for_nobody() -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("gcprobe-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("gcprobe");
    std::fs::copy(gcprobe_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// setpriv arguments: user nobody, with exactly `caps` (and no others, not even in the bounding set).
pub fn as_nobody_with(caps: &[String]) -> Vec<String> {
    let set = caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",");
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", &format!("--inh-caps=-all,{set}"), &format!("--ambient-caps=-all,{set}"), &format!("--bounding-set=-all,{set}")].map(String::from).to_vec()
}

/// A fresh, empty directory for one test: `gcprobe-{group}-{name}-{pid}` under the temp dir.
pub fn scratch_dir(group: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gcprobe-{group}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A finished command's stderr, as text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// `gcprobe attach --pid PID --format json --interval 1h EXTRA...` on `t`
/// until `t` exits by itself: once attached, the target is told "go"; its
/// first line after that is parsed as JSON. Returns (that line, the report).
pub fn attach_until_exit(t: &mut Target, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let pid = t.pid().to_string();
    let mut args = vec!["attach", "--pid", &pid, "--format", "json", "--interval", "1h"];
    args.extend_from_slice(extra);
    let s = Session::start(&args);
    t.send_line("go");
    let own: serde_json::Value = serde_json::from_str(&t.next_line()).unwrap();
    assert!(t.child.wait().unwrap().success());
    let out = s.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_totals_agree(&r);
    (own, r)
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

/// `gc 7 @0.213s 1%: 0.021+0.52+0.004 ms clock, ...` → (sweep term ms, mark term ms).
pub fn parse_gctrace(l: &str) -> Option<(f64, f64)> {
    if !l.starts_with("gc ") {
        return None;
    }
    let clock = l.split(": ").nth(1)?.split(" ms clock").next()?;
    let parts: Vec<f64> = clock.split('+').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (parts.len() == 3).then(|| (parts[0], parts[2]))
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

/// `gcprobe node` running in the background on a free loopback port; killed
/// (SIGINT, then SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: String,
}

impl Node {
    /// Starts `gcprobe node` with `args` and waits until it answers /targets.
    pub fn start(args: &[&str]) -> Self {
        Self::start_under(&[], &gcprobe_bin(), args)
    }

    /// Starts `PREFIX... GCPROBE node ARGS...` (e.g. under setpriv).
    pub fn start_under(prefix: &[&str], gcprobe: &std::path::Path, args: &[&str]) -> Self {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(gcprobe);
                c
            }
            None => Command::new(gcprobe),
        };
        let child = cmd.arg("node").arg("--listen").arg(&addr).args(args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawning gcprobe node");
        let mut node = Node { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.try_get("/targets", None).is_none() {
            if let Ok(Some(st)) = node.child.try_wait() {
                panic!("gcprobe node exited: {st}");
            }
            assert!(Instant::now() < deadline, "gcprobe node did not start serving");
            thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// GET `path`: (status, content type, body); None when nothing answers.
    pub fn try_get(&self, path: &str, accept: Option<&str>) -> Option<(u16, String, Vec<u8>)> {
        use std::io::Read as _;
        let mut s = std::net::TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n{accept}Connection: close\r\n\r\n", self.addr).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let ctype = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned())).unwrap_or_default();
        Some((status, ctype, raw[end + 4..].to_vec()))
    }

    /// GET `path`, which must answer 200; the body as text.
    pub fn get(&self, path: &str) -> String {
        let (status, _, body) = self.try_get(path, None).unwrap_or_else(|| panic!("GET {path}: no answer"));
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The PIDs /targets lists.
    pub fn target_pids(&self) -> Vec<u32> {
        let v: serde_json::Value = serde_json::from_str(&self.get("/targets")).unwrap();
        assert_eq!(v["schema"], "gcprobe.targets/v1");
        v["targets"].as_array().unwrap().iter().map(|t| t["pid"].as_u64().unwrap() as u32).collect()
    }

    /// Waits until /targets lists `pid` (true) or `timeout` passes (false).
    pub fn wait_for(&self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.target_pids().contains(&pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the agent with SIGINT and waits for it; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill on our own child's PID.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            thread::sleep(Duration::from_millis(500));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the metric line that starts with `prefix` and holds every
/// one of `labels`, if any.
pub fn metric(text: &str, prefix: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))?.rsplit(' ').next()?.parse().ok()
}

/// Runs Debian's `promtool check metrics` on `text`; panics with its verdict on failure.
pub fn promtool_check(text: &str) {
    let mut check = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool (Debian package prometheus, which cargo xtask test installs)");
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let verdict = check.wait_with_output().unwrap();
    assert!(verdict.status.success(), "promtool: {}{}\n{text}", String::from_utf8_lossy(&verdict.stdout), String::from_utf8_lossy(&verdict.stderr));
}

/// Where the unified (v2) cgroup hierarchy is mounted: /sys/fs/cgroup on a
/// v2 host, /sys/fs/cgroup/unified on a hybrid one.
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("cgroup2 "))).expect("a cgroup2 mount");
    PathBuf::from(line.split_whitespace().nth(4).unwrap())
}

/// Cgroup directories and kubelet log entries made for a test, removed on
/// drop (the process moved back to the root cgroup first).
pub struct KubeletLayout {
    pub cgroups: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub root: PathBuf,
    pub pid: u32,
}

impl KubeletLayout {
    /// Moves `pid` into `rel` under the cgroup2 root, making its directories.
    /// The kubelet's log directory of a pod and its container,
    /// /var/log/pods/NAMESPACE_POD_UID/CONTAINER; returns the pod's.
    pub fn pod_logs(&mut self, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        let pods = PathBuf::from("/var/log/pods");
        if !pods.exists() {
            self.dirs.push(pods.clone());
        }
        let pod_dir = pods.join(format!("{ns}_{pod}_{uid}"));
        std::fs::create_dir_all(pod_dir.join(container)).unwrap();
        self.dirs.extend([pod_dir.clone(), pod_dir.join(container)]);
        pod_dir
    }

    pub fn enter(&mut self, rel: &str) {
        let mut at = self.root.clone();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            at.push(seg);
            if !at.exists() {
                std::fs::create_dir(&at).unwrap();
                self.cgroups.push(at.clone());
            }
        }
        std::fs::write(at.join("cgroup.procs"), self.pid.to_string()).unwrap();
    }
}

impl Drop for KubeletLayout {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        for c in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(c);
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}


/// The patterns of tests/fixtures/loopkinds: each append line is marked
/// `gcprobe:append-NAME`, its loop `gcprobe:for-NAME`.
pub mod loopkinds {
    use super::fixtures;

    /// (name, loop kind, element type, first Go version that compiles it,
    /// function holding the append once inlining is done).
    pub type Pattern = (&'static str, &'static str, &'static str, (u32, u32), &'static str);

    pub const PATTERNS: &[Pattern] = &[
        ("map", "map", "string", (1, 19), "main.(*Catalog).Keys"),
        ("slice", "slice", "int", (1, 19), "main.doubled"),
        ("channel", "channel", "float64", (1, 19), "main.drain"),
        ("string", "string", "int32", (1, 19), "main.runes"),
        ("for", "for", "uint64", (1, 19), "main.counter"),
        ("nested", "slice", "[2]int32", (1, 19), "main.flatten"),
        ("inlined", "map", "int64", (1, 19), "main.collect"),
        ("integer", "integer", "uintptr", (1, 22), "main.squares"),
        // The iterator and the loop body are both inlined into it.
        ("func-iterator", "func-iterator", "complex64", (1, 23), "main.viaIterator"),
    ];

    /// The patterns Go `version` compiles.
    pub fn compiled_by(version: &str) -> impl Iterator<Item = &'static Pattern> {
        let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
        PATTERNS.iter().filter(move |p| minor >= (p.3).1)
    }

    /// File name and line of `marker` in any of the fixture's files.
    pub fn marker(marker: &str) -> (String, u32) {
        let dir = fixtures::source_dir("loopkinds");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "go") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Some(i) = text.lines().position(|l| l.ends_with(marker)) {
                    return (path.file_name().unwrap().to_string_lossy().into_owned(), i as u32 + 1);
                }
            }
        }
        panic!("no {marker} in {}", dir.display());
    }
}

/// The BPF objects the host holds, by kind: what a gcprobe that ended
/// (however it ended) must not leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfObjects {
    pub links: usize,
    pub maps: usize,
    pub progs: usize,
}

impl BpfObjects {
    /// Counted with bpftool (Debian package bpftool, which cargo xtask test installs).
    pub fn now() -> Self {
        let count = |what: &str| {
            let out = Command::new("bpftool").args([what, "list", "--json"]).output().expect("bpftool (Debian package bpftool, which cargo xtask test installs)");
            assert!(out.status.success(), "bpftool {what} list: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().map_or(0, Vec::len)
        };
        Self { links: count("link"), maps: count("map"), progs: count("prog") }
    }

    /// Links and maps are released when their last descriptor closes, a
    /// little after the process that held them is reaped: waits up to 2 s
    /// for the count to come back to `self`, and returns what it came to.
    pub fn settle_to(self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = Self::now();
            if now == self || Instant::now() >= deadline {
                return now;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// tracefs's uprobe_events: uprobes made through tracefs (perf-event uprobes
/// made by perf_event_open are not listed, and vanish with their descriptor).
/// Mounts tracefs where the host has not (as root, the tests are).
pub fn tracefs_uprobes() -> String {
    let events = std::path::Path::new("/sys/kernel/tracing/uprobe_events");
    if !events.exists() {
        let st = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status().expect("mount");
        assert!(st.success(), "mounting tracefs on /sys/kernel/tracing");
    }
    std::fs::read_to_string(events).expect("tracefs's uprobe_events")
}

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Process `pid`'s resident memory, in bytes.
pub fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |k| k * 1024)
}

/// One `probe` line of `gcprobe plan`:
/// `probe runtime.mallocgc Malloc vaddr 0x478c20 +0xa past its stack check file offset 0x78c2a`.
pub struct PlannedAt {
    /// Link-time address of the function's entry.
    pub vaddr: u64,
    /// How far past the entry the uprobe sits (0: at the entry).
    pub past_entry: u64,
    pub file_offset: u64,
}

/// `symbol`'s probe line in `plan` (the output of `gcprobe plan`).
pub fn planned_at(plan: &str, symbol: &str) -> Option<PlannedAt> {
    let line = plan.lines().find(|l| l.trim_start().strip_prefix("probe ").is_some_and(|r| r.split_whitespace().next() == Some(symbol)))?;
    let hex = |key: &str| u64::from_str_radix(line.split(key).nth(1)?.split_whitespace().next()?.strip_prefix("0x")?, 16).ok();
    let past_entry = match line.split_once(" past its stack check") {
        Some((head, _)) => u64::from_str_radix(head.rsplit(" +0x").next()?, 16).ok()?,
        None => 0,
    };
    Some(PlannedAt { vaddr: hex(" vaddr ")?, past_entry, file_offset: hex(" file offset ")? })
}

/// Link-time address of the instruction `symbol`'s uprobe sits on, from `gcprobe plan --exe`
/// (non-PIE: also its address in the process).
pub fn probe_site(exe: &std::path::Path, symbol: &str) -> u64 {
    let out = gcprobe(&["plan", "--exe", exe.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let p = planned_at(&text, symbol).unwrap_or_else(|| panic!("no {symbol} in\n{text}"));
    p.vaddr + p.past_entry
}

/// The first byte of the target's code at `addr`: 0xcc while a uprobe's breakpoint is there (x86_64).
pub fn code_byte(pid: u32, addr: u64) -> u8 {
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(addr)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    b[0]
}

