//! The recent past of one target's books, for a report over the last few
//! minutes (node mode's `/report?window=60s`).
//!
//! The books cannot be taken apart by time: the kernel's running totals,
//! the table of stacks its counts refer to, open pauses and append runs
//! all carry over from before. So the history keeps what rebuilds them: a
//! copy of the books as they stood at its start, and every op since, in
//! chunks of one flush tick each. A report from `t` replays the copy up to
//! `t`, zeroes its counts but keeps that decoding state
//! ([`Aggregator::restart`]), and replays the rest. Old chunks are folded
//! into the copy, so the history spans at most `span` and `max_bytes`.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{aggregate::Aggregator, feed::apply, ops::Op};


struct Chunk<T: Copy> {
    /// When the chunk was sealed, and what was read beside it then.
    end: Instant,
    beside: T,
    ops: Vec<u8>,
}

pub struct History<T: Copy> {
    /// The books at `base_at`, with what was read beside them then.
    base: Aggregator,
    base_at: Instant,
    base_beside: T,
    sealed: VecDeque<Chunk<T>>,
    bytes: usize,
    span: Duration,
    max_bytes: usize,
}

/// A window's books and its bounds.
pub struct Window<T: Copy> {
    pub agg: Aggregator,
    /// When it starts (a chunk's end, at or before the time asked for, or
    /// the history's start when that is later).
    pub from: Instant,
    /// What was read beside the books then.
    pub beside_then: T,
}

impl<T: Copy> History<T> {
    /// Starts with the books as they stand (`base`, a copy) now.
    pub fn new(base: Aggregator, beside: T, span: Duration, max_bytes: usize) -> Self {
        Self { base, base_at: Instant::now(), base_beside: beside, sealed: VecDeque::new(), bytes: 0, span, max_bytes }
    }

    /// A chunk: the ops the live books took since the last one (encoded, as
    /// `Feed::take_tap` gives them), sealed at `now` with what was read
    /// beside the books. What is older than the span, or over the byte
    /// cap, is folded into the base.
    pub fn seal(&mut self, now: Instant, beside: T, ops: Vec<u8>) {
        self.bytes += ops.len();
        self.sealed.push_back(Chunk { end: now, beside, ops });
        while let Some(c) = self.sealed.front() {
            let old = now.duration_since(c.end) > self.span || self.bytes > self.max_bytes;
            if !old || self.sealed.len() == 1 {
                break;
            }
            let c = self.sealed.pop_front().expect("checked");
            self.bytes -= c.ops.len();
            replay(&mut self.base, &c.ops);
            (self.base_at, self.base_beside) = (c.end, c.beside);
        }
    }

    /// The end of the latest chunk (or the base) whose reading beside the
    /// books satisfies `pred`, if any.
    pub fn last_where(&self, pred: impl Fn(&T) -> bool) -> Option<Instant> {
        self.sealed.iter().rev().find(|c| pred(&c.beside)).map(|c| c.end).or_else(|| pred(&self.base_beside).then_some(self.base_at))
    }

    /// How far back a window can reach now.
    pub fn reach(&self, now: Instant) -> Duration {
        now.duration_since(self.base_at)
    }

    /// The books of the time since `from` (as near as a chunk's end allows),
    /// rebuilt from the base, up to the last chunk sealed.
    pub fn since(&self, from: Instant) -> Window<T> {
        let mut agg = self.base.clone();
        let (mut start, mut beside_then) = (self.base_at, self.base_beside);
        let mut chunks = self.sealed.iter().peekable();
        while let Some(c) = chunks.next_if(|c| c.end <= from) {
            replay(&mut agg, &c.ops);
            (start, beside_then) = (c.end, c.beside);
        }
        agg.restart();
        for c in chunks {
            replay(&mut agg, &c.ops);
        }
        Window { agg, from: start, beside_then }
    }
}

/// Applies a chunk's ops. They were encoded here from ops the live books
/// took, so they decode; a chunk that did not would only lose its ops.
fn replay(agg: &mut Aggregator, ops: &[u8]) {
    if let Ok(ops) = Op::decode_all(ops) {
        for op in &ops {
            apply(agg, op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan::ProbePlan, tracee::buildinfo::GoVersion};

    fn ops(list: &[Op<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in list {
            op.encode(&mut out);
        }
        out
    }

    fn burst(window_s: f64) -> Vec<u8> {
        ops(&[Op::BeginBurst { t_s: 0.0 }, Op::EndBurst { window_s }])
    }

    #[test]
    fn a_window_replays_from_the_chunk_before_it_with_counts_restarted() {
        let plan = ProbePlan::for_test(GoVersion::new(1, 24, 0));
        let t0 = Instant::now();
        let mut h = History::new(Aggregator::new(1, &plan), 0u32, Duration::from_secs(60), 1 << 20);
        let at = |s: u64| t0 + Duration::from_secs(s);
        h.seal(at(1), 1, burst(0.5));
        h.seal(at(2), 2, burst(0.25));
        h.seal(at(3), 3, burst(0.125));
        // From 2 s on: the chunk sealed at 2 s is replayed, then counts restart.
        let w = h.since(at(2));
        assert_eq!((w.from, w.beside_then, w.agg.bursts().n, w.agg.bursts().window_s), (at(2), 2, 1, 0.125));
        // From before any chunk: everything since the base.
        let all = h.since(t0);
        assert_eq!((all.agg.bursts().n, all.agg.bursts().window_s), (3, 0.875));
        assert_eq!(h.last_where(|&b| b < 3), Some(at(2)));
        assert_eq!(h.last_where(|&b| b > 9), None);
    }

    #[test]
    fn old_chunks_fold_into_the_base_and_the_reach_shrinks() {
        let plan = ProbePlan::for_test(GoVersion::new(1, 24, 0));
        let t0 = Instant::now();
        let mut h = History::new(Aggregator::new(1, &plan), 0u32, Duration::from_secs(5), 1 << 20);
        for s in 1..=10 {
            h.seal(t0 + Duration::from_secs(s), s as u32, burst(1.0));
        }
        let now = t0 + Duration::from_secs(10);
        // Chunks that ended over 5 s ago went into the base: a window
        // reaches back 5 s and the chunk that ended then.
        assert_eq!(h.reach(now), Duration::from_secs(6));
        let w = h.since(t0);
        assert_eq!((w.from, w.beside_then, w.agg.bursts().n), (t0 + Duration::from_secs(4), 4, 6));
    }
}
