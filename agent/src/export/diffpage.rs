//! `gcprobe diff --format html`: the comparison as one page, built from the
//! report page's sections (`html`). Its flame graph is differential: the
//! width is the bytes per second BEFORE, the colour how each frame changed
//! AFTER (blue fell, red rose), so a fixed culprit shows as a wide blue tower
//! rather than vanishing, as it would in a graph of AFTER.
use std::fmt::Write as _;

use super::html::{self, escape, Drawn, Stack};
use crate::{
    report::{
        diff::{change_text, side_text, where_text, CulpritChange, Diff, Presence},
        rules::Metric,
        Report,
    },
    units::bytes,
};

/// What each side brings beyond its report: a recording's stacks and
/// pauses; None for a JSON report, which holds neither.
pub struct DiffSide<'a> {
    pub report: &'a Report,
    pub drawn: Option<&'a Drawn>,
}

/// Callsite rows the page shows (the JSON has every one).
const ROWS: usize = 25;

pub fn diff_page(d: &Diff, before: &DiffSide<'_>, after: &DiffSide<'_>) -> String {
    let title = format!("gcprobe diff: {} → {}", d.before.file, d.after.file);
    let sections = [
        figures(d),
        flame(d, before, after),
        callsites(d),
        culprits(d),
        side_charts("Before", before),
        side_charts("After", after),
        html::warnings(&d.warnings),
    ];
    html::document(&title, &sections)
}

/// Both sessions and every metric, before, after and the change.
fn figures(d: &Diff) -> String {
    let mut o = String::from("<section id=\"diff-figures\">\n<h2>Before and after</h2>\n<table>\n<tr><th></th><th>file</th><th>program</th><th>mode</th><th>window</th></tr>\n");
    for (label, s) in [("before", &d.before), ("after", &d.after)] {
        let _ = writeln!(o, "<tr><th>{label}</th><td><code>{}</code></td><td>pid {} <code>{}</code> {}</td><td>{}</td><td>{:.1} s</td></tr>", escape(&s.file), s.pid, escape(&s.exe), escape(&s.go_version), s.mode.name(), s.duration_s);
    }
    o.push_str("</table>\n<table id=\"diff-metrics\">\n<tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>\n");
    for mc in &d.metrics {
        let Ok(m) = Metric::named(mc.metric) else { continue };
        let class = match mc.change.change {
            Some(c) if c < 0.0 => " class=\"fell\"",
            Some(c) if c > 0.0 => " class=\"rose\"",
            _ => "",
        };
        let _ = writeln!(o, "<tr{class} data-metric=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", mc.metric, mc.metric, escape(&side_text(m, mc.change.before)), escape(&side_text(m, mc.change.after)), escape(&change_text(m, &mc.change)));
    }
    o.push_str("</table>\n</section>");
    o
}

/// The differential flame graph, or why there is none.
fn flame(d: &Diff, before: &DiffSide<'_>, after: &DiffSide<'_>) -> String {
    let mut o = String::from("<section id=\"flamegraph\">\n<h2>Allocation flame graph, before → after</h2>\n");
    let (Some(b), Some(a)) = (before.drawn, after.drawn) else {
        let json = if before.drawn.is_none() { &d.before.file } else { &d.after.file };
        let _ = writeln!(o, "<p>Unavailable: <code>{}</code> is a JSON report, which keeps no stacks; diff two recordings for the flame graph.</p>\n</section>", escape(json));
        return o;
    };
    o.push_str("<p class=\"note\">Width: bytes per second before. Colour: how each frame changed after: blue fell, red rose, the deeper the more. Click a frame to zoom, Ctrl-F to search.</p>\n");
    match differential_svg(&per_second(&b.stacks, before.report), &per_second(&a.stacks, after.report)) {
        Some(svg) => o.push_str(&svg),
        None => o.push_str("<p>No allocation stacks were seen before.</p>"),
    }
    o.push_str("\n</section>");
    o
}

/// Stacks weighted by bytes per second over the time the allocation probes
/// watched, so sessions of different lengths compare.
fn per_second(stacks: &[Stack], r: &Report) -> Vec<Stack> {
    let secs = r.sampling.observed_s.max(1e-9);
    stacks.iter().map(|s| Stack { frames: s.frames.clone(), bytes: (s.bytes as f64 / secs).round() as u64 }).collect()
}

