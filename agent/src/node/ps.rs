//! `gcprobe ps`: the Go processes on this host, each with its binary and
//! who it is, as node mode sees them.
use serde::Serialize;

use super::discover::{Discovery, GoProcess};
use crate::{
    render::{self, RenderError},
    tracee::labels::{LabelRoots, Labels},
};

/// One process, as listed.
#[derive(Debug, Serialize)]
struct Row {
    pid: u32,
    go_version: String,
    /// The binary as the kernel maps it (device:inode): processes that
    /// share it share one set of probes in node mode.
    file: String,
    exe: String,
    labels: LabelsJson,
}

/// Labels as JSON: null where unknown.
#[derive(Debug, Default, Serialize)]
struct LabelsJson {
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    container_id: Option<String>,
    pod_uid: Option<String>,
    runtime: Option<crate::tracee::labels::Runtime>,
    unit: Option<String>,
    /// Why the labels could not be read, when they could not.
    error: Option<String>,
}

impl LabelsJson {
    fn of(l: Result<&Labels, String>) -> Self {
        let s = |o: Option<&str>| o.map(str::to_owned);
        match l {
            Ok(l) => {
                let (c, n) = (l.cgroup(), l.names());
                Self {
                    namespace: s(n.namespace()),
                    pod: s(n.pod()),
                    container: s(n.container()),
                    container_id: s(c.container_id()),
                    pod_uid: s(c.pod_uid()),
                    runtime: c.runtime(),
                    unit: s(c.unit()),
                    error: None,
                }
            }
            Err(e) => Self { error: Some(e), ..Self::default() },
        }
    }
}

#[derive(Serialize)]
struct Listing {
    schema: &'static str,
    processes: Vec<Row>,
}

/// Prints every Go process one sweep of /proc finds (only those whose
/// executable this user may read: root sees all).
pub fn print(json: bool) -> Result<(), RenderError> {
    let mut d = Discovery::new();
    let found = d.sweep().started;
    let roots = LabelRoots::default();
    let rows: Vec<(Row, String)> = found.iter().map(|p| row(p, &roots)).collect();
    let out = if json {
        let listing = Listing { schema: "gcprobe.processes/v1", processes: rows.into_iter().map(|(r, _)| r).collect() };
        let text = serde_json::to_string_pretty(&listing).map_err(|e| RenderError::Write { path: "<stdout>".into(), source: e.into() })?;
        text + "\n"
    } else {
        let mut t = format!("{:<8} {:<12} {:<18} {:<40} LABELS\n", "PID", "GO", "FILE", "EXE");
        for (r, labels) in rows {
            t += &format!("{:<8} {:<12} {:<18} {:<40} {labels}\n", r.pid, r.go_version, r.file, r.exe);
        }
        t
    };
    render::write_bytes(None, out.as_bytes())
}

fn row(p: &GoProcess, roots: &LabelRoots) -> (Row, String) {
    let labels = Labels::of_process(p.pid(), roots).map_err(|e| crate::error::error_chain(&e));
    let text = match &labels {
        Ok(l) => l.to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let row = Row { pid: p.pid(), go_version: p.go_version().to_owned(), file: p.file().to_string(), exe: p.exe().to_owned(), labels: LabelsJson::of(labels.as_ref().map_err(Clone::clone)) };
    (row, text)
}
