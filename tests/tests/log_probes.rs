//! `--log-probes`: the kernel program's diagnostics reach stderr when asked
//! for, rate-limited, and never otherwise (root).
use std::process::Command;

use gcprobe_tests::*;

/// `gcprobe run` over allocrate at full rate, sampled: between bursts the
/// gate is shut, so the bursted probes' hits are gated hits. Returns the
/// report and gcprobe's stderr.
fn run_allocrate(name: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let report = std::env::temp_dir().join(format!("gcprobe-{name}-{}.json", std::process::id()));
    let out = Command::new(gcprobe_bin())
        .args(["run", "--quiet", "--format", "json", "--output"])
        .arg(&report)
        .args(extra)
        .arg("--")
        .arg(fixture("allocrate"))
        .args(["-rate=100000", "-duration=3s"])
        .output()
        .expect("running gcprobe");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let r = serde_json::from_slice(&std::fs::read(&report).expect("report written")).expect("report is JSON");
    let _ = std::fs::remove_file(&report);
    (r, stderr)
}

fn gated_hits(r: &serde_json::Value) -> u64 {
    let gated = r["kernel"]["gated"].as_u64().expect("kernel.gated");
    assert!(gated > 0, "no gated hit to log: {:#}", r["kernel"]);
    gated
}

#[test]
fn log_probes_reports_gated_hits_with_the_targets_tgid() {
    if !privileged("log_probes_reports_gated_hits_with_the_targets_tgid") {
        return;
    }
    let (r, stderr) = run_allocrate("log-probes-on", &["--log-probes"]);
    let gated = gated_hits(&r);
    let pid = r["target"]["pid"].as_u64().expect("target.pid");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("gcprobe: probe: gated hit: probe ")).collect();
    // A CPU's first gated hit is always logged, with the target's tgid.
    let first = format!(" tgid {pid} (#1 on this CPU)");
    assert!(lines.iter().any(|l| l.ends_with(&first)), "no line ending {first:?}:\n{stderr}");
    // Later ones only when a CPU's count reaches a power of two.
    let counts: Vec<u64> = lines
        .iter()
        .map(|l| l.rsplit_once("(#").and_then(|(_, n)| n.strip_suffix(" on this CPU)")).and_then(|n| n.parse().ok()).unwrap_or(0))
        .collect();
    assert!(counts.iter().all(|n| n.is_power_of_two()), "{counts:?}\n{stderr}");
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) } as u64;
    let most = cpus * u64::from(u64::BITS - gated.leading_zeros());
    assert!(lines.len() as u64 <= most, "{} lines for {gated} gated hits on {cpus} CPUs:\n{stderr}", lines.len());
}

#[test]
fn without_log_probes_the_kernel_logs_nothing() {
    if !privileged("without_log_probes_the_kernel_logs_nothing") {
        return;
    }
    let (r, stderr) = run_allocrate("log-probes-off", &[]);
    gated_hits(&r);
    assert!(!stderr.contains("gcprobe: probe:"), "{stderr}");
}
