//! Aggregates + symbols → [`Report`].
use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::analysis::rows::RowProbe;
use crate::{
    ingest::aggregate::{Aggregator, StwCause},
    plan::{ProbePlan, StwReason},
    analysis::culprits,
    analysis::diagnose::GrowEvidence,
    analysis::facts::Facts,
    kernel::probes::KernelStats,
};

/// Everything a report is made from.
pub struct Inputs<'a> {
    pub target: Target,
    pub plan: &'a ProbePlan,
    pub attached: &'a [u32],
    pub attach_notes: &'a HashMap<u32, String>,
    pub agg: &'a Aggregator,
    /// Whose code is the owner's.
    pub app: &'a crate::analysis::owner::AppScope,
    pub kernel: KernelStats,
    pub mechanism: crate::kernel::probes::Mechanism,
    pub start_unix_ns: u64,
    pub duration_s: f64,
    pub ended_by: EndedBy,
    /// `gcprobe run`: how the program ended.
    pub program_exit: Option<crate::tracee::launch::ProgramExit>,
    pub agent: AgentReport,
    pub sampling: SamplingInputs,
}

/// What the session knows about its own sampling and cost.
pub struct SamplingInputs {
    pub mode: crate::plan::Mode,
    pub budget: f64,
    pub calibration: Option<crate::kernel::calibrate::Calibration>,
    pub cost_s: f64,
    pub target_cpu_s: Option<f64>,
    /// The governor took the runtime-sample probe off this far into the
    /// session (it would have cost over half the budget).
    pub runtime_samples_off_after_s: Option<f64>,
}

#[derive(Default)]
struct Acc {
    /// Σ of the per-stack variances of `bytes` across bursts.
    var_bytes: f64,
    sampled_bytes: f64,
    count: u64,
    allocs: u64,
    bytes: u64,
    grow_len_sum: u64,
    frames: Vec<Frame>,
    heaviest: u64,
    grow: GrowEvidence,
    heaviest_grow: u64,
}

/// Why GC's share of the CPU is missing, if it is.
fn cpu_share_unavailable(plan: &ProbePlan, agg: &Aggregator) -> Option<String> {
    if agg.gc_cpu_share().is_some() {
        return None;
    }
    Some(match &plan.gc_controller {
        crate::tracee::gcctl::Located::Unavailable { reason } => reason.clone(),
        crate::tracee::gcctl::Located::Found(c) => match &c.cpu_stats {
            Err(reason) => reason.clone(),
            // The counters move only when a cycle ends.
            Ok(_) => "fewer than two GC cycles ended in the window".into(),
        },
    })
}

