//! Which callsites are culprits, what they cost, and what to change.
//!
//! Rules of thumb (the published thresholds): growslice above 30% of
//! allocated bytes means slices grow without preallocation; a stop-the-world
//! longer than 5 ms is a pause users notice.
use crate::{
    analysis::{appendloop::LoopReport, owner::{self, AppScope}},
    tracee::frame::Frame,
    analysis::diagnose,
    units::{bytes, short, si},
    analysis::facts::Facts,
    analysis::rows::{Callsite, Culprit, HeapSample, MapReport, RowProbe},
};

pub const GROWSLICE_SHARE_WARN: f64 = 0.30;
pub const STW_WARN_NS: u64 = 5_000_000;
/// A callsite must carry at least this share of bytes to be named a culprit...
const MIN_SHARE: f64 = 0.05;
/// ...and have grown a slice at least this many times, so one-off growth of a
/// long-lived slice is not blamed.
const MIN_GROWTHS: u64 = 20;

/// Culprits, worst first: growslice callsites with a share of the bytes, a
/// fix in code the owner writes, and a saving. The row carrying most of the
/// growslice bytes is always considered, however few growths a sampled
/// session saw of it, so the culprits never contradict TOP CALLSITES.
pub fn rank(callsites: &[Callsite], duration_s: f64, total_bytes: u64, facts: &mut dyn Facts, scope: &AppScope) -> Vec<Culprit> {
    let grow_bytes = callsites.iter().filter(|c| c.probe == RowProbe::Growslice).fold(0u64, |sum, c| sum.saturating_add(c.bytes));
    // Halved, not doubled: a recording's byte counts may be near 2^64.
    let dominant = |c: &Callsite| c.bytes > grow_bytes / 2 && c.count >= 2;
    let mut out: Vec<Culprit> = callsites
        .iter()
        .filter(|c| c.probe == RowProbe::Growslice && c.share_of_bytes >= MIN_SHARE && (c.count >= MIN_GROWTHS || dominant(c)))
        .filter(|c| generated_frame(c).is_none())
        .map(|c| {
            let per_s = c.count as f64 / duration_s.max(1e-9);
            let mean_len = c.mean_new_len.map(|l| format!(", growing to {l:.0} elements on average")).unwrap_or_default();
            let d = c.evidence.as_ref().map(|ev| diagnose::diagnose(facts, &c.function, ev, duration_s, total_bytes));
            let default_fix = "preallocate before the loop: make([]T, 0, n) with n the expected length (len(m) when ranging over a map or slice), or reuse one buffer across calls";
            let suggestion = d.as_ref().map(|d| d.suggestion.clone()).unwrap_or_else(|| default_fix.into());
            let owner = owner_context(c, facts, scope);
            Culprit {
                summary: summary(c, d.as_ref(), owner.as_ref(), &suggestion),
                app_frame: owner.as_ref().map(|o| o.0.clone()),
                app_loop: owner.and_then(|o| o.1),
                loop_: d.as_ref().and_then(|d| d.loop_.clone()),
                elem_type: d.as_ref().and_then(|d| d.elem_type.clone()),
                per_call: d.as_ref().and_then(|d| d.per_call.clone()),
                expected_saving: d.as_ref().and_then(|d| d.expected_saving.clone()),
                rank: 0,
                function: c.function.clone(),
                file: c.file.clone(),
                line: c.line,
                kind: "append-growth".into(),
                share_of_bytes: c.share_of_bytes,
                share_of_allocs: c.share_of_allocs,
                evidence: format!(
                    "append called runtime.growslice {} times ({}/s){mean_len}; the reallocations took {} ({:.1}% of all bytes allocated)",
                    c.count,
                    si(per_s),
                    bytes(c.bytes),
                    c.share_of_bytes * 100.0
                ),
                suggestion,
            }
        })
        // A fix that saves nothing is no fix.
        .filter(|c| c.expected_saving.as_ref().is_none_or(|s| s.bytes_per_s >= 1.0 && s.share_of_bytes >= 0.005))
        .collect();
    out.sort_by(|a, b| b.share_of_bytes.total_cmp(&a.share_of_bytes));
    for (i, c) in out.iter_mut().enumerate() {
        c.rank = i as u32 + 1;
    }
    out
}

