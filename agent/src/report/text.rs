//! The human report: culprits first, then where the bytes go, then the GC.
use std::fmt::Write as _;

use super::Report;
use crate::{
    units::{bytes, si},
    plan::Mode,
};

const TOP: usize = 10;

/// `file:line`, as every report format shows a place in the source.
pub(crate) fn loc(file: &Option<String>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.clone(),
        _ => "?".into(),
    }
}

/// The report for people; `stack_depth` frames per callsite, itself included.
/// Text for a terminal: names come from the target or a recording, and an
/// escape sequence in one must not reach the terminal (JSON escapes its own).
pub fn printable(s: String) -> String {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(bad) {
        return s;
    }
    s.chars().map(|c| if bad(c) { char::REPLACEMENT_CHARACTER } else { c }).collect()
}

pub fn render(r: &Report, stack_depth: usize) -> String {
    let mut o = String::new();
    let t = &r.target;
    let _ = writeln!(o, "gcprobe report: pid {} {} ({} {})", t.pid, t.exe, t.go_version, t.arch);
    let _ = writeln!(
        o,
        "window {:.1}s (ended by {}{}); events: {} mallocgc, {} growslice, {} stw, {} assist, {} lost",
        r.window.duration_s,
        r.window.ended_by,
        r.window.program_exit.map(|p| format!(": the program {p}")).unwrap_or_default(),
        r.events.mallocgc, r.events.growslice, r.events.stw, r.events.assist, r.events.lost
    );
    let sm = &r.sampling;
    if sm.mode == Mode::Sampled {
        let _ = writeln!(
            o,
            "sampled: allocation probes attached {:.2}s in {} bursts ({:.2}% of the window){}; estimated slowdown {} ({} the {:.1}% budget)",
            sm.observed_s,
            sm.bursts,
            sm.duty * 100.0,
            sm.alloc_rate_ci95.map(|c| format!(", rates ±{:.0}%", c * 100.0)).unwrap_or_default(),
            sm.est_slowdown.map_or("unknown".into(), |e| format!("{:.2}%", e * 100.0)),
            match (sm.est_slowdown, sm.budget_pct) {
                (Some(e), Some(b)) if e * 100.0 > b => "OVER",
                (Some(_), Some(_)) => "within",
                _ => "against",
            },
            sm.budget_pct.unwrap_or(0.0)
        );
    } else {
        let _ = writeln!(
            o,
            "exact: every allocation probed; estimated slowdown {}: rates and GC figures are the slowed program's",
            sm.est_slowdown.map_or("unknown".into(), |e| format!("{:.0}%", e * 100.0))
        );
    }

    let _ = writeln!(o, "\nCULPRITS");
    if r.culprits.is_empty() {
        let _ = writeln!(o, "  none: no append keeps growing a slice at a significant share of allocated bytes");
    }
    for c in &r.culprits {
        let _ = writeln!(o, "  #{} {}", c.rank, c.summary);
        let _ = writeln!(o, "     {} at {} ({})", c.function, loc(&c.file, c.line), c.kind);
        if let Some(l) = &c.loop_ {
            let _ = writeln!(o, "     loop: {} at {}{}", l.kind, loc(&l.file, l.line), l.over.as_ref().map(|o| format!(", ranging over {o}")).unwrap_or_default());
        }
        if let Some(f) = &c.app_frame {
            let _ = writeln!(o, "     your code: {} at {}", f.function, loc(&f.file, f.line));
        }
        if let Some(l) = c.app_loop.as_ref().filter(|l| c.loop_.as_ref() != Some(*l)) {
            let _ = writeln!(o, "     your loop: {} at {}{}", l.kind, loc(&l.file, l.line), l.over.as_ref().map(|o| format!(", ranging over {o}")).unwrap_or_default());
        }
        let _ = writeln!(o, "     {:.1}% of bytes, {:.1}% of allocations", c.share_of_bytes * 100.0, c.share_of_allocs * 100.0);
        // The fix is the end of the summary line above.
        let _ = writeln!(o, "     evidence: {}", c.evidence);
    }

    by_your_code(&mut o, r);

    let _ = writeln!(o, "\nTOP CALLSITES (by bytes)");
    // Sampled mode sees bytes in its bursts and estimates the window's rates.
    let (seen, rate, count) = if sm.mode == Mode::Sampled { ("in bursts", "est. B/s", "est. n/s") } else { ("bytes", "bytes/s", "count/s") };
    let _ = writeln!(o, "  {:>6} {:>10} {:>10} {:>10}  {:<9} callsite", "share", seen, rate, count, "probe");
    for c in r.callsites.iter().take(TOP) {
        let _ = writeln!(
            o,
            "  {:>5.1}% {:>10} {:>10} {:>10}  {:<9} {} {}",
            c.share_of_bytes * 100.0,
            bytes(c.bytes),
            bytes(c.bytes_per_s as u64),
            si(c.per_s),
            c.probe,
            c.function,
            loc(&c.file, c.line)
        );
        // The inline chain and the next caller, so a culprit inside a helper shows who calls it.
        let shown = stack_depth.saturating_sub(1);
        for f in c.frames.iter().skip(1).take(shown) {
            let _ = writeln!(o, "  {:>51} <- {}{} {}", "", if f.inlined { "(inlined) " } else { "" }, f.function, loc(&f.file, f.line));
        }
        // Your code further up than the frames shown.
        if let Some(f) = c.app_frame.as_ref().filter(|f| !c.frames.iter().take(shown + 1).any(|s| s == *f)) {
            let _ = writeln!(o, "  {:>51} ... your code: {} {}", "", f.function, loc(&f.file, f.line));
        }
    }
    if r.callsites.len() > TOP {
        let _ = writeln!(o, "  ... {} more callsites (use --format json for all)", r.callsites.len() - TOP);
    }

    if !r.sizes.is_empty() {
        let _ = writeln!(o, "\nSIZES");
        for (name, z) in &r.sizes {
            let _ = writeln!(o, "  {:<28} {:>9} calls  mean {:>8.0}  p50 {:>6}  p99 {:>7}  max {:>9} {}", name, z.count, z.mean, z.p50, z.p99, z.max, z.unit);
        }
    }

    let s = &r.gc.stw;
    let _ = writeln!(o, "\nGC");
    let gc_start = r.events.gc_start.map(|n| format!("   gcStart calls {n}")).unwrap_or_default();
    // Sampled mode probes assists in the allocation bursts only.
    let assists = if sm.mode == Mode::Sampled && sm.observed_s > 0.0 {
        format!("{} in {:.2}s of bursts (~{:.0}/s)", r.events.assist, sm.observed_s, r.events.assist as f64 / sm.observed_s)
    } else {
        r.events.assist.to_string()
    };
    let _ = writeln!(o, "  cycles {} ({:.1}/s){gc_start}   assists {assists}", r.gc.cycles, r.gc.cycles_per_s);
    gc_heap(&mut o, &r.gc);
    let _ = writeln!(
        o,
        "  stop-the-world: {} pauses, total {:.3} ms, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        s.count, s.total_ms, s.p50_us, s.p99_us, s.max_us
    );
    if let Some(n) = &s.note {
        let _ = writeln!(o, "    ({n})");
    }
    for (reason, st) in &s.by_reason {
        let named = if st.gc { reason.clone() } else { format!("{reason} (not GC)") };
        let _ = writeln!(o, "    {:<28} {:>6} pauses  total {:>9.3} ms  max {:>8.0} us", named, st.count, st.total_ms, st.max_us);
    }

    if !r.gc.heap_live.is_empty() {
        // The series the climb was judged on, so "(climbing)" is about what is shown.
        let (which, series) = crate::analysis::culprits::leak_series(&r.gc.heap_live);
        let series: Vec<String> = series.into_iter().map(bytes).collect();
        let shown = if series.len() > 12 { format!("{} ... {}", series[..6].join(" "), series[series.len() - 6..].join(" ")) } else { series.join(" ") };
        let _ = writeln!(o, "  {}: {shown}{}", which.name(), if r.gc.heap_climbing { "  (climbing)" } else { "" });
    }

    if !r.maps.is_empty() {
        let _ = writeln!(o, "\nMAPS (inserted into or growing; likely leaks first)");
        for m in r.maps.iter().take(5) {
            if let Some(s) = m.summary.as_deref().filter(|_| m.likely_leak) {
                let _ = writeln!(o, "  LIKELY LEAK: {s}");
                continue;
            }
            let _ = writeln!(
                o,
                "  {} at {}: {} inserts, {} growths{}, filled at {} {}{}",
                m.map_type.as_deref().unwrap_or("map"),
                m.map,
                m.inserts,
                m.growths,
                match (m.len_first, m.len_last) { (Some(a), Some(b)) => format!(", {a} -> {b} entries in {:.1}s", m.observed_s), _ => String::new() },
                m.function,
                loc(&m.file, m.line),
                if m.len_unread > 0 { format!("; no map found at its address {} time(s): freed and reused, or unreadable", m.len_unread) } else { String::new() },
            );
        }
    }

    let missing: Vec<_> = r.probes.iter().filter(|p| !p.attached).collect();
    if !missing.is_empty() {
        let _ = writeln!(o, "\nPROBES NOT PLACED");
        for p in missing {
            let _ = writeln!(o, "  {} ({}): {}", p.name, p.symbol, p.note.as_deref().unwrap_or("not attached"));
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(o, "\nWARNINGS");
        for w in &r.warnings {
            let _ = writeln!(o, "  ! {w}");
        }
    }
    printable(o)
}

/// "BY YOUR CODE": the owner's functions by the bytes they cause.
fn by_your_code(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\nBY YOUR CODE (bytes each of your functions allocates, itself or through the libraries it calls; yours: {})", r.app.scope.join(", "));
    if r.app_callsites.is_empty() {
        let _ = writeln!(o, "  none: no allocation stack reached a function of yours (within the frames walked); add --app-prefix for more of your packages");
        return;
    }
    let _ = writeln!(o, "  {:>6} {:>10} {:>10} {:>7} {:>7}  function", "share", "bytes", "bytes/s", "append", "incl.");
    for a in r.app_callsites.iter().take(TOP) {
        let via = a.via.as_ref().map(|v| format!("  via {v}")).unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:>5.1}% {:>10} {:>10} {:>6.1}% {:>6.1}%  {} {}{via}",
            a.share_of_bytes * 100.0,
            bytes(a.bytes),
            bytes(a.bytes_per_s as u64),
            a.growslice_share * 100.0,
            a.inclusive_share * 100.0,
            a.function,
            loc(&a.file, a.line)
        );
    }
    let _ = writeln!(o, "  (append: of all bytes, those it grew slices with; incl.: with it anywhere on the stack; {:.1}% of bytes had no frame of yours)", r.app.unowned_share * 100.0);
}

