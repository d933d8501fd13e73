//! Reading (never writing) the target's memory through /proc/PID/mem.
use std::{fs::File, io, os::unix::fs::FileExt as _, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub struct TargetMemory {
    file: File,
}

impl TargetMemory {
    /// Opens read-only: gcprobe never modifies the target.
    pub fn open(pid: u32) -> Result<Self, MemoryError> {
        let path = PathBuf::from(format!("/proc/{pid}/mem"));
        let file = File::open(&path).map_err(|source| MemoryError::Open { path, source })?;
        Ok(Self { file })
    }

    /// `N` bytes at `addr`; `None` if unmapped or the target is gone.
    pub fn read_array<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.file.read_exact_at(&mut b, addr).ok()?;
        Some(b)
    }

    /// A little-endian u64 at `addr`; `None` if unmapped or the target is gone.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, addr).ok()?;
        Some(u64::from_le_bytes(b))
    }
}
