//! Exact mode's cost per probe hit, against an empty BPF program at the same
//! attach points (the trap's own cost) and against no probes at all.
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use xtask::{fixtures, pins};

use super::{
    median,
    run::{once, BpfStats},
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bare,
    Empty,
    Real,
    /// `--baseline`'s build: its empty program, and its own.
    BaselineEmpty,
    BaselineReal,
}

impl Mode {
    fn is_empty(self) -> bool {
        matches!(self, Mode::Empty | Mode::BaselineEmpty)
    }
}

struct Sample {
    elapsed_ns: f64,
    go_mallocs: f64,
    hits: f64,
    events: f64,
    lost: f64,
    agent_cpu_s: f64,
    /// The BPF program's own run time per hit (kernel bpf_stats).
    prog_ns: Option<f64>,
}

pub fn run(gcprobe: &Path, baseline: Option<&Path>, rounds: usize, iters: u32) -> Result<()> {
    let exe = fixtures::build("allocbench", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let mut samples: Vec<(Mode, Sample)> = Vec::new();
    // Both programs pay the stats' clock reads alike; wall times include them.
    let _stats = BpfStats::enable();
    let modes: &[Mode] = if baseline.is_some() { &[Mode::Bare, Mode::BaselineEmpty, Mode::Empty, Mode::BaselineReal, Mode::Real] } else { &[Mode::Bare, Mode::Empty, Mode::Real] };
    for round in 0..rounds {
        for &mode in modes {
            let bin = match (mode, baseline) {
                (Mode::BaselineEmpty | Mode::BaselineReal, Some(b)) => b,
                _ => gcprobe,
            };
            let s = sample(bin, &exe, iters, mode).with_context(|| format!("per-hit round {round} {mode:?}"))?;
            eprintln!("xtask bench: per-hit round {} {:?}: {:.1} ms, {} hits", round + 1, mode, s.elapsed_ns / 1e6, s.hits);
            samples.push((mode, s));
        }
    }
    let med = |m: Mode, f: &dyn Fn(&Sample) -> f64| median(samples.iter().filter(|(k, _)| *k == m).map(|(_, s)| f(s)).collect());
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
    let prog = |m: Mode| {
        let v: Vec<f64> = samples.iter().filter(|(k, _)| *k == m).filter_map(|(_, s)| s.prog_ns).collect();
        (!v.is_empty()).then(|| median(v))
    };

    println!("## Per hit, exact mode: allocbench, Go {}, {} iterations, {} alternating rounds (medians)\n", pins::GO_DEFAULT, iters, rounds);
    println!("| measure | bare | empty BPF program | gcprobe |");
    println!("|---|---|---|---|");
    println!("| target wall time (ms) | {:.1} | {:.1} | {:.1} |", t_bare / 1e6, t_empty / 1e6, t_real / 1e6);
    println!("| slowdown vs bare | 1.00x | {:.1}x | {:.1}x |", t_empty / t_bare, t_real / t_bare);
    println!("| probe hits | 0 | {hits_empty:.0} | {hits_real:.0} |");
    println!("| cost per hit (ns) | - | {cost_empty:.0} | {cost_real:.0} |");
    match (prog(Mode::Empty), prog(Mode::Real)) {
        (Some(e), Some(r)) => {
            println!("| the program's own run time per hit, kernel bpf_stats (ns) | - | {e:.0} | {r:.0} |");
            println!();
            println!("- gcprobe's program over the empty one, per hit: **{:.0} ns** (the kernel's own timing of each run)", r - e);
        }
        _ => println!("\n- the programs' own run time: unavailable (kernel.bpf_stats_enabled could not be set)"),
    }
    println!();
    println!("- gcprobe's cost per hit / the empty program's: **{:.2}x**", cost_real / cost_empty.max(1.0));
    if let Some(b) = baseline {
        let cost = |m: Mode| (med(m, &|s| s.elapsed_ns) - t_bare) / med(m, &|s| s.hits).max(1.0);
        let (be, br) = (cost(Mode::BaselineEmpty), cost(Mode::BaselineReal));
        println!("- baseline `{}` in the same rounds: empty program {be:.0} ns per hit ({:.0} hits), its own {br:.0} ns per hit ({:.0} hits)", b.display(), med(Mode::BaselineEmpty, &|s| s.hits), med(Mode::BaselineReal, &|s| s.hits));
        println!("- this build / the baseline, per hit: empty program **{:.2}x**, gcprobe **{:.2}x**", cost_empty / be.max(1.0), cost_real / br.max(1.0));
    }
    println!("- Go-counted allocations per run (runtime.MemStats.Mallocs): {mallocs:.0}");
    println!("- agent CPU per event: {:.2} us ({events:.0} events, {:.3} s CPU per run)", cpu / events.max(1.0) * 1e6, cpu);
    println!("- lost events, all gcprobe runs: {lost:.0}\n");
    Ok(())
}

fn sample(gcprobe: &Path, exe: &Path, iters: u32, mode: Mode) -> Result<Sample> {
    // Exact mode: this table is the per-hit cost of every probe firing.
    let attach: Option<&[&str]> = match mode {
        Mode::Bare => None,
        Mode::Empty | Mode::BaselineEmpty => Some(&["--mode", "exact", "--empty-probes"]),
        Mode::Real | Mode::BaselineReal => Some(&["--mode", "exact"]),
    };
    let r = once(gcprobe, exe, &[format!("-iters={iters}")], attach)?;
    let mut f = r.out.split_whitespace();
    let (Some("elapsed_ns"), Some(ns), Some("mallocs"), Some(m)) = (f.next(), f.next(), f.next(), f.next()) else {
        bail!("unexpected fixture output {:?}", r.out);
    };
    Ok(Sample {
        elapsed_ns: ns.parse()?,
        go_mallocs: m.parse()?,
        hits: if mode.is_empty() { r.n("/kernel/empty_hits") } else { r.n("/kernel/hits") },
        events: ["mallocgc", "growslice", "stw", "assist"].iter().map(|k| r.n(&format!("/events/{k}"))).sum(),
        lost: r.n("/events/lost"),
        agent_cpu_s: r.n("/agent/cpu_s"),
        prog_ns: r.prog_ns_per_run,
    })
}
