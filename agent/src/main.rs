use std::process::ExitCode;

use clap::Parser as _;
use gcprobe::{
    cli::{Cli, Command, PlanArgs, SessionArgs},
    launch,
    probes::Program,
    render::Format,
    session::{self, AttachOptions, RecordTo, SessionError, TargetSpec},
};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("gcprobe: error: {}", session::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

fn options(target: TargetSpec, s: SessionArgs, duration: Option<std::time::Duration>, format: Format, output: Option<std::path::PathBuf>, record: Option<RecordTo>) -> AttachOptions {
    AttachOptions {
        target,
        record,
        duration,
        format,
        output,
        interval: s.interval,
        quiet: s.quiet,
        program: if s.empty_probes { Program::Empty } else { Program::Real },
        mode: s.mode,
        budget: s.overhead_budget,
    }
}

fn run(cli: Cli) -> Result<ExitCode, SessionError> {
    match cli.command {
        Command::Attach(a) => {
            session::attach(options(TargetSpec::Pid(a.pid), a.session, a.duration, a.format, a.output, None))?;
        }
        Command::Record(r) => {
            let quiet = r.session.quiet;
            let to = RecordTo { path: r.output, force: r.force };
            let out = session::attach(options(TargetSpec::Pid(r.pid), r.session, r.duration, r.format, None, Some(to)))?;
            if let (Some((path, bytes)), false) = (out.recorded, quiet) {
                eprintln!("gcprobe: recorded {bytes} bytes to {}; `gcprobe report {}` reports on it anywhere", path.display(), path.display());
            }
        }
        Command::Report(r) => {
            session::report_recording(&r.file, r.format, r.output.as_deref())?;
        }
        Command::Run(r) => {
            let mut cmd = r.command.into_iter();
            let program = cmd.next().expect("clap requires CMD");
            let record = r.record.map(|path| RecordTo { path, force: false });
            let out = session::attach(options(TargetSpec::Launch { program, args: cmd.collect() }, r.session, None, r.format, r.output, record))?;
            let code = out.exit.map_or(0, launch::exit_code);
            if code != 0 {
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
        }
        Command::Plan(PlanArgs { pid, exe }) => session::print_plan(pid, exe)?,
    }
    Ok(ExitCode::SUCCESS)
}
