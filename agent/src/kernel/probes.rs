//! Loads the embedded kernel programs once per agent ([`Kernel`]) and
//! attaches them per target's probe plan ([`Attached`]).
//!
//! [`Attached`] is the RAII guard: dropping it detaches every uprobe (each
//! `UProbeLink` detaches on drop) and removes the target from the kernel's PID
//! filter, on every exit path including errors and signals.
use std::{
    cell::{Cell, RefCell},
    collections::BTreeSet,
    rc::Rc,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        ProgramError, UProbe,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use gcprobe_common::{kind, stat, AggKey, AggValue, EventHeader, PendingGrowth, TargetConfig, TargetStats, HEADER_WORDS};

use super::aggmap::AggMap;
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
    #[error("at most {max} targets per agent")]
    TooManyTargets { max: u32 },
    #[error("counting this host's CPUs")]
    Cpus(#[source] std::io::Error),
    #[error("reading the kernel's log (--log-probes)")]
    Log {
        #[source]
        source: aya_log::Error,
    },
    #[error(transparent)]
    AggMap(#[from] super::aggmap::AggMapError),
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
    pub(super) fn name(self) -> &'static str {
        match self {
            Program::Real => "go_entry",
            Program::Empty => "go_empty",
        }
    }
}

/// Loads the probe object, as often as the agent needs: one
/// `aya::EbpfLoader` parses the kernel's BTF (~6 MB) as it is made, so the
/// agent makes one. Our programs read registers and user memory, never
/// kernel structs, so nothing is relocated against that BTF.
pub struct Loader {
    inner: EbpfLoader<'static>,
    /// The sizes the object declares, read back from its first load.
    declared: Option<Vec<(&'static str, u32)>>,
    /// Calibration sizes were set.
    shrunk: bool,
    /// The session's object logs its diagnostics (`--log-probes`).
    log_probes: bool,
}

/// Maps whose sizes calibration shrinks.
const SIZED_MAPS: [&str; 4] = ["EVENTS", "TARGETS", "CONFIGS", "STATS"];

/// `AGG`'s slots per CPU (a power of two): a session's, and calibration's,
/// whose one process counts into a handful of keys.
const AGG_SLOTS_PER_CPU: u32 = 1 << 12;
const AGG_SLOTS_CALIBRATION: u32 = 16;

impl Default for Loader {
    fn default() -> Self {
        let mut inner = EbpfLoader::new();
        inner.btf(None);
        Self { inner, declared: None, shrunk: false, log_probes: false }
    }
}

impl Loader {
    /// Lets the session's object log (see [`Kernel::probe_log`]); calibration's never does.
    pub fn log_probes(mut self, on: bool) -> Self {
        self.log_probes = on;
        self
    }

    fn sized(&mut self, sizing: Sizing) -> &mut EbpfLoader<'static> {
        if sizing == Sizing::Session && self.declared.is_none() && self.shrunk {
            // Calibrated before the session's first load: sizes unknown.
            *self = Self::default().log_probes(self.log_probes);
        }
        match sizing {
            // A handful of hits from one process: the session's 4 MiB ring
            // and per-CPU tables would only cost start-up time to allocate.
            Sizing::Calibration => {
                self.shrunk = true;
                self.inner.map_max_entries("EVENTS", 64 << 10).map_max_entries("TARGETS", 1).map_max_entries("CONFIGS", 2).map_max_entries("STATS", 2);
            }
            Sizing::Session => {
                for (name, n) in self.declared.iter().flatten() {
                    self.inner.map_max_entries(name, *n);
                }
            }
        }
        &mut self.inner
    }

    /// Notes the declared sizes from an object loaded as declared.
    fn note_declared(&mut self, ebpf: &Ebpf) {
        if self.declared.is_none() {
            let sizes = SIZED_MAPS.iter().filter_map(|&n| ebpf.map(n).and_then(map_max_entries).map(|m| (n, m))).collect();
            self.declared = Some(sizes);
        }
    }
}

/// How big the kernel object's maps are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// As the probe object declares them: every target of an agent.
    Session,
    /// Just enough for calibrating on gcprobe's own process.
    Calibration,
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
    /// Growths sent without their allocation (`stat::GROW_ALONE`); absent
    /// from recordings made before growths were paired in the kernel.
    #[serde(default)]
    pub grow_alone: u64,
    /// Hits dropped because our program was already running on their CPU
    /// (`stat::OVERLAPPED`); absent from older recordings.
    #[serde(default)]
    pub overlapped: u64,
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

    /// Two sets of counters added: what several targets' probes cost together.
    pub fn plus(&self, o: &Self) -> Self {
        let add = |a: [u64; kind::MAX as usize + 1], b: [u64; kind::MAX as usize + 1]| std::array::from_fn(|k| a[k] + b[k]);
        Self {
            hits: self.hits + o.hits,
            ringbuf_full: self.ringbuf_full + o.ringbuf_full,
            nested: self.nested + o.nested,
            stack_faults: self.stack_faults + o.stack_faults,
            empty_hits: self.empty_hits.max(o.empty_hits),
            aggregated: self.aggregated + o.aggregated,
            agg_full: self.agg_full + o.agg_full,
            grow_alone: self.grow_alone + o.grow_alone,
            overlapped: self.overlapped + o.overlapped,
            hits_by_kind: add(self.hits_by_kind, o.hits_by_kind),
            gated_by_kind: add(self.gated_by_kind, o.gated_by_kind),
        }
    }

    /// What was counted since `earlier` (a reading of the same counters).
    pub fn since(&self, earlier: &Self) -> Self {
        let sub = |a: [u64; kind::MAX as usize + 1], b: [u64; kind::MAX as usize + 1]| std::array::from_fn(|k| a[k].saturating_sub(b[k]));
        Self {
            hits: self.hits.saturating_sub(earlier.hits),
            ringbuf_full: self.ringbuf_full.saturating_sub(earlier.ringbuf_full),
            nested: self.nested.saturating_sub(earlier.nested),
            stack_faults: self.stack_faults.saturating_sub(earlier.stack_faults),
            empty_hits: self.empty_hits.saturating_sub(earlier.empty_hits),
            aggregated: self.aggregated.saturating_sub(earlier.aggregated),
            agg_full: self.agg_full.saturating_sub(earlier.agg_full),
            grow_alone: self.grow_alone.saturating_sub(earlier.grow_alone),
            overlapped: self.overlapped.saturating_sub(earlier.overlapped),
            hits_by_kind: sub(self.hits_by_kind, earlier.hits_by_kind),
            gated_by_kind: sub(self.gated_by_kind, earlier.gated_by_kind),
        }
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
    let grow_type_arg = plan.growslice_abi.elem_type_arg();
    TargetConfig { nested_lo, nested_hi, heap_live_addr, heap_goal_addr, pair_lo, pair_hi, burst_open: 1, grow_type_arg, ..TargetConfig::default() }
}


/// Whether the kernel times every BPF program run (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// A program's runs and their total time, by the kernel's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub ns: u64,
    pub runs: u64,
}

