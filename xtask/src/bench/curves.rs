//! Target slowdown versus allocation rate, bare / empty BPF program / exact /
//! sampled, on allocrate (allocations at a set rate from five callsites; it
//! imports runtime/pprof, so sampled mode also gets the runtime's samples).
//!
//! Slowdown is target CPU per unit of work against bare: below saturation a
//! rate-limited program keeps its throughput and pays in CPU; at saturation
//! (10M/s is past what one of these cores allocates) throughput drops too.
use std::path::Path;

use anyhow::{Context as _, Result};
use xtask::{fixtures, pins};

use super::{median, run::once};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bare,
    Empty,
    Exact,
    Sampled,
}

const MODES: [Mode; 4] = [Mode::Bare, Mode::Empty, Mode::Exact, Mode::Sampled];

struct Sample {
    rate: u64,
    mode: Mode,
    /// Go-counted allocations per wall second.
    allocs_per_s: f64,
    ops_per_s: f64,
    cpu_per_op: f64,
    /// gcprobe's CPU over the target's wall time, in cores.
    agent_cores: f64,
    lost: f64,
    bytes_per_record: f64,
    est_slowdown: f64,
}

pub fn run(gcprobe: &Path, rounds: usize, rates: &[u64], duration: &str) -> Result<()> {
    let exe = fixtures::build("allocrate", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        for &rate in rates {
            for mode in MODES {
                let s = sample(gcprobe, &exe, rate, duration, mode).with_context(|| format!("curves round {round} rate {rate} {mode:?}"))?;
                eprintln!("xtask bench: curves round {} rate {rate} {mode:?}: {:.0} allocs/s, {:.0} ns CPU/op", round + 1, s.allocs_per_s, s.cpu_per_op * 1e9);
                samples.push(s);
            }
        }
    }
    let med = |rate: u64, mode: Mode, f: &dyn Fn(&Sample) -> f64| median(samples.iter().filter(|s| s.rate == rate && s.mode == mode).map(f).collect());
    let ratio = |rate: u64, mode: Mode, f: &dyn Fn(&Sample) -> f64| med(rate, mode, f) / med(rate, Mode::Bare, f);

    println!("## Slowdown versus allocation rate: allocrate, Go {}, {duration} per run, {rounds} alternating rounds (medians)\n", pins::GO_DEFAULT);
    println!("Target CPU per unit of work, as a ratio to bare (1.00x = no cost):\n");
    println!("| requested allocs/s | achieved bare | empty BPF program | exact | sampled (default) | sampled: report's estimate |");
    println!("|---|---|---|---|---|---|");
    for &rate in rates {
        println!(
            "| {} | {} | {:.2}x | {:.2}x | {:.3}x | +{:.2}% |",
            si(rate as f64),
            si(med(rate, Mode::Bare, &|s| s.allocs_per_s)),
            ratio(rate, Mode::Empty, &|s| s.cpu_per_op),
            ratio(rate, Mode::Exact, &|s| s.cpu_per_op),
            ratio(rate, Mode::Sampled, &|s| s.cpu_per_op),
            med(rate, Mode::Sampled, &|s| s.est_slowdown) * 100.0,
        );
    }
    println!("\nThroughput (work per wall second), as a ratio to bare:\n");
    println!("| requested allocs/s | empty BPF program | exact | sampled (default) |");
    println!("|---|---|---|---|");
    for &rate in rates {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} |",
            si(rate as f64),
            ratio(rate, Mode::Empty, &|s| s.ops_per_s),
            ratio(rate, Mode::Exact, &|s| s.ops_per_s),
            ratio(rate, Mode::Sampled, &|s| s.ops_per_s),
        );
    }
    println!("\nWhat gcprobe itself used:\n");
    println!("| requested allocs/s | agent CPU per target second, exact (session incl. start-up) | same, sampled | lost events, exact (all rounds) | lost, sampled | bytes/record, exact | bytes/record, sampled |");
    println!("|---|---|---|---|---|---|---|");
    for &rate in rates {
        let lost = |m: Mode| samples.iter().filter(|s| s.rate == rate && s.mode == m).map(|s| s.lost).sum::<f64>();
        println!(
            "| {} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} |",
            si(rate as f64),
            med(rate, Mode::Exact, &|s| s.agent_cores),
            med(rate, Mode::Sampled, &|s| s.agent_cores),
            lost(Mode::Exact),
            lost(Mode::Sampled),
            med(rate, Mode::Exact, &|s| s.bytes_per_record),
            med(rate, Mode::Sampled, &|s| s.bytes_per_record),
        );
    }
    println!();
    Ok(())
}

fn sample(gcprobe: &Path, exe: &Path, rate: u64, duration: &str, mode: Mode) -> Result<Sample> {
    let attach: Option<&[&str]> = match mode {
        Mode::Bare => None,
        Mode::Empty => Some(&["--mode", "exact", "--empty-probes"]),
        Mode::Exact => Some(&["--mode", "exact"]),
        Mode::Sampled => Some(&[]),
    };
    let r = once(gcprobe, exe, &[format!("-rate={rate}"), format!("-duration={duration}")], attach)?;
    let out: serde_json::Value = serde_json::from_str(&r.out).with_context(|| format!("allocrate said {:?}", r.out))?;
    let n = |k: &str| out[k].as_f64().unwrap_or(f64::NAN);
    let wall = n("wall_s");
    let records = r.n("/kernel/records");
    Ok(Sample {
        rate,
        mode,
        allocs_per_s: n("mallocs") / wall,
        ops_per_s: n("ops") / wall,
        cpu_per_op: n("cpu_s") / n("ops"),
        agent_cores: r.n("/agent/cpu_s") / wall,
        lost: r.n("/events/lost"),
        bytes_per_record: if records > 0.0 { r.n("/kernel/record_bytes") / records } else { f64::NAN },
        est_slowdown: r.n("/sampling/est_slowdown"),
    })
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.0}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}
