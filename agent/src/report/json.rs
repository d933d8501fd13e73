//! A JSON report read back (`--format json`), for `gcprobe diff`.
use super::{Report, SCHEMA};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("not a gcprobe report: it has no \"schema\"")]
    NoSchema,
    #[error("holds several reports (gcprobe.reports/v1): give one target's {SCHEMA}")]
    Several,
    #[error("schema {found:?} is not {SCHEMA}")]
    Schema { found: String },
    #[error("not a valid {SCHEMA} report: {0}")]
    Invalid(serde_json::Error),
}

/// A report as `--format json` wrote it. The schema is checked first, so
/// another document is named as such rather than as a missing field.
pub fn from_json(data: &[u8]) -> Result<Report, ReadError> {
    let doc: serde_json::Value = serde_json::from_slice(data).map_err(ReadError::NotJson)?;
    match doc.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => {}
        Some("gcprobe.reports/v1") => return Err(ReadError::Several),
        Some(other) => return Err(ReadError::Schema { found: other.into() }),
        None => return Err(ReadError::NoSchema),
    }
    serde_json::from_value(doc).map_err(ReadError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::error_chain;

    /// What `--format json` writes reads back as the same report, and writes the same bytes again.
    #[test]
    fn a_json_report_reads_back_whole() {
        let mut r = crate::report::empty_report();
        r.gc.stw.ends_at = crate::plan::PauseEnd::Entry;
        r.sizes.insert("mallocgc".into(), crate::report::SizeStats { unit: crate::report::SizeUnit::Bytes, count: 2, mean: 8.0, p50: 8, p99: 8, max: 8 });
        let json = serde_json::to_string_pretty(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((v["schema"].as_str(), v["gc"]["stw"]["ends_at"].as_str(), v["sampling"]["alloc_rate_source"].as_str(), v["sizes"]["mallocgc"]["unit"].as_str()), (Some(SCHEMA), Some("restart-entry"), Some("exact"), Some("bytes")));
        let back = from_json(json.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
    }

    #[test]
    fn other_documents_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"GCPROBE", "not JSON: expected value at line 1 column 1"),
            (b"{\"a\": 1}", "not a gcprobe report: it has no \"schema\""),
            (b"{\"schema\": \"gcprobe.diff/v1\"}", "schema \"gcprobe.diff/v1\" is not gcprobe.report/v1"),
            (b"{\"schema\": \"gcprobe.reports/v1\", \"reports\": []}", "holds several reports (gcprobe.reports/v1): give one target's gcprobe.report/v1"),
            (b"{\"schema\": \"gcprobe.report/v1\"}", "not a valid gcprobe.report/v1 report: missing field `target`"),
            (b"{\"schema\": \"gcprobe.report/v1\"", "not JSON: EOF while parsing an object at line 1 column 30"),
        ];
        for (data, says) in cases {
            let e = from_json(data).err().unwrap_or_else(|| panic!("{says}: read"));
            assert_eq!(error_chain(&e), says);
        }
    }
}