impl RunStats {
    /// Time per run between `self` and a `later` reading.
    pub fn ns_per_run_until(&self, later: &RunStats) -> Option<f64> {
        let runs = later.runs.checked_sub(self.runs).filter(|&r| r > 0)?;
        Some(later.ns.saturating_sub(self.ns) as f64 / runs as f64)
    }
}

/// How the uprobes are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// BPF uprobe_multi links: a set per link (Linux 6.6+).
    UprobeMulti,
    /// One perf-event uprobe per probe.
    PerfEvent,
}

/// The loaded kernel object: one per agent, shared by every target. The
/// programs, the event ring, the counters and the aggregation map serve all
/// of them; [`Attached`] is one target's view.
pub struct Kernel {
    pub(super) shared: Rc<Shared>,
}

pub(super) struct Shared {
    /// The program loaded for uprobe_multi links; cleared when the kernel
    /// cannot link one, and every probe becomes a perf-event uprobe.
    pub(super) multi: RefCell<Option<MultiProgram>>,
    /// File offset of [`detach_primer`] in gcprobe's own executable.
    primer_offset: Option<u64>,
    pub(super) stats: RefCell<PerCpuArray<MapData, TargetStats>>,
    /// Host tgid → slot, for links shared by every process of a binary.
    pub(super) targets: RefCell<HashMap<MapData, u32, u32>>,
    /// Each target's settings, by slot.
    pub(super) configs: RefCell<Array<MapData, TargetConfig>>,
    agg: RefCell<AggMap>,
    /// Each CPU's growslice record awaiting its allocation.
    pending: PerCpuArray<MapData, PendingGrowth>,
    /// `STATS` rows in use; row 0 is the agent's own.
    pub(super) slots: RefCell<BTreeSet<u32>>,
    /// The targets' `AGGREGATED` counts summed at the last call of
    /// `agg_totals_changed`, and how many calls in a row saw that sum.
    agg_counted: Cell<(Option<u64>, u8)>,
    pub(super) program: Program,
    // Last: links hold their own references, and the object outlives every
    // `Attached` through the Rc.
    pub(super) ebpf: RefCell<Ebpf>,
}

