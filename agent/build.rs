//! Builds the kernel programs (`probe-ebpf`) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where `src/probes.rs` embeds it with `include_bytes_aligned!`.
//!
//! The BPF crate needs nightly (`-Z build-std=core`) and bpf-linker; `cargo xtask
//! setup` installs both. Toolchain name: GCPROBE_BPF_TOOLCHAIN (default `nightly`).
use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let probe_dir = manifest.join("../probe-ebpf").canonicalize()?;
    let common_dir = manifest.join("../common").canonicalize()?;
    for dir in [&probe_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!("cargo:rerun-if-changed={}", dir.join("Cargo.toml").display());
    }
    println!("cargo:rerun-if-env-changed=GCPROBE_BPF_TOOLCHAIN");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let bpf_arch = match arch.as_str() {
        "x86_64" | "aarch64" => arch.as_str(),
        other => bail!("gcprobe supports x86_64 and aarch64 hosts, not {other}"),
    };
    let toolchain = env::var("GCPROBE_BPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());

    let bpf_linker = home_bin("bpf-linker");
    if !bpf_linker.as_ref().is_some_and(|p| p.exists()) && which("bpf-linker").is_none() {
        bail!("bpf-linker is not installed; run `cargo xtask setup` first");
    }

    let target_dir = out_dir.join("probe-target");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&probe_dir)
        .args(["run", &toolchain, "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{bpf_arch}\""),
                "-Cdebuginfo=2".into(),
                "-Clink-arg=--btf".into(),
            ]
            .join("\x1f"),
        );
    // The outer cargo's settings are for the host build; they must not leak into
    // the nested nightly one.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTUP_TOOLCHAIN", "CARGO"] {
        cmd.env_remove(key);
    }
    if let Some(home_bin) = home_bin("") {
        let path = env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", home_bin.display()));
    }
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("building probe-ebpf failed ({status}); run `cargo xtask setup` if the nightly toolchain, rust-src or bpf-linker is missing");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/gcprobe-probes");
    std::fs::copy(&obj, out_dir.join("gcprobe-probes.o"))
        .with_context(|| format!("copying {}", obj.display()))?;
    Ok(())
}

fn home_bin(name: &str) -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(cargo_home.join("bin").join(name))
}

fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