pub fn build(inp: &Inputs<'_>, sym: &mut dyn Facts) -> Report {
    let agg = inp.agg;
    let dur = inp.duration_s.max(1e-9);
    let sampled = inp.sampling.mode == crate::plan::Mode::Sampled;
    let (observed, rate_time) = rate_times(agg, inp.sampling.mode, dur);
    // Paced by the runtime's own allocation total (see Aggregator::rate_time).
    let heap_rate = agg.heap_pace().filter(|_| sampled);
    // The runtime's samples cover the time mProf_Malloc was probed.
    let samples_s = inp.sampling.runtime_samples_off_after_s.map_or(dur, |t| t.clamp(1e-9, dur));

    let probes = probe_rows(inp);

    let mut callsites = callsite_rows(agg, sym, rate_time, samples_s);
    for c in &mut callsites {
        c.app_frame = inp.app.first_owned(&c.frames).cloned();
    }
    let (app, app_callsites) = app_rows(agg, sym, inp.app, rate_time);

    let (mut stw, cycles, spans) = stw_section(agg, sym);
    stw.ends_at = inp.plan.pause_end;
    if inp.plan.pause_end == crate::plan::PauseEnd::Entry {
        stw.note = Some("each pause ends at startTheWorldWithSema's entry, before the world restarts: totals run short of Go's PauseTotalNs".into());
    }

    let mut assists: Vec<(u32, u64)> = agg.assists_by_tid().iter().map(|(k, v)| (*k, *v)).collect();
    assists.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let sizes = size_rows(inp, agg);

    let secs = secs_since_first(agg);
    let mut maps = map_rows(agg, sym);
    // Counted before the table is cut to its busiest rows: a CI gate on leaks must see every one.
    let likely_leaks = maps.iter().filter(|m| m.likely_leak).count() as u64;
    maps.truncate(MAP_ROWS);
    let likely_leaks_unavailable = map_leaks_unavailable(inp.plan, inp.attached, inp.sampling.mode, agg.bursts().n);
    let heap_live: Vec<HeapSample> =
        agg.cycles().iter().filter_map(|c| Some(HeapSample { t_s: secs(c.start_ktime), bytes: c.heap_at_start?, goal: c.goal, marked: c.marked })).collect();
    let heap_climbing = culprits::climbing(&culprits::leak_series(&heap_live).1);

    let lost = inp.kernel.ringbuf_full + inp.kernel.overlapped + agg.counts().undecodable;
    let total = agg.alloc_bytes();
    let culprits = culprits::rank(&callsites, rate_time, total, sym, inp.app);
    let mut warnings = inp.plan.warnings.clone();
    warnings.extend(culprits::rules_of_thumb(&callsites, &spans));
    warnings.extend(culprits::generated_code_notes(&callsites));
    warnings.extend(culprits::leak_warnings(&maps, &heap_live, heap_climbing));
    let heap_unavailable = gc::unavailable(inp.plan.gc_controller.reason(), agg);
    let settings = gc::GcSettings::from_agg(agg);
    let heap_medians = gc::HeapMedians::from_agg(agg);
    let runtime_alloc = agg.runtime_alloc().bytes_per_s();
    let cycles_per_s = cycles as f64 / dur;
    let probe_cost_s = inp.kernel.hits as f64 * inp.sampling.cost_s;
    let est_slowdown = inp.sampling.target_cpu_s.map(|cpu| probe_cost_s / (cpu - probe_cost_s).max(1e-3));
    let total_var: f64 = sorted(agg.alloc_stacks()).into_iter().filter_map(|(_, s)| agg.bursts().bytes_var(s)).sum();
    warnings.extend(health_warnings(inp, agg, sym, lost, est_slowdown));

    Report {
        schema: Schema::ReportV1,
        target: inp.target.clone(),
        window: Window { start_unix_ns: inp.start_unix_ns, duration_s: inp.duration_s, ended_by: inp.ended_by, program_exit: inp.program_exit },
        probes,
        events: Events {
            mallocgc: agg.counts().mallocgc,
            growslice: agg.counts().growslice,
            gc_start: inp.plan.probes.iter().any(|p| p.kind == crate::plan::ProbeKind::GcStart).then_some(agg.counts().gc_start),
            stw: agg.counts().stw,
            assist: agg.counts().assist,
            lost,
            nested_skipped: inp.kernel.nested,
        },
        gc: Gc {
            cycles,
            cycles_per_s,
            stw,
            assists_by_thread: assists,
            heap_live,
            heap_live_every: agg.cycles_stride(),
            heap_climbing,
            heap_unavailable,
            heap_medians,
            diagnosis: gc::explain(cycles_per_s, settings.as_ref(), heap_medians, runtime_alloc),
            settings,
            alloc_bytes_per_s: runtime_alloc,
            cpu_share: agg.gc_cpu_share(),
            cpu_share_unavailable: cpu_share_unavailable(inp.plan, agg),
        },
        callsites,
        app,
        app_callsites,
        maps,
        likely_leaks: likely_leaks_unavailable.is_none().then_some(likely_leaks),
        likely_leaks_unavailable,
        sizes,
        culprits,
        warnings,
        kernel: KernelReport {
            mechanism: inp.mechanism,
            hits: inp.kernel.hits,
            hits_by_kind: crate::plan::ALL_KINDS.iter().map(|k| (format!("{k:?}"), inp.kernel.hits_of(*k))).filter(|(_, h)| *h > 0).collect(),
            gated: inp.kernel.gated(),
            ringbuf_full: inp.kernel.ringbuf_full,
            stack_faults: inp.kernel.stack_faults,
            empty_hits: inp.kernel.empty_hits,
            aggregated: inp.kernel.aggregated,
            agg_full: inp.kernel.agg_full,
            grow_alone: inp.kernel.grow_alone,
            overlapped: inp.kernel.overlapped,
            records: agg.ring_records(),
            record_bytes: agg.ring_bytes(),
        },
        sampling: SamplingReport {
            mode: inp.sampling.mode,
            budget_pct: sampled.then_some(inp.sampling.budget * 100.0),
            calibration: inp.sampling.calibration,
            cost_per_hit_ns: inp.sampling.cost_s * 1e9,
            bursts: agg.bursts().n,
            observed_s: observed,
            duty: observed / dur,
            alloc_rate_source: if heap_rate.is_some() { AllocRateSource::RuntimeTotalAlloc } else if sampled { AllocRateSource::Bursts } else { AllocRateSource::Exact },
            heap_alloc_bytes_per_s: runtime_alloc,
            burst_alloc_bytes_per_s: sampled.then(|| agg.alloc_bytes() as f64 / observed),
            alloc_rate_ci95: (sampled && total_var > 0.0).then(|| 1.96 * total_var.sqrt() / agg.alloc_bytes().max(1) as f64),
            target_cpu_s: inp.sampling.target_cpu_s,
            probe_cost_s,
            est_slowdown,
            mem_profile_rate: agg.mem_profile_rate(),
            runtime_samples: agg.sampled_stacks().values().map(|w| w.samples).sum(),
            runtime_samples_s: sampled.then_some(samples_s),
        },
        agent: inp.agent.clone(),
    }
}

