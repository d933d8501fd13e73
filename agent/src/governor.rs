//! Sampled mode's governor: when to attach the allocation probes, and for how
//! long, so that what they cost the target stays under the overhead budget.
//!
//! Cost is measured, not assumed: `cost_s` is this host's calibrated cost of
//! one hit of our program (see `calibrate`), hit rates come from the kernel's
//! per-kind counters, and the target's CPU from /proc/PID/stat. A burst's
//! share of time (its duty) is then
//!
//! ```text
//! allocation duty = (budget − what the GC-side probes use) / (allocation hits/s × cost)
//! ```
//!
//! with the budget in CPU seconds per second (the allowed slowdown × the
//! target's own CPU use). GC and STW probes fire a few times per GC cycle and
//! stay on; when a program collecting hundreds of times a second makes them
//! alone exceed the budget, the report says so.
//!
//! Detaching is what saves the target: the breakpoint leaves its text. Merely
//! disabling the program would still trap on every allocation.
use std::time::Duration;

/// Shortest window: long enough to see a callsite a few times at high
/// rates, and to amortize attaching a dozen uprobes.
pub const MIN_WINDOW: Duration = Duration::from_millis(5);
/// Nominal period: one allocation burst per second when the budget allows.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Longest period, so a tiny duty does not blind the session for long.
pub const MAX_PERIOD: Duration = Duration::from_secs(120);
/// Before any measurement: assume the target keeps one core busy.
const DEFAULT_CPU_RATE: f64 = 1.0;
/// A target using less CPU than this still gets this much budget (1% of a
/// core): the slowdown of a near-idle program is not measurable anyway.
const MIN_CPU_RATE: f64 = 0.01;

/// Hits of one probe set over the time it was attached.
#[derive(Debug, Clone, Copy)]
pub struct Attachment {
    pub attached: Duration,
    pub hits: u64,
}

/// What the governor saw in one period.
#[derive(Debug, Clone, Copy)]
pub struct PeriodObservation {
    pub wall: Duration,
    /// Target CPU seconds (user + system, all threads) in the period,
    /// including the trap time our probes added; None when unreadable.
    pub target_cpu_s: Option<f64>,
    /// All probe hits in the period; those not of the allocation probes are
    /// the GC-side probes', attached throughout.
    pub hits: u64,
    /// The allocation probes (mallocgc, growslice, map growth).
    pub alloc: Attachment,
    /// Wall time the period's attach and detach calls took. Measured here,
    /// the target stalls for about as long (uprobe registration holds its
    /// mm lock through the kernel's waits), so it is charged as cost.
    pub switching: Duration,
}

/// The next period, and how long the allocation probes stay attached from
/// its start. The GC-side probes stay on throughout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub period: Duration,
    /// Allocation probes' window; `>= period` means always attached.
    pub alloc: Duration,
}

#[derive(Debug, Clone)]
pub struct Governor {
    budget: f64,
    cost_s: f64,
    /// Target CPU per wall second without our probes (EWMA).
    cpu_rate: f64,
    /// Hits per attached second (EWMA); None before any measurement.
    alloc_rate: Option<f64>,
    continuous_rate: Option<f64>,
    /// Seconds of stall per attach/detach cycle (EWMA).
    switch_s: Option<f64>,
    /// The last plan's allocation duty (window / period).
    pub alloc_duty: f64,
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| 0.5 * o + 0.5 * new)
}

impl Governor {
    /// `budget` is the allowed slowdown as a fraction (0.01 = 1%); `cost_s`
    /// the calibrated cost of one hit.
    pub fn new(budget: f64, cost_s: f64) -> Self {
        Self { budget, cost_s: cost_s.max(1e-9), cpu_rate: DEFAULT_CPU_RATE, alloc_rate: None, continuous_rate: None, switch_s: None, alloc_duty: 1.0 }
    }

    /// The first period: everything on for one short window, to measure.
    pub fn first(&self) -> Plan {
        Plan { period: MIN_WINDOW, alloc: MIN_WINDOW }
    }

    pub fn observe(&mut self, o: PeriodObservation) {
        let wall = o.wall.as_secs_f64();
        if wall <= 0.0 {
            return;
        }
        if let Some(cpu) = o.target_cpu_s {
            let base = (cpu - o.hits as f64 * self.cost_s).max(0.0) / wall;
            self.cpu_rate = ewma(Some(self.cpu_rate), base.max(MIN_CPU_RATE));
        }
        let rate = |a: Attachment| (a.attached.as_secs_f64() > 0.0).then(|| a.hits as f64 / a.attached.as_secs_f64());
        if let Some(r) = rate(o.alloc) {
            self.alloc_rate = Some(ewma(self.alloc_rate, r));
        }
        self.continuous_rate = Some(ewma(self.continuous_rate, o.hits.saturating_sub(o.alloc.hits) as f64 / wall));
        if !o.switching.is_zero() {
            self.switch_s = Some(ewma(self.switch_s, o.switching.as_secs_f64()));
        }
    }

