//! An emulated arm64 machine for the tests and for `cargo xtask vm`: Debian's arm64 cloud
//! kernels under qemu-system-aarch64 (TCG), booted straight into an initramfs built here
//! from Debian's static busybox and glibc (for PIE and cgo programs), the cross-built static
//! agent and the files a caller adds.
//! Everything is fetched and cached by the project (tools_dir()/vm/arm64).
//!
//! TCG runs guest code 10–50× slower than the host: the VM proves correctness, never speed.
mod console;
mod cpio;
mod debian;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub use console::{quote, Transcript};
pub use debian::package_file as debian_arm64_file;

use crate::{pins, tools};

/// A kernel the VM boots (pins::VM_KERNEL_SUITES).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian 13's 6.12: uprobe_multi links.
    #[value(name = "6.12")]
    V6_12,
    /// Debian 12's 6.1: one perf event per probe.
    #[value(name = "6.1")]
    V6_1,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::V6_12 => "6.12",
            Kernel::V6_1 => "6.1",
        }
    }

    fn suite(self) -> &'static str {
        pins::VM_KERNEL_SUITES.iter().find(|(k, _)| *k == self.name()).map(|(_, s)| *s).expect("every Kernel has a suite pin")
    }
}

/// One boot: files to put in the guest, a shell script to run there, a time limit.
pub struct Guest {
    kernel: Kernel,
    files: Vec<(String, PathBuf)>,
    script: String,
    timeout: Duration,
    echo: bool,
}

/// What one boot gave back.
#[derive(Debug)]
pub struct Outcome {
    pub transcript: Transcript,
    /// The kernel package that ran, e.g. linux-image-6.12.117+deb13-cloud-arm64.
    pub kernel_package: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// The script's exit status.
    pub fn status(&self) -> i32 {
        self.transcript.status.expect("boot() fails when the guest reports no status")
    }

    /// A file the script sent with `send`.
    pub fn file(&self, name: &str) -> Result<&[u8]> {
        self.transcript.files.get(name).map(Vec::as_slice).with_context(|| format!("the guest sent no {name}; its console:\n{}", tail(&self.transcript.text, 40)))
    }
}

impl Guest {
    /// `agent` is the static arm64 gcprobe; it lands at /gcprobe.
    pub fn new(kernel: Kernel, agent: &Path) -> Guest {
        Guest { kernel, files: vec![("gcprobe".into(), agent.to_path_buf())], script: String::new(), timeout: Duration::from_secs(600), echo: false }
    }

    /// Puts `host` at `/work/<name>` in the guest, executable.
    pub fn file(mut self, name: &str, host: &Path) -> Guest {
        self.files.push((format!("work/{name}"), host.to_path_buf()));
        self
    }

    /// Shell (busybox sh) run in /work. `send PATH NAME` hands a file back; the last
    /// command's status is the boot's status.
    pub fn script(mut self, script: &str) -> Guest {
        self.script = script.to_owned();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Guest {
        self.timeout = t;
        self
    }

    /// Copies the guest's console to stderr as it comes, less the framed files.
    pub fn echo(mut self, on: bool) -> Guest {
        self.echo = on;
        self
    }

    pub fn boot(&self) -> Result<Outcome> {
        tools::ensure_debian_packages(&[pins::QEMU_ARM_PACKAGE])?;
        let kernel = debian::kernel(self.kernel.suite())?;
        let initrd = self.initramfs()?;
        let started = Instant::now();
        let console = self.run_qemu(&kernel.image, &initrd);
        let elapsed = started.elapsed();
        let _ = std::fs::remove_file(&initrd);
        let console = console?;
        let transcript = Transcript::parse(&console)?;
        if transcript.status.is_none() {
            bail!("the arm64 guest ({}) stopped without reporting a status; its console:\n{}", kernel.package, tail(&transcript.text, 40));
        }
        Ok(Outcome { transcript, kernel_package: kernel.package, elapsed })
    }

    fn initramfs(&self) -> Result<PathBuf> {
        let busybox = debian::busybox()?;
        let dir = tools::tools_dir().join("vm/arm64/boot");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("initramfs-{}.cpio", std::process::id()));
        let mut a = cpio::Archive::new(std::io::BufWriter::new(std::fs::File::create(&path)?));
        for d in ["bin", "dev", "lib", "lib/aarch64-linux-gnu", "proc", "sys", "tmp", "work"] {
            a.dir(d)?;
        }
        a.char_dev("dev/console", 5, 1)?;
        a.file("bin/busybox", 0o755, &std::fs::read(&busybox)?)?;
        // The loader at the path programs name (PT_INTERP), the rest where it searches.
        let glibc = debian::glibc()?;
        a.file("lib/ld-linux-aarch64.so.1", 0o755, &std::fs::read(glibc.join("ld-linux-aarch64.so.1"))?)?;
        for e in std::fs::read_dir(&glibc)? {
            let path = e?.path();
            let name = path.file_name().expect("a listed file has a name").to_string_lossy().into_owned();
            a.file(&format!("lib/aarch64-linux-gnu/{name}"), 0o755, &std::fs::read(&path)?)?;
        }
        a.file("init", 0o755, console::init_script(&self.script).as_bytes())?;
        for (at, host) in &self.files {
            let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
            a.file(at, 0o755, &data)?;
        }
        a.finish()?.flush()?;
        Ok(path)
    }

    /// Boots and collects the console until the guest powers off or the time limit passes.
    fn run_qemu(&self, image: &Path, initrd: &Path) -> Result<String> {
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-M", "virt", "-cpu", pins::VM_CPU, "-smp", "2", "-m", "2048"])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(image)
            .arg("-initrd")
            .arg(initrd)
            // quiet + loglevel: kernel messages would otherwise break into the framed files.
            .args(["-append", "console=ttyAMA0 rdinit=/init quiet loglevel=1 panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let echo = self.echo;
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            let mut framed = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let l = line.trim_end_matches('\r');
                // The kernel's own last word ("reboot: Power down") is noise to the user.
                if echo && !framed && !l.starts_with("@@gcprobe:") && !l.ends_with("reboot: Power down") {
                    eprintln!("{l}");
                }
                framed = (framed || l.starts_with("@@gcprobe:file ")) && l != "@@gcprobe:end";
                all.push_str(&line);
                all.push('\n');
            }
            let _ = tx.send(all);
        });
        let console = match rx.recv_timeout(self.timeout) {
            Ok(c) => c,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let partial = rx.recv().unwrap_or_default();
                bail!("the arm64 guest did not power off within {:?}; its console:\n{}", self.timeout, tail(&partial, 40));
            }
        };
        let _ = reader.join();
        let st = child.wait()?;
        if !st.success() {
            bail!("qemu-system-aarch64 failed: {st}; the guest's console:\n{}", tail(&console, 40));
        }
        Ok(console)
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `gcprobe run --format json -o OUT -- /work/target ARGS...` in the guest: what
/// `cargo xtask vm --exe` does. The report comes back as the file `report.json`.
pub fn run_program(kernel: Kernel, agent: &Path, exe: &Path, args: &[String]) -> Guest {
    let quoted: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let script = format!(
        "/gcprobe run --format json -o /tmp/report.json -- /work/target {}\nst=$?\n[ -f /tmp/report.json ] && send /tmp/report.json report.json\nexit $st",
        quoted.join(" ")
    );
    Guest::new(kernel, agent).file("target", exe).script(&script)
}
