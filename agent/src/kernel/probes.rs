//! Loads the embedded kernel programs and attaches them per the probe plan.
//!
//! [`Attached`] is the RAII guard: dropping it detaches every uprobe (each
//! `UProbeLink` detaches on drop) and removes the target from the kernel's PID
//! filter, on every exit path including errors and signals.
use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use gcprobe_common::{kind, stat, AggKey, AggValue, TargetConfig};

use crate::{
    plan::{ProbeKind, ProbePlan},
    kernel::{probelog::ProbeLog, uprobe_multi::MultiProgram},
};

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
    #[error("reading the kernel's log (--log-probes)")]
    Log {
        #[source]
        source: aya_log::Error,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelStats {
    pub hits: u64,
    pub ringbuf_full: u64,
    pub nested: u64,
    pub stack_faults: u64,
    pub empty_hits: u64,
    /// Hits counted in the kernel's map instead of sent as events.
    pub aggregated: u64,
    /// Hits sent whole because the kernel's map was full.
    pub agg_full: u64,
    /// Hits per `gcprobe_common::kind` value, gated ones included.
    pub hits_by_kind: [u64; kind::MAX as usize + 1],
    /// Of those, hits on bursted probes while their gate was shut.
    pub gated_by_kind: [u64; kind::MAX as usize + 1],
}

impl KernelStats {
    pub fn hits_of(&self, k: ProbeKind) -> u64 {
        self.hits_by_kind[k.raw() as usize]
    }

    /// Hits of `k` that ran the program (the gate was open).
    pub fn open_hits_of(&self, k: ProbeKind) -> u64 {
        self.hits_of(k) - self.gated_by_kind[k.raw() as usize]
    }

    pub fn gated(&self) -> u64 {
        self.gated_by_kind.iter().sum()
    }
}

/// Where one uprobe goes, and what its cookie tells the kernel program.
#[derive(Debug, Clone, Copy)]
pub struct AttachPoint {
    pub id: u32,
    pub file_offset: u64,
    pub cookie: u64,
}

impl AttachPoint {
    pub fn from_plan(plan: &ProbePlan) -> Vec<Self> {
        plan.probes.iter().map(|p| AttachPoint { id: p.id, file_offset: p.file_offset, cookie: p.cookie() }).collect()
    }
}

/// The kernel's per-target settings: the plan's link-time addresses moved by
/// the load bias. `gc` is the GC controller the session checked against the
/// target's memory (None: the kernel reads nothing at pauses).
pub fn target_config(plan: &ProbePlan, gc: Option<&crate::tracee::gcctl::GcController>, bias: u64) -> TargetConfig {
    let at = |r: Option<(u64, u64)>| r.map_or((0, 0), |(lo, hi)| (lo.wrapping_add(bias), hi.wrapping_add(bias)));
    let (nested_lo, nested_hi) = at(plan.nested_range);
    let (pair_lo, pair_hi) = at(plan.growslice_range);
    let heap_live_addr = gc.map_or(0, |c| c.heap_live_addr(bias));
    let heap_goal_addr = gc.map_or(0, |c| c.heap_goal_addr(bias));
    // Exact mode never shuts the gate; sampled mode opens it per burst.
    TargetConfig { nested_lo, nested_hi, heap_live_addr, heap_goal_addr, pair_lo, pair_hi, burst_open: 1, _pad: 0 }
}

/// Probes whose attach failed, by plan id; the caller decides what is fatal.
pub type AttachFailures = Vec<(u32, ProgramError)>;

/// How the uprobes are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// BPF uprobe_multi links: a set per link (Linux 6.6+).
    UprobeMulti,
    /// One perf-event uprobe per probe.
    PerfEvent,
}

pub struct Attached {
    // Declaration order is drop order: links detach before the object unloads.
    /// uprobe_multi links, each with the plan ids it holds.
    multi_links: Vec<(Vec<u32>, OwnedFd)>,
    links: BTreeMap<u32, UProbeLink>,
    /// The program loaded for uprobe_multi links; None when the kernel
    /// cannot link one, and every probe is a perf-event uprobe.
    multi: Option<MultiProgram>,
    /// File offset of [`detach_primer`] in gcprobe's own executable.
    primer_offset: Option<u64>,
    stats: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, TargetConfig>,
    agg: PerCpuHashMap<MapData, AggKey, AggValue>,
    cfg: TargetConfig,
    pid: u32,
    exe: PathBuf,
    program: Program,
    points: Vec<AttachPoint>,
    ebpf: Ebpf,
}

impl Attached {
    /// Loads the programs and registers `pid` in the kernel filter; nothing is
    /// attached yet (see [`Attached::attach`]). Returns the guard and the ring buffer.
    /// `log_probes` lets the kernel program log (see [`Attached::probe_log`]).
    pub fn load(exe: &Path, pid: u32, cfg: TargetConfig, points: Vec<AttachPoint>, program: Program, log_probes: bool) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        let mut loader = EbpfLoader::new();
        if log_probes {
            // Frozen in .rodata: left at 0, the verifier drops every log statement.
            loader.override_global("LOG_PROBES", &1u32, true);
        }
        let mut ebpf = loader.load(PROBES_OBJ).map_err(|source| {
            if is_eperm(&source) { ProbeError::PermissionDenied { source } } else { ProbeError::Load { source } }
        })?;

