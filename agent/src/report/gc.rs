//! Why the GC runs as often as it does, from the runtime's own figures: the
//! live heap each cycle marked, the goal it was paced toward, GOGC, the
//! memory limit and the allocation rate (runtime/mgcpacer.go).
use serde::{Deserialize, Serialize};

use crate::{ingest::aggregate::Aggregator, units::bytes};

/// GOGC and GOMEMLIMIT as the runtime held them at the end of the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcSettings {
    /// GOGC; -1 is off (`GOGC=off` or `debug.SetGCPercent(-1)`).
    pub gogc: i32,
    /// GOMEMLIMIT in bytes; None when no limit is set.
    pub memory_limit_bytes: Option<u64>,
    /// The heap goal's floor: 4 MiB × GOGC/100.
    pub heap_minimum_bytes: u64,
    /// Times the settings changed during the window (SetGCPercent, SetMemoryLimit).
    pub changes: usize,
}

impl GcSettings {
    pub fn from_agg(agg: &Aggregator) -> Option<Self> {
        let (_, s) = agg.settings().last()?;
        Some(Self { gogc: s.gc_percent, memory_limit_bytes: s.limit(), heap_minimum_bytes: s.heap_minimum, changes: agg.settings().len() - 1 })
    }

    pub fn gogc_text(&self) -> String {
        if self.gogc < 0 { "off".into() } else { self.gogc.to_string() }
    }

    pub fn limit_text(&self) -> String {
        self.memory_limit_bytes.map_or("none".into(), bytes)
    }
}

/// Medians over the cycles that have each figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapMedians {
    pub marked: Option<u64>,
    pub goal: Option<u64>,
    pub at_start: Option<u64>,
}

impl HeapMedians {
    pub fn from_agg(agg: &Aggregator) -> Self {
        let median = |f: &dyn Fn(&crate::ingest::aggregate::Cycle) -> Option<u64>| {
            let mut v: Vec<u64> = agg.cycles().iter().filter_map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        };
        Self { marked: median(&|c| c.marked), goal: median(&|c| c.goal), at_start: median(&|c| c.heap_at_start) }
    }
}

/// Below this many cycles a second, GC frequency needs no explaining.
const OFTEN_PER_S: f64 = 2.0;

/// One sentence on why GC runs this often, or None when it does not run
/// often or the figures to say why are missing.
pub fn explain(cycles_per_s: f64, settings: Option<&GcSettings>, heap: HeapMedians, alloc_per_s: Option<f64>) -> Option<String> {
    let s = settings?;
    if s.gogc < 0 && s.memory_limit_bytes.is_none() {
        return None;
    }
    if cycles_per_s < OFTEN_PER_S {
        return None;
    }
    let (marked, goal) = (heap.marked?, heap.goal?);
    let alloc = alloc_per_s.map(|a| format!("; allocation {}/s", bytes(a as u64))).unwrap_or_default();
    let head = format!("{cycles_per_s:.0} cycles/s");
    let gogc = format!("GOGC={}", s.gogc_text());
    if let Some(limit) = s.memory_limit_bytes {
        // The memory limit's goal is below GOGC's when cycles start well
        // short of it (runtime/mgcpacer.go heapGoalInternal picks the lower).
        if heap.at_start.is_some_and(|h| h < marked + (goal.saturating_sub(marked)) / 2) {
            return Some(format!(
                "{head}: the memory limit {} holds the heap near {}, below the GOGC goal {}; live heap {}; {gogc}{alloc}",
                bytes(limit),
                bytes(heap.at_start.unwrap_or(0)),
                bytes(goal),
                bytes(marked)
            ));
        }
    }
    if goal <= s.heap_minimum_bytes + s.heap_minimum_bytes / 8 && marked < s.heap_minimum_bytes {
        return Some(format!(
            "{head}: live heap {} is under the {} minimum goal; {gogc}{alloc}: each cycle is started by {} of new allocation",
            bytes(marked),
            bytes(s.heap_minimum_bytes),
            bytes(goal.saturating_sub(marked))
        ));
    }
    Some(format!(
        "{head}: each cycle lets the heap grow {} over the {} live heap before the next ({gogc}, goal {}){alloc}",
        bytes(goal.saturating_sub(marked)),
        bytes(marked),
        bytes(goal)
    ))
}

/// Why the heap figures are missing, for the report.
pub fn unavailable(plan_reason: Option<&str>, agg: &Aggregator) -> Option<String> {
    if let Some(r) = plan_reason {
        return Some(r.to_owned());
    }
    if agg.counts().cycles > 0 && agg.cycles().iter().all(|c| c.heap_at_start.is_none()) {
        return Some("the kernel could not read runtime.gcController at the pauses".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(gogc: i32, limit: Option<u64>) -> GcSettings {
        GcSettings { gogc, memory_limit_bytes: limit, heap_minimum_bytes: (4u64 << 20) * gogc.max(0) as u64 / 100, changes: 0 }
    }

    #[test]
    fn a_tiny_heap_under_the_minimum_goal() {
        let heap = HeapMedians { marked: Some(1_887_437), goal: Some(4 << 20), at_start: Some(3_900_000) };
        let why = explain(224.0, Some(&settings(100, None)), heap, Some(900.0 * (1 << 20) as f64)).unwrap();
        assert_eq!(why, "224 cycles/s: live heap 1.8 MiB is under the 4.0 MiB minimum goal; GOGC=100; allocation 900.0 MiB/s: each cycle is started by 2.2 MiB of new allocation");
    }

    #[test]
    fn a_tight_memory_limit() {
        let heap = HeapMedians { marked: Some(60 << 20), goal: Some(120 << 20), at_start: Some(70 << 20) };
        let why = explain(40.0, Some(&settings(100, Some(80 << 20))), heap, None).unwrap();
        assert!(why.starts_with("40 cycles/s: the memory limit 80.0 MiB holds the heap near 70.0 MiB, below the GOGC goal 120.0 MiB"), "{why}");
    }

    #[test]
    fn ordinary_pacing_and_the_quiet_cases() {
        let heap = HeapMedians { marked: Some(100 << 20), goal: Some(200 << 20), at_start: Some(190 << 20) };
        let why = explain(5.0, Some(&settings(100, None)), heap, None).unwrap();
        assert_eq!(why, "5 cycles/s: each cycle lets the heap grow 100.0 MiB over the 100.0 MiB live heap before the next (GOGC=100, goal 200.0 MiB)");
        assert_eq!(explain(0.5, Some(&settings(100, None)), heap, None), None);
        assert_eq!(explain(50.0, None, heap, None), None);
        assert_eq!(explain(50.0, Some(&settings(100, None)), HeapMedians::default(), None), None);
        assert_eq!(explain(50.0, Some(&settings(-1, None)), heap, None), None);
    }
}
