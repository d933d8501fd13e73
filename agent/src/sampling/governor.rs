//! Sampled mode's governor: when to open a burst of the allocation-side
//! probes, and for how long, so that what gcprobe costs the target stays
//! under the overhead budget.
//!
//! Cost is measured, not assumed: `cost_s` is this host's calibrated cost of
//! one hit of our program (see `calibrate`), hit rates come from the kernel's
//! per-kind counters, and the target's CPU from its CPU clock. Per period `P`
//! with a window `W`, in target CPU seconds per second:
//!
//! ```text
//! C + A·W/P + S/P ≤ B
//! ```
//!
//! `B` is the budget (the allowed slowdown × the target's own CPU use), `C`
//! what the always-on stop-the-world probes cost, `A` what the bursted
//! probes cost while open, and `S` what one attach-and-detach cycle costs:
//! the traps on the bursted probes while they are attached with their gate
//! shut, counted by the kernel. The stop-the-world probes fire twice per
//! pause and stay on; when a program collecting hundreds of times a second
//! makes them alone exceed the budget, the report says so.
//!
//! Detaching is what saves the target: the breakpoint leaves its text.
//! Merely disabling the program would still trap on every allocation.
use std::time::Duration;

/// Shortest window: at a million allocations a second (a program that
/// would also pay most for a long one) it still sees a thousand. The gate
/// makes a window this short exact; the agent's timer granularity is about
/// a millisecond.
pub const MIN_WINDOW: Duration = Duration::from_millis(1);
/// The first window, before any rate is known.
const FIRST_WINDOW: Duration = Duration::from_millis(2);
/// Shortest period once the session is under way: one burst per second
/// when the budget allows.
pub const PERIOD: Duration = Duration::from_secs(1);
/// The second period's floor, doubling per period up to PERIOD.
const FIRST_PERIOD: Duration = Duration::from_millis(100);
/// Longest period, so a tiny duty does not blind the session for long.
pub const MAX_PERIOD: Duration = Duration::from_secs(120);
/// Before any measurement: assume the target keeps one core busy.
const DEFAULT_CPU_RATE: f64 = 1.0;
/// A target using less CPU than this still gets this much budget (1% of a
/// core): the slowdown of a near-idle program is not measurable anyway.
const MIN_CPU_RATE: f64 = 0.01;
/// Hits assumed when a window saw fewer: zero hits in a 1 ms window bound
/// the rate at about 3 / 1 ms (the 95% Poisson limit), not at zero. Taking
/// zero would plan full duty, and a target that idled through the first
/// window would pay a trap per allocation once it woke.
const MIN_HITS: f64 = 3.0;
/// A window that saw fewer hits than this says little about the rate: the
/// next may be at most `GROWTH` times as long. A target idling at attach
/// would otherwise get a long window, then pay a trap per allocation for
/// all of it once it woke.
const TRUSTED_HITS: u64 = 30;
const GROWTH: f64 = 4.0;
/// A period may be at most this many times the last. Rates measured over
/// a short period are noisy: a program's start-up (`gcprobe run`) can put
/// a few runtime samples into the 2 ms first period, which reads as the
/// budget spent, and planning MAX_PERIOD on that would leave the rest of
/// a short run without a burst.
const PERIOD_GROWTH: f64 = 4.0;
/// The runtime-sample probe is judged on this much of the session, not on
/// its first moments (a target idling at attach has almost no budget).
const SAMPLE_VERDICT_AFTER: Duration = Duration::from_secs(2);

/// Hits of the bursted probes over the time their gate was open.
#[derive(Debug, Clone, Copy)]
pub struct Attachment {
    pub open: Duration,
    pub hits: u64,
}

