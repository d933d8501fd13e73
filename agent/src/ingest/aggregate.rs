//! Folds events into counters keyed by raw stacks, histograms and STW spans.
//!
//! Nothing here symbolizes: hashing a few return addresses per event is cheap,
//! and each distinct stack is symbolized once, when a report is built.
use std::collections::{HashMap, HashSet};

use rustc_hash::FxBuildHasher;

/// The aggregator's maps, hashed with FxHash: they are keyed by stacks and
/// thread ids, touched several times per event, and SipHash was a quarter
/// of the agent's CPU per event (perf, exact mode at 100k events/s). The
/// keys come from the kernel, not from a network peer.
pub type FastMap<K, V> = HashMap<K, V, FxBuildHasher>;
pub type FastSet<K> = HashSet<K, FxBuildHasher>;

use hdrhistogram::Histogram;

use gcprobe_common::{AggKey, AggValue, MAX_ARGS};

use crate::{
    ingest::events::Event,
    plan::{GrowsliceAbi, PauseEnd, ProbeKind, ProbePlan, StwReason},
};

/// Distinct stacks kept per probe kind; beyond this, hits are counted as overflow
/// so memory stays bounded on a pathological target.
const MAX_STACKS: usize = 200_000;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StackStat {
    pub count: u64,
    pub bytes: u64,
    /// Bytes seen in the burst under way (sampled mode).
    cur_burst: u64,
    /// Over closed bursts i with window w_i: Σ bytes_i² and Σ bytes_i·w_i,
    /// for the variance of the ratio estimate (see [`Bursts::rel_ci95`]).
    burst_sq: f64,
    burst_cross: f64,
}

impl StackStat {
    // Saturating: a recording's totals are not the kernel's, and may be anything.
    fn add(&mut self, count: u64, bytes: u64) {
        self.count = self.count.saturating_add(count);
        self.bytes = self.bytes.saturating_add(bytes);
        self.cur_burst = self.cur_burst.saturating_add(bytes);
    }
}

/// The runtime's own allocation samples at a stack, weighted as pprof does.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Weighted {
    pub samples: u64,
    pub count: f64,
    pub bytes: f64,
}

pub use super::cycles::Cycle;
use super::cycles::CycleSeries;

/// The runtime's allocation total over the session, from the controller's
/// `totalAlloc` read on a timer: what `MemStats.TotalAlloc` counts.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RuntimeAlloc {
    pub first: Option<(u64, u64)>,
    pub last: Option<(u64, u64)>,
}

impl RuntimeAlloc {
    fn add(&mut self, ktime: u64, total: u64) {
        self.first.get_or_insert((ktime, total));
        self.last = Some((ktime, total));
    }

    /// Bytes per second between the first and last reads, once they are
    /// about one flush period apart.
    pub fn bytes_per_s(&self) -> Option<f64> {
        let ((t0, a0), (t1, a1)) = (self.first?, self.last?);
        let dt = t1.checked_sub(t0)? as f64 / 1e9;
        (dt >= crate::intervals::FLUSH.as_secs_f64() * 0.95 && a1 >= a0).then(|| (a1 - a0) as f64 / dt)
    }

    pub fn bytes(&self) -> Option<u64> {
        let ((_, a0), (_, a1)) = (self.first?, self.last?);
        a1.checked_sub(a0)
    }
}

/// Windows during which the allocation probes were attached (sampled mode).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Bursts {
    /// Bursts ended.
    pub n: u64,
    /// Bursts begun (one may be open).
    pub begun: u64,
    /// Σ w_i, seconds.
    pub window_s: f64,
    sum_w2: f64,
}

impl Bursts {
    /// Variance (bytes²) of a stack's bytes as an estimate of what the whole
    /// observed time held: its rate is Σ bytes_i / Σ w_i over the bursts
    /// (ratio estimator, bursts as the sampling units). None with fewer
    /// than two bursts. Variances of stacks add up for a row or the total.
    pub fn bytes_var(&self, s: &StackStat) -> Option<f64> {
        if self.n < 2 || self.window_s <= 0.0 || s.bytes == 0 {
            return None;
        }
        let n = self.n as f64;
        let r = s.bytes as f64 / self.window_s;
        let ss = (s.burst_sq - 2.0 * r * s.burst_cross + r * r * self.sum_w2).max(0.0);
        Some(ss * n / (n - 1.0))
    }

    /// Relative half-width of a 95% confidence interval for a stack's rate.
    pub fn rel_ci95(&self, s: &StackStat) -> Option<f64> {
        self.bytes_var(s).map(|v| 1.96 * v.sqrt() / s.bytes as f64)
    }
}

/// Values in log-linear buckets (`gcprobe_common::size_bucket`, at most
/// 25% wide), each with its count and the largest value seen in it: a
/// percentile that does not hinge on one sample, in a few words of memory
/// per callsite.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Quantiles(std::collections::BTreeMap<u32, (u64, u64)>);

impl Quantiles {
    pub fn add(&mut self, v: u64) {
        let e = self.0.entry(gcprobe_common::size_bucket(v)).or_default();
        e.0 += 1;
        e.1 = e.1.max(v);
    }

