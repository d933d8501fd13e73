//! Sampled mode: attaches the bursted probes (allocations, map growth,
//! assists) for the windows the governor plans, and closes each burst's
//! books in the aggregator. The stop-the-world probes stay attached all
//! session (see the governor for why).
//!
//! A window is when the probes' kernel gate is open, not when they are
//! attached: uprobes attach and detach one at a time, and a detached probe
//! keeps trapping for a grace period after its program is gone. With the
//! gate, every bursted probe sees the same window, and the traps outside
//! it are counted (`stat::GATED_BY_KIND`) and charged as switching cost.
use std::time::{Duration, Instant};

use crate::{
    kernel::{
        selfmap::thread_cpu,
        links::Attached,
        probes::{KernelStats, ProbeError},
    },
    plan::{ProbeGroup, ProbeKind, ProbePlan},
    sampling::governor::{Attachment, Governor, PeriodObservation, Plan},
};

/// The bursted kinds, from the one place that says which those are.
fn burst_kinds() -> impl Iterator<Item = ProbeKind> {
    crate::plan::ALL_KINDS.into_iter().filter(|k| k.group() == ProbeGroup::Burst)
}

/// All hits of the bursted probes, gated ones included: what they cost.
fn burst_hits(s: &KernelStats) -> u64 {
    burst_kinds().map(|k| s.hits_of(k)).sum()
}

/// Hits of the bursted probes inside windows: what they measured.
fn open_hits(s: &KernelStats) -> u64 {
    burst_kinds().map(|k| s.open_hits_of(k)).sum()
}

/// Where the driver's windows go: one target's books, kept by the caller.
pub trait Books {
    /// Brings in everything the kernel holds of the target so far (the
    /// event ring, then its running totals), before a window's books close.
    fn fold(&mut self);
    fn begin_burst(&mut self);
    fn end_burst(&mut self, window_s: f64);
}

pub struct BurstDriver {
    pub gov: Governor,
    /// The bursted probes and their kinds, in plan order.
    probes: Vec<(u32, ProbeKind)>,
    /// Whether the bursted probes are attached (they stay attached through
    /// periods planned at full duty).
    attached: bool,
    /// The gate opened at; None while shut.
    open_since: Option<Instant>,
    /// The gate was shut early, at this time, for another binary's
    /// switching (see [`BurstDriver::shut_if_due`]); the window closes on
    /// the next act.
    shut_at: Option<Instant>,
    /// Kernel counters when the gate last opened.
    open_stats: KernelStats,
    /// Gate-open time in the current period.
    open_for: Duration,
    /// Detach order: busiest kind in the last window first.
    by_rate: Vec<u32>,
    plan: Plan,
    period_start: Instant,
    period_cpu: Option<f64>,
    period_stats: KernelStats,
    /// Whether the current period attached or detached the probes.
    switched: bool,
    /// The agent's CPU time spent attaching and detaching this period.
    switch_cpu: Duration,
    /// The runtime-sample probe (mProf_Malloc), while attached.
    sample_ids: Vec<u32>,
    /// When the governor took the runtime-sample probe off, if it did.
    pub samples_off_at: Option<Instant>,
    started: Instant,
    start_stats: KernelStats,
    /// When the driver next acts.
    pub next: Instant,
}

