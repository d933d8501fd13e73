//! A target's report as metrics: the families node mode serves on
//! /metrics, here for one session (`--format prometheus`). Built with the
//! prometheus-client crate, which writes OpenMetrics; [`to_prometheus_text`]
//! turns that into the Prometheus text format (0.0.4) that promtool,
//! node_exporter's textfile collector and older scrapers read.
//!
//! Cardinality is bounded by construction: per target, `pid` and at most
//! `top` callsites plus `callsite="other"` for the rest; stop-the-world
//! reasons are the runtime's own short list.
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

use crate::{
    analysis::rows::{Callsite, RowProbe},
    plan::Mode,
    report::Report,
};

/// Pause buckets, seconds: 10 µs to 1 s. Go's pauses are tens of
/// microseconds when healthy and milliseconds when not.
const STW_BUCKETS: [f64; 16] = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0];

/// Callsites kept per target before the rest are summed as "other".
pub const DEFAULT_TOP_CALLSITES: usize = 20;

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// One target's figures: its report and each pause (reason name, seconds).
pub struct TargetFigures<'a> {
    pub report: &'a Report,
    pub pauses: &'a [(String, f64)],
}

/// The families, registered once; each target adds its series.
struct Families {
    info: Family<Labels, Gauge>,
    window: Family<Labels, FGauge>,
    cycles: Family<Labels, Counter>,
    stw: Family<Labels, Histogram>,
    heap_live: Family<Labels, Gauge>,
    alloc_bytes: Family<Labels, Counter>,
    alloc_objects: Family<Labels, Counter>,
    grow_bytes: Family<Labels, Counter>,
    culprit_share: Family<Labels, FGauge>,
    lost: Family<Labels, Counter>,
    slowdown: Family<Labels, FGauge>,
}

impl Families {
    fn register(r: &mut Registry) -> Self {
        let f = Families {
            info: Family::default(),
            window: Family::default(),
            cycles: Family::default(),
            stw: Family::new_with_constructor(|| Histogram::new(STW_BUCKETS)),
            heap_live: Family::default(),
            alloc_bytes: Family::default(),
            alloc_objects: Family::default(),
            grow_bytes: Family::default(),
            culprit_share: Family::default(),
            lost: Family::default(),
            slowdown: Family::default(),
        };
        r.register("gcprobe_target_info", "A Go process gcprobe watches, with its binary", f.info.clone());
        r.register("gcprobe_window_seconds", "How long gcprobe has watched the target: the window the totals cover", f.window.clone());
        r.register("gcprobe_gc_cycles", "GC cycles begun (sweep-termination stops seen)", f.cycles.clone());
        r.register("gcprobe_gc_stw_seconds", "Stop-the-world pauses, seconds, by the runtime's reason, timed from outside the process", f.stw.clone());
        r.register("gcprobe_heap_live_bytes", "The runtime's live heap (gcController.heapLive) at the last GC cycle's start", f.heap_live.clone());
        r.register("gcprobe_alloc_bytes", "Bytes allocated, by callsite (top callsites, the rest as callsite=\"other\"); in sampled mode an estimate from bursts", f.alloc_bytes.clone());
        r.register("gcprobe_alloc_objects", "Objects allocated, by callsite, as gcprobe_alloc_bytes; in sampled mode an estimate from bursts", f.alloc_objects.clone());
        r.register("gcprobe_growslice_bytes", "Bytes allocated by growing slices (append), by callsite; in sampled mode an estimate from bursts", f.grow_bytes.clone());
        r.register("gcprobe_culprit_share", "A culprit's share of the bytes allocated (0 to 1), with its loop when one was found", f.culprit_share.clone());
        r.register("gcprobe_lost_events", "Probe events lost (ring buffer full, undecodable, or the CPU busy with another hit)", f.lost.clone());
        r.register("gcprobe_estimated_slowdown_ratio", "gcprobe's estimate of the slowdown its probes cause a CPU-bound target (0.01 = 1%)", f.slowdown.clone());
        f
    }

