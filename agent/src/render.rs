//! A session's results in the format asked for, to a file or stdout.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    ingest::aggregate::Aggregator,
    export,
    analysis::facts::Facts,
    record::{End, Meta},
    report::{self, Report},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The human report.
    Text,
    /// The report as JSON (gcprobe.report/v1).
    Json,
    /// Allocations as a gzipped pprof profile, for `go tool pprof` (needs -o when stdout is a terminal).
    Pprof,
    /// The GC timeline as Chrome trace-event JSON, for ui.perfetto.dev.
    Perfetto,
    /// The report's figures as Prometheus metrics (text format 0.0.4): the families node mode serves, for node_exporter's textfile collector or promtool.
    Prometheus,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("pprof profiles are binary: write one to a file with -o FILE, or pipe stdout")]
    BinaryToTerminal,
    #[error(transparent)]
    Open(#[from] crate::outfile::OutputError),
    #[error("writing the report to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where and how the results go.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub format: Format,
    /// Frames per callsite in the text report.
    pub stack_depth: usize,
    /// A file, or stdout.
    pub path: Option<&'a Path>,
}

/// Writes the session's results as asked.
pub fn write(to: Output<'_>, report: &Report, meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> Result<(), RenderError> {
    let Output { format, stack_depth, path: output } = to;
    use std::io::IsTerminal as _;
    if format == Format::Pprof && output.is_none() && io::stdout().is_terminal() {
        return Err(RenderError::BinaryToTerminal);
    }
    write_bytes(output, &bytes(format, stack_depth, report, meta, end, agg, facts))
}

/// The session's results in `format`, in memory.
pub fn bytes(format: Format, stack_depth: usize, report: &Report, meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> Vec<u8> {
    match format {
        Format::Pprof => {
            let mut b = Vec::new();
            export::allocation_profile(meta, end, agg, facts, &mut b).expect("writing to memory");
            b
        }
        Format::Perfetto => {
            let mut s = serde_json::to_string(&export::gc_timeline(meta, end, agg, facts)).expect("trace serializes");
            s.push('\n');
            s.into_bytes()
        }
        Format::Text => report::text::render(report, stack_depth).into_bytes(),
        Format::Prometheus => export::report_metrics(report, agg, facts).into_bytes(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("report serializes");
            s.push('\n');
            s.into_bytes()
        }
    }
}

/// Writes finished output to the file, or to stdout.
pub fn write_bytes(output: Option<&Path>, bytes: &[u8]) -> Result<(), RenderError> {
    match output {
        Some(path) => {
            // A report is meant to be shared: the umask's mode, not a private one.
            let mut f = crate::outfile::create(path, crate::outfile::Existing::Replace, crate::outfile::Access::Umask)?;
            f.write_all(bytes).map_err(|source| RenderError::Write { path: path.to_owned(), source })
        }
        None => io::stdout().lock().write_all(bytes).map_err(|source| RenderError::Write { path: "<stdout>".into(), source }),
    }
}
