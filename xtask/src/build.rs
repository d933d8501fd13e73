//! Building the agent: for this host, or cross-built static for arm64.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{pins, workspace_root};

/// target/release/gcprobe, with the BPF object for this host's arch embedded.
pub fn agent() -> Result<PathBuf> {
    cargo_build(None)?;
    Ok(workspace_root().join("target/release/gcprobe"))
}

/// The static arm64 agent (musl, linked by rust-lld: no cross C toolchain, no libc on the
/// target machine). agent/build.rs builds its BPF object for the target's arch.
pub fn arm64_agent() -> Result<PathBuf> {
    ensure_rust_target(pins::ARM64_AGENT_TARGET)?;
    cargo_build(Some(pins::ARM64_AGENT_TARGET))?;
    Ok(workspace_root().join("target").join(pins::ARM64_AGENT_TARGET).join("release/gcprobe"))
}

fn cargo_build(target: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root()).args(["build", "--release", "-p", "gcprobe"]);
    if let Some(t) = target {
        let linker = format!("CARGO_TARGET_{}_LINKER", t.to_uppercase().replace('-', "_"));
        cmd.args(["--target", t]).env(linker, "rust-lld");
    }
    let st = cmd.status().context("spawning cargo build")?;
    if !st.success() {
        bail!("cargo build --release{} failed: {st}", target.map(|t| format!(" --target {t}")).unwrap_or_default());
    }
    Ok(())
}

fn ensure_rust_target(target: &str) -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("spawning rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    let st = Command::new("rustup").args(["target", "add", target]).status().context("spawning rustup")?;
    if !st.success() {
        bail!("rustup target add {target} failed: {st}");
    }
    Ok(())
}
