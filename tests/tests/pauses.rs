//! Stop-the-world pauses against the runtime's own count (root): the
//! pausetotal fixture reads `MemStats.NumGC` and `PauseTotalNs` (and, from
//! Go 1.22, runtime/metrics' `/sched/pauses/total/gc:seconds`) around a
//! window of forced and natural collections while gcprobe is attached.
use gcprobe_tests::*;

/// What one run saw: Go's figures over the window and gcprobe's GC pauses.
struct Window {
    cycles: u64,
    go_pause_ns: u64,
    /// Pauses in Go's histogram, and its approximate total (bucket midpoints).
    hist: Option<(u64, f64)>,
    gc_pauses: u64,
    gc_pause_ns: f64,
    stw: serde_json::Value,
}

fn window(go: &str) -> Window {
    let exe = fixtures::build("pausetotal", go, Flavor::Default).unwrap();
    let mut t = Target::start(&exe, &["-cycles=30", "-garbage=64"], &[]);
    let (own, r) = attach_until_exit(&mut t, &["--mode", "exact"]);
    let (a, b) = (&own["before"], &own["after"]);
    let delta = |k: &str| b[k].as_u64().unwrap() - a[k].as_u64().unwrap();
    let hist = b["hist_pauses"].as_u64().map(|n| (n - a["hist_pauses"].as_u64().unwrap(), b["hist_seconds_approx"].as_f64().unwrap() - a["hist_seconds_approx"].as_f64().unwrap()));
    let stw = r["gc"]["stw"].clone();
    let gc: Vec<&serde_json::Value> = stw["by_reason"].as_object().unwrap().values().filter(|v| v["gc"] == true).collect();
    Window {
        cycles: u64::from(delta("num_gc") as u32),
        go_pause_ns: delta("pause_total_ns"),
        hist,
        gc_pauses: gc.iter().map(|v| v["count"].as_u64().unwrap()).sum(),
        gc_pause_ns: gc.iter().map(|v| v["total_ms"].as_f64().unwrap()).sum::<f64>() * 1e6,
        stw,
    }
}

/// Measured 2026-12-01 (README, "Stop-the-world pauses against Go's own
/// count"): Go 1.19 0.95-1.02, Go 1.22.10 and 1.27.3 1.000.
///
/// Each cycle stops the world twice, for sweep and for mark termination,
/// and adds both to PauseTotalNs as it ends (runtime/mgc.go, Go 1.19 to
/// 1.27). The only other GC stop is gcMarkDone's rare restart ("issue
/// #27993"), which would show here as one pause more than twice NumGC.
#[test]
fn gc_pauses_match_pause_total_ns() {
    if !privileged("gc_pauses_match_pause_total_ns") {
        return;
    }
    let mut failures = Vec::new();
    for go in [pins::GO_DEBIAN, "1.22.10", "1.27.3"] {
        let w = window(go);
        let ratio = w.gc_pause_ns / w.go_pause_ns as f64;
        let hist = w.hist.map(|(n, s)| format!(", /sched/pauses/total/gc:seconds {n} pauses, ~{:.3} ms (ratio ~{:.3})", s * 1e3, w.gc_pause_ns / (s * 1e9))).unwrap_or_default();
        eprintln!(
            "go {go}: NumGC +{}, PauseTotalNs +{:.3} ms; gcprobe {} GC pauses, {:.3} ms (ratio {ratio:.3}){hist}; ended at {}",
            w.cycles,
            w.go_pause_ns as f64 / 1e6,
            w.gc_pauses,
            w.gc_pause_ns / 1e6,
            w.stw["ends_at"]
        );
        if w.cycles < 30 || w.gc_pauses != 2 * w.cycles {
            failures.push(format!("go {go}: {} GC pauses for {} cycles: {:#}", w.gc_pauses, w.cycles, w.stw));
        }
        if let Some((n, _)) = w.hist {
            if n != w.gc_pauses {
                failures.push(format!("go {go}: the runtime's histogram counts {n} GC pauses, gcprobe {}", w.gc_pauses));
            }
        }
        // From Go 1.22 both ends are Go's own clock readings, so the totals
        // are the same sums; before, the start is the stop probe's clock.
        let band = if go == pins::GO_DEBIAN { 0.9..=1.1 } else { 0.999..=1.001 };
        if !band.contains(&ratio) {
            failures.push(format!("go {go}: STW total {:.3} ms vs PauseTotalNs {:.3} ms (ratio {ratio:.3})", w.gc_pause_ns / 1e6, w.go_pause_ns as f64 / 1e6));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
