//! A session whose targets come and go: node mode's. One kernel object and
//! one calibration serve every Go process the node layer hands in; each
//! binary is inspected and attached once, its links shared by all of its
//! processes and kept a while after the last one exits ([`Fleet::retire`]),
//! so a binary run 100 times a minute is attached once.
//!
//! The node layer owns the event loop and calls in: records to drain, a
//! flush tick, a burst driver due, a process found or gone, a report asked
//! for. Everything here runs on that one thread.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};

use super::{
    calibrate_or_assume,
    target::{self, place_probes, Target},
    watched::{Foreign, Watched},
    Binaries, Group, SessionError,
};
use crate::{
    analysis::facts::Facts as _,
    ingest::{aggregate::Aggregator, feed::Feed},
    kernel::{
        execs::ExecWatch,
        probes::{AttachPoint, Kernel, Loader, Program, Sizing},
    },
    plan::Mode,
    record::End,
    render::Format,
    report::{EndedBy, Report},
    sampling::{bursts::BurstDriver, governor::Governor},
    tracee::{
        process::{FileKey, Process},
        symbolize::SymbolSource,
    },
};

/// How node mode watches each target.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    pub mode: Mode,
    /// Allowed slowdown of each target, as a fraction (0.01 = 1%).
    pub budget: f64,
    /// The agent's own CPU ceiling, of one core (0.02 = 2%): bursts open under it.
    pub agent_cpu: Option<f64>,
}

/// What the fleet knows of one target, for listings and labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub build_id: Option<String>,
    pub watched_s: f64,
}

/// A target's report as of now, with its pauses (reason, seconds) from
/// `pauses_from` on, for a counter that only moves forward.
pub struct Snapshot {
    pub report: Report,
    pub new_pauses: Vec<(String, f64)>,
    /// Pauses seen so far: the next snapshot's `pauses_from`.
    pub pauses_seen: u64,
}

pub struct Fleet {
    w: Watched,
    common: target::Common,
    /// Binaries whose probes were placed, counting one placed again after
    /// it was retired.
    placed: u64,
}

impl Fleet {
    /// Loads the kernel object and measures what a hit costs here; no target yet.
    pub fn start(opts: FleetOptions) -> Result<(Self, RingBuf<MapData>), SessionError> {
        if !crate::tracee::process::has_bpf_privileges() {
            return Err(SessionError::Privileges);
        }
        let mut loader = Loader::default();
        let (kernel, mut ring) = Kernel::load(&mut loader, Program::Real, Sizing::Session)?;
        let (calibration, cost_s) = calibrate_or_assume(&mut loader, (&kernel, &mut ring));
        let common = target::Common { mode: opts.mode, budget: opts.budget, calibration, cost_s };
        let binaries = Binaries { exes: Default::default(), facts: Default::default() };
        let mut w = Watched::new(kernel, binaries, Foreign::Expected);
        w.ceiling = opts.agent_cpu.map(crate::sampling::ceiling::Ceiling::new);
        Ok((Self { w, common, placed: 0 }, ring))
    }

    /// The kernel's exec events, for the node layer's loop.
    pub fn watch_execs(&self) -> Result<ExecWatch, SessionError> {
        Ok(self.w.kernel.watch_execs()?)
    }

    /// The per-hit cost the budget is spent at, seconds.
    pub fn cost_s(&self) -> f64 {
        self.common.cost_s
    }

    pub fn is_target(&self, pid: u32) -> bool {
        self.w.targets.iter().any(|t| t.pid() == pid)
    }

    /// Whether this binary's probes are in place (for some target, or lingering).
    pub fn has_binary(&self, key: FileKey) -> bool {
        self.w.groups.iter().any(|g| g.key == key)
    }

