//! The attach/detach storm: 200 short sessions (0.2 to 2 s) of every kind gcprobe has, one
//! after another on one busy target, each ended by its `--duration` or by SIGINT or SIGTERM at
//! a random moment, set-up included. Meanwhile one `gcprobe node` watches throughout.
//!
//! The target (the workload fixture) folds all its work into a checksum, which this test
//! recomputes on its own: a probe that disturbed one instruction of the target's would show
//! there. Afterwards nothing may be left: no BPF object, no tracefs uprobe, no breakpoint byte,
//! no slowdown; and the watching node's descriptors and memory must not have grown.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gcprobe_tests::*;

const CYCLES: usize = 200;

/// The session kinds, in the order the storm cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Attach,
    AttachExact,
    Record,
    Run,
    Node,
}

const KINDS: [Kind; 5] = [Kind::Attach, Kind::AttachExact, Kind::Record, Kind::Run, Kind::Node];

/// How a session is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `--duration` (`run`: the program finishes its work).
    Duration,
    Signal(i32),
}

/// A small deterministic generator: the same storm every run.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The workload's checksum after `n` operations, computed here as its `op` does: record
/// `i*64+j` is named by `i+j` in base 36 and found again by that name.
fn checksums(upto: u64) -> impl FnMut(u64) -> u64 {
    let base36_len = |mut n: u64| {
        let mut len = 1;
        while n >= 36 {
            n /= 36;
            len += 1;
        }
        len
    };
    let (mut done, mut sum) = (0u64, 14695981039346656037u64);
    move |n: u64| {
        assert!(n >= done && n <= upto, "checkpoints in order");
        for i in done..n {
            for j in 0..64u64 {
                sum = (sum ^ (i * 64 + j) ^ base36_len(i + j)).wrapping_mul(1099511628211);
            }
        }
        done = n;
        sum
    }
}

/// "checksum N HEX" lines, as (N, value).
fn parse_checksums<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(u64, u64)> {
    lines
        .into_iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("checksum ")?.split(' ');
            Some((w.next()?.parse().ok()?, u64::from_str_radix(w.next()?, 16).ok()?))
        })
        .collect()
}

/// The target's most recent "ops N" count among `lines`.
fn last_ops(lines: &[String]) -> Option<u64> {
    lines.iter().rev().find_map(|l| l.strip_prefix("ops ")?.parse().ok())
}

