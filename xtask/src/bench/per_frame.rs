//! Our program's cost per hit over the empty program's, by the depth of
//! the stack it walks: `gcprobe calibrate --depth N` times both programs
//! side by side in one process (thread CPU time, medians of its rounds), on
//! a synthetic chain of frame records spaced like Go's. Depths alternate
//! within each round; the slope over depth is the cost per frame walked.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use super::{median, run::BpfStats};

const DEPTHS: [u32; 6] = [1, 2, 5, 10, 20, 30];

pub fn run(gcprobe: &Path, rounds: usize) -> Result<()> {
    let mut agg: Vec<Vec<f64>> = vec![Vec::new(); DEPTHS.len()];
    let mut ev: Vec<Vec<f64>> = vec![Vec::new(); DEPTHS.len()];
    // The kernel's own timing of each program's runs, beside the thread's.
    let (mut kagg, mut kev): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (vec![Vec::new(); DEPTHS.len()], vec![Vec::new(); DEPTHS.len()]);
    let _stats = BpfStats::enable();
    for round in 0..rounds {
        for (i, d) in DEPTHS.iter().enumerate() {
            // Ten times start-up's calls, three times its rounds: ~1 s a run.
            let out = Command::new(gcprobe).args(["calibrate", "--depth", &d.to_string(), "--calls", "3000", "--rounds", "9"]).output()?;
            if !out.status.success() {
                bail!("gcprobe calibrate --depth {d} (round {round}): {}", String::from_utf8_lossy(&out.stderr));
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("calibrate JSON")?;
            let c = &v["calibration"];
            let n = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
            agg[i].push(n("aggregated_ns") - n("empty_ns"));
            ev[i].push(n("event_ns") - n("empty_ns"));
            let k = &c["program_ns"];
            if let (Some(a), Some(e), Some(z)) = (k["aggregated"].as_f64(), k["event"].as_f64(), k["empty"].as_f64()) {
                kagg[i].push(a - z);
                kev[i].push(e - z);
            }
        }
    }
    println!("## Per hit over the empty program, by frames walked ({rounds} alternating rounds, medians)\n");
    print_depths(agg, ev);
    if kagg.iter().all(|v| !v.is_empty()) {
        println!("The programs' own run time over the empty program's, by the kernel's accounting (bpf_stats: no trap, no thread-clock noise):\n");
        print_depths(kagg, kev);
    } else {
        println!("- the programs' own run time: unavailable (kernel.bpf_stats_enabled could not be set)\n");
    }
    Ok(())
}

/// One table of medians by depth, and its least-squares line.
fn print_depths(agg: Vec<Vec<f64>>, ev: Vec<Vec<f64>>) {
    println!("| frames | counted in the kernel (ns) | sent whole (ns) |");
    println!("|---|---|---|");
    let (ma, me): (Vec<f64>, Vec<f64>) = (agg.into_iter().map(median).collect(), ev.into_iter().map(median).collect());
    for (i, d) in DEPTHS.iter().enumerate() {
        println!("| {d} | {:.0} | {:.0} |", ma[i], me[i]);
    }
    let xs: Vec<f64> = DEPTHS.iter().map(|&d| d as f64).collect();
    let ((sa, ia), (se, ie)) = (fit(&xs, &ma), fit(&xs, &me));
    println!("\n- least squares over depth: counted **{ia:.0} ns + {sa:.1} ns per frame**; sent whole **{ie:.0} ns + {se:.1} ns per frame**\n");
}

/// Slope and intercept of the least-squares line through (xs, ys).
fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    (slope, my - slope * mx)
}
