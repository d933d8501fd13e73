//! `soak`: node mode for a long while (30 minutes by default) under churn and allocation
//! load. The run is the integration test of the same name, which asserts the agent stays
//! flat; here it runs longer and its samples are printed as a table for BENCHMARKS.md.
use std::{path::Path, time::Duration};

use anyhow::{bail, Context as _, Result};

pub fn run(gcprobe: &Path, soak_for: Duration) -> Result<()> {
    let secs = soak_for.as_secs().to_string();
    let (st, v) = super::node_test_samples(gcprobe, "a_soak_under_churn_keeps_the_agents_memory_cpu_and_descriptors_flat", "GCPROBE_SOAK_OUT", &[("GCPROBE_SOAK_SECS", secs)])?;
    // The table is printed even when the test failed: it shows what grew.
    if let Some(v) = &v {
        print_table(v, soak_for)?;
    }
    if !st.success() {
        bail!("the soak failed: {st}");
    }
    Ok(())
}

fn print_table(v: &serde_json::Value, soak_for: Duration) -> Result<()> {
    let samples = v["samples"].as_array().context("samples")?;
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    println!("\n## soak: node mode for {} under churn ({} processes of 5 binaries, 3 to 5 at a time) beside a steady allocator\n", humantime::format_duration(soak_for), v["processes"]);
    println!("| t (min) | targets | agent CPU since the last row | resident | descriptors |");
    println!("|---:|---:|---:|---:|---:|");
    // About twelve rows, whatever the length.
    let step = (samples.len() / 12).max(1);
    let mut last: Option<&serde_json::Value> = None;
    for s in samples.iter().step_by(step).chain(samples.last()) {
        if last.is_some_and(|l| std::ptr::eq(l, s)) {
            continue;
        }
        let cpu = last.map_or(String::from("—"), |l| format!("{:.2}% of a core", (f(s, "cpu_s") - f(l, "cpu_s")) / (f(s, "t_s") - f(l, "t_s")) * 100.0));
        println!("| {:.1} | {} | {cpu} | {:.1} MiB | {} |", f(s, "t_s") / 60.0, s["targets"], f(s, "rss_bytes") / 1048576.0, s["fds"]);
        last = Some(s);
    }
    Ok(())
}