/// Every probe of the plan, placed or not, and why not.
fn probe_rows(inp: &Inputs<'_>) -> Vec<ProbeReport> {
    let mut probes: Vec<ProbeReport> = inp
        .plan
        .probes
        .iter()
        .map(|p| ProbeReport {
            name: p.name.clone(),
            symbol: p.symbol.clone(),
            address: p.vaddr,
            attached: inp.attached.contains(&p.id),
            note: inp.attach_notes.get(&p.id).cloned(),
        })
        .collect();
    probes.extend(inp.plan.skipped.iter().map(|s| ProbeReport {
        name: s.name.clone(),
        symbol: s.symbol.clone(),
        address: 0,
        attached: false,
        note: Some(s.reason.clone()),
    }));
    probes
}

/// Callsites: the first frame outside the runtime, per probe class, with
/// rates over `rate_time` and the runtime's samples over `samples_s`.
fn callsite_rows(agg: &Aggregator, sym: &mut dyn Facts, rate_time: f64, samples_s: f64) -> Vec<Callsite> {
    let mut acc: HashMap<RowKey, Acc> = HashMap::new();
    for (stack, st) in sorted(agg.alloc_stacks()) {
        let (a, frames, idx, via_grow) = row(&mut acc, sym, stack, None);
        a.allocs = a.allocs.saturating_add(st.count);
        a.bytes = a.bytes.saturating_add(st.bytes);
        a.var_bytes += agg.bursts().bytes_var(st).unwrap_or(0.0);
        if !via_grow {
            a.count = a.count.saturating_add(st.count);
        }
        if st.bytes >= a.heaviest {
            a.heaviest = st.bytes;
            a.frames = frames[idx..].to_vec();
        }
    }
    for (stack, w) in sorted(agg.sampled_stacks()) {
        let (a, frames, idx, _) = row(&mut acc, sym, stack, None);
        a.sampled_bytes += w.bytes;
        if a.frames.is_empty() {
            a.frames = frames[idx..].to_vec();
        }
    }
    for (stack, g) in sorted(agg.grow_stacks()) {
        let (a, frames, idx, _) = row(&mut acc, sym, stack, Some(RowProbe::Growslice));
        a.count = a.count.saturating_add(g.count);
        a.grow_len_sum = a.grow_len_sum.saturating_add(g.new_len_sum);
        if a.frames.is_empty() {
            a.frames = frames[idx..].to_vec();
        }
        let e = &mut a.grow;
        e.calls += g.calls;
        e.finished_calls += g.finished_calls;
        e.final_len_sum = e.final_len_sum.saturating_add(g.final_len_sum);
        e.final_alloc_sum = e.final_alloc_sum.saturating_add(g.final_alloc_sum);
        e.final_allocs.merge(&g.final_allocs);
        e.old_len_sum = e.old_len_sum.saturating_add(g.old_len_sum);
        if g.count >= a.heaviest_grow {
            a.heaviest_grow = g.count;
            e.stack = stack.into();
            e.elem_type = g.elem_type;
        }
    }
    let total_bytes = agg.alloc_bytes().max(1) as f64;
    let total_allocs = agg.counts().mallocgc.max(1) as f64;
    let mut callsites: Vec<Callsite> = acc
        .into_iter()
        .map(|((probe, function, file, line), a)| Callsite {
            mean_new_len: (probe == RowProbe::Growslice && a.count > 0).then(|| a.grow_len_sum as f64 / a.count as f64),
            // For growslice rows `count` is the number of growths.
            evidence: (probe == RowProbe::Growslice && a.count > 0).then(|| GrowEvidence { bytes: a.bytes, growths: a.count, ..a.grow.clone() }),
            probe,
            function,
            file,
            line,
            frames: a.frames,
            count: a.count,
            allocs: a.allocs,
            bytes: a.bytes,
            per_s: a.count as f64 / rate_time,
            bytes_per_s: a.bytes as f64 / rate_time,
            share_of_bytes: a.bytes as f64 / total_bytes,
            share_of_allocs: a.allocs as f64 / total_allocs,
            bytes_per_s_ci95: (a.bytes > 0 && a.var_bytes > 0.0).then(|| 1.96 * a.var_bytes.sqrt() / a.bytes as f64),
            runtime_sampled_bytes_per_s: (a.sampled_bytes > 0.0).then(|| a.sampled_bytes / samples_s),
            app_frame: None,
        })
        .collect();
    // A total order: rows tie on bytes and counts, and hash order differs
    // from one process to the next.
    callsites.sort_by(|a, b| {
        b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)).then_with(|| (&a.function, &a.file, a.line, &a.probe).cmp(&(&b.function, &b.file, b.line, &b.probe)))
    });
    callsites
}