/// inferno's differential flame graph of two folded profiles, widths from BEFORE.
fn differential_svg(before: &[Stack], after: &[Stack]) -> Option<String> {
    let (b, a) = (html::folded(before).join("\n"), html::folded(after).join("\n"));
    let mut lines = Vec::new();
    // inferno sizes frames by the second profile and colours them by second
    // minus first: AFTER goes first, and the colours are negated, so widths
    // are BEFORE's and red still means "rose".
    inferno::differential::from_readers(inferno::differential::Options::default(), a.as_bytes(), b.as_bytes(), &mut lines).ok()?;
    let lines: Vec<String> = String::from_utf8(lines).ok()?.lines().map(str::to_owned).collect();
    html::flame_svg_with("bytes per second, before → after", &lines, |opt| {
        opt.count_name = "bytes/s".into();
        opt.negate_differentials = true;
    })
}

/// The callsites whose bytes/s changed most.
fn callsites(d: &Diff) -> String {
    let mut o = String::from("<section id=\"diff-callsites\">\n<h2>Callsites, the biggest change first</h2>\n<table>\n<tr><th></th><th>probe</th><th>callsite</th><th>bytes/s before</th><th>after</th><th>change</th><th>allocs/s before</th><th>after</th></tr>\n");
    let (b, n) = (Metric::AllocBytesPerS, Metric::AllocPerS);
    for c in d.callsites.iter().take(ROWS) {
        let mark = match c.presence {
            Presence::Both => "",
            Presence::Gone => "gone",
            Presence::New => "new",
        };
        let _ = writeln!(
            o,
            "<tr class=\"{mark}\"><td>{mark}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.probe.name(),
            escape(&where_text(&c.function, c.file.as_deref(), c.line)),
            escape(&side_text(b, c.bytes_per_s.before)),
            escape(&side_text(b, c.bytes_per_s.after)),
            escape(&change_text(b, &c.bytes_per_s)),
            escape(&side_text(n, c.allocs_per_s.before)),
            escape(&side_text(n, c.allocs_per_s.after)),
        );
    }
    let _ = writeln!(o, "</table>\n<p class=\"note\">{} rows in all; the JSON (--format json) lists every one.</p>\n</section>", d.callsites.len());
    o
}

fn culprits(d: &Diff) -> String {
    let mut o = String::from("<section id=\"diff-culprits\">\n<h2>Culprits</h2>\n");
    for (what, list) in [("gone", &d.culprits_gone), ("new", &d.culprits_new), ("kept", &d.culprits_kept)] {
        let _ = writeln!(o, "<h3>{what}</h3>");
        if list.is_empty() {
            o.push_str("<p>None.</p>\n");
            continue;
        }
        o.push_str("<ul>\n");
        for c in list {
            culprit(&mut o, what, c);
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>");
    o
}

fn culprit(o: &mut String, what: &str, c: &CulpritChange) {
    let share = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
    let _ = writeln!(
        o,
        "<li class=\"culprit-{what}\"><code>{}</code> ({}): share of bytes {} → {}</li>",
        escape(&where_text(&c.function, c.file.as_deref(), c.line)),
        escape(&c.kind),
        share(c.share_of_bytes.before),
        share(c.share_of_bytes.after)
    );
}

/// One side's pauses and heap, as its own report page draws them.
fn side_charts(label: &str, s: &DiffSide<'_>) -> String {
    let r = s.report;
    let mut o = format!("<section class=\"diff-side\">\n<h2>{label}</h2>\n");
    let _ = writeln!(o, "<p>Allocation {}/s (the runtime's own total), {:.2} GC cycles/s.</p>", r.gc.alloc_bytes_per_s.map_or("unavailable".into(), |b| bytes(b as u64)), r.gc.cycles_per_s);
    match s.drawn {
        Some(d) => o.push_str(&html::pause_histogram(&d.pauses, &r.gc.stw, d.pauses_dropped)),
        None => {
            let stw = &r.gc.stw;
            let _ = writeln!(o, "<p>{} pauses, total {:.3} ms; p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (a JSON report keeps no pause list to chart).</p>", stw.count, stw.total_ms, stw.p50_us, stw.p99_us, stw.max_us);
        }
    }
    o.push_str(&html::heap_series(&r.gc));
    o.push_str("\n</section>");
    o
}
