//! `cargo xtask fuzz`: a bounded libFuzzer run of every parser gcprobe feeds
//! with bytes it does not control: the target's (ELF, .go.buildinfo,
//! .gopclntab, DWARF) and a recording's (`gcprobe report FILE`, whole).
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};
use xtask::{fixtures, pins, tools, workspace_root};

pub const TARGETS: &[&str] = &["buildinfo", "elf", "pclntab", "dwarf", "recording"];

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Only this target (buildinfo, elf, pclntab, dwarf, recording).
    #[arg(long)]
    target: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target {t:?}; one of {TARGETS:?}"),
        None => TARGETS.to_vec(),
    };
    fuzz(&targets, args.seconds)
}

/// `seconds` of libFuzzer on each of `targets`, from the seeds and what
/// earlier runs kept; the first crash, leak, OOM or timeout fails it.
pub fn fuzz(targets: &[&str], seconds: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("agent/fuzz");
    seed(&fuzz_dir.join("corpus"))?;
    for &t in targets {
        eprintln!("xtask fuzz: {t} for {seconds} s");
        let st = Command::new("cargo")
            .current_dir(workspace_root().join("agent"))
            .args([&format!("+{}", pins::BPF_TOOLCHAIN), "fuzz", "run", t])
            .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096", "-max_len=4194304", "-timeout=10"])
            .status()
            .context("running cargo fuzz")?;
        if !st.success() {
            bail!("fuzz target {t} failed ({st}); the crashing input is under agent/fuzz/artifacts/{t}/");
        }
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let bin = tools::cargo_bin_dir().join("cargo-fuzz");
    if bin.exists() {
        return Ok(());
    }
    let st = Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", pins::CARGO_FUZZ_VERSION]).status()?;
    if !st.success() {
        bail!("installing cargo-fuzz failed: {st}");
    }
    Ok(())
}

/// Seeds from real binaries: a Go fixture's sections and whole files, and a
/// tiny C program with DWARF (small enough for the fuzzer to mutate quickly).
fn seed(corpus: &Path) -> Result<()> {
    let go = fixtures::build("appendloop", pins::GO_DEFAULT, fixtures::Flavor::Default)?;
    let stripped = fixtures::build("appendloop", pins::GO_DEFAULT, fixtures::Flavor::Stripped)?;
    let c_src = workspace_root().join("target/fuzz-seed.c");
    let c_bin = workspace_root().join("target/fuzz-seed");
    std::fs::write(&c_src, "static int sq(int x) { return x * x; }\nint main(int c, char **v) { (void)v; return sq(c); }\n")?;
    let st = Command::new("cc").args(["-g", "-O1", "-o"]).arg(&c_bin).arg(&c_src).status().context("running cc")?;
    if !st.success() {
        bail!("cc failed building the DWARF seed");
    }
    let section = |exe: &Path, name: &str| -> Result<Vec<u8>> {
        let out = Command::new("objcopy").arg(format!("--dump-section={name}=/dev/stdout")).arg(exe).arg("/dev/null").output()?;
        if !out.status.success() {
            bail!("objcopy could not dump {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    };
    put("buildinfo", "go-buildinfo", &section(&go, ".go.buildinfo")?)?;
    put("pclntab", "gopclntab", &section(&go, ".gopclntab")?)?;
    put("elf", "c-dwarf", &std::fs::read(&c_bin)?)?;
    put("elf", "go-stripped", &std::fs::read(&stripped)?)?;
    put("dwarf", "c-dwarf", &std::fs::read(&c_bin)?)?;
    // Real recordings (a live session, `run --record`, a node's rotated file)
    // and the inputs that once crashed the reader, kept in the tree: making
    // new ones needs root and a running Go program.
    let seeds = workspace_root().join("agent/fuzz/seeds/recording");
    for e in std::fs::read_dir(&seeds).with_context(|| format!("reading {}", seeds.display()))? {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).context("a seed name that is not UTF-8")?.to_owned();
        put("recording", &name, &std::fs::read(&path)?)?;
    }
    Ok(())
}