impl Kernel {
    /// Loads the programs and maps; no target yet. Returns the object and
    /// the event ring every target's events arrive on.
    pub fn load(loader: &mut Loader, program: Program, sizing: Sizing) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        // The loader keeps a reference to the value for as long as it lives.
        static ON: u32 = 1;
        static OFF: u32 = 0;
        static SESSION_SLOTS: u32 = AGG_SLOTS_PER_CPU;
        static CALIBRATION_SLOTS: u32 = AGG_SLOTS_CALIBRATION;
        let log = if sizing == Sizing::Session && loader.log_probes { &ON } else { &OFF };
        let per_cpu = if sizing == Sizing::Session { &SESSION_SLOTS } else { &CALIBRATION_SLOTS };
        // bpf_get_smp_processor_id() is below the possible CPUs' count.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        let agg_slots = per_cpu.checked_mul(cpus as u32).ok_or(ProbeError::Cpus(std::io::Error::other("too many CPUs")))?;
        let mut ebpf = loader
            .sized(sizing)
            .map_max_entries("AGG", agg_slots)
            .override_global("AGG_SLOTS_PER_CPU", per_cpu, true)
            .override_global("LOG_PROBES", log, true)
            .load(PROBES_OBJ)
            .map_err(|source| {
            if is_eperm(&source) { ProbeError::PermissionDenied { source } } else { ProbeError::Load { source } }
        })?;
        if sizing == Sizing::Session {
            loader.note_declared(&ebpf);
        }
        let name = program.name();
        // Bound to the maps aya created, which stay open as long as `ebpf`.
        let map_fds: Vec<(String, RawFd)> = ebpf.maps().filter_map(|(n, m)| map_fd(m).map(|fd| (n.to_owned(), fd))).collect();
        // Loaded for a kernel that cannot link it either way: attach finds out.
        let multi = MultiProgram::load(PROBES_OBJ, name, &map_fds)
            .map_err(|e| log::debug!("uprobe_multi program: {}", crate::error::error_chain(&e)))
            .ok();
        // The verifier takes ~0.1 s over our program here, per load: the
        // perf-event variant only when uprobe_multi cannot serve (this
        // kernel refused the program, or a link fails at attach).
        if multi.is_none() {
            loaded_uprobe(&mut ebpf, program)?;
        }
        let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(|source| ProbeError::Map { name: "EVENTS", source })?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "STATS")?).map_err(|source| ProbeError::Map { name: "STATS", source })?;
        let aya::maps::Map::Array(agg) = take(&mut ebpf, "AGG")? else { return Err(ProbeError::Missing { what: "array map", name: "AGG" }) };
        let agg = AggMap::new(agg, *per_cpu as usize, cpus)?;
        let targets = HashMap::try_from(take(&mut ebpf, "TARGETS")?).map_err(|source| ProbeError::Map { name: "TARGETS", source })?;
        let configs = Array::try_from(take(&mut ebpf, "CONFIGS")?).map_err(|source| ProbeError::Map { name: "CONFIGS", source })?;
        let pending = PerCpuArray::try_from(take(&mut ebpf, "PENDING")?).map_err(|source| ProbeError::Map { name: "PENDING", source })?;
        // Once: /proc/self/maps does not change under a running agent.
        let primer_offset = multi.as_ref().and_then(|_| crate::kernel::selfmap::self_file_offset(detach_primer as *const () as u64).ok());
        let shared = Shared {
            multi: RefCell::new(multi),
            primer_offset,
            stats: RefCell::new(stats),
            targets: RefCell::new(targets),
            configs: RefCell::new(configs),
            agg: RefCell::new(agg),
            pending,
            slots: RefCell::new(BTreeSet::new()),
            agg_counted: Cell::new((None, 0)),
            program,
            ebpf: RefCell::new(ebpf),
        };
        Ok((Self { shared: Rc::new(shared) }, ring))
    }

    /// The kernel's allocation counts of every target, summed over CPUs:
    /// running totals per key (the key names its process). Nothing when no
    /// total changed since the last call (see `Shared::agg_totals_changed`):
    /// the totals are running, so a reader that applies deltas loses nothing.
    pub fn agg_totals(&self) -> Vec<(AggKey, AggValue)> {
        self.shared.agg_totals_changed()
    }

    /// Growslice records still held in the kernel at the session's end
    /// (see `Shared::held_growths`), as ring records.
    pub fn held_growths(&self) -> Vec<Vec<u8>> {
        self.shared.held_growths()
    }

    /// The reader of the kernel program's log records, which come only when
    /// loaded with `--log-probes` (frozen in .rodata: left at 0, the
    /// verifier drops every log statement).
    pub fn probe_log(&self) -> Result<ProbeLog, ProbeError> {
        ProbeLog::init(&mut self.shared.ebpf.borrow_mut()).map_err(|source| ProbeError::Log { source })
    }

    /// Which program this object runs at its attach points.
    pub fn program(&self) -> Program {
        self.shared.program
    }

    /// The kernel's own accounting of our program's runs so far (its
    /// fdinfo): None unless `kernel.bpf_stats_enabled` is on, which times
    /// every run (two clock reads each) and is off by default.
    pub fn run_stats(&self) -> Option<RunStats> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = match self.shared.multi.borrow().as_ref() {
            Some(m) => m.fd().as_raw_fd(),
            None => uprobe_of(&mut self.shared.ebpf.borrow_mut(), self.shared.program).ok()?.fd().ok()?.as_fd().as_raw_fd(),
        };
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
        let stats = RunStats { ns: field("run_time_ns:")?, runs: field("run_cnt:")? };
        (stats.runs > 0).then_some(stats)
    }

    /// Hits shared probes took in processes that are not targets.
    pub fn foreign_hits(&self) -> u64 {
        self.shared.row(stat::AGENT_SLOT)[stat::FOREIGN as usize]
    }
}

