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
    /// GOEXPERIMENT=runtimefreegc (Go 1.26+), compiled by a cmd/compile built
    /// with that experiment: the stock one never calls growsliceNoAlias or
    /// growsliceBufNoAlias (cmd/compile reads its own internal/goexperiment
    /// constant). Not in [`Flavor::ALL`]: older Go has no such experiment.
    FreeGc,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Default => "default",
            Flavor::Stripped => "stripped",
            Flavor::Pie => "pie",
            Flavor::Cgo => "cgo",
            Flavor::FreeGc => "freegc",
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
        Flavor::FreeGc => {
            let wrapper = freegc_toolexec(&go, version)?;
            // Its own build cache: both compilers name themselves alike
            // (`compile version goX X:runtimefreegc`), which is the go
            // command's cache key for a release toolchain's compiler.
            cmd.arg(format!("-toolexec={}", wrapper.display()))
                .env("GOEXPERIMENT", "runtimefreegc")
                .env("GOCACHE", tools::tools_dir().join("go-build-cache-freegc"));
        }
    }
    if flavor != Flavor::FreeGc {
        cmd.env("GOCACHE", tools::tools_dir().join("go-build-cache"));
    }
    cmd.arg(".")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", if flavor == Flavor::Cgo { "1" } else { "0" })
        .env("GOARCH", arch.name())
        .env("GOOS", "linux")
        .env("GOPATH", tools::tools_dir().join("gopath"));
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("building fixture {name} with Go {version} failed: {st}");
    }
    Ok(out)
}

/// A `-toolexec` program that runs Go `version`'s cmd/compile built with
/// GOEXPERIMENT=runtimefreegc in place of the stock one, building that
/// compiler once. It is linked as the stock version (`-X
/// runtime.buildVersion`): the compiler refuses a `-goversion` from the go
/// command that differs from its own, which the experiment would suffix.
fn freegc_toolexec(go: &Path, version: &str) -> Result<PathBuf> {
    let dir = tools::tools_dir().join("go-freegc").join(version);
    // Named `compile`: the go command reads the tool's name from `-V=full`.
    let compile = dir.join("compile");
    let wrapper = dir.join("toolexec");
    if compile.exists() && wrapper.exists() {
        return Ok(wrapper);
    }
    std::fs::create_dir_all(&dir)?;
    let go_env = |k: &str| -> Result<String> {
        let o = Command::new(go).args(["env", k]).env("GOTOOLCHAIN", "local").output()?;
        Ok(String::from_utf8(o.stdout)?.trim().to_owned())
    };
    let goversion = go_env("GOVERSION")?;
    let tmp = dir.join("compile.tmp");
    let st = Command::new(go)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(format!("-ldflags=-X=runtime.buildVersion={goversion}"))
        .arg("cmd/compile")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOEXPERIMENT", "runtimefreegc")
        .env("GOCACHE", tools::tools_dir().join("go-build-cache-freegc"))
        .status()
        .context("building cmd/compile with GOEXPERIMENT=runtimefreegc")?;
    if !st.success() {
        bail!("building Go {version}'s cmd/compile with GOEXPERIMENT=runtimefreegc failed: {st} (Go 1.26+ has the experiment)");
    }
    std::fs::rename(&tmp, &compile)?;
    let script = format!("#!/bin/sh\n# Runs the runtimefreegc compiler in place of the stock one.\ncase \"$1\" in */compile) shift; exec \"{}\" \"$@\";; esac\nexec \"$@\"\n", compile.display());
    let tmp = dir.join("toolexec.tmp");
    std::fs::write(&tmp, script)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &wrapper)?;
    Ok(wrapper)
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
