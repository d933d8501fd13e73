//! `--format html`: one page that loads nothing from the network. Every
//! style, script and chart is inline, and a Content-Security-Policy of
//! `default-src 'none'` makes the browser refuse any fetch a name could
//! smuggle in. The flame graph is inferno's SVG (its own script included);
//! the pause and heap charts are SVG drawn here.
//!
//! Each section is a `pub fn` returning an HTML fragment, and [`document`]
//! wraps fragments into a page, so another page kind can reuse them. Every
//! string that comes from the target (function, file, type and map names,
//! the executable's path, pause reasons) goes through [`escape`].
use std::fmt::Write as _;

use crate::{
    plan::Mode,
    report::{text::loc, Culprit, Gc, Report, Stw},
    units::{bytes, si},
};

/// One allocation stack, outermost frame first, with the bytes allocated there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<String>,
    pub bytes: u64,
}

/// One stop-the-world pause, timed from the session's first event (the
/// origin of the report's `heap_live` times).
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub t_s: f64,
    pub duration_ns: u64,
    pub reason: String,
}

/// What the report page draws beyond the report itself.
#[derive(Debug, Clone, Default)]
pub struct Drawn {
    pub stacks: Vec<Stack>,
    /// The pauses kept one by one, oldest first.
    pub pauses: Vec<Pause>,
    /// Pauses older than `pauses` (the session keeps the most recent only).
    pub pauses_dropped: u64,
}

/// The whole report as one page.
pub fn report_page(r: &Report, d: &Drawn) -> String {
    let t = &r.target;
    let title = format!("gcprobe report: pid {} {}", t.pid, t.exe);
    let sections = [
        headline(r),
        culprit_cards(&r.culprits),
        by_your_code(r),
        flame_graph("Allocation flame graph", &d.stacks, r.sampling.mode),
        pause_histogram(&d.pauses, &r.gc.stw, d.pauses_dropped),
        pause_timeline(&d.pauses, r.window.duration_s, d.pauses_dropped),
        heap_series(&r.gc),
        warnings(&r.warnings),
    ];
    document(&title, &sections)
}

/// HTML-escapes text for element content and quoted attributes. Control
/// characters, which HTML forbids, become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push(char::REPLACEMENT_CHARACTER),
            c => o.push(c),
        }
    }
    o
}