/// The owner's functions that most allocations run under, at most this many.
const APP_ROWS: usize = 20;

/// "BY YOUR CODE": every allocation stack's bytes, counted for each of the
/// owner's functions on it, over the same time as the callsite rows.
fn app_rows(agg: &Aggregator, sym: &mut dyn Facts, scope: &crate::analysis::owner::AppScope, rate_time: f64) -> (App, Vec<AppCallsite>) {
    use crate::analysis::owner::{AppTally, StackAllocs};
    let mut tally = AppTally::default();
    for (stack, st) in sorted(agg.alloc_stacks()) {
        let (frames, callsite, via_grow) = callsite(sym, stack);
        tally.add(scope, &StackAllocs { frames: &frames, callsite, via_grow, allocs: st.count, bytes: st.bytes });
    }
    let app = App { scope: scope.describe(), unowned_share: tally.unowned_share() };
    (app, tally.rows(rate_time, agg.alloc_bytes(), APP_ROWS))
}

/// Stop-the-world: the totals (every pause), the cycles begun, and the
/// pauses still kept one by one as (duration ns, reason), for the rules of
/// thumb (see ingest::pauses: the last 65536).
fn stw_section(agg: &Aggregator, sym: &mut dyn Facts) -> (Stw, u64, Vec<(u64, String)>) {
    let pauses = agg.pauses();
    let mut stw = Stw { count: agg.counts().stw, total_ms: pauses.total_ns() as f64 / 1e6, ..Stw::default() };
    if stw.count > 0 {
        stw.p50_us = agg.stw_hist().value_at_quantile(0.5) as f64 / 1e3;
        stw.p99_us = agg.stw_hist().value_at_quantile(0.99) as f64 / 1e3;
        stw.max_us = agg.stw_hist().max() as f64 / 1e3;
    }
    let mut cycles = 0;
    let mut reasons: BTreeMap<String, ReasonStat> = BTreeMap::new();
    let mut names = std::collections::HashMap::new();
    for (cause, t) in pauses.by_cause() {
        let known = cause_reason(sym, cause);
        let reason = cause_name(sym, cause);
        if known == Some(StwReason::GcSweepTerm) {
            cycles += t.count;
        }
        // Two return addresses may name one reason (Go 1.19/1.20): one row.
        let r = reasons.entry(reason.clone()).or_default();
        r.gc = known.is_some_and(StwReason::is_gc);
        r.count += t.count;
        r.total_ms += t.total_ns as f64 / 1e6;
        r.max_us = r.max_us.max(t.max_ns as f64 / 1e3);
        names.insert(cause, reason);
    }
    let spans = pauses.recent().map(|s| (s.duration_ns, names[&s.cause].clone())).collect();
    stw.by_reason = reasons;
    (stw, cycles, spans)
}

