//! BPF uprobe_multi links (Linux 6.6+): one link holds a whole set of
//! uprobes, which aya 0.14 cannot create.
//!
//! Why they matter here: a perf-event uprobe detaches under the kernel's
//! global `event_mutex`, held through its RCU waits (kernel/trace/
//! trace_event_perf.c perf_uprobe_destroy), so a set of N probes leaves the
//! target one by one, ~0.1 s apart on this kind of VM, and the last keeps
//! trapping for N of them. Closing a uprobe_multi link removes every
//! breakpoint first and waits once (kernel/trace/bpf_trace.c
//! bpf_uprobe_unregister). Attaching is one syscall instead of N.
//!
//! The kernel only links programs loaded with expected attach type
//! `BPF_TRACE_UPROBE_MULTI`, so the program is loaded a second time from the
//! same object: aya-obj relocates it against the maps aya already created,
//! so both copies share every map.
use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type};

#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("parsing the BPF object")]
    Parse(#[source] aya_obj::ParseError),
    #[error("the BPF object has no program {name}")]
    NoProgram { name: &'static str },
    #[error("relocating BPF program {name}")]
    Relocate {
        name: &'static str,
        #[source]
        source: aya_obj::relocation::EbpfRelocationError,
    },
    #[error("loading BPF program {name} for uprobe_multi links (verifier: {verifier})")]
    Load {
        name: &'static str,
        /// The verifier log's last line, when it wrote one.
        verifier: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} has a NUL byte in its path")]
    NulInPath { path: PathBuf },
    #[error("creating a uprobe_multi link of {count} probes on {path}")]
    Link {
        path: PathBuf,
        count: usize,
        #[source]
        source: io::Error,
    },
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`
/// (include/uapi/linux/bpf.h); the kernel zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);

/// `union bpf_attr` for BPF_LINK_CREATE with its `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<UprobeMultiLinkAttr>() == 64);

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: attr is a properly laid out bpf_attr prefix that outlives the
    // call; its pointers point at live buffers the caller owns.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, std::mem::size_of::<T>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success BPF_PROG_LOAD and BPF_LINK_CREATE return a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A program loaded for uprobe_multi links.
#[derive(Debug)]
pub struct MultiProgram {
    fd: OwnedFd,
}

use std::os::fd::AsFd as _;

impl MultiProgram {
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second handle on the same program, for a thread of its own.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { fd: self.fd.try_clone()? })
    }

    /// Loads program `name` of the BPF object `elf`, with its map references
    /// bound to `maps` (name → fd of a map aya created from the same object).
    pub fn load(elf: &[u8], name: &'static str, maps: &[(String, RawFd)]) -> Result<Self, MultiError> {
        let mut obj = aya_obj::Object::parse(elf).map_err(MultiError::Parse)?;
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        let obj_maps = std::mem::take(&mut obj.maps);
        let bound = maps.iter().filter_map(|(n, fd)| obj_maps.get(n).map(|m| (n.as_str(), *fd, m)));
        obj.relocate_maps(bound, &text_sections).map_err(|source| MultiError::Relocate { name, source })?;
        obj.relocate_calls(&text_sections).map_err(|source| MultiError::Relocate { name, source })?;
        let prog = obj.programs.get(name).ok_or(MultiError::NoProgram { name })?;
        let insns: &[bpf_insn] = &obj.functions.get(&prog.function_key()).ok_or(MultiError::NoProgram { name })?.instructions;

        let mut prog_name = [0u8; 16];
        for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        let mut attr = ProgLoadAttr {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: prog.license.as_ptr() as u64,
            prog_name,
            expected_attach_type: bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32,
            ..Default::default()
        };
        match bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Ok(Self { fd }),
            Err(first) => {
                // Again with the verifier's log, for the error only.
                let mut log = vec![0u8; 1 << 20];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                if let Ok(fd) = bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
                    return Ok(Self { fd });
                }
                let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
                let verifier = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no log").to_owned();
                Err(MultiError::Load { name, verifier, source: first })
            }
        }
    }

    /// Places uprobes at `offsets` of the file at `path`, firing only in
    /// process `pid`; closing the returned link removes them all.
    pub fn attach(&self, path: &Path, offsets: &[u64], cookies: &[u64], pid: u32) -> Result<OwnedFd, MultiError> {
        assert_eq!(offsets.len(), cookies.len(), "one cookie per offset");
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| MultiError::NulInPath { path: path.to_owned() })?;
        let mut attr = UprobeMultiLinkAttr {
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(&self.fd) as u32,
            attach_type: bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32,
            path: c_path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cookies: cookies.as_ptr() as u64,
            cnt: offsets.len() as u32,
            pid,
            ..Default::default()
        };
        bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(|source| MultiError::Link { path: path.to_owned(), count: offsets.len(), source })
    }
}
