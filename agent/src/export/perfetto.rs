//! A GC timeline as Chrome trace-event JSON (the "JSON Object Format"), which
//! ui.perfetto.dev and chrome://tracing open.
//!
//! Format: <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>.
//! Times are microseconds; fractions keep nanoseconds, which both viewers read.
use serde_json::{json, Map, Value};

/// A stretch of time on one track; `args` show when the slice is selected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// ktime (CLOCK_MONOTONIC) ns.
    pub start_ns: u64,
    pub end_ns: u64,
    pub name: String,
    pub args: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub pid: u32,
    pub process_name: String,
    /// The ktime that becomes ts = 0; earlier events get negative times.
    pub origin_ns: u64,
    pub gc_cycles: Vec<Span>,
    /// Named by the reason, e.g. "GC sweep termination".
    pub stw: Vec<Span>,
    /// (tid, ktime ns) of each GC assist.
    pub assists: Vec<(u32, u64)>,
    /// (ktime ns, bytes).
    pub heap_live: Vec<(u64, u64)>,
    /// (ktime ns, text): global instants a viewer shows on the timeline,
    /// e.g. why the trace holds no GC events.
    pub notes: Vec<(u64, String)>,
    /// Written as the trace's top-level "metadata" object.
    pub metadata: Vec<(String, Value)>,
}

/// Synthetic thread ids for the tracks that are no real thread: above any
/// Linux tid (pid_max is at most 2^22) and below i32::MAX, which viewers expect.
pub const GC_CYCLES_TID: u32 = 0x7fff_0001;
pub const STW_TID: u32 = 0x7fff_0002;

