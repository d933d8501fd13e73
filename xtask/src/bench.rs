//! `cargo xtask bench`: what gcprobe costs the target, measured side by side.
//!
//! Alternates three modes on the same fixture in one invocation: bare, an
//! empty BPF program at the same attach points (the trap's own cost), and
//! gcprobe's real program. Machines here are shared and noisy, so figures are
//! medians and ratios within one run, never absolute times across runs.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use xtask::{fixtures, pins};

#[derive(clap::Args)]
pub struct Args {
    /// Alternating rounds of (bare, empty, gcprobe).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Workload size: rounds of 64 appends plus one 128-byte make.
    #[arg(long, default_value_t = 20000)]
    iters: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bare,
    Empty,
    Real,
}

struct Sample {
    elapsed_ns: f64,
    go_mallocs: f64,
    hits: f64,
    events: f64,
    lost: f64,
    agent_cpu_s: f64,
}

pub fn run(gcprobe: &Path, args: &Args) -> Result<()> {
    let exe = fixtures::build("allocbench", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let mut samples: Vec<(Mode, Sample)> = Vec::new();
    for round in 0..args.rounds {
        for mode in [Mode::Bare, Mode::Empty, Mode::Real] {
            let s = once(gcprobe, &exe, args.iters, mode).with_context(|| format!("round {round} {mode:?}"))?;
            eprintln!("xtask bench: round {} {:?}: {:.1} ms, {} hits", round + 1, mode, s.elapsed_ns / 1e6, s.hits);
            samples.push((mode, s));
        }
    }
    let med = |m: Mode, f: &dyn Fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().filter(|(k, _)| *k == m).map(|(_, s)| f(s)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let t_bare = med(Mode::Bare, &|s| s.elapsed_ns);
    let t_empty = med(Mode::Empty, &|s| s.elapsed_ns);
    let t_real = med(Mode::Real, &|s| s.elapsed_ns);
    let hits_empty = med(Mode::Empty, &|s| s.hits);
    let hits_real = med(Mode::Real, &|s| s.hits);
    let mallocs = med(Mode::Bare, &|s| s.go_mallocs);
    let cost_empty = (t_empty - t_bare) / hits_empty.max(1.0);
    let cost_real = (t_real - t_bare) / hits_real.max(1.0);
    let events = med(Mode::Real, &|s| s.events);
    let cpu = med(Mode::Real, &|s| s.agent_cpu_s);
    let lost: f64 = samples.iter().filter(|(k, _)| *k == Mode::Real).map(|(_, s)| s.lost).sum();

    println!("## gcprobe bench: allocbench, Go {}, {} iterations, {} alternating rounds (medians)\n", pins::GO_DEFAULT, args.iters, args.rounds);
    println!("| measure | bare | empty BPF program | gcprobe |");
    println!("|---|---|---|---|");
    println!("| target wall time (ms) | {:.1} | {:.1} | {:.1} |", t_bare / 1e6, t_empty / 1e6, t_real / 1e6);
    println!("| slowdown vs bare | 1.00x | {:.1}x | {:.1}x |", t_empty / t_bare, t_real / t_bare);
    println!("| probe hits | 0 | {hits_empty:.0} | {hits_real:.0} |");
    println!("| cost per hit (ns) | - | {cost_empty:.0} | {cost_real:.0} |");
    println!();
    println!("- gcprobe's cost per hit / the empty program's: **{:.2}x**", cost_real / cost_empty.max(1.0));
    println!("- Go-counted allocations per run (runtime.MemStats.Mallocs): {mallocs:.0}");
    println!("- agent CPU per event: {:.2} us ({events:.0} events, {:.3} s CPU per run)", cpu / events.max(1.0) * 1e6, cpu);
    println!("- lost events, all gcprobe runs: {lost:.0}");
    Ok(())
}

fn once(gcprobe: &Path, exe: &Path, iters: u32, mode: Mode) -> Result<Sample> {
    let mut target = Command::new(exe)
        .arg(format!("-iters={iters}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(target.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("fixture said {line:?}, expected ready");
    }
    let json = std::env::temp_dir().join(format!("gcprobe-bench-{}.json", target.id()));
    let mut agent = None;
    if mode != Mode::Bare {
        let mut cmd = Command::new(gcprobe);
        // Exact mode: this table is the per-hit cost of every probe firing.
        cmd.args(["attach", "--pid", &target.id().to_string(), "--mode", "exact", "--format", "json", "--interval", "1h", "-o"])
            .arg(&json)
            .stderr(Stdio::piped());
        if mode == Mode::Empty {
            cmd.arg("--empty-probes");
        }
        let mut child = cmd.spawn()?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let mut l = String::new();
        loop {
            l.clear();
            if err.read_line(&mut l)? == 0 {
                let _ = target.kill();
                bail!("gcprobe exited before attaching: {}", child.wait()?);
            }
            if l.contains("attached") {
                break;
            }
        }
        agent = Some((child, err));
    }
    target.stdin.as_mut().expect("piped").write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    let mut f = line.split_whitespace();
    let (Some("elapsed_ns"), Some(ns), Some("mallocs"), Some(m)) = (f.next(), f.next(), f.next(), f.next()) else {
        bail!("unexpected fixture output {line:?}");
    };
    let elapsed_ns: f64 = ns.parse()?;
    let go_mallocs: f64 = m.parse()?;
    target.wait()?;
    let mut s = Sample { elapsed_ns, go_mallocs, hits: 0.0, events: 0.0, lost: 0.0, agent_cpu_s: 0.0 };
    if let Some((mut child, _err)) = agent {
        let st = child.wait()?;
        if !st.success() {
            bail!("gcprobe failed: {st}");
        }
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
        let _ = std::fs::remove_file(&json);
        let n = |p: &str| r.pointer(p).and_then(|v| v.as_f64()).unwrap_or(0.0);
        s.hits = if mode == Mode::Empty { n("/kernel/empty_hits") } else { n("/kernel/hits") };
        s.events = ["mallocgc", "growslice", "gc_start", "stw", "assist"].iter().map(|k| n(&format!("/events/{k}"))).sum();
        s.lost = n("/events/lost");
        s.agent_cpu_s = n("/agent/cpu_s");
    }
    Ok(s)
}
