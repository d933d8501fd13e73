//! Sampled mode's estimates against exact mode's counts and against Go's own
//! allocs profile of the same runs (`go tool pprof -top -lines`), on allocrate
//! at 200k allocations/s: byte shares of the top five lines of main.go.
use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{bail, Context as _, Result};
use xtask::{fixtures, pins, tools};

use super::run::{once, Run};

/// Byte share per main.go line.
type Shares = BTreeMap<u32, f64>;

pub fn run(gcprobe: &Path, duration: &str) -> Result<()> {
    let exe = fixtures::build("allocrate", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let mut columns: Vec<(String, Shares)> = Vec::new();
    for (name, attach) in [("exact", &["--mode", "exact"][..]), ("sampled", &[][..])] {
        let prof = std::env::temp_dir().join(format!("gcprobe-bench-{name}-{}.prof", std::process::id()));
        let args = ["-rate=200000".to_owned(), format!("-duration={duration}"), format!("-pprof={}", prof.display())];
        let r = once(gcprobe, &exe, &args, Some(attach)).with_context(|| format!("accuracy, {name} mode"))?;
        eprintln!("xtask bench: accuracy {name}: {} bursts", r.n("/sampling/bursts"));
        columns.push((format!("gcprobe {name}"), report_shares(&r, "bytes_per_s")));
        if name == "sampled" {
            columns.push(("gcprobe sampled: runtime samples".into(), report_shares(&r, "runtime_sampled_bytes_per_s")));
        }
        columns.push((format!("go tool pprof ({name} run)"), pprof_shares(&exe, &prof)?));
        let _ = std::fs::remove_file(&prof);
    }
    let mut lines: Vec<(u32, f64)> = columns[0].1.iter().map(|(l, s)| (*l, *s)).collect();
    lines.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("## Accuracy: allocrate at 200k allocations/s, {duration} per run, Go {}\n", pins::GO_DEFAULT);
    println!("Byte shares of the top five lines (of all bytes allocated); each gcprobe run wrote its own pprof profile:\n");
    println!("| main.go line | {} |", columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for (line, _) in lines.iter().take(5) {
        let cells: Vec<String> = columns.iter().map(|(_, s)| s.get(line).map_or("-".into(), |v| format!("{:.1}%", v * 100.0))).collect();
        println!("| {line} | {} |", cells.join(" | "));
    }
    println!();
    Ok(())
}

/// Shares of `field` per main.go line, over all callsites.
fn report_shares(r: &Run, field: &str) -> Shares {
    let rows = r.report.as_ref().and_then(|j| j["callsites"].as_array().cloned()).unwrap_or_default();
    let total: f64 = rows.iter().filter_map(|c| c[field].as_f64()).sum();
    let mut out = Shares::new();
    for c in &rows {
        let in_main = c["file"].as_str().is_some_and(|f| f.ends_with("allocrate/main.go"));
        if let (true, Some(line), Some(v)) = (in_main, c["line"].as_u64(), c[field].as_f64()) {
            *out.entry(line as u32).or_default() += v / total.max(f64::MIN_POSITIVE);
        }
    }
    out
}

/// Flat shares per main.go line from `go tool pprof -top -lines`.
fn pprof_shares(exe: &Path, profile: &Path) -> Result<Shares> {
    let out = Command::new(tools::go_bin(pins::GO_DEFAULT))
        .args(["tool", "pprof", "-sample_index=alloc_space", "-lines", "-top", "-nodecount=20"])
        .arg(exe)
        .arg(profile)
        .output()?;
    if !out.status.success() {
        bail!("go tool pprof: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut shares = Shares::new();
    for l in String::from_utf8(out.stdout)?.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(line) = f.last().and_then(|s| s.rsplit_once("main.go:")).and_then(|(_, n)| n.parse::<u32>().ok()) else { continue };
        if let Some(pct) = f.get(1).and_then(|s| s.strip_suffix('%')).and_then(|s| s.parse::<f64>().ok()) {
            *shares.entry(line).or_default() += pct / 100.0;
        }
    }
    Ok(shares)
}