/// Requested sizes per allocator entry point, and growslice lengths.
fn size_rows(inp: &Inputs<'_>, agg: &Aggregator) -> BTreeMap<String, SizeStats> {
    let mut sizes = BTreeMap::new();
    for (id, h) in agg.alloc_sizes() {
        if let Some(p) = inp.plan.probe(*id) {
            sizes.insert(p.name.clone(), size_stats(SizeUnit::Bytes, h));
        }
    }
    if !agg.grow_lens().is_empty() {
        sizes.insert("growslice".into(), size_stats(SizeUnit::Elements, agg.grow_lens()));
    }
    sizes
}

/// Seconds since the first event, for event times.
fn secs_since_first(agg: &Aggregator) -> impl Fn(u64) -> f64 {
    let t0 = agg.first_ktime().unwrap_or(0);
    move |k: u64| k.saturating_sub(t0) as f64 / 1e9
}

/// Rows of the report's map table.
const MAP_ROWS: usize = 50;

/// Why no map could have been judged: no map probe was placed, or (sampled
/// mode) no burst ever opened them, so no map was watched and 0 leaks would be a guess.
fn map_leaks_unavailable(plan: &ProbePlan, attached: &[u32], mode: crate::plan::Mode, bursts: u64) -> Option<String> {
    let is_map = |k: crate::plan::ProbeKind| matches!(k, crate::plan::ProbeKind::MapGrow | crate::plan::ProbeKind::MapInsert);
    if !plan.probes.iter().any(|p| is_map(p.kind) && attached.contains(&p.id)) {
        return Some("no map probe was attached".into());
    }
    (mode == crate::plan::Mode::Sampled && bursts == 0).then(|| "no allocation burst ran, so no map was watched".into())
}

/// Maps inserted into or growing, likely leaks first, all of them (the report keeps MAP_ROWS).
fn map_rows(agg: &Aggregator, sym: &mut dyn Facts) -> Vec<MapReport> {
    let t0 = agg.first_ktime().unwrap_or(0);
    let span = agg.last_ktime().saturating_sub(t0).max(1) as f64;
    let secs = secs_since_first(agg);
    let mut maps: Vec<MapReport> = agg
        .maps()
        .iter()
        .map(|(addr, m)| {
            let (frames, idx, _) = callsite(sym, &m.stack);
            let f = frames[idx].clone();
            let ty = m.maptype.and_then(|t| sym.map_type(t));
            let likely_leak = culprits::map_leaks(&m.lens, m.cycles_growing, m.last_ktime.saturating_sub(m.first_ktime) as f64 / span);
            let len_last = m.lens.last().map(|l| l.1);
            let mut r = MapReport {
                map: format!("{addr:#x}"),
                growths: m.growths,
                gc_cycles_growing: m.cycles_growing,
                first_growth_s: secs(m.first_ktime),
                last_growth_s: secs(m.last_ktime),
                function: f.function,
                file: f.file,
                line: f.line,
                frames: frames[idx..].to_vec(),
                len_first: m.lens.first().map(|l| l.1),
                len_last,
                len_samples: m.lens.len(),
                len_unread: m.len_unread,
                observed_s: m.lens.last().zip(m.lens.first()).map_or(0.0, |(b, a)| b.0.saturating_sub(a.0) as f64 / 1e9),
                growth_per_s: culprits::map_growth_per_s(&m.lens),
                likely_leak,
                inserts: m.inserts,
                map_type: ty.as_ref().map(|t| t.name()),
                key_type: ty.as_ref().map(|t| t.key.clone()),
                value_type: ty.as_ref().map(|t| t.value.clone()),
                bytes_held_min: ty.as_ref().zip(len_last).map(|(t, n)| n * (t.key.size + t.value.size)),
                deletes_in_program: ty.as_ref().map(|t| t.deletes),
                deleted_at: ty.map(|t| t.deleted_at).unwrap_or_default(),
                summary: None,
            };
            r.summary = likely_leak.then(|| culprits::leak_verdict(&r));
            r
        })
        .collect();
    maps.sort_by(|a, b| b.likely_leak.cmp(&a.likely_leak).then(b.growths.cmp(&a.growths)).then(a.map.cmp(&b.map)));
    maps
}