    fn add(&self, t: &TargetFigures<'_>, top: usize) {
        let r = t.report;
        let pid = r.target.pid.to_string();
        let base: Labels = vec![("pid", pid.clone())];
        let info: Labels = vec![("pid", pid.clone()), ("exe", r.target.exe.clone()), ("go_version", r.target.go_version.clone()), ("build_id", r.target.build_id.clone().unwrap_or_default())];
        self.info.get_or_create(&info).set(1);
        self.window.get_or_create(&base).set(r.window.duration_s);
        self.cycles.get_or_create(&base).inc_by(r.gc.cycles);
        for (reason, secs) in t.pauses {
            self.stw.get_or_create(&vec![("pid", pid.clone()), ("reason", reason.clone())]).observe(*secs);
        }
        if let Some(h) = r.gc.heap_live.last() {
            self.heap_live.get_or_create(&base).set(i64::try_from(h.bytes).unwrap_or(i64::MAX));
        }
        let with = |callsite: String| -> Labels { vec![("pid", pid.clone()), ("callsite", callsite)] };
        let exact = r.sampling.mode == Mode::Exact;
        for (i, c) in r.callsites.iter().enumerate() {
            let site = if i < top { callsite_label(&c.function, c.file.as_deref(), c.line) } else { "other".to_owned() };
            let (bytes, objects) = totals(c, exact, r.window.duration_s);
            self.alloc_bytes.get_or_create(&with(site.clone())).inc_by(bytes);
            self.alloc_objects.get_or_create(&with(site.clone())).inc_by(objects);
            if c.probe == RowProbe::Growslice {
                self.grow_bytes.get_or_create(&with(site)).inc_by(bytes);
            }
        }
        for c in &r.culprits {
            let looped = c.loop_.as_ref().map(|l| format!("{} {}", l.kind.name(), file_line(l.file.as_deref(), l.line))).unwrap_or_default();
            let labels = vec![("pid", pid.clone()), ("callsite", callsite_label(&c.function, c.file.as_deref(), c.line)), ("loop", looped)];
            self.culprit_share.get_or_create(&labels).set(c.share_of_bytes);
        }
        self.lost.get_or_create(&base).inc_by(r.events.lost);
        if let Some(s) = r.sampling.est_slowdown {
            self.slowdown.get_or_create(&base).set(s);
        }
    }
}

/// A callsite's bytes and objects over the window: as counted in exact
/// mode; in sampled mode the bursts saw a part, so the estimated rate over
/// the whole window, objects scaled alike.
fn totals(c: &Callsite, exact: bool, window_s: f64) -> (u64, u64) {
    if exact || c.bytes == 0 {
        return (c.bytes, c.allocs);
    }
    let scale = c.bytes_per_s * window_s / c.bytes as f64;
    ((c.bytes as f64 * scale).round() as u64, (c.allocs as f64 * scale).round() as u64)
}

/// `function file:line`, as the report names a callsite.
fn callsite_label(function: &str, file: Option<&str>, line: Option<u32>) -> String {
    format!("{function} {}", file_line(file, line))
}

fn file_line(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.to_owned(),
        _ => "?".to_owned(),
    }
}

/// OpenMetrics to the Prometheus text format: a counter's samples carry
/// `_total` in both, but OpenMetrics names its family without it, so the
/// HELP and TYPE lines take the suffix; `# EOF` and `# UNIT` have no
/// counterpart. Everything else reads the same in both.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The targets' figures as one OpenMetrics exposition (ends in `# EOF`).
pub fn render(targets: &[TargetFigures<'_>], top: usize) -> String {
    let mut registry = Registry::default();
    let families = Families::register(&mut registry);
    for t in targets {
        families.add(t, top);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_for_the_prometheus_text_format() {
        let om = "# HELP gcprobe_gc_cycles GC cycles.\n# TYPE gcprobe_gc_cycles counter\ngcprobe_gc_cycles_total{pid=\"1\"} 3\n# HELP gcprobe_heap_live_bytes Heap.\n# TYPE gcprobe_heap_live_bytes gauge\ngcprobe_heap_live_bytes{pid=\"1\"} 9\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP gcprobe_gc_cycles_total GC cycles.\n# TYPE gcprobe_gc_cycles_total counter\ngcprobe_gc_cycles_total{pid=\"1\"} 3\n# HELP gcprobe_heap_live_bytes Heap.\n# TYPE gcprobe_heap_live_bytes gauge\ngcprobe_heap_live_bytes{pid=\"1\"} 9\n"
        );
    }

    #[test]
    fn callsite_labels_read_as_the_report_names_them() {
        assert_eq!(callsite_label("main.grow", Some("/src/main.go"), Some(19)), "main.grow /src/main.go:19");
        assert_eq!(callsite_label("runtime.x", None, None), "runtime.x ?");
    }
}
