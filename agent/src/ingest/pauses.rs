//! Stop-the-world pauses as a session keeps them: running totals per cause,
//! which every report section and metric reads, and the most recent pauses
//! one by one, for timelines and the histogram node mode exposes. A service
//! that collects once a second makes 170k pauses a day; node mode watches it
//! for weeks, so the one-by-one list is bounded and its totals are not.
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::plan::StwReason;

/// Why the world stopped: the runtime's reason code (Go 1.21+), or the caller's
/// return address, which names the reason on older runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StwCause {
    Code(u8),
    Caller(u64),
}

impl StwCause {
    pub fn code_name(code: u8) -> String {
        StwReason::from_code(code).map_or_else(|| format!("reason {code}"), |r| r.name().to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StwSpan {
    pub start_ktime: u64,
    pub duration_ns: u64,
    pub cause: StwCause,
}


/// Pauses kept one by one: 1.5 MiB per target, 9 hours of a service that
/// collects every second, and more than a session of any other mode makes.
pub const KEPT: usize = 1 << 16;

/// One cause's pauses so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CauseTotals {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Pauses {
    recent: VecDeque<StwSpan>,
    /// Pauses that left `recent`, oldest first.
    dropped: u64,
    by_cause: FxHashMap<StwCause, CauseTotals>,
    /// Causes in the order first seen, for a stable report.
    causes: Vec<StwCause>,
    total_ns: u64,
}

impl Pauses {
    pub fn push(&mut self, s: StwSpan) {
        if self.recent.len() == KEPT {
            self.recent.pop_front();
            self.dropped += 1;
        }
        self.recent.push_back(s);
        // Saturating: durations in a recording may be anything.
        self.total_ns = self.total_ns.saturating_add(s.duration_ns);
        let t = self.by_cause.entry(s.cause).or_insert_with(|| {
            self.causes.push(s.cause);
            CauseTotals::default()
        });
        t.count += 1;
        t.total_ns = t.total_ns.saturating_add(s.duration_ns);
        t.max_ns = t.max_ns.max(s.duration_ns);
    }

    /// Every pause so far.
    pub fn count(&self) -> u64 {
        self.dropped + self.recent.len() as u64
    }

    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    /// Totals per cause, in the order first seen.
    pub fn by_cause(&self) -> impl Iterator<Item = (StwCause, CauseTotals)> + '_ {
        self.causes.iter().map(|c| (*c, self.by_cause[c]))
    }

    /// The last [`KEPT`] pauses, oldest first.
    pub fn recent(&self) -> impl ExactSizeIterator<Item = &StwSpan> {
        self.recent.iter()
    }

    /// Pauses older than the ones kept (a timeline starts after them).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The pauses after the first `seen` of all, as far as they are still
    /// kept: a reader that comes back within [`KEPT`] pauses misses none.
    pub fn since(&self, seen: u64) -> impl Iterator<Item = &StwSpan> {
        self.recent.iter().skip(usize::try_from(seen.saturating_sub(self.dropped)).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u64, cause: u8) -> StwSpan {
        StwSpan { start_ktime: i * 1000, duration_ns: i, cause: StwCause::Code(cause) }
    }

    #[test]
    fn totals_cover_every_pause_and_the_list_keeps_the_last() {
        let mut p = Pauses::default();
        let n = KEPT as u64 + 10;
        for i in 1..=n {
            p.push(span(i, if i % 2 == 0 { 1 } else { 2 }));
        }
        assert_eq!((p.count(), p.dropped(), p.recent().len()), (n, 10, KEPT));
        assert_eq!(p.total_ns(), n * (n + 1) / 2);
        let by: Vec<(StwCause, CauseTotals)> = p.by_cause().collect();
        assert_eq!(by[0].0, StwCause::Code(2));
        assert_eq!(by[0].1.count + by[1].1.count, n);
        assert_eq!((by[0].1.max_ns, by[1].1.max_ns), (n - 1, n));
        assert_eq!(p.recent().next().unwrap().duration_ns, 11);
        // A reader that saw all but the last three gets those three.
        assert_eq!(p.since(n - 3).map(|s| s.duration_ns).collect::<Vec<_>>(), [n - 2, n - 1, n]);
        // One that fell behind further than the list gets what is kept.
        assert_eq!(p.since(0).count(), KEPT);
        assert_eq!(p.since(n).count(), 0);
    }
}