/// What limits the report: lost events, missing names, sampling that was
/// too short or over budget, an uncalibrated cost, full kernel maps.
fn health_warnings(inp: &Inputs<'_>, agg: &Aggregator, sym: &mut dyn Facts, lost: u64, est_slowdown: Option<f64>) -> Vec<String> {
    let sampled = inp.sampling.mode == crate::plan::Mode::Sampled;
    let mut warnings = Vec::new();
    if lost > 0 {
        warnings.push(format!("{lost} events were lost (ring buffer full or undecodable): counts and rates are lower bounds"));
    }
    if sym.source() == crate::tracee::symbolize::SymbolSource::Symtab {
        warnings.push("the binary has neither DWARF nor a readable .gopclntab: frames are named from the symbol table, without file:line or inlined frames".into());
    }
    if sym.unresolved() > 0 {
        warnings.push(format!("{} return addresses could not be symbolized", sym.unresolved()));
    }
    if sampled {
        if agg.mprof_rate_assumed() > 0 {
            warnings.push(format!(
                "{} runtime samples weighted for the default MemProfileRate (512 KiB): runtime.MemProfileRate was not found in the binary to read the real rate from",
                agg.mprof_rate_assumed()
            ));
        }
        if agg.bursts().n < 3 {
            warnings.push(format!("only {} allocation bursts in this window: rates are rough; attach for longer", agg.bursts().n));
        }
        if let Some(t) = inp.sampling.runtime_samples_off_after_s {
            warnings.push(format!(
                "runtime samples (mProf_Malloc) stopped after {t:.1}s: with the pause probes they took over half the {:.1}% budget; allocation data after that comes from the bursts",
                inp.sampling.budget * 100.0
            ));
        }
        if let Some(s) = est_slowdown.filter(|s| *s > inp.sampling.budget) {
            warnings.push(format!(
                "estimated slowdown {:.2}% exceeded the {:.1}% budget{}",
                s * 100.0,
                inp.sampling.budget * 100.0,
                if agg.bursts().n < 3 { " (a short session pays for its first bursts)" } else { "" }
            ));
        }
    } else if let Some(s) = est_slowdown {
        // Every allocation trapped: the program measured is the slowed one.
        warnings.push(format!(
            "exact mode slowed the target by an estimated {:.0}%: its allocation rates, GC cycles and pauses are those of the slowed program (sampled mode measures the program as it runs)",
            s * 100.0
        ));
    }
    if inp.sampling.calibration.is_none() {
        warnings.push(format!("per-hit cost not calibrated; assumed {:.0} ns", inp.sampling.cost_s * 1e9));
    }
    if inp.kernel.agg_full > 0 {
        warnings.push(format!("{} allocations were sent whole because the kernel's callsite map was full", inp.kernel.agg_full));
    }
    if agg.counts().overflow > 0 {
        warnings.push(format!("{} events exceeded the distinct-stack limit and were counted without a stack", agg.counts().overflow));
    }
    if agg.counts().maps_evicted > 0 {
        warnings.push(format!("{} maps quiet longest were dropped from the full map table (it follows {} per target); one active again is followed anew", agg.counts().maps_evicted, crate::ingest::aggregate::MAX_MAPS));
    }
    warnings
}

/// The time allocation counts were observed over, and the time they stand
/// for (what counts divide by to be rates). Sampled mode sees allocations
/// only while the allocation probes were attached, and paces them by the
/// runtime's heapLive when it can (see Aggregator::rate_time).
pub fn rate_times(agg: &Aggregator, mode: crate::plan::Mode, duration_s: f64) -> (f64, f64) {
    let dur = duration_s.max(1e-9);
    if mode != crate::plan::Mode::Sampled {
        return (dur, dur);
    }
    let observed = if agg.bursts().window_s > 0.0 { agg.bursts().window_s.min(dur) } else { dur };
    (observed, agg.rate_time(observed))
}

/// A map's entries in key order. Hash maps iterate in a per-process random
/// order; summing floats or breaking ties in that order would make a
/// recording's report differ from the live one in its last digits.
fn sorted<V, S>(m: &HashMap<Box<[u64]>, V, S>) -> Vec<(&[u64], &V)> {
    let mut v: Vec<_> = m.iter().map(|(k, v)| (&**k, v)).collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// A callsite row: (probe, function, file, line).
type RowKey = (RowProbe, String, Option<String>, Option<u32>);

/// The row a stack of return addresses lands on: its first frame outside
/// the runtime, under `probe` if given, else under growslice when the bytes
/// come from growing a slice there and mallocgc otherwise. Returns the row,
/// the symbolized frames, the callsite's index in them and whether a
/// growslice frame sits below it.
fn row<'a>(acc: &'a mut HashMap<RowKey, Acc>, sym: &mut dyn Facts, stack: &[u64], probe: Option<RowProbe>) -> (&'a mut Acc, Vec<Frame>, usize, bool) {
    let (frames, idx, via_grow) = callsite(sym, stack);
    let f = &frames[idx];
    let probe = probe.unwrap_or(if via_grow { RowProbe::Growslice } else { RowProbe::Mallocgc });
    let a = acc.entry((probe, f.function.clone(), f.file.clone(), f.line)).or_default();
    (a, frames, idx, via_grow)
}

