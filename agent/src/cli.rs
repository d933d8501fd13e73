//! Command line (clap derive). `main.rs` parses this and hands off.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    plan::Mode,
    render::Format,
    report::{
        diff::{ChangeRule, Format as DiffFormat},
        rules::Rule,
    },
};

#[derive(Debug, Parser)]
#[command(name = "gcprobe", version, about = "Live eBPF probe for Go programs: which loop fills the heap, and how long GC stops the world", after_help = crate::error::EXIT_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a running Go process and report allocation callsites, culprits and GC pauses.
    Attach(AttachArgs),
    /// Attach to a running Go process and record the session to a file, for `gcprobe report` anywhere later.
    Record(RecordArgs),
    /// Report on a recording: no root and no target binary needed.
    Report(ReportArgs),
    /// Compare two sessions (recordings or JSON reports) to prove a fix: per callsite, culprits, pauses, GC.
    Diff(DiffArgs),
    /// Start a Go program under probes from its first instruction; report at its exit, and fail on rules.
    #[command(after_help = crate::error::EXIT_HELP)]
    Run(RunArgs),
    /// Print the probe plan for a Go binary or process without attaching (no root needed).
    Plan(PlanArgs),
    /// List the Go processes on this host: Go version, binary, container, pod and systemd unit (root sees every process).
    Ps(PsArgs),
    /// Watch every Go process on this host, started before or after, and serve
    /// Prometheus metrics, a target list and reports over HTTP (a DaemonSet's agent).
    Node(NodeArgs),
    /// Benchmarks: this host's per-hit cost with a synthetic stack DEPTH frames deep, as JSON.
    #[command(hide = true)]
    Calibrate {
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=32))]
        depth: u8,
        /// Calls per function per round.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=100_000))]
        calls: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
        rounds: u8,
    },
}

/// How a live session observes, shared by attach, record and run.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// Interval of the live summary on stderr.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub interval: Duration,
    /// No live summary or progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// exact: probe every allocation (exact counts, a trap per allocation).
    /// sampled: GC probes always; allocations from the runtime's own sample and
    /// from short exact bursts kept within --overhead-budget.
    #[arg(long, value_enum, default_value_t = Mode::Sampled)]
    pub mode: Mode,
    /// Sampled mode: the slowdown gcprobe may cost the target, in percent of
    /// its CPU time (e.g. 1%, 0.5%). Default 1%; `run` 5%.
    #[arg(long, value_parser = parse_budget)]
    pub overhead_budget: Option<f64>,
    /// Print the probes' rare kernel-side diagnostics on stderr (frame-walk
    /// faults, a full aggregation map, gated hits, unexpected cookies).
    #[arg(long)]
    pub log_probes: bool,
    /// Benchmark baseline: attach an empty program at the same points.
    #[arg(long, hide = true)]
    pub empty_probes: bool,
    /// An import path prefix whose packages are your code too (e.g. your
    /// company's, github.com/acme), beside package main and the main module
    /// named in the binary's build information (repeatable).
    #[arg(long = "app-prefix", value_name = "PREFIX")]
    pub app_prefix: Vec<crate::analysis::owner::AppPrefix>,
    #[command(flatten)]
    pub render: RenderArgs,
}

