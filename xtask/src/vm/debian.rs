//! Debian's arm64 packages, fetched without touching the host's dpkg: apt runs with its own
//! lists and cache under the tools directory and only downloads; `dpkg-deb -x` unpacks.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{pins, tools};

fn root() -> PathBuf {
    tools::tools_dir().join("vm/arm64")
}

/// apt with a private state: the host keeps its own architectures and lists.
fn apt(tool: &str) -> Command {
    let dir = root().join("apt");
    let mut cmd = Command::new(tool);
    for (k, v) in [
        ("APT::Architecture", "arm64".to_owned()),
        ("APT::Architectures", "arm64".to_owned()),
        ("Dir::State::Lists", dir.join("lists").display().to_string()),
        ("Dir::State::status", "/dev/null".to_owned()),
        ("Dir::Etc::SourceList", dir.join("sources.list").display().to_string()),
        ("Dir::Etc::SourceParts", dir.join("sources.list.d").display().to_string()),
        ("Dir::Cache", dir.join("cache").display().to_string()),
        ("Debug::NoLocking", "1".to_owned()),
        // Downloads land in a directory the unprivileged _apt user cannot write.
        ("APT::Sandbox::User", "root".to_owned()),
    ] {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn update() -> Result<()> {
    let dir = root().join("apt");
    for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let mut suites: Vec<&str> = pins::VM_KERNEL_SUITES.iter().map(|(_, s)| *s).chain([pins::VM_USERLAND_SUITE]).collect();
    suites.sort_unstable();
    suites.dedup();
    let sources: String = suites
        .iter()
        .map(|s| format!("deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {s} main\n"))
        .collect();
    std::fs::write(dir.join("sources.list"), sources)?;
    eprintln!("xtask: fetching Debian's arm64 package lists ({})", suites.join(", "));
    run(apt("apt-get").args(["-qq", "update"]))?;
    Ok(())
}

/// The package `meta` (from `suite`) depends on first: the versioned kernel image.
fn first_dependency(meta: &str, suite: &str) -> Result<String> {
    let out = run(apt("apt-cache").args(["depends", &format!("{meta}/{suite}")]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim().to_owned())
        .with_context(|| format!("{meta} in {suite} depends on nothing"))
}

/// Downloads `package` (from `suite`) and unpacks it into a fresh directory.
fn unpack(package: &str, suite: &str, into: &Path) -> Result<()> {
    let dl = root().join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run(apt("apt-get").current_dir(&dl).args(["-qq", "download", &format!("{package}/{suite}")]))?;
    let deb = std::fs::read_dir(&dl)?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "deb"));
    let deb = deb.with_context(|| format!("apt downloaded no .deb for {package}"))?;
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(into))?;
    std::fs::remove_dir_all(&dl)?;
    Ok(())
}

/// Runs `fetch` once: on failure the lists may be stale (a kernel ABI bump removes the old
/// package from the mirror), so they are refreshed and the fetch retried.
fn with_fresh_lists<T>(fetch: impl Fn() -> Result<T>) -> Result<T> {
    if !root().join("apt/lists").exists() {
        update()?;
    }
    fetch().or_else(|_| {
        update()?;
        fetch()
    })
}

/// Unpacks a package once into `dest`: `keep` moves what is wanted out of the unpacked tree
/// (`tree`) into `dest`, and a marker says it is done, so a fetch cut short starts over.
fn fetch_once(dest: &Path, package: impl Fn() -> Result<String>, suite: &str, keep: impl Fn(&Path, &str) -> Result<()>) -> Result<()> {
    let done = dest.join(".fetched");
    if done.exists() {
        return Ok(());
    }
    with_fresh_lists(|| {
        let package = package()?;
        eprintln!("xtask: fetching {package} (arm64, {suite})");
        let tree = root().join(format!("{package}.partial"));
        unpack(&package, suite, &tree)?;
        let _ = std::fs::remove_dir_all(dest);
        std::fs::create_dir_all(dest)?;
        keep(&tree, &package)?;
        std::fs::remove_dir_all(&tree)?;
        std::fs::write(&done, &package)?;
        Ok(())
    })
}

/// A kernel of the suite: its Image (Debian's arm64 vmlinuz is an uncompressed Image that
/// qemu boots with -kernel) and the package it came from.
pub struct KernelImage {
    pub image: PathBuf,
    pub package: String,
}

pub fn kernel(suite: &str) -> Result<KernelImage> {
    let dir = root().join("kernels").join(suite);
    let image = dir.join("Image");
    fetch_once(&dir, || first_dependency("linux-image-cloud-arm64", suite), suite, |tree, package| {
        let vmlinuz = std::fs::read_dir(tree.join("boot"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
            .with_context(|| format!("{package} has no /boot/vmlinuz-*"))?;
        Ok(std::fs::rename(&vmlinuz, &image)?)
    })?;
    Ok(KernelImage { image, package: std::fs::read_to_string(dir.join(".fetched"))?.trim().to_owned() })
}

/// A static arm64 busybox: the guest's shell and tools.
pub fn busybox() -> Result<PathBuf> {
    package_file("busybox-static", "usr/bin/busybox")
}

/// glibc's loader and shared objects (Debian's libc6): a Go PIE asks for
/// /lib/ld-linux-aarch64.so.1 even without cgo, and a cgo program needs libc itself.
/// Returns the directory holding them (the top-level `*.so*` files only; not gconv).
pub fn glibc() -> Result<PathBuf> {
    let dir = root().join("glibc");
    fetch_once(&dir, || Ok("libc6".into()), pins::VM_USERLAND_SUITE, |tree, _| {
        let libs = tree.join("usr/lib/aarch64-linux-gnu");
        for e in std::fs::read_dir(&libs).with_context(|| format!("libc6 has no {}", libs.display()))? {
            let e = e?;
            if e.file_type()?.is_file() && e.file_name().to_string_lossy().contains(".so") {
                std::fs::rename(e.path(), dir.join(e.file_name()))?;
            }
        }
        if !dir.join("ld-linux-aarch64.so.1").exists() {
            bail!("libc6 has no ld-linux-aarch64.so.1");
        }
        Ok(())
    })?;
    Ok(dir)
}

/// One file of an arm64 package of the userland suite (busybox, Debian's own stripped Go
/// programs), cached under vm/arm64/files/PACKAGE/.
pub fn package_file(package: &str, path: &str) -> Result<PathBuf> {
    let dir = root().join("files").join(package);
    let out = dir.join(Path::new(path).file_name().context("a file path")?);
    fetch_once(&dir, || Ok(package.to_owned()), pins::VM_USERLAND_SUITE, |tree, _| {
        std::fs::rename(tree.join(path), &out).with_context(|| format!("{package} has no {path}"))
    })?;
    Ok(out)
}
