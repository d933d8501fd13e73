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
    ingest::{aggregate::Aggregator, feed::Feed, history::History},
    kernel::{
        execs::ExecWatch,
        probes::{AttachPoint, Kernel, KernelStats, Loader, Program, Sizing},
    },
    plan::Mode,
    record::End,
    render::Format,
    report::{EndedBy, Report},
    sampling::governor::Governor,
    tracee::{
        process::{FileKey, Process},
        symbolize::SymbolSource,
    },
};

/// How node mode watches each target.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub mode: Mode,
    /// Allowed slowdown of each target, as a fraction (0.01 = 1%).
    pub budget: f64,
    /// The agent's own CPU ceiling, of one core (0.02 = 2%): bursts open under it.
    pub agent_cpu: Option<f64>,
    /// Each target recorded to a directory (`--record-dir`).
    pub record: Option<crate::record::dir::RecordPolicy>,
    /// `--app-prefix`: more of the owners' import paths.
    pub app_prefixes: Vec<crate::analysis::owner::AppPrefix>,
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

/// What a window's figures are differences of: the target's kernel
/// counters and CPU clock, read at each flush beside its books, and how
/// many allocation bursts had begun then.
type Beside = (KernelStats, Option<f64>, u64);

/// How far back `/report?window=` reaches, and the ops kept per target for
/// it: 10 minutes of a sampled target (~7.5 KiB/s), seconds of one probed
/// exactly at a million allocations a second.
const HISTORY_SPAN: Duration = Duration::from_secs(600);
const HISTORY_BYTES: usize = 4 << 20;

