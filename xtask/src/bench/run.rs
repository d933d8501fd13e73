//! One fixture run, bare or under `gcprobe attach`: the fixture prints
//! `ready`, waits for a line on stdin (so gcprobe attaches first), works,
//! then prints its result line.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Result};

pub struct Run {
    /// The fixture's result line.
    pub out: String,
    /// gcprobe's JSON report, when attached.
    pub report: Option<serde_json::Value>,
    /// The agent's BPF programs' own run time per run, by the kernel's
    /// accounting (`run_time_ns` / `run_cnt` in their fdinfo): None unless
    /// `kernel.bpf_stats_enabled` is on (see [`BpfStats`]) and they ran.
    pub prog_ns_per_run: Option<f64>,
}

impl Run {
    /// A number from the report (0 when absent or bare).
    pub fn n(&self, pointer: &str) -> f64 {
        self.report.as_ref().and_then(|r| r.pointer(pointer)).and_then(|v| v.as_f64()).unwrap_or(0.0)
    }
}

/// Runs `exe args`, with `gcprobe attach --pid P <attach>` when `attach` is Some.
pub fn once(gcprobe: &Path, exe: &Path, args: &[String], attach: Option<&[&str]>) -> Result<Run> {
    let mut target = Command::new(exe).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut out = BufReader::new(target.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = target.kill();
        bail!("fixture said {line:?}, expected ready");
    }
    let json = std::env::temp_dir().join(format!("gcprobe-bench-{}.json", target.id()));
    let mut agent = None;
    if let Some(extra) = attach {
        let mut child = Command::new(gcprobe)
            .args(["attach", "--pid", &target.id().to_string(), "--format", "json", "--interval", "1h", "-o"])
            .arg(&json)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        if let Err(e) = wait_attached(&mut child, &mut err, 1) {
            let _ = target.kill();
            return Err(e);
        }
        let poll = ProgPoll::start(child.id());
        agent = Some((child, err, poll));
    }
    target.stdin.as_mut().expect("piped").write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    target.wait()?;
    let (mut report, mut prog_ns_per_run) = (None, None);
    if let Some((mut child, _err, poll)) = agent {
        prog_ns_per_run = poll.finish();
        let st = child.wait()?;
        if !st.success() {
            bail!("gcprobe failed: {st}");
        }
        report = Some(serde_json::from_slice(&std::fs::read(&json)?)?);
        let _ = std::fs::remove_file(&json);
    }
    Ok(Run { out: line.trim().to_owned(), report, prog_ns_per_run })
}

/// Reads the agent's programs' run statistics every 50 ms while the
/// fixture works: the ratio of two running totals, so the last reading
/// before the agent exits serves.
struct ProgPoll {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<(u64, u64)>>,
}

impl ProgPoll {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut last = None;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(t) = prog_totals(pid).filter(|&(_, runs)| runs > 0) {
                    last = Some(t);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            last
        });
        Self { stop, thread }
    }

    fn finish(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ns, runs) = self.thread.join().ok()??;
        Some(ns as f64 / runs as f64)
    }
}

/// Run time and runs summed over the BPF program fds `pid` holds.
fn prog_totals(pid: u32) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        if !info.contains("prog_id:") {
            continue;
        }
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        total.0 += field("run_time_ns:");
        total.1 += field("run_cnt:");
    }
    Some(total)
}

/// `kernel.bpf_stats_enabled` on for as long as this lives, as it was
/// after: the kernel then times every BPF program run (two clock reads
/// each, so only for the measurement that needs it).
pub struct BpfStats {
    was: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Self {
        let was = std::fs::read_to_string(BPF_STATS).ok();
        if std::fs::write(BPF_STATS, "1").is_err() {
            eprintln!("xtask bench: cannot enable {BPF_STATS}: the programs' own run time is not measured");
        }
        Self { was }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(was) = &self.was {
            let _ = std::fs::write(BPF_STATS, was.trim());
        }
    }
}

/// Reads gcprobe's stderr until it has said `attached` `n` times (once per target).
pub fn wait_attached(child: &mut std::process::Child, err: &mut BufReader<std::process::ChildStderr>, n: usize) -> Result<()> {
    let mut seen = 0;
    let mut l = String::new();
    while seen < n {
        l.clear();
        if err.read_line(&mut l)? == 0 {
            bail!("gcprobe exited before attaching: {}", child.wait()?);
        }
        seen += usize::from(l.contains("attached"));
    }
    Ok(())
}
