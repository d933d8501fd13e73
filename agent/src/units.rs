//! How numbers and paths read in reports: bytes in binary units, rates
//! with SI prefixes, a file by its base name.

pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        // A rare callsite's rate is not zero.
        format!("{v:.2}")
    }
}

pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A file by its base name, as the text report shows it beside a line.
pub fn short(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}