/// When a library grows the slice: the owner's frame that calls into it,
/// and the loop of theirs around that call (None for an append in their
/// own code, which the culprit already names).
fn owner_context(c: &Callsite, facts: &mut dyn Facts, scope: &AppScope) -> Option<(Frame, Option<LoopReport>)> {
    if scope.owns(&c.function) {
        return None;
    }
    let frame = c.app_frame.clone()?;
    let lp = c.evidence.as_ref().and_then(|ev| owner::owner_loop(facts, scope, &ev.stack));
    Some((frame, lp))
}

/// " inside a map loop over m (line 12)", or nothing.
fn loop_phrase(l: Option<&LoopReport>) -> String {
    let Some(l) = l else { return String::new() };
    let over = l.over.as_ref().map(|o| format!(" over {o}")).unwrap_or_default();
    let line = l.line.map(|n| format!(" (line {n})")).unwrap_or_default();
    let article = if l.kind.name().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!(" inside {article} {} loop{over}{line}", l.kind)
}

/// The one sentence a culprit leads with.
fn summary(c: &Callsite, d: Option<&crate::analysis::diagnose::Diagnosis>, owner: Option<&(Frame, Option<LoopReport>)>, fix: &str) -> String {
    let at = match (&c.file, c.line) {
        (Some(f), Some(l)) => format!("{}:{l}", short(f)),
        _ => "?".into(),
    };
    let ty = d.and_then(|d| d.elem_type.as_ref()).map(|t| format!("[]{}", t.name)).unwrap_or_else(|| "a slice".into());
    let lp = loop_phrase(d.and_then(|d| d.loop_.as_ref()));
    let by_owner = owner.map_or(String::new(), |(f, l)| {
        let at = f.file.as_deref().zip(f.line).map(|(file, n)| format!(" at {}:{n}", short(file))).unwrap_or_default();
        // The loop may be in a caller of that function: name its file. The
        // append's own loop, found up the stack, may be it already.
        let lp = l.as_ref().filter(|l| d.and_then(|d| d.loop_.as_ref()) != Some(*l)).map_or(String::new(), |l| {
            let at = l.file.as_deref().zip(l.line).map(|(file, n)| format!(" at {}:{n}", short(file))).unwrap_or_default();
            let over = l.over.as_ref().map(|o| format!(" over {o}")).unwrap_or_default();
            format!(", inside your {} loop{over}{at}", l.kind)
        });
        format!(" Your code calls it from {}{at}{lp}.", f.function)
    });
    let per_call = match d.and_then(|d| d.per_call.as_ref()) {
        Some(p) => format!(", {:.1} growslice calls per call{}", p.growslice, p.final_len.zip(p.final_cap).map(|(l, c)| format!(" to reach {l:.0}–{c:.0} elements")).unwrap_or_default()),
        None => String::new(),
    };
    format!("{} grows {ty} at {at}{lp}{per_call}: {:.0}% of allocated bytes.{by_owner} Fix: {fix}.", c.function, c.share_of_bytes * 100.0)
}

/// Generated code the owner does not edit, by Go's file-naming conventions
/// for it: protobuf (`.pb.go`, `.pb.gw.go`), `_gen.go`, `zz_generated…`.
/// (Only the name: a report must read the same from a recording on a
/// machine without the sources.)
pub fn is_generated(file: &str) -> bool {
    let name = short(file);
    name.ends_with(".pb.go") || name.ends_with(".pb.gw.go") || name.ends_with("_gen.go") || name.starts_with("zz_generated")
}

/// The callsite's frame when it lies in generated code.
fn generated_frame(c: &Callsite) -> Option<&str> {
    c.file.as_deref().filter(|f| is_generated(f))
}