impl BurstDriver {
    /// Starts the first period: the caller has just attached every probe
    /// with the gate shut; the first window opens now.
    pub fn start(mut gov: Governor, plan: &ProbePlan, attached: &mut Attached, cpu: &dyn Fn() -> Option<f64>, books: &mut impl Books) -> Result<Self, ProbeError> {
        let probes: Vec<(u32, ProbeKind)> =
            plan.probes.iter().filter(|p| p.kind.group() == ProbeGroup::Burst && attached.is_attached(p.id)).map(|p| (p.id, p.kind)).collect();
        let sample_ids: Vec<u32> = plan.probes.iter().filter(|p| p.kind.group() == ProbeGroup::Sample && attached.is_attached(p.id)).map(|p| p.id).collect();
        gov.sampling_runtime = !sample_ids.is_empty();
        let now = Instant::now();
        let first = gov.first();
        // Read before the gate opens: hits with it shut never count as the window's.
        let stats = attached.stats();
        let mut d = Self {
            sample_ids,
            samples_off_at: None,
            started: now,
            start_stats: stats,
            by_rate: probes.iter().map(|p| p.0).collect(),
            probes,
            attached: true,
            open_since: None,
            shut_at: None,
            open_stats: stats,
            open_for: Duration::ZERO,
            plan: first,
            period_start: now,
            period_cpu: cpu(),
            period_stats: stats,
            switched: true,
            switch_cpu: Duration::ZERO,
            next: now + first.period,
            gov,
        };
        d.open(attached, books)?;
        Ok(d)
    }

    /// Opens the gate. `open_stats` may be read before the probes attach:
    /// hits with the gate shut are counted apart, never as the window's.
    fn open(&mut self, attached: &mut Attached, books: &mut impl Books) -> Result<(), ProbeError> {
        attached.set_burst_open(true)?;
        self.open_since = Some(Instant::now());
        books.begin_burst();
        Ok(())
    }

    /// Shuts the gate now if the window ends by `by`: the agent is about to
    /// spend that long switching another binary's probes (each switch
    /// waits out the kernel's grace periods), and this window must not run
    /// on meanwhile. One map update; the rest waits for the next act.
    pub fn shut_if_due(&mut self, attached: &mut Attached, by: Instant) -> Result<(), ProbeError> {
        let Some(t) = self.open_since else { return Ok(()) };
        if self.shut_at.is_some() || self.plan.window >= self.plan.period || t + self.plan.window > by {
            return Ok(());
        }
        attached.set_burst_open(false)?;
        self.shut_at = Some(Instant::now());
        Ok(())
    }

    /// Acts on whatever is due: the window's end, then the period's end (or
    /// an early end when the period is over budget). Also called on the
    /// session's flush ticks, so a burst of cost is caught within 200 ms.
    pub fn fire(&mut self, attached: &mut Attached, books: &mut impl Books, cpu: &dyn Fn() -> Option<f64>) -> Result<(), ProbeError> {
        let now = Instant::now();
        if let Some(t) = self.open_since.filter(|&t| self.plan.window < self.plan.period && now >= t + self.plan.window) {
            let switch_t0 = (thread_cpu(), attached.background_cpu());
            attached.set_burst_open(false)?;
            let w = self.shut_at.take().unwrap_or_else(Instant::now) - t;
            self.open_since = None;
            self.open_for += w;
            // Detach before folding: the gate already ended the window, and
            // every moment attached is a trap per allocation for nothing.
            self.order_by_rate(&attached.stats());
            attached.detach_in_order(self.by_rate.iter().copied());
            self.switch_cpu += thread_cpu().saturating_sub(switch_t0.0) + attached.background_cpu().saturating_sub(switch_t0.1);
            books.fold();
            books.end_burst(w.as_secs_f64());
            self.attached = false;
            self.switched = true;
        }
        // One read of the counters serves both checks.
        let stats = attached.stats();
        if now >= self.period_start + self.plan.period || self.over_budget(&stats, now) {
            self.end_period(attached, books, cpu)?;
        }
        self.judge_runtime_samples(attached, &stats, now);
        self.next = match self.open_since {
            Some(t) if self.plan.window < self.plan.period => (t + self.plan.window).min(self.period_start + self.plan.period),
            _ => self.period_start + self.plan.period,
        };
        Ok(())
    }

    /// Takes the runtime-sample probe off once the governor says it costs
    /// too much (see `Governor::drop_runtime_samples`).
    fn judge_runtime_samples(&mut self, attached: &mut Attached, s: &KernelStats, now: Instant) {
        if self.sample_ids.is_empty() {
            return;
        }
        let since = |k: ProbeKind| s.hits_of(k) - self.start_stats.hits_of(k);
        let stw = crate::plan::ALL_KINDS.into_iter().filter(|k| k.group() == ProbeGroup::Gc).map(since).sum();
        if self.gov.drop_runtime_samples(now - self.started, stw, since(ProbeKind::MProf)) {
            attached.detach_in_order(std::mem::take(&mut self.sample_ids));
            self.samples_off_at = Some(Instant::now());
        }
    }

