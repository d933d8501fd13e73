use std::process::ExitCode;

use clap::Parser as _;
use gcprobe::{
    cli::{Cli, Command, NodeArgs, PlanArgs, SessionArgs},
    error::Exit,
    kernel::{calibrate, probes::Program},
    node,
    render::Format,
    report::Report,
    report::rules::{self, Rule},
    session::{self, AttachOptions, RecordTo, SessionError, TargetSpec},
};

fn main() -> ExitCode {
    // A session's --duration counts from here: start-up is part of the wait.
    let invoked = std::time::Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli, invoked) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("gcprobe: error: {}", gcprobe::error::error_chain(&e));
            e.exit().into()
        }
    }
}


/// Prints each rule's verdict on stderr; true when any held.
fn judge(rules: &[Rule], report: &Report) -> bool {
    let verdicts = rules::evaluate(rules, report);
    verdicts.iter().map(|v| say_verdict(v.held, &v.rule, &v.shown)).fold(false, |any, held| any || held)
}

/// One rule's verdict on stderr; gives back whether it held.
fn say_verdict(held: bool, rule: &str, shown: &str) -> bool {
    eprintln!("gcprobe: {} {rule}: {shown}", if held { "FAIL" } else { "ok  " });
    held
}

/// The overhead budget unless one is given: 1% for a program in service;
/// 5% for `run`, which starts the program to measure it (CI), where a short
/// run at 1% of a mostly idle program's CPU buys too few bursts to trust.
const BUDGET: f64 = 0.01;
const RUN_BUDGET: f64 = 0.05;

fn options(invoked: std::time::Instant, target: TargetSpec, s: SessionArgs, duration: Option<std::time::Duration>, format: Format, output: Option<std::path::PathBuf>, record: Option<RecordTo>) -> AttachOptions {
    let budget = s.overhead_budget.unwrap_or(if matches!(target, TargetSpec::Launch { .. }) { RUN_BUDGET } else { BUDGET });
    AttachOptions {
        invoked,
        stack_depth: s.render.stack_depth.into(),
        app_prefixes: s.app_prefix,
        budget,
        target,
        record,
        duration,
        format,
        output,
        interval: s.interval,
        quiet: s.quiet,
        program: if s.empty_probes { Program::Empty } else { Program::Real },
        mode: s.mode,
        log_probes: s.log_probes,
    }
}

/// What a command can fail with; each knows its exit status (error::Exit).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Node(#[from] node::agent::NodeError),
}

impl Failed {
    fn exit(&self) -> Exit {
        match self {
            Failed::Session(e) => e.exit(),
            Failed::Node(e) => e.exit(),
        }
    }
}

fn node_options(n: NodeArgs) -> node::agent::NodeOptions {
    node::agent::NodeOptions {
        listen: n.listen,
        fleet: session::fleet::FleetOptions { mode: n.mode, budget: n.overhead_budget, agent_cpu: n.agent_cpu, app_prefixes: n.app_prefix, record: n.record_dir.map(|dir| gcprobe::record::dir::RecordPolicy { dir, file_bytes: u64::from(n.record_file_mib) << 20, file_age: n.record_file_age, dir_bytes: u64::from(n.record_dir_mib) << 20 }) },
        filter: node::filter::Filter::new(n.include, n.exclude),
        top_callsites: n.top_callsites.into(),
        grace: n.grace,
        sweep: n.sweep,
        stack_depth: n.render.stack_depth.into(),
        quiet: n.quiet,
    }
}

fn run(cli: Cli, invoked: std::time::Instant) -> Result<ExitCode, Failed> {
    match cli.command {
        Command::Attach(a) => {
            session::attach(options(invoked, TargetSpec::Pids(a.pid), a.session, a.duration, a.format, a.output, None))?;
        }
        Command::Record(r) => {
            let quiet = r.session.quiet;
            let to = RecordTo { path: r.output, force: r.force };
            let out = session::attach(options(invoked, TargetSpec::Pids(vec![r.pid]), r.session, r.duration, r.format, None, Some(to)))?;
            if let (Some((path, bytes)), false) = (out.recorded, quiet) {
                eprintln!("gcprobe: recorded {bytes} bytes to {}; `gcprobe report {}` reports on it anywhere", path.display(), path.display());
            }
        }
        Command::Report(r) => {
            let report = session::report_recording(&r.file, r.format, r.render.stack_depth.into(), &r.app_prefix, r.output.as_deref())?;
            if judge(&r.fail_on, &report) {
                return Ok(Exit::RuleHeld.into());
            }
        }
        Command::Diff(d) => {
            let diff = session::compare::diff(&d.before, &d.after, &d.fail_on, d.format, d.output.as_deref())?;
            if diff.rules.iter().map(|v| say_verdict(v.held, &v.rule, &v.shown)).fold(false, |any, held| any || held) {
                return Ok(Exit::RuleHeld.into());
            }
        }
        Command::Run(r) => {
            let mut cmd = r.command.into_iter();
            let program = cmd.next().expect("clap requires CMD");
            let record = r.record.map(|path| RecordTo { path, force: false });
            let out = session::attach(options(invoked, TargetSpec::Launch { program, args: cmd.collect() }, r.session, None, r.format, r.output, record))?;
            let held = out.reports.iter().any(|report| judge(&r.fail_on, report));
            return Ok(ExitCode::from(gcprobe::error::run_status(out.exit, held, r.exit_with_program)));
        }
        Command::Plan(PlanArgs { pid, exe }) => session::print_plan(pid, exe)?,
        Command::Ps(p) => node::ps::print(p.json).map_err(SessionError::from)?,
        Command::Node(n) => node::agent::run(node_options(n))?,
        Command::Calibrate { depth, calls, rounds } => session::print_calibration(depth.into(), calibrate::Effort { calls, rounds: rounds.into() })?,
    }
    Ok(Exit::Ok.into())
}
