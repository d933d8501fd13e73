//! The one way into the aggregator. Every change a session makes to it goes
//! through a [`Feed`] as an [`Op`]; when recording, the feed also keeps the
//! ops for the recorder, and a replay applies the same ops in the same order
//! to reach the same state. Live and recorded reports agree by construction.
use std::{collections::BTreeMap, time::Instant};

use gcprobe_common::{AggKey, AggValue};

use crate::{
    ingest::aggregate::{Aggregator, Fresh},
    ingest::events,
    ingest::ops::Op,
};

/// Every target's feed: the one kernel object's ring and totals hold all
/// targets' records, each naming its process.
#[derive(Default)]
pub struct Feeds {
    by_pid: BTreeMap<u32, Feed>,
}

impl Feeds {
    pub fn insert(&mut self, pid: u32, feed: Feed) {
        self.by_pid.insert(pid, feed);
    }

    /// A target's books leave with it (node mode keeps no report of a process that is gone).
    pub fn remove(&mut self, pid: u32) -> Option<Feed> {
        self.by_pid.remove(&pid)
    }

    pub fn get(&self, pid: u32) -> Option<&Feed> {
        self.by_pid.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Feed> {
        self.by_pid.get_mut(&pid)
    }

    /// A ring record to the feed of the process that sent it. A record of
    /// no current target (one that has ended) is dropped; one too short to
    /// name its process goes to the first feed, which counts it undecodable.
    pub fn ring(&mut self, raw: &[u8]) {
        let feed = match events::sender(raw) {
            Some(pid) => self.by_pid.get_mut(&pid),
            None => self.by_pid.values_mut().next(),
        };
        if let Some(f) = feed {
            f.ring(raw);
        }
    }

    /// The kernel's running totals of every target, each to its own feed.
    pub fn kernel_totals(&mut self, totals: &[(AggKey, AggValue)]) {
        let mut by_pid: BTreeMap<u32, Vec<(AggKey, AggValue)>> = BTreeMap::new();
        for &(k, v) in totals {
            by_pid.entry(k.tgid).or_default().push((k, v));
        }
        for (pid, t) in by_pid {
            if let Some(f) = self.by_pid.get_mut(&pid) {
                f.kernel_totals(&t);
            }
        }
    }
}

pub struct Feed {
    pub agg: Aggregator,
    started: Instant,
    /// Encoded ops not yet handed to the recorder (None: not recording).
    log: Option<Vec<u8>>,
    /// Encoded ops not yet handed to a history (None: none kept; see ingest::history).
    tap: Option<Vec<u8>>,
}

impl Feed {
    pub fn new(agg: Aggregator) -> Self {
        Self { agg, started: Instant::now(), log: None, tap: None }
    }

    /// Keeps every op from now on for a recorder, and lists new stacks and
    /// types in the aggregator for it to symbolize.
    pub fn recording(mut self) -> Self {
        self.log = Some(Vec::new());
        self.agg.fresh = Some(Fresh::default());
        self
    }

    /// Keeps every op from now on for a history (see [`Feed::take_tap`]).
    pub fn tapped(mut self) -> Self {
        self.tap = Some(Vec::new());
        self
    }

    /// The ops since the last call, encoded, for a history.
    pub fn take_tap(&mut self) -> Vec<u8> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A recording continues in a new file from here: the file must stand
    /// alone, so it starts with what the kernel's later totals are read
    /// against (its stack table and running totals), and every stack and
    /// type known so far is listed again for the new recorder to name.
    pub fn continue_recording(&mut self) {
        let (stacks, seen, callers) = self.agg.decode_state();
        let mut log = Vec::new();
        Op::AggStacks(stacks).encode(&mut log);
        Op::AggSeen(seen).encode(&mut log);
        Op::GrowthCallers(callers).encode(&mut log);
        self.log = Some(log);
        self.agg.list_all_fresh();
    }

    /// Bytes of ops waiting for the recorder.
    pub fn pending(&self) -> usize {
        self.log.as_ref().map_or(0, Vec::len)
    }

