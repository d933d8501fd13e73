//! Building the Go fixtures in tests/fixtures with a chosen toolchain.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{bail, Context as _, Result};

use crate::{tools, workspace_root};

/// How a fixture is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `go build`, CGO_ENABLED=0: static, with DWARF and symbols.
    Default,
    /// `-ldflags="-s -w"`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie`.
    Pie,
    /// CGO_ENABLED=1: C code linked in ahead of the Go text, dynamically linked.
    Cgo,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Default => "default",
            Flavor::Stripped => "stripped",
            Flavor::Pie => "pie",
            Flavor::Cgo => "cgo",
        }
    }

    pub const ALL: [Flavor; 4] = [Flavor::Default, Flavor::Stripped, Flavor::Pie, Flavor::Cgo];
}

/// The architecture a fixture is compiled for (Go's GOARCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoArch {
    Amd64,
    Arm64,
}

impl GoArch {
    /// The architecture this process runs on: what a fixture is built for unless a test asks otherwise.
    pub fn host() -> GoArch {
        if cfg!(target_arch = "aarch64") {
            GoArch::Arm64
        } else {
            GoArch::Amd64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GoArch::Amd64 => "amd64",
            GoArch::Arm64 => "arm64",
        }
    }
}

/// Every Go version of the test matrix.
pub fn go_versions() -> Vec<&'static str> {
    std::iter::once(crate::pins::GO_DEBIAN).chain(crate::pins::GO_PYPI.iter().copied()).collect()
}

pub fn source_dir(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// Builds (or reuses) fixture `name` with Go `version` for this host; returns the executable.
pub fn build(name: &str, version: &str, flavor: Flavor) -> Result<PathBuf> {
    build_for(name, version, flavor, GoArch::host())
}

/// Builds (or reuses) fixture `name` with Go `version` for `arch`. Go cross-compiles
/// without a C toolchain, so every flavor but cgo builds for either arch on either host.
pub fn build_for(name: &str, version: &str, flavor: Flavor, arch: GoArch) -> Result<PathBuf> {
    if flavor == Flavor::Cgo && arch != GoArch::host() {
        bail!("fixture {name}: a cgo build for {} needs that arch's C toolchain, which gcprobe does not install", arch.name());
    }
    let go = tools::ensure_go(version)?;
    let src = source_dir(name);
    let mut dir = workspace_root().join("target/fixtures").join(version);
    if arch != GoArch::host() {
        dir = dir.join(arch.name());
    }
    let out = dir.join(format!("{name}-{}", flavor.name()));
    if out.exists() && newest_mtime(&src)? <= mtime(&out)? {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().expect("has parent"))?;
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src).arg("build").arg("-o").arg(&out);
    match flavor {
        Flavor::Default => {}
        Flavor::Stripped => {
            cmd.arg("-ldflags=-s -w");
        }
        Flavor::Pie => {
            cmd.arg("-buildmode=pie");
        }
        Flavor::Cgo => {}
    }
    cmd.arg(".")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", if flavor == Flavor::Cgo { "1" } else { "0" })
        .env("GOARCH", arch.name())
        .env("GOOS", "linux")
        .env("GOCACHE", tools::tools_dir().join("go-build-cache"))
        .env("GOPATH", tools::tools_dir().join("gopath"));
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("building fixture {name} with Go {version} failed: {st}");
    }
    Ok(out)
}

fn mtime(p: &Path) -> Result<SystemTime> {
    Ok(std::fs::metadata(p)?.modified()?)
}

fn newest_mtime(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        newest = newest.max(mtime(&e?.path())?);
    }
    Ok(newest)
}

/// 1-based line of the first source line containing `marker`.
pub fn marker_line(name: &str, marker: &str) -> u32 {
    let path = source_dir(name).join("main.go");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker} in {}", path.display())) as u32 + 1
}
