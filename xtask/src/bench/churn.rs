//! `churn`: node mode following 50 Go processes of 5 binaries started and
//! stopped over a minute. The run is the integration test of the same name
//! (one scenario, one driver); here it writes its samples of the agent's CPU
//! and resident memory, printed as a table for BENCHMARKS.md.
use std::path::Path;

use anyhow::{bail, Context as _, Result};

pub fn run(gcprobe: &Path) -> Result<()> {
    let (st, v) = super::node_test_samples(gcprobe, "churn_of_fifty_processes_is_followed_and_leaves_nothing_behind", "GCPROBE_CHURN_OUT", &[])?;
    if !st.success() {
        bail!("the churn run failed: {st}");
    }
    let v = v.context("the churn samples")?;
    let samples = v["samples"].as_array().context("samples")?;
    println!("\n## churn: the agent over a minute of 50 processes of 5 binaries (4 at a time)\n");
    println!("| t (s) | targets | agent CPU in the last 10 s | resident |");
    println!("|---:|---:|---:|---:|");
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    let mut last: Option<&serde_json::Value> = None;
    for s in samples.iter().step_by(10) {
        let cpu = last.map_or(String::from("—"), |l| format!("{:.2}% of a core", (f(s, "cpu_s") - f(l, "cpu_s")) / (f(s, "t_s") - f(l, "t_s")) * 100.0));
        println!("| {:.0} | {} | {cpu} | {:.1} MiB |", f(s, "t_s"), s["targets"], f(s, "rss_bytes") / 1048576.0);
        last = Some(s);
    }
    let seen: Vec<f64> = v["watched_after_ms"].as_array().context("watched_after_ms")?.iter().filter_map(serde_json::Value::as_f64).collect();
    println!("\nwatched after its start: median {:.0} ms, max {:.0} ms", super::median(seen.clone()), seen.iter().copied().fold(0.0, f64::max));
    Ok(())
}