    /// The next period's windows.
    pub fn plan_next(&mut self) -> Plan {
        let budget = self.budget * self.cpu_rate;
        let cont_cost = self.continuous_rate.unwrap_or(0.0) * self.cost_s;
        // The GC-side probes stay on even past the budget: measured here,
        // detaching and re-attaching a set of uprobes every period stalls
        // the target (its threads sit idle on the kernel's uprobe and mm
        // locks) far more than their hits cost. The report warns instead.
        let left = budget - cont_cost;
        let alloc_cost = self.alloc_rate.unwrap_or(0.0) * self.cost_s;
        self.alloc_duty = if alloc_cost <= 0.0 { 1.0 } else { (left / alloc_cost).clamp(0.0, 1.0) };
        // Stretch the period until the window reaches MIN_WINDOW, and until
        // switching the probes on and off costs at most half the budget.
        let by_window = if self.alloc_duty <= 0.0 { MAX_PERIOD.as_secs_f64() } else { MIN_WINDOW.as_secs_f64() / self.alloc_duty };
        let by_switch = self.switch_s.unwrap_or(0.0) / (0.5 * self.budget);
        let period = Duration::from_secs_f64(by_window.max(by_switch).min(MAX_PERIOD.as_secs_f64())).max(PERIOD);
        let alloc = if self.alloc_duty >= 1.0 { period } else { period.mul_f64(self.alloc_duty).max(MIN_WINDOW) };
        Plan { period, alloc }
    }

    pub fn cost_s(&self) -> f64 {
        self.cost_s
    }

    /// The budget in target CPU seconds per wall second, at the target's
    /// measured CPU use.
    pub fn budget_s_per_s(&self) -> f64 {
        self.budget * self.cpu_rate
    }

    /// What the always-on probes would cost at full time, as a share of the budget.
    pub fn continuous_share(&self) -> f64 {
        self.continuous_rate.unwrap_or(0.0) * self.cost_s / (self.budget * self.cpu_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: f64 = 10e-6;

    fn period(cpu: f64, hits: u64, alloc: (f64, u64)) -> PeriodObservation {
        PeriodObservation {
            wall: Duration::from_secs(1),
            target_cpu_s: Some(cpu),
            hits,
            alloc: Attachment { attached: Duration::from_secs_f64(alloc.0), hits: alloc.1 },
            switching: Duration::ZERO,
        }
    }

    #[test]
    fn an_allocation_bound_target_gets_the_budget_as_duty() {
        let mut g = Governor::new(0.01, COST);
        assert_eq!(g.first().alloc, MIN_WINDOW);
        // While attached the target does nothing but trap: 1 / cost hits per second.
        for _ in 0..10 {
            g.observe(period(1.0 + 1000.0 * COST, 1000, (0.01, 1000)));
        }
        let p = g.plan_next();
        assert!((g.alloc_duty - 0.01).abs() < 0.002, "duty {}", g.alloc_duty);
        assert_eq!(p.period, PERIOD);
        assert!((p.alloc.as_secs_f64() - 0.01).abs() < 0.002, "{p:?}");
    }

    #[test]
    fn a_quiet_target_is_probed_continuously() {
        let mut g = Governor::new(0.01, COST);
        g.observe(period(0.5, 2, (1.0, 2)));
        let p = g.plan_next();
        assert_eq!(g.alloc_duty, 1.0);
        assert!(p.alloc >= p.period);
    }

    #[test]
    fn expensive_gc_probes_stay_on_and_leave_no_room_for_bursts() {
        let mut g = Governor::new(0.01, COST);
        for _ in 0..10 {
            // 4000 GC-side hits/s × 10 µs = 4% of one core: over a 1% budget.
            g.observe(period(1.04, 4500, (0.01, 500)));
        }
        assert!(g.continuous_share() > 3.5);
        let p = g.plan_next();
        assert_eq!(g.alloc_duty, 0.0);
        assert_eq!((p.alloc, p.period), (MIN_WINDOW, MAX_PERIOD));
    }

    #[test]
    fn switching_stalls_stretch_the_period() {
        let mut g = Governor::new(0.01, COST);
        let mut o = period(1.0, 100, (0.01, 100));
        o.switching = Duration::from_millis(100);
        g.observe(o);
        // 0.1 s per switch within half of a 1% budget: one switch per 20 s.
        assert!((g.plan_next().period.as_secs_f64() - 20.0).abs() < 0.5);
    }

    #[test]
    fn tiny_duties_stretch_the_period_not_shrink_the_window() {
        let mut g = Governor::new(0.001, COST);
        for _ in 0..10 {
            g.observe(period(1.0, 0, (0.01, 1000)));
        }
        let p = g.plan_next();
        assert_eq!(p.alloc, MIN_WINDOW);
        assert!((p.period.as_secs_f64() - 5.0).abs() < 0.3, "{p:?}");
    }
}
