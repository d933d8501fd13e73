//! `cargo xtask <command>`: setup, build, demo, test, bench.
mod bench;
mod fuzz;
mod vm_cli;

use std::{
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use xtask::{fixtures, pins, tools, workspace_root};

#[derive(Parser)]
#[command(about = "gcprobe project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker, Go toolchains, Chromium.
    Setup {
        /// Also install every Go toolchain of the test matrix.
        #[arg(long)]
        all_go: bool,
    },
    /// Build target/release/gcprobe with the BPF object embedded.
    Build {
        /// Cross-build a static agent instead: target/<TARGET>/release/gcprobe.
        #[arg(long, value_parser = [pins::ARM64_AGENT_TARGET])]
        target: Option<String>,
    },
    /// Set up, build, start the bundled demo service, attach and print the report.
    Demo {
        /// How long to watch the demo.
        #[arg(long, default_value = "10s")]
        duration: String,
        /// Extra arguments for `gcprobe attach` (e.g. --format json).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the whole test suite (privileged tests need root).
    Test {
        /// Extra arguments for the integration test binary (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure gcprobe's overhead on an allocation-heavy fixture.
    Bench(bench::Args),
    /// Bounded fuzzing of the ELF, buildinfo, pclntab and DWARF parsers and of `gcprobe report` on any recording.
    Fuzz(fuzz::Args),
    /// Boot an emulated arm64 machine (Debian's arm64 kernel under qemu) and run the
    /// cross-built agent there: on --exe, or on the demo service without it.
    Vm(vm_cli::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Setup { all_go } => {
            setup(all_go)?;
            tools::ensure_debian_packages(pins::DEBIAN_BROWSER)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build { target } => {
            // The agent needs only the kernel side's toolchain; Go is for fixtures.
            tools::ensure_bpf_toolchain()?;
            tools::ensure_bpf_linker()?;
            let bin = match target {
                Some(_) => xtask::build::arm64_agent()?,
                None => build_release()?,
            };
            eprintln!("xtask: built {}", bin.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { duration, args } => demo(&duration, &args),
        Cmd::Test { args } => test(&args),
        Cmd::Fuzz(a) => {
            setup(false)?;
            fuzz::run(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Vm(a) => vm_cli::run(&a),
        Cmd::Bench(a) => {
            setup(false)?;
            let bin = build_release()?;
            bench::run(&bin, &a)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn setup(all_go: bool) -> Result<()> {
    tools::ensure_bpf_toolchain()?;
    tools::ensure_bpf_linker()?;
    if all_go {
        tools::ensure_go(pins::GO_DEBIAN)?;
        for v in pins::GO_PYPI {
            tools::ensure_go(v)?;
        }
    } else {
        tools::ensure_go(pins::GO_DEFAULT)?;
    }
    Ok(())
}

pub fn build_release() -> Result<PathBuf> {
    xtask::build::agent()
}

fn demo(duration: &str, extra: &[String]) -> Result<ExitCode> {
    setup(false)?;
    let gcprobe = build_release()?;
    let exe = fixtures::build("demo-service", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let mut child = Command::new(&exe).stdout(Stdio::null()).spawn().with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    eprintln!("xtask: started demo-service (pid {pid}, Go {}); attaching for {duration}", pins::GO_DEFAULT);
    // Let the service build its markets and reach its request loop.
    thread::sleep(Duration::from_millis(800));
    let st = Command::new(&gcprobe)
        .args(["attach", "--pid", &pid.to_string(), "--duration", duration])
        .args(extra)
        .status();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let st = st.context("running gcprobe")?;
    Ok(ExitCode::from(st.code().unwrap_or(1) as u8))
}

/// Seconds of fuzzing per target in `cargo xtask test`: five targets stay under two minutes.
const FUZZ_SMOKE_SECONDS: u32 = 15;

fn test(extra: &[String]) -> Result<ExitCode> {
    // The matrix needs every toolchain; the Debian tests need Debian's Go programs.
    setup(true)?;
    tools::ensure_debian_packages(pins::DEBIAN_GO_PROGRAMS)?;
    tools::ensure_debian_packages(pins::DEBIAN_TOOLS)?;
    tools::ensure_debian_packages(pins::DEBIAN_BROWSER)?;
    tools::ensure_py_tools()?;
    let gcprobe = build_release()?;
    // The arm64 tests run this one in an emulated arm64 machine.
    let arm64 = xtask::build::arm64_agent()?;
    let cargo = env!("CARGO");
    // Unit tests: no root needed.
    let st = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--exclude", "gcprobe-tests"])
        .status()?;
    if !st.success() {
        return Ok(ExitCode::FAILURE);
    }
    // A short fuzz of every target: a crash that the seeds or a few seconds
    // of mutation reach fails CI (`cargo xtask fuzz` runs longer).
    if let Err(e) = fuzz::fuzz(fuzz::TARGETS, FUZZ_SMOKE_SECONDS) {
        eprintln!("xtask: error: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    // Integration tests attach real probes to real Go programs: one at a time,
    // so uprobe overhead from one test does not skew another's timings.
    let st = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["test", "-p", "gcprobe-tests", "--", "--test-threads=1"])
        .args(extra)
        .env("GCPROBE_BIN", &gcprobe)
        .env("GCPROBE_ARM64_BIN", &arm64)
        .status()?;
    Ok(if st.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