impl Shared {
    /// A target's counters, from its `STATS` row (the empty program's hits
    /// are the agent's own row).
    pub(super) fn stats_of(&self, slot: u32) -> KernelStats {
        let row = self.row(slot);
        let at = |s: u32| row[s as usize];
        let by_kind = |base: u32| -> [u64; kind::MAX as usize + 1] { std::array::from_fn(|k| at(base + k as u32)) };
        let (hits_by_kind, gated_by_kind) = (by_kind(stat::HITS_BY_KIND), by_kind(stat::GATED_BY_KIND));
        KernelStats {
            hits: hits_by_kind.iter().sum(),
            gated_by_kind,
            ringbuf_full: at(stat::RINGBUF_FULL),
            nested: at(stat::NESTED),
            stack_faults: at(stat::STACK_FAULT),
            // Only the empty program counts there: a second read otherwise
            // would cost every stats read a syscall for a zero.
            empty_hits: if self.program == Program::Empty { self.row(stat::AGENT_SLOT)[stat::EMPTY_HITS as usize] } else { 0 },
            aggregated: at(stat::AGGREGATED),
            agg_full: at(stat::AGG_FULL),
            grow_alone: at(stat::GROW_ALONE),
            overlapped: at(stat::OVERLAPPED),
            hits_by_kind,
        }
    }

