//! Writers for formats other tools open: pprof's profile.proto for `go tool pprof`,
//! Chrome trace-event JSON for ui.perfetto.dev and chrome://tracing, OpenMetrics
//! text for Prometheus, and a self-contained HTML page for a browser.
//!
//! Each takes neutral inputs (PCs, values, spans in ktime) and knows nothing of
//! sessions or aggregation, so either side can change without the other.
pub mod diffpage;
pub mod html;
pub mod openmetrics;
pub mod perfetto;
pub mod pprof;

use serde_json::{json, Map};

use crate::{
    ingest::aggregate::Aggregator,
    analysis::facts::Facts,
    plan::StwReason,
    record::{End, Meta},
    report,
    plan::Mode,
};

/// A session's allocations as a pprof heap profile: alloc_objects and
/// alloc_space per stack (Go's own sample types), plus growslice calls.
/// Sampled mode's counts are scaled to the whole window, as Go scales its
/// sampled heap profiles, at the rate the report uses.
pub fn allocation_profile(meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts, out: impl std::io::Write) -> std::io::Result<()> {
    let (observed, rate_time) = report::rate_times(agg, meta.mode, end.progress.elapsed_s);
    let scale = end.progress.elapsed_s.max(1e-9) / rate_time;
    let v = |n: u64| (n as f64 * scale).round() as i64;
    let mut samples: Vec<pprof::Sample> = agg.alloc_stacks().iter().map(|(stack, s)| pprof::Sample { pcs: stack.to_vec(), values: vec![v(s.count), v(s.bytes), 0] }).collect();
    samples.extend(agg.grow_stacks().iter().map(|(stack, g)| pprof::Sample { pcs: stack.to_vec(), values: vec![0, 0, v(g.count)] }));
    let mut comments = vec![format!("gcprobe {} {} mode, pid {} {}", meta.gcprobe_version, meta.mode.name(), meta.target.pid, meta.target.exe)];
    if meta.mode == Mode::Sampled {
        comments.push(format!(
            "values estimated for the {:.1}s window from {observed:.3}s of allocation bursts (x{scale:.1})",
            end.progress.elapsed_s
        ));
    }
    let p = pprof::Profile {
        sample_types: vec![("alloc_objects", "count"), ("alloc_space", "bytes"), ("growslice", "count")],
        default_sample_type: Some("alloc_space"),
        samples,
        time_nanos: meta.start_unix_ns as i64,
        duration_nanos: (end.progress.elapsed_s * 1e9) as i64,
        mapping: pprof::MappingInfo { file: meta.target.exe.clone(), build_id: meta.target.build_id.clone(), memory: None },
        comments,
    };
    pprof::write(&p, |pc| facts.frames(pc), out)
}

/// The report as one self-contained HTML page: its figures and culprits,
/// a flame graph of allocated bytes, and the pauses and live heap over time.
pub fn report_page(report: &report::Report, agg: &Aggregator, facts: &mut dyn Facts) -> String {
    html::report_page(report, &drawn(agg, facts))
}

/// What the pages draw beyond a report: its stacks and pauses.
pub fn drawn(agg: &Aggregator, facts: &mut dyn Facts) -> html::Drawn {
    html::Drawn { stacks: allocation_stacks(agg, facts), pauses: pause_list(agg, facts), pauses_dropped: agg.pauses().dropped() }
}

/// Each allocation stack by its bytes, outermost frame first, inlined frames
/// included. The runtime's own leaf frames are cut as pprof cuts them, so each
/// stack ends at the user's allocation site, and frames are named as the text
/// report names them: function, then file:line (the file by its base name,
/// as beside a culprit's line).
fn allocation_stacks(agg: &Aggregator, facts: &mut dyn Facts) -> Vec<html::Stack> {
    let mut named = std::collections::HashMap::new();
    let mut frames_of = |pc: u64| named.entry(pc).or_insert_with(|| facts.frames(pc)).clone();
    agg.alloc_stacks()
        .iter()
        .map(|(stack, s)| {
            let pcs = pprof::trim_runtime_leaf(stack, &mut frames_of).to_vec();
            let frames = pcs.iter().rev().flat_map(|&pc| frames_of(pc).iter().rev().map(frame_name).collect::<Vec<_>>()).collect();
            html::Stack { frames, bytes: s.bytes }
        })
        .collect()
}

