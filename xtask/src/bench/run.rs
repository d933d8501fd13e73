//! One fixture run, bare or under `gcprobe attach`: the fixture prints
//! `ready`, waits for a line on stdin (so gcprobe attaches first), works,
//! then prints its result line.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Result};

pub struct Run {
    /// The fixture's result line.
    pub out: String,
    /// gcprobe's JSON report, when attached.
    pub report: Option<serde_json::Value>,
}

impl Run {
    /// A number from the report (0 when absent or bare).
    pub fn n(&self, pointer: &str) -> f64 {
        self.report.as_ref().and_then(|r| r.pointer(pointer)).and_then(|v| v.as_f64()).unwrap_or(0.0)
    }
}

/// Runs `exe args`, with `gcprobe attach --pid P <attach>` when `attach` is Some.
pub fn once(gcprobe: &Path, exe: &Path, args: &[String], attach: Option<&[&str]>) -> Result<Run> {
    let mut target = Command::new(exe).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut out = BufReader::new(target.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = target.kill();
        bail!("fixture said {line:?}, expected ready");
    }
    let json = std::env::temp_dir().join(format!("gcprobe-bench-{}.json", target.id()));
    let mut agent = None;
    if let Some(extra) = attach {
        let mut child = Command::new(gcprobe)
            .args(["attach", "--pid", &target.id().to_string(), "--format", "json", "--interval", "1h", "-o"])
            .arg(&json)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        if let Err(e) = wait_attached(&mut child, &mut err, 1) {
            let _ = target.kill();
            return Err(e);
        }
        agent = Some((child, err));
    }
    target.stdin.as_mut().expect("piped").write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    target.wait()?;
    let mut report = None;
    if let Some((mut child, _err)) = agent {
        let st = child.wait()?;
        if !st.success() {
            bail!("gcprobe failed: {st}");
        }
        report = Some(serde_json::from_slice(&std::fs::read(&json)?)?);
        let _ = std::fs::remove_file(&json);
    }
    Ok(Run { out: line.trim().to_owned(), report })
}

/// Reads gcprobe's stderr until it has said `attached` `n` times (once per target).
pub fn wait_attached(child: &mut std::process::Child, err: &mut BufReader<std::process::ChildStderr>, n: usize) -> Result<()> {
    let mut seen = 0;
    let mut l = String::new();
    while seen < n {
        l.clear();
        if err.read_line(&mut l)? == 0 {
            bail!("gcprobe exited before attaching: {}", child.wait()?);
        }
        seen += usize::from(l.contains("attached"));
    }
    Ok(())
}
