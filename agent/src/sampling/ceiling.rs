//! The agent's own CPU ceiling (`gcprobe node --agent-cpu`): every target's
//! burst driver keeps that target's slowdown within its budget, but the
//! agent pays for each burst too (draining and folding its events, placing
//! and removing probes), and on a busy node that CPU is taken from the
//! services. Above the ceiling, over the last few seconds, a burst that
//! would open waits; windows already open still close on time, and the
//! stop-the-world probes never stop.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// How far back the agent's CPU rate is taken.
const WINDOW: Duration = Duration::from_secs(5);
/// How long a burst waits when the agent is over its ceiling.
pub const DEFER: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Ceiling {
    /// Of one core: 0.02 = 2%.
    share: f64,
    /// (when, the agent's CPU seconds then), oldest first, over WINDOW.
    samples: VecDeque<(Instant, f64)>,
    deferred: u64,
}

impl Ceiling {
    pub fn new(share: f64) -> Self {
        Self { share, samples: VecDeque::new(), deferred: 0 }
    }

    /// The agent's CPU time now (user and system, every thread).
    pub fn note(&mut self, now: Instant, cpu_s: f64) {
        self.samples.push_back((now, cpu_s));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t, _)| now.duration_since(t) > WINDOW) {
            self.samples.pop_front();
        }
    }

    /// The agent's CPU over the last few seconds, as a share of one core.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        let dt = t1.duration_since(t0).as_secs_f64();
        (dt >= 0.5).then(|| (c1 - c0) / dt)
    }

    /// Whether the agent is over its ceiling: a burst about to open waits.
    pub fn over(&self) -> bool {
        self.rate().is_some_and(|r| r > self.share)
    }

    /// A burst was put off.
    pub fn note_deferred(&mut self) {
        self.deferred += 1;
    }

    /// Bursts that waited so far.
    pub fn deferred(&self) -> u64 {
        self.deferred
    }

    pub fn share(&self) -> f64 {
        self.share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_wait_only_while_the_agent_is_over_its_ceiling() {
        let t = Instant::now();
        let mut c = Ceiling::new(0.05);
        c.note(t, 10.0);
        // One sample, or too short a span: no rate yet, nothing held back.
        assert!(!c.over());
        c.note(t + Duration::from_secs(1), 10.02);
        assert!((c.rate().unwrap() - 0.02).abs() < 1e-9);
        assert!(!c.over());
        // 0.3 s of CPU in the next second: 16% over two seconds.
        c.note(t + Duration::from_secs(2), 10.32);
        assert!(c.over());
        // Quiet again: the busy second leaves the window.
        for s in 3..=9 {
            c.note(t + Duration::from_secs(s), 10.32 + 0.001 * (s - 2) as f64);
        }
        assert!(c.rate().unwrap() < 0.05, "{:?}", c.rate());
        assert!(!c.over());
    }
}