/// Growth inside generated code is per-request serialization, not a
/// missing make(): say so, and name the first caller the owner writes.
pub fn generated_code_notes(callsites: &[Callsite]) -> Vec<String> {
    callsites
        .iter()
        .filter(|c| c.probe == RowProbe::Growslice && c.share_of_bytes >= MIN_SHARE)
        .filter_map(|c| {
            let file = generated_frame(c)?;
            let caller = c.frames.iter().find(|f| f.file.as_deref().is_some_and(|f| !is_generated(f)) && !f.is_runtime());
            Some(format!(
                "{:.0}% of allocated bytes grow slices in generated code ({} at {}:{}){}: this is per-request serialization cost, not a missing make(); reuse buffers or shrink the messages there",
                c.share_of_bytes * 100.0,
                c.function,
                short(file),
                c.line.unwrap_or(0),
                caller.map(|f| format!(", called from {} at {}:{}", f.function, f.file.as_deref().map(short).unwrap_or("?"), f.line.unwrap_or(0))).unwrap_or_default()
            ))
        })
        .collect()
}

/// The share of all allocated bytes that went to growing slices (0–1). One
/// definition for the rule of thumb and `--fail-on growslice.share`.
pub fn growslice_share(callsites: &[Callsite]) -> f64 {
    callsites.iter().filter(|c| c.probe == RowProbe::Growslice).map(|c| c.share_of_bytes).sum()
}

pub fn rules_of_thumb(callsites: &[Callsite], stws: &[(u64, String)]) -> Vec<String> {
    let mut w = Vec::new();
    let long_stws: Vec<_> = stws.iter().filter(|(d, _)| *d > STW_WARN_NS).collect();
    let grow = growslice_share(callsites);
    if grow > GROWSLICE_SHARE_WARN {
        w.push(format!(
            "growslice accounts for {:.0}% of allocated bytes (rule of thumb: above 30%, slices are growing without preallocation)",
            grow * 100.0
        ));
    }
    if let Some((max, reason)) = long_stws.iter().max_by_key(|(d, _)| *d) {
        w.push(format!(
            "{} stop-the-world pause(s) exceeded 5 ms; the longest was {:.1} ms ({reason})",
            long_stws.len(),
            *max as f64 / 1e6
        ));
    }
    w
}

/// GC cycles over which a map must be watched before it is called a leak.
pub const LEAK_MIN_CYCLES: u64 = 3;

/// Length reads (about one a second, and at each GC) that make a verdict:
/// at least this many, spanning at least this long. A leaking service may
/// collect once a minute, so GC cycles cannot be the clock.
const LEAK_MIN_SAMPLES: usize = 4;
const LEAK_MIN_SPAN_NS: u64 = 3_000_000_000;

/// A map that only grows (a cache never pruned): over its length reads
/// `(ktime, len)` it never fell, rose in most intervals, and grew by at
/// least 1% and 100 entries. A bounded map churns at its bound; a map
/// filled once levels off. Without length reads: growth in LEAK_MIN_CYCLES
/// GC cycles spread over at least half the window.
pub fn map_leaks(lens: &[(u64, u64)], cycles_growing: u64, growth_spread: f64) -> bool {
    if lens.len() >= 2 {
        let (first, last) = (lens[0], lens[lens.len() - 1]);
        if lens.len() < LEAK_MIN_SAMPLES || last.0.saturating_sub(first.0) < LEAK_MIN_SPAN_NS {
            return false;
        }
        let never_shrank = lens.windows(2).all(|w| w[1].1 >= w[0].1);
        let rose = lens.windows(2).filter(|w| w[1].1 > w[0].1).count();
        let grew = last.1.saturating_sub(first.1);
        return never_shrank && rose * 5 >= (lens.len() - 1) * 3 && grew >= 100 && grew * 100 >= first.1;
    }
    cycles_growing >= LEAK_MIN_CYCLES && growth_spread >= 0.5
}

/// Entries per second between the first and last length reads.
pub fn map_growth_per_s(lens: &[(u64, u64)]) -> Option<f64> {
    let (first, last) = (lens.first()?, lens.last()?);
    let dt = last.0.checked_sub(first.0).filter(|&d| d > 0)? as f64 / 1e9;
    Some((last.1 as f64 - first.1 as f64) / dt)
}

/// A steady climb, not GC noise: over at least 6 samples, each third's mean
/// above the one before, the last a quarter above the first.
/// The heap figure a climb is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapSeries {
    /// What each cycle marked live: a leak grows it directly.
    Marked,
    /// The heap each cycle started at, where marked bytes were not read.
    AtStart,
}

