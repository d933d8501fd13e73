//! Reader for Go's `.go.buildinfo`: toolchain version, main module, build settings.
//!
//! Layout (Go 1.18+, src/debug/buildinfo/buildinfo.go): a 32-byte header
//! `"\xff Go buildinf:"`, pointer size, flags; with flag bit 1 set the version and
//! module info follow inline as uvarint-length-prefixed strings. Older toolchains
//! stored pointers instead; gcprobe supports Go 1.19+, which all write inline.
use std::fmt;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_INLINE: u8 = 0x2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("no Go build information found (not a Go binary?)")]
    NotFound,
    #[error("Go build information is truncated at byte {at}")]
    Truncated { at: usize },
    #[error("Go build information uses the pre-1.18 pointer format; gcprobe needs Go 1.19 or newer")]
    PointerFormat,
    #[error("unrecognised Go version string {raw:?}")]
    BadVersion { raw: String },
}

/// A Go release, comparable: `go1.21.13` is (1, 21, 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses `go1.21.13`, `go1.22rc1`, `go1.24.0 X:nocoverageredesign`, `go1.23.4-bigcorp`.
    pub fn parse(raw: &str) -> Result<Self, BuildInfoError> {
        let bad = || BuildInfoError::BadVersion { raw: raw.to_owned() };
        let rest = raw.strip_prefix("go").ok_or_else(bad)?;
        let rest = rest.split([' ', '-', '+']).next().unwrap_or(rest);
        let mut nums = rest.split('.').map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        });
        let major = nums.next().flatten().ok_or_else(bad)?;
        let minor = nums.next().flatten().ok_or_else(bad)?;
        let patch = nums.next().flatten().unwrap_or(0);
        Ok(Self { major, minor, patch })
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// As the binary records it, e.g. `go1.24.11`.
    pub version_raw: String,
    pub version: GoVersion,
    /// The main package path (`path` line), e.g. `command-line-arguments`.
    pub path: Option<String>,
    /// The main module (`mod` line): path and version.
    pub main_module: Option<(String, String)>,
    /// `build` lines: `-ldflags`, `CGO_ENABLED`, `GOARCH`, ...
    pub settings: Vec<(String, String)>,
    /// `dep` lines: the module paths of every dependency linked in.
    pub deps: Vec<String>,
}