/// What the governor saw in one period.
#[derive(Debug, Clone, Copy)]
pub struct PeriodObservation {
    pub wall: Duration,
    /// Target CPU seconds (user + system, all threads) in the period,
    /// including the trap time our probes added; None when unreadable.
    pub target_cpu_s: Option<f64>,
    /// All probe hits in the period, gated ones included.
    pub hits: u64,
    /// The bursted probes' hits in their windows.
    pub burst: Attachment,
    /// All hits of the bursted probes, gated ones included.
    pub burst_hits: u64,
    /// Hits of the runtime-sample probe (mProf_Malloc), while attached.
    pub sample_hits: u64,
    /// The period attached and detached the bursted probes: its gated hits
    /// are one switching cycle's cost.
    pub switched: bool,
    /// CPU seconds the agent spent attaching and detaching in the period.
    /// Uprobe (un)registration walks every mapping of the file under the
    /// kernel's locks (kernel/events/uprobes.c register_for_each_vma): about
    /// 10 ms a cycle on a 50 MB binary here, more than an idle target's
    /// whole budget, and on a saturated host it is taken from the target.
    pub agent_switch_s: f64,
}

/// The next period, and how long the bursted probes' gate stays open from
/// its start. The stop-the-world probes stay on throughout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub period: Duration,
    /// The window; `>= period` means always open (and attached).
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Governor {
    budget: f64,
    cost_s: f64,
    /// Target CPU per wall second without our probes (EWMA); None before
    /// any measurement.
    cpu_rate: Option<f64>,
    /// Bursted hits per open second (EWMA); None before any measurement.
    burst_rate: Option<f64>,
    /// Always-on (stop-the-world) hits per second (EWMA).
    continuous_rate: Option<f64>,
    /// Runtime-sample hits per second while attached (EWMA).
    sample_rate: Option<f64>,
    /// Whether the runtime-sample probe is (still) attached; the caller
    /// clears it when there is none.
    pub sampling_runtime: bool,
    /// Periods planned so far.
    periods: u32,
    /// The last window with the gate open, and its hits.
    last_window: Option<Attachment>,
    /// Gated hits per attach/detach cycle (EWMA).
    switch_hits: Option<f64>,
    /// The agent's CPU seconds per switching cycle.
    agent_switch_s: Option<f64>,
    /// The last plan's duty (window / period).
    pub alloc_duty: f64,
    /// The last plan's period.
    last_period: Duration,
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| 0.5 * o + 0.5 * new)
}

impl Governor {
    /// `budget` is the allowed slowdown as a fraction (0.01 = 1%); `cost_s`
    /// the calibrated cost of one hit.
    pub fn new(budget: f64, cost_s: f64) -> Self {
        Self {
            budget,
            cost_s: cost_s.max(1e-9),
            cpu_rate: None,
            burst_rate: None,
            continuous_rate: None,
            sample_rate: None,
            sampling_runtime: true,
            periods: 0,
            last_window: None,
            switch_hits: None,
            agent_switch_s: None,
            alloc_duty: 1.0,
            last_period: FIRST_WINDOW,
        }
    }

    /// The first period: everything on for one short window, to measure.
    pub fn first(&self) -> Plan {
        Plan { period: FIRST_WINDOW, window: FIRST_WINDOW }
    }

    pub fn observe(&mut self, o: PeriodObservation) {
        let wall = o.wall.as_secs_f64();
        if wall <= 0.0 {
            return;
        }
        if let Some(cpu) = o.target_cpu_s {
            let base = (cpu - o.hits as f64 * self.cost_s).max(0.0) / wall;
            self.cpu_rate = Some(ewma(self.cpu_rate, base.max(MIN_CPU_RATE)));
        }
        let open = o.burst.open.as_secs_f64();
        if open > 0.0 {
            let r = (o.burst.hits as f64).max(MIN_HITS) / open;
            // An estimate from a window that saw almost nothing is a bound,
            // not a measurement: the first real one replaces it.
            let prior_trusted = self.last_window.is_some_and(|w| w.hits >= TRUSTED_HITS);
            self.burst_rate = Some(if prior_trusted { ewma(self.burst_rate, r) } else { r });
            self.last_window = Some(o.burst);
        }
        self.continuous_rate = Some(ewma(self.continuous_rate, o.hits.saturating_sub(o.burst_hits + o.sample_hits) as f64 / wall));
        if self.sampling_runtime {
            self.sample_rate = Some(ewma(self.sample_rate, o.sample_hits as f64 / wall));
        }
        if o.switched {
            self.switch_hits = Some(ewma(self.switch_hits, o.burst_hits.saturating_sub(o.burst.hits) as f64));
            self.agent_switch_s = Some(ewma(self.agent_switch_s, o.agent_switch_s));
        }
    }

