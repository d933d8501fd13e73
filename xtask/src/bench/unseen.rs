//! Issue 5's acceptance measure: in the default mode, the throughput of an
//! allocation-heavy program gcprobe was not developed against (logsummary:
//! parses log batches, groups them by user, renders JSON; it collects
//! hundreds of times a second), as a ratio to its throughput alone, from
//! alternating runs; and whether the report still names its culprit line.
use std::path::Path;

use anyhow::{Context as _, Result};
use xtask::{fixtures, pins};

use super::{median, run::once};

pub fn run(gcprobe: &Path, baseline: Option<&Path>, rounds: usize, duration: &str) -> Result<()> {
    let exe = fixtures::build("logsummary", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let culprit_line = fixtures::marker_line("logsummary", "gcprobe:culprit");
    let args = [format!("-duration={duration}")];
    let rate = |out: &str| -> Result<f64> {
        let v: serde_json::Value = serde_json::from_str(out).with_context(|| format!("logsummary said {out:?}"))?;
        Ok(v["batches_per_s"].as_f64().unwrap_or(f64::NAN))
    };
    println!("## Default mode on a program it has never seen: logsummary, Go {}, {duration} per run\n", pins::GO_DEFAULT);
    println!("| pair | throughput with gcprobe / alone | est. slowdown (report) | pause probe hits | gated hits | bursts | culprit line |");
    println!("|---|---|---|---|---|---|---|");
    let (mut ratios, mut baseline_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let bare = once(gcprobe, &exe, &args, None).with_context(|| format!("unseen round {round} bare"))?;
        // The baseline build between the two, its own ratio to the same bare run.
        if let Some(b) = baseline {
            let other = once(b, &exe, &args, Some(&[])).with_context(|| format!("unseen round {round} baseline"))?;
            baseline_ratios.push(rate(&other.out)? / rate(&bare.out)?);
        }
        let probed = once(gcprobe, &exe, &args, Some(&[])).with_context(|| format!("unseen round {round} gcprobe"))?;
        let ratio = rate(&probed.out)? / rate(&bare.out)?;
        ratios.push(ratio);
        let line = probed.report.as_ref().and_then(|r| r.pointer("/culprits/0/line")).and_then(|v| v.as_u64());
        let stw = probed.n("/kernel/hits_by_kind/StwStart") + probed.n("/kernel/hits_by_kind/StwStop") + probed.n("/kernel/hits_by_kind/StwResumed");
        println!(
            "| {} | {ratio:.3} | {:.2}% | {stw:.0} | {:.0} | {:.0} | {} |",
            round + 1,
            probed.n("/sampling/est_slowdown") * 100.0,
            probed.n("/kernel/gated"),
            probed.n("/sampling/bursts"),
            match line {
                Some(l) if l == culprit_line as u64 => format!("main.go:{l} (right)"),
                Some(l) => format!("main.go:{l} (WRONG, expected {culprit_line})"),
                None => "none (WRONG)".into(),
            }
        );
    }
    println!("\nMedian ratio: **{:.3}**\n", median(ratios));
    if let Some(b) = baseline {
        let each: Vec<String> = baseline_ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!("Baseline `{}` in the same rounds: median ratio **{:.3}** ({})\n", b.display(), median(baseline_ratios.clone()), each.join(", "));
    }
    Ok(())
}
