//! Loads the embedded kernel programs and attaches them per the probe plan.
//!
//! [`Attached`] is the RAII guard: dropping it detaches every uprobe (each
//! `UProbeLink` detaches on drop) and removes the target from the kernel's PID
//! filter, on every exit path including errors and signals.
use std::{num::NonZeroU32, path::Path};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use gcprobe_common::{stat, TargetConfig};

use crate::plan::ProbePlan;

static PROBES_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gcprobe-probes.o"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("permission denied loading BPF programs: run as root, or grant CAP_BPF and CAP_PERFMON")]
    PermissionDenied {
        #[source]
        source: EbpfError,
    },
    #[error("loading the BPF object")]
    Load {
        #[source]
        source: EbpfError,
    },
    #[error("BPF object has no {what} named {name}")]
    Missing { what: &'static str, name: &'static str },
    #[error("BPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("process {pid} exited before gcprobe could attach")]
    TargetGone { pid: u32 },
    #[error("attaching {symbol} at file offset {offset:#x}")]
    Attach {
        symbol: String,
        offset: u64,
        #[source]
        source: ProgramError,
    },
}

/// Which kernel program to place at the plan's attach points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The real probe: filter, decode, walk, emit.
    Real,
    /// An empty program, the benchmark baseline for the trap's own cost.
    Empty,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Real => "go_entry",
            Program::Empty => "go_empty",
        }
    }
}

/// Per-CPU counters summed across CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub hits: u64,
    pub ringbuf_full: u64,
    pub nested: u64,
    pub stack_faults: u64,
    pub empty_hits: u64,
}

/// Probes whose attach failed, by plan id; the caller decides what is fatal.
pub type AttachFailures = Vec<(u32, ProgramError)>;

pub struct Attached {
    // Declaration order is drop order: links detach before the object unloads.
    links: Vec<(u32, UProbeLink)>,
    stats: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, TargetConfig>,
    pid: u32,
    _ebpf: Ebpf,
}

impl Attached {
    /// Loads the programs, registers `pid` in the kernel filter, and attaches at
    /// every planned probe. Returns the guard, the ring buffer, and per-probe
    /// attach failures (the caller decides whether a failure is fatal).
    pub fn attach(
        plan: &ProbePlan,
        exe: &Path,
        pid: u32,
        bias: u64,
        program: Program,
    ) -> Result<(Self, RingBuf<MapData>, AttachFailures), ProbeError> {
        let mut ebpf = EbpfLoader::new().load(PROBES_OBJ).map_err(|source| {
            if is_eperm(&source) { ProbeError::PermissionDenied { source } } else { ProbeError::Load { source } }
        })?;

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(ProbeError::Missing { what: "map", name: "EVENTS" })?)
            .map_err(|source| ProbeError::Map { name: "EVENTS", source })?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").ok_or(ProbeError::Missing { what: "map", name: "STATS" })?)
            .map_err(|source| ProbeError::Map { name: "STATS", source })?;
        let mut targets: HashMap<MapData, u32, TargetConfig> =
            HashMap::try_from(ebpf.take_map("TARGETS").ok_or(ProbeError::Missing { what: "map", name: "TARGETS" })?)
                .map_err(|source| ProbeError::Map { name: "TARGETS", source })?;
        let (nested_lo, nested_hi) = plan.nested_range.map_or((0, 0), |(lo, hi)| (lo.wrapping_add(bias), hi.wrapping_add(bias)));
        let heap_live_addr = plan.heap_live.map_or(0, |a| a.wrapping_add(bias));
        let cfg = TargetConfig { nested_lo, nested_hi, heap_live_addr };
        targets.insert(pid, cfg, 0).map_err(|source| ProbeError::Map { name: "TARGETS", source })?;

        let name = program.name();
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing { what: "program", name })?
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })?;
        prog.load().map_err(|source| ProbeError::Program { name, source })?;

        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(ProbeError::TargetGone { pid })?);
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for p in &plan.probes {
            let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(p.file_offset), cookie: Some(p.cookie()) };
            match prog.attach(point, exe, scope) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(|source| ProbeError::Program { name, source })?;
                    links.push((p.id, link));
                }
                Err(e) if !Path::new(&format!("/proc/{pid}")).exists() => {
                    let _ = e;
                    return Err(ProbeError::TargetGone { pid });
                }
                Err(e) => failures.push((p.id, e)),
            }
        }
        Ok((Self { links, stats, targets, pid, _ebpf: ebpf }, ring, failures))
    }

    pub fn attached_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.iter().map(|(id, _)| *id)
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |slot: u32| -> u64 {
            self.stats.get(&slot, 0).map(|v| v.iter().copied().sum()).unwrap_or(0)
        };
        KernelStats {
            hits: sum(stat::HITS),
            ringbuf_full: sum(stat::RINGBUF_FULL),
            nested: sum(stat::NESTED),
            stack_faults: sum(stat::STACK_FAULT),
            empty_hits: sum(stat::EMPTY_HITS),
        }
    }

    /// Detaches now rather than at drop, so no event arrives after the final drain.
    pub fn detach(&mut self) {
        self.links.clear();
        let _ = self.targets.remove(&self.pid);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.detach();
    }
}

fn is_eperm(e: &EbpfError) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