    /// Zeroes a row a departed target may have used.
    pub(super) fn zero_row(&self, slot: u32) -> Result<(), ProbeError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        let zero = PerCpuValues::try_from(vec![TargetStats::default(); cpus]).map_err(ProbeError::Cpus)?;
        self.stats.borrow_mut().set(slot, zero, 0).map_err(|source| ProbeError::Map { name: "STATS", source })
    }

    /// Takes `pid` out of the filter, frees its row, and deletes its keys.
    pub(super) fn unregister(&self, pid: u32, slot: u32) {
        let _ = self.targets.borrow_mut().remove(&pid);
        self.slots.borrow_mut().remove(&slot);
        self.agg.borrow_mut().free(pid);
    }

    /// See [`Attached::prime_detach`].
    pub(super) fn prime_detach(&self) -> Option<OwnedFd> {
        self.primer()?.prime()
    }

    /// What primes a detach, for another thread; None on perf-event uprobes.
    pub(super) fn primer(&self) -> Option<Primer> {
        let offset = self.primer_offset?;
        let multi = self.multi.borrow();
        Some(Primer { prog: multi.as_ref()?.try_clone().ok()?, offset })
    }

    pub(super) fn mechanism(&self) -> Mechanism {
        if self.multi.borrow().is_some() { Mechanism::UprobeMulti } else { Mechanism::PerfEvent }
    }

    /// The records of growths whose allocation never came, one per CPU at
    /// most (see `PendingGrowth`): a later growslice on that CPU would
    /// have sent them. For the session's end, once every link is gone and
    /// no hit can touch the slots; they are not cleared.
    fn held_growths(&self) -> Vec<Vec<u8>> {
        let Ok(per_cpu) = self.pending.get(&0, 0) else { return Vec::new() };
        per_cpu.iter().filter_map(held_record).collect()
    }

    /// One `STATS` row summed over CPUs; zeros when unreadable.
    pub(super) fn row(&self, slot: u32) -> [u64; stat::COUNT as usize] {
        let mut sum = [0u64; stat::COUNT as usize];
        if let Ok(per_cpu) = self.stats.borrow().get(&slot, 0) {
            for v in per_cpu.iter() {
                for (s, c) in sum.iter_mut().zip(v.counts) {
                    *s += c;
                }
            }
        }
        sum
    }

    /// The targets' `AGGREGATED` counts summed, and their `AGG_CLAIMED`
    /// counts by CPU: one read of each target's row.
    fn agg_counts(&self) -> (u64, Vec<u64>) {
        let (mut counted, mut claims) = (0, Vec::new());
        let stats = self.stats.borrow();
        for slot in self.slots.borrow().iter() {
            let Ok(per_cpu) = stats.get(slot, 0) else { continue };
            claims.resize(claims.len().max(per_cpu.len()), 0);
            for (cpu, v) in per_cpu.iter().enumerate() {
                counted += v.counts[stat::AGGREGATED as usize];
                claims[cpu] += v.counts[stat::AGG_CLAIMED as usize];
            }
        }
        (counted, claims)
    }

    /// Every key's running total, or nothing when no target has counted
    /// into the map since the last call: every count into `AGG` bumps its
    /// target's `AGGREGATED` after it, so an unchanged sum of those means
    /// no total changed, and an idle target's flush reads no slot.
    fn agg_totals_changed(&self) -> Vec<(AggKey, AggValue)> {
        let (counted, claims) = self.agg_counts();
        // Once more after the sum stops changing: a key's first hit sends
        // its stack on the ring just after counting, and the reader holds
        // totals back until that stack is in.
        let (last, walks) = self.agg_counted.get();
        let walks = if last == Some(counted) { walks + 1 } else { 0 };
        self.agg_counted.set((Some(counted), walks.min(2)));
        if walks >= 2 {
            return Vec::new();
        }
        self.agg_slot_totals(&claims)
    }

    pub(super) fn agg_totals(&self) -> Vec<(AggKey, AggValue)> {
        let (_, claims) = self.agg_counts();
        self.agg_slot_totals(&claims)
    }

    /// The slots' counts summed by key: a key has a slot on each CPU it was counted on.
    fn agg_slot_totals(&self, claims: &[u64]) -> Vec<(AggKey, AggValue)> {
        let mut by_key: std::collections::HashMap<AggKey, AggValue> = std::collections::HashMap::new();
        for (k, v) in self.agg.borrow_mut().slots(claims) {
            let t = by_key.entry(k).or_default();
            t.count += v.count;
            t.bytes += v.bytes;
        }
        by_key.into_iter().collect()
    }
}

