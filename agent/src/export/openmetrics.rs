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
}

/// A counter brought up to `total`: it never goes back. The report's totals
/// are running counts in exact mode, but in sampled mode an estimate (the
/// rate seen in bursts times the window), which can dip as the estimate
/// improves; Prometheus would read a dip as a reset.
pub fn raise(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The series of one target, to remove when it goes.
#[derive(Default)]
struct Series {
    info: Option<Labels>,
    sites: std::collections::HashSet<String>,
    culprits: Vec<Labels>,
    reasons: std::collections::HashSet<String>,
}

/// Metrics that live as long as the agent: each target's series are
/// brought up to date from its report ([`Exposition::update`]) and leave
/// with it ([`Exposition::remove`]). Counters only move forward; pauses are
/// observed once each.
pub struct Exposition {
    registry: Registry,
    f: Families,
    top: usize,
    series: std::collections::HashMap<u32, Series>,
}

impl Exposition {
    /// `top`: callsites with their own series per target, the rest as "other".
    pub fn new(top: usize) -> Self {
        let mut registry = Registry::default();
        let f = Families::register(&mut registry);
        Self { registry, f, top, series: Default::default() }
    }

    /// The registry, for the agent's own families.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Brings a target's series up to its report; `t.pauses` are the pauses
    /// not given before. `extra` labels the info series (pod, container...).
    pub fn update(&mut self, t: &TargetFigures<'_>, extra: &[(&'static str, String)]) {
        let (f, top) = (&self.f, self.top);
        let r = t.report;
        let pid = r.target.pid.to_string();
        let s = self.series.entry(r.target.pid).or_default();
        let base: Labels = vec![("pid", pid.clone())];
        if s.info.is_none() {
            let mut info: Labels = vec![("pid", pid.clone()), ("exe", r.target.exe.clone()), ("go_version", r.target.go_version.clone()), ("build_id", r.target.build_id.clone().unwrap_or_default())];
            info.extend(extra.iter().cloned());
            f.info.get_or_create(&info).set(1);
            s.info = Some(info);
        }
        f.window.get_or_create(&base).set(r.window.duration_s);
        raise(&f.cycles.get_or_create(&base), r.gc.cycles);
        for (reason, secs) in t.pauses {
            f.stw.get_or_create(&vec![("pid", pid.clone()), ("reason", reason.clone())]).observe(*secs);
            s.reasons.insert(reason.clone());
        }
        if let Some(h) = r.gc.heap_live.last() {
            f.heap_live.get_or_create(&base).set(i64::try_from(h.bytes).unwrap_or(i64::MAX));
        }
        update_callsites(f, s, r, &pid, top);
        update_culprits(f, s, r, &pid);
        raise(&f.lost.get_or_create(&base), r.events.lost);
        if let Some(x) = r.sampling.est_slowdown {
            f.slowdown.get_or_create(&base).set(x);
        }
    }

    /// Every series of a target that is gone.
    pub fn remove(&mut self, pid: u32) {
        let Some(s) = self.series.remove(&pid) else { return };
        let f = &self.f;
        let p = pid.to_string();
        let base: Labels = vec![("pid", p.clone())];
        if let Some(info) = &s.info {
            f.info.remove(info);
        }
        for fam in [&f.cycles, &f.lost] {
            fam.remove(&base);
        }
        for fam in [&f.window, &f.slowdown] {
            fam.remove(&base);
        }
        f.heap_live.remove(&base);
        for reason in &s.reasons {
            f.stw.remove(&vec![("pid", p.clone()), ("reason", reason.clone())]);
        }
        for site in s.sites.iter().map(String::as_str).chain(["other"]) {
            let l: Labels = vec![("pid", p.clone()), ("callsite", site.to_owned())];
            for fam in [&f.alloc_bytes, &f.alloc_objects, &f.grow_bytes] {
                fam.remove(&l);
            }
        }
        for l in &s.culprits {
            f.culprit_share.remove(l);
        }
    }

    /// The whole exposition in OpenMetrics (ends in `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The top callsites by their own series, the rest summed as "other". A
/// callsite that leaves the top loses its series (Prometheus marks it
/// stale) and its bytes count in "other" from then on, which never goes
/// back either: the family's sum stays the target's total.
fn update_callsites(f: &Families, s: &mut Series, r: &Report, pid: &str, top: usize) {
    let with = |callsite: &str| -> Labels { vec![("pid", pid.to_owned()), ("callsite", callsite.to_owned())] };
    let exact = r.sampling.mode == Mode::Exact;
    let mut now = std::collections::HashSet::new();
    let (mut other, mut other_objects, mut other_grow) = (0, 0, 0);
    let mut any_other = false;
    for (i, c) in r.callsites.iter().enumerate() {
        let (bytes, objects) = totals(c, exact, r.window.duration_s);
        let grow = if c.probe == RowProbe::Growslice { bytes } else { 0 };
        if i >= top {
            (other, other_objects, other_grow, any_other) = (other + bytes, other_objects + objects, other_grow + grow, true);
            continue;
        }
        let site = callsite_label(&c.function, c.file.as_deref(), c.line);
        raise(&f.alloc_bytes.get_or_create(&with(&site)), bytes);
        raise(&f.alloc_objects.get_or_create(&with(&site)), objects);
        if c.probe == RowProbe::Growslice {
            raise(&f.grow_bytes.get_or_create(&with(&site)), grow);
        }
        now.insert(site);
    }
    for gone in s.sites.difference(&now) {
        for fam in [&f.alloc_bytes, &f.alloc_objects, &f.grow_bytes] {
            fam.remove(&with(gone));
        }
        any_other = true;
    }
    if any_other {
        // What left the top is in "other" now; `raise` never takes it back.
        let o = with("other");
        raise(&f.alloc_bytes.get_or_create(&o), other);
        raise(&f.alloc_objects.get_or_create(&o), other_objects);
        raise(&f.grow_bytes.get_or_create(&o), other_grow);
    }
    s.sites = now;
}