    /// The runtime-sample probe's verdict, from what the session has seen
    /// so far (`elapsed`, and the pause-probe and mProf hits in it): true
    /// once it and the pause probes take over half the budget, and from
    /// then on. At this host's trap cost a program allocating a GB/s would
    /// pay more for the sample than the budget allows, and the bursts cover
    /// what it measures.
    pub fn drop_runtime_samples(&mut self, elapsed: Duration, stw_hits: u64, sample_hits: u64) -> bool {
        if !self.sampling_runtime || elapsed < SAMPLE_VERDICT_AFTER {
            return !self.sampling_runtime;
        }
        let per_s = |h: u64| h as f64 / elapsed.as_secs_f64() * self.cost_s;
        if per_s(stw_hits) + per_s(sample_hits) > self.budget_s_per_s() / 2.0 {
            self.sampling_runtime = false;
        }
        !self.sampling_runtime
    }

    /// Periods start short and double up to PERIOD, as the budget allows:
    /// a session of a second still sees several bursts.
    fn min_period(&self) -> Duration {
        PERIOD.min(FIRST_PERIOD * 2u32.saturating_pow(self.periods.saturating_sub(1).min(16)))
    }

    /// The next period and its window, the period no more than
    /// PERIOD_GROWTH times the last.
    pub fn plan_next(&mut self) -> Plan {
        let mut p = self.plan_unbounded();
        let cap = (self.last_period.mul_f64(PERIOD_GROWTH)).max(self.min_period());
        if p.period > cap {
            // Keep the duty the plan wanted, in the shorter period.
            p = Plan { period: cap, window: p.window.mul_f64(cap.as_secs_f64() / p.period.as_secs_f64()).max(MIN_WINDOW).min(cap) };
            self.alloc_duty = p.window.as_secs_f64() / cap.as_secs_f64();
        }
        self.last_period = p.period;
        p
    }

    fn plan_unbounded(&mut self) -> Plan {
        self.periods += 1;
        let budget = self.budget_s_per_s();
        // The stop-the-world probes stay on even past the budget: without
        // them no pause is timed. The report warns instead.
        let stw = self.continuous_rate.unwrap_or(0.0) * self.cost_s;
        // Until `drop_runtime_samples` takes it off, the runtime's sample
        // costs like the pause probes.
        let sample = self.sample_rate.unwrap_or(0.0) * self.cost_s;
        let left = budget - stw - if self.sampling_runtime { sample } else { 0.0 };
        // How long the next window may be, on what the last one saw.
        let max_window = match self.last_window {
            Some(w) if w.hits < TRUSTED_HITS => w.open.as_secs_f64() * GROWTH,
            _ => f64::INFINITY,
        };
        let open_cost = self.burst_rate.unwrap_or(0.0) * self.cost_s;
        // A cycle costs the target its gated traps and the agent its
        // syscalls: both count against the budget.
        let switch_cost = self.switch_hits.unwrap_or(0.0) * self.cost_s + self.agent_switch_s.unwrap_or(0.0);
        let (min_w, max_p) = (MIN_WINDOW.as_secs_f64(), MAX_PERIOD.as_secs_f64());
        let min_p = self.min_period().as_secs_f64();
        if open_cost <= left {
            // Always open: within budget, and no switching to pay for.
            let window = min_p.min(max_window);
            self.alloc_duty = window / min_p;
            return Plan { period: Duration::from_secs_f64(min_p), window: Duration::from_secs_f64(window) };
        }
        if left <= 0.0 {
            self.alloc_duty = min_w / max_p;
            return Plan { period: MAX_PERIOD, window: MIN_WINDOW };
        }
        // Long enough that switching takes at most half of what is left,
        // and that a minimal window plus one switch fits.
        let period = (2.0 * switch_cost / left).max((open_cost * min_w + switch_cost) / left).max(min_p).min(max_p);
        let window = ((left * period - switch_cost) / open_cost).min(max_window).clamp(min_w, period);
        self.alloc_duty = window / period;
        Plan { period: Duration::from_secs_f64(period), window: Duration::from_secs_f64(window) }
    }