/// The perf-event variant of `program`, loaded on first use.
/// A held growth's record bytes, as the kernel would have sent it alone;
/// None for an empty slot or a frame count no record can have.
fn held_record(p: &PendingGrowth) -> Option<Vec<u8>> {
    let n = p.event.header.nframes as usize;
    if p.goroutine == 0 || n > gcprobe_common::MAX_FRAMES {
        return None;
    }
    let mut out = Vec::with_capacity(8 * (HEADER_WORDS + n));
    let header = EventHeader { flags: p.event.header.flags | gcprobe_common::event_flag::ALONE, ..p.event.header };
    // SAFETY: EventHeader is repr(C) plain old data with explicit padding.
    out.extend_from_slice(unsafe { std::slice::from_raw_parts((&header as *const EventHeader).cast::<u8>(), 8 * HEADER_WORDS) });
    out.extend(p.event.frames[..n].iter().flat_map(|f| f.to_ne_bytes()));
    Some(out)
}

pub(super) fn loaded_uprobe(ebpf: &mut Ebpf, program: Program) -> Result<&mut UProbe, ProbeError> {
    let name = program.name();
    let prog = uprobe_of(ebpf, program)?;
    if prog.fd().is_err() {
        prog.load().map_err(|source| ProbeError::Program { name, source })?;
    }
    Ok(prog)
}

fn uprobe_of(ebpf: &mut Ebpf, program: Program) -> Result<&mut UProbe, ProbeError> {
    let name = program.name();
    ebpf.program_mut(name).ok_or(ProbeError::Missing { what: "program", name })?.try_into().map_err(|source| ProbeError::Program { name, source })
}

/// Readies the kernel to remove breakpoints without an RCU wait (see
/// [`Attached::prime_detach`]); `Send`, so a detach can run off the event loop.
pub(super) struct Primer {
    prog: MultiProgram,
    offset: u64,
}

impl Primer {
    pub(super) fn prime(&self) -> Option<OwnedFd> {
        self.prog.attach(Path::new("/proc/self/exe"), &[self.offset], &[0], std::process::id()).ok()
    }
}

/// Where [`Shared::prime_detach`] places its uprobe: never called.
#[inline(never)]
extern "C" fn detach_primer(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(13)
}

/// The fd of a map of the kinds our object declares.
fn map_fd(m: &aya::maps::Map) -> Option<RawFd> {
    use aya::maps::Map as M;
    match m {
        M::Array(d) | M::HashMap(d) | M::PerCpuArray(d) | M::PerCpuHashMap(d) | M::RingBuf(d) => Some(d.fd().as_fd().as_raw_fd()),
        _ => None,
    }
}

fn map_max_entries(m: &aya::maps::Map) -> Option<u32> {
    use aya::maps::Map as M;
    match m {
        M::Array(d) | M::HashMap(d) | M::PerCpuArray(d) | M::PerCpuHashMap(d) | M::RingBuf(d) => d.info().ok().map(|i| i.max_entries()),
        _ => None,
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing { what: "map", name })
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