/// Waits for `pid` (our child) with wait4, for its peak resident memory too; None on timeout.
fn wait_rusage(pid: u32, timeout: Duration) -> Option<(i32, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let (mut status, mut ru) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
        // SAFETY: wait4 on our own child, into locals.
        let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid as i32 {
            return Some((status, ru.ru_maxrss as u64 * 1024));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One session of the storm, and what it showed.
struct Cycle {
    kind: Kind,
    end: End,
    /// The target's operations per second while the session ran (None: `run`, whose own program works).
    target_rate: Option<f64>,
    peak_rss: u64,
    /// Signalled before it said it had attached.
    in_setup: bool,
}

/// How one gcprobe run ended.
struct Ended {
    /// As wait4 gives it.
    status: i32,
    peak_rss: u64,
    took: Duration,
    /// Signalled before it said it had attached.
    in_setup: bool,
    stdout: String,
    stderr: String,
}

struct Storm {
    exe: PathBuf,
    dir: PathBuf,
    /// The target's bare rate, for sizing `run`'s programs.
    bare: f64,
    /// Checksum lines of `run`'s programs.
    run_checksums: Vec<(u64, u64)>,
    /// Checksum lines of the storm's target.
    target_checksums: Vec<(u64, u64)>,
    /// The target's operation count when last read.
    target_ops: u64,
}

impl Storm {
    fn args(&self, kind: Kind, end: End, pid: u32, d: Duration, n: usize) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let dur = format!("{}ms", d.as_millis());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        match kind {
            Kind::Attach | Kind::AttachExact => {
                a.extend(s(&["attach", "--pid", &pid.to_string(), "--format", "json"]));
                if kind == Kind::AttachExact {
                    a.extend(s(&["--mode", "exact"]));
                }
            }
            Kind::Record => a.extend(s(&["record", "--pid", &pid.to_string(), "--format", "json", "--force", "-o", self.recording(n).to_str().unwrap()])),
            Kind::Run => {
                // Sized to finish within the session's time by itself, or (ended by a signal) to outlast it.
                let secs = if end == End::Duration { d.as_secs_f64() } else { d.as_secs_f64() + 30.0 };
                let ops = ((self.bare * secs) as u64).max(1000);
                a.extend(s(&["run", "--format", "json", "-o", self.dir.join("run.json").to_str().unwrap(), "--", self.exe.to_str().unwrap(), "-every", "1h", "-ops", &ops.to_string()]));
                a.extend(s(&["-check", &(ops / 4).max(1).to_string()]));
            }
            Kind::Node => a.extend(s(&["node", "-q", "--listen", "127.0.0.1:0", "--include", self.exe.to_str().unwrap(), "--grace", "1s"])),
        }
        if end == End::Duration && matches!(kind, Kind::Attach | Kind::AttachExact | Kind::Record) {
            a.extend(s(&["--duration", &dur]));
        }
        a
    }

    fn recording(&self, n: usize) -> PathBuf {
        self.dir.join(format!("storm-{n}.gcp"))
    }

    /// Runs one session against `t` and checks how it ended.
    fn cycle(&mut self, n: usize, kind: Kind, end: End, d: Duration, t: &Target) -> Cycle {
        let args = self.args(kind, end, t.pid(), d, n);
        self.take_lines(t);
        let from = self.target_ops;
        let e = self.session(&args, kind, end, d);
        let what = format!("cycle {n} ({kind:?}, {end:?}, {d:?}, {}): {}", args.join(" "), e.stderr);
        assert!(libc::WIFEXITED(e.status), "{what}: ended by signal {}", libc::WTERMSIG(e.status));
        let code = libc::WEXITSTATUS(e.status);
        match kind {
            Kind::Node => assert_eq!(code, 0, "{what}"),
            Kind::Run => self.check_run(code, end, &e.stdout, &what),
            _ => self.check_report(n, kind, end, code, &e.stdout, &what),
        }
        if end == End::Duration && kind != Kind::Run {
            // --duration counts from gcprobe's start; the report takes a moment more.
            assert!(e.took < d + Duration::from_secs(5), "{what}: took {:?}", e.took);
        }
        self.take_lines(t);
        let to = self.target_ops;
        assert!(to > from, "{what}: the target made no progress ({from} -> {to})");
        let target_rate = (kind != Kind::Run).then(|| (to - from) as f64 / e.took.as_secs_f64());
        Cycle { kind, end, target_rate, peak_rss: e.peak_rss, in_setup: e.in_setup }
    }

    /// gcprobe with `args`, signalled `d` in when `end` says so, until it exits.
    fn session(&self, args: &[String], kind: Kind, end: End, d: Duration) -> Ended {
        let (out, err) = (self.dir.join("stdout"), self.dir.join("stderr"));
        let started = Instant::now();
        let child = Command::new(gcprobe_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawning gcprobe");
        let pid = child.id();
        let mut in_setup = false;
        if let End::Signal(sig) = end {
            std::thread::sleep(d);
            in_setup = kind != Kind::Node && !std::fs::read_to_string(&err).unwrap_or_default().contains("attached");
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid as i32, sig) };
        }
        let (status, peak_rss) = wait_rusage(pid, d + Duration::from_secs(30)).unwrap_or_else(|| panic!("{}: gcprobe did not end", args.join(" ")));
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        Ended { status, peak_rss, took: started.elapsed(), in_setup, stdout: read(&out), stderr: read(&err) }
    }

    /// Reads what the target printed since last time: its operation count and checksums.
    fn take_lines(&mut self, t: &Target) {
        let lines = t.lines_now();
        if let Some(n) = last_ops(&lines) {
            self.target_ops = n;
        }
        self.target_checksums.extend(parse_checksums(lines.iter().map(String::as_str)));
    }

    fn check_report(&self, n: usize, kind: Kind, end: End, code: i32, stdout: &str, what: &str) {
        assert_eq!(code, 0, "{what}");
        let r: serde_json::Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: report is not JSON ({e}): {stdout}"));
        let by = if end == End::Duration { "duration" } else { "signal" };
        assert_eq!(r["window"]["ended_by"], by, "{what}");
        if kind == Kind::Record {
            let file = self.recording(n);
            let out = gcprobe(&["report", file.to_str().unwrap(), "--format", "json"]);
            assert!(out.status.success(), "{what}: report of the recording: {}", stderr_text(&out));
            let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(rec["gc"]["cycles"], r["gc"]["cycles"], "{what}: the recording's GC cycles");
            std::fs::remove_file(file).unwrap();
        }
    }

    fn check_run(&mut self, code: i32, end: End, stdout: &str, what: &str) {
        let report = std::fs::read_to_string(self.dir.join("run.json")).unwrap_or_else(|e| panic!("{what}: no report ({e})"));
        let r: serde_json::Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{what}: report is not JSON ({e})"));
        let sums = parse_checksums(stdout.lines());
        match end {
            End::Duration => {
                assert_eq!(code, 0, "{what}");
                assert_eq!(r["window"]["program_exit"]["code"], 0, "{what}");
                assert!(!sums.is_empty(), "{what}: no checksum in {stdout}");
            }
            // The signal goes on to the program, which dies of it: exit 11.
            End::Signal(_) => assert_eq!(code, 11, "{what}"),
        }
        self.run_checksums.extend(sums);
    }
}


