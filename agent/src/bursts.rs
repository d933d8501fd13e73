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

/// How long a detach blocks: the kernel's RCU wait after the breakpoints go.
const DETACH_WAIT: Duration = Duration::from_millis(250);

const ALLOC_KINDS: [ProbeKind; 3] = [ProbeKind::Malloc, ProbeKind::Growslice, ProbeKind::MapGrow];

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

    /// Marks the set detached (the caller detaches its ids); returns how
    /// long it was attached.
    fn close(&mut self) -> Duration {
        let w = self.on_since.take().map_or(Duration::ZERO, |t| t.elapsed());
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
    /// Wall time spent attaching and detaching in the current period.
    switching: Duration,
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
            switching: Duration::ZERO,
            next: now + first.period,
            gov,
        }
    }

    /// Acts on whatever is due: window ends, then the period's end (or an
    /// early end when the period is over budget). Also called on the
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
        let p = self.plan;
        // Windows shorter than the period end inside it. The window ends as
        // the detach starts: each breakpoint goes at once, the rest of the
        // detach is an RCU wait.
        let due = |set: &Set, window: Duration, slack: Duration| window < p.period && set.on_since.is_some_and(|t| now + slack >= t + window);
        // A detach blocks for an RCU wait (~0.2 s here) while the other set
        // keeps trapping: when one window ends, end the other with it if it
        // would end within that wait anyway, in one parallel detach.
        let (a, c) = (due(&self.alloc, p.alloc, Duration::ZERO), due(&self.continuous, p.continuous, Duration::ZERO));
        let (a, c) = (a || (c && due(&self.alloc, p.alloc, DETACH_WAIT)), c || (a && due(&self.continuous, p.continuous, DETACH_WAIT)));
        if a || c {
            let mut ids = Vec::new();
            let (mut wa, mut wc) = (None, None);
            if a {
                wa = Some(self.alloc.close());
                ids.extend(&self.alloc.ids);
            }
            if c {
                wc = Some(self.continuous.close());
                ids.extend(&self.continuous.ids);
            }
            let t = Instant::now();
            attached.detach_some(ids);
            self.switching += t.elapsed();
            fold(ring, agg, attached);
            if let Some(w) = wa {
                agg.end_burst(w.as_secs_f64());
            }
            if let Some(w) = wc {
                agg.end_gc_window(w.as_secs_f64());
            }
        }
        if now >= self.period_start + p.period || self.over_budget(attached, now) {
            self.end_period(attached, ring, agg, target, &fold)?;
        }
        // Windows run from when their set was attached: attaching a dozen
        // uprobes takes milliseconds, as long as a short window.
        let mut next = self.period_start + self.plan.period;
        for (set, window) in [(&self.alloc, self.plan.alloc), (&self.continuous, self.plan.continuous)] {
            if let (Some(t), true) = (set.on_since, window < self.plan.period) {
                next = next.min(t + window);
            }
        }
        self.next = next;
        Ok(())
    }

    /// The period so far has cost over twice its share of the budget: the
    /// plan was made for a calmer target (it just got busy, or gcprobe
    /// attached while it idled), so plan again now rather than at period end.
    fn over_budget(&self, attached: &Attached, now: Instant) -> bool {
        let elapsed = (now - self.period_start).as_secs_f64();
        if elapsed < 0.2 {
            return false;
        }
        // Only the allocation probes: the GC-side ones stay on regardless.
        if self.alloc.on_since.is_none() {
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
            switching: std::mem::take(&mut self.switching),
        });
        self.plan = self.gov.plan_next();
        self.period_start = now;
        self.period_cpu = cpu;
        self.last_cpu = cpu.or(self.last_cpu);
        self.alloc.attached = Duration::ZERO;
        self.continuous.attached = Duration::ZERO;
        // Start the new period with both sets attached.
        let t = Instant::now();
        self.continuous.attach(attached)?;
        agg.begin_burst();
        self.alloc.attach(attached)?;
        self.switching += t.elapsed();
        self.period_stats = attached.stats();
        Ok(())
    }

    /// Windows still open as the session ends: (allocation, continuous).
    /// The caller detaches, folds, then closes them in the aggregator.
    pub fn open_windows(&self) -> (Option<Duration>, Option<Duration>) {
        (self.alloc.on_since.map(|t| t.elapsed()), self.continuous.on_since.map(|t| t.elapsed()))
    }
}
