//! What the agent itself costs (issue 13): its CPU and memory while it
//! watches idle processes (one; twenty of one binary; twenty of four), and
//! how long `gcprobe attach` takes to start on the largest Go binary here.
//! The saturating allocator's throughput, the agent's CPU included, is the
//! `unseen` part. Agent CPU is read from /proc/PID/stat over a window that
//! starts once every target is attached, so start-up is reported apart.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use xtask::{
    fixtures::{self, Flavor},
    pins,
};

use super::{median, run::wait_attached};

pub fn run(gcprobe: &Path, idle_for: Duration) -> Result<()> {
    let flavors: Vec<PathBuf> = Flavor::ALL.iter().map(|&f| fixtures::build("idlehttp", pins::GO_DEFAULT, f)).collect::<Result<_>>()?;
    println!("## The agent's own cost: idle Go HTTP servers (idlehttp, Go {}), {}s steady window\n", pins::GO_DEFAULT, idle_for.as_secs());
    println!("| targets | binaries | start-up CPU (s) | steady CPU (% of a core) | steady RSS max (MB) | peak RSS (MB) | bursts (all targets) |");
    println!("|---|---|---|---|---|---|---|");
    let one = vec![flavors[0].clone()];
    let twenty_of_one = vec![flavors[0].clone(); 20];
    let twenty_of_four: Vec<PathBuf> = (0..20).map(|i| flavors[i % 4].clone()).collect();
    for (label, exes) in [("1", &one), ("20", &twenty_of_one), ("20", &twenty_of_four)] {
        let c = idle(gcprobe, exes, idle_for)?;
        let binaries = {
            let mut v = exes.clone();
            v.sort();
            v.dedup();
            v.len()
        };
        println!(
            "| {label} | {binaries} | {:.3} | {:.3}% | {:.1} | {:.1} | {} |",
            c.startup_cpu_s,
            c.steady_cpu_s / idle_for.as_secs_f64() * 100.0,
            c.steady_rss_kib as f64 / 1024.0,
            c.peak_rss_kib as f64 / 1024.0,
            c.bursts
        );
    }
    println!();
    startup(gcprobe)?;
    Ok(())
}

/// What one agent cost over an idle window.
struct IdleCost {
    startup_cpu_s: f64,
    steady_cpu_s: f64,
    steady_rss_kib: u64,
    peak_rss_kib: u64,
    bursts: u64,
}

/// A fixture process that waits on stdin; closing it ends the process.
struct Server(Child);

impl Server {
    fn start(exe: &Path) -> Result<Self> {
        let mut c = Command::new(exe).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting {}", exe.display()))?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("piped")).read_line(&mut line)?;
        if !line.starts_with("ready") {
            let _ = c.kill();
            bail!("{} said {line:?}, expected ready", exe.display());
        }
        Ok(Self(c))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.stdin.as_mut().map(|s| s.write_all(b"\n"));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idle(gcprobe: &Path, exes: &[PathBuf], window: Duration) -> Result<IdleCost> {
    let servers: Vec<Server> = exes.iter().map(|e| Server::start(e)).collect::<Result<_>>()?;
    let json = std::env::temp_dir().join(format!("gcprobe-bench-agent-{}.json", std::process::id()));
    let settle = Duration::from_secs(3);
    let total = window + settle + Duration::from_secs(2);
    let mut cmd = Command::new(gcprobe);
    cmd.args(["attach", "--format", "json", "--interval", "1h", "--duration"]).arg(format!("{}s", total.as_secs())).arg("-o").arg(&json);
    for s in &servers {
        cmd.args(["--pid", &s.0.id().to_string()]);
    }
    let mut agent = cmd.stderr(Stdio::piped()).spawn()?;
    let mut err = BufReader::new(agent.stderr.take().expect("piped"));
    wait_attached(&mut agent, &mut err, servers.len())?;
    let pid = agent.id();
    std::thread::sleep(settle);
    let cpu0 = cpu_s(pid)?;
    let start = Instant::now();
    let mut rss = 0;
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500));
        rss = rss.max(status_kib(pid, "VmRSS:")?);
    }
    let cpu1 = cpu_s(pid)?;
    let peak = status_kib(pid, "VmHWM:")?;
    // Drain stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in err.lines() {});
    if !agent.wait()?.success() {
        bail!("gcprobe failed");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let _ = std::fs::remove_file(&json);
    let reports: Vec<&serde_json::Value> = match doc.get("reports").and_then(|r| r.as_array()) {
        Some(rs) => rs.iter().collect(),
        None => vec![&doc],
    };
    let bursts = reports.iter().filter_map(|r| r.pointer("/sampling/bursts").and_then(|b| b.as_u64())).sum();
    drop(servers);
    Ok(IdleCost { startup_cpu_s: cpu0, steady_cpu_s: cpu1 - cpu0, steady_rss_kib: rss, peak_rss_kib: peak, bursts })
}

/// User plus system CPU seconds of a process so far (/proc/PID/stat).
fn cpu_s(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    Ok(ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// Time from `gcprobe attach` to its "attached" line (probes placed, the
/// first burst open, events flowing), on the largest Go binary here:
/// Debian's prometheus when installed, else the largest fixture.
fn startup(gcprobe: &Path) -> Result<()> {
    let prom = Path::new("/usr/bin/prometheus");
    let dir = std::env::temp_dir().join(format!("gcprobe-bench-prom-{}", std::process::id()));
    let (exe, target) = if prom.exists() {
        let c = Command::new(prom)
            .args(["--config.file=/dev/null", "--web.listen-address=127.0.0.1:0"])
            .arg(format!("--storage.tsdb.path={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_secs(2));
        (prom.to_owned(), Target::Other(KillOnDrop(c)))
    } else {
        let exe = fixtures::build("idlehttp", pins::GO_DEFAULT, Flavor::Cgo)?;
        let s = Server::start(&exe)?;
        (exe, Target::Fixture(s))
    };
    let size_mb = std::fs::metadata(&exe)?.len() as f64 / 1e6;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut agent = Command::new(gcprobe)
            .args(["attach", "--pid", &target.pid().to_string(), "--duration", "1s", "--interval", "1h", "-o", "/dev/null"])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = BufReader::new(agent.stderr.take().expect("piped"));
        wait_attached(&mut agent, &mut err, 1)?;
        times.push(t.elapsed().as_secs_f64());
        agent.wait()?;
    }
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
    println!("### Attach start-up: {} ({size_mb:.0} MB)\n", exe.display());
    println!("- `gcprobe attach` to its attached line (probes placed, calibration done, first burst open), 5 runs: median **{:.3} s**, max {:.3} s", median(times.clone()), times.iter().cloned().fold(0.0, f64::max));
    println!("- events are read from then on; the first flush reads them within {} ms\n", 200);
    Ok(())
}

/// The process attached to at start-up, ended on drop either way.
enum Target {
    Fixture(Server),
    Other(KillOnDrop),
}

impl Target {
    fn pid(&self) -> u32 {
        match self {
            Target::Fixture(s) => s.0.id(),
            Target::Other(k) => k.0.id(),
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