pub fn chrome_trace(t: &Timeline) -> Value {
    let pid = t.pid;
    let ts = |ns: u64| (i128::from(ns) - i128::from(t.origin_ns)) as f64 / 1000.0;
    let meta = |tid: u32, name: &str, args: Value| json!({"ph": "M", "pid": pid, "tid": tid, "ts": 0.0, "name": name, "args": args});

    // (ts, event), sorted at the end; metadata goes in first so that a stable
    // sort keeps it ahead of the events at ts 0.
    let mut events: Vec<(f64, Value)> = vec![(0.0, meta(0, "process_name", json!({"name": t.process_name})))];
    let tracks = [(GC_CYCLES_TID, "GC cycles", "gc", &t.gc_cycles), (STW_TID, "stop-the-world", "stw", &t.stw)];
    for (sort_index, (tid, track, cat, spans)) in tracks.into_iter().enumerate() {
        // A track without slices would show as an empty row.
        if spans.is_empty() {
            continue;
        }
        events.push((0.0, meta(tid, "thread_name", json!({"name": track}))));
        events.push((0.0, meta(tid, "thread_sort_index", json!({"sort_index": sort_index}))));
        for s in spans {
            let (start, dur) = (ts(s.start_ns), s.end_ns.saturating_sub(s.start_ns) as f64 / 1000.0);
            let e = json!({"ph": "X", "pid": pid, "tid": tid, "ts": start, "dur": dur, "name": s.name, "cat": cat, "args": s.args});
            events.push((start, e));
        }
    }

    let mut threads: Vec<u32> = t.assists.iter().map(|&(tid, _)| tid).collect();
    threads.sort_unstable();
    threads.dedup();
    for tid in threads {
        events.push((0.0, meta(tid, "thread_name", json!({"name": format!("thread {tid}")}))));
    }
    for &(tid, ns) in &t.assists {
        // "s": "t" scopes the instant to its thread's row.
        events.push((ts(ns), json!({"ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": ts(ns), "name": "GC assist", "cat": "gc"})));
    }
    for &(ns, bytes) in &t.heap_live {
        events.push((ts(ns), json!({"ph": "C", "pid": pid, "tid": 0, "ts": ts(ns), "name": "heap live", "cat": "gc", "args": {"bytes": bytes}})));
    }

    for (ns, text) in &t.notes {
        events.push((ts(*ns), json!({"ph": "i", "s": "g", "pid": pid, "tid": 0, "ts": ts(*ns), "name": text, "cat": "gcprobe"})));
    }

    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let metadata: Map<String, Value> = t.metadata.iter().cloned().collect();
    json!({
        "traceEvents": events.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        "displayTimeUnit": "ms",
        "metadata": metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start_ns: u64, end_ns: u64, name: &str) -> Span {
        Span { start_ns, end_ns, name: name.into(), args: Map::new() }
    }

    fn timeline() -> Timeline {
        let origin = 1_000_000_000;
        let mut cycle = span(origin + 1_500, origin + 2_001_234, "GC 1");
        cycle.args.insert("heap_goal".into(), json!(4_194_304));
        Timeline {
            pid: 4242,
            process_name: "demo-service".into(),
            origin_ns: origin,
            gc_cycles: vec![cycle, span(origin + 9_000_000, origin + 9_500_000, "GC 2")],
            stw: vec![
                span(origin + 1_500, origin + 31_500, "GC sweep termination"),
                span(origin + 1_900_000, origin + 1_950_001, "GC mark termination"),
                // End before start (a lost event): a zero-length slice, not a negative one.
                span(origin + 9_400_000, origin + 9_300_000, "GC mark termination"),
            ],
            assists: vec![(4243, origin + 500_000), (4242, origin + 600_000), (4243, origin + 700_000)],
            heap_live: vec![(origin, 1 << 20), (origin + 2_000_000, 3 << 20), (origin - 1_000, 1 << 19)],
            notes: vec![],
            metadata: vec![("gcprobe_version".into(), json!("0.1.0")), ("go_version".into(), json!("go1.24.11"))],
        }
    }

    fn events(v: &Value) -> &Vec<Value> {
        v["traceEvents"].as_array().unwrap()
    }

    fn of<'a>(v: &'a Value, ph: &str) -> Vec<&'a Value> {
        events(v).iter().filter(|e| e["ph"] == ph).collect()
    }

    #[test]
    fn structure() {
        let t = timeline();
        let v = chrome_trace(&t);
        assert_eq!(v["displayTimeUnit"], "ms");
        assert_eq!(v["metadata"], json!({"gcprobe_version": "0.1.0", "go_version": "go1.24.11"}));
        for e in events(&v) {
            assert!(e["ph"].is_string() && e["pid"] == 4242 && e["tid"].is_u64() && e["ts"].is_f64(), "{e}");
            assert!(e["name"].is_string(), "{e}");
        }
        let ts: Vec<f64> = events(&v).iter().map(|e| e["ts"].as_f64().unwrap()).collect();
        assert!(ts.is_sorted(), "{ts:?}");

        let slices = of(&v, "X");
        assert_eq!(slices.len(), t.gc_cycles.len() + t.stw.len());
        assert!(slices.iter().all(|e| e["dur"].as_f64().unwrap() >= 0.0));
        let on = |tid: u32| slices.iter().filter(|e| e["tid"] == tid).map(|e| e["name"].as_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(on(GC_CYCLES_TID), ["GC 1", "GC 2"]);
        assert_eq!(on(STW_TID), ["GC sweep termination", "GC mark termination", "GC mark termination"]);

        // Nanoseconds survive as microsecond fractions.
        let gc1 = slices[0];
        assert_eq!((gc1["ts"].as_f64(), gc1["dur"].as_f64()), (Some(1.5), Some(1999.734)));
        assert_eq!(gc1["args"], json!({"heap_goal": 4_194_304}));
        assert_eq!(gc1["cat"], "gc");

        let assists = of(&v, "i");
        assert_eq!(assists.len(), 3);
        assert!(assists.iter().all(|e| e["s"] == "t" && e["name"] == "GC assist"));
        assert_eq!(assists.iter().map(|e| e["tid"].as_u64().unwrap()).collect::<Vec<_>>(), [4243, 4242, 4243]);

        let counters = of(&v, "C");
        assert_eq!(counters.len(), 3);
        assert!(counters.iter().all(|e| e["name"] == "heap live"));
        assert_eq!(counters[0]["ts"], -1.0, "before the origin: negative, not dropped");
        assert_eq!(counters[0]["args"], json!({"bytes": 1 << 19}));

        let names: Vec<(u64, &str, &str)> = of(&v, "M")
            .iter()
            .map(|e| (e["tid"].as_u64().unwrap(), e["name"].as_str().unwrap(), e["args"]["name"].as_str().unwrap_or("")))
            .filter(|(_, n, _)| *n != "thread_sort_index")
            .collect();
        assert_eq!(
            names,
            [
                (0, "process_name", "demo-service"),
                (GC_CYCLES_TID.into(), "thread_name", "GC cycles"),
                (STW_TID.into(), "thread_name", "stop-the-world"),
                (4242, "thread_name", "thread 4242"),
                (4243, "thread_name", "thread 4243"),
            ]
        );
    }

    #[test]
    fn empty_timeline_is_a_valid_trace() {
        let v = chrome_trace(&Timeline::default());
        assert_eq!(events(&v).len(), 1, "only the process name: {v}");
        assert_eq!(v["metadata"], json!({}));
        // A note says why on the timeline itself.
        let t = Timeline { origin_ns: 5_000, notes: vec![(7_000, "no GC in this window".into())], ..Default::default() };
        let v = chrome_trace(&t);
        let [note] = &of(&v, "i")[..] else { panic!("{v}") };
        assert_eq!((note["name"].as_str(), note["s"].as_str(), note["ts"].as_f64()), (Some("no GC in this window"), Some("g"), Some(2.0)));
    }

    #[test]
    fn round_trips_through_serde_json() {
        let v = chrome_trace(&timeline());
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        // Far from the origin, ns still survive the float.
        let far = Timeline { origin_ns: 0, heap_live: vec![(86_400_000_000_000 + 1, 1)], ..Default::default() };
        let back: Value = serde_json::from_str(&serde_json::to_string(&chrome_trace(&far)).unwrap()).unwrap();
        assert_eq!(of(&back, "C")[0]["ts"].as_f64(), Some(86_400_000_000.001));
    }
}