/// The runtime's own GC figures: settings, heap per cycle, allocation rate,
/// and why GC runs this often; or why they are missing.
fn gc_heap(o: &mut String, gc: &super::Gc) {
    if let Some(why) = &gc.heap_unavailable {
        let _ = writeln!(o, "  heap, goal, GOGC and GOMEMLIMIT: unavailable: {why}");
        return;
    }
    if let Some(s) = &gc.settings {
        let changed = if s.changes > 0 { format!(" (changed {} times in the window)", s.changes) } else { String::new() };
        let _ = writeln!(o, "  settings: GOGC={}, GOMEMLIMIT {}, minimum heap goal {}{changed}", s.gogc_text(), s.limit_text(), bytes(s.heap_minimum_bytes));
    }
    let m = &gc.heap_medians;
    let fig = |v: Option<u64>| v.map_or("?".into(), bytes);
    if m.marked.is_some() || m.goal.is_some() {
        let _ = writeln!(o, "  per cycle (median): live heap {}, goal {}, heap at start {}", fig(m.marked), fig(m.goal), fig(m.at_start));
    }
    if let Some(a) = gc.alloc_bytes_per_s {
        let _ = writeln!(o, "  allocation (the runtime's own total): {}/s", bytes(a as u64));
    }
    match (gc.cpu_share, &gc.cpu_share_unavailable) {
        (Some(s), _) => {
            let _ = writeln!(o, "  GC CPU share: {:.1}% of the target's CPU capacity (the runtime's own counters, as GCCPUFraction)", s * 100.0);
        }
        (None, Some(why)) => {
            let _ = writeln!(o, "  GC CPU share: unavailable: {why}");
        }
        (None, None) => {}
    }
    if let Some(d) = &gc.diagnosis {
        let _ = writeln!(o, "  why: {d}");
    }
}