    /// The ops so far, and what they brought in, for the recorder.
    pub fn take_log(&mut self) -> (Vec<u8>, Fresh) {
        (self.log.as_mut().map(std::mem::take).unwrap_or_default(), self.agg.fresh.as_mut().map(std::mem::take).unwrap_or_default())
    }

    fn log(&mut self, op: &Op<'_>) {
        if let Some(l) = &mut self.log {
            op.encode(l);
        }
        if let Some(t) = &mut self.tap {
            op.encode(t);
        }
    }

    /// Logs `op` and applies it as a replay will.
    fn push(&mut self, op: Op<'_>) {
        self.log(&op);
        apply(&mut self.agg, &op);
    }

    /// One ring-buffer record, as read.
    pub fn ring(&mut self, raw: &[u8]) {
        self.push(Op::Ring(raw));
    }

    /// The kernel's running totals, as read.
    pub fn kernel_totals(&mut self, totals: &[(AggKey, AggValue)]) {
        let applied = self.agg.add_kernel_totals(totals);
        if !applied.is_empty() {
            self.log(&Op::Totals(applied));
        }
    }

    pub fn begin_burst(&mut self) {
        self.push(Op::BeginBurst { t_s: self.started.elapsed().as_secs_f64() });
    }

    pub fn end_burst(&mut self, window_s: f64) {
        self.push(Op::EndBurst { window_s });
    }

    /// runtime.MemProfileRate as read from the target (an `int`: negative
    /// values disable profiling like 0 does).
    pub fn mem_profile_rate(&mut self, raw: u64) {
        self.push(Op::MemProfileRate(if (raw as i64) < 0 { 0 } else { raw }));
    }

    /// The GC controller's settings and allocation total, read at `ktime`
    /// (CLOCK_MONOTONIC, the events' clock).
    pub fn gc_settings(&mut self, ktime: u64, settings: crate::tracee::gcctl::Settings) {
        self.push(Op::GcSettings { ktime, settings });
    }

    /// Samples the busiest maps' lengths through `read`, at `ktime`.
    pub fn map_lens(&mut self, ktime: u64, mut read: impl FnMut(u64) -> Option<u64>) {
        let mut reads = Vec::new();
        self.agg.sample_map_lens(ktime, |addr| {
            let v = read(addr);
            reads.push((addr, v));
            v
        });
        if !reads.is_empty() {
            self.log(&Op::MapLensAt { ktime, reads });
        }
    }
}

/// Replays one recorded op. Checkpoints carry no aggregator state and are
/// the reader's business.
pub fn apply(agg: &mut Aggregator, op: &Op<'_>) {
    match op {
        Op::Ring(raw) => {
            agg.ring_records += 1;
            agg.ring_bytes += raw.len() as u64;
            for ev in events::decode_record(raw) {
                match ev {
                    Ok(ev) => agg.add(&ev),
                    Err(_) => agg.add_undecodable(),
                }
            }
        }
        Op::Totals(t) => {
            agg.add_kernel_totals(t);
        }
        Op::BeginBurst { .. } => agg.begin_burst(),
        Op::EndBurst { window_s } => agg.end_burst(*window_s),
        Op::MemProfileRate(r) => agg.mem_profile_rate = Some(*r),
        // Recordings from before MapLensAt sampled at GCs: the last event's time stands in.
        Op::MapLens(reads) => agg.sample_map_lens(agg.last_ktime(), |addr| reads.iter().find(|r| r.0 == addr).and_then(|r| r.1)),
        Op::MapLensAt { ktime, reads } => agg.sample_map_lens(*ktime, |addr| reads.iter().find(|r| r.0 == addr).and_then(|r| r.1)),
        Op::GcSettings { ktime, settings } => agg.gc_settings(*ktime, *settings),
        Op::AggStacks(stacks) => agg.define_agg_stacks(stacks),
        Op::AggSeen(seen) => agg.set_agg_seen(seen),
        Op::GrowthCallers(pcs) => agg.set_growth_callers(*pcs),
        Op::Checkpoint(_) => {}
    }
}