    pub fn merge(&mut self, other: &Self) {
        for (&b, &(n, max)) in &other.0 {
            let e = self.0.entry(b).or_default();
            e.0 = e.0.saturating_add(n);
            e.1 = e.1.max(max);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.values().fold(0u64, |sum, e| sum.saturating_add(e.0))
    }

    /// A value at least the `q` share of the samples fit under: the largest
    /// seen in the bucket that holds the `q` quantile. Allocation sizes are
    /// size classes, so across runs of one workload it is the same value.
    pub fn quantile_max(&self, q: f64) -> Option<u64> {
        let total = self.count();
        let want = ((total as f64 * q).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0u64;
        for &(n, max) in self.0.values() {
            seen = seen.saturating_add(n);
            if seen >= want {
                return Some(max);
            }
        }
        None
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GrowStat {
    pub count: u64,
    /// Sum of the requested new lengths, for the typical final length.
    pub new_len_sum: u64,
    /// `*_type` of the element, as a target (runtime) address.
    pub elem_type: u64,
    /// Sum of elements copied by the growths.
    pub old_len_sum: u64,
    /// Growths from an empty slice (oldCap == 0): each starts one call of
    /// the appending code, so this counts calls even where it was inlined.
    pub calls: u64,
    /// Calls seen to their last growth, the sum of the lengths requested by
    /// those last growths (a lower bound of each final length) and of the
    /// bytes they allocated (capacity × element size: an upper bound).
    pub finished_calls: u64,
    pub final_len_sum: u64,
    pub final_alloc_sum: u64,
    /// The bytes each finished call's last growth allocated: its final
    /// capacity, for a percentile.
    pub final_allocs: Quantiles,
}

pub use super::pauses::{StwCause, StwSpan};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventCounts {
    pub mallocgc: u64,
    pub growslice: u64,
    pub gc_start: u64,
    /// GC cycles begun: sweep-termination stops seen.
    pub cycles: u64,
    pub stw: u64,
    pub assist: u64,
    /// Records the agent could not decode.
    pub undecodable: u64,
    /// Events from a PID other than the target (should be zero; filtered in-kernel).
    pub foreign: u64,
    /// Stack-table overflow (see MAX_STACKS).
    pub overflow: u64,
    /// Maps dropped from the map table when it was full, the quietest first (see MAX_MAPS).
    pub maps_evicted: u64,
    /// startTheWorld without a matching stopTheWorld (attach mid-pause).
    pub unpaired_stw: u64,
    pub map_grow: u64,
    pub map_insert: u64,
}

/// One map's history: seen inserted into or growing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapGrowth {
    pub growths: u64,
    /// Inserts seen (`runtime.mapassign*` hits; in bursts, in sampled mode).
    pub inserts: u64,
    /// Distinct GC cycles (counted by gcStart) during which it grew.
    pub cycles_growing: u64,
    last_cycle: Option<u64>,
    pub first_ktime: u64,
    pub last_ktime: u64,
    /// Where entries are inserted (return addresses): the caller of
    /// mapassign, the `m[k] = v` line, once an insert was seen; until then
    /// the path of its first observed growth.
    pub stack: Box<[u64]>,
    pub stack_from_insert: bool,
    /// Its type descriptor (runtime address), from an insert's first argument.
    pub maptype: Option<u64>,
    /// (ktime, len) read on the timer and at GCs.
    pub lens: Vec<(u64, u64)>,
    /// Reads that found no map there: the memory was unreadable, or its header no longer
    /// looks like a map's (tracee::gomaps), so the map was freed and the memory reused.
    pub len_unread: u64,
}

/// Assists kept one by one for timelines (the first so many; every one is counted).
const MAX_ASSIST_TIMES: usize = 65_536;

/// Maps followed per target. A program that makes maps by the million (one
/// per request) must not grow the table without end, nor fill it once and
/// then follow no new map: when it is full, the eighth quietest longest go,
/// counted, and a map seen again after that is followed anew. A leaking map
/// is the busiest kind there is, so it is never among them.
pub const MAX_MAPS: usize = 200_000;

/// Length samples kept per map: a sample a second covers a long session;
/// past this, every other sample is dropped (the series keeps its shape).
const MAX_LEN_SAMPLES: usize = 512;

/// Maps whose length is sampled at each GC: the most-grown ones.
const MAX_SAMPLED_MAPS: usize = 50;

/// GC settings kept: the first and up to this many changes in all (a
/// program flipping GOGC in a loop must not grow memory).
const MAX_SETTINGS_CHANGES: usize = 64;

/// Which of growslice's two calls to mallocgc made an allocation, told by
/// its type argument: nil for elements without pointers
/// (runtime/slice.go, Go 1.19 to 1.27).
#[derive(Clone, Copy)]
enum GrowthCall {
    NoPointers = 0,
    Pointers = 1,
}

impl GrowthCall {
    fn of(typ: u64) -> Self {
        if typ == 0 { GrowthCall::NoPointers } else { GrowthCall::Pointers }
    }
}

/// A growslice whose allocation has not arrived yet on its goroutine.
#[derive(Default, Clone)]
struct PendingAlloc {
    /// Whether a growth awaits its allocation: the entry stays, so its
    /// buffer is reused by the thread's next growth (no allocation per event).
    live: bool,
    /// (tid, stack hash) of its run of growths.
    run: (u32, u64),
    /// The allocation's stack: slot 0 for its caller inside growslice, then
    /// growslice's stack, caller first.
    stack: Vec<u64>,
}

#[derive(Clone)]
pub struct Aggregator {
    pid: u32,
    growslice_abi: GrowsliceAbi,
    stw_reason_arg: bool,
    stw_span_arg: bool,
    pause_end: PauseEnd,
    counts: EventCounts,
    alloc_bytes: u64,
    /// Allocation stacks without frame 0 (which allocator entry was hit does
    /// not matter to the callsite).
    alloc_stacks: FastMap<Box<[u64]>, StackStat>,
    grow_stacks: FastMap<Box<[u64]>, GrowStat>,
    /// Requested bytes per allocation, per allocator entry point (probe id).
    alloc_sizes: FastMap<u32, Histogram<u64>>,
    /// Requested new length (elements) per growslice call.
    grow_lens: Histogram<u64>,
    stw_open: Option<(u64, StwCause)>,
    /// With [`PauseEnd::Return`]: pauses whose restart has begun, by the
    /// thread running it, until the call returns on that thread
    /// (startTheWorldWithSema runs on its M's system stack, with the M
    /// held: runtime/proc.go).
    restarting: FastMap<u32, (u64, StwCause)>,
    stws: super::pauses::Pauses,
    stw_hist: Histogram<u64>,
    assists_by_tid: FastMap<u32, u64>,
    /// (tid, ktime) of each assist, for timelines; the first MAX_ASSIST_TIMES.
    assist_times: Vec<(u32, u64)>,
    first_ktime: Option<u64>,
    last_ktime: u64,
    /// Before Go 1.21 (no reason argument): threads inside gcStart, and
    /// whether a cycle's sweep termination awaits its mark termination.
    in_gc_start: FastSet<u32>,
    cycle_open: bool,
    /// Open append runs: (goroutine, stack hash) → the last growth.
    grow_runs: FastMap<(u32, u64), Growth>,
    /// Which argument holds the map, per map-growth probe id.
    map_args: FastMap<u32, usize>,
    /// Growing maps by address.
    maps: FastMap<u64, MapGrowth>,
    /// GC cycles begun in the window, oldest first (evenly thinned past MAX_CYCLES).
    cycles: CycleSeries,
    /// The GC settings as first read, and every change after that: (ktime, settings).
    settings: Vec<(u64, crate::tracee::gcctl::Settings)>,
    /// The runtime's allocation total, read with the settings.
    runtime_alloc: RuntimeAlloc,
    /// The runtime's GC CPU counters as first and last read.
    gc_cpu: Option<(crate::tracee::gcctl::GcCpu, crate::tracee::gcctl::GcCpu)>,
    /// Per goroutine, the run whose growslice awaits its mallocgc: growslice
    /// allocates `capmem` (capacity rounded to a size class) right after it
    /// is entered, on the same goroutine (runtime/slice.go).
    /// The growslice's stack comes along: the kernel does not walk the
    /// stack of the allocation inside growslice, which is the growslice's
    /// own with growslice's return address in front.
    pending_alloc: FastMap<u32, PendingAlloc>,
    /// The return address of each of growslice's calls to mallocgc, as
    /// the kernel last sent it.
    growth_callers: [Option<u64>; 2],
    /// Frames (caller first) of the kernel's aggregation keys, by stack id.
    agg_stacks: FastMap<u64, Box<[u64]>>,
    /// The kernel's running totals as last read, per key.
    agg_seen: FastMap<AggKey, AggValue>,
    /// `mProf_Malloc` samples by stack (sampled mode).
    sampled_stacks: FastMap<Box<[u64]>, Weighted>,
    /// Which argument of mProf_Malloc is the size.
    mprof_size_arg: usize,
    /// The target's `runtime.MemProfileRate` as last read; None when unreadable.
    pub(super) mem_profile_rate: Option<u64>,
    /// mProf samples that arrived while the rate was unknown, weighted as
    /// for the runtime's default rate.
    mprof_rate_assumed: u64,
    bursts: Bursts,
    /// Ring-buffer records and bytes read.
    pub(super) ring_records: u64,
    pub(super) ring_bytes: u64,
    /// Set by a recorder: new stacks and types are listed here as they come.
    pub(super) fresh: Option<Fresh>,
}

use crate::plan::DEFAULT_MEM_PROFILE_RATE;

/// pprof's weight for one sampled allocation of `size` bytes at `rate`:
/// the inverse of the probability that it was sampled
/// (go/src/internal/profile/legacy_profile.go scaleHeapSample; runtime/pprof).
pub fn pprof_weight(size: u64, rate: u64) -> f64 {
    if rate <= 1 || size == 0 {
        return 1.0;
    }
    1.0 / (1.0 - (-(size as f64) / rate as f64).exp())
}

/// Reading the aggregate: everything it holds, never a way to change it
/// (the feed is the one way in).
impl Aggregator {
    pub fn counts(&self) -> EventCounts {
        self.counts
    }

    pub fn alloc_bytes(&self) -> u64 {
        self.alloc_bytes
    }

    pub fn alloc_stacks(&self) -> &FastMap<Box<[u64]>, StackStat> {
        &self.alloc_stacks
    }

    pub fn grow_stacks(&self) -> &FastMap<Box<[u64]>, GrowStat> {
        &self.grow_stacks
    }

    pub fn alloc_sizes(&self) -> &FastMap<u32, Histogram<u64>> {
        &self.alloc_sizes
    }

    pub fn grow_lens(&self) -> &Histogram<u64> {
        &self.grow_lens
    }

    /// Every pause's totals, and the most recent one by one.
    pub fn pauses(&self) -> &super::pauses::Pauses {
        &self.stws
    }

    pub fn stw_hist(&self) -> &Histogram<u64> {
        &self.stw_hist
    }

    pub fn assists_by_tid(&self) -> &FastMap<u32, u64> {
        &self.assists_by_tid
    }

    pub fn assist_times(&self) -> &[(u32, u64)] {
        &self.assist_times
    }

    pub fn first_ktime(&self) -> Option<u64> {
        self.first_ktime
    }

    pub fn last_ktime(&self) -> u64 {
        self.last_ktime
    }

    pub fn maps(&self) -> &FastMap<u64, MapGrowth> {
        &self.maps
    }

    pub fn cycles(&self) -> &[Cycle] {
        self.cycles.as_slice()
    }

    /// One cycle in so many is in [`Self::cycles`] (1: every one).
    pub fn cycles_stride(&self) -> u64 {
        self.cycles.stride()
    }

    pub fn settings(&self) -> &[(u64, crate::tracee::gcctl::Settings)] {
        &self.settings
    }

    pub fn runtime_alloc(&self) -> RuntimeAlloc {
        self.runtime_alloc
    }

    pub fn sampled_stacks(&self) -> &FastMap<Box<[u64]>, Weighted> {
        &self.sampled_stacks
    }

    pub fn mem_profile_rate(&self) -> Option<u64> {
        self.mem_profile_rate
    }

    pub fn mprof_rate_assumed(&self) -> u64 {
        self.mprof_rate_assumed
    }

    pub fn bursts(&self) -> Bursts {
        self.bursts
    }

    pub fn ring_records(&self) -> u64 {
        self.ring_records
    }

    pub fn ring_bytes(&self) -> u64 {
        self.ring_bytes
    }
}

impl Aggregator {
    pub fn new(pid: u32, plan: &ProbePlan) -> Self {
        Self {
            pid,
            growslice_abi: plan.growslice_abi,
            stw_reason_arg: plan.stw_reason_arg,
            stw_span_arg: plan.stw_span_arg,
            pause_end: plan.pause_end,
            counts: EventCounts::default(),
            alloc_bytes: 0,
            alloc_stacks: FastMap::default(),
            grow_stacks: FastMap::default(),
            alloc_sizes: FastMap::default(),
            grow_lens: size_histogram(),
            stw_open: None,
            restarting: FastMap::default(),
            stws: Default::default(),
            // 1 ns .. 1000 s.
            stw_hist: Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("static bounds"),
            assists_by_tid: FastMap::default(),
            assist_times: Vec::new(),
            first_ktime: None,
            last_ktime: 0,
            in_gc_start: FastSet::default(),
            cycle_open: false,
            grow_runs: FastMap::default(),
            pending_alloc: FastMap::default(),
            growth_callers: [None; 2],
            map_args: plan.probes.iter().filter_map(|p| p.map_arg.map(|a| (p.id, a))).collect(),
            maps: FastMap::default(),
            cycles: CycleSeries::default(),
            settings: Vec::new(),
            runtime_alloc: RuntimeAlloc::default(),
            gc_cpu: None,
            agg_stacks: FastMap::default(),
            agg_seen: FastMap::default(),
            sampled_stacks: FastMap::default(),
            mprof_size_arg: plan.mprof_size_arg,
            mem_profile_rate: None,
            mprof_rate_assumed: 0,
            bursts: Bursts::default(),
            ring_records: 0,
            ring_bytes: 0,
            fresh: None,
        }
    }

    /// Folds the kernel's per-key running totals: only what grew since the
    /// last read is added. A key whose stack record has not been read yet is
    /// left for the next read (the ring is drained before the map is read,
    /// so this only happens when the record was lost). Returns the totals
    /// that changed something: folding just those again gives the same state.
    pub(super) fn add_kernel_totals(&mut self, totals: &[(AggKey, AggValue)]) -> Vec<(AggKey, AggValue)> {
        let mut applied = Vec::new();
        for &(key, total) in totals {
            let seen = self.agg_seen.get(&key).copied().unwrap_or_default();
            let (count, bytes) = (total.count.saturating_sub(seen.count), total.bytes.saturating_sub(seen.bytes));
            if count == 0 {
                continue;
            }
            let Some(stack) = self.agg_stacks.get(&key.stack_id) else { continue };
            applied.push((key, total));
            self.agg_seen.insert(key, total);
            self.counts.mallocgc = self.counts.mallocgc.saturating_add(count);
            self.alloc_bytes = self.alloc_bytes.saturating_add(bytes);
            // The bucket's mean stands for each allocation in it (buckets are at most 25% wide).
            let mean = bytes / count;
            if mean > 0 {
                let _ = self.alloc_sizes.entry(key.probe_id).or_insert_with(size_histogram).record_n(mean.min(1 << 36), count);
            }
            if let Some(s) = entry(&mut self.alloc_stacks, stack, &mut self.counts.overflow, self.fresh.as_mut().map(|f| &mut f.stacks)) {
                s.add(count, bytes);
            }
        }
        applied
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sampled mode's allocation pace: the runtime's own allocation rate
    /// (`totalAlloc`), when known and there are burst bytes to pace. While
    /// its allocation probes trap, a busy target allocates slower than
    /// unprobed: the bursts give each callsite's share, the runtime the pace.
    pub fn heap_pace(&self) -> Option<f64> {
        self.runtime_alloc.bytes_per_s().filter(|&r| r > 0.0 && self.alloc_bytes > 0)
    }

    /// What sampled-mode counts divide by to be rates: the unprobed time the
    /// bursts' bytes stand for at the runtime's pace, else `observed` (the
    /// bursts' own time).
    pub fn rate_time(&self, observed: f64) -> f64 {
        self.heap_pace().map_or(observed, |h| self.alloc_bytes as f64 / h)
    }

    /// GC's share of the target's CPU between the first and last cycle ends
    /// the reads saw (the counters move only as a cycle ends): what
    /// `MemStats.GCCPUFraction` reports, over this window.
    pub fn gc_cpu_share(&self) -> Option<f64> {
        let (a, b) = self.gc_cpu?;
        let total = b.total_ns.checked_sub(a.total_ns).filter(|&t| t > 0)?;
        Some(b.gc_ns.saturating_sub(a.gc_ns) as f64 / total as f64)
    }

    /// The GC controller's settings and allocation total, read at `ktime`.
    pub(super) fn gc_settings(&mut self, ktime: u64, s: crate::tracee::gcctl::Settings) {
        self.runtime_alloc.add(ktime, s.total_alloc);
        if let Some(c) = s.cpu {
            self.gc_cpu = Some((self.gc_cpu.map_or(c, |(first, _)| first), c));
        }
        let changed = self.settings.last().is_none_or(|(_, l)| (l.gc_percent, l.memory_limit, l.heap_minimum) != (s.gc_percent, s.memory_limit, s.heap_minimum));
        if changed && self.settings.len() < MAX_SETTINGS_CHANGES {
            self.settings.push((ktime, s));
        }
    }

    /// Opens a burst of the allocation probes (sampled mode).
    /// Zeroes every count and keeps what decodes what comes next: the
    /// kernel's stack table and its running totals as last read, a pause
    /// or an append run or a growth still open, the sample rate, the GC
    /// settings in force. The books from here on read as a session that
    /// began now (see ingest::history).
    pub(super) fn restart(&mut self) {
        self.counts = EventCounts::default();
        self.alloc_bytes = 0;
        self.alloc_stacks.clear();
        self.grow_stacks.clear();
        self.alloc_sizes.clear();
        self.grow_lens.reset();
        self.stws = Default::default();
        self.stw_hist.reset();
        self.assists_by_tid.clear();
        self.assist_times.clear();
        self.first_ktime = None;
        self.maps.clear();
        self.cycles.clear();
        if let Some(&last) = self.settings.last() {
            self.settings = vec![last];
        }
        self.runtime_alloc.first = self.runtime_alloc.last;
        self.gc_cpu = self.gc_cpu.map(|(_, last)| (last, last));
        self.sampled_stacks.clear();
        self.mprof_rate_assumed = 0;
        self.bursts = Bursts::default();
        self.ring_records = 0;
        self.ring_bytes = 0;
        self.fresh = None;
    }

    /// The kernel's stack table and its running totals as last read, in a
    /// stable order: what a recording that continues this session starts from.
    pub(super) fn decode_state(&self) -> (Vec<(u64, Box<[u64]>)>, Vec<(AggKey, AggValue)>, [Option<u64>; 2]) {
        let mut stacks: Vec<(u64, Box<[u64]>)> = self.agg_stacks.iter().map(|(k, v)| (*k, v.clone())).collect();
        stacks.sort_unstable_by_key(|s| s.0);
        let mut seen: Vec<(AggKey, AggValue)> = self.agg_seen.iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable_by_key(|(k, _)| (k.stack_id, k.probe_id, k.size_bucket));
        (stacks, seen, self.growth_callers)
    }

    /// growslice's calls to mallocgc, as learned before.
    pub(super) fn set_growth_callers(&mut self, pcs: [Option<u64>; 2]) {
        for (have, pc) in self.growth_callers.iter_mut().zip(pcs) {
            if have.is_none() {
                *have = pc;
            }
        }
    }

    pub(super) fn define_agg_stacks(&mut self, stacks: &[(u64, Box<[u64]>)]) {
        for (id, frames) in stacks {
            self.agg_stacks.entry(*id).or_insert_with(|| frames.clone());
        }
    }

    /// Running totals read before: later ones count from these.
    pub(super) fn set_agg_seen(&mut self, seen: &[(AggKey, AggValue)]) {
        for &(k, v) in seen {
            self.agg_seen.insert(k, v);
        }
    }

    /// Lists every stack and type known as new, for a recorder that starts
    /// now to name them all (see `Fresh`).
    pub(super) fn list_all_fresh(&mut self) {
        let mut f = Fresh::default();
        f.stacks.extend(self.alloc_stacks.keys().chain(self.sampled_stacks.keys()).cloned());
        f.grow_stacks.extend(self.grow_stacks.keys().cloned());
        f.types.extend(self.grow_stacks.values().map(|g| g.elem_type).filter(|&t| t != 0));
        f.map_types.extend(self.maps.values().filter_map(|m| m.maptype));
        self.fresh = Some(f);
    }

    pub(super) fn begin_burst(&mut self) {
        self.bursts.begun += 1;
        for s in self.alloc_stacks.values_mut() {
            s.cur_burst = 0;
        }
    }

    /// Closes the burst that lasted `window_s`, after its last events and
    /// kernel totals were folded in.
    pub(super) fn end_burst(&mut self, window_s: f64) {
        self.bursts.n += 1;
        self.bursts.window_s += window_s;
        self.bursts.sum_w2 += window_s * window_s;
        for s in self.alloc_stacks.values_mut() {
            if s.cur_burst > 0 {
                let c = s.cur_burst as f64;
                s.burst_sq += c * c;
                s.burst_cross += c * window_s;
                s.cur_burst = 0;
            }
        }
    }

    pub(super) fn add_undecodable(&mut self) {
        self.counts.undecodable += 1;
    }

    fn add_alloc(&mut self, ev: &Event) {
        self.counts.mallocgc += 1;
        let size = ev.args[0];
        self.alloc_bytes = self.alloc_bytes.saturating_add(size);
        if size > 0 {
            self.alloc_sizes.entry(ev.probe_id).or_insert_with(size_histogram).saturating_record(size);
        }
        // The allocation growslice makes comes right after its growth from
        // the same goroutine, unwalked (its probed PC and caller inside
        // growslice): the growth's stack is its. Where its growth waited on
        // another CPU (the thread moved between the two), the kernel walked
        // it instead: its own frames are that stack.
        let call = GrowthCall::of(ev.args[1]);
        match (ev.frames(), ev.in_growth) {
            ([_, caller], in_growth) => {
                if self.join_growth(ev.thread, Some(*caller), size) {
                    if in_growth {
                        self.growth_callers[call as usize] = Some(*caller);
                    }
                    return;
                }
            }
            // The kernel sent this call's caller before on this CPU, and
            // not again (gcprobe_common::CallersRead).
            ([_], true) => {
                if self.join_growth(ev.thread, self.growth_callers[call as usize], size) {
                    return;
                }
            }
            _ => {}
        }
        if let Some(p) = self.pending_alloc.get_mut(&ev.thread) {
            // Not a growth's: the goroutine's growth allocated nothing
            // (zero-size elements), so none follows.
            p.live = false;
        }
        let key = ev.frames().get(1..).unwrap_or(&[]);
        if let Some(s) = entry(&mut self.alloc_stacks, key, &mut self.counts.overflow, self.fresh.as_mut().map(|f| &mut f.stacks)) {
            s.add(1, size);
        }
    }

    /// Gives the goroutine's waiting growth its allocation: the growth's
    /// stack behind `caller` (inside growslice; without it when unknown)
    /// and the run's last size. False when no growth of the goroutine waits.
    fn join_growth(&mut self, thread: u32, caller: Option<u64>, size: u64) -> bool {
        let Some(p) = self.pending_alloc.get_mut(&thread).filter(|p| p.live) else { return false };
        p.live = false;
        let stack = match caller {
            Some(c) => {
                p.stack[0] = c;
                &p.stack[..]
            }
            None => &p.stack[1..],
        };
        let run = p.run;
        if let Some(s) = entry(&mut self.alloc_stacks, stack, &mut self.counts.overflow, self.fresh.as_mut().map(|f| &mut f.stacks)) {
            s.add(1, size);
        }
        if let Some(g) = self.grow_runs.get_mut(&run) {
            g.alloc = size;
        }
        true
    }

    fn add_growth(&mut self, ev: &Event) {
        self.counts.growslice += 1;
        let a = self.growslice_abi.decode(&ev.args);
        if a.new_len > 0 {
            self.grow_lens.saturating_record(a.new_len);
        }
        let key = ev.frames().get(1..).unwrap_or(&[]);
        // A growth sent alone may come after later growths of its goroutine
        // (it waited on a CPU its thread left): it counts, but does not end
        // or extend a run, and no allocation follows it. Nor does one
        // follow a growth into the caller's stack buffer (growsliceBuf).
        let finished = if ev.alone || ev.in_buffer { None } else { self.open_growth(ev.thread, key, a.new_len, a.old_cap) };
        let Some(s) = entry(&mut self.grow_stacks, key, &mut self.counts.overflow, self.fresh.as_mut().map(|f| &mut f.grow_stacks)) else { return };
        s.count += 1;
        // Sums of what a record says saturate: a hostile recording must not wrap or panic them.
        s.new_len_sum = s.new_len_sum.saturating_add(a.new_len);
        if s.elem_type != a.elem_type {
            if let Some(f) = &mut self.fresh {
                f.types.push(a.elem_type);
            }
        }
        s.elem_type = a.elem_type;
        s.old_len_sum = s.old_len_sum.saturating_add(a.old_len);
        if a.old_cap == 0 {
            s.calls += 1;
        }
        if let Some(last) = finished.filter(|g| g.alloc > 0) {
            s.finished_calls += 1;
            s.final_len_sum = s.final_len_sum.saturating_add(last.new_len);
            s.final_allocs.add(last.alloc);
            s.final_alloc_sum = s.final_alloc_sum.saturating_add(last.alloc);
        }
    }

    /// A growth of `key`'s run on a goroutine, which waits for its
    /// allocation; returns the run's previous last growth when this one
    /// starts a new call (an empty slice grows), ending that call.
    fn open_growth(&mut self, thread: u32, key: &[u64], new_len: u64, old_cap: u64) -> Option<Growth> {
        let run = (thread, stack_hash(key));
        let previous = self.grow_runs.insert(run, Growth { new_len, alloc: 0 });
        let p = self.pending_alloc.entry(thread).or_default();
        p.live = true;
        p.run = run;
        p.stack.clear();
        p.stack.push(0);
        p.stack.extend_from_slice(key);
        if old_cap == 0 { previous } else { None }
    }

    pub(super) fn add(&mut self, ev: &Event) {
        if ev.tgid != self.pid {
            self.counts.foreign += 1;
            return;
        }
        if let Some(id) = ev.defines_stack {
            self.agg_stacks.entry(id).or_insert_with(|| ev.frames().get(1..).unwrap_or(&[]).into());
            return;
        }
        // Allocations and growths carry no time (gcprobe_common::is_timed).
        if ev.ktime_ns != 0 {
            self.first_ktime.get_or_insert(ev.ktime_ns);
            self.last_ktime = self.last_ktime.max(ev.ktime_ns);
        }
        match ev.kind {
            ProbeKind::MProf => {
                let size = ev.args[self.mprof_size_arg.min(MAX_ARGS - 1)];
                let rate = match self.mem_profile_rate {
                    Some(r) if r > 0 => r,
                    _ => {
                        self.mprof_rate_assumed += 1;
                        DEFAULT_MEM_PROFILE_RATE
                    }
                };
                let w = pprof_weight(size, rate);
                let key = ev.frames().get(1..).unwrap_or(&[]);
                if let Some(s) = entry(&mut self.sampled_stacks, key, &mut self.counts.overflow, self.fresh.as_mut().map(|f| &mut f.stacks)) {
                    s.samples += 1;
                    s.count += w;
                    s.bytes += w * size as f64;
                }
            }
            ProbeKind::Malloc => self.add_alloc(ev),
            ProbeKind::Growslice => self.add_growth(ev),
            ProbeKind::GcStart => {
                self.counts.gc_start += 1;
                self.in_gc_start.insert(ev.thread);
            }
            ProbeKind::StwStop => {
                let cause = if self.stw_reason_arg {
                    StwCause::Code(ev.args[0] as u8)
                } else {
                    self.infer_cause(ev)
                };
                self.cycle_mark(cause, ev);
                self.stw_open = Some((ev.ktime_ns, cause));
            }
            ProbeKind::StwStart if self.stw_span_arg => {
                // startTheWorldWithSema(now int64, w worldStop): w.reason,
                // then w.startedStopping, a nanotime() (CLOCK_MONOTONIC, the
                // kernel's clock too); `now` is the end when the caller had
                // it, else the function reads the clock after restarting
                // the Ps (runtime/proc.go, Go 1.22+).
                let cause = StwCause::Code(ev.args[1] as u8);
                let start = ev.args[2];
                let end = if ev.args[0] != 0 { ev.args[0] } else { ev.ktime_ns };
                if start == 0 || start > end {
                    self.counts.unpaired_stw += 1;
                    return;
                }
                self.cycle_mark(cause, ev);
                self.heap_at_pause_end(cause, ev);
                self.end_or_hold(start, end, cause, ev);
            }
            ProbeKind::StwStart => match self.stw_open.take() {
                Some((start, cause)) if ev.ktime_ns >= start => {
                    self.heap_at_pause_end(cause, ev);
                    self.end_or_hold(start, ev.ktime_ns, cause, ev);
                }
                _ => self.counts.unpaired_stw += 1,
            },
            // Pauses end at the entry (a return site did not attach): the
            // sites that did say nothing more.
            ProbeKind::StwResumed if self.pause_end == PauseEnd::Entry => {}
            ProbeKind::StwResumed => {
                // Go 1.22+: the entry held the pause for its return on this
                // thread. Before, no entry probe: the stop opened it, and
                // the heap is read here.
                let open = if self.stw_span_arg {
                    self.restarting.remove(&ev.thread)
                } else {
                    let open = self.stw_open.take().filter(|&(start, _)| ev.ktime_ns >= start);
                    if let Some((_, cause)) = open {
                        self.heap_at_pause_end(cause, ev);
                    }
                    open
                };
                let Some((start, cause)) = open else {
                    self.counts.unpaired_stw += 1;
                    return;
                };
                // The call's result: the `now` Go ended the pause at, read
                // before returning (never later than this probe's clock).
                let now = ev.args[0];
                self.record_stw(start, if (start..=ev.ktime_ns).contains(&now) { now } else { ev.ktime_ns }, cause);
            }
            ProbeKind::MapGrow => {
                self.counts.map_grow += 1;
                let cycle = self.counts.cycles;
                let Some(m) = self.map_of(ev) else { return };
                m.growths += 1;
                if m.last_cycle != Some(cycle) {
                    m.cycles_growing += 1;
                    m.last_cycle = Some(cycle);
                }
            }
            ProbeKind::MapInsert => {
                self.counts.map_insert += 1;
                let Some(m) = self.map_of(ev) else { return };
                m.inserts += 1;
                let new_type = m.maptype.is_none().then_some(ev.args[0]);
                m.maptype.get_or_insert(ev.args[0]);
                let restack = (!m.stack_from_insert).then(|| {
                    m.stack = ev.frames().get(1..2).unwrap_or(&[]).into();
                    m.stack_from_insert = true;
                    m.stack.clone()
                });
                if let Some(f) = &mut self.fresh {
                    f.stacks.extend(restack);
                    f.map_types.extend(new_type);
                }
            }
            ProbeKind::Assist => {
                self.counts.assist += 1;
                *self.assists_by_tid.entry(ev.thread).or_default() += 1;
                if self.assist_times.len() < MAX_ASSIST_TIMES {
                    self.assist_times.push((ev.thread, ev.ktime_ns));
                }
            }
        }
    }
}

impl Aggregator {
    /// A cycle starts by stopping the world for sweep termination
    /// (runtime/mgc.go gcStart); the kernel read the heap and its goal at
    /// that probe.
    fn cycle_mark(&mut self, cause: StwCause, ev: &Event) {
        if cause == StwCause::Code(STW_SWEEP_TERM) {
            self.counts.cycles += 1;
            self.cycles.begin(ev.ktime_ns, ev.heap_live, ev.heap_goal);
        }
    }

    /// Mark termination resets heapLive to the bytes marked before the world
    /// restarts (runtime/mgc.go gcMark, resetLive), and commits the next
    /// goal: at its end the heap read is the cycle's live heap.
    fn heap_at_pause_end(&mut self, cause: StwCause, ev: &Event) {
        if cause == StwCause::Code(STW_MARK_TERM) {
            self.cycles.end(ev.ktime_ns, ev.heap_live);
        }
    }

    /// A pause whose restart has begun: ended here at `entry_end` when
    /// pauses end at the entry, else held for its return on this thread.
    fn end_or_hold(&mut self, start: u64, entry_end: u64, cause: StwCause, ev: &Event) {
        match self.pause_end {
            PauseEnd::Entry => self.record_stw(start, entry_end, cause),
            PauseEnd::Return => {
                if self.restarting.insert(ev.thread, (start, cause)).is_some() {
                    // The last restart on this thread never returned here.
                    self.counts.unpaired_stw += 1;
                }
            }
        }
    }

    fn record_stw(&mut self, start: u64, end: u64, cause: StwCause) {
        let duration_ns = end - start;
        self.counts.stw += 1;
        self.stw_hist.saturating_record(duration_ns.max(1));
        self.stws.push(StwSpan { start_ktime: start, duration_ns, cause });
    }

    /// Go 1.19/1.20 call `systemstack(stopTheWorldWithSema)` with no reason,
    /// and the direct caller is just `systemstack` (go1.19 runtime/mgc.go). The
    /// GC's shape names it instead: gcStart stops the world on its own thread
    /// (sweep termination), and the cycle's next stop is mark termination.
    fn infer_cause(&mut self, ev: &Event) -> StwCause {
        if self.in_gc_start.remove(&ev.thread) {
            // Other gcStart callers that lost the race return without stopping.
            self.in_gc_start.clear();
            self.cycle_open = true;
            StwCause::Code(STW_SWEEP_TERM)
        } else if self.cycle_open {
            self.cycle_open = false;
            StwCause::Code(STW_MARK_TERM)
        } else {
            let caller = ev.frames().get(1).copied().unwrap_or(0);
            if let Some(f) = &mut self.fresh {
                f.stacks.push(Box::new([caller]));
            }
            StwCause::Caller(caller)
        }
    }
}

const STW_MARK_TERM: u8 = StwReason::GcMarkTerm.code();
const STW_SWEEP_TERM: u8 = StwReason::GcSweepTerm.code();

#[derive(Debug, Clone, Copy)]
struct Growth {
    new_len: u64,
    alloc: u64,
}

/// Names a run's stack in memory only (never stored): Fx, not SipHash,
/// whose cost showed in the agent's profile at one call per growth.
fn stack_hash(stack: &[u64]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    stack.hash(&mut h);
    h.finish()
}

/// 1 .. 64 Gi, 3 significant digits.
fn size_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 36, 3).expect("static bounds")
}

impl Aggregator {
    /// The map an insert or growth event names, created on first sight.
    fn map_of(&mut self, ev: &Event) -> Option<&mut MapGrowth> {
        let &arg = self.map_args.get(&ev.probe_id)?;
        let map = ev.args[arg.min(MAX_ARGS - 1)];
        if !self.maps.contains_key(&map) && self.maps.len() >= MAX_MAPS {
            self.evict_quiet_maps();
        }
        let fresh = &mut self.fresh;
        let m = self.maps.entry(map).or_insert_with(|| {
            let stack: Box<[u64]> = ev.frames().get(1..).unwrap_or(&[]).into();
            if let Some(f) = fresh {
                f.stacks.push(stack.clone());
            }
            MapGrowth { first_ktime: ev.ktime_ns, stack, ..MapGrowth::default() }
        });
        m.last_ktime = ev.ktime_ns;
        Some(m)
    }

    /// Drops the eighth of the map table that has been quiet longest (a batch,
    /// so a full table costs one sort per MAX_MAPS / 8 new maps, not per map).
    fn evict_quiet_maps(&mut self) {
        let mut last: Vec<u64> = self.maps.values().map(|m| m.last_ktime).collect();
        let cut = last.len() / 8;
        let (_, &mut before, _) = last.select_nth_unstable(cut);
        let was = self.maps.len();
        self.maps.retain(|_, m| m.last_ktime > before);
        self.counts.maps_evicted += (was - self.maps.len()) as u64;
    }

    /// Records the length of the busiest maps (most inserts and growths)
    /// at `ktime`. `len_at` reads a map's first word — its length in both
    /// map implementations (hmap.count, swiss Map.used: "must be first",
    /// for len()).
    pub(super) fn sample_map_lens(&mut self, ktime: u64, mut len_at: impl FnMut(u64) -> Option<u64>) {
        let mut busiest: Vec<(u64, u64)> = self.maps.iter().map(|(a, m)| (m.growths + m.inserts, *a)).collect();
        busiest.sort_unstable_by(|a, b| b.cmp(a));
        for (_, addr) in busiest.into_iter().take(MAX_SAMPLED_MAPS) {
            let m = self.maps.get_mut(&addr).expect("listed above");
            if m.lens.last().is_some_and(|&(t, _)| t >= ktime) {
                continue;
            }
            let Some(len) = len_at(addr) else {
                m.len_unread += 1;
                continue;
            };
            if m.lens.len() >= MAX_LEN_SAMPLES {
                super::cycles::keep_every_other(&mut m.lens);
            }
            m.lens.push((ktime, len));
        }
    }
}

/// The stats of `key`, inserted if new (and then listed in `fresh`), or
/// None past MAX_STACKS.
fn entry<'a, V: Default>(map: &'a mut FastMap<Box<[u64]>, V>, key: &[u64], overflow: &mut u64, fresh: Option<&mut Vec<Box<[u64]>>>) -> Option<&'a mut V> {
    if !map.contains_key(key) {
        if map.len() >= MAX_STACKS {
            *overflow += 1;
            return None;
        }
        map.insert(key.into(), V::default());
        if let Some(f) = fresh {
            f.push(key.into());
        }
    }
    map.get_mut(key)
}