impl HeapSeries {
    pub const fn name(self) -> &'static str {
        match self {
            HeapSeries::Marked => "live heap marked by each cycle",
            HeapSeries::AtStart => "heap at each cycle's start",
        }
    }
}

/// The series a leak shows in. The heap at a cycle's start is paced to the goal, which
/// never falls below the runtime's 4 MiB minimum (gcController.heapMinimum): a leak that
/// is still under it leaves that series flat while the marked bytes climb. The last cycle
/// may still be marking, so it alone may lack them.
pub fn leak_series(heap: &[HeapSample]) -> (HeapSeries, Vec<u64>) {
    let marked: Vec<u64> = heap.iter().filter_map(|h| h.marked).collect();
    if marked.len() >= CLIMB_MIN_SAMPLES && marked.len() + 1 >= heap.len() {
        (HeapSeries::Marked, marked)
    } else {
        (HeapSeries::AtStart, heap.iter().map(|h| h.bytes).collect())
    }
}

/// Fewer cycles than this say nothing about a trend.
const CLIMB_MIN_SAMPLES: usize = 6;

pub fn climbing(series: &[u64]) -> bool {
    if series.len() < CLIMB_MIN_SAMPLES {
        return false;
    }
    let third = series.len() / 3;
    // Summed as f64: heap figures read from a recording may be anything, and a u64 sum could overflow.
    let mean = |s: &[u64]| s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
    let (a, b, c) = (mean(&series[..third]), mean(&series[third..series.len() - third]), mean(&series[series.len() - third..]));
    a < b && b < c && c >= a * 1.25
}

/// Cycles with marked bytes that make a growth rate: two points always fit a line.
pub const GROWTH_MIN_CYCLES: usize = 3;

/// The live heap's growth over the window, bytes per second: the least-squares slope of the
/// bytes each cycle marked live against the cycle's start time. Marked bytes only, never the
/// heap at a cycle's start: that one is paced to the goal (never under gcController.heapMinimum,
/// 4 MiB) and carries the garbage allocated since the last cycle, so its slope follows GOGC and
/// the allocation rate, not what stays live (runtime/mgc.go gcMark resets heapLive to the
/// marked bytes). A shrinking heap has a negative slope. None with fewer than
/// GROWTH_MIN_CYCLES cycles that have marked bytes, or when they all started at one time.
pub fn live_growth(heap: &[HeapSample]) -> Option<f64> {
    let points: Vec<(f64, f64)> = heap.iter().filter_map(|h| Some((h.t_s, h.marked? as f64))).collect();
    if points.len() < GROWTH_MIN_CYCLES {
        return None;
    }
    let n = points.len() as f64;
    let (t_mean, y_mean) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let spread: f64 = points.iter().map(|p| (p.0 - t_mean).powi(2)).sum();
    let slope = points.iter().map(|p| (p.0 - t_mean) * (p.1 - y_mean)).sum::<f64>() / spread;
    slope.is_finite().then_some(slope)
}

/// The largest live heap a cycle marked; None when no cycle's marked bytes were read.
pub fn live_max(heap: &[HeapSample]) -> Option<u64> {
    heap.iter().filter_map(|h| h.marked).max()
}

pub fn leak_warnings(maps: &[MapReport], heap: &[HeapSample], heap_climbing: bool) -> Vec<String> {
    let mut w = Vec::new();
    let suspects: Vec<_> = maps.iter().filter(|m| m.likely_leak).collect();
    for m in suspects.iter().take(3) {
        w.push(format!("likely leak: {}", m.summary.as_deref().unwrap_or("a map only grows")));
    }
    if heap_climbing {
        let (which, series) = leak_series(heap);
        let (a, b) = (series.first().copied().unwrap_or(0), series.last().copied().unwrap_or(0));
        // The rate `heap.live_growth` gates on, said only of the series it is the slope of.
        let rate = live_growth(heap).filter(|g| which == HeapSeries::Marked && *g > 0.0).map(|g| format!(", {}/s", bytes(g as u64))).unwrap_or_default();
        w.push(format!(
            "the live heap climbed from {} to {} over {} GC cycles{rate}{}",
            bytes(a),
            bytes(b),
            series.len(),
            if suspects.is_empty() { "" } else { ", alongside the growing map(s) above: likely leak" }
        ));
    }
    w
}