/// A stack's frames, the index of its callsite frame in them, and whether a
/// growslice frame sits below it.
fn callsite(sym: &mut dyn Facts, stack: &[u64]) -> (Vec<Frame>, usize, bool) {
    let frames = return_frames(sym, stack);
    let (idx, via_grow) = callsite_index(&frames);
    let idx = idx.min(frames.len() - 1);
    (frames, idx, via_grow)
}

/// The function a stack's callsite row is named after.
fn callsite_function(sym: &mut dyn Facts, stack: &[u64]) -> String {
    let (mut frames, idx, _) = callsite(sym, stack);
    frames.swap_remove(idx).function
}

/// The loop driving the appends of growslice stack `stack` (return
/// addresses, the growslice call's first), asked the way a report's row
/// asks it: also what a recording stores, and what a static check of a
/// binary can ask with the call's own return address.
pub fn growslice_loop(facts: &mut dyn Facts, stack: &[u64]) -> Option<crate::analysis::appendloop::LoopReport> {
    let callsite_fn = callsite_function(facts, stack);
    facts.append_loop(&callsite_fn, stack)
}

fn size_stats(unit: SizeUnit, h: &hdrhistogram::Histogram<u64>) -> SizeStats {
    SizeStats { unit, count: h.len(), mean: h.mean(), p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99), max: h.max() }
}

/// Symbolizes a stack of return addresses.
pub(crate) fn return_frames(sym: &mut dyn Facts, stack: &[u64]) -> Vec<Frame> {
    let mut out = Vec::new();
    for &pc in stack {
        out.extend(sym.frames(pc).iter().cloned());
    }
    if out.is_empty() {
        out.push(Frame { function: "(no stack)".into(), file: None, line: None, inlined: false });
    }
    out
}

/// Index of the first non-runtime frame, and whether a growslice frame sits
/// below it (the bytes come from growing a slice there). For allocations the
/// runtime makes for itself, the first frame past the allocator helpers, so
/// growslice and mallocgc events of one site land on the same row.
pub(super) fn callsite_index(frames: &[Frame]) -> (usize, bool) {
    let via_grow = |upto: usize| frames[..upto].iter().any(|f| f.function.starts_with("runtime.growslice"));
    if let Some(i) = frames.iter().position(|f| !f.is_runtime()) {
        return (i, via_grow(i));
    }
    let i = frames.iter().position(|f| !is_alloc_helper(&f.function)).unwrap_or(0);
    (i, via_grow(i))
}

/// Runtime functions that only allocate on behalf of their caller.
fn is_alloc_helper(function: &str) -> bool {
    const HELPERS: &[&str] = &[
        "runtime.mallocgc", "runtime.growslice", "runtime.newobject", "runtime.newarray", "runtime.makeslice",
        "runtime.makemap", "runtime.rawstring", "runtime.rawbyteslice", "runtime.rawruneslice",
        "runtime.concatstring", "runtime.slicebytetostring", "runtime.slicerunetostring", "runtime.stringtoslice",
        // Go 1.26+: a stack-grown slice copied to the heap as it escapes (runtime/slice.go moveSlice*).
        "runtime.moveSlice",
    ];
    HELPERS.iter().any(|h| function.starts_with(h))
}

/// The runtime's reason for a pause, where it is known: its code (Go
/// 1.21+), or, before, the GC function that stopped the world.
pub fn cause_reason(sym: &mut dyn Facts, cause: StwCause) -> Option<StwReason> {
    match cause {
        StwCause::Code(c) => StwReason::from_code(c),
        StwCause::Caller(pc) => {
            let frames = sym.frames(pc);
            let outer = frames.last().map(|f| f.function.as_str()).unwrap_or("");
            if outer.starts_with("runtime.gcStart") {
                Some(StwReason::GcSweepTerm)
            } else if outer.starts_with("runtime.gcMarkDone") || outer.starts_with("runtime.gcMarkTermination") {
                Some(StwReason::GcMarkTerm)
            } else {
                None
            }
        }
    }
}

