//! Exec events for node mode: the kernel says which process just ran a
//! new program, so a Go service started after the agent is looked at
//! within one event loop turn, not at the next sweep of /proc.
//!
//! `sched_process_exec` as a BTF-typed tracepoint where the kernel has BTF,
//! else as a raw tracepoint; neither needs tracefs. Exits are not taken
//! from the kernel's tracepoint: it fires for every thread on the host,
//! while each target's pidfd tells its own exit exactly (see session::live).
use aya::{
    maps::{MapData, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLink,
        tp_btf::BtfTracePointLink,
        BtfTracePoint, RawTracePoint,
    },
    Btf,
};
use gcprobe_common::{stat, ExecEvent};

use super::probes::{Kernel, ProbeError};

const TRACEPOINT: &str = "sched_process_exec";

/// The attached tracepoint; dropping it detaches.
enum ExecLink {
    Btf(#[allow(dead_code)] BtfTracePointLink),
    Raw(#[allow(dead_code)] RawTracePointLink),
}

/// Exec events as they come; drop to stop them.
pub struct ExecWatch {
    // Declaration order is drop order: the link goes before its ring.
    _link: ExecLink,
    ring: RingBuf<MapData>,
    /// Whether the BTF-typed tracepoint serves (else the raw one).
    pub typed: bool,
}

impl Kernel {
    /// Attaches the exec tracepoint and hands over its ring.
    pub fn watch_execs(&self) -> Result<ExecWatch, ProbeError> {
        let mut ebpf = self.shared.ebpf.borrow_mut();
        let ring = ebpf.take_map("EXECS").ok_or(ProbeError::Missing { what: "map", name: "EXECS" })?;
        let ring = RingBuf::try_from(ring).map_err(|source| ProbeError::Map { name: "EXECS", source })?;
        let (link, typed) = match Btf::from_sys_fs() {
            Ok(btf) => match attach_btf(&mut ebpf, &btf) {
                Ok(l) => (l, true),
                Err(e) => {
                    log::debug!("BTF tracepoint {TRACEPOINT}: {}; using the raw tracepoint", crate::error::error_chain(&e));
                    (attach_raw(&mut ebpf)?, false)
                }
            },
            Err(_) => (attach_raw(&mut ebpf)?, false),
        };
        Ok(ExecWatch { _link: link, ring, typed })
    }

    /// Exec events the kernel's ring had no room for.
    pub fn execs_lost(&self) -> u64 {
        self.shared.row(stat::AGENT_SLOT)[stat::EXEC_LOST as usize]
    }
}

fn attach_btf(ebpf: &mut aya::Ebpf, btf: &Btf) -> Result<ExecLink, ProbeError> {
    let name = "exec_btf";
    let prog: &mut BtfTracePoint = ebpf.program_mut(name).ok_or(ProbeError::Missing { what: "program", name })?.try_into().map_err(|source| ProbeError::Program { name, source })?;
    prog.load(TRACEPOINT, btf).map_err(|source| ProbeError::Program { name, source })?;
    let id = prog.attach().map_err(|source| ProbeError::Program { name, source })?;
    Ok(ExecLink::Btf(prog.take_link(id).map_err(|source| ProbeError::Program { name, source })?))
}

fn attach_raw(ebpf: &mut aya::Ebpf) -> Result<ExecLink, ProbeError> {
    let name = "exec_raw";
    let prog: &mut RawTracePoint = ebpf.program_mut(name).ok_or(ProbeError::Missing { what: "program", name })?.try_into().map_err(|source| ProbeError::Program { name, source })?;
    prog.load().map_err(|source| ProbeError::Program { name, source })?;
    let id = prog.attach(TRACEPOINT).map_err(|source| ProbeError::Program { name, source })?;
    Ok(ExecLink::Raw(prog.take_link(id).map_err(|source| ProbeError::Program { name, source })?))
}

impl ExecWatch {
    /// The ring, for the event loop to wait on.
    pub fn ring_mut(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// Every PID that exec'd since the last call, oldest first.
    pub fn drain(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<ExecEvent>() {
                // SAFETY: ExecEvent is plain data; read_unaligned copes with the ring's alignment.
                let ev: ExecEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                out.push(ev.tgid);
            }
        }
        out
    }
}

impl std::os::fd::AsRawFd for ExecWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}