/// How the text report is laid out.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RenderArgs {
    /// Frames shown per callsite in the text report (the callsite, its
    /// inline chain and callers; JSON always has them all).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub stack_depth: u16,
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Process ID of the Go program, as this host sees it. Give it several
    /// times to watch several processes in one agent: one report each.
    #[arg(long, short, required = true)]
    pub pid: Vec<u32>,
    /// Stop after this long (e.g. 10s, 1m30s); default: until Ctrl-C or the target exits.
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Process ID of the Go program, as this host sees it.
    #[arg(long, short)]
    pub pid: u32,
    /// Stop after this long (e.g. 10s, 1m30s); default: until Ctrl-C or the target exits.
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The recording to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Replace the recording if the file exists.
    #[arg(long)]
    pub force: bool,
    /// Format of the report printed on stdout when the session ends.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A file written by `gcprobe record`.
    pub file: PathBuf,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// An import path prefix whose packages are your code too (e.g. your
    /// company's, github.com/acme), beside package main and the main module
    /// named in the binary's build information (repeatable).
    #[arg(long = "app-prefix", value_name = "PREFIX")]
    pub app_prefix: Vec<crate::analysis::owner::AppPrefix>,
    /// Exit 10 when this holds of the report, e.g. 'stw.p99 > 5ms' (repeatable).
    #[arg(long = "fail-on", value_name = "RULE", value_parser = parse_rule)]
    pub fail_on: Vec<Rule>,
    #[command(flatten)]
    pub render: RenderArgs,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The session before the change: a recording or a JSON report (told apart by content).
    pub before: PathBuf,
    /// The session after it.
    pub after: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Write the comparison here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Exit 10 when AFTER exceeds BEFORE by more than N% of this metric,
    /// e.g. 'stw.p99 +20%', 'alloc.bytes_per_s +10%' (repeatable).
    #[arg(long = "fail-on", value_name = "METRIC +N%", value_parser = parse_change_rule)]
    pub fail_on: Vec<ChangeRule>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Exit 10 when this holds of the report, e.g. 'stw.p99 > 5ms',
    /// 'growslice.share > 30%', 'gc.cycles_per_s > 10', 'maps.likely_leaks > 0',
    /// 'heap.live_growth > 1MB/s', 'heap.live_max > 512MiB' (repeatable).
    #[arg(long = "fail-on", value_name = "RULE", value_parser = parse_rule)]
    pub fail_on: Vec<Rule>,
    /// Report format (printed when the program exits).
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also record the session to this file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Exit with the program's own status when it fails (128 + the signal
    /// when killed) instead of 11. Its 3 or 10 then reads like gcprobe's own.
    #[arg(long)]
    pub exit_with_program: bool,
    #[command(flatten)]
    pub session: SessionArgs,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PlanArgs {
    /// A running process.
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// A Go executable on disk.
    #[arg(long)]
    pub exe: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// JSON ({"schema": "gcprobe.processes/v1", "processes": [...]}) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Node mode's default port, in the range Prometheus exporters use.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9466";

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Address of the HTTP endpoint: /metrics, /targets, /report?pid=N.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// exact: probe every allocation (a trap per allocation, in every target).
    /// sampled: GC probes always; allocations in short bursts within --overhead-budget per target.
    #[arg(long, value_enum, default_value_t = Mode::Sampled)]
    pub mode: Mode,
    /// Sampled mode: the slowdown gcprobe may cost each target, in percent of its CPU time.
    #[arg(long, value_parser = parse_budget, default_value = "1%")]
    pub overhead_budget: f64,
    /// The agent's own CPU ceiling, in percent of one core (e.g. 2%): allocation
    /// bursts of every target open only while the agent is under it. Default: none.
    #[arg(long, value_parser = parse_budget)]
    pub agent_cpu: Option<f64>,
    /// Watch only processes that match: a glob on the executable's path
    /// ('/usr/bin/*'), or FIELD=GLOB with FIELD one of exe, namespace, pod,
    /// container, unit (repeatable; any may match).
    #[arg(long, value_name = "RULE", value_parser = parse_filter)]
    pub include: Vec<crate::node::filter::Rule>,
    /// Do not watch processes that match (as --include; repeatable; wins over --include).
    #[arg(long, value_name = "RULE", value_parser = parse_filter)]
    pub exclude: Vec<crate::node::filter::Rule>,
    /// Record every process watched into this directory, a file per process
    /// (`gcprobe report FILE` reads each); files begin anew past
    /// --record-file-mib or --record-file-age, the oldest go past --record-dir-mib.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// A process's recording goes on in a new file past this many MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub record_file_mib: u32,
    /// ...or this long after its file began.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub record_file_age: Duration,
    /// The directory's recordings are kept under this many MiB: the oldest finished ones go.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    pub record_dir_mib: u32,
    /// Callsites per target with their own series; the rest are summed as callsite="other".
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top_callsites: u16,
    /// How long a binary's probes stay after its last process exits, so a
    /// program run again and again is attached once.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub grace: Duration,
    /// How often /proc is swept for processes the kernel's exec events missed.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub sweep: Duration,
    /// No progress lines on stderr (warnings still go there).
    #[arg(long, short)]
    pub quiet: bool,
    /// An import path prefix whose packages are your code on every target,
    /// beside each binary's package main and main module (repeatable).
    #[arg(long = "app-prefix", value_name = "PREFIX")]
    pub app_prefix: Vec<crate::analysis::owner::AppPrefix>,
    #[command(flatten)]
    pub render: RenderArgs,
}

fn parse_filter(s: &str) -> Result<crate::node::filter::Rule, String> {
    s.parse().map_err(|e: crate::node::filter::FilterError| crate::error::error_chain(&e))
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    s.parse().map_err(|e: crate::report::rules::RuleError| e.to_string())
}

