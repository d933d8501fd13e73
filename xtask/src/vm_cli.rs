//! `cargo xtask vm`: the emulated arm64 machine from the command line.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use xtask::{
    build,
    fixtures::{self, Flavor, GoArch},
    pins,
    vm::{self, Guest, Kernel},
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VmArch {
    Aarch64,
}

#[derive(clap::Args)]
pub struct Args {
    /// The emulated machine's architecture.
    #[arg(long, value_enum, default_value_t = VmArch::Aarch64)]
    arch: VmArch,
    /// Debian kernel to boot: 6.12 has uprobe_multi, 6.1 takes the perf-event path.
    #[arg(long, value_enum, default_value_t = Kernel::V6_12)]
    kernel: Kernel,
    /// An arm64 Go program: runs as `gcprobe run --format json -o OUT -- PROGRAM ARGS...`.
    /// Without it, gcprobe attaches to the bundled demo service for 20 s (set-up included:
    /// reading the binary takes seconds under emulation).
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
    /// Where the JSON report goes on this machine (with --exe; default: stdout).
    #[arg(long, value_name = "FILE", requires = "exe")]
    out: Option<PathBuf>,
    /// Give up on the guest after this long (emulation is 10-50x slower than the host).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The program's arguments.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let VmArch::Aarch64 = a.arch;
    if let Some(exe) = &a.exe {
        check_arm64_elf(exe)?;
    }
    let agent = build::arm64_agent()?;
    let guest = match &a.exe {
        Some(exe) => vm::run_program(a.kernel, &agent, exe, &a.args),
        None => demo(a.kernel, &agent)?,
    };
    let out = guest.timeout(a.timeout).echo(true).boot()?;
    eprintln!("xtask: {} ran in {:.1} s (emulated: not a performance figure)", out.kernel_package, out.elapsed.as_secs_f64());
    if a.exe.is_some() {
        match (out.transcript.files.get("report.json"), &a.out) {
            (Some(r), Some(path)) => std::fs::write(path, r).with_context(|| format!("writing {}", path.display()))?,
            (Some(r), None) => print!("{}", String::from_utf8_lossy(r)),
            (None, _) => eprintln!("xtask: gcprobe wrote no report"),
        }
    }
    Ok(ExitCode::from(u8::try_from(out.status()).unwrap_or(1)))
}

fn demo(kernel: Kernel, agent: &std::path::Path) -> Result<Guest> {
    let exe = fixtures::build_for("demo-service", pins::GO_DEFAULT, Flavor::Default, GoArch::Arm64)?;
    Ok(Guest::new(kernel, agent).file("demo-service", &exe).script("./demo-service >/dev/null & P=$!\nsleep 2\n/gcprobe attach --pid $P --duration 20s\nst=$?\nkill $P\nexit $st"))
}

/// A clear error up front, rather than an exec failure inside the guest.
fn check_arm64_elf(exe: &std::path::Path) -> Result<()> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    let n = std::fs::File::open(exe).and_then(|mut f| f.read(&mut head)).with_context(|| format!("reading {}", exe.display()))?;
    // e_machine at offset 18 of the ELF header; EM_AARCH64 = 183.
    if n < 20 || &head[..4] != b"\x7fELF" {
        bail!("{} is not an ELF executable", exe.display());
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if machine != 183 {
        bail!("{} is not an arm64 program (ELF machine {machine}); build it with GOARCH=arm64", exe.display());
    }
    Ok(())
}