/// Session `n` of the storm: its kind, how it ends, and when (its `--duration`, or when it is
/// signalled). Kinds take turns; each kind's sessions end by `--duration`, SIGINT and SIGTERM in
/// turn (node mode by a signal only), and every fourth signalled one is signalled while it
/// sets up (10-150 ms in).
fn schedule(n: usize, rng: &mut Lcg) -> (Kind, End, Duration) {
    let kind = KINDS[n % KINDS.len()];
    let round = n / KINDS.len();
    let end = match (kind, round % 3) {
        (Kind::Node, _) if round % 2 == 0 => End::Signal(libc::SIGINT),
        (Kind::Node, _) => End::Signal(libc::SIGTERM),
        (_, 0) => End::Duration,
        (_, 1) => End::Signal(libc::SIGINT),
        _ => End::Signal(libc::SIGTERM),
    };
    let d = match end {
        End::Signal(_) if kind != Kind::Node && round % 4 == 3 => Duration::from_millis(10 + (140.0 * rng.unit()) as u64),
        _ => Duration::from_millis(200 + (1800.0 * rng.unit()) as u64),
    };
    (kind, end, d)
}

/// The target's operations per second over about `secs`, from its own count.
fn target_rate(storm: &mut Storm, t: &Target, secs: f64) -> f64 {
    storm.take_lines(t);
    let (from, started) = (storm.target_ops, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    storm.take_lines(t);
    (storm.target_ops - from) as f64 / started.elapsed().as_secs_f64()
}

/// What the watching node holds: (open descriptors, resident bytes).
fn held_by(node: &Node) -> (usize, u64) {
    (open_fds(node.child.id()), resident_bytes(node.child.id()))
}

#[test]
fn a_storm_of_short_sessions_leaves_the_target_right_and_nothing_behind() {
    if !privileged("a_storm_of_short_sessions_leaves_the_target_right_and_nothing_behind") {
        return;
    }
    let cycles = std::env::var("GCPROBE_STORM_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(CYCLES);
    let exe = fixture("workload");
    let malloc = probe_site(&exe, "runtime.mallocgc");
    let objects = BpfObjects::now();
    let uprobes = tracefs_uprobes();
    let t = Target::start(&exe, &["-every", "100ms", "-check", "100000"], &[]);
    let original = code_byte(t.pid(), malloc);
    let mut storm = Storm { exe: exe.clone(), dir: scratch_dir("storm", "sessions"), bare: 0.0, run_checksums: Vec::new(), target_checksums: Vec::new(), target_ops: 0 };
    storm.bare = target_rate(&mut storm, &t, 2.0);
    let observer = Node::start(&["-q", "--include", exe.to_str().unwrap(), "--grace", "1s"]);
    assert!(observer.wait_for(t.pid(), Duration::from_secs(5)), "the watching node did not list the target");
    let mut rng = Lcg(16);
    let mut done: Vec<Cycle> = Vec::new();
    let mut warm = (0, 0);
    let started = Instant::now();
    for n in 0..cycles {
        let (kind, end, d) = schedule(n, &mut rng);
        done.push(storm.cycle(n, kind, end, d, &t));
        // Half-way: the watching node's bounded books (pauses, cycles, the history) have
        // filled for this target, which collects hundreds of times a second.
        if n + 1 == cycles / 2 {
            warm = held_by(&observer);
        }
    }
    let storm_s = started.elapsed().as_secs_f64();
    let in_setup = done.iter().filter(|c| c.in_setup).count();
    eprintln!("{in_setup} sessions were signalled before they had attached");
    assert!(cycles < 20 || in_setup > 0, "no session was signalled during set-up");
    let end = held_by(&observer);
    assert!(observer.stop().success(), "the watching node's exit");
    report(&storm, &done, storm_s, warm, end);
    assert!(end.0 <= warm.0 + 4, "the watching node's descriptors grew over the storm: {} -> {}", warm.0, end.0);
    assert!(end.1 <= warm.1 + (8 << 20), "the watching node's memory grew over the storm: {} -> {} MiB", warm.1 >> 20, end.1 >> 20);
    assert_eq!(objects.settle_to(), objects, "BPF objects left behind");
    assert_eq!(tracefs_uprobes(), uprobes, "uprobes left in tracefs");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(code_byte(t.pid(), malloc), original, "a breakpoint left at runtime.mallocgc");
    }
    let after = target_rate(&mut storm, &t, 2.0);
    eprintln!("target: bare {:.0} ops/s before the storm, {after:.0} after", storm.bare);
    assert!(after > 0.7 * storm.bare, "throughput after the storm {after:.0}/s, bare {:.0}/s", storm.bare);
    verify_checksums(&storm);
}

/// Every checksum printed, by the target and by `run`'s programs, recomputed here.
fn verify_checksums(storm: &Storm) {
    assert!(storm.target_checksums.len() >= 3, "the target printed {} checksums", storm.target_checksums.len());
    let mut all: Vec<(u64, u64)> = storm.target_checksums.iter().chain(&storm.run_checksums).copied().collect();
    all.sort_unstable();
    all.dedup();
    let upto = all.last().unwrap().0;
    let mut sum_at = checksums(upto);
    for (n, v) in &all {
        assert_eq!(format!("{:x}", sum_at(*n)), format!("{v:x}"), "checksum after {n} operations");
    }
    eprintln!("checksums right: {} of the target (up to {} operations), {} of run's programs", storm.target_checksums.len(), storm.target_checksums.last().unwrap().0, storm.run_checksums.len());
}

/// The storm's figures: the target's throughput under each kind of session, as a share of
/// bare, and each kind's peak memory, first cycles and last.
fn report(storm: &Storm, done: &[Cycle], storm_s: f64, warm: (usize, u64), end: (usize, u64)) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!("storm: {} sessions in {storm_s:.0} s; target bare {:.0} ops/s", done.len(), storm.bare);
    eprintln!("| session | cycles | by duration | by signal | target throughput (median, of bare) | gcprobe peak RSS, first 4 / last 4 (median) |");
    for kind in KINDS {
        let of: Vec<&Cycle> = done.iter().filter(|c| c.kind == kind).collect();
        let rate = median(of.iter().filter_map(|c| c.target_rate).collect());
        let rss = |cs: &[&Cycle]| median(cs.iter().map(|c| c.peak_rss as f64 / 1048576.0).collect());
        let k = of.len().min(4);
        let by_duration = of.iter().filter(|c| c.end == End::Duration).count();
        eprintln!("| {kind:?} | {} | {by_duration} | {} | {} | {:.1} / {:.1} MiB |", of.len(), of.len() - by_duration, if rate.is_nan() { "— (its own program)".into() } else { format!("{:.2}", rate / storm.bare) }, rss(&of[..k]), rss(&of[of.len() - k..]));
    }
    eprintln!("watching node: {} -> {} descriptors, {:.1} -> {:.1} MiB resident", warm.0, end.0, warm.1 as f64 / 1048576.0, end.1 as f64 / 1048576.0);
}