/// `function file:line`, with ` (inlined)` after a frame inlined into its
/// caller (after, not before as the text report has it, so a narrow frame
/// still shows its function first).
fn frame_name(f: &crate::tracee::frame::Frame) -> String {
    let at = match (&f.file, f.line) {
        (Some(file), Some(l)) => format!(" {}:{l}", crate::units::short(file)),
        (Some(file), None) => format!(" {}", crate::units::short(file)),
        _ => String::new(),
    };
    format!("{}{at}{}", f.function, if f.inlined { " (inlined)" } else { "" })
}

/// The pauses kept one by one, timed from the first event as the report's heap samples are.
fn pause_list(agg: &Aggregator, facts: &mut dyn Facts) -> Vec<html::Pause> {
    let t0 = agg.first_ktime().unwrap_or(0);
    agg.pauses().recent().map(|s| html::Pause { t_s: s.start_ktime.saturating_sub(t0) as f64 / 1e9, duration_ns: s.duration_ns, reason: report::cause_name(facts, s.cause) }).collect()
}

/// The report's figures in the Prometheus text format (see `openmetrics`),
/// each pause with its reason.
pub fn report_metrics(report: &report::Report, agg: &Aggregator, facts: &mut dyn Facts) -> String {
    let pauses: Vec<(String, f64)> = agg.pauses().recent().map(|s| (report::cause_name(facts, s.cause), s.duration_ns as f64 / 1e9)).collect();
    openmetrics::to_prometheus_text(&openmetrics::render(&[openmetrics::TargetFigures { report, pauses: &pauses }], openmetrics::DEFAULT_TOP_CALLSITES))
}

/// The session's GC timeline: cycles (sweep termination's stop to mark
/// termination's restart), each stop-the-world pause with its reason,
/// assists on the threads that made them, and the live heap at each cycle.
pub fn gc_timeline(meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> serde_json::Value {
    let mut stw = Vec::with_capacity(agg.pauses().recent().len());
    let mut cycles = Vec::new();
    let mut cycle_start: Option<u64> = None;
    for s in agg.pauses().recent() {
        let reason = report::cause_name(facts, s.cause);
        let end_ns = s.start_ktime + s.duration_ns;
        let known = report::cause_reason(facts, s.cause);
        if known == Some(StwReason::GcSweepTerm) {
            cycle_start = Some(s.start_ktime);
        } else if known == Some(StwReason::GcMarkTerm) {
            if let Some(start) = cycle_start.take() {
                let mut args = Map::new();
                args.insert("cycle".into(), json!(cycles.len() + 1));
                if let Some(c) = agg.cycles().iter().find(|c| c.start_ktime >= start && c.start_ktime <= end_ns) {
                    for (name, v) in [("heap_live_at_start_bytes", c.heap_at_start), ("heap_goal_bytes", c.goal), ("heap_marked_bytes", c.marked)] {
                        if let Some(v) = v {
                            args.insert(name.into(), json!(v));
                        }
                    }
                }
                cycles.push(perfetto::Span { start_ns: start, end_ns, name: format!("GC cycle {}", cycles.len() + 1), args });
            }
        }
        let mut args = Map::new();
        args.insert("duration_us".into(), json!(s.duration_ns as f64 / 1e3));
        stw.push(perfetto::Span { start_ns: s.start_ktime, end_ns, name: reason, args });
    }
    let mut metadata = vec![
        ("gcprobe_version".into(), json!(meta.gcprobe_version)),
        ("go_version".into(), json!(meta.target.go_version)),
        ("mode".into(), json!(meta.mode.name())),
        ("start_unix_ns".into(), json!(meta.start_unix_ns)),
        ("duration_s".into(), json!(end.progress.elapsed_s)),
        ("ended_by".into(), json!(end.ended_by)),
        // Assists are seen only inside allocation bursts in sampled mode.
        ("assists_complete".into(), json!(meta.mode == Mode::Exact)),
    ];
    let mut notes = Vec::new();
    if stw.is_empty() && agg.assist_times().is_empty() {
        // An empty trace would look like a broken one.
        let why = format!("no GC cycle, stop-the-world pause or assist in this {:.1}s window: the program did not collect while gcprobe watched", end.progress.elapsed_s);
        metadata.push(("note".into(), json!(why)));
        notes.push((meta.start_monotonic_ns, why));
    }
    let t = perfetto::Timeline {
        pid: meta.target.pid,
        process_name: format!("{} ({})", meta.target.exe, meta.target.go_version),
        origin_ns: meta.start_monotonic_ns,
        gc_cycles: cycles,
        stw,
        assists: agg.assist_times().to_vec(),
        heap_live: agg.cycles().iter().filter_map(|c| Some((c.start_ktime, c.heap_at_start?))).collect(),
        notes,
        metadata,
    };
    perfetto::chrome_trace(&t)
}
