//! Reads a recording back into the aggregator and the facts a report needs.
use std::{collections::HashMap, path::Path, rc::Rc};

use super::{frame, kind, End, Meta, Progress, RecordError, Symbols};
use crate::ingest::ops::Op;
use crate::{
    ingest::aggregate::Aggregator,
    analysis::appendloop::LoopReport,
    analysis::facts::{Facts, UnresolvedCount},
    ingest::feed,
    tracee::gotypes::{MapTypeInfo, TypeInfo},
    tracee::frame::Frame,
    tracee::symbolize::SymbolSource,
};

pub struct Replayed {
    pub meta: Meta,
    /// As written, or made up from the last checkpoint when the file was cut short.
    pub end: End,
    pub agg: Aggregator,
    pub facts: RecordedFacts,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<frame::Damage>,
    pub bytes: u64,
}

/// The facts the recorder stored; a PC it never stored (its frame was lost)
/// is named by its address, as a live session names one no table knows.
pub struct RecordedFacts {
    frames: HashMap<u64, Rc<[Frame]>>,
    types: HashMap<u64, Option<TypeInfo>>,
    loops: HashMap<Box<[u64]>, Option<LoopReport>>,
    map_types: HashMap<u64, Option<MapTypeInfo>>,
    source: SymbolSource,
    bias: u64,
    unresolved: UnresolvedCount,
}

impl RecordedFacts {
    fn absorb(&mut self, s: Symbols) {
        self.frames.extend(s.frames.into_iter().map(|(pc, f)| (pc, f.into())));
        self.types.extend(s.types);
        self.loops.extend(s.loops.into_iter().map(|(k, v)| (k.into_boxed_slice(), v)));
        self.map_types.extend(s.map_types);
    }
}

impl Facts for RecordedFacts {
    fn frames(&mut self, ret_pc: u64) -> Rc<[Frame]> {
        let bias = self.bias;
        let f = self
            .frames
            .entry(ret_pc)
            .or_insert_with(|| vec![Frame { function: format!("{:#x}", ret_pc.wrapping_sub(bias).wrapping_sub(1)), file: None, line: None, inlined: false }].into())
            .clone();
        self.unresolved.note(ret_pc, &f);
        f
    }

    fn elem_type(&mut self, addr: u64) -> Option<TypeInfo> {
        self.types.get(&addr).cloned().flatten()
    }

    fn append_loop(&mut self, _callsite_fn: &str, stack: &[u64]) -> Option<LoopReport> {
        self.loops.get(stack).cloned().flatten()
    }

    fn map_type(&mut self, addr: u64) -> Option<MapTypeInfo> {
        self.map_types.get(&addr).cloned().flatten()
    }

    fn source(&self) -> SymbolSource {
        self.source
    }

    fn unresolved(&self) -> u64 {
        self.unresolved.get()
    }
}

/// Reads `path` up to its last complete frame and replays it.
pub fn replay(path: &Path) -> Result<Replayed, RecordError> {
    replay_bytes(&path.display().to_string(), &read(path)?)
}

/// A recording's bytes, whole.
pub fn read(path: &Path) -> Result<Vec<u8>, RecordError> {
    std::fs::read(path).map_err(|source| RecordError::Open { path: path.display().to_string(), source })
}

/// Replays a whole recording held in memory; `name` only labels errors.
/// The bytes may come from anywhere: nothing in them is opened, run or trusted.
pub fn replay_bytes(name: &str, data: &[u8]) -> Result<Replayed, RecordError> {
    let display = name.to_owned();
    let (frames, damage) = frame::read_frames(data).map_err(|source| RecordError::Format { path: display.clone(), source })?;
    let bad = |offset: u64, what: &'static str, source: Box<dyn std::error::Error + Send + Sync>| RecordError::BadFrame { path: display.clone(), offset, what, source };

    let mut frames = frames.into_iter();
    let meta: Meta = match frames.next() {
        Some(f) if f.kind == kind::META => serde_json::from_slice(f.payload).map_err(|e| bad(f.offset, "metadata", e.into()))?,
        _ => return Err(RecordError::NoMeta { path: display }),
    };
    let mut agg = Aggregator::new(meta.target.pid, &meta.plan);
    let mut facts = RecordedFacts {
        frames: HashMap::new(),
        types: HashMap::new(),
        loops: HashMap::new(),
        map_types: HashMap::new(),
        source: meta.symbols_from,
        bias: meta.load_bias,
        unresolved: UnresolvedCount::default(),
    };
    let mut progress: Option<Progress> = None;
    let mut end: Option<End> = None;
    // When the burst under way began (seconds into the session).
    let mut open_burst: Option<f64> = None;
    for f in frames {
        match f.kind {
            kind::SYMBOLS => facts.absorb(serde_json::from_slice(f.payload).map_err(|e| bad(f.offset, "symbol data", e.into()))?),
            kind::OPS => {
                for op in Op::decode_all(f.payload).map_err(|e| bad(f.offset, "events", e.into()))? {
                    match &op {
                        Op::Checkpoint(j) => progress = Some(serde_json::from_slice(j).map_err(|e| bad(f.offset, "checkpoint", e.into()))?),
                        Op::BeginBurst { t_s } => open_burst = Some(*t_s),
                        Op::EndBurst { .. } => open_burst = None,
                        _ => {}
                    }
                    feed::apply(&mut agg, &op);
                }
            }
            kind::END => {
                end = Some(serde_json::from_slice(f.payload).map_err(|e| bad(f.offset, "end record", e.into()))?);
                break;
            }
            // A newer gcprobe's frame kind: what this one knows still reports.
            _ => {}
        }
    }
    let end = match end {
        Some(e) => e,
        None => {
            let Some(progress) = progress else { return Err(RecordError::NoData { path: display }) };
            // The burst under way when the recorder died: its events are in,
            // so its time must be too, or its rates would read high.
            if let Some(t) = open_burst {
                feed::apply(&mut agg, &Op::EndBurst { window_s: (progress.elapsed_s - t).max(0.0) });
            }
            End { ended_by: crate::report::EndedBy::RecordingCutShort, progress, program_exit: None }
        }
    };
    Ok(Replayed { meta, end, agg, facts, damage, bytes: data.len() as u64 })
}
