use std::process::ExitCode;

use clap::Parser as _;
use gcprobe::{
    cli::{Cli, Command, PlanArgs},
    probes::Program,
    session::{self, AttachOptions, SessionError},
};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("gcprobe: error: {}", session::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), SessionError> {
    match cli.command {
        Command::Attach(a) => {
            let opts = AttachOptions {
                pid: a.pid,
                duration: a.duration,
                format: a.format,
                output: a.output,
                interval: a.interval,
                quiet: a.quiet,
                program: if a.empty_probes { Program::Empty } else { Program::Real },
                mode: a.mode,
                budget: a.overhead_budget,
            };
            let report = session::attach(opts.clone())?;
            session::write_report(&report, opts.format, opts.output.as_ref())
        }
        Command::Plan(PlanArgs { pid, exe }) => session::print_plan(pid, exe),
    }
}