fn parse_change_rule(s: &str) -> Result<ChangeRule, String> {
    s.parse().map_err(|e: crate::report::diff::ChangeRuleError| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 10s, 500ms or 2m)"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// "1%", "0.5%" or "2" (percent) → a fraction in (0, 1].
fn parse_budget(s: &str) -> Result<f64, String> {
    let n = s.trim().strip_suffix('%').unwrap_or(s.trim());
    let pct: f64 = n.parse().map_err(|_| format!("{s:?} is not a percentage (try 1% or 0.5%)"))?;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(format!("{s:?} is out of range: the budget must be above 0% and at most 100%"));
    }
    Ok(pct / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_attach() {
        let c = Cli::try_parse_from(["gcprobe", "attach", "--pid", "12", "--duration", "8s", "--format", "json"]).unwrap();
        let Command::Attach(a) = c.command else { panic!() };
        assert_eq!((a.pid, a.duration, a.format), (vec![12], Some(Duration::from_secs(8)), Format::Json));
        let Command::Attach(a) = Cli::try_parse_from(["gcprobe", "attach", "-p", "3", "--pid", "5"]).unwrap().command else { panic!() };
        assert_eq!(a.pid, [3, 5]);
        assert!(Cli::try_parse_from(["gcprobe", "attach", "--duration", "1s"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "attach", "--pid", "x"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "attach", "--pid", "1", "--duration", "0s"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "attach", "--pid", "1", "--duration", "soon"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "plan"]).is_err());
        let Command::Attach(a) = Cli::try_parse_from(["gcprobe", "attach", "-p", "1"]).unwrap().command else { panic!() };
        assert_eq!((a.session.mode, a.session.overhead_budget, a.session.log_probes), (Mode::Sampled, None, false));
        let Command::Attach(a) = Cli::try_parse_from(["gcprobe", "attach", "-p", "1", "--log-probes"]).unwrap().command else { panic!() };
        assert!(a.session.log_probes);
        let Command::Attach(a) = Cli::try_parse_from(["gcprobe", "attach", "-p", "1", "--mode", "exact", "--overhead-budget", "0.5%"]).unwrap().command else { panic!() };
        assert_eq!((a.session.mode, a.session.overhead_budget), (Mode::Exact, Some(0.005)));
        for bad in ["0%", "-1%", "101", "lots", "nan"] {
            assert!(Cli::try_parse_from(["gcprobe", "attach", "-p", "1", "--overhead-budget", bad]).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_from(["gcprobe", "attach", "-p", "1", "--mode", "fast"]).is_err());
    }

    #[test]
    fn parses_diff() {
        let Command::Diff(d) = Cli::try_parse_from(["gcprobe", "diff", "a.gcprobe", "b.json", "--format", "json", "--fail-on", "stw.p99 +20%"]).unwrap().command else { panic!() };
        assert_eq!((d.before.to_str(), d.after.to_str(), d.format, d.fail_on.len()), (Some("a.gcprobe"), Some("b.json"), DiffFormat::Json, 1));
        assert!(Cli::try_parse_from(["gcprobe", "diff", "a"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "diff", "a", "b", "--format", "pprof"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "diff", "a", "b", "--fail-on", "stw.p99 > 5ms"]).is_err());
    }

    #[test]
    fn parses_node() {
        let Command::Node(n) = Cli::try_parse_from(["gcprobe", "node"]).unwrap().command else { panic!() };
        assert_eq!((n.listen.port(), n.mode, n.overhead_budget, n.top_callsites, n.grace, n.sweep), (9466, Mode::Sampled, 0.01, 20, Duration::from_secs(60), Duration::from_secs(10)));
        let Command::Node(n) = Cli::try_parse_from(["gcprobe", "node", "--listen", "127.0.0.1:9999", "--include", "/usr/bin/*", "--exclude", "namespace=kube-*"]).unwrap().command else { panic!() };
        assert_eq!((n.listen.to_string(), n.include.len(), n.exclude.len()), ("127.0.0.1:9999".to_owned(), 1, 1));
        assert!(Cli::try_parse_from(["gcprobe", "node", "--listen", "9466"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "node", "--exclude", "colour=red"]).is_err());
        assert!(Cli::try_parse_from(["gcprobe", "node", "--top-callsites", "0"]).is_err());
        let Command::Node(n) = Cli::try_parse_from(["gcprobe", "node", "--agent-cpu", "2%"]).unwrap().command else { panic!() };
        assert_eq!(n.agent_cpu, Some(0.02));
        assert!(Cli::try_parse_from(["gcprobe", "node", "--agent-cpu", "0"]).is_err());
    }
}