pub fn cause_name(sym: &mut dyn Facts, cause: StwCause) -> String {
    if let Some(r) = cause_reason(sym, cause) {
        return r.name().into();
    }
    match cause {
        StwCause::Code(c) => StwCause::code_name(c),
        StwCause::Caller(pc) => {
            // Before Go 1.21 the reason is not an argument; who calls names it.
            let frames = sym.frames(pc);
            let outer = frames.last().map(|f| f.function.as_str()).unwrap_or("");
            if outer.starts_with("runtime.stopTheWorld") {
                // stopTheWorld(reason string) runs stopTheWorldWithSema in a
                // systemstack closure: the frame chain ends there (go1.19 runtime/proc.go).
                "stop-the-world outside GC (reason not passed before Go 1.21)".into()
            } else {
                format!("stopTheWorld from {outer}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame { function: name.into(), file: Some("x.go".into()), line: Some(1), inlined: false }
    }

    #[test]
    fn callsite_skips_runtime_frames() {
        let frames = [f("runtime.growslice"), f("main.(*Index).add"), f("main.main")];
        assert_eq!(callsite_index(&frames), (1, true));
        let frames = [f("runtime.makeslice"), f("main.build")];
        assert_eq!(callsite_index(&frames), (1, false));
        let frames = [f("runtime.newproc1"), f("runtime.systemstack")];
        assert_eq!(callsite_index(&frames), (0, false));
        // All-runtime stacks: past the allocator helpers, whichever probe saw them.
        let frames = [f("runtime.growslice"), f("runtime.(*timers).addHeap"), f("runtime.(*timer).maybeAdd")];
        assert_eq!(callsite_index(&frames), (1, true));
        let frames = [f("runtime.(*timers).addHeap"), f("runtime.(*timer).maybeAdd")];
        assert_eq!(callsite_index(&frames), (0, false));
        let frames = [f("runtime.newobject"), f("runtime.acquireSudog")];
        assert_eq!(callsite_index(&frames), (1, false));
        // Go 1.26+'s growslice variants are growths; moveSlice's copy at the return is not.
        let frames = [f("runtime.growsliceBuf"), f("runtime.(*timers).addHeap")];
        assert_eq!(callsite_index(&frames), (1, true));
        let frames = [f("runtime.mallocgc"), f("runtime.moveSliceNoScan"), f("runtime.gcBgMarkWorker")];
        assert_eq!(callsite_index(&frames), (2, false));
        let frames = [f("internal/runtime/maps.newarray"), f("runtime.mapassign"), f("main.fill")];
        assert_eq!(callsite_index(&frames), (2, false));
    }

    #[test]
    fn map_leaks_are_unavailable_until_a_map_probe_watched() {
        use crate::plan::{Mode, PlannedProbe, ProbeKind};
        let mut plan = ProbePlan::for_test(crate::tracee::buildinfo::GoVersion::new(1, 24, 0));
        let probe = |id, kind| PlannedProbe { id, name: format!("{kind:?}"), symbol: String::new(), kind, vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg: None };
        plan.probes = vec![probe(0, ProbeKind::StwStop), probe(1, ProbeKind::MapInsert)];
        let none = Some("no map probe was attached".to_owned());
        assert_eq!(map_leaks_unavailable(&plan, &[0], Mode::Exact, 0), none, "placed but not attached");
        assert_eq!(map_leaks_unavailable(&plan, &[0, 1], Mode::Exact, 0), None);
        assert_eq!(map_leaks_unavailable(&plan, &[0, 1], Mode::Sampled, 0), Some("no allocation burst ran, so no map was watched".to_owned()));
        assert_eq!(map_leaks_unavailable(&plan, &[0, 1], Mode::Sampled, 1), None);
        plan.probes[1].kind = ProbeKind::MapGrow;
        assert_eq!(map_leaks_unavailable(&plan, &[0, 1], Mode::Exact, 0), None);
        plan.probes[1].kind = ProbeKind::Malloc;
        assert_eq!(map_leaks_unavailable(&plan, &[0, 1], Mode::Exact, 0), none);
    }
}