/// The page's stylesheet. inferno's SVG brings a global `text` rule; the
/// `.chart text` rule here is more specific, so it leaves these charts alone.
const STYLE: &str = "
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: .6em; }
.figure { background: #f4f6f8; border-radius: 6px; padding: .5em .8em; }
.figure .label { font-size: .8em; color: #555; } .figure .value { font-size: 1.1em; font-weight: bold; }
.figure .note, .note { font-size: .8em; color: #666; }
.culprit { border: 1px solid #d8a; border-left: 6px solid #c24; border-radius: 6px; padding: .4em 1em; margin: .8em 0; background: #fff8f8; }
.culprit h3 { font-size: 1em; margin: .4em 0; }
.culprit dl { display: grid; grid-template-columns: 10em 1fr; gap: .2em .8em; margin: .4em 0; }
.culprit dt { color: #555; } .culprit dd { margin: 0; }
code { font-family: monospace; word-break: break-all; }
.chart text { font-family: sans-serif; font-size: 11px; fill: #333; }
#flamegraph > svg { width: 100%; }
.legend span { display: inline-block; margin-right: 1.2em; font-size: .85em; }
.legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: middle; }
";

/// Wraps sections into a page. The policy allows inline styles and scripts
/// (inferno's) and nothing else: no URL of any kind is fetched.
pub fn document(title: &str, sections: &[String]) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'\">\n");
    let _ = writeln!(o, "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>", escape(title), escape(title));
    for s in sections {
        o.push_str(s);
        o.push('\n');
    }
    o.push_str("</body>\n</html>\n");
    o
}

fn figure(o: &mut String, label: &str, value: &str, note: Option<&str>) {
    let note = note.map(|n| format!("<div class=\"note\">{}</div>", escape(n))).unwrap_or_default();
    let _ = writeln!(o, "<div class=\"figure\"><div class=\"label\">{}</div><div class=\"value\">{}</div>{note}</div>", escape(label), escape(value));
}

/// The headline figures: the target, the window, allocation, GC and pauses.
/// A figure that is missing says why.
pub fn headline(r: &Report) -> String {
    let mut o = String::from("<section id=\"headline\">\n<h2>Summary</h2>\n");
    let t = &r.target;
    let _ = writeln!(o, "<p>pid {} <code>{}</code> ({} {})</p>", t.pid, escape(&t.exe), escape(&t.go_version), escape(&t.arch));
    o.push_str("<div class=\"figures\">\n");
    let exit = r.window.program_exit.map(|p| format!(": the program {p}")).unwrap_or_default();
    figure(&mut o, "Window", &format!("{:.1} s", r.window.duration_s), Some(&format!("ended by {}{exit}", r.window.ended_by)));
    figure(&mut o, "Mode", r.sampling.mode.name(), Some(&slowdown(r)));
    let (alloc, alloc_note) = match (r.gc.alloc_bytes_per_s, &r.gc.heap_unavailable) {
        (Some(a), _) => (format!("{}/s", bytes(a as u64)), "the runtime's own total (MemStats.TotalAlloc)".to_owned()),
        (None, Some(why)) => ("unavailable".into(), why.clone()),
        (None, None) => ("unavailable".into(), "runtime.gcController was not read in this window".into()),
    };
    figure(&mut o, "Allocation rate", &alloc, Some(&alloc_note));
    gc_figures(&mut o, r);
    figure(&mut o, "Events", &format!("{} mallocgc, {} growslice", si(r.events.mallocgc as f64), si(r.events.growslice as f64)), Some(&format!("{} lost", r.events.lost)));
    o.push_str("</div>\n</section>");
    o
}

/// Cycles, pauses, GC's CPU share, the live heap and the settings.
fn gc_figures(o: &mut String, r: &Report) {
    figure(o, "GC cycles", &format!("{} ({:.1}/s)", r.gc.cycles, r.gc.cycles_per_s), r.gc.diagnosis.as_deref());
    let s = &r.gc.stw;
    figure(o, "Stop-the-world pauses", &format!("{} pauses, {:.3} ms", s.count, s.total_ms), Some(&format!("p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs", s.p50_us, s.p99_us, s.max_us)));
    let cpu = match (r.gc.cpu_share, &r.gc.cpu_share_unavailable) {
        (Some(c), _) => (format!("{:.1}%", c * 100.0), None),
        (None, why) => ("unavailable".into(), Some(why.clone().unwrap_or_else(|| "not measured".into()))),
    };
    figure(o, "GC CPU share", &cpu.0, cpu.1.as_deref());
    let m = &r.gc.heap_medians;
    let live = match (m.marked, &r.gc.heap_unavailable) {
        (Some(b), _) => (bytes(b), m.goal.map(|g| format!("median per cycle; goal {}", bytes(g)))),
        (None, Some(why)) => ("unavailable".into(), Some(why.clone())),
        (None, None) => ("unavailable".into(), Some("no GC cycle ended in the window".into())),
    };
    figure(o, "Live heap", &live.0, live.1.as_deref());
    if let Some(st) = &r.gc.settings {
        figure(o, "GOGC / GOMEMLIMIT", &format!("{} / {}", st.gogc_text(), st.limit_text()), None);
    }
}

fn slowdown(r: &Report) -> String {
    let sm = &r.sampling;
    let est = sm.est_slowdown.map_or("unknown: the target's CPU time was not read".into(), |e| format!("{:.1}%", e * 100.0));
    match sm.mode {
        Mode::Sampled => format!("allocation probes attached {:.2} s in {} bursts; estimated slowdown {est}", sm.observed_s, sm.bursts),
        Mode::Exact => format!("every allocation probed; estimated slowdown {est}"),
    }
}

/// One card per culprit: the diagnosis, where, the loop, the element type,
/// the fix and what it saves.
pub fn culprit_cards(culprits: &[Culprit]) -> String {
    let mut o = String::from("<section id=\"culprits\">\n<h2>Culprits</h2>\n");
    if culprits.is_empty() {
        o.push_str("<p>None: no append keeps growing a slice at a significant share of allocated bytes.</p>\n");
    }
    for c in culprits {
        culprit_card(&mut o, c);
    }
    o.push_str("</section>");
    o
}

/// The owner's functions by the bytes they cause (report `app_callsites`).
pub fn by_your_code(r: &Report) -> String {
    let mut o = String::from("<section id=\"by-your-code\">\n<h2>By your code</h2>\n");
    let _ = writeln!(o, "<p>Bytes each of your functions allocates, itself or through the libraries it calls. Yours: {}.</p>", escape(&r.app.scope.join(", ")));
    if r.app_callsites.is_empty() {
        o.push_str("<p>None: no allocation stack reached a function of yours (within the frames walked).</p>\n</section>");
        return o;
    }
    o.push_str("<table>\n<tr><th>share</th><th>bytes/s</th><th>growing slices</th><th>with it on the stack</th><th>function</th><th>via</th></tr>\n");
    for a in r.app_callsites.iter().take(10) {
        let _ = writeln!(
            o,
            "<tr><td>{:.1}%</td><td>{}/s</td><td>{:.1}%</td><td>{:.1}%</td><td><code>{}</code> <code>{}</code></td><td>{}</td></tr>",
            a.share_of_bytes * 100.0,
            bytes(a.bytes_per_s as u64),
            a.growslice_share * 100.0,
            a.inclusive_share * 100.0,
            escape(&a.function),
            escape(&loc(&a.file, a.line)),
            a.via.as_deref().map(|v| format!("<code>{}</code>", escape(v))).unwrap_or_default()
        );
    }
    let _ = writeln!(o, "</table>\n<p>{:.1}% of bytes had no frame of yours.</p>\n</section>", r.app.unowned_share * 100.0);
    o
}

fn row(o: &mut String, term: &str, html: &str) {
    let _ = writeln!(o, "<dt>{term}</dt><dd>{html}</dd>");
}

fn culprit_card(o: &mut String, c: &Culprit) {
    let _ = writeln!(o, "<article class=\"culprit\" id=\"culprit-{}\">\n<h3>#{} {}</h3>\n<dl>", c.rank, c.rank, escape(&c.summary));
    row(o, "Where", &format!("<code>{}</code> at <code>{}</code> ({})", escape(&c.function), escape(&loc(&c.file, c.line)), escape(&c.kind)));
    let lp = c.loop_.as_ref().map_or("not found in the code around the append".into(), |l| {
        let over = l.over.as_ref().map(|v| format!(", ranging over <code>{}</code>", escape(v))).unwrap_or_default();
        format!("{} at <code>{}</code>{over}", escape(l.kind.name()), escape(&loc(&l.file, l.line)))
    });
    row(o, "Loop", &lp);
    if let Some(f) = &c.app_frame {
        row(o, "Your code", &format!("<code>{}</code> at <code>{}</code>", escape(&f.function), escape(&loc(&f.file, f.line))));
    }
    if let Some(l) = c.app_loop.as_ref().filter(|l| c.loop_.as_ref() != Some(*l)) {
        let over = l.over.as_ref().map(|v| format!(", ranging over <code>{}</code>", escape(v))).unwrap_or_default();
        row(o, "Your loop", &format!("{} at <code>{}</code>{over}", escape(l.kind.name()), escape(&loc(&l.file, l.line))));
    }
    let ty = c.elem_type.as_ref().map_or("unknown: the type descriptor could not be read".into(), |t| format!("<code>{}</code> ({} B each)", escape(&t.name), t.size));
    row(o, "Element type", &ty);
    row(o, "Share", &format!("{:.1}% of allocated bytes, {:.1}% of allocations", c.share_of_bytes * 100.0, c.share_of_allocs * 100.0));
    if let Some(p) = &c.per_call {
        row(o, "Per call", &format!("{:.1} growths, {} in {} calls seen", p.growslice, bytes(p.bytes as u64), p.calls));
    }
    row(o, "Fix", &format!("<strong>{}</strong>", escape(&c.suggestion)));
    row(o, "Expected saving", &saving(c));
    row(o, "Evidence", &escape(&c.evidence));
    o.push_str("</dl>\n</article>\n");
}

fn saving(c: &Culprit) -> String {
    match (&c.expected_saving, &c.elem_type, &c.per_call) {
        (Some(s), _, _) => format!(
            "at least {}/s ({:.0}% of allocated bytes), {} allocation per call after the fix",
            bytes(s.bytes_per_s as u64),
            s.share_of_bytes * 100.0,
            s.allocations_per_call_after
        ),
        (None, None, _) => "not estimated: the element type is unknown".into(),
        (None, _, None) => "not estimated: no call was seen to start from an empty slice".into(),
        (None, _, Some(_)) => "not estimated: no call was seen to finish growing".into(),
    }
}

/// Folded stacks are `a;b;c N` lines: a `;` inside a name (Go's generic
/// shapes such as `go.shape.struct { a int; b int }`) would split a frame,
/// and a line break would split a stack, so those are replaced.
fn folded_name(s: &str) -> String {
    s.chars().map(|c| if c == ';' { '\u{37e}' } else if c.is_control() { char::REPLACEMENT_CHARACTER } else { c }).collect()
}

/// Above this total the weights are scaled down: inferno adds them as usize,
/// and a recording's byte counts may be anything.
const MAX_TOTAL: u128 = 1 << 52;

/// The stacks as folded lines, merged and sorted (inferno wants them sorted),
/// each weight scaled so their sum stays below [`MAX_TOTAL`].
pub fn folded(stacks: &[Stack]) -> Vec<String> {
    let total: u128 = stacks.iter().map(|s| u128::from(s.bytes)).sum();
    let div = total.div_ceil(MAX_TOTAL).max(1);
    let mut merged = std::collections::BTreeMap::<String, u128>::new();
    for s in stacks.iter().filter(|s| !s.frames.is_empty()) {
        let key = s.frames.iter().map(|f| folded_name(f)).collect::<Vec<_>>().join(";");
        *merged.entry(key).or_default() += u128::from(s.bytes);
    }
    merged.into_iter().filter_map(|(k, b)| Some((k, b / div)).filter(|(_, b)| *b > 0)).map(|(k, b)| format!("{k} {b}")).collect()
}

/// The allocation flame graph: width is allocated bytes, the root is the
/// outermost frame. inferno's script finds its SVG as the document's first
/// `svg` element and by fixed ids (`frames`, `details`, ...), so a page holds
/// one flame graph, placed before any other chart.
pub fn flame_graph(title: &str, stacks: &[Stack], mode: Mode) -> String {
    let mut o = format!("<section id=\"flamegraph\">\n<h2>{}</h2>\n", escape(title));
    let note = match mode {
        Mode::Exact => "Width: bytes allocated at each stack (every allocation). Click a frame to zoom, Ctrl-F to search.",
        Mode::Sampled => "Width: bytes allocated in the sampling bursts; shares hold for the window, totals do not. Click a frame to zoom, Ctrl-F to search.",
    };
    let _ = writeln!(o, "<p class=\"note\">{note}</p>");
    let lines = folded(stacks);
    match flame_svg(title, &lines) {
        Some(svg) => o.push_str(&svg),
        None => o.push_str("<p>No allocation stacks were seen in this window.</p>"),
    }
    o.push_str("\n</section>");
    o
}

/// inferno's SVG without its XML declaration and DOCTYPE, which mean nothing
/// inside HTML. None when there is nothing to draw.
fn flame_svg(title: &str, lines: &[String]) -> Option<String> {
    flame_svg_with(title, lines, |_| {})
}

/// inferno's SVG for folded `lines`, with `tune` changing the page's options.
pub(super) fn flame_svg_with(title: &str, lines: &[String], tune: impl FnOnce(&mut inferno::flamegraph::Options)) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = title.to_owned();
    opt.count_name = "bytes".into();
    opt.name_type = "Frame:".into();
    opt.colors = inferno::flamegraph::color::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    // Colours from each name's hash: the same page for the same data.
    opt.deterministic = true;
    // Cut a long name at its end, so a narrow frame still shows its function.
    opt.text_truncate_direction = inferno::flamegraph::TextTruncateDirection::Right;
    tune(&mut opt);
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut svg).ok()?;
    let svg = String::from_utf8(svg).ok()?;
    Some(svg[svg.find("<svg")?..].to_owned())
}

/// Reasons in a stable order, each with its colour.
fn reason_colors(pauses: &[Pause]) -> Vec<(&str, &'static str)> {
    const COLORS: [&str; 8] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
    let mut names: Vec<&str> = pauses.iter().map(|p| p.reason.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().enumerate().map(|(i, n)| (n, COLORS[i % COLORS.len()])).collect()
}

fn color_of<'a>(colors: &[(&str, &'a str)], reason: &str) -> &'a str {
    colors.iter().find(|(n, _)| *n == reason).map_or("#999", |(_, c)| c)
}

