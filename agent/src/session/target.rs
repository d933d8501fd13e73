//! One process being watched: the probes placed for it, its reads of the
//! target's memory, its burst driver, and how its part of the session ends.
//! The kernel object, the event ring and each binary's facts are shared
//! (see [`super::Shared`]); everything here is this one process's.
use std::{
    collections::HashMap,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{inspect::check_gc_controller, Binaries, SessionError};
use crate::{
    analysis::{facts::UnresolvedCount, owner::AppScope},
    ingest::feed::Feed,
    kernel::{
        calibrate::Calibration,
        links::{Attached, Registration},
        probes::{self, Kernel, KernelStats, Mechanism},
    },
    plan::{Mode, ProbeGroup, ProbePlan},
    record::{End, Meta, Progress},
    report::{self, EndedBy},
    sampling::bursts::BurstDriver,
    tracee::{
        gcctl::Check,
        gomaps::HEADER_BYTES,
        memory::TargetMemory,
        process::{FileKey, Process, ProcessError},
        symbolize::SymbolSource,
    },
};

/// A process under watch, from its probes' placement to its report.
pub(super) struct Target {
    pub process: Process,
    /// Its executable, in the session's cache of binaries.
    pub key: FileKey,
    pub meta: Meta,
    mem: Option<TargetMemory>,
    pub started: Instant,
    pub cpu_start: Option<f64>,
    /// The target's CPU time at the last flush: once it exits its clock is gone.
    pub cpu_last: Option<f64>,
    /// GC cycles seen at the last read of the runtime's sample rate.
    sampled_at_gc: u64,
    maps_read_at: Instant,
    /// The process has run since its maps' lengths were last read: what they
    /// hold may have changed, and a read is owed even if it idles from now on.
    ran_since_maps_read: bool,
    /// Counts at the last live line: (mallocgc, bytes, growslice).
    pub last_line: (u64, u64, u64),
    /// Addresses its report could not name, counted for it alone.
    pub unresolved: UnresolvedCount,
}

/// What is the same for every target of one session.
pub(super) struct Common {
    pub mode: Mode,
    pub budget: f64,
    pub calibration: Option<Calibration>,
    pub cost_s: f64,
    /// `--app-prefix`: more of the owner's import paths.
    pub app_prefixes: Vec<crate::analysis::owner::AppPrefix>,
}

impl Target {
    /// Checks the plan against the process's memory and registers it with
    /// the kernel as a target of its binary's `attached`; the probes are
    /// placed for the whole binary afterwards ([`place_probes`]).
    pub fn register(process: Process, key: FileKey, symbols_from: SymbolSource, binaries: &Binaries, kernel: &Kernel, common: &Common, attached: &mut Attached) -> Result<Self, SessionError> {
        let pid = process.pid;
        let exe = binaries.exe(key);
        let bias = exe.binary.load_bias(&process.exe_mappings()?)?;
        let mem = TargetMemory::open(pid).ok();
        let mut plan = exe.plan.clone();
        check_gc_controller(&mut plan, bias, mem.as_ref());
        let cfg = probes::target_config(&plan, plan.gc_controller.found(), bias);
        attached.add(kernel.register(pid, cfg)?);
        let meta = Meta {
            gcprobe_version: env!("CARGO_PKG_VERSION").into(),
            target: report::Target {
                pid,
                exe: process.exe_display.clone(),
                go_version: exe.build.version_raw.clone(),
                arch: exe.binary.arch.go_name().into(),
                build_id: exe.binary.build_id.clone(),
            },
            exe_path: process.exe_path.display().to_string(),
            load_bias: bias,
            plan,
            attached: Vec::new(),
            attach_notes: HashMap::new(),
            mode: common.mode,
            budget: common.budget,
            calibration: common.calibration,
            cost_s: common.cost_s,
            start_unix_ns: 0,
            start_monotonic_ns: 0,
            symbols_from,
            app: AppScope::of_build(exe.build.main_module.as_ref().map(|m| m.0.as_str()), exe.build.path.as_deref(), &exe.build.deps).with_prefixes(&common.app_prefixes),
        };
        let now = Instant::now();
        Ok(Self {
            process,
            key,
            meta,
            mem,
            started: now,
            cpu_start: None,
            cpu_last: None,
            sampled_at_gc: 0,
            maps_read_at: now,
            ran_since_maps_read: true,
            last_line: (0, 0, 0),
            unresolved: UnresolvedCount::default(),
        })
    }

    /// The probes are in place: what they are, and the session's clock
    /// for this target as the recording states it.
    pub fn placed(&mut self, attached: &Attached, notes: &HashMap<u32, String>) -> Result<(), SessionError> {
        if !self.process.alive() {
            return Err(ProcessError::Exited { pid: self.pid() }.into());
        }
        self.meta.attached = attached.attached_ids();
        self.meta.plan.settle_pause_end(&self.meta.attached);
        self.meta.attach_notes = notes.clone();
        self.meta.start_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        self.meta.start_monotonic_ns = monotonic_ns();
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// The session's clock starts for this target: the program runs from here.
    pub fn start(&mut self) {
        self.started = Instant::now();
        self.maps_read_at = self.started;
        self.cpu_start = self.process.cpu_time_s();
        self.cpu_last = self.cpu_start;
    }

    /// Reads `runtime.MemProfileRate` into the feed; a failed read (the
    /// target just exited) keeps the last value.
    pub fn read_rate(&self, feed: &mut Feed) {
        let addr = self.meta.plan.mem_profile_rate.map(|a| a.wrapping_add(self.meta.load_bias));
        if let Some(r) = self.mem.as_ref().zip(addr).and_then(|(mem, a)| mem.read_u64(a)) {
            feed.mem_profile_rate(r);
        }
    }

    /// Reads the GC controller's settings and allocation total into the feed.
    pub fn read_gc(&self, feed: &mut Feed) {
        let Some((mem, c)) = self.mem.as_ref().zip(self.meta.plan.gc_controller.found()) else { return };
        if let Some(s) = c.settings(self.meta.load_bias, |a| mem.read_u64(a)) {
            // Zeros before gcinit (a program held at its first instruction) are no settings.
            if s.check() == Check::Consistent {
                feed.gc_settings(monotonic_ns(), s);
            }
        }
    }

    /// Reads every probed map's length now, and notes when.
    fn read_map_lens(&mut self, feed: &mut Feed) {
        self.maps_read_at = Instant::now();
        self.ran_since_maps_read = false;
        self.map_lens(feed);
    }

    /// Every probed map's length, where its header still looks like a map's.
    fn map_lens(&self, feed: &mut Feed) {
        if feed.agg.maps().is_empty() {
            return;
        }
        let (mem, map_impl) = (self.mem.as_ref(), self.meta.plan.map_impl);
        feed.map_lens(monotonic_ns(), |addr| mem.and_then(|m| map_impl.len(&m.read_array::<HEADER_BYTES>(addr)?)));
    }

    /// A flush tick's reads: the CPU clock; GC settings whenever the process ran; the
    /// sample rate at each new GC cycle; map lengths at each GC and at
    /// least once per [`crate::intervals::MAP_LENS`] (a leaking service may
    /// collect once a minute) while the process has run since the last read.
    pub fn on_flush(&mut self, feed: &mut Feed) {
        let cpu = self.process.cpu_time_s();
        let ran = cpu.is_none() || cpu != self.cpu_last;
        self.cpu_last = cpu.or(self.cpu_last);
        self.ran_since_maps_read |= ran;
        // A process that has not run since the last flush changed nothing
        // in its memory: an idle one costs one clock read, not a dozen
        // reads of /proc/PID/mem...
        let mut new_cycle = false;
        if ran {
            self.read_gc(feed);
            let cycles = feed.agg.counts().cycles;
            new_cycle = cycles != self.sampled_at_gc;
            if new_cycle {
                self.sampled_at_gc = cycles;
                self.read_rate(feed);
            }
        }
        // ...but a map filled just after the last read and then left while
        // the process sleeps is still owed its read: else the first read may
        // come only once it has been freed (tests/tests/faults.rs, mapfree).
        if self.ran_since_maps_read && (new_cycle || self.maps_read_at.elapsed() >= crate::intervals::MAP_LENS) {
            self.read_map_lens(feed);
        }
    }

    /// The session's figures for this target as of now: its counters, its
    /// binary's probes and driver, and its latest CPU reading.
    pub fn progress(&self, kernel: KernelStats, mechanism: Mechanism, driver: Option<&BurstDriver>) -> Progress {
        progress(self.started, self.started.elapsed().as_secs_f64(), kernel, mechanism, self.cpu_start, self.cpu_last, driver)
    }

    /// Reads the kernel's last figures of a target whose probes have left
    /// (its registration, taken out of its binary's probes) and the burst
    /// window still open for it. The caller then drains what the kernel
    /// already queued: nothing is lost between the last read and the end.
    pub fn stop(&self, reg: &Registration, open_window: Option<std::time::Duration>, mechanism: Mechanism) -> Stopped {
        let duration_s = self.started.elapsed().as_secs_f64();
        // Once the target has exited its CPU clock is gone: use the last reading.
        let cpu_end = self.process.cpu_time_s().or(self.cpu_last);
        Stopped { duration_s, open_window, kernel: reg.stats(), mechanism, cpu_end, totals: reg.agg_totals() }
    }

    /// Folds what [`Target::stop`] read into the feed (after the ring was
    /// drained) and closes the books: the session's end for this target.
    pub fn end(&self, stopped: Stopped, ended_by: EndedBy, feed: &mut Feed, driver: Option<&BurstDriver>) -> End {
        feed.kernel_totals(&stopped.totals);
        self.read_gc(feed);
        self.map_lens(feed);
        if let Some(w) = stopped.open_window {
            feed.end_burst(w.as_secs_f64());
        }
        let progress = progress(self.started, stopped.duration_s, stopped.kernel, stopped.mechanism, self.cpu_start, stopped.cpu_end, driver);
        End { ended_by, progress, program_exit: None }
    }
}

/// What a target's kernel side said as it stopped.
pub(super) struct Stopped {
    duration_s: f64,
    open_window: Option<std::time::Duration>,
    kernel: KernelStats,
    mechanism: Mechanism,
    cpu_end: Option<f64>,
    totals: Vec<(gcprobe_common::AggKey, gcprobe_common::AggValue)>,
}

/// Attaches the plan's probes in three sets, each its own uprobe_multi
/// link, so that a burst's detach (a whole link) or the governor dropping
/// the runtime's sample leaves the stop-the-world probes in place. Exact
/// mode has no use for the runtime's sample; sampled mode starts with
/// everything attached: that is its first, short burst. Returns why each
/// probe not placed was not; a required one that fails ends the session.
pub(super) fn place_probes(plan: &ProbePlan, attached: &mut Attached, mode: Mode) -> Result<HashMap<u32, String>, SessionError> {
    let wanted: Vec<u32> = plan.probes.iter().filter(|p| mode == Mode::Sampled || p.kind.group() != ProbeGroup::Sample).map(|p| p.id).collect();
    if mode == Mode::Sampled {
        // Bursts open the gate once every bursted probe is in place.
        attached.set_burst_open(false)?;
    }
    let mut failures = Vec::new();
    for group in [ProbeGroup::Gc, ProbeGroup::Sample, ProbeGroup::Burst] {
        failures.extend(attached.attach(wanted.iter().copied().filter(|&id| plan.probe(id).is_some_and(|p| p.kind.group() == group)))?);
    }
    let mut notes: HashMap<u32, String> = plan
        .probes
        .iter()
        .filter(|p| !wanted.contains(&p.id))
        .map(|p| (p.id, "not placed in exact mode: every allocation is probed, so the runtime's own sample adds nothing".to_owned()))
        .collect();
    for (id, err) in failures {
        let p = plan.probe(id).expect("failure ids come from the plan");
        if p.required {
            return Err(SessionError::RequiredProbe { symbol: p.symbol.clone(), source: err });
        }
        eprintln!("gcprobe: warning: {} not attached: {err}", p.symbol);
        notes.insert(id, format!("attach failed: {err}"));
    }
    Ok(notes)
}

/// The session's figures `elapsed_s` into it; `cpu_*` are the target's CPU
/// clock at the start and at the latest reading.
fn progress(started: Instant, elapsed_s: f64, kernel: KernelStats, mechanism: Mechanism, cpu_start: Option<f64>, cpu_now: Option<f64>, driver: Option<&BurstDriver>) -> Progress {
    Progress {
        elapsed_s,
        kernel,
        mechanism,
        target_cpu_s: cpu_start.zip(cpu_now).map(|(a, b)| b - a),
        agent: self_usage(),
        runtime_samples_off_after_s: driver.and_then(|d| d.samples_off_at).map(|t| t.saturating_duration_since(started).as_secs_f64()),
    }
}

/// CPU and peak memory of this process (getrusage(RUSAGE_SELF)).
pub(super) fn self_usage() -> report::AgentReport {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    report::AgentReport { cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime), max_rss_kib: ru.ru_maxrss as u64 }
}

/// CLOCK_MONOTONIC, the clock of the kernel's event times (bpf_ktime_get_ns).
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
