//! The targets under watch and what serves them: the kernel object, each
//! binary's probes and burst driver, each target's books. `attach`,
//! `record` and `run` watch a fixed set ([`super::live`]); node mode adds
//! and removes targets as processes come and go ([`super::fleet`]). Both
//! drive it from one event loop thread.
use aya::maps::{MapData, RingBuf};

use super::{error_chain, target::Target, Binaries, Group};
use crate::{
    ingest::feed::Feeds,
    kernel::probes::{Kernel, ProbeError},
    record::End,
    report::EndedBy,
    sampling::{bursts, ceiling::Ceiling},
};

/// A binary's targets' books as their burst driver sees them: the shared
/// ring and totals come in for every target, each to its own feed, and a
/// window opens and closes in the books of each of `pids`.
pub(super) struct Books<'a> {
    pub ring: &'a mut RingBuf<MapData>,
    pub feeds: &'a mut Feeds,
    pub kernel: &'a Kernel,
    pub pids: &'a [u32],
}

impl bursts::Books for Books<'_> {
    fn fold(&mut self) {
        fold_all(self.ring, self.feeds, self.kernel);
    }

    fn begin_burst(&mut self) {
        for &pid in self.pids {
            if let Some(f) = self.feeds.get_mut(pid) {
                f.begin_burst();
            }
        }
    }

    fn end_burst(&mut self, window_s: f64) {
        for &pid in self.pids {
            if let Some(f) = self.feeds.get_mut(pid) {
                f.end_burst(window_s);
            }
        }
    }
}

/// The CPU clock of a binary's targets together, as its burst driver
/// budgets them; None when none can be read.
pub(super) fn group_cpu<'a>(targets: &'a [Target], pids: &'a [u32]) -> impl Fn() -> Option<f64> + 'a {
    move || targets.iter().filter(|t| pids.contains(&t.pid())).filter_map(|t| t.process.cpu_time_s()).reduce(|a, b| a + b)
}

fn drain_into(ring: &mut RingBuf<MapData>, feeds: &mut Feeds) {
    while let Some(item) = ring.next() {
        feeds.ring(&item);
    }
}

/// Everything queued so far: the ring first (it defines stacks), then the
/// kernel's running totals.
fn fold_all(ring: &mut RingBuf<MapData>, feeds: &mut Feeds, kernel: &Kernel) {
    drain_into(ring, feeds);
    feeds.kernel_totals(&kernel.agg_totals());
}

/// How long one binary's probe switch can hold the event loop: a detach or
/// attach waits out an RCU grace period or two (~50-100 ms measured here).
const SWITCH_HORIZON: std::time::Duration = std::time::Duration::from_millis(150);

/// Starts a binary's burst driver: its first window opens now, in the
/// books of its targets. Attach, record and run start one per binary as
/// the session begins; node mode one as each binary's probes are placed.
pub(super) fn start_driver(g: &mut Group, plan: &crate::plan::ProbePlan, gov: crate::sampling::governor::Governor, targets: &[Target], feeds: &mut Feeds, kernel: &Kernel, ring: &mut RingBuf<MapData>) -> Result<(), ProbeError> {
    let pids: Vec<u32> = g.attached.pids().collect();
    let cpu = group_cpu(targets, &pids);
    let mut books = Books { ring, feeds, kernel, pids: &pids };
    g.driver = Some(bursts::BurstDriver::start(gov, plan, &mut g.attached, &cpu, &mut books)?);
    Ok(())
}

/// What a foreign hit on a shared link set means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Foreign {
    /// A process that is not a target runs a probed binary: each target
    /// gets its own links, so the other pays no trap.
    Unshare,
    /// Node mode: every process of the binary becomes a target once seen,
    /// so a hit before that is expected and changes nothing.
    Expected,
}

/// The targets, their binaries' probes and their books.
pub(super) struct Watched {
    pub kernel: Kernel,
    /// Targets still running.
    pub targets: Vec<Target>,
    /// Their binaries' probes and burst drivers.
    pub groups: Vec<Group>,
    pub feeds: Feeds,
    /// Every target's executable, inspected once, and what it says.
    pub binaries: Binaries,
    /// Hits the kernel counted in processes outside the targets, so far.
    foreign: u64,
    on_foreign: Foreign,
    /// The agent's own CPU ceiling, which bursts open under (node mode).
    pub ceiling: Option<Ceiling>,
}