/// The verdict on a map that only grows: where it is filled, with what,
/// how much and how fast, whether the program ever deletes from such a
/// map, and how to bound it.
pub fn leak_verdict(m: &MapReport) -> String {
    let what = m.map_type.as_deref().unwrap_or("a map");
    let at = format!("{} {}:{}", m.function, m.file.as_deref().map(short).unwrap_or("?"), m.line.unwrap_or(0));
    let growth = match (m.len_first, m.len_last, m.growth_per_s) {
        (Some(a), Some(b), Some(g)) => format!("{} → {} entries in {:.1}s ({}/s), never shrinking", si(a as f64), si(b as f64), m.observed_s, si(g)),
        // Growth is counted per stretch between GC starts: with 2 cycles in
        // the window there are 3 stretches, so this never reads "3 of 2 cycles".
        _ => format!("grew {} times, in {} stretches between GC starts", m.growths, m.gc_cycles_growing),
    };
    let held = m.bytes_held_min.map(|b| format!("; at least {} in its keys and values", bytes(b))).unwrap_or_default();
    let deletes = match m.deletes_in_program {
        Some(0) => format!("; the program never calls delete() or clear() on a {what}"),
        Some(n) => format!("; the program deletes from a {what} at {} ({n} site{}): check that path runs for this map", m.deleted_at.join(", "), if n == 1 { "" } else { "s" }),
        None => String::new(),
    };
    let cap = m.len_first.map(|n| format!(" near today's {} entries", si(n as f64))).unwrap_or_default();
    format!("{what} filled at {at} only grows: {growth}{held}{deletes}. Bound it: expire entries after a TTL, or cap it{cap} with an LRU")
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracee::frame::Frame;

    fn cs(probe: &str, line: u32, count: u64, share: f64) -> Callsite {
        let probe = if probe == "growslice" { RowProbe::Growslice } else { RowProbe::Mallocgc };
        Callsite {
            probe,
            function: format!("main.f{line}"),
            file: Some("main.go".into()),
            line: Some(line),
            frames: vec![],
            count,
            allocs: count,
            bytes: (share * 1000.0) as u64,
            per_s: 0.0,
            bytes_per_s: 0.0,
            share_of_bytes: share,
            share_of_allocs: share,
            bytes_per_s_ci95: None,
            runtime_sampled_bytes_per_s: None,
            mean_new_len: Some(100.0),
            app_frame: None,
            evidence: None,
        }
    }

    #[test]
    fn ranks_append_growth_by_share() {
        let c = rank(&[cs("growslice", 10, 500, 0.2), cs("mallocgc", 20, 9000, 0.6), cs("growslice", 30, 900, 0.7), cs("growslice", 40, 5, 0.5), cs("growslice", 50, 900, 0.01)], 2.0, 1000, &mut crate::analysis::facts::NoFacts::default(), &AppScope::default());
        let lines: Vec<_> = c.iter().map(|c| (c.rank, c.line.unwrap())).collect();
        // Plain allocations, rare growth and tiny shares are not culprits.
        assert_eq!(lines, [(1, 30), (2, 10)]);
        assert!(c[0].evidence.contains("900 times (450/s)"), "{}", c[0].evidence);
        assert_eq!(c[0].kind, "append-growth");
    }

    #[test]
    fn the_row_with_most_growslice_bytes_is_always_considered() {
        // A sampled session saw main.collect's append grow 6 times: under
        // MIN_GROWTHS, but 83% of the bytes.
        let rows = [cs("growslice", 10, 6, 0.83), cs("growslice", 20, 50, 0.12)];
        let c = rank(&rows, 2.0, 1000, &mut crate::analysis::facts::NoFacts::default(), &AppScope::default());
        assert_eq!(c.iter().map(|c| c.line.unwrap()).collect::<Vec<_>>(), [10, 20]);
    }

    /// Found by fuzzing a recording: a growslice row of nearly 2^64 bytes
    /// overflowed the "most of the growth" test (c.bytes * 2).
    #[test]
    fn a_row_of_nearly_all_u64_bytes_is_still_dominant() {
        let mut huge = cs("growslice", 10, 6, 0.9);
        huge.bytes = u64::MAX - 1;
        let c = rank(&[huge, cs("growslice", 20, 5, 0.1)], 2.0, u64::MAX, &mut crate::analysis::facts::NoFacts::default(), &AppScope::default());
        assert_eq!(c.iter().map(|c| c.line.unwrap()).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn generated_code_is_noted_not_blamed() {
        let mut pb = cs("growslice", 10577, 400, 0.4);
        pb.file = Some("/m/etcdserverpb/rpc.pb.go".into());
        pb.frames = vec![
            Frame { function: "etcdserverpb.(*PutRequest).Marshal".into(), file: pb.file.clone(), line: Some(10577), inlined: false },
            Frame { function: "main.(*store).put".into(), file: Some("/src/store.go".into()), line: Some(88), inlined: false },
        ];
        let rows = [pb, cs("growslice", 30, 300, 0.3)];
        let c = rank(&rows, 2.0, 1000, &mut crate::analysis::facts::NoFacts::default(), &AppScope::default());
        assert_eq!(c.iter().map(|c| c.line.unwrap()).collect::<Vec<_>>(), [30]);
        let notes = generated_code_notes(&rows);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("40% of allocated bytes grow slices in generated code (main.f10577 at rpc.pb.go:10577), called from main.(*store).put at store.go:88: this is per-request serialization cost"), "{}", notes[0]);
    }

    #[test]
    fn warns_by_rule_of_thumb() {
        let w = rules_of_thumb(&[cs("growslice", 1, 100, 0.2), cs("growslice", 2, 100, 0.15)], &[(6_000_000, "GC mark termination".into()), (7_500_000, "GOMAXPROCS".into())]);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("35%"), "{}", w[0]);
        assert!(w[1].contains("2 stop-the-world") && w[1].contains("7.5 ms (GOMAXPROCS)"), "{}", w[1]);
        assert!(rules_of_thumb(&[cs("growslice", 1, 100, 0.29)], &[(5_000_000, "x".into())]).is_empty());
    }

    #[test]
    fn generated_files_by_name() {
        assert!(is_generated("/go/pkg/mod/go.etcd.io/etcd/api/v3/etcdserverpb/rpc.pb.go"));
        assert!(is_generated("x/zz_generated.deepcopy.go"));
        assert!(is_generated("msgp_gen.go"));
        assert!(!is_generated("/src/service/main.go"));
        assert!(!is_generated("pb.go"));
    }

    /// Seen on arm64 under emulation: a cache leaking 0.1 → 3.7 MiB while every cycle
    /// still started at the 4 MiB minimum goal.
    #[test]
    fn a_leak_under_the_minimum_goal_climbs_in_the_marked_bytes() {
        let sample = |marked: Option<u64>| HeapSample { t_s: 0.0, bytes: 4_010_000, goal: Some(4_194_304), marked };
        let mut heap: Vec<HeapSample> = [104_856, 309_480, 616_352, 1_000_320, 1_856_608, 2_013_664, 3_697_888].into_iter().map(|m| sample(Some(m))).collect();
        heap.push(sample(None));
        let (which, series) = leak_series(&heap);
        assert_eq!((which, series.len()), (HeapSeries::Marked, 7));
        assert!(climbing(&series));
        let w = leak_warnings(&[], &heap, true);
        assert_eq!(w, ["the live heap climbed from 102.4 KiB to 3.5 MiB over 7 GC cycles"]);
        // Marked bytes missing for more than the cycle in progress: the heap at start stands in.
        heap[0].marked = None;
        assert_eq!(leak_series(&heap), (HeapSeries::AtStart, vec![4_010_000; 8]));
    }

    #[test]
    fn live_growth_is_the_least_squares_slope_of_the_marked_bytes() {
        let at = |t_s: f64, marked: Option<u64>| HeapSample { t_s, bytes: 64 << 20, goal: Some(128 << 20), marked };
        // Noise around +2 MB/s: the fit, not the ends (5.5 MB over 2 s would say 2.75 MB/s).
        let heap = [at(0.0, Some(1_000_000)), at(0.5, Some(2_500_000)), at(1.0, Some(2_800_000)), at(1.5, Some(4_200_000)), at(2.0, Some(6_500_000))];
        let g = live_growth(&heap).unwrap();
        assert!((g - 2_540_000.0).abs() < 1e-3, "{g}");
        assert_eq!(live_max(&heap), Some(6_500_000));
        // The heap at a cycle's start is not the live heap: cycles without marked bytes do not count.
        let sparse = [at(0.0, Some(1000)), at(1.0, None), at(2.0, Some(3000))];
        assert_eq!(live_growth(&sparse), None);
        assert_eq!(live_growth(&[at(0.0, Some(1000)), at(1.0, None), at(2.0, Some(3000)), at(4.0, Some(1000))]), Some(0.0));
        assert_eq!(live_growth(&[at(1.0, Some(1)), at(1.0, Some(2)), at(1.0, Some(3))]), None, "no time between them");
        assert_eq!(live_max(&[at(0.0, None)]), None);
        // The climb's warning says the same rate.
        let climb: Vec<_> = (0..8).map(|i| at(i as f64, Some((1 + i) << 20))).collect();
        assert_eq!(leak_warnings(&[], &climb, true), ["the live heap climbed from 1.0 MiB to 8.0 MiB over 8 GC cycles, 1.0 MiB/s"]);
    }

    #[test]
    fn heap_climb_needs_a_steady_rise() {
        assert!(climbing(&[100, 120, 110, 150, 140, 170]));
        assert!(climbing(&[102, 103, 99, 100, 111, 112, 206, 207, 199, 216, 212, 215]));
        assert!(!climbing(&[100, 120, 100, 120, 100, 120]));
        assert!(!climbing(&[100, 101, 102, 103, 104, 105]));
        assert!(!climbing(&[100, 200, 300]));
    }

    /// Found by fuzzing a recording: heap figures whose u64 sum overflowed
    /// (a panic in a checked build; wrapped to 1 here, hiding the climb).
    #[test]
    fn heap_climb_of_huge_figures_does_not_overflow() {
        assert!(climbing(&[1, 1, 2, 2, u64::MAX, 2]));
        assert!(!climbing(&[u64::MAX; 6]));
    }

    #[test]
    fn maps_that_only_grow_are_leaks() {
        let s = |v: &[u64]| v.iter().enumerate().map(|(i, &l)| (i as u64 * 1_000_000_000, l)).collect::<Vec<_>>();
        assert!(map_leaks(&s(&[100_000, 150_000, 200_000, 250_000, 300_000]), 0, 0.0));
        assert!(!map_leaks(&s(&[100_000, 150_000, 140_000, 250_000, 300_000]), 9, 1.0), "it shrank: pruned");
        assert!(!map_leaks(&s(&[512, 512, 512, 512, 512, 512]), 9, 1.0), "a bounded map churns at its bound");
        assert!(!map_leaks(&s(&[1000, 90_000, 100_000, 100_000, 100_000, 100_000]), 0, 0.0), "filled once, then level");
        assert!(!map_leaks(&s(&[100_000, 100_010, 100_020, 100_030, 100_040]), 0, 0.0), "barely grew");
        assert!(!map_leaks(&s(&[100, 200, 300]), 0, 0.0), "too few reads");
        assert!(!map_leaks(&[(0, 100), (1_000_000_000, 200), (2_000_000_000, 300), (2_500_000_000, 400)], 0, 0.0), "too short");
        assert_eq!(map_growth_per_s(&s(&[1000, 2000, 3000])), Some(1000.0));
        assert!(map_leaks(&[], 4, 0.8));
        assert!(!map_leaks(&[], 4, 0.2));
    }

    #[test]
    fn formats_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!((si(0.04), si(0.0), si(12.4)), ("0.04".into(), "0".into(), "12".into()));
        assert_eq!(si(2_500_000.0), "2.5M");
    }
}