    pub fn cost_s(&self) -> f64 {
        self.cost_s
    }

    /// The budget in target CPU seconds per wall second, at the target's
    /// measured CPU use.
    pub fn budget_s_per_s(&self) -> f64 {
        self.budget * self.cpu_rate.unwrap_or(DEFAULT_CPU_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: f64 = 10e-6;

    /// One second with `cpu` target CPU seconds of its own, `cont` always-on hits, and
    /// bursted hits: `open` seconds holding `hits`, plus `gated` around them.
    fn period(cpu: f64, cont: u64, open: f64, hits: u64, gated: u64) -> PeriodObservation {
        PeriodObservation {
            wall: Duration::from_secs(1),
            target_cpu_s: Some(cpu + (cont + hits + gated) as f64 * COST),
            hits: cont + hits + gated,
            burst: Attachment { open: Duration::from_secs_f64(open), hits },
            burst_hits: hits + gated,
            sample_hits: 0,
            switched: open < 1.0,
            agent_switch_s: 0.0,
        }
    }

    /// A period of `wall` in which the target used `cpu` seconds and the
    /// gate was open `open` without a hit.
    fn idle(wall: Duration, cpu: f64, open: Duration) -> PeriodObservation {
        PeriodObservation {
            wall,
            target_cpu_s: Some(cpu),
            hits: 0,
            burst: Attachment { open, hits: 0 },
            burst_hits: 0,
            sample_hits: 0,
            switched: true,
            agent_switch_s: 0.0,
        }
    }

    #[test]
    fn an_allocation_bound_target_gets_the_budget_as_duty() {
        let mut g = Governor::new(0.01, COST);
        assert_eq!(g.first().window, FIRST_WINDOW);
        // While open the target does nothing but trap: 1 / cost hits per second.
        for _ in 0..10 {
            g.observe(period(1.0, 0, 0.01, 1000, 0));
            g.plan_next();
        }
        let p = g.plan_next();
        assert!((g.alloc_duty - 0.01).abs() < 0.002, "duty {}", g.alloc_duty);
        assert_eq!(p.period, PERIOD);
        assert!((p.window.as_secs_f64() - 0.01).abs() < 0.002, "{p:?}");
    }

    #[test]
    fn a_quiet_target_is_probed_continuously() {
        let mut g = Governor::new(0.01, COST);
        g.observe(period(0.5, 0, 1.0, 2, 0));
        let p = g.plan_next();
        assert_eq!(g.alloc_duty, 1.0);
        assert!(p.window >= p.period);
    }

    #[test]
    fn a_first_window_without_hits_does_not_plan_full_duty_for_a_sleepy_target() {
        let mut g = Governor::new(0.01, COST);
        // 1 ms, no allocation seen, target at 10% of a core: 3 hits / 1 ms
        // would cost 3% of a core against a 0.1% budget.
        g.observe(idle(MIN_WINDOW, 0.0001, MIN_WINDOW));
        g.plan_next();
        assert!(g.alloc_duty < 0.1, "duty {}", g.alloc_duty);
    }

    #[test]
    fn windows_grow_step_by_step_while_they_see_too_few_hits() {
        let mut g = Governor::new(0.01, COST);
        let second = Duration::from_secs(1);
        g.observe(idle(second, 0.5, Duration::from_millis(5)));
        let p = g.plan_next();
        assert!((p.window.as_secs_f64() - 0.02).abs() < 1e-9, "{p:?}");
        g.observe(idle(second, 0.5, p.window));
        let p = g.plan_next();
        assert!((p.window.as_secs_f64() - 0.08).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn expensive_stw_probes_stay_on_and_leave_no_room_for_bursts() {
        let mut g = Governor::new(0.01, COST);
        for _ in 0..10 {
            // 4000 always-on hits/s × 10 µs = 4% of one core: over a 1% budget.
            g.observe(period(1.0, 4000, 0.01, 500, 0));
        }
        // Periods lengthen 4x per plan up to MAX_PERIOD, each with a minimal window.
        let periods: Vec<Duration> = (0..8).map(|_| g.plan_next()).inspect(|p| assert_eq!(p.window, MIN_WINDOW)).map(|p| p.period).collect();
        assert!(periods.windows(2).all(|w| w[1] <= w[0].mul_f64(PERIOD_GROWTH) && w[1] >= w[0]), "{periods:?}");
        assert_eq!(*periods.last().unwrap(), MAX_PERIOD);
        assert!(g.alloc_duty < 0.001);
    }

    #[test]
    fn a_noisy_first_period_does_not_blind_the_session() {
        // `gcprobe run`: the 2 ms first period held three runtime samples
        // of the program's start-up, 1500/s: the budget looks spent.
        let mut g = Governor::new(0.05, COST);
        g.observe(PeriodObservation {
            wall: FIRST_WINDOW,
            target_cpu_s: Some(0.002),
            hits: 60,
            burst: Attachment { open: FIRST_WINDOW, hits: 50 },
            burst_hits: 50,
            sample_hits: 3,
            switched: true,
            agent_switch_s: 0.0,
        });
        let p = g.plan_next();
        assert!(p.period <= FIRST_PERIOD, "{p:?}");
        // Then calm: no samples, a few hits per window. Bursts come back at
        // least once a second.
        for _ in 0..6 {
            let w = g.plan_next();
            g.observe(PeriodObservation {
                wall: w.period,
                target_cpu_s: Some(0.1 * w.period.as_secs_f64()),
                hits: 20,
                burst: Attachment { open: w.window, hits: 20 },
                burst_hits: 20,
                sample_hits: 0,
                switched: true,
                agent_switch_s: 0.0,
            });
        }
        assert!(g.plan_next().period <= PERIOD, "{:?}", g.plan_next());
    }

    #[test]
    fn runtime_samples_go_when_they_take_over_half_the_budget() {
        let mut g = Governor::new(0.01, COST);
        g.observe(period(1.0, 0, 0.01, 1000, 0));
        // 400 samples/s (0.4% of a core) and 50 pause hits/s: within half of 1%.
        let s = Duration::from_secs(3);
        assert!(!g.drop_runtime_samples(s, 150, 1200));
        // Judged only after 2 s, however costly the start.
        assert!(!g.drop_runtime_samples(Duration::from_secs(1), 50, 2000));
        // 800/s: over half; and gone for good.
        assert!(g.drop_runtime_samples(s, 150, 2400));
        assert!(g.drop_runtime_samples(s, 0, 0));
        assert!(!g.sampling_runtime);
    }

    #[test]
    fn periods_start_short_and_double() {
        let mut g = Governor::new(0.5, COST);
        g.observe(period(1.0, 0, 1.0, 10, 0));
        let ps: Vec<f64> = (0..6).map(|_| g.plan_next().period.as_secs_f64()).collect();
        assert_eq!(ps, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]);
    }

    #[test]
    fn switching_cost_stretches_the_period() {
        let mut g = Governor::new(0.01, COST);
        for _ in 0..10 {
            // 100k allocations/s while open; each switch traps 10k times
            // gated (0.1 CPU s): within half of a 1% budget, one per 20 s.
            g.observe(period(1.0, 0, 0.01, 1000, 10_000));
            g.plan_next();
        }
        let p = g.plan_next();
        assert!((p.period.as_secs_f64() - 20.0).abs() < 0.5, "{p:?}");
        // The other half of the budget goes to the window: 0.1 s at 1 CPU s/s.
        assert!((p.window.as_secs_f64() - 0.1).abs() < 0.01, "{p:?}");
        let cost = g.continuous_rate.unwrap() * COST + (1e5 * COST * p.window.as_secs_f64() + 10_000.0 * COST) / p.period.as_secs_f64();
        assert!(cost <= 0.01 * 1.0001, "cost {cost}");
    }

    #[test]
    fn tiny_duties_stretch_the_period_not_shrink_the_window() {
        let mut g = Governor::new(0.0002, COST);
        for _ in 0..10 {
            g.observe(period(1.0, 0, 0.01, 1000, 0));
            g.plan_next();
        }
        let p = g.plan_next();
        assert_eq!(p.window, MIN_WINDOW);
        assert!((p.period.as_secs_f64() - 5.0).abs() < 0.3, "{p:?}");
    }
}
