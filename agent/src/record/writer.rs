//! Writes a recording as the session runs.
use std::{
    collections::HashSet,
    fs::File,
    io::{Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

use super::{frame::{FrameError, FrameWriter}, kind, End, Meta, Progress, RecordError, Symbols};
use crate::{
    analysis::facts::Facts,
    ingest::{feed::Feed, ops::Op},
    outfile::{self, Access, Existing, OutputError},
    report,
};

/// Ops are handed to the file at every flush tick, or sooner once this many
/// bytes wait: what a crash can lose, and what the recorder holds in memory.
pub const FLUSH_BYTES: usize = 1 << 20;

pub struct Recorder {
    out: FrameWriter<File>,
    path: PathBuf,
    seen_pcs: HashSet<u64>,
    /// Return addresses whose loop is written already.
    seen_loop_pcs: HashSet<u64>,
    seen_types: HashSet<u64>,
    /// A map type can also be a slice's element type ([]map[K]V): its own set.
    seen_map_types: HashSet<u64>,
}

impl Recorder {
    /// Creates the file (refusing to replace one unless `force`) and writes
    /// its header: done before attaching, so a bad path costs the target nothing.
    pub fn create(path: &Path, force: bool) -> Result<Self, RecordError> {
        let display = path.display().to_string();
        let existing = if force { Existing::Replace } else { Existing::Refuse };
        let file = outfile::create(path, existing, Access::Private).map_err(|e| match e {
            OutputError::Exists { .. } => RecordError::Exists { path: display.clone() },
            other => RecordError::Create(other),
        })?;
        let out = FrameWriter::new(file).map_err(|source| RecordError::Write { path: display, source })?;
        Ok(Self { out, path: path.to_owned(), seen_pcs: HashSet::new(), seen_loop_pcs: HashSet::new(), seen_types: HashSet::new(), seen_map_types: HashSet::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&mut self, meta: &Meta) -> Result<(), RecordError> {
        let json = serde_json::to_vec(meta).expect("meta serializes");
        self.frame(kind::META, &json)
    }

    /// Writes what the feed gathered since the last flush: first the facts
    /// about new stacks and types (so a cut in between loses events, never
    /// the names of events kept), then the ops, closed by `progress`.
    pub fn flush(&mut self, feed: &mut Feed, facts: &mut dyn Facts, progress: &Progress) -> Result<(), RecordError> {
        let (mut ops, fresh) = feed.take_log();
        let mut syms = Symbols::default();
        for stack in fresh.stacks.iter().chain(&fresh.grow_stacks) {
            for &pc in stack.iter() {
                if self.seen_pcs.insert(pc) {
                    syms.frames.push((pc, facts.frames(pc).to_vec()));
                }
            }
        }
        // Each growslice stack is new here once (the aggregator lists a
        // stack when it first enters): its loop is looked for once.
        for stack in &fresh.grow_stacks {
            syms.loops.push((stack.to_vec(), report::growslice_loop(facts, stack)));
            // The loop around each call on the stack, one return address
            // each: a report finds the owner's loop among them (analysis::owner).
            for &pc in stack.iter().take(crate::analysis::owner::RECORDED_LOOP_PCS) {
                if self.seen_loop_pcs.insert(pc) {
                    syms.loops.push((vec![pc], crate::analysis::owner::loop_at(facts, pc)));
                }
            }
        }
        for &t in &fresh.types {
            if self.seen_types.insert(t) {
                syms.types.push((t, facts.elem_type(t)));
            }
        }
        for &t in &fresh.map_types {
            if self.seen_map_types.insert(t) {
                syms.map_types.push((t, facts.map_type(t)));
            }
        }
        if !syms.is_empty() {
            let json = serde_json::to_vec(&syms).expect("symbols serialize");
            self.frame(kind::SYMBOLS, &json)?;
        }
        let json = serde_json::to_vec(progress).expect("progress serializes");
        Op::Checkpoint(&json).encode(&mut ops);
        self.frame(kind::OPS, &ops)
    }

    /// The last flush and the END frame, then the data to disk.
    pub fn finish(mut self, feed: &mut Feed, facts: &mut dyn Facts, end: &End) -> Result<u64, RecordError> {
        self.flush(feed, facts, &end.progress)?;
        let json = serde_json::to_vec(end).expect("end serializes");
        self.frame(kind::END, &json)?;
        let file = self.out.into_inner();
        file.sync_data().map_err(|e| RecordError::Write { path: self.path.display().to_string(), source: FrameError::write(e) })?;
        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), RecordError> {
        self.out.frame(kind, payload).map_err(|source| {
            // A full disk takes part of a frame: cut it off, so the file ends
            // on a whole frame (the reader would stop there anyway, but a
            // file that ends clean reads the same to any tool) and a later
            // write, if any, starts on a frame's boundary.
            let whole = self.out.whole_len();
            let file = self.out.get_mut();
            let _ = file.set_len(whole);
            let _ = file.seek(SeekFrom::Start(whole));
            RecordError::Write { path: self.path.display().to_string(), source }
        })
    }
}