    /// Watches a process: its binary is inspected and its probes placed
    /// the first time; a later process of it only joins the kernel's filter.
    pub fn add(&mut self, process: Process, ring: &mut RingBuf<MapData>) -> Result<(), SessionError> {
        let pid = process.pid;
        let key = self.w.binaries.add(&process)?;
        let source = self.w.binaries.facts.get(&key).map_or(SymbolSource::Symtab, |f| f.source());
        let fresh = !self.has_binary(key);
        if fresh {
            let points = AttachPoint::from_plan(&self.w.binaries.exe(key).plan);
            let mut attached = self.w.kernel.binary(points, true);
            attached.linger();
            self.w.groups.push(Group { key, attached, driver: None, lingers: true, notes: HashMap::new(), emptied: None });
        }
        let gi = self.w.groups.iter().position(|g| g.key == key).expect("placed above");
        let g = &mut self.w.groups[gi];
        let mut t = match Target::register(process, key, source, &self.w.binaries, &self.w.kernel, &self.common, &mut g.attached) {
            Ok(t) => t,
            Err(e) => {
                self.drop_if_unplaced(gi);
                return Err(e);
            }
        };
        let plan = t.meta.plan.clone();
        if fresh {
            match place_probes(&plan, &mut g.attached, self.common.mode) {
                Ok(notes) => {
                    g.notes = notes;
                    self.placed += 1;
                }
                Err(e) => {
                    g.attached.remove(pid);
                    self.w.groups.remove(gi);
                    return Err(e);
                }
            }
        } else if let Some(d) = &g.driver {
            // Joins the binary's burst as it stands: its gate open only while a window is.
            g.attached.set_burst_open(d.open_window().is_some())?;
        }
        g.emptied = None;
        if let Err(e) = t.placed(&g.attached, &g.notes) {
            g.attached.remove(pid);
            return Err(e);
        }
        t.start();
        let mut feed = Feed::new(Aggregator::new(pid, &plan));
        t.read_rate(&mut feed);
        t.read_gc(&mut feed);
        self.w.feeds.insert(pid, feed);
        self.w.targets.push(t);
        if fresh && self.common.mode == Mode::Sampled {
            self.start_driver(gi, &plan, ring)?;
        }
        Ok(())
    }

    /// A binary whose first process left before its probes were placed goes.
    fn drop_if_unplaced(&mut self, gi: usize) {
        if self.w.groups[gi].attached.attached_ids().is_empty() {
            self.w.groups.remove(gi);
        }
    }

    fn start_driver(&mut self, gi: usize, plan: &crate::plan::ProbePlan, ring: &mut RingBuf<MapData>) -> Result<(), SessionError> {
        let g = &mut self.w.groups[gi];
        let pids: Vec<u32> = g.attached.pids().collect();
        let cpu = super::watched::group_cpu(&self.w.targets, &pids);
        let mut books = super::watched::Books { ring, feeds: &mut self.w.feeds, kernel: &self.w.kernel, pids: &pids };
        g.driver = Some(BurstDriver::start(Governor::new(self.common.budget, self.common.cost_s), plan, &mut g.attached, &cpu, &mut books)?);
        Ok(())
    }

    /// Stops watching a process (it exited, or exec'd something else): its
    /// books go with it. Its binary's links stay for [`Fleet::retire`].
    pub fn remove(&mut self, pid: u32, ring: &mut RingBuf<MapData>) {
        if let Some((t, _)) = self.w.end_target(pid, ring, EndedBy::TargetExited) {
            if let Some(g) = self.w.groups.iter_mut().find(|g| g.key == t.key && g.attached.pids().next().is_none()) {
                g.emptied = Some(Instant::now());
            }
        }
        self.w.feeds.remove(pid);
    }

    /// Detaches and forgets every binary that has had no process for
    /// `grace`: its links, maps' rows, plan, symbols and caches. Returns
    /// how many went.
    pub fn retire(&mut self, grace: Duration) -> usize {
        let idle: Vec<FileKey> = self.w.groups.iter().filter(|g| g.emptied.is_some_and(|t| t.elapsed() >= grace)).map(|g| g.key).collect();
        self.w.groups.retain(|g| !idle.contains(&g.key));
        for &key in &idle {
            self.w.binaries.remove(key);
        }
        idle.len()
    }