/// What entered the aggregator since the recorder last looked: stacks to
/// symbolize, growslice stacks to find loops for, element types to name.
#[derive(Debug, Default, Clone)]
pub struct Fresh {
    pub stacks: Vec<Box<[u64]>>,
    pub grow_stacks: Vec<Box<[u64]>>,
    pub types: Vec<u64>,
    /// Map type descriptors (runtime addresses) first seen in an insert.
    pub map_types: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tracee::buildinfo::GoVersion, ingest::events};
    use gcprobe_common::kind;

    fn plan(go: GoVersion) -> ProbePlan {
        ProbePlan::for_test(go)
    }

    fn ev(k: u32, t: u64, args: [u64; 5], frames: &[u64]) -> Event {
        Event::decode(&events::encode(k, 0, t, args, frames)).unwrap()
    }

    /// A pause at which the kernel read the heap (args[4]) and the goal (args[3]).
    fn pause(k: u32, t: u64, args: [u64; 5]) -> Event {
        let flags = gcprobe_common::event_flag::HEAP_LIVE | gcprobe_common::event_flag::HEAP_GOAL;
        Event::decode(&events::encode_full(k, 0, t, args, &[1, 2], 0, flags)).unwrap()
    }

    #[test]
    fn folds_allocations_by_stack() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        a.add(&ev(kind::MALLOC, 1, [64, 0, 1, 0, 0], &[0xa0, 0x100, 0x200]));
        // Same callers, different allocator entry: same stack.
        a.add(&ev(kind::MALLOC, 2, [32, 0, 1, 0, 0], &[0xb0, 0x100, 0x200]));
        a.add(&ev(kind::MALLOC, 3, [16, 0, 1, 0, 0], &[0xa0, 0x300]));
        assert_eq!(a.counts.mallocgc, 3);
        assert_eq!(a.alloc_bytes, 112);
        let s = a.alloc_stacks[&[0x100u64, 0x200][..]];
        assert_eq!((s.count, s.bytes), (2, 96));
        assert_eq!(a.alloc_sizes[&0].len(), 3);
        assert_eq!(a.alloc_sizes[&0].max(), 64);
    }

    #[test]
    fn the_allocation_inside_growslice_takes_growslices_stack() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 22, 0)));
        // The kernel walks growslice's stack, not the allocation's inside it.
        a.add(&ev(kind::GROWSLICE, 1, [0, 9, 8, 1, 0xe7], &[0xc0, 0x100, 0x200]));
        a.add(&ev(kind::MALLOC, 2, [144, 0, 0, 0, 0], &[0xa0, 0xc8]));
        let s = a.alloc_stacks[&[0xc8u64, 0x100, 0x200][..]];
        assert_eq!((s.count, s.bytes), (1, 144));
        assert_eq!(a.grow_runs.values().next().map(|g| g.alloc), Some(144));
        // Without a growslice before it on the thread, a short stack stays as sent.
        a.add(&ev(kind::MALLOC, 3, [16, 0, 0, 0, 0], &[0xa0, 0xd0]));
        assert_eq!(a.alloc_stacks[&[0xd0u64][..]].count, 1);
        // A growth of zero-size elements allocates nothing: the goroutine's
        // next allocation (walked, elsewhere) is not its, nor a later one.
        a.add(&ev(kind::GROWSLICE, 4, [0, 9, 8, 1, 0xe7], &[0xc0, 0x100, 0x200]));
        a.add(&ev(kind::MALLOC, 5, [32, 0, 0, 0, 0], &[0xa0, 0x300, 0x400]));
        a.add(&ev(kind::MALLOC, 6, [48, 0, 0, 0, 0], &[0xa0, 0xc8]));
        assert_eq!(a.alloc_stacks[&[0x300u64, 0x400][..]].bytes, 32);
        assert_eq!(a.alloc_stacks[&[0xc8u64][..]].bytes, 48);
        assert_eq!(a.grow_runs.values().next().map(|g| g.alloc), Some(0));
    }

    #[test]
    fn an_allocation_sent_without_its_caller_takes_the_one_sent_before() {
        use gcprobe_common::event_flag::IN_GROWTH;
        let flagged = |k, args, frames: &[u64], flags| Event::decode(&events::encode_full(k, 0, 0, args, frames, 0, flags)).unwrap();
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 22, 0)));
        let grow = |a: &mut Aggregator| a.add(&flagged(kind::GROWSLICE, [0, 1, 0, 1, 0xe7], &[0xc0, 0x100], 0));
        // Before any caller was sent: the growth's stack without growslice's frame.
        grow(&mut a);
        a.add(&flagged(kind::MALLOC, [16, 0, 0, 0, 0], &[0xa0], IN_GROWTH));
        assert_eq!(a.alloc_stacks[&[0x100u64][..]].bytes, 16);
        // The call for element types without pointers (typ nil) is sent once...
        grow(&mut a);
        a.add(&flagged(kind::MALLOC, [32, 0, 0, 0, 0], &[0xa0, 0xc8], IN_GROWTH));
        grow(&mut a);
        a.add(&flagged(kind::MALLOC, [64, 0, 0, 0, 0], &[0xa0], IN_GROWTH));
        assert_eq!(a.alloc_stacks[&[0xc8u64, 0x100][..]].bytes, 96);
        // ...and is not the other call's.
        grow(&mut a);
        a.add(&flagged(kind::MALLOC, [48, 0xe7, 1, 0, 0], &[0xa0], IN_GROWTH));
        assert_eq!(a.alloc_stacks[&[0x100u64][..]].bytes, 64);
    }

    #[test]
    fn a_growth_into_the_stack_buffer_counts_and_waits_for_no_allocation() {
        use gcprobe_common::event_flag::IN_BUFFER;
        let flagged = |k, args, frames: &[u64], flags| Event::decode(&events::encode_full(k, 0, 0, args, frames, 0, flags)).unwrap();
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 27, 3)));
        // growsliceBuf's growth to length 3 within its 4-element buffer: no mallocgc follows.
        a.add(&flagged(kind::GROWSLICE, [0xc000_0800, 3, 2, 1, 0xe7], &[0xc0, 0x100, 0x200], IN_BUFFER));
        // The goroutine's next short-stacked allocation is not that growth's.
        a.add(&flagged(kind::MALLOC, [48, 0, 0, 0, 0], &[0xa0, 0xc8], 0));
        assert_eq!((a.counts.growslice, a.grow_stacks[&[0x100u64, 0x200][..]].count), (1, 1));
        assert_eq!(a.alloc_stacks.keys().map(|k| &k[..]).collect::<Vec<&[u64]>>(), [&[0xc8u64][..]]);
        assert!(a.grow_runs.is_empty());
    }

    #[test]
    fn a_growth_sent_alone_counts_but_leaves_runs_alone() {
        use gcprobe_common::event_flag::{ALONE, IN_GROWTH};
        let flagged = |k, args, frames: &[u64], flags| Event::decode(&events::encode_full(k, 0, 0, args, frames, 0, flags)).unwrap();
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 22, 0)));
        // One call: lengths 1, 2; its allocations follow their growths.
        a.add(&flagged(kind::GROWSLICE, [0, 1, 0, 1, 0xe7], &[0xc0, 0x100], 0));
        a.add(&flagged(kind::MALLOC, [16, 0, 0, 0, 0], &[0xa0, 0xc8], IN_GROWTH));
        // The thread moved CPUs between growslice and mallocgc: the kernel
        // walked the allocation (its frames are the growth's stack), and
        // the growth comes later, alone, from the CPU it waited on.
        a.add(&flagged(kind::MALLOC, [32, 0, 0, 0, 0], &[0xa0, 0xc8, 0x100], IN_GROWTH));
        a.add(&flagged(kind::GROWSLICE, [0, 3, 1, 1, 0xe7], &[0xc0, 0x100], 0));
        a.add(&flagged(kind::MALLOC, [64, 0, 0, 0, 0], &[0xa0, 0xc8], IN_GROWTH));
        a.add(&flagged(kind::GROWSLICE, [0, 2, 1, 1, 0xe7], &[0xc0, 0x100], ALONE));
        // A second call starts and ends the first: its last growth is the
        // one that came in order (length 3, 64 bytes), not the late one.
        a.add(&flagged(kind::GROWSLICE, [0, 1, 0, 1, 0xe7], &[0xc0, 0x100], 0));
        let s = a.alloc_stacks[&[0xc8u64, 0x100][..]];
        assert_eq!((s.count, s.bytes), (3, 112));
        let g = &a.grow_stacks[&[0x100u64][..]];
        assert_eq!((g.count, g.calls, g.finished_calls, g.final_len_sum, g.final_alloc_sum), (4, 2, 1, 3, 64));
    }

    #[test]
    fn decodes_growslice_per_version() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 22, 0)));
        // Go 1.20+: oldPtr, newLen, oldCap, num, et
        a.add(&ev(kind::GROWSLICE, 1, [0, 9, 8, 1, 0xe7], &[0xc0, 0x100]));
        let g = &a.grow_stacks[&[0x100u64][..]];
        assert_eq!((g.count, g.new_len_sum, g.elem_type), (1, 9, 0xe7));

        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 19, 8)));
        // Go 1.19: et, old.ptr, old.len, old.cap, cap
        a.add(&ev(kind::GROWSLICE, 1, [0xe7, 0, 8, 8, 9], &[0xc0, 0x100]));
        let g = &a.grow_stacks[&[0x100u64][..]];
        assert_eq!((g.count, g.new_len_sum, g.elem_type), (1, 9, 0xe7));
    }

    #[test]
    fn counts_calls_and_final_lengths_of_append_runs() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 22, 0)));
        // Two calls on one thread: lengths 1,2,3,5 then 1,2 (then a third
        // starts); each growth is followed by its allocation (cap × 16 bytes), sent unwalked.
        for (new_len, old_cap, cap) in [(1, 0, 1), (2, 1, 2), (3, 2, 4), (5, 4, 8), (1, 0, 1), (2, 1, 2), (1, 0, 1)] {
            a.add(&ev(kind::GROWSLICE, 1, [0, new_len, old_cap, 1, 0xe7], &[0xc0, 0x100]));
            a.add(&ev(kind::MALLOC, 1, [cap * 16, 0xe7, 1, 0, 0], &[0xa0, 0xc8]));
        }
        let g = &a.grow_stacks[&[0x100u64][..]];
        assert_eq!((g.count, g.calls, g.finished_calls, g.final_len_sum), (7, 3, 2, 7));
        assert_eq!((g.final_allocs.count(), g.final_allocs.quantile_max(0.9)), (2, Some(128)));
        assert_eq!(g.final_alloc_sum, 8 * 16 + 2 * 16);
        // Elements copied: 0, 1, 2, 4, then 0, 1, then 0.
        assert_eq!(g.old_len_sum, 8);
    }

    #[test]
    fn percentiles_take_the_largest_value_of_their_bucket() {
        let mut h = Quantiles::default();
        assert_eq!(h.quantile_max(0.9), None);
        // Size classes of a []string's final growth: 24 KiB in most calls, 40 KiB in some.
        for v in [24576; 85].into_iter().chain([40960; 15]) {
            h.add(v);
        }
        assert_eq!(h.quantile_max(0.9), Some(40960));
        assert_eq!(h.quantile_max(0.5), Some(24576));
        // Another run of the same workload, other counts: the same size.
        let mut other = Quantiles::default();
        for v in [24576; 70].into_iter().chain([40960; 20]) {
            other.add(v);
        }
        assert_eq!(other.quantile_max(0.9), Some(40960));
        h.merge(&other);
        assert_eq!((h.count(), h.quantile_max(0.75)), (190, Some(24576)));
    }

    #[test]
    fn tracks_growing_maps_across_gc_cycles() {
        let mut p = plan(GoVersion::new(1, 21, 0));
        p.probes.push(crate::plan::PlannedProbe {
            id: 0, name: "hashGrow".into(), symbol: "runtime.hashGrow".into(), kind: ProbeKind::MapGrow,
            vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg: Some(1),
        });
        let mut a = Aggregator::new(42, &p);
        for cycle in 0..4u64 {
            a.add(&pause(kind::STW_STOP, cycle * 100, [2, 0, 0, 4000, 1000 + cycle]));
            a.add(&ev(kind::STW_START, cycle * 100 + 1, [0; 5], &[1, 2]));
            // Mark termination: not a new cycle, and its heap is not the trigger's.
            a.add(&pause(kind::STW_STOP, cycle * 100 + 50, [1, 0, 0, 0, 5]));
            a.add(&pause(kind::STW_START, cycle * 100 + 51, [0, 0, 0, 4100, 600 + cycle]));
            a.add(&ev(kind::MAP_GROW, cycle * 100 + 1, [0xa, 0xbeef, 0, 0, 0], &[1, 0x500]));
            a.add(&ev(kind::MAP_GROW, cycle * 100 + 2, [0xa, 0xbeef, 0, 0, 0], &[1, 0x500]));
        }
        a.add(&ev(kind::MAP_GROW, 999, [0xa, 0xf00d, 0, 0, 0], &[1, 0x600]));
        let m = &a.maps[&0xbeef];
        assert_eq!((m.growths, m.cycles_growing), (8, 4));
        assert_eq!(&*m.stack, &[0x500]);
        assert_eq!(a.maps[&0xf00d].cycles_growing, 1);
        let starts: Vec<_> = a.cycles().iter().map(|c| (c.start_ktime, c.heap_at_start, c.goal, c.marked)).collect();
        assert_eq!(starts, [0, 1, 2, 3].map(|c| (c * 100, Some(1000 + c), Some(4000), Some(600 + c))));
        assert_eq!(a.counts.cycles, 4);
        a.sample_map_lens(1000, |addr| (addr == 0xbeef).then_some(77));
        a.sample_map_lens(1000, |_| Some(99)); // same time: not read again
        a.sample_map_lens(2000, |_| Some(99));
        assert_eq!(a.maps[&0xbeef].lens, vec![(1000, 77), (2000, 99)]);
        assert_eq!(a.maps[&0xf00d].lens, vec![(1000, 99), (2000, 99)]);
        assert_eq!((a.maps[&0xbeef].len_unread, a.maps[&0xf00d].len_unread), (0, 1), "a read that found no map is counted");
    }

    #[test]
    fn inserts_name_the_map_its_type_and_filling_line() {
        let mut p = plan(GoVersion::new(1, 24, 0));
        for (id, kind, arg) in [(0, ProbeKind::MapGrow, 0), (1, ProbeKind::MapInsert, 1)] {
            p.probes.push(crate::plan::PlannedProbe {
                id, name: "m".into(), symbol: "m".into(), kind, vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg: Some(arg),
            });
        }
        let mut a = Aggregator::new(42, &p);
        a.fresh = Some(Fresh::default());
        let grow = |t| Event::decode(&events::encode(kind::MAP_GROW, 0, t, [0xbeef, 0, 0, 0, 0], &[1, 0x900, 0x500])).unwrap();
        let insert = |t, caller| Event::decode(&events::encode(kind::MAP_INSERT, 1, t, [0x7a, 0xbeef, 0, 0, 0], &[2, caller])).unwrap();
        a.add(&grow(5));
        assert_eq!(&*a.maps[&0xbeef].stack, &[0x900, 0x500], "a growth's path until an insert is seen");
        a.add(&insert(6, 0x700));
        a.add(&insert(7, 0x800));
        let m = &a.maps[&0xbeef];
        assert_eq!((m.inserts, m.growths, m.maptype, &*m.stack), (2, 1, Some(0x7a), &[0x700u64][..]));
        let f = a.fresh.take().unwrap();
        assert_eq!(f.map_types, [0x7a]);
        assert_eq!(f.stacks, [vec![0x900u64, 0x500].into_boxed_slice(), vec![0x700].into_boxed_slice()]);
        // Long sessions keep every other read past the cap.
        for t in 0..(MAX_LEN_SAMPLES as u64 + 1) {
            a.sample_map_lens(t + 1, |_| Some(t));
        }
        let lens = &a.maps[&0xbeef].lens;
        assert_eq!((lens.len(), lens[0], lens[1].0, *lens.last().unwrap()), (MAX_LEN_SAMPLES / 2 + 1, (1, 0), 3, (MAX_LEN_SAMPLES as u64 + 1, MAX_LEN_SAMPLES as u64)));
    }

    #[test]
    fn a_full_map_table_drops_its_quietest_eighth_and_counts_them() {
        let mut p = plan(GoVersion::new(1, 24, 0));
        p.probes.push(crate::plan::PlannedProbe {
            id: 0, name: "m".into(), symbol: "m".into(), kind: ProbeKind::MapInsert, vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg: Some(1),
        });
        let mut a = Aggregator::new(42, &p);
        let insert = |t: u64, map: u64| Event::decode(&events::encode(kind::MAP_INSERT, 0, t, [0x7a, map, 0, 0, 0], &[2, 0x700])).unwrap();
        // Map 0 is the busy one: inserted into all along; the others once each.
        for i in 0..MAX_MAPS as u64 {
            a.add(&insert(2 * i, 0x1000 + i));
            a.add(&insert(2 * i + 1, 0x1000));
        }
        assert_eq!((a.maps.len(), a.counts.maps_evicted), (MAX_MAPS, 0));
        a.add(&insert(2 * MAX_MAPS as u64, 0xdead_0000));
        let dropped = MAX_MAPS as u64 / 8 + 1;
        assert_eq!((a.maps.len() as u64, a.counts.maps_evicted), (MAX_MAPS as u64 - dropped + 1, dropped));
        assert_eq!(a.maps[&0x1000].inserts, MAX_MAPS as u64 + 1, "the busy map stays, with its count");
        assert!(a.maps.contains_key(&0xdead_0000) && !a.maps.contains_key(&0x1001), "the new map is followed, the quietest are gone");
        assert_eq!(a.counts.overflow, 0, "nothing is counted as overflow");
    }

    #[test]
    fn times_each_pause_from_start_the_worlds_world_stop() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        // (now, reason, startedStopping, finishedStopping, heap): sweep
        // termination ending at the probe's own time, then mark termination
        // with the end passed in, then a start with no stop recorded.
        a.add(&pause(kind::STW_START, 400, [0, 2, 100, 150, 4096]));
        a.add(&pause(kind::STW_START, 1200, [1100, 1, 1000, 1010, 8192]));
        a.add(&ev(kind::STW_START, 1300, [0, 7, 0, 0, 0], &[1, 2]));
        assert_eq!(a.counts.stw, 2);
        assert_eq!(a.counts.unpaired_stw, 1);
        let stws: Vec<StwSpan> = a.stws.recent().copied().collect();
        assert_eq!(stws[0], StwSpan { start_ktime: 100, duration_ns: 300, cause: StwCause::Code(2) });
        assert_eq!(stws[1], StwSpan { start_ktime: 1000, duration_ns: 100, cause: StwCause::Code(1) });
        assert_eq!(a.counts.cycles, 1);
        assert_eq!(a.cycles(), [Cycle { start_ktime: 400, heap_at_start: Some(4096), goal: Some(150), marked: Some(8192) }]);
    }

    fn ends_at_return(go: GoVersion) -> ProbePlan {
        ProbePlan { pause_end: PauseEnd::Return, ..plan(go) }
    }

    fn on_thread(mut e: Event, thread: u32) -> Event {
        e.thread = thread;
        e
    }

    #[test]
    fn go_1_22_pauses_end_when_the_restart_returns_on_its_thread() {
        let mut a = Aggregator::new(42, &ends_at_return(GoVersion::new(1, 24, 0)));
        // Sweep termination's entry (started stopping at 100) on thread
        // 43; a restart on thread 7 that never returns in this window; then
        // 43's return with startTheWorldWithSema's result, 380.
        a.add(&pause(kind::STW_START, 300, [0, 2, 100, 150, 4096]));
        a.add(&on_thread(ev(kind::STW_START, 310, [0, 7, 200, 0, 0], &[1, 2]), 7));
        assert_eq!(a.counts.stw, 0, "held until the return");
        a.add(&ev(kind::STW_RESUMED, 420, [380, 0, 0, 0, 0], &[1, 0]));
        // Mark termination passes its `now` in and gets it back.
        a.add(&pause(kind::STW_START, 1200, [1100, 1, 1000, 1010, 8192]));
        a.add(&ev(kind::STW_RESUMED, 1290, [1100, 0, 0, 0, 0], &[1, 0]));
        // A result outside the pause is no clock: the probe's own time.
        a.add(&ev(kind::STW_START, 2000, [0, 7, 1900, 0, 0], &[1, 2]));
        a.add(&ev(kind::STW_RESUMED, 2100, [5, 0, 0, 0, 0], &[1, 0]));
        // A return with nothing open (attached mid-restart).
        a.add(&ev(kind::STW_RESUMED, 2200, [2150, 0, 0, 0, 0], &[1, 0]));
        let stws: Vec<StwSpan> = a.stws.recent().copied().collect();
        assert_eq!(
            stws,
            [
                StwSpan { start_ktime: 100, duration_ns: 280, cause: StwCause::Code(2) },
                StwSpan { start_ktime: 1000, duration_ns: 100, cause: StwCause::Code(1) },
                StwSpan { start_ktime: 1900, duration_ns: 200, cause: StwCause::Code(7) },
            ]
        );
        assert_eq!((a.counts.stw, a.counts.unpaired_stw), (3, 1));
        // The heap is the entry's, read before the world restarts.
        assert_eq!(a.cycles(), [Cycle { start_ktime: 300, heap_at_start: Some(4096), goal: Some(150), marked: Some(8192) }]);
    }

    #[test]
    fn go_1_19_pauses_run_from_the_stop_to_the_restarts_return() {
        let mut a = Aggregator::new(42, &ends_at_return(GoVersion::new(1, 19, 8)));
        a.add(&ev(kind::GC_START, 90, [0; 5], &[1, 2]));
        a.add(&pause(kind::STW_STOP, 100, [0, 0, 0, 4000, 1000]));
        a.add(&ev(kind::STW_RESUMED, 260, [240, 0, 0, 0, 0], &[1, 0]));
        a.add(&pause(kind::STW_STOP, 500, [0, 0, 0, 0, 5]));
        a.add(&pause(kind::STW_RESUMED, 580, [570, 0, 0, 4100, 600]));
        let stws: Vec<StwSpan> = a.stws.recent().copied().collect();
        assert_eq!(
            stws,
            [StwSpan { start_ktime: 100, duration_ns: 140, cause: StwCause::Code(2) }, StwSpan { start_ktime: 500, duration_ns: 70, cause: StwCause::Code(1) }]
        );
        // No entry probe: mark termination's heap is read at the return.
        assert_eq!(a.cycles(), [Cycle { start_ktime: 100, heap_at_start: Some(1000), goal: Some(4000), marked: Some(600) }]);
    }

    #[test]
    fn a_plan_ending_at_the_entry_ignores_return_sites() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        a.add(&pause(kind::STW_START, 400, [0, 2, 100, 150, 4096]));
        a.add(&ev(kind::STW_RESUMED, 450, [420, 0, 0, 0, 0], &[1, 0]));
        assert_eq!(a.stws.recent().copied().collect::<Vec<_>>(), [StwSpan { start_ktime: 100, duration_ns: 300, cause: StwCause::Code(2) }]);
        assert_eq!((a.counts.stw, a.counts.unpaired_stw), (1, 0));
    }

    #[test]
    fn heap_without_the_kernels_read_is_no_heap() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        // Go 1.23+ worldStop: stoppingCPUTime lands in the fifth register.
        a.add(&ev(kind::STW_START, 400, [0, 2, 100, 150, 611], &[1, 2]));
        a.add(&ev(kind::STW_START, 1200, [1100, 1, 1000, 1010, 1012], &[1, 2]));
        assert_eq!(a.cycles(), [Cycle { start_ktime: 400, heap_at_start: None, goal: None, marked: None }]);
    }

    #[test]
    fn paces_allocation_by_the_runtimes_total() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        let s = |total_alloc| crate::tracee::gcctl::Settings { gc_percent: 100, memory_limit: i64::MAX, heap_minimum: 4 << 20, total_alloc, cpu: None };
        a.gc_settings(1_000_000_000, s(10 << 20));
        assert_eq!(a.runtime_alloc.bytes_per_s(), None);
        a.gc_settings(1_100_000_000, s(20 << 20));
        assert_eq!(a.runtime_alloc.bytes_per_s(), None, "under one timer period");
        a.gc_settings(3_000_000_000, s(210 << 20));
        assert_eq!(a.runtime_alloc.bytes_per_s(), Some((100 << 20) as f64));
        assert_eq!(a.runtime_alloc.bytes(), Some(200 << 20));
        // Settings are kept when they change, not at every read.
        assert_eq!(a.settings.len(), 1);
        a.gc_settings(3_200_000_000, crate::tracee::gcctl::Settings { gc_percent: 50, heap_minimum: 2 << 20, ..s(211 << 20) });
        assert_eq!(a.settings.iter().map(|(t, s)| (*t, s.gc_percent)).collect::<Vec<_>>(), [(1_000_000_000, 100), (3_200_000_000, 50)]);
        // No burst bytes: nothing to pace.
        assert_eq!(a.heap_pace(), None);
        // GC CPU: nothing until a cycle's end moved the counters.
        let cpu = |gc_ns, total_ns| crate::tracee::gcctl::Settings { cpu: Some(crate::tracee::gcctl::GcCpu { gc_ns, total_ns }), ..s(212 << 20) };
        a.gc_settings(3_400_000_000, cpu(1_000, 100_000));
        a.gc_settings(3_600_000_000, cpu(1_000, 100_000));
        assert_eq!(a.gc_cpu_share(), None);
        a.gc_settings(3_800_000_000, cpu(6_000, 200_000));
        assert_eq!(a.gc_cpu_share(), Some(0.05));
    }

    #[test]
    fn pairs_stop_and_start_the_world() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 21, 0)));
        a.add(&ev(kind::STW_START, 5, [0; 5], &[1, 2])); // attached mid-pause
        a.add(&ev(kind::STW_STOP, 100, [2, 0, 0, 0, 0], &[1, 2]));
        a.add(&ev(kind::STW_START, 350, [0; 5], &[1, 2]));
        a.add(&ev(kind::STW_STOP, 1000, [1, 0, 0, 0, 0], &[1, 2]));
        a.add(&ev(kind::STW_START, 1100, [0; 5], &[1, 2]));
        assert_eq!(a.counts.stw, 2);
        assert_eq!(a.counts.unpaired_stw, 1);
        assert_eq!(a.stws.recent().next(), Some(&StwSpan { start_ktime: 100, duration_ns: 250, cause: StwCause::Code(2) }));
        assert_eq!(StwCause::code_name(2), "GC sweep termination");
        assert_eq!(StwCause::code_name(200), "reason 200");
        assert_eq!(a.stw_hist.max(), 250);
    }

    #[test]
    fn old_runtimes_name_stw_by_gc_sequence() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 19, 8)));
        // A stop outside any GC cycle is named by its caller.
        a.add(&ev(kind::STW_STOP, 100, [7, 0, 0, 0, 0], &[1, 0xcafe]));
        a.add(&ev(kind::STW_START, 200, [0; 5], &[1, 2]));
        // gcStart on thread 43 (the test encoder's tid), then its stop, then mark termination.
        a.add(&ev(kind::GC_START, 300, [0; 5], &[1, 2]));
        a.add(&ev(kind::STW_STOP, 310, [0; 5], &[1, 2]));
        a.add(&ev(kind::STW_START, 320, [0; 5], &[1, 2]));
        a.add(&ev(kind::STW_STOP, 400, [0; 5], &[1, 2]));
        a.add(&ev(kind::STW_START, 450, [0; 5], &[1, 2]));
        let causes: Vec<_> = a.stws.recent().map(|s| s.cause).collect();
        assert_eq!(causes, [StwCause::Caller(0xcafe), StwCause::Code(2), StwCause::Code(1)]);
        assert_eq!(a.counts.cycles, 1);
    }

    #[test]
    fn folds_kernel_totals_as_deltas_once_their_stack_is_known() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        let key = AggKey { stack_id: 0x51, probe_id: 0, size_bucket: gcprobe_common::size_bucket(64), tgid: 42, _pad: 0 };
        // Counted before the stack record arrived: held back, not lost.
        a.add_kernel_totals(&[(key, AggValue { count: 3, bytes: 192 })]);
        assert_eq!(a.counts.mallocgc, 0);
        let def = events::encode_full(kind::MALLOC, 0, 1, [64, 0, 0, 0, 0], &[0xa0, 0x100, 0x200], 0x51, gcprobe_common::event_flag::STACK_ONLY);
        a.add(&Event::decode(&def).unwrap());
        assert_eq!(a.counts.mallocgc, 0, "a stack record is not a hit");
        a.add_kernel_totals(&[(key, AggValue { count: 3, bytes: 192 })]);
        a.add_kernel_totals(&[(key, AggValue { count: 5, bytes: 320 })]);
        let s = a.alloc_stacks[&[0x100u64, 0x200][..]];
        assert_eq!((s.count, s.bytes, a.counts.mallocgc, a.alloc_bytes), (5, 320, 5, 320));
        assert_eq!(a.alloc_sizes[&0].len(), 5);
    }

    #[test]
    fn weighs_runtime_samples_like_pprof() {
        assert_eq!(pprof_weight(100, 1), 1.0);
        // A 512 KiB allocation at the default rate is sampled with p = 1 - 1/e.
        let w = pprof_weight(512 * 1024, DEFAULT_MEM_PROFILE_RATE);
        assert!((w - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        a.mem_profile_rate = Some(1024);
        // Go 1.23+: mProf_Malloc(mp, p, size).
        a.add(&ev(kind::MPROF, 1, [0, 0xc000, 256, 0, 0], &[0xd0, 0x100]));
        let w = a.sampled_stacks[&[0x100u64][..]];
        assert_eq!(w.samples, 1);
        assert!((w.bytes - 256.0 * pprof_weight(256, 1024)).abs() < 1e-6);
        assert_eq!(a.mprof_rate_assumed, 0);
    }

    #[test]
    fn burst_confidence_narrows_with_steady_rates() {
        let mut a = Aggregator::new(42, &plan(GoVersion::new(1, 24, 0)));
        let burst = |a: &mut Aggregator, n: u64| {
            a.begin_burst();
            for i in 0..n {
                a.add(&ev(kind::MALLOC, i, [100, 0, 0, 0, 0], &[0xa0, 0x100]));
            }
            a.end_burst(0.01);
        };
        for n in [10, 10, 10, 10] {
            burst(&mut a, n);
        }
        let steady = a.bursts.rel_ci95(&a.alloc_stacks[&[0x100u64][..]]).unwrap();
        assert!(steady < 1e-6, "{steady}");
        for n in [0, 30, 2, 20] {
            burst(&mut a, n);
        }
        let noisy = a.bursts.rel_ci95(&a.alloc_stacks[&[0x100u64][..]]).unwrap();
        assert!(noisy > 0.2, "{noisy}");
        assert_eq!(a.bursts.n, 8);
    }

    #[test]
    fn ignores_other_processes() {
        let mut a = Aggregator::new(7, &plan(GoVersion::new(1, 24, 0)));
        a.add(&ev(kind::MALLOC, 1, [64, 0, 1, 0, 0], &[0xa0, 0x100]));
        assert_eq!(a.counts.mallocgc, 0);
        assert_eq!(a.counts.foreign, 1);
    }
}
