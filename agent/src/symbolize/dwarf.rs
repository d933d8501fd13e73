//! DWARF line tables and inlined-subroutine trees, through addr2line (lazy:
//! units are parsed on first use, as in gimli-rs/addr2line's own Loader).
use std::{fmt, path::{Path, PathBuf}};

use super::Frame;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("loading DWARF from {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Addr2lineError,
    },
    #[error("DWARF lookup of {vaddr:#x}")]
    Lookup {
        vaddr: u64,
        #[source]
        source: Addr2lineError,
    },
}

/// addr2line's loader reports `Box<dyn Error>`, which is not itself an `Error`;
/// this carries it as a proper source.
#[derive(Debug)]
pub struct Addr2lineError(Box<dyn std::error::Error>);

impl fmt::Display for Addr2lineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for Addr2lineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

pub struct Dwarf {
    loader: addr2line::Loader,
}

impl Dwarf {
    /// Opens and maps the file now; later lookups need no path, so this keeps
    /// working after the target (and its /proc/PID/exe) is gone.
    pub fn open(path: &Path) -> Result<Self, DwarfError> {
        let loader = addr2line::Loader::new(path).map_err(|e| DwarfError::Load { path: path.into(), source: Addr2lineError(e) })?;
        Ok(Self { loader })
    }

    /// Innermost-first frames at a link-time address, or `None` when no unit covers it.
    pub fn frames(&self, vaddr: u64) -> Result<Option<Vec<Frame>>, DwarfError> {
        let err = |e: Box<dyn std::error::Error>| DwarfError::Lookup { vaddr, source: Addr2lineError(e) };
        let mut iter = self.loader.find_frames(vaddr).map_err(err)?;
        let mut out: Vec<Frame> = Vec::new();
        loop {
            let next = iter.next().map_err(|e| DwarfError::Lookup { vaddr, source: Addr2lineError(Box::new(e)) })?;
            let Some(f) = next else { break };
            let function = match &f.function {
                Some(name) => name.raw_name().map(|n| n.into_owned()).unwrap_or_default(),
                None => String::new(),
            };
            let (file, line) = match &f.location {
                Some(loc) => (loc.file.map(str::to_owned), loc.line),
                None => (None, None),
            };
            out.push(Frame { function, file, line, inlined: true });
        }
        if out.is_empty() {
            return Ok(None);
        }
        if let Some(last) = out.last_mut() {
            last.inlined = false;
        }
        // A frame without a DWARF name (rare: assembly) takes the symbol's.
        if out.iter().any(|f| f.function.is_empty()) {
            if let Some(sym) = self.loader.find_symbol(vaddr) {
                for f in out.iter_mut().filter(|f| f.function.is_empty()) {
                    f.function = sym.to_owned();
                }
            }
        }
        Ok(Some(out))
    }
}
