//! The report: what gcprobe tells its user, as data (`gcprobe.report/v1`).
//!
//! Built once from the aggregator and the symbolizer; rendered as text for
//! people (`text`) or JSON for tools. Fields may be added, never removed.
mod build;
pub mod diff;
pub mod gc;
pub mod json;
pub mod rules;
pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The rows analysis makes and ranks; the report holds them.
pub use crate::analysis::rows::{AppCallsite, Callsite, Culprit, HeapSample, MapReport};
pub use build::{build, cause_name, cause_reason, growslice_loop, rate_times, Inputs, SamplingInputs};

use crate::tracee::frame::Frame;

pub const SCHEMA: &str = "gcprobe.report/v1";

/// The report's `schema`: a JSON report of another schema does not read as this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schema {
    #[serde(rename = "gcprobe.report/v1")]
    ReportV1,
}

/// Where the report's allocation rates come from (`sampling.alloc_rate_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocRateSource {
    /// Every allocation was probed.
    Exact,
    /// Callsite shares from the bursts, paced by the runtime's own allocation total.
    RuntimeTotalAlloc,
    /// Bytes seen in the bursts over the seconds they were open.
    Bursts,
}

/// What a size distribution counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    Bytes,
    Elements,
}

impl std::fmt::Display for SizeUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            SizeUnit::Bytes => "bytes",
            SizeUnit::Elements => "elements",
        })
    }
}

/// `gc.stw.ends_at` as reports name it (`PauseEnd::name`), not as plans and recordings spell the enum.
mod pause_end_name {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::plan::PauseEnd;

