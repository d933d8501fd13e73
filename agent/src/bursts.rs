//! Sampled mode: attaches probe sets for the windows the governor plans,
//! and closes each window's books in the aggregator.
//!
//! Each period starts with both sets attached; each is detached when its
//! window ends, unless the window spans the period (always on).
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};

use crate::{
    aggregate::Aggregator,
    governor::{Attachment, Governor, PeriodObservation, Plan},
    plan::{ProbeGroup, ProbeKind, ProbePlan},
    probes::{Attached, KernelStats, ProbeError},
    process::Process,
};

const ALLOC_KINDS: [ProbeKind; 2] = [ProbeKind::Malloc, ProbeKind::Growslice];

fn alloc_hits(s: &KernelStats) -> u64 {
    ALLOC_KINDS.iter().map(|k| s.hits_of(*k)).sum()
}

/// One probe set and its window in the current period.
struct Set {
    ids: Vec<u32>,
    /// Attached since; None while detached.
    on_since: Option<Instant>,
    /// Time attached during the current period.
    attached: Duration,
}

impl Set {
    fn attach(&mut self, attached: &mut Attached) -> Result<(), ProbeError> {
        if self.on_since.is_none() {
            for (id, e) in attached.attach(self.ids.iter().copied())? {
                eprintln!("gcprobe: warning: probe {id} not re-attached: {e}");
            }
            self.on_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Detaches; returns how long it was attached.
    fn detach(&mut self, attached: &mut Attached) -> Duration {
        let w = self.on_since.take().map_or(Duration::ZERO, |t| t.elapsed());
        attached.detach_some(self.ids.iter().copied());
        self.attached += w;
        w
    }
}

pub struct BurstDriver {
    pub gov: Governor,
    /// mallocgc and growslice: the allocation bursts.
    alloc: Set,
    /// Every other probe: GC, STW, assists, map growth, runtime samples.
    continuous: Set,
    plan: Plan,
    period_start: Instant,
    period_cpu: Option<f64>,
    period_stats: KernelStats,
    /// The target's CPU time as last read, for the session's total.
    pub last_cpu: Option<f64>,
    /// When the driver next acts.
    pub next: Instant,
}

impl BurstDriver {
    /// Starts the first period: the caller has just attached every probe.
    pub fn start(gov: Governor, plan: &ProbePlan, attached: &Attached, target: &Process, agg: &mut Aggregator) -> Self {
        let now = Instant::now();
        let ids = |alloc: bool| {
            plan.probes.iter().filter(|p| (p.kind.group() == ProbeGroup::Alloc) == alloc).map(|p| p.id).filter(|id| attached.is_attached(*id)).collect()
        };
        let first = gov.first();
        agg.begin_burst();
        let cpu = target.cpu_time_s();
        Self {
            alloc: Set { ids: ids(true), on_since: Some(now), attached: Duration::ZERO },
            continuous: Set { ids: ids(false), on_since: Some(now), attached: Duration::ZERO },
            plan: first,
            period_start: now,
            period_cpu: cpu,
            period_stats: attached.stats(),
            last_cpu: cpu,
            next: now + first.period,
            gov,
        }
    }

    /// Acts on whatever is due: window ends, then the period's end.
    pub fn fire(
        &mut self,
        attached: &mut Attached,
        ring: &mut RingBuf<MapData>,
        agg: &mut Aggregator,
        target: &Process,
        fold: impl Fn(&mut RingBuf<MapData>, &mut Aggregator, &Attached),
    ) -> Result<(), ProbeError> {
        let now = Instant::now();
        let p = self.plan;
        // Windows shorter than the period end inside it. The window ends as
        // the detach starts: each breakpoint goes at once, the rest of the
        // detach is an RCU wait.
        if self.alloc.on_since.is_some() && p.alloc < p.period && now >= self.period_start + p.alloc {
            let w = self.alloc.detach(attached);
            fold(ring, agg, attached);
            agg.end_burst(w.as_secs_f64());
        }
        if self.continuous.on_since.is_some() && p.continuous < p.period && now >= self.period_start + p.continuous {
            let w = self.continuous.detach(attached);
            fold(ring, agg, attached);
            agg.end_gc_window(w.as_secs_f64());
        }
        if now >= self.period_start + p.period {
            self.end_period(attached, ring, agg, target, &fold)?;
        }
        let mut next = self.period_start + self.plan.period;
        if self.alloc.on_since.is_some() && self.plan.alloc < self.plan.period {
            next = next.min(self.period_start + self.plan.alloc);
        }
        if self.continuous.on_since.is_some() && self.plan.continuous < self.plan.period {
            next = next.min(self.period_start + self.plan.continuous);
        }
        self.next = next;
        Ok(())
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
        // Close the books of windows that span the period; they stay attached.
        fold(ring, agg, attached);
        if let Some(t) = self.alloc.on_since {
            self.alloc.attached += now - t;
            self.alloc.on_since = Some(now);
            agg.end_burst((now - t).as_secs_f64());
        }
        if let Some(t) = self.continuous.on_since {
            self.continuous.attached += now - t;
            self.continuous.on_since = Some(now);
            agg.end_gc_window((now - t).as_secs_f64());
        }
        let stats = attached.stats();
        let cpu = target.cpu_time_s();
        let (all, alloc) = (stats.hits - self.period_stats.hits, alloc_hits(&stats) - alloc_hits(&self.period_stats));
        self.gov.observe(PeriodObservation {
            wall: now - self.period_start,
            target_cpu_s: cpu.zip(self.period_cpu).map(|(a, b)| a - b),
            hits: all,
            alloc: Attachment { attached: self.alloc.attached, hits: alloc },
            continuous: Attachment { attached: self.continuous.attached, hits: all - alloc },
        });
        self.plan = self.gov.plan_next();
        self.period_start = now;
        self.period_cpu = cpu;
        self.last_cpu = cpu.or(self.last_cpu);
        self.alloc.attached = Duration::ZERO;
        self.continuous.attached = Duration::ZERO;
        // Start the new period with both sets attached.
        self.continuous.attach(attached)?;
        agg.begin_burst();
        self.alloc.attach(attached)?;
        self.period_stats = attached.stats();
        Ok(())
    }

    /// Windows still open as the session ends: (allocation, continuous).
    /// The caller detaches, folds, then closes them in the aggregator.
    pub fn open_windows(&self) -> (Option<Duration>, Option<Duration>) {
        (self.alloc.on_since.map(|t| t.elapsed()), self.continuous.on_since.map(|t| t.elapsed()))
    }
}
