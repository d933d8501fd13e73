//! A session's results in the format asked for, to a file or stdout.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    aggregate::Aggregator,
    facts::Facts,
    record::{End, Meta},
    report::{self, Report},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The human report.
    Text,
    /// The report as JSON (gcprobe.report/v1).
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("writing the report to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub fn write(format: Format, output: Option<&Path>, report: &Report, _meta: &Meta, _end: &End, _agg: &Aggregator, _facts: &mut dyn Facts) -> Result<(), RenderError> {
    let bytes = match format {
        Format::Text => report::text::render(report).into_bytes(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("report serializes");
            s.push('\n');
            s.into_bytes()
        }
    };
    match output {
        Some(path) => std::fs::write(path, bytes).map_err(|source| RenderError::Write { path: path.to_owned(), source }),
        None => io::stdout().lock().write_all(&bytes).map_err(|source| RenderError::Write { path: "<stdout>".into(), source }),
    }
}