impl Watched {
    pub fn new(kernel: Kernel, binaries: Binaries, on_foreign: Foreign) -> Self {
        Self { kernel, targets: Vec::new(), groups: Vec::new(), feeds: Feeds::default(), binaries, foreign: 0, on_foreign, ceiling: None }
    }

    /// When the next burst driver is due, if any binary has one.
    pub fn driver_due(&self) -> Option<std::time::Instant> {
        self.groups.iter().filter(|g| g.attached.pids().next().is_some()).filter_map(|g| g.driver.as_ref().map(|d| d.next)).min()
    }

    /// Everything queued in the ring now, each record to its target's books.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        drain_into(ring, &mut self.feeds);
    }

    /// Lets binary `i`'s burst driver act; the target it finds gone, if
    /// any. Other errors cost a burst, not the session: they are reported
    /// and the session goes on.
    fn fire(&mut self, i: usize, ring: &mut RingBuf<MapData>) -> Option<u32> {
        let g = &mut self.groups[i];
        let d = g.driver.as_mut()?;
        let pids: Vec<u32> = g.attached.pids().collect();
        // A binary whose links linger with no process left has no books to keep.
        if pids.is_empty() {
            return None;
        }
        let cpu = group_cpu(&self.targets, &pids);
        let mut books = Books { ring, feeds: &mut self.feeds, kernel: &self.kernel, pids: &pids };
        match d.fire(&mut g.attached, &mut books, &cpu) {
            Ok(()) => None,
            Err(ProbeError::TargetGone { pid }) => Some(pid),
            Err(e) => {
                eprintln!("gcprobe: warning: burst: {}", error_chain(&e));
                None
            }
        }
    }

    /// Fires the drivers that are due (all of them on a flush tick); returns
    /// the targets found gone, for the caller to end.
    pub fn fire_due(&mut self, ring: &mut RingBuf<MapData>, all: bool) -> Vec<u32> {
        let now = std::time::Instant::now();
        let due: Vec<bool> = self.groups.iter().map(|g| g.driver.as_ref().is_some_and(|d| all || d.next <= now)).collect();
        if self.groups.len() > 1 {
            // A switch blocks this thread for the kernel's grace periods:
            // windows that end meanwhile shut first, on time.
            let by = now + SWITCH_HORIZON;
            for g in self.groups.iter_mut().filter(|g| g.attached.pids().next().is_some()) {
                if let Some(d) = g.driver.as_mut() {
                    if let Err(e) = d.shut_if_due(&mut g.attached, by) {
                        eprintln!("gcprobe: warning: burst: {}", error_chain(&e));
                    }
                }
            }
        }
        let mut gone = Vec::new();
        for (i, due) in due.into_iter().enumerate() {
            if due && !self.held_back(i, now) {
                gone.extend(self.fire(i, ring));
            }
        }
        gone
    }

    /// Whether binary `i`'s next burst waits for the agent's CPU to come
    /// under its ceiling. Only a burst that would open waits: an open
    /// window closes on time. Every flush tick asks too (it acts on every
    /// driver), so a burst put off stays off until the ceiling allows it;
    /// it is counted once per scheduled attempt.
    fn held_back(&mut self, i: usize, now: std::time::Instant) -> bool {
        let (Some(c), Some(d)) = (self.ceiling.as_mut(), self.groups[i].driver.as_mut()) else { return false };
        if !d.would_open(now) || !c.over() {
            return false;
        }
        if d.next <= now {
            c.note_deferred();
            d.next = now + crate::sampling::ceiling::DEFER;
        }
        true
    }

    /// A process outside the targets ran a binary whose probes serve every
    /// process of it: from now on each target has its own (unless node
    /// mode expects it, see [`Foreign`]).
    fn check_foreign(&mut self) {
        let foreign = self.kernel.foreign_hits();
        if foreign == self.foreign || self.on_foreign == Foreign::Expected {
            return;
        }
        self.foreign = foreign;
        // The count is the agent's, not a binary's: every shared set goes.
        for g in self.groups.iter_mut().filter(|g| g.attached.shares_links()) {
            let pids: Vec<String> = g.attached.pids().map(|p| p.to_string()).collect();
            eprintln!("gcprobe: warning: a process that is not a target runs a probed binary: the probes of pids {} are now placed per target", pids.join(", "));
            match g.attached.unshare() {
                Ok(failures) => failures.iter().for_each(|(id, e)| eprintln!("gcprobe: warning: probe {id} not re-attached: {e}")),
                Err(e) => eprintln!("gcprobe: warning: {}", error_chain(&e)),
            }
        }
    }

    /// A flush tick: everything queued, the drivers, each target's reads.
    /// Returns the targets found gone.
    pub fn flush(&mut self, ring: &mut RingBuf<MapData>) -> Vec<u32> {
        if let Some(c) = &mut self.ceiling {
            c.note(std::time::Instant::now(), super::target::self_usage().cpu_s);
        }
        fold_all(ring, &mut self.feeds, &self.kernel);
        self.check_foreign();
        let gone = self.fire_due(ring, true);
        for t in &mut self.targets {
            if let Some(feed) = self.feeds.get_mut(t.process.pid) {
                t.on_flush(feed);
            }
        }
        gone
    }

    /// Ends one target's part: its probes leave (the binary's shared ones
    /// stay for its other targets), what the kernel queued for it is
    /// drained, and its books close. A binary left with no target goes,
    /// unless its links linger (node mode retires it later).
    pub fn end_target(&mut self, pid: u32, ring: &mut RingBuf<MapData>, ended_by: EndedBy) -> Option<(Target, End)> {
        let (Some(i), Some(gi)) = (self.targets.iter().position(|t| t.pid() == pid), self.groups.iter().position(|g| g.attached.member(pid).is_some())) else { return None };
        let g = &mut self.groups[gi];
        let open_window = g.driver.as_ref().and_then(|d| d.open_window());
        let mut reg = g.attached.remove(pid)?;
        let t = self.targets.remove(i);
        if open_window.is_some() {
            let _ = reg.set_burst_open(false);
        }
        let stopped = t.stop(&reg, open_window, g.attached.mechanism());
        drain_into(ring, &mut self.feeds);
        let feed = self.feeds.get_mut(pid).expect("a feed per target");
        let end = t.end(stopped, ended_by, feed, g.driver.as_ref());
        drop(reg);
        if g.attached.pids().next().is_none() && !g.attached.lingers() {
            self.groups.remove(gi);
        }
        Some((t, end))
    }

    /// The session's end for every target still running: every binary's
    /// gates shut and probes leave before one drain, so none waits on
    /// another's detach.
    pub fn end_all(&mut self, ring: &mut RingBuf<MapData>, ended_by: EndedBy) -> Vec<(Target, End)> {
        let mut stopping = Vec::new();
        for g in &mut self.groups {
            let open_window = g.driver.as_ref().and_then(|d| d.open_window());
            if open_window.is_some() {
                if let Err(e) = g.attached.set_burst_open(false) {
                    eprintln!("gcprobe: warning: {}", error_chain(&e));
                }
            }
            g.attached.detach();
            for pid in g.attached.pids().collect::<Vec<_>>() {
                let Some(i) = self.targets.iter().position(|t| t.pid() == pid) else { continue };
                let reg = g.attached.remove(pid).expect("a member");
                let stopped = self.targets[i].stop(&reg, open_window, g.attached.mechanism());
                stopping.push((pid, reg, stopped));
            }
        }
        drain_into(ring, &mut self.feeds);
        // Every link is gone: a growth still held in the kernel will never
        // be sent with its allocation (zero-size elements allocate nothing).
        for r in self.kernel.held_growths() {
            self.feeds.ring(&r);
        }
        let mut done = Vec::with_capacity(stopping.len());
        for (pid, reg, stopped) in stopping {
            let i = self.targets.iter().position(|t| t.pid() == pid).expect("a target");
            let t = self.targets.remove(i);
            let g = self.groups.iter().find(|g| g.key == t.key);
            let feed = self.feeds.get_mut(pid).expect("a feed per target");
            let end = t.end(stopped, ended_by, feed, g.and_then(|g| g.driver.as_ref()));
            drop(reg);
            done.push((t, end));
        }
        self.groups.clear();
        done
    }
}