fn legend(colors: &[(&str, &str)]) -> String {
    let mut o = String::from("<div class=\"legend\">");
    for (name, color) in colors {
        let _ = write!(o, "<span><i style=\"background:{color}\"></i>{}</span>", escape(name));
    }
    o.push_str("</div>");
    o
}

/// A chart's drawing area: data coordinates to SVG pixels.
struct Plot {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x_max: f64,
    y_max: f64,
}

/// Labelled marks on an axis: (value, label).
type Ticks = Vec<(f64, String)>;

impl Plot {
    const TOP: f64 = 10.0;
    const RIGHT: f64 = 20.0;

    fn new(x_max: f64, y_max: f64) -> Self {
        Self { w: 1200.0, h: 260.0, left: 80.0, bottom: 40.0, x_max: x_max.max(1e-9), y_max: y_max.max(1e-9) }
    }

    fn x(&self, v: f64) -> f64 {
        self.left + v / self.x_max * (self.w - self.left - Self::RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.h - self.bottom - v / self.y_max * (self.h - self.bottom - Self::TOP)
    }

    /// Opens the SVG and draws both axes with their marks and labels.
    fn open(&self, id: &str, x_label: &str, y_label: &str, x_ticks: &Ticks, y_ticks: &Ticks) -> String {
        let mut o = format!("<svg id=\"{id}\" class=\"chart\" width=\"100%\" viewBox=\"0 0 {} {}\">\n", self.w, self.h);
        let (x0, y0) = (self.x(0.0), self.y(0.0));
        let _ = writeln!(o, "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"#555\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"#555\"/>", self.x(self.x_max), Self::TOP);
        for (v, label) in x_ticks {
            let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", self.x(*v), y0 + 15.0, escape(label));
        }
        for (v, label) in y_ticks {
            let _ = writeln!(o, "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>", self.x(self.x_max), y = self.y(*v));
            let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", x0 - 6.0, self.y(*v) + 4.0, escape(label));
        }
        let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", self.x(self.x_max / 2.0), self.h - 6.0, escape(x_label));
        let mid = self.y(self.y_max / 2.0);
        let _ = writeln!(o, "<text x=\"12\" y=\"{mid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {mid:.1})\">{}</text>", escape(y_label));
        o
    }
}

/// A round step (1, 2 or 5 times a power of ten, times `unit`) that cuts
/// 0..=max into at most five parts.
fn nice_step(max: f64, unit: f64) -> f64 {
    let raw = (max / unit / 5.0).max(1e-12);
    let p = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0, 10.0].into_iter().find(|m| m * p >= raw).unwrap_or(10.0);
    m * p * unit
}

/// Marks at every step from 0 up to `max`, and the axis end (a whole step
/// at or past `max`, so the data fits under the last mark).
fn ticks(max: f64, unit: f64, label: &dyn Fn(f64) -> String) -> (Ticks, f64) {
    // One sample, or pauses all at 0 s: an axis of one unit rather than of nothing.
    let max = if max > 0.0 { max } else { unit };
    let step = nice_step(max, unit);
    let end = (max / step).ceil().max(1.0) * step;
    let n = (end / step).round() as usize;
    ((0..=n).map(|i| (i as f64 * step, label(i as f64 * step))).collect(), end)
}

/// The binary unit to count `max` bytes in, so byte marks fall on round KiB, MiB or GiB.
fn byte_unit(max: f64) -> f64 {
    [1u64 << 30, 1 << 20, 1 << 10].into_iter().map(|u| u as f64).find(|u| max >= *u).unwrap_or(1.0)
}

fn seconds_text(s: f64) -> String {
    if s >= 10.0 || s == 0.0 { format!("{s:.0} s") } else { format!("{s:.1} s") }
}

/// A duration for an axis or a tooltip.
fn duration_text(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Power-of-two duration bins from the shortest pause to the longest: pauses
/// span microseconds to milliseconds, and equal-width bins would crowd them.
fn pause_bins(pauses: &[Pause]) -> (u32, usize) {
    let log2 = |ns: u64| 63 - ns.max(1).leading_zeros();
    let lo = pauses.iter().map(|p| log2(p.duration_ns)).min().unwrap_or(0);
    let hi = pauses.iter().map(|p| log2(p.duration_ns)).max().unwrap_or(0);
    (lo, (hi - lo + 1) as usize)
}

/// The pauses' durations as a histogram, each bar stacked by reason. Its bars
/// count every pause the session kept; `dropped` older ones are said, not drawn.
pub fn pause_histogram(pauses: &[Pause], stw: &Stw, dropped: u64) -> String {
    let mut o = String::from("<section id=\"pauses\">\n<h2>Stop-the-world pauses</h2>\n");
    let _ = writeln!(o, "<p id=\"stw-count\" data-count=\"{}\">{} pauses, total {:.3} ms; p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs.{}</p>", stw.count, stw.count, stw.total_ms, stw.p50_us, stw.p99_us, stw.max_us, kept_note(pauses, dropped));
    if pauses.is_empty() {
        o.push_str("<p>No pause in this window: the program did not collect while gcprobe watched.</p>\n</section>");
        return o;
    }
    let colors = reason_colors(pauses);
    let (lo, n) = pause_bins(pauses);
    let mut counts = vec![vec![0u64; colors.len()]; n];
    for p in pauses {
        let b = (63 - p.duration_ns.max(1).leading_zeros() - lo) as usize;
        counts[b][colors.iter().position(|(r, _)| *r == p.reason).unwrap_or(0)] += 1;
    }
    histogram_chart(&mut o, &counts, lo, &colors);
    o.push_str(&legend(&colors));
    o.push_str("\n</section>");
    o
}

/// The histogram's SVG: `counts[bin][reason]`, bin i holding 2^(lo+i) to 2^(lo+i+1) ns.
fn histogram_chart(o: &mut String, counts: &[Vec<u64>], lo: u32, colors: &[(&str, &str)]) {
    let n = counts.len();
    let tallest = counts.iter().map(|c| c.iter().sum::<u64>()).max().unwrap_or(1) as f64;
    let (y_ticks, y_max) = ticks(tallest, 1.0, &|v| format!("{v:.0}"));
    let y_ticks = y_ticks.into_iter().filter(|(v, _)| v.fract() == 0.0).collect();
    let plot = Plot::new(n as f64, y_max);
    let bin_ns = |i: f64| 2f64.powf(lo as f64 + i);
    let x_ticks = (0..=n).map(|i| (i as f64, duration_text(bin_ns(i as f64)))).collect();
    o.push_str(&plot.open("pause-histogram", "pause duration (power-of-two bins)", "pauses", &x_ticks, &y_ticks));
    for (i, per_reason) in counts.iter().enumerate() {
        let mut acc = 0u64;
        for (k, &c) in per_reason.iter().enumerate().filter(|(_, c)| **c > 0) {
            let (y_top, y_bot) = (plot.y((acc + c) as f64), plot.y(acc as f64));
            let (x, w) = (plot.x(i as f64) + 1.0, plot.x(1.0) - plot.x(0.0) - 2.0);
            let (name, color) = colors[k];
            let what = format!("{c} {name} pauses of {} to {}", duration_text(bin_ns(i as f64)), duration_text(bin_ns(i as f64 + 1.0)));
            // At least 2 px: a single pause beside hundreds still shows.
            let height = (y_bot - y_top).max(2.0);
            let _ = writeln!(o, "<rect class=\"bar\" data-n=\"{c}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{height:.1}\" fill=\"{color}\"><title>{}</title></rect>", y_bot - height, escape(&what));
            acc += c;
        }
    }
    o.push_str("</svg>\n");
}

fn kept_note(pauses: &[Pause], dropped: u64) -> String {
    if dropped == 0 {
        return String::new();
    }
    format!(" The charts show the last {} of them; {dropped} older pauses were counted but not kept one by one.", pauses.len())
}

/// Each pause at its time, as tall as it was long, coloured by reason.
pub fn pause_timeline(pauses: &[Pause], window_s: f64, dropped: u64) -> String {
    let mut o = String::from("<section id=\"pause-timeline-section\">\n<h2>Pauses over time</h2>\n");
    if pauses.is_empty() {
        o.push_str("<p>No pause to draw.</p>\n</section>");
        return o;
    }
    if dropped > 0 {
        let _ = writeln!(o, "<p class=\"note\">{}</p>", kept_note(pauses, dropped).trim());
    }
    let colors = reason_colors(pauses);
    let (x_ticks, x_max) = ticks(pauses.iter().map(|p| p.t_s).fold(window_s, f64::max), 1.0, &seconds_text);
    let longest = pauses.iter().map(|p| p.duration_ns).max().unwrap_or(1) as f64;
    let (y_ticks, y_max) = ticks(longest, 1.0, &duration_text);
    let plot = Plot::new(x_max, y_max);
    o.push_str(&plot.open("pause-timeline", "seconds since the first event", "pause", &x_ticks, &y_ticks));
    for p in pauses {
        let (x, y) = (plot.x(p.t_s), plot.y(p.duration_ns as f64));
        let what = format!("{:.3} s: {} {}", p.t_s, p.reason, duration_text(p.duration_ns as f64));
        let _ = writeln!(o, "<line class=\"pause\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"2\"><title>{}</title></line>", plot.y(0.0), y.min(plot.y(0.0) - 1.0), color_of(&colors, &p.reason), escape(&what));
    }
    o.push_str("</svg>\n");
    o.push_str(&legend(&colors));
    o.push_str("\n</section>");
    o
}

/// The runtime's heap at each cycle's start, with the cycle's goal and the
/// bytes it marked live: one point per `heap_live` sample.
pub fn heap_series(gc: &Gc) -> String {
    let mut o = String::from("<section id=\"heap\">\n<h2>Live heap per GC cycle</h2>\n");
    if gc.heap_live.is_empty() {
        let why = gc.heap_unavailable.as_deref().unwrap_or("no GC cycle started in the window");
        let _ = writeln!(o, "<p>Unavailable: {}.</p>\n</section>", escape(why));
        return o;
    }
    let h = &gc.heap_live;
    if gc.heap_live_every > 1 {
        let _ = writeln!(o, "<p class=\"note\">One cycle in {} is kept: the series is thinned evenly past 4,096 cycles.</p>", gc.heap_live_every);
    }
    heap_chart(&mut o, h);
    o.push_str("<div class=\"legend\"><span><i style=\"background:#1f77b4\"></i>heap at the cycle's start</span><span><i style=\"background:#ff7f0e\"></i>goal (GOGC)</span><span><i style=\"background:#2ca02c\"></i>marked live</span></div>\n");
    if gc.heap_climbing {
        o.push_str("<p><strong>The live heap rose across most cycles: a likely leak.</strong></p>\n");
    }
    o.push_str("</section>");
    o
}

/// The heap series' SVG: a line each for the goal, the marked bytes and the heap at the cycle's start, with a point per sample on the last.
fn heap_chart(o: &mut String, h: &[crate::report::HeapSample]) {
    let (x_ticks, x_max) = ticks(h.iter().map(|s| s.t_s).fold(0.0, f64::max), 1.0, &seconds_text);
    let highest = h.iter().flat_map(|s| [Some(s.bytes), s.goal, s.marked]).flatten().max().unwrap_or(1) as f64;
    let (y_ticks, y_max) = ticks(highest, byte_unit(highest), &|b| bytes(b as u64));
    let plot = Plot::new(x_max, y_max);
    o.push_str(&plot.open("heap-series", "seconds since the first event", "bytes", &x_ticks, &y_ticks));
    for (class, color, dash, pick) in [
        ("heap-goal", "#ff7f0e", " stroke-dasharray=\"6 4\"", (|s| s.goal) as fn(&crate::report::HeapSample) -> Option<u64>),
        ("heap-marked", "#2ca02c", "", |s| s.marked),
        ("heap-start", "#1f77b4", "", |s| Some(s.bytes)),
    ] {
        let pts: Vec<String> = h.iter().filter_map(|s| Some(format!("{:.1},{:.1}", plot.x(s.t_s), plot.y(pick(s)? as f64)))).collect();
        let _ = writeln!(o, "<polyline class=\"{class}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"{dash} points=\"{}\"/>", pts.join(" "));
    }
    for s in h {
        let fig = |v: Option<u64>| v.map_or("?".into(), bytes);
        let what = format!("{:.3} s: heap {} at the cycle's start, goal {}, marked {}", s.t_s, bytes(s.bytes), fig(s.goal), fig(s.marked));
        let _ = writeln!(o, "<circle class=\"heap-point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1f77b4\"><title>{}</title></circle>", plot.x(s.t_s), plot.y(s.bytes as f64), escape(&what));
    }
    o.push_str("</svg>\n");
}

/// The report's warnings, or nothing.
pub fn warnings(ws: &[String]) -> String {
    if ws.is_empty() {
        return String::new();
    }
    let mut o = String::from("<section id=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n");
    for w in ws {
        let _ = writeln!(o, "<li>{}</li>", escape(w));
    }
    o.push_str("</ul>\n</section>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::appendloop::{LoopKind, LoopReport},
        report::{empty_report, HeapSample},
        tracee::gotypes::TypeInfo,
    };

    const HOSTILE: &str = "main.<script>alert(\"x\")</script>&'";

    fn culprit(function: &str) -> Culprit {
        Culprit {
            rank: 1,
            function: function.into(),
            file: Some("/src/a&b/main.go".into()),
            line: Some(23),
            kind: "append-growth".into(),
            share_of_bytes: 0.9,
            share_of_allocs: 0.1,
            evidence: format!("evidence of {function}"),
            suggestion: format!("preallocate in {function}"),
            summary: format!("{function} grows"),
            loop_: Some(LoopReport { file: Some("/src/main.go".into()), line: Some(22), kind: LoopKind::Map, over: Some("m[<k>]".into()) }),
            elem_type: Some(TypeInfo { name: "map[string]<T>".into(), size: 16 }),
            per_call: None,
            expected_saving: None,
            app_frame: Some(crate::tracee::frame::Frame { function: format!("{function}.caller"), file: Some("/src/<app>.go".into()), line: Some(9), inlined: false }),
            app_loop: None,
        }
    }

    fn pause(t_s: f64, duration_ns: u64, reason: &str) -> Pause {
        Pause { t_s, duration_ns, reason: reason.into() }
    }

    /// Names from the target reach the page as text, never as markup: the
    /// only script on the page is inferno's own.
    #[test]
    fn names_from_the_target_are_escaped_in_every_section() {
        let mut r = empty_report();
        r.target.exe = format!("/bin/{HOSTILE}");
        r.culprits = vec![culprit(HOSTILE)];
        r.app_callsites = vec![crate::report::AppCallsite {
            rank: 1,
            function: HOSTILE.into(),
            file: None,
            line: None,
            bytes: 1,
            allocs: 1,
            bytes_per_s: 1.0,
            share_of_bytes: 1.0,
            growslice_bytes: 0,
            growslice_share: 0.0,
            inclusive_bytes: 1,
            inclusive_share: 1.0,
            via: Some(HOSTILE.into()),
        }];
        r.warnings = vec![HOSTILE.into()];
        let d = Drawn { stacks: vec![Stack { frames: vec!["main.main".into(), HOSTILE.into()], bytes: 100 }], pauses: vec![pause(0.5, 50_000, HOSTILE)], pauses_dropped: 0 };
        let page = report_page(&r, &d);
        assert!(!page.contains("<script>alert"), "{page}");
        assert_eq!(page.matches("<script").count(), 1, "inferno's script only");
        // Card, title, warning, legend: each escaped the same way.
        assert!(page.matches("main.&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;").count() >= 8, "{page}");
        assert!(page.contains("<code>/src/&lt;app&gt;.go:9</code>"), "{page}");
        assert!(page.contains("ranging over <code>m[&lt;k&gt;]</code>") && page.contains("<code>map[string]&lt;T&gt;</code> (16 B each)"), "{page}");
        // inferno escapes the frame's name in its SVG itself.
        assert!(page.contains("main.&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&apos; (100 bytes, 100.00%)"), "{page}");
        assert_eq!(escape("a\x1b[2J\u{9b}b\n"), "a\u{fffd}[2J\u{fffd}b\n");
    }

    #[test]
    fn folded_stacks_keep_frames_whole_merge_and_fit_inferno() {
        let s = |frames: &[&str], bytes| Stack { frames: frames.iter().map(|f| f.to_string()).collect(), bytes };
        let lines = folded(&[s(&["main.main", "main.F[go.shape.struct { a int; b int }]"], 10), s(&["main.main", "main.g\nx"], 5), s(&["main.main", "main.g\nx"], 7), s(&[], 3)]);
        assert_eq!(lines, ["main.main;main.F[go.shape.struct { a int\u{37e} b int }] 10", "main.main;main.g\u{fffd}x 12"]);
        // A recording's totals may be anything: the sum stays within what inferno adds up.
        let huge = folded(&[s(&["a"], u64::MAX), s(&["b"], u64::MAX)]);
        let weights: Vec<u128> = huge.iter().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(weights[0], weights[1]);
        assert!(weights.iter().sum::<u128>() <= MAX_TOTAL && weights[0] > MAX_TOTAL / 4, "{weights:?}");
        assert!(flame_graph("t", &[], Mode::Exact).contains("No allocation stacks were seen"));
    }

    /// Power-of-two bins from the shortest pause to the longest, stacked by reason.
    #[test]
    fn the_pause_histogram_counts_every_pause_in_its_bin() {
        let pauses = [pause(0.1, 1_000, "GC sweep termination"), pause(0.2, 1_500, "GC mark termination"), pause(0.3, 3_000, "GC sweep termination"), pause(0.4, 100_000, "ReadMemStats")];
        let stw = Stw { count: 4, ..Stw::default() };
        let h = pause_histogram(&pauses, &stw, 0);
        // 1000 ns is in 512..1024, 1500 in 1024..2048, 3000 in 2048..4096, 100 µs in 65536..131072.
        let bars: Vec<&str> = h.match_indices("data-n=\"").map(|(i, m)| &h[i + m.len()..i + m.len() + 1]).collect();
        assert_eq!(bars, ["1", "1", "1", "1"]);
        assert_eq!(pause_bins(&pauses), (9, 8), "2^9 ns to 2^16 ns");
        assert!(h.contains("data-count=\"4\""), "{h}");
        assert!(pause_histogram(&pauses, &stw, 10).contains("The charts show the last 4 of them; 10 older pauses"));
        let t = pause_timeline(&pauses, 1.0, 0);
        assert_eq!(t.matches("class=\"pause\"").count(), 4);
        assert!(pause_histogram(&[], &Stw::default(), 0).contains("No pause in this window"));
    }

    #[test]
    fn the_heap_series_has_a_point_per_sample_or_says_why_not() {
        let mut r = empty_report();
        r.gc.heap_unavailable = Some("the kernel could not read runtime.gcController at the pauses".into());
        assert!(heap_series(&r.gc).contains("Unavailable: the kernel could not read runtime.gcController at the pauses."));
        r.gc.heap_unavailable = None;
        r.gc.heap_live = (0..7).map(|i| HeapSample { t_s: i as f64, bytes: 4 << 20, goal: (i > 0).then_some(4 << 20), marked: Some(1 << 20) }).collect();
        let h = heap_series(&r.gc);
        assert_eq!(h.matches("class=\"heap-point\"").count(), 7);
        let points = |class: &str| h[h.find(&format!("class=\"{class}\"")).unwrap()..].split("points=\"").nth(1).unwrap().split('"').next().unwrap().split(' ').count();
        assert_eq!((points("heap-start"), points("heap-goal"), points("heap-marked")), (7, 6, 7));
    }

    #[test]
    fn axis_marks_fall_on_round_values() {
        let values = |t: Ticks| t.into_iter().map(|(v, _)| v).collect::<Vec<_>>();
        let (t, end) = ticks(6.0, 1.0, &|v| v.to_string());
        assert_eq!((values(t), end), (vec![0.0, 2.0, 4.0, 6.0], 6.0));
        let mib = (1u64 << 20) as f64;
        let (t, end) = ticks(4.2 * mib, byte_unit(4.2 * mib), &|b| bytes(b as u64));
        assert_eq!(t.last().map(|(_, l)| l.as_str()), Some("5.0 MiB"));
        assert_eq!(end, 5.0 * mib);
        assert_eq!(values(ticks(0.37, 1.0, &|v| v.to_string()).0).len(), 5, "0 to 0.4 by 0.1");
        let (t, end) = ticks(0.0, 1.0, &seconds_text);
        assert_eq!((t.len(), t[1].1.as_str(), end), (6, "0.2 s", 1.0), "one heap sample: an axis of one unit");
    }
}