/// Each culprit's share now; one that is no longer a culprit leaves.
fn update_culprits(f: &Families, s: &mut Series, r: &Report, pid: &str) {
    let mut now = Vec::new();
    for c in &r.culprits {
        let looped = c.loop_.as_ref().map(|l| format!("{} {}", l.kind.name(), file_line(l.file.as_deref(), l.line))).unwrap_or_default();
        let labels: Labels = vec![("pid", pid.to_owned()), ("callsite", callsite_label(&c.function, c.file.as_deref(), c.line)), ("loop", looped)];
        f.culprit_share.get_or_create(&labels).set(c.share_of_bytes);
        now.push(labels);
    }
    for gone in s.culprits.iter().filter(|l| !now.contains(l)) {
        f.culprit_share.remove(gone);
    }
    s.culprits = now;
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
    let mut e = Exposition::new(top);
    for t in targets {
        e.update(t, &[]);
    }
    e.encode()
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

    fn site(function: &str, line: u32, bytes: u64) -> Callsite {
        Callsite {
            probe: RowProbe::Mallocgc,
            function: function.into(),
            file: Some("/src/main.go".into()),
            line: Some(line),
            frames: Vec::new(),
            count: bytes / 8,
            allocs: bytes / 8,
            bytes,
            per_s: 0.0,
            bytes_per_s: bytes as f64 / 10.0,
            share_of_bytes: 0.0,
            share_of_allocs: 0.0,
            bytes_per_s_ci95: None,
            runtime_sampled_bytes_per_s: None,
            mean_new_len: None,
            app_frame: None,
            evidence: None,
        }
    }

    fn sample(e: &Exposition, name: &str, callsite: &str) -> Option<u64> {
        let text = e.encode();
        let line = text.lines().find(|l| l.starts_with(name) && l.contains(&format!("callsite=\"{callsite}\"")))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    #[test]
    fn counters_never_go_back_and_what_leaves_the_top_counts_as_other() {
        let mut e = Exposition::new(1);
        let mut r = crate::report::empty_report();
        r.callsites = vec![site("main.a", 10, 800), site("main.b", 20, 80)];
        e.update(&TargetFigures { report: &r, pauses: &[("GC sweep termination".into(), 2e-5)] }, &[("pod", "web".into())]);
        assert_eq!((sample(&e, "gcprobe_alloc_bytes_total", "main.a /src/main.go:10"), sample(&e, "gcprobe_alloc_bytes_total", "other")), (Some(800), Some(80)));
        // b overtakes a: a's series goes, and its bytes are in "other".
        r.callsites = vec![site("main.b", 20, 1600), site("main.a", 10, 900)];
        e.update(&TargetFigures { report: &r, pauses: &[] }, &[]);
        assert_eq!(sample(&e, "gcprobe_alloc_bytes_total", "main.a /src/main.go:10"), None);
        assert_eq!((sample(&e, "gcprobe_alloc_bytes_total", "main.b /src/main.go:20"), sample(&e, "gcprobe_alloc_bytes_total", "other")), (Some(1600), Some(900)));
        // An estimate that dips leaves the counter where it was.
        r.callsites = vec![site("main.b", 20, 1500), site("main.a", 10, 900)];
        e.update(&TargetFigures { report: &r, pauses: &[("GC sweep termination".into(), 3e-5)] }, &[]);
        assert_eq!(sample(&e, "gcprobe_alloc_bytes_total", "main.b /src/main.go:20"), Some(1600));
        let text = e.encode();
        assert!(text.contains("gcprobe_gc_stw_seconds_count{pid=\"1\",reason=\"GC sweep termination\"} 2"), "{text}");
        assert!(text.contains("pod=\"web\""), "{text}");
        // The target goes: so does every series that names it.
        e.remove(1);
        let text = e.encode();
        assert!(!text.contains("pid=\"1\""), "{text}");
    }

    #[test]
    fn callsite_labels_read_as_the_report_names_them() {
        assert_eq!(callsite_label("main.grow", Some("/src/main.go"), Some(19)), "main.grow /src/main.go:19");
        assert_eq!(callsite_label("runtime.x", None, None), "runtime.x ?");
    }
}