pub struct Fleet {
    w: Watched,
    common: target::Common,
    /// Each target's recent past, for reports over a window.
    histories: HashMap<u32, History<Beside>>,
    /// `--record-dir`: each target's recording.
    recordings: Option<super::recordings::Recordings>,
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
        let common = target::Common { mode: opts.mode, budget: opts.budget, calibration, cost_s, app_prefixes: opts.app_prefixes.clone() };
        let binaries = Binaries { exes: Default::default(), facts: Default::default() };
        let mut w = Watched::new(kernel, binaries, Foreign::Expected);
        w.ceiling = opts.agent_cpu.map(crate::sampling::ceiling::Ceiling::new);
        let record = opts.record.clone();
        Ok((Self { w, common, placed: 0, histories: HashMap::new(), recordings: record.map(super::recordings::Recordings::new) }, ring))
    }

    /// The kernel's exec events, for the node layer's loop.
    pub fn watch_execs(&self) -> Result<ExecWatch, SessionError> {
        Ok(self.w.kernel.watch_execs()?)
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
            self.w.groups.push(Group { key, attached, driver: None, notes: HashMap::new(), emptied: None });
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
        let mut feed = Feed::new(Aggregator::new(pid, &t.meta.plan)).tapped();
        let stats = g.attached.member(pid).map(|r| r.stats()).unwrap_or_default();
        if let Some(r) = &mut self.recordings {
            feed = r.begin(&t, feed, stats);
        }
        self.histories.insert(pid, History::new(feed.agg.clone(), (stats, t.cpu_start, 0), HISTORY_SPAN, HISTORY_BYTES));
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
        let w = &mut self.w;
        let gov = Governor::new(self.common.budget, self.common.cost_s);
        Ok(super::watched::start_driver(&mut w.groups[gi], plan, gov, &w.targets, &mut w.feeds, &w.kernel, ring)?)
    }

    /// Stops watching a process (it exited, or exec'd something else): its
    /// books go with it. Its binary's links stay for [`Fleet::retire`].
    pub fn remove(&mut self, pid: u32, ring: &mut RingBuf<MapData>) {
        if let Some((mut t, end)) = self.w.end_target(pid, ring, EndedBy::TargetExited) {
            if let (Some(r), Some(feed), Some(facts)) = (&mut self.recordings, self.w.feeds.get_mut(pid), self.w.binaries.facts.get_mut(&t.key)) {
                r.finish(&mut t, &end, feed, facts);
            }
            if let Some(g) = self.w.groups.iter_mut().find(|g| g.key == t.key && g.attached.pids().next().is_none()) {
                g.emptied = Some(Instant::now());
            }
        }
        self.w.feeds.remove(pid);
        self.histories.remove(&pid);
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

    /// Fires the burst drivers that are due; ends the targets found gone
    /// and returns them.
    pub fn fire_due(&mut self, ring: &mut RingBuf<MapData>) -> Vec<u32> {
        let gone = self.w.fire_due(ring, false);
        for &pid in &gone {
            self.remove(pid, ring);
        }
        gone
    }

    /// A flush tick: every queued record and count, the drivers, each
    /// target's reads of its runtime; ends the targets found gone and
    /// returns them.
    pub fn flush(&mut self, ring: &mut RingBuf<MapData>) -> Vec<u32> {
        let gone = self.w.flush(ring);
        for &pid in &gone {
            self.remove(pid, ring);
        }
        let stats = self.kernel_readings();
        self.seal_histories(&stats);
        self.write_recordings(&stats);
        gone
    }

    /// Each target's kernel counters now (one read of its row each).
    fn kernel_readings(&self) -> HashMap<u32, KernelStats> {
        self.w.groups.iter().flat_map(|g| g.attached.pids().filter_map(|pid| Some((pid, g.attached.member(pid)?.stats())))).collect()
    }

    /// Each target's recording, brought up to now.
    fn write_recordings(&mut self, stats: &HashMap<u32, KernelStats>) {
        let Some(r) = &mut self.recordings else { return };
        let w = &mut self.w;
        let now: HashMap<u32, (KernelStats, crate::record::Progress)> = w
            .targets
            .iter()
            .filter_map(|t| {
                let g = w.groups.iter().find(|g| g.attached.member(t.pid()).is_some())?;
                let s = *stats.get(&t.pid())?;
                Some((t.pid(), (s, t.progress(s, g.attached.mechanism(), g.driver.as_ref()))))
            })
            .collect();
        r.flush(&mut w.targets, &mut w.feeds, &mut w.binaries.facts, &now);
    }

    /// Each target's ops since the last flush go into its history, with
    /// its counters and CPU clock as they stand.
    fn seal_histories(&mut self, stats: &HashMap<u32, KernelStats>) {
        let now = Instant::now();
        for t in &self.w.targets {
            let pid = t.pid();
            let (Some(h), Some(feed), Some(&s)) = (self.histories.get_mut(&pid), self.w.feeds.get_mut(pid), stats.get(&pid)) else { continue };
            let begun = feed.agg.bursts().begun;
            h.seal(now, (s, t.cpu_last, begun), feed.take_tap());
        }
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
        let (end, key) = self.end_now(pid)?;
        let facts = self.w.binaries.facts.get_mut(&key)?;
        let t = self.w.targets.iter_mut().find(|t| t.pid() == pid)?;
        let feed = self.w.feeds.get(pid)?;
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        let report = t.meta.report(&end, &feed.agg, &mut view);
        let pauses = feed.agg.pauses();
        let new_pauses = pauses.since(pauses_from).map(|s| (crate::report::cause_name(&mut view, s.cause), s.duration_ns as f64 / 1e9)).collect();
        Some(Snapshot { report, new_pauses, pauses_seen: pauses.count() })
    }

    /// The report as of now, rendered in `format`: over the time since the
    /// process was first watched, or over the last `window` as far as its
    /// history reaches (a warning says when it falls short).
    pub fn render(&mut self, pid: u32, format: Format, stack_depth: usize, window: Option<Duration>) -> Option<Vec<u8>> {
        let (meta, end, agg) = match window {
            Some(w) => self.window_parts(pid, w)?,
            None => {
                let (end, _) = self.end_now(pid)?;
                let t = self.w.targets.iter().find(|t| t.pid() == pid)?;
                (t.meta.clone(), end, None)
            }
        };
        let t = self.w.targets.iter_mut().find(|t| t.pid() == pid)?;
        let facts = self.w.binaries.facts.get_mut(&t.key)?;
        let feed = self.w.feeds.get(pid)?;
        let agg = agg.as_ref().unwrap_or(&feed.agg);
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        let mut report = meta.report(&end, agg, &mut view);
        if let Some(w) = window {
            let (asked, got) = (w.as_secs_f64(), end.progress.elapsed_s);
            if asked > got + 0.5 {
                report.warnings.push(format!(
                    "window of {} asked for: this report covers the last {got:.1}s, as far back as gcprobe keeps this process's events (at most {} minutes, {} MiB)",
                    humantime::format_duration(w),
                    HISTORY_SPAN.as_secs() / 60,
                    HISTORY_BYTES >> 20
                ));
            } else if got > asked + 0.5 {
                report.warnings.push(format!("window of {} asked for: this report covers the last {got:.1}s, back to the start of the last allocation burst (sampled mode sees allocations only in bursts)", humantime::format_duration(w)));
            }
        }
        Some(crate::render::bytes(format, stack_depth, &report, &meta, &end, agg, &mut view))
    }

    /// A target's end as of now, and its binary.
    fn end_now(&self, pid: u32) -> Option<(End, FileKey)> {
        let t = self.w.targets.iter().find(|t| t.pid() == pid)?;
        let g = self.w.groups.iter().find(|g| g.attached.member(pid).is_some())?;
        let reg = g.attached.member(pid)?;
        Some((End { ended_by: EndedBy::StillRunning, progress: t.progress(reg.stats(), g.attached.mechanism(), g.driver.as_ref()), program_exit: None }, t.key))
    }

    /// The last `window` of a target: its books rebuilt from its history,
    /// its counters and CPU as differences, its start moved to the window's.
    fn window_parts(&mut self, pid: u32, window: Duration) -> Option<(crate::record::Meta, End, Option<Aggregator>)> {
        let stats = self.kernel_readings();
        self.seal_histories(&stats);
        let (mut end, _) = self.end_now(pid)?;
        let t = self.w.targets.iter().find(|t| t.pid() == pid)?;
        let h = self.histories.get(&pid)?;
        let now = Instant::now();
        let mut from = now.checked_sub(window).unwrap_or(now);
        // Sampled mode sees allocations only in bursts: a window holds the
        // last whole one, from before it began, or its rates would be
        // figures nobody measured.
        let ended = self.w.feeds.get(pid)?.agg.bursts().n;
        if ended > 0 {
            if let Some(before_last) = h.last_where(|b| b.2 < ended) {
                from = from.min(before_last);
            }
        }
        let win = h.since(from);
        let (stats_then, cpu_then, _) = win.beside_then;
        let p = &mut end.progress;
        p.elapsed_s = now.duration_since(win.from).as_secs_f64();
        p.kernel = p.kernel.since(&stats_then);
        p.target_cpu_s = t.cpu_last.zip(cpu_then).map(|(a, b)| a - b);
        let mut meta = t.meta.clone();
        let offset = win.from.saturating_duration_since(t.started).as_nanos() as u64;
        meta.start_unix_ns += offset;
        meta.start_monotonic_ns += offset;
        Some((meta, end, Some(win.agg)))
    }
}
