//! `gcprobe record`'s file: everything a report needs, written as the
//! session runs, readable anywhere later without root or the target binary.
//!
//! The framing is in [`frame`]. A recording is a META frame, then, at every
//! flush (200 ms, or 1 MiB of events), a SYMBOLS frame for what was new and
//! an OPS frame of the aggregator's inputs ending in a checkpoint, then an
//! END frame when the session ends cleanly. A file cut short anywhere still
//! reports up to its last complete OPS frame. See docs/recording.md.
pub mod dir;
pub mod frame;
mod replay;
mod writer;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use replay::{read, replay, replay_bytes, RecordedFacts, Replayed};
pub use writer::{Recorder, FLUSH_BYTES};

use crate::{
    ingest::aggregate::Aggregator,
    kernel::calibrate::Calibration,
    analysis::facts::Facts,
    analysis::appendloop::LoopReport,
    tracee::gotypes::TypeInfo,
    plan::ProbePlan,
    kernel::probes::{KernelStats, Mechanism},
    report::{self, AgentReport, Report, Target},
    plan::Mode,
    tracee::frame::Frame,
};

/// Frame kinds.
pub mod kind {
    /// JSON [`super::Meta`]: always the first frame.
    pub const META: u8 = 1;
    /// JSON [`super::Symbols`]: facts about PCs and types first seen since the last flush.
    pub const SYMBOLS: u8 = 2;
    /// Binary ops (see [`super::ops`]), the last one a checkpoint.
    pub const OPS: u8 = 3;
    /// JSON [`super::End`]: the session ended cleanly.
    pub const END: u8 = 4;
}

/// What is known when the session starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The gcprobe that wrote the file.
    pub gcprobe_version: String,
    pub target: Target,
    /// Host path of the executable as the recorder opened it.
    pub exe_path: String,
    /// Runtime address minus link-time address of the executable.
    pub load_bias: u64,
    pub plan: ProbePlan,
    pub attached: Vec<u32>,
    pub attach_notes: HashMap<u32, String>,
    pub mode: Mode,
    pub budget: f64,
    pub calibration: Option<Calibration>,
    pub cost_s: f64,
    pub start_unix_ns: u64,
    /// CLOCK_MONOTONIC at the start: event times (ktime) minus this, plus
    /// `start_unix_ns`, is wall-clock time.
    pub start_monotonic_ns: u64,
    /// What named frames: dwarf, gopclntab or symtab.
    pub symbols_from: crate::tracee::symbolize::SymbolSource,
    /// Whose code is the owner's (absent from recordings made before it was kept).
    #[serde(default)]
    pub app: crate::analysis::owner::AppScope,
}

impl Meta {
    /// The report of a session, live or recorded: the one place its inputs
    /// are put together, so both read the same.
    pub fn report(&self, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> Report {
        let p = &end.progress;
        report::build(
            &report::Inputs {
                target: self.target.clone(),
                plan: &self.plan,
                attached: &self.attached,
                attach_notes: &self.attach_notes,
                agg,
                app: &self.app,
                kernel: p.kernel,
                mechanism: p.mechanism,
                start_unix_ns: self.start_unix_ns,
                duration_s: p.elapsed_s,
                ended_by: end.ended_by,
                program_exit: end.program_exit,
                agent: p.agent.clone(),
                sampling: report::SamplingInputs {
                    mode: self.mode,
                    budget: self.budget,
                    calibration: self.calibration,
                    cost_s: self.cost_s,
                    target_cpu_s: p.target_cpu_s,
                    runtime_samples_off_after_s: p.runtime_samples_off_after_s,
                },
            },
            facts,
        )
    }
}

/// The session's running figures, written with every OPS frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub elapsed_s: f64,
    pub kernel: KernelStats,
    pub mechanism: Mechanism,
    pub target_cpu_s: Option<f64>,
    pub agent: AgentReport,
    pub runtime_samples_off_after_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    pub ended_by: report::EndedBy,
    pub progress: Progress,
    /// `gcprobe run`: how the program ended. Absent in other sessions and in
    /// older files, which read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_exit: Option<crate::tracee::launch::ProgramExit>,
}

/// Facts about what was first seen since the last flush.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Symbols {
    /// Return address → frames of its call, innermost first.
    pub frames: Vec<(u64, Vec<Frame>)>,
    /// Element `*_type` address → its type.
    pub types: Vec<(u64, Option<TypeInfo>)>,
    /// Growslice stack → the loop driving it.
    pub loops: Vec<(Vec<u64>, Option<LoopReport>)>,
    /// Map type address → key, value and deletion sites.
    #[serde(default)]
    pub map_types: Vec<(u64, Option<crate::tracee::gotypes::MapTypeInfo>)>,
}