    /// How many times a binary's probes were placed.
    pub fn binaries_placed(&self) -> u64 {
        self.placed
    }

    /// Binaries whose probes are in place, lingering ones included.
    pub fn binaries(&self) -> usize {
        self.w.groups.len()
    }

    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        self.w.drain(ring);
    }

    /// When the next burst driver is due.
    pub fn driver_due(&self) -> Option<Instant> {
        self.w.driver_due()
    }

    /// Fires the burst drivers that are due; ends targets found gone.
    pub fn fire_due(&mut self, ring: &mut RingBuf<MapData>) {
        for pid in self.w.fire_due(ring, false) {
            self.remove(pid, ring);
        }
    }

    /// A flush tick: every queued record and count, the drivers, each
    /// target's reads of its runtime; ends targets found gone.
    pub fn flush(&mut self, ring: &mut RingBuf<MapData>) {
        for pid in self.w.flush(ring) {
            self.remove(pid, ring);
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.w.targets.iter().map(Target::pid).collect()
    }

    pub fn info(&self, pid: u32) -> Option<TargetInfo> {
        let t = self.w.targets.iter().find(|t| t.pid() == pid)?;
        let m = &t.meta.target;
        Some(TargetInfo { pid, exe: m.exe.clone(), go_version: m.go_version.clone(), build_id: m.build_id.clone(), watched_s: t.started.elapsed().as_secs_f64() })
    }

    /// Bursts that waited for the agent's CPU to come under `--agent-cpu`.
    pub fn bursts_deferred(&self) -> u64 {
        self.w.ceiling.as_ref().map_or(0, |c| c.deferred())
    }

    /// Exec events lost to a full ring, and hits on shared probes in
    /// processes not (yet) targets.
    pub fn kernel_counts(&self) -> (u64, u64) {
        (self.w.kernel.execs_lost(), self.w.kernel.foreign_hits())
    }

    /// The report `attach` would give if it ended now, over the time since
    /// the process was first watched; None if it is not a target.
    pub fn snapshot(&mut self, pid: u32, pauses_from: u64) -> Option<Snapshot> {
        let (report, agg) = self.report_parts(pid)?;
        let facts = self.w.binaries.facts.get_mut(&agg.1).expect("facts per binary");
        let t = self.w.targets.iter_mut().find(|t| t.pid() == pid)?;
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        let pauses = self.w.feeds.get(pid)?.agg.pauses();
        let new_pauses = pauses.since(pauses_from).map(|s| (crate::report::cause_name(&mut view, s.cause), s.duration_ns as f64 / 1e9)).collect();
        Some(Snapshot { report, new_pauses, pauses_seen: pauses.count() })
    }

    /// The report as of now, rendered in `format`.
    pub fn render(&mut self, pid: u32, format: Format, stack_depth: usize) -> Option<Vec<u8>> {
        let (report, (end, key)) = self.report_parts(pid)?;
        let facts = self.w.binaries.facts.get_mut(&key).expect("facts per binary");
        let t = self.w.targets.iter_mut().find(|t| t.pid() == pid)?;
        let feed = self.w.feeds.get(pid)?;
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        Some(crate::render::bytes(format, stack_depth, &report, &t.meta, &end, &feed.agg, &mut view))
    }

    /// A target's report as of now, and the end it was built with.
    fn report_parts(&mut self, pid: u32) -> Option<(Report, (End, FileKey))> {
        let w = &mut self.w;
        let t = w.targets.iter_mut().find(|t| t.pid() == pid)?;
        let g = w.groups.iter().find(|g| g.attached.member(pid).is_some())?;
        let reg = g.attached.member(pid)?;
        let end = End { ended_by: EndedBy::StillRunning, progress: t.progress(reg.stats(), g.attached.mechanism(), g.driver.as_ref()) };
        let feed = w.feeds.get(pid)?;
        let facts = w.binaries.facts.get_mut(&t.key)?;
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        let report = t.meta.report(&end, &feed.agg, &mut view);
        Some((report, (end, t.key)))
    }
}
