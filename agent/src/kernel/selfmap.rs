//! gcprobe's own process: where its functions are in its executable file
//! (calibration and the detach primer put uprobes on them; the uprobe PMU
//! takes a file offset), and what CPU its threads spend.
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SelfMapError {
    #[error("reading /proc/self/maps")]
    Read(#[source] std::io::Error),
    #[error("address {addr:#x} is in no file-backed mapping of gcprobe")]
    NotMapped { addr: u64 },
}

/// File offset of `addr` in our own executable, for the uprobe PMU.
pub fn self_file_offset(addr: u64) -> Result<u64, SelfMapError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(SelfMapError::Read)?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(inode)) = (f.next(), f.next(), f.next(), f.next(), f.next()) else { continue };
        if inode == "0" {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi), Ok(off)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16), u64::from_str_radix(off, 16)) else { continue };
        if (lo..hi).contains(&addr) {
            return Ok(addr - lo + off);
        }
    }
    Err(SelfMapError::NotMapped { addr })
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
