//! gcprobe's own capabilities: what the program `gcprobe run` starts must
//! not inherit, and what a session no longer needs once it is set up.
//!
//! Run as a user with capabilities (a DaemonSet, `setpriv --ambient-caps`),
//! gcprobe holds them in its ambient and inheritable sets too, and a child
//! would be given the ambient ones at exec: the program under test would run
//! with CAP_BPF, CAP_PERFMON and more. Under root the program runs as root,
//! with root's capabilities, as it would under `sudo`: that is the user's choice.
use std::io;

/// CAP_DAC_READ_SEARCH: read any file, search any directory.
pub const CAP_DAC_READ_SEARCH: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("reading gcprobe's own capabilities")]
    Get(#[source] io::Error),
    #[error("dropping capabilities gcprobe no longer needs")]
    Set(#[source] io::Error),
}

/// capget/capset's header and (two-word, version 3) data, as linux/capability.h has them.
#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

fn get() -> io::Result<[Data; 2]> {
    let mut h = Header { version: VERSION_3, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: capget writes two Data words for version 3, as given.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(d)
}

fn set(d: &[Data; 2]) -> io::Result<()> {
    let mut h = Header { version: VERSION_3, pid: 0 };
    // SAFETY: capset reads two Data words for version 3; pid 0 is this thread.
    if unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the child of `gcprobe run`, between fork and exec: empties the ambient
/// and inheritable sets, so a program that is not setuid or file-capable
/// starts with no capabilities (execve(2): P'(permitted) = (P(inheritable)
/// & F(inheritable)) | (F(permitted) & bounding) | P'(ambient)). Only raw
/// syscalls: async-signal-safe, as pre_exec requires.
pub fn clear_for_exec() -> io::Result<()> {
    // SAFETY: plain prctl; the extra arguments must be 0.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut d = get()?;
    for w in &mut d {
        w.inheritable = 0;
    }
    set(&d)
}

/// Gives up `caps` for good (effective, permitted and inheritable; the
/// kernel drops ambient ones with them).
pub fn drop(caps: &[u32]) -> Result<(), CapsError> {
    let mut d = get().map_err(CapsError::Get)?;
    for &c in caps {
        let (word, bit) = ((c / 32) as usize, 1u32 << (c % 32));
        d[word].effective &= !bit;
        d[word].permitted &= !bit;
        d[word].inheritable &= !bit;
    }
    set(&d).map_err(CapsError::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of this thread's as /proc/thread-self/status shows it.
    fn status(field: &str) -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let v = s.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        u64::from_str_radix(v.trim(), 16).unwrap()
    }

    /// On a thread of its own (capabilities are per thread, and the tests
    /// share the process): dropping one leaves the others as they were.
    #[test]
    fn dropping_a_capability_removes_it_and_only_it() {
        std::thread::spawn(|| {
            let (prm, eff) = (status("CapPrm:"), status("CapEff:"));
            drop(&[CAP_DAC_READ_SEARCH]).unwrap();
            let gone = !(1u64 << CAP_DAC_READ_SEARCH);
            assert_eq!((status("CapPrm:"), status("CapEff:"), status("CapInh:") & !gone), (prm & gone, eff & gone, 0));
        })
        .join()
        .unwrap();
    }
}