impl BuildInfo {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses from the `.go.buildinfo` section, or, when section headers are gone,
/// from the first 16-byte-aligned magic anywhere in the file.
pub fn parse(section: Option<&[u8]>, whole_file: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    if let Some(sec) = section {
        if sec.starts_with(MAGIC) {
            return parse_blob(sec);
        }
    }
    let mut at = 0;
    while let Some(pos) = find(&whole_file[at..], MAGIC) {
        let abs = at + pos;
        if abs % 16 == 0 {
            return parse_blob(&whole_file[abs..]);
        }
        at = abs + 1;
    }
    Err(BuildInfoError::NotFound)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_blob(data: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    let flags = *data.get(15).ok_or(BuildInfoError::Truncated { at: 15 })?;
    if flags & FLAG_INLINE == 0 {
        return Err(BuildInfoError::PointerFormat);
    }
    let mut pos = 32;
    let version_raw = String::from_utf8_lossy(read_bytes(data, &mut pos)?).into_owned();
    let modinfo = read_bytes(data, &mut pos)?;
    let version = GoVersion::parse(&version_raw)?;
    let mut info = BuildInfo { version_raw, version, path: None, main_module: None, settings: Vec::new(), deps: Vec::new() };
    // modinfo is framed by 16-byte sentinels (cmd/go/internal/modload.ModInfoData).
    // Strip them as bytes: the content need not be valid UTF-8.
    let body = if modinfo.len() >= 33 { String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]) } else { "".into() };
    for line in body.lines() {
        let mut f = line.split('\t');
        match f.next() {
            Some("path") => info.path = f.next().map(str::to_owned),
            Some("mod") => {
                if let (Some(p), Some(v)) = (f.next(), f.next()) {
                    info.main_module = Some((p.to_owned(), v.to_owned()));
                }
            }
            Some("dep") => info.deps.extend(f.next().map(str::to_owned)),
            Some("build") => {
                if let Some((k, v)) = f.next().and_then(|kv| kv.split_once('=')) {
                    info.settings.push((k.to_owned(), v.trim_matches('"').to_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

fn read_bytes<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8], BuildInfoError> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *data.get(*pos).ok_or(BuildInfoError::Truncated { at: *pos })?;
        *pos += 1;
        if shift >= 64 {
            return Err(BuildInfoError::Truncated { at: *pos });
        }
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let end = pos.checked_add(len as usize).filter(|&e| e <= data.len()).ok_or(BuildInfoError::Truncated { at: *pos })?;
    let s = &data[*pos..end];
    *pos = end;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(FLAG_INLINE);
        b.resize(32, 0);
        for s in [version, modinfo] {
            // Lengths are uvarints (encoding/binary).
            let mut n = s.len();
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    #[test]
    fn parses_versions() {
        assert_eq!(GoVersion::parse("go1.21.13").unwrap(), GoVersion::new(1, 21, 13));
        assert_eq!(GoVersion::parse("go1.22rc1").unwrap(), GoVersion::new(1, 22, 0));
        assert_eq!(GoVersion::parse("go1.24.0 X:nocoverageredesign").unwrap(), GoVersion::new(1, 24, 0));
        assert_eq!(GoVersion::parse("go1.19.8").unwrap(), GoVersion::new(1, 19, 8));
        assert!(GoVersion::parse("devel +abc").is_err());
        assert!(GoVersion::new(1, 20, 0) > GoVersion::new(1, 19, 8));
    }

    #[test]
    fn parses_inline_blob() {
        let sentinel = "0123456789abcdef";
        let modinfo = format!("{sentinel}path\texample.com/demo\nmod\texample.com/demo\t(devel)\t\ndep\tgolang.org/x/sys\tv0.1.0\th1:abc=\ndep\texample.com/demo/tools\tv1.0.0\t\nbuild\tCGO_ENABLED=0\nbuild\t-ldflags=\"-s -w\"\n{sentinel}");
        let b = blob("go1.24.11", &modinfo);
        let info = parse(Some(&b), &[]).unwrap();
        assert_eq!(info.version, GoVersion::new(1, 24, 11));
        assert_eq!(info.path.as_deref(), Some("example.com/demo"));
        assert_eq!(info.main_module, Some(("example.com/demo".into(), "(devel)".into())));
        assert_eq!(info.setting("CGO_ENABLED"), Some("0"));
        assert_eq!(info.setting("-ldflags"), Some("-s -w"));
        assert_eq!(info.deps, ["golang.org/x/sys", "example.com/demo/tools"]);
    }

    #[test]
    fn finds_magic_without_section() {
        let mut file = vec![0u8; 48];
        file.extend(blob("go1.27.3", ""));
        assert_eq!(parse(None, &file).unwrap().version, GoVersion::new(1, 27, 3));
    }

    #[test]
    fn invalid_utf8_in_modinfo_is_not_a_panic() {
        // Found by `cargo xtask fuzz`: a lossy-decoded multi-byte character
        // straddling the 16-byte sentinel boundary.
        let mut modinfo = vec![b'a'; 15];
        modinfo.extend_from_slice(&[0xff, 0xfe]);
        modinfo.extend(vec![b'b'; 30]);
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(FLAG_INLINE);
        b.resize(32, 0);
        b.push(9);
        b.extend_from_slice(b"go1.24.11");
        b.push(modinfo.len() as u8);
        b.extend_from_slice(&modinfo);
        assert_eq!(parse(Some(&b), &[]).unwrap().version, GoVersion::new(1, 24, 11));
    }

    #[test]
    fn errors_instead_of_panicking() {
        assert_eq!(parse(None, b"plain C program"), Err(BuildInfoError::NotFound));
        let b = blob("go1.24.11", "");
        for cut in 0..b.len() {
            let _ = parse(Some(&b[..cut]), &[]);
        }
        let mut trunc = b[..34].to_vec();
        trunc[32] = 100;
        assert!(matches!(parse(Some(&trunc), &[]), Err(BuildInfoError::Truncated { .. })));
        let mut old = blob("go1.16", "");
        old[15] = 0;
        assert_eq!(parse(Some(&old), &[]), Err(BuildInfoError::PointerFormat));
    }
}