    pub fn serialize<S: Serializer>(p: &PauseEnd, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PauseEnd, D::Error> {
        let name = String::deserialize(d)?;
        [PauseEnd::Return, PauseEnd::Entry].into_iter().find(|p| p.name() == name).ok_or_else(|| serde::de::Error::unknown_variant(&name, &["restart-return", "restart-entry"]))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: Schema,
    pub target: Target,
    pub window: Window,
    pub probes: Vec<ProbeReport>,
    pub events: Events,
    pub gc: Gc,
    pub callsites: Vec<Callsite>,
    /// What counts as the owner's code, and how much of the bytes it reaches.
    #[serde(default)]
    pub app: App,
    /// The owner's functions ranked by the bytes they cause (their own
    /// lines and the library code they call), the most first: "BY YOUR CODE".
    #[serde(default)]
    pub app_callsites: Vec<AppCallsite>,
    /// Size distributions: bytes requested per allocator entry point, and
    /// `growslice` requested lengths (elements), keyed by probe name.
    pub sizes: BTreeMap<String, SizeStats>,
    pub culprits: Vec<Culprit>,
    /// Maps seen growing, likely leaks first, then most growth, with where they are inserted into (at most 50).
    pub maps: Vec<MapReport>,
    /// Maps judged likely leaks, all of them (`maps` keeps 50 rows); None,
    /// with the reason in `likely_leaks_unavailable`, when no map was watched.
    pub likely_leaks: Option<u64>,
    pub likely_leaks_unavailable: Option<String>,
    /// Rules of thumb that fired, and anything that limits the report's accuracy.
    pub warnings: Vec<String>,
    /// How allocations were observed, what that cost, and how far the
    /// estimates can be trusted.
    pub sampling: SamplingReport,
    /// What the probes cost: kernel-side counters.
    pub kernel: KernelReport,
    /// What gcprobe itself used.
    pub agent: AgentReport,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct App {
    /// Whose code counts as the owner's: package main, the main module
    /// (from `.go.buildinfo`) and each `--app-prefix`.
    pub scope: Vec<String>,
    /// Share of the allocated bytes with no frame of the owner's code on
    /// their stack (as far as it was walked).
    pub unowned_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelReport {
    /// How the uprobes were attached.
    pub mechanism: crate::kernel::probes::Mechanism,
    /// Probe hits in the target that reached our program.
    pub hits: u64,
    /// The same, per probe kind.
    pub hits_by_kind: BTreeMap<String, u64>,
    /// Of those, hits on bursted probes outside a window (sampled mode:
    /// attaching and detaching). They cost a trap each and carry no data.
    pub gated: u64,
    pub ringbuf_full: u64,
    pub stack_faults: u64,
    /// Hits on the empty baseline program (benchmarks only).
    pub empty_hits: u64,
    /// Allocation hits counted in the kernel's map instead of sent.
    pub aggregated: u64,
    /// Hits sent whole because that map was full.
    pub agg_full: u64,
    /// Growslice records sent without the allocation they made (the kernel
    /// pairs the two in one record; zero-size elements allocate nothing,
    /// and a thread may move CPUs in between).
    pub grow_alone: u64,
    /// Hits dropped because gcprobe's program was already running on their
    /// CPU (preempted mid-hit on a preemptible kernel).
    pub overlapped: u64,
    /// Ring-buffer records the agent read, and their bytes.
    pub records: u64,
    pub record_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingReport {
    pub mode: crate::plan::Mode,
    /// Allowed slowdown, percent (sampled mode).
    pub budget_pct: Option<f64>,
    /// This host's measured per-hit costs (None: calibration failed and
    /// `cost_per_hit_ns` is an assumption).
    pub calibration: Option<crate::kernel::calibrate::Calibration>,
    pub cost_per_hit_ns: f64,
    /// Bursts of the allocation probes (sampled mode).
    pub bursts: u64,
    /// Seconds the allocation probes were attached; allocation rates are
    /// counts divided by this.
    pub observed_s: f64,
    /// observed_s / window duration.
    pub duty: f64,
    /// Where allocation rates come from: "exact" (every allocation),
    /// "runtime_total_alloc" (callsite shares from the bursts, paced by the
    /// runtime's own allocation total) or "bursts" (bytes over observed_s).
    pub alloc_rate_source: AllocRateSource,
    /// The runtime's allocation rate over the window (`gc.alloc_bytes_per_s`;
    /// None when runtime.gcController could not be read).
    pub heap_alloc_bytes_per_s: Option<f64>,
    /// Bytes seen in the bursts over observed_s: lower than the target's
    /// unprobed rate when the probes' traps slow it down.
    pub burst_alloc_bytes_per_s: Option<f64>,
    /// Half-width of the 95% confidence interval of the allocation byte
    /// rate, relative (0.1 = ±10%); None when exact or too few bursts.
    pub alloc_rate_ci95: Option<f64>,
    /// CPU seconds the target used in the window, including our traps.
    pub target_cpu_s: Option<f64>,
    /// Probe hits × cost per hit: CPU time our probes added to the target.
    pub probe_cost_s: f64,
    /// probe_cost_s over the target's CPU time without it: the estimated
    /// slowdown of a CPU-bound target (0.01 = 1%).
    pub est_slowdown: Option<f64>,
    /// The target's runtime.MemProfileRate (None when it could not be read).
    pub mem_profile_rate: Option<u64>,
    /// mProf_Malloc samples received.
    pub runtime_samples: u64,
    /// Seconds mProf_Malloc was probed: the governor drops it when it and
    /// the pause probes would take over half the budget.
    pub runtime_samples_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentReport {
    /// User plus system CPU seconds of the gcprobe process for the whole session.
    pub cpu_s: f64,
    pub max_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub arch: String,
    pub build_id: Option<String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndedBy {
    /// `--duration` ran out.
    Duration,
    /// Ctrl-C or SIGTERM.
    Signal,
    TargetExited,
    /// The target exec'd a program: same PID, another image. Its probes were on the old
    /// file and the addresses gcprobe reads mean nothing in the new one.
    TargetExec,
    /// Writing the recording failed; the report is still made.
    RecordError,
    /// A recording read back that its writer never finished.
    RecordingCutShort,
    /// Not ended: node mode's report on demand, over the time so far.
    StillRunning,
    /// Node mode's recording went on in the next file (`--record-dir`).
    Rotated,
}

impl EndedBy {
    /// As the report and its JSON say it.
    pub const fn name(self) -> &'static str {
        match self {
            EndedBy::Duration => "duration",
            EndedBy::Signal => "signal",
            EndedBy::TargetExited => "target-exited",
            EndedBy::TargetExec => "target-exec",
            EndedBy::RecordError => "record-error",
            EndedBy::RecordingCutShort => "recording-cut-short",
            EndedBy::StillRunning => "still-running",
            EndedBy::Rotated => "rotated",
        }
    }
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub start_unix_ns: u64,
    pub duration_s: f64,
    /// Why the session ended: duration, signal, target-exited.
    pub ended_by: EndedBy,
    /// `gcprobe run` only: the program's exit status or the signal that
    /// killed it, since gcprobe's own exit status does not pass it on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_exit: Option<crate::tracee::launch::ProgramExit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub name: String,
    pub symbol: String,
    /// Link-time address of the function entry (0 when the symbol is absent).
    pub address: u64,
    pub attached: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Events {
    pub mallocgc: u64,
    pub growslice: u64,
    /// gcStart calls; None where it is not probed (Go 1.21+: the
    /// sweep-termination pause marks each cycle instead).
    pub gc_start: Option<u64>,
    pub stw: u64,
    pub assist: u64,
    /// Dropped in the kernel (ring buffer full) or undecodable in the agent.
    pub lost: u64,
    /// Nested allocator entries, and growslice variants' inner growslice
    /// calls, counted once, by their outer call.
    pub nested_skipped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gc {
    /// Completed sweep-termination pauses: one per GC cycle that started.
    pub cycles: u64,
    /// `cycles` over the window.
    pub cycles_per_s: f64,
    pub stw: Stw,
    /// gcAssistAlloc calls per thread id, busiest first.
    pub assists_by_thread: Vec<(u32, u64)>,
    /// The runtime's heap at each cycle's start (`gcController.heapLive`),
    /// with the cycle's GOGC goal and the bytes it marked live; empty when
    /// they could not be read (`heap_unavailable` says why).
    pub heap_live: Vec<HeapSample>,
    /// One cycle in so many is in `heap_live`: 1 while there are few; past
    /// 4,096 cycles the series is thinned evenly (ingest::cycles).
    pub heap_live_every: u64,
    /// The live heap rose across most cycles: a likely leak.
    pub heap_climbing: bool,
    /// Why `heap_live`, `settings` and `alloc_bytes_per_s` are missing.
    pub heap_unavailable: Option<String>,
    /// Medians over the window's cycles.
    pub heap_medians: gc::HeapMedians,
    /// GOGC and GOMEMLIMIT as the runtime held them.
    pub settings: Option<gc::GcSettings>,
    /// The runtime's own allocation rate over the window
    /// (`gcController.totalAlloc`, what MemStats.TotalAlloc reports).
    pub alloc_bytes_per_s: Option<f64>,
    /// GC's share of the target's CPU; None, with the reason in
    /// `cpu_share_unavailable`, where it is not measured.
    pub cpu_share: Option<f64>,
    pub cpu_share_unavailable: Option<String>,
    /// Why GC runs this often, in one sentence (frequent GC only).
    pub diagnosis: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stw {
    pub count: u64,
    pub total_ms: f64,
    /// Where each pause ends: `restart-return` (the `now` startTheWorldWithSema
    /// returns, Go's own end) or `restart-entry` (its entry, before the
    /// world restarts: no return site was found or attached).
    #[serde(with = "pause_end_name")]
    pub ends_at: crate::plan::PauseEnd,
    /// What `ends_at` means for the figures, when it is not Go's own end.
    pub note: Option<String>,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub by_reason: BTreeMap<String, ReasonStat>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReasonStat {
    /// The collector's own pause (sweep or mark termination); false for
    /// every other stop: ReadMemStats, GOMAXPROCS, traces, profiles, ...
    pub gc: bool,
    pub count: u64,
    pub total_ms: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeStats {
    pub unit: SizeUnit,
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}


/// A report of nothing: pid 1, a 10 s exact window (tests build on it).
#[cfg(test)]
pub(crate) fn empty_report() -> Report {
    Report {
        schema: Schema::ReportV1,
        target: Target { pid: 1, exe: "/bin/app".into(), go_version: "go1.22.0".into(), arch: "x86_64".into(), build_id: None },
        window: Window { start_unix_ns: 0, duration_s: 10.0, ended_by: crate::report::EndedBy::TargetExited, program_exit: None },
        probes: vec![],
        events: Events { mallocgc: 0, growslice: 0, gc_start: None, stw: 0, assist: 0, lost: 0, nested_skipped: 0 },
        gc: Gc {
            cycles: 0,
            cycles_per_s: 0.0,
            stw: Stw::default(),
            assists_by_thread: vec![],
            heap_live: vec![],
            heap_live_every: 1,
            heap_climbing: false,
            heap_unavailable: None,
            heap_medians: Default::default(),
            settings: None,
            alloc_bytes_per_s: None,
            cpu_share: None,
            cpu_share_unavailable: None,
            diagnosis: None,
        },
        callsites: vec![],
        app: App { scope: vec!["package main".into()], unowned_share: 0.0 },
        app_callsites: vec![],
        sizes: BTreeMap::new(),
        culprits: vec![],
        maps: vec![],
        likely_leaks: Some(0),
        likely_leaks_unavailable: None,
        warnings: vec![],
        sampling: SamplingReport {
            mode: crate::plan::Mode::Exact,
            budget_pct: None,
            calibration: None,
            cost_per_hit_ns: 0.0,
            bursts: 0,
            observed_s: 10.0,
            duty: 1.0,
            alloc_rate_source: AllocRateSource::Exact,
            heap_alloc_bytes_per_s: None,
            burst_alloc_bytes_per_s: None,
            alloc_rate_ci95: None,
            target_cpu_s: None,
            probe_cost_s: 0.0,
            est_slowdown: None,
            mem_profile_rate: None,
            runtime_samples: 0,
            runtime_samples_s: None,
        },
        kernel: KernelReport {
            mechanism: crate::kernel::probes::Mechanism::PerfEvent,
            hits: 0,
            hits_by_kind: BTreeMap::new(),
            gated: 0,
            ringbuf_full: 0,
            stack_faults: 0,
            empty_hits: 0,
            aggregated: 0,
            agg_full: 0,
            grow_alone: 0,
            overlapped: 0,
            records: 0,
            record_bytes: 0,
        },
        agent: AgentReport { cpu_s: 0.0, max_rss_kib: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_by_reads_as_before_in_json_and_text() {
        let all = [EndedBy::Duration, EndedBy::Signal, EndedBy::TargetExited, EndedBy::TargetExec, EndedBy::RecordError, EndedBy::RecordingCutShort, EndedBy::StillRunning, EndedBy::Rotated];
        let json: Vec<String> = all.iter().map(|e| serde_json::to_value(e).unwrap().as_str().unwrap().to_owned()).collect();
        assert_eq!(json, ["duration", "signal", "target-exited", "target-exec", "record-error", "recording-cut-short", "still-running", "rotated"]);
        assert!(all.iter().zip(&json).all(|(e, j)| e.to_string() == *j));
        assert_eq!(serde_json::from_str::<EndedBy>("\"target-exited\"").unwrap(), EndedBy::TargetExited);
    }
}
