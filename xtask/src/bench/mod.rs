//! `cargo xtask bench`: what gcprobe costs the target, measured side by side.
//!
//! Machines here are shared and noisy, so every figure is a median of runs
//! alternated within one invocation, or a ratio of such medians, never an
//! absolute time compared across runs. Three parts:
//!
//! - `per-hit`: exact mode's cost per probe hit against an empty BPF program
//!   at the same attach points (allocbench);
//! - `per-frame`: our program's cost over the empty program's by the depth
//!   of stack walked, side by side in one process (`gcprobe calibrate`);
//! - `curves`: target slowdown versus allocation rate, 10k to 10M per second,
//!   bare / empty program / exact / sampled, with the agent's CPU and lost
//!   events (allocrate);
//! - `accuracy`: sampled mode's top callsites and byte shares against exact
//!   mode's and against the same runs' `go tool pprof` allocs profiles;
//! - `unseen`: default-mode throughput of logsummary, a program gcprobe was
//!   not developed against, as a ratio to running alone (the saturating
//!   allocator: the agent's own CPU competes with it);
//! - `agent`: the agent's own CPU and memory watching idle servers (one,
//!   twenty of one binary, twenty of four), and attach start-up on the
//!   largest Go binary here;
//! - `churn`: `gcprobe node` following 50 processes of 5 binaries over a
//!   minute: the agent's CPU and memory, and how soon each is watched;
//! - `soak`: the same churn, beside a steady allocator, for 30 minutes:
//!   the agent's CPU, memory and descriptors over time.
mod accuracy;
mod agent;
mod churn;
mod per_frame;
mod curves;
mod per_hit;
mod run;
mod soak;
mod unseen;

use std::path::Path;

use anyhow::{Context as _, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Part {
    PerHit,
    PerFrame,
    Curves,
    Accuracy,
    Unseen,
    Agent,
    Churn,
    Soak,
}

#[derive(clap::Args)]
pub struct Args {
    /// Alternating rounds of every mode.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these parts (default: all).
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// per-hit: rounds of 64 appends plus one 128-byte make.
    #[arg(long, default_value_t = 20000)]
    iters: u32,
    /// per-hit and unseen: another gcprobe build (an earlier commit's)
    /// measured in the same rounds, beside this build.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
    /// curves: target allocation rates, per second.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000,10000000")]
    rates: Vec<u64>,
    /// curves and accuracy: how long each run allocates.
    #[arg(long, default_value = "3s")]
    duration: String,
    /// unseen: how long each logsummary run works.
    #[arg(long, default_value = "8s")]
    unseen_duration: String,
    /// agent: the steady window over which idle targets are watched.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_for: std::time::Duration,
    /// soak: how long node mode runs under churn.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    soak_for: std::time::Duration,
}

pub fn run(gcprobe: &Path, args: &Args) -> Result<()> {
    let want = |p: Part| args.only.is_empty() || args.only.contains(&p);
    if want(Part::PerHit) {
        per_hit::run(gcprobe, args.baseline.as_deref(), args.rounds, args.iters)?;
    }
    if want(Part::PerFrame) {
        per_frame::run(gcprobe, args.rounds.max(3))?;
    }
    if want(Part::Curves) {
        curves::run(gcprobe, args.rounds, &args.rates, &args.duration)?;
    }
    if want(Part::Accuracy) {
        accuracy::run(gcprobe, &args.duration)?;
    }
    if want(Part::Unseen) {
        unseen::run(gcprobe, args.baseline.as_deref(), args.rounds.max(3), &args.unseen_duration)?;
    }
    if want(Part::Agent) {
        agent::run(gcprobe, args.idle_for)?;
    }
    if want(Part::Churn) {
        churn::run(gcprobe)?;
    }
    if want(Part::Soak) {
        soak::run(gcprobe, args.soak_for)?;
    }
    Ok(())
}

/// Runs the node integration test `test` with gcprobe and `env`, asking it to
/// write its samples to a file (`out_var` names the variable): whether it
/// passed, and the samples if it wrote them (a failed run's too: they show
/// what went wrong).
fn node_test_samples(gcprobe: &Path, test: &str, out_var: &str, env: &[(&str, String)]) -> Result<(std::process::ExitStatus, Option<serde_json::Value>)> {
    let out = std::env::temp_dir().join(format!("gcprobe-{test}-{}.json", std::process::id()));
    let st = std::process::Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args(["test", "--release", "-p", "gcprobe-tests", "--test", "node", "--", "--exact", "--nocapture", test])
        .env("GCPROBE_BIN", gcprobe)
        .env(out_var, &out)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("running {test}"))?;
    let samples = std::fs::read(&out).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(&out);
    Ok((st, samples))
}

/// Median of `v` (NaN for none).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
