//! Sampled mode: attaches the allocation probes for the windows the
//! governor plans, and closes each burst's books in the aggregator.
//!
//! Each period starts with the allocation probes attached; they are
//! detached when the window ends, unless it spans the period. The GC-side
//! probes stay attached all session (see the governor for why).
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};

use crate::{
    aggregate::Aggregator,
    governor::{Attachment, Governor, PeriodObservation, Plan},
    plan::{ProbeGroup, ProbeKind, ProbePlan},
    probes::{Attached, KernelStats, ProbeError},
    process::Process,
};

const ALLOC_KINDS: [ProbeKind; 3] = [ProbeKind::Malloc, ProbeKind::Growslice, ProbeKind::MapGrow];

fn alloc_hits(s: &KernelStats) -> u64 {
    ALLOC_KINDS.iter().map(|k| s.hits_of(*k)).sum()
}

pub struct BurstDriver {
    pub gov: Governor,
    /// The allocation probes (mallocgc and its variants, growslice, map growth).
    alloc_ids: Vec<u32>,
    /// Attached since; None while detached.
    on_since: Option<Instant>,
    /// Time attached during the current period.
    attached_for: Duration,
    plan: Plan,
    period_start: Instant,
    period_cpu: Option<f64>,
    period_stats: KernelStats,
    /// Wall time spent attaching and detaching in the current period.
    switching: Duration,
    /// When the driver next acts.
    pub next: Instant,
}

impl BurstDriver {
    /// Starts the first period: the caller has just attached every probe.
    pub fn start(gov: Governor, plan: &ProbePlan, attached: &Attached, target: &Process, agg: &mut Aggregator) -> Self {
        let now = Instant::now();
        let alloc_ids = plan.probes.iter().filter(|p| p.kind.group() == ProbeGroup::Alloc).map(|p| p.id).filter(|id| attached.is_attached(*id)).collect();
        let first = gov.first();
        agg.begin_burst();
        Self {
            alloc_ids,
            on_since: Some(now),
            attached_for: Duration::ZERO,
            plan: first,
            period_start: now,
            period_cpu: target.cpu_time_s(),
            period_stats: attached.stats(),
            switching: Duration::ZERO,
            next: now + first.period,
            gov,
        }
    }

    /// Acts on whatever is due: the window's end, then the period's end (or
    /// an early end when the period is over budget). Also called on the
    /// session's flush ticks, so a burst of cost is caught within 200 ms.
    pub fn fire(
        &mut self,
        attached: &mut Attached,
        ring: &mut RingBuf<MapData>,
        agg: &mut Aggregator,
        target: &Process,
        fold: impl Fn(&mut RingBuf<MapData>, &mut Aggregator, &Attached),
    ) -> Result<(), ProbeError> {
        let now = Instant::now();
        if let Some(t) = self.on_since.filter(|&t| self.plan.alloc < self.plan.period && now >= t + self.plan.alloc) {
            // The window ends as the detach starts: each breakpoint goes at
            // once, the rest of the detach is an RCU wait.
            let w = t.elapsed();
            self.on_since = None;
            self.attached_for += w;
            let started = Instant::now();
            attached.detach_some(self.alloc_ids.iter().copied());
            self.switching += started.elapsed();
            fold(ring, agg, attached);
            agg.end_burst(w.as_secs_f64());
        }
        if now >= self.period_start + self.plan.period || self.over_budget(attached, now) {
            self.end_period(attached, ring, agg, target, &fold)?;
        }
        // The window runs from when the probes were attached: attaching
        // them takes milliseconds, as long as a short window.
        self.next = match self.on_since {
            Some(t) if self.plan.alloc < self.plan.period => (t + self.plan.alloc).min(self.period_start + self.plan.period),
            _ => self.period_start + self.plan.period,
        };
        Ok(())
    }

    /// The period so far has cost over twice its share of the budget: the
    /// plan was made for a calmer target (it just got busy, or gcprobe
    /// attached while it idled), so plan again now rather than at period end.
    fn over_budget(&self, attached: &Attached, now: Instant) -> bool {
        let elapsed = (now - self.period_start).as_secs_f64();
        // Only the allocation probes: the GC-side ones stay on regardless.
        if elapsed < 0.2 || self.on_since.is_none() {
            return false;
        }
        let spent = (alloc_hits(&attached.stats()) - alloc_hits(&self.period_stats)) as f64 * self.gov.cost_s();
        spent > 2.0 * self.gov.budget_s_per_s() * elapsed
    }

    fn end_period(
        &mut self,
        attached: &mut Attached,
        ring: &mut RingBuf<MapData>,
        agg: &mut Aggregator,
        target: &Process,
        fold: &impl Fn(&mut RingBuf<MapData>, &mut Aggregator, &Attached),
    ) -> Result<(), ProbeError> {
        let now = Instant::now();
        // A window that spans the period: close its books, stay attached.
        fold(ring, agg, attached);
        if let Some(t) = self.on_since {
            self.attached_for += now - t;
            self.on_since = Some(now);
            agg.end_burst((now - t).as_secs_f64());
        }
        let stats = attached.stats();
        let cpu = target.cpu_time_s();
        self.gov.observe(PeriodObservation {
            wall: now - self.period_start,
            target_cpu_s: cpu.zip(self.period_cpu).map(|(a, b)| a - b),
            hits: stats.hits - self.period_stats.hits,
            alloc: Attachment { attached: std::mem::take(&mut self.attached_for), hits: alloc_hits(&stats) - alloc_hits(&self.period_stats) },
            switching: std::mem::take(&mut self.switching),
        });
        self.plan = self.gov.plan_next();
        self.period_start = now;
        self.period_cpu = cpu;
        agg.begin_burst();
        if self.on_since.is_none() {
            let started = Instant::now();
            for (id, e) in attached.attach(self.alloc_ids.iter().copied())? {
                eprintln!("gcprobe: warning: probe {id} not re-attached: {e}");
            }
            self.on_since = Some(Instant::now());
            self.switching += started.elapsed();
        }
        self.period_stats = attached.stats();
        Ok(())
    }

    /// The allocation window still open as the session ends, if any. The
    /// caller detaches, folds, then closes it in the aggregator.
    pub fn open_window(&self) -> Option<Duration> {
        self.on_since.map(|t| t.elapsed())
    }
}
