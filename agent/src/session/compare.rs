//! `gcprobe diff BEFORE AFTER`: each file read as a recording or a JSON
//! report, told apart by its content (a recording's header, or JSON), then
//! compared by the report layer.
use std::path::{Path, PathBuf};

use super::SessionError;
use crate::{
    export::{diffpage::{diff_page, DiffSide}, html::Drawn},
    record::frame::MAGIC,
    render::{self, RecordedReport},
    report::{
        diff::{self, ChangeRule, Diff, Side, Source},
        json,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read it", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: neither a gcprobe recording (no GCPROBE header) nor a JSON report", path.display())]
    Neither { path: PathBuf },
    #[error("{}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: json::ReadError,
    },
}

/// A recording replayed into its report, or a JSON report read back.
pub fn load(path: &Path) -> Result<Side, SessionError> {
    load_drawn(path, false).map(|(side, _)| side)
}

/// The same, with a recording's stacks and pauses when `draw` asks for them
/// (a JSON report has none).
fn load_drawn(path: &Path, draw: bool) -> Result<(Side, Option<Drawn>), SessionError> {
    let name = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| LoadError::Open { path: path.to_owned(), source })?;
    if data.starts_with(MAGIC) {
        let mut recorded = RecordedReport::from_bytes(&name, &data)?;
        if let Some(note) = &recorded.damage {
            eprintln!("gcprobe: warning: {name}: {note}");
        }
        let drawn = draw.then(|| recorded.drawn());
        return Ok((Side { name, source: Source::Recording, report: recorded.report }, drawn));
    }
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(LoadError::Neither { path: path.to_owned() }.into());
    }
    let report = json::from_json(&data).map_err(|source| LoadError::Json { path: path.to_owned(), source })?;
    Ok((Side { name, source: Source::JsonReport, report }, None))
}

/// Compares the two files, writes the comparison, and hands it back for
/// its rules' verdicts.
pub fn diff(before: &Path, after: &Path, rules: &[ChangeRule], format: diff::Format, output: Option<&Path>) -> Result<Diff, SessionError> {
    let draw = format == diff::Format::Html;
    let ((before, b_drawn), (after, a_drawn)) = (load_drawn(before, draw)?, load_drawn(after, draw)?);
    let d = diff::compare(&before, &after, rules);
    let out = diff::bytes(&d, format).unwrap_or_else(|| {
        let (b, a) = (DiffSide { report: &before.report, drawn: b_drawn.as_ref() }, DiffSide { report: &after.report, drawn: a_drawn.as_ref() });
        diff_page(&d, &b, &a).into_bytes()
    });
    render::write_bytes(output, &out)?;
    Ok(d)
}