        let name = program.name();
        // Bound to the maps aya created, which stay open as long as `ebpf`.
        let map_fds: Vec<(String, RawFd)> = ebpf.maps().filter_map(|(n, m)| map_fd(m).map(|fd| (n.to_owned(), fd))).collect();
        // Loaded for a kernel that cannot link it either way: attach finds out.
        let multi = MultiProgram::load(PROBES_OBJ, name, &map_fds)
            .map_err(|e| log::debug!("uprobe_multi program: {}", crate::error::error_chain(&e)))
            .ok();
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing { what: "program", name })?
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })?;
        prog.load().map_err(|source| ProbeError::Program { name, source })?;
        let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(|source| ProbeError::Map { name: "EVENTS", source })?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "STATS")?).map_err(|source| ProbeError::Map { name: "STATS", source })?;
        let agg = PerCpuHashMap::try_from(take(&mut ebpf, "AGG")?).map_err(|source| ProbeError::Map { name: "AGG", source })?;
        let mut targets: HashMap<MapData, u32, TargetConfig> =
            HashMap::try_from(take(&mut ebpf, "TARGETS")?).map_err(|source| ProbeError::Map { name: "TARGETS", source })?;
        targets.insert(pid, cfg, 0).map_err(|source| ProbeError::Map { name: "TARGETS", source })?;
        // Once: /proc/self/maps does not change under a running agent.
        let primer_offset = multi.as_ref().and_then(|_| crate::kernel::selfmap::self_file_offset(detach_primer as *const () as u64).ok());
        Ok((Self { multi_links: Vec::new(), links: BTreeMap::new(), multi, primer_offset, stats, targets, agg, cfg, pid, exe: exe.to_owned(), program, points, ebpf }, ring))
    }

    /// The reader of the kernel program's log records, which come only when
    /// loaded with `log_probes`.
    pub fn probe_log(&mut self) -> Result<ProbeLog, ProbeError> {
        ProbeLog::init(&mut self.ebpf).map_err(|source| ProbeError::Log { source })
    }

    /// Attaches the given plan probes (those already attached are skipped),
    /// as one uprobe_multi link when the kernel has them. Per-probe failures
    /// are returned; a vanished target is an error.
    pub fn attach(&mut self, ids: impl IntoIterator<Item = u32>) -> Result<AttachFailures, ProbeError> {
        let pid = self.pid;
        let todo: Vec<AttachPoint> =
            ids.into_iter().filter(|id| !self.is_attached(*id)).filter_map(|id| self.points.iter().find(|p| p.id == id).copied()).collect();
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(multi) = &self.multi {
            let offsets: Vec<u64> = todo.iter().map(|p| p.file_offset).collect();
            let cookies: Vec<u64> = todo.iter().map(|p| p.cookie).collect();
            match multi.attach(&self.exe, &offsets, &cookies, pid) {
                Ok(link) => {
                    self.multi_links.push((todo.iter().map(|p| p.id).collect(), link));
                    return Ok(Vec::new());
                }
                Err(_) if target_gone(pid) => return Err(ProbeError::TargetGone { pid }),
                // One bad point fails the whole link: one at a time below
                // names it. If they all attach that way, this kernel cannot
                // link uprobe_multi, and the rest of the session does without.
                Err(e) => log::debug!("uprobe_multi link: {}", crate::error::error_chain(&e)),
            }
        }
        let name = self.program.name();
        let prog: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing { what: "program", name })?
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })?;
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(ProbeError::TargetGone { pid })?);
        let mut failures = Vec::new();
        for p in &todo {
            let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(p.file_offset), cookie: Some(p.cookie) };
            match prog.attach(point, &self.exe, scope) {
                Ok(link_id) => {
                    let link = prog.take_link(link_id).map_err(|source| ProbeError::Program { name, source })?;
                    self.links.insert(p.id, link);
                }
                Err(_) if target_gone(pid) => return Err(ProbeError::TargetGone { pid }),
                Err(e) => failures.push((p.id, e)),
            }
        }
        if failures.is_empty() {
            self.multi = None;
        }
        Ok(failures)
    }

    /// Readies the kernel to remove breakpoints without waiting: returns a
    /// uprobe_multi link on a function of gcprobe's own that nothing calls,
    /// to be dropped after the detach it primes; None on perf-event uprobes.
    ///
    /// Every uprobe (un)registration takes the global `dup_mmap_sem` for
    /// writing (kernel/events/uprobes.c register_for_each_vma), and a
    /// percpu rwsem's writer waits an RCU grace period unless another writer
    /// was there within the last one (kernel/rcu/sync.c rcu_sync_enter). Our
    /// program leaves a uprobe_multi link before its breakpoints do, so
    /// during that wait the target traps for nothing and nobody counts it
    /// (~14-24% more target CPU at 1M allocations/s, measured). Attaching the
    /// primer takes the wait instead, while the burst's gate is still open.
    pub fn prime_detach(&self) -> Option<OwnedFd> {
        let (multi, offset) = (self.multi.as_ref()?, self.primer_offset?);
        multi.attach(Path::new("/proc/self/exe"), &[offset], &[0], std::process::id()).ok()
    }

    /// uprobe_multi links, or one perf-event uprobe per probe.
    pub fn mechanism(&self) -> Mechanism {
        if self.multi.is_some() { Mechanism::UprobeMulti } else { Mechanism::PerfEvent }
    }

    /// Opens or shuts the gate of the bursted probes (`cookie::FLAG_BURST`):
    /// one map update, seen by every CPU's next hit.
    pub fn set_burst_open(&mut self, open: bool) -> Result<(), ProbeError> {
        self.cfg.burst_open = open as u32;
        self.targets.insert(self.pid, self.cfg, 0).map_err(|source| ProbeError::Map { name: "TARGETS", source })
    }

    /// Detaches the given probes, in the given order, and blocks until
    /// their breakpoints have left the target's text: only then does the
    /// target stop paying for them (disabling a perf event would not). A
    /// uprobe_multi link holding any of them goes whole.
    ///
    /// Perf-event uprobes go one at a time: the kernel serializes their
    /// teardown (perf_uprobe_destroy holds event_mutex through its RCU waits,
    /// ~0.1 s each here), so the k-th keeps trapping through k of them, and
    /// callers put the busiest first.
    pub fn detach_in_order(&mut self, ids: impl IntoIterator<Item = u32>) {
        let ids: Vec<u32> = ids.into_iter().collect();
        self.multi_links.retain(|(held, _)| !held.iter().any(|h| ids.contains(h)));
        for id in ids {
            drop(self.links.remove(&id));
        }
    }

    pub fn attached_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.keys().copied().chain(self.multi_links.iter().flat_map(|(ids, _)| ids.iter().copied()))
    }

    pub fn is_attached(&self, id: u32) -> bool {
        self.links.contains_key(&id) || self.multi_links.iter().any(|(ids, _)| ids.contains(&id))
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |slot: u32| -> u64 { self.stats.get(&slot, 0).map(|v| v.iter().copied().sum()).unwrap_or(0) };
        let by_kind = |base: u32| -> [u64; kind::MAX as usize + 1] { std::array::from_fn(|k| sum(base + k as u32)) };
        let (hits_by_kind, gated_by_kind) = (by_kind(stat::HITS_BY_KIND), by_kind(stat::GATED_BY_KIND));
        KernelStats {
            hits: hits_by_kind.iter().sum(),
            gated_by_kind,
            ringbuf_full: sum(stat::RINGBUF_FULL),
            nested: sum(stat::NESTED),
            stack_faults: sum(stat::STACK_FAULT),
            empty_hits: sum(stat::EMPTY_HITS),
            aggregated: sum(stat::AGGREGATED),
            agg_full: sum(stat::AGG_FULL),
            hits_by_kind,
        }
    }

    /// The kernel's allocation counts, summed over CPUs: running totals per key.
    pub fn agg_totals(&self) -> Vec<(AggKey, AggValue)> {
        self.agg
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let v = per_cpu.iter().fold(AggValue::default(), |a, v| AggValue { count: a.count + v.count, bytes: a.bytes + v.bytes });
                (k, v)
            })
            .collect()
    }

    /// Detaches now rather than at drop, so no event arrives after the final drain.
    pub fn detach(&mut self) {
        let primer = self.prime_detach();
        self.multi_links.clear();
        drop(primer);
        detach_in_parallel(std::mem::take(&mut self.links).into_values().collect());
        let _ = self.targets.remove(&self.pid);
    }
}

/// At the end of a session, order does not matter and the agent should not
/// wait longer than it must: threads overlap what the kernel lets overlap.
fn detach_in_parallel(links: Vec<UProbeLink>) {
    if links.len() < 2 {
        drop(links);
        return;
    }
    std::thread::scope(|s| {
        for link in links {
            s.spawn(move || drop(link));
        }
    });
}

/// Where [`Attached::prime_detach`] places its uprobe: never called.
#[inline(never)]
extern "C" fn detach_primer(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(13)
}

/// A zombie keeps /proc/PID but not its exe: gone either way.
fn target_gone(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_err()
}

/// The fd of a map of the kinds our object declares.
fn map_fd(m: &aya::maps::Map) -> Option<RawFd> {
    use aya::maps::Map as M;
    match m {
        M::Array(d) | M::HashMap(d) | M::PerCpuArray(d) | M::PerCpuHashMap(d) | M::RingBuf(d) => Some(d.fd().as_fd().as_raw_fd()),
        _ => None,
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing { what: "map", name })
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