impl Symbols {
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.types.is_empty() && self.loops.is_empty() && self.map_types.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: already exists (use --force to overwrite it)")]
    Exists { path: String },
    #[error(transparent)]
    Create(crate::outfile::OutputError),
    #[error("{path}")]
    Write {
        path: String,
        #[source]
        source: frame::FrameError,
    },
    #[error("{path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Format {
        path: String,
        #[source]
        source: frame::FrameError,
    },
    #[error("{path}: the recording has no metadata frame (it was cut short before the session started)")]
    NoMeta { path: String },
    #[error("{path}: the recording holds no events (it was cut short as the session started)")]
    NoData { path: String },
    #[error("{path}: frame at byte {offset} is not valid {what}")]
    BadFrame {
        path: String,
        offset: u64,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A session's metadata as a test recording carries it: three probes
/// (growslice 0, mallocgc 1, a map insert 2), all attached, exact mode.
#[cfg(test)]
pub(crate) fn test_meta() -> Meta {
    use crate::{plan::{PlannedProbe, ProbeKind}, tracee::buildinfo::GoVersion};
    let mut plan = ProbePlan::for_test(GoVersion::new(1, 24, 0));
    for (id, kind, map_arg) in [(0, ProbeKind::Growslice, None), (1, ProbeKind::Malloc, None), (2, ProbeKind::MapInsert, Some(1))] {
        plan.probes.push(PlannedProbe { id, name: format!("p{id}"), symbol: format!("s{id}"), kind, vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg });
    }
    Meta {
        gcprobe_version: "test".into(),
        target: Target { pid: 42, exe: "/bin/x".into(), go_version: "go1.24.11".into(), arch: "amd64".into(), build_id: None },
        exe_path: "/bin/x".into(),
        load_bias: 0,
        plan,
        attached: vec![0, 1, 2],
        attach_notes: HashMap::new(),
        mode: Mode::Exact,
        budget: 0.01,
        calibration: None,
        cost_s: 1e-5,
        start_unix_ns: 1,
        start_monotonic_ns: 0,
        symbols_from: crate::tracee::symbolize::SymbolSource::Symtab,
        app: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use gcprobe_common::{event_flag, kind};

    use super::*;
    use crate::{ingest::events::encode_full, analysis::facts::NoFacts, ingest::feed::Feed};

    /// The recording invariant without root: what a session feeds, recorded
    /// and replayed, gives the same report, field for field.
    #[test]
    fn a_replayed_recording_reports_what_the_live_session_did() {
        let meta = test_meta();
        let path = std::env::temp_dir().join(format!("gcprobe-unit-{}.gcprobe", std::process::id()));
        let mut rec = Recorder::create(&path, true).unwrap();
        rec.meta(&meta).unwrap();
        let mut feed = Feed::new(Aggregator::new(42, &meta.plan)).recording();
        let progress = |t: f64| Progress {
            elapsed_s: t,
            kernel: KernelStats::default(),
            mechanism: Mechanism::UprobeMulti,
            target_cpu_s: Some(t),
            agent: AgentReport { cpu_s: 0.1, max_rss_kib: 1 },
            runtime_samples_off_after_s: None,
        };
        let heap = event_flag::HEAP_LIVE | event_flag::HEAP_GOAL;
        // One facts for the whole session, as attach has.
        let mut facts = NoFacts::default();
        for i in 0..200u64 {
            let t = i * 10_000_000;
            // An append run (growth then its allocation), a plain
            // allocation, a map insert, and a GC cycle every 50.
            feed.ring(&encode_full(kind::GROWSLICE, 0, t, [0, i % 9 + 1, i % 9, 1, 0xe7], &[0x10, 0x500, 0x600], 0, 0));
            feed.ring(&encode_full(kind::MALLOC, 1, t + 1, [64 * (i % 9 + 1), 0, 1, 0, 0], &[0x20, 0x700, 0x600], 0, 0));
            feed.ring(&encode_full(kind::MAP_INSERT, 2, t + 2, [0x7a, 0xbeef, 0, 0, 0], &[0x30, 0x800], 0, 0));
            if i % 50 == 0 {
                feed.ring(&encode_full(kind::STW_START, 0, t + 3, [t + 3, 2, t, 0, 4 << 20], &[1, 2], 0, heap));
                feed.ring(&encode_full(kind::STW_START, 0, t + 9, [t + 9, 1, t + 5, 0, 1 << 20], &[1, 2], 0, heap));
            }
            if i % 20 == 0 {
                feed.map_lens(t, |_| Some(i * 10));
                rec.flush(&mut feed, &mut facts, &progress(t as f64 / 1e9)).unwrap();
            }
        }
        let end = End { ended_by: report::EndedBy::Duration, progress: progress(2.0), program_exit: None };
        rec.finish(&mut feed, &mut facts, &end).unwrap();
        let live = meta.report(&end, &feed.agg, &mut facts);
        let mut replayed = replay(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let again = replayed.meta.report(&replayed.end, &replayed.agg, &mut replayed.facts);
        let (a, b) = (serde_json::to_value(&live).unwrap(), serde_json::to_value(&again).unwrap());
        assert_eq!(a["events"]["growslice"], 200);
        assert_eq!(a["maps"][0]["inserts"], 200, "{:#}", a["maps"]);
        assert_eq!(a, b);
    }
}