    /// Busiest kind in the window just closed first: the k-th detach keeps
    /// its probe trapping through k of the kernel's serialized teardowns.
    fn order_by_rate(&mut self, now: &KernelStats) {
        let window_hits = |k: ProbeKind| now.open_hits_of(k) - self.open_stats.open_hits_of(k);
        let mut probes = self.probes.clone();
        // Stable: within a kind (Go 1.27's malloc variants), plan order.
        probes.sort_by_key(|&(_, k)| std::cmp::Reverse(window_hits(k)));
        self.by_rate = probes.into_iter().map(|p| p.0).collect();
    }

    /// The period so far has cost over twice the budget: the plan was made
    /// for a calmer target (it just got busy, or gcprobe attached while it
    /// idled), so plan again now rather than at period end.
    fn over_budget(&self, stats: &KernelStats, now: Instant) -> bool {
        let elapsed = (now - self.period_start).as_secs_f64();
        // Only the bursted probes: the stop-the-world ones stay on regardless.
        if elapsed < 0.2 || self.open_since.is_none() {
            return false;
        }
        let spent = (burst_hits(stats) - burst_hits(&self.period_stats)) as f64 * self.gov.cost_s();
        spent > 2.0 * self.gov.budget_s_per_s() * elapsed
    }

    fn end_period(&mut self, attached: &mut Attached, books: &mut impl Books, cpu: &dyn Fn() -> Option<f64>) -> Result<(), ProbeError> {
        let now = Instant::now();
        // A window that spans the period: close its books, keep the gate open.
        books.fold();
        if let Some(t) = self.open_since {
            self.open_for += now - t;
            books.end_burst((now - t).as_secs_f64());
            self.open_since = Some(now);
            books.begin_burst();
        }
        let stats = attached.stats();
        let cpu = cpu();
        let delta = |f: fn(&KernelStats) -> u64| f(&stats) - f(&self.period_stats);
        self.gov.observe(PeriodObservation {
            wall: now - self.period_start,
            target_cpu_s: cpu.zip(self.period_cpu).map(|(a, b)| a - b),
            hits: stats.hits - self.period_stats.hits,
            burst: Attachment { open: std::mem::take(&mut self.open_for), hits: delta(open_hits) },
            burst_hits: delta(burst_hits),
            sample_hits: delta(|s| s.hits_of(ProbeKind::MProf)),
            switched: std::mem::take(&mut self.switched),
            agent_switch_s: std::mem::take(&mut self.switch_cpu).as_secs_f64(),
        });
        self.plan = self.gov.plan_next();
        self.period_start = now;
        self.period_cpu = cpu;
        // Before attaching: the gated hits it causes belong to this period.
        self.period_stats = stats;
        if !self.attached {
            self.open_stats = stats;
            // Coldest first: the busiest probes trap gated for the shortest time.
            let switch_t0 = thread_cpu();
            for (id, e) in attached.attach(self.by_rate.iter().rev().copied())? {
                eprintln!("gcprobe: warning: probe {id} not re-attached: {e}");
            }
            self.switch_cpu += thread_cpu().saturating_sub(switch_t0);
            self.attached = true;
            self.switched = true;
            self.open(attached, books)?;
        }
        Ok(())
    }

    /// Whether acting now would open a window: none is open and the
    /// period is over (the next one starts with a burst).
    pub fn would_open(&self, now: Instant) -> bool {
        self.open_since.is_none() && now >= self.period_start + self.plan.period
    }

    /// The window still open as the session ends, if any. The caller shuts
    /// the gate, folds, then closes it in the aggregator.
    pub fn open_window(&self) -> Option<Duration> {
        self.open_since.map(|t| t.elapsed())
    }
}
