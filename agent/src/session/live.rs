//! The live part of a session: the event loop, the status line, each
//! target's end, and the reports.
//!
//! The loop is a single-threaded tokio runtime: the shared ring buffer and
//! each target's pidfd are `AsyncFd`s (no sleep-polling). A target that
//! exits ends its own part, with its report kept for the end; so does one
//! that execs another program (the kernel's exec events say so); the session
//! ends on `--duration`, Ctrl-C, SIGTERM, or the last target's exit, and
//! every report is written in each case.
use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{
    error_chain,
    target::Target,
    watched::{Foreign, Watched},
    write_reports, AttachOptions, Binaries, Outcome, Prepared, SessionError,
};
use crate::{
    intervals,
    kernel::{execs::ExecWatch, probelog::ProbeLog, probes::KernelStats},
    record::{End, RecordError, Recorder, FLUSH_BYTES},
    render,
    report::EndedBy,
    sampling::bursts::BurstDriver,
    tracee::launch::Held,
    units::{bytes, si},
};

/// What the event loop works on.
struct Live<'s> {
    opts: &'s AttachOptions,
    w: Watched,
    /// Targets whose part has ended, with how.
    done: Vec<(Target, End)>,
    /// `gcprobe record` (one target).
    recorder: Option<Recorder>,
    /// `gcprobe run`'s child: signals are passed on to it.
    held: Option<Held>,
    /// Writing the recording failed: the session ends, the report is still made.
    record_error: Option<RecordError>,
}

/// SIGINT and SIGTERM, caught from the session's first step: one that
/// arrives while gcprobe is still reading binaries and placing probes ends
/// the session as soon as it starts, with its report and recording, instead
/// of the default action killing gcprobe half-way (and `run`'s held
/// program with it, unobserved). The runtime the loop will run on comes
/// with them: tokio's handlers live on its signal driver.
pub(super) struct Caught {
    rt: tokio::runtime::Runtime,
    signals: Signals,
}

impl Caught {
    pub(super) fn now() -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let entered = rt.enter();
        let signals = Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? };
        drop(entered);
        Ok(Self { rt, signals })
    }
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// The next signal, one that came before this was first awaited included.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}

/// Streams until the session ends, then ends every target's part and
/// writes the reports.
pub(super) fn run(
    opts: &AttachOptions,
    mut prepared: Prepared,
    mut recorder: Option<Recorder>,
    mut held: Option<Held>,
    binaries: Binaries,
    caught: Caught,
) -> Result<Outcome, SessionError> {
    if let (Some(r), Some(t)) = (&mut recorder, prepared.targets.first()) {
        r.meta(&t.meta)?;
    }
    // Everything is in place: the program may run.
    if let Some(h) = &mut held {
        h.release();
    }
    prepared.start(opts.mode)?;
    let Prepared { kernel, ring, mut probe_log, targets, groups, feeds, .. } = prepared;
    let order: Vec<u32> = targets.iter().map(Target::pid).collect();
    let mut w = Watched::new(kernel, binaries, Foreign::Unshare);
    (w.targets, w.groups, w.feeds) = (targets, groups, feeds);
    let mut live = Live { opts, w, done: Vec::new(), recorder, held, record_error: None };
    let Caught { rt, mut signals } = caught;
    let (mut ring, ended_by) = rt.block_on(ProbeLog::alongside(probe_log.as_mut(), live.stream(ring, &mut signals))).map_err(SessionError::Io)?;
    let ended = live.w.end_all(&mut ring, ended_by);
    live.done.extend(ended);
    if let Some(log) = &mut probe_log {
        log.flush();
    }
    let exit = match live.held.take() {
        Some(h) => {
            // A second signal: the user wants out now, program included.
            if ended_by == EndedBy::Signal {
                h.signal(libc::SIGKILL);
            }
            let status = crate::tracee::launch::ProgramExit::from(h.wait()?);
            // Said here, before anything else can fail: gcprobe's own exit
            // status does not carry the program's (see error::run_status).
            if let (false, super::TargetSpec::Launch { program, .. }) = (status.success(), &opts.target) {
                eprintln!("gcprobe: {program} {status}");
            }
            Some(status)
        }
        None => None,
    };
    live.done.sort_by_key(|(t, _)| order.iter().position(|&p| p == t.pid()));
    live.finish(exit)
}

impl Live<'_> {
    /// Hands the ops gathered so far to the recorder, with the session's
    /// figures as of now (what a report of a file cut here would use).
    fn record(&mut self) -> Result<(), ()> {
        let w = &mut self.w;
        let (Some(rec), Some(t), Some(g)) = (self.recorder.as_mut(), w.targets.first_mut(), w.groups.first()) else { return Ok(()) };
        let (Some(feed), Some(facts), Some(reg)) = (w.feeds.get_mut(t.process.pid), w.binaries.facts.get_mut(&t.key), g.attached.member(t.process.pid)) else { return Ok(()) };
        let progress = t.progress(reg.stats(), g.attached.mechanism(), g.driver.as_ref());
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        // Said once, as gcprobe exits with it, after the report it still makes.
        rec.flush(feed, &mut view, &progress).map_err(|e| self.record_error = Some(e))
    }

    /// Fires the drivers that are due; ends the part of any target found gone.
    fn fire_due(&mut self, ring: &mut RingBuf<MapData>) {
        for pid in self.w.fire_due(ring, false) {
            self.end_target(pid, ring, EndedBy::TargetExited);
        }
    }

    fn flush(&mut self, ring: &mut RingBuf<MapData>) {
        for pid in self.w.flush(ring) {
            self.end_target(pid, ring, EndedBy::TargetExited);
        }
    }

    fn end_target(&mut self, pid: u32, ring: &mut RingBuf<MapData>, ended_by: EndedBy) {
        self.done.extend(self.w.end_target(pid, ring, ended_by));
    }

    /// The recording's end, then each target's report, written as asked.
    fn finish(mut self, exit: Option<crate::tracee::launch::ProgramExit>) -> Result<Outcome, SessionError> {
        let mut recorded = None;
        let mut reports = Vec::with_capacity(self.done.len());
        // The shape the user asked for: several --pid give the reports document
        // even when only one target is left to report on.
        let single = !matches!(&self.opts.target, super::TargetSpec::Pids(p) if p.len() > 1);
        for (t, end) in &mut self.done {
            // `run` has one target: the program, whose end goes in its report and recording.
            end.program_exit = exit;
            let feed = self.w.feeds.get_mut(t.process.pid).expect("a feed per target");
            let facts = self.w.binaries.facts.get_mut(&t.key).expect("facts per binary");
            let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
            if let (Some(r), None) = (self.recorder.take(), &self.record_error) {
                let path = r.path().to_owned();
                // A disk that fills at the very end still leaves the report to write.
                match r.finish(feed, &mut view, end) {
                    Ok(bytes) => recorded = Some((path, bytes)),
                    Err(e) => self.record_error = Some(e),
                }
            }
            let report = t.meta.report(end, &feed.agg, &mut view);
            if single {
                let to = render::Output { format: self.opts.format, stack_depth: self.opts.stack_depth, path: self.opts.output.as_deref() };
                render::write(to, &report, &t.meta, end, &feed.agg, &mut view)?;
            }
            reports.push(report);
        }
        if !single {
            write_reports(self.opts, &reports)?;
        }
        // The reports are out; a recording that failed part way is still an error.
        if let Some(e) = self.record_error {
            return Err(e.into());
        }
        Ok(Outcome { reports, exit, recorded })
    }

    /// The status line of each running target.
    fn status(&mut self) {
        let several = self.w.targets.len() + self.done.len() > 1;
        for t in &mut self.w.targets {
            let Some(feed) = self.w.feeds.get(t.process.pid) else { continue };
            let Some(g) = self.w.groups.iter().find(|g| g.attached.member(t.process.pid).is_some()) else { continue };
            let stats = g.attached.member(t.process.pid).map(|r| r.stats()).unwrap_or_default();
            eprintln!("{}", status_line(t, feed, stats, g.driver.as_ref(), self.opts.interval.as_secs_f64(), several));
            let c = feed.agg.counts();
            t.last_line = (c.mallocgc, feed.agg.alloc_bytes(), c.growslice);
        }
    }

    async fn stream(&mut self, ring: RingBuf<MapData>, signals: &mut Signals) -> io::Result<(RingBuf<MapData>, EndedBy)> {
        let opts = self.opts;
        let (exits_tx, mut exits) = mpsc::unbounded_channel();
        for t in &self.w.targets {
            watch_exit(t.pid(), exits_tx.clone())?;
        }
        // SAFETY: the RingBuf owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        let mut execs = self.watch_execs()?;
        let mut tick = tokio::time::interval(opts.interval);
        tick.tick().await;
        // The kernel batches wakeups (see WAKEUP_BYTES in probe-ebpf); this bounds
        // how long a trickle of events can sit unread.
        let mut flush = tokio::time::interval(intervals::FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // From gcprobe's own start: attaching and calibrating are part of what
        // the user asked to wait for.
        let deadline = async {
            match opts.duration {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(opts.invoked + d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut passed_on = 0;

        let ended_by = loop {
            if self.w.targets.is_empty() {
                break EndedBy::TargetExited;
            }
            let governor_due = self.w.driver_due().map(tokio::time::Instant::from_std);
            // A signal to `gcprobe run` goes on to the program, whose exit ends
            // the session; a second one ends it at once.
            let held = self.held.as_ref();
            let mut on_signal = |sig: i32| match held {
                Some(h) if passed_on == 0 => {
                    passed_on += 1;
                    h.signal(sig);
                    false
                }
                _ => true,
            };
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.w.drain(guard.get_inner_mut());
                    guard.clear_ready();
                    let pending = self.w.targets.first().and_then(|t| self.w.feeds.get(t.pid())).map_or(0, |f| f.pending());
                    if pending >= FLUSH_BYTES && self.record().is_err() {
                        break EndedBy::RecordError;
                    }
                }
                _ = tokio::time::sleep_until(governor_due.unwrap_or_else(tokio::time::Instant::now)), if governor_due.is_some() => {
                    self.fire_due(ring.get_mut());
                }
                _ = flush.tick() => {
                    self.flush(ring.get_mut());
                    if self.record().is_err() {
                        break EndedBy::RecordError;
                    }
                }
                _ = tick.tick(), if !opts.quiet => self.status(),
                _ = &mut deadline => break EndedBy::Duration,
                sig = signals.recv() => if on_signal(sig) { break EndedBy::Signal },
                Some(pid) = exits.recv() => self.end_target(pid, ring.get_mut(), EndedBy::TargetExited),
                pids = exec_events(&mut execs) => {
                    for pid in pids? {
                        if self.w.targets.iter().any(|t| t.pid() == pid) {
                            if !opts.quiet {
                                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(|_| "another program".into(), |p| p.display().to_string());
                                eprintln!("gcprobe: pid {pid} exec'd {exe}: its session ends here");
                            }
                            self.end_target(pid, ring.get_mut(), EndedBy::TargetExec);
                        }
                    }
                }
            }
        };
        Ok((ring.into_inner(), ended_by))
    }
}

impl Live<'_> {
    /// The kernel's exec events: a target that execs keeps its PID but becomes another
    /// program, which its pidfd does not tell. Without them (the tracepoint would not
    /// attach) the session goes on and says so.
    fn watch_execs(&self) -> io::Result<Option<AsyncFd<ExecWatch>>> {
        match self.w.kernel.watch_execs() {
            // SAFETY: the ExecWatch owns its ring's descriptor for as long as the AsyncFd holds it.
            Ok(w) => Ok(Some(unsafe { AsyncFd::register_with_interest(w, Interest::READABLE) }?)),
            Err(e) => {
                eprintln!("gcprobe: warning: exec events unavailable ({}): a target that execs another program is not noticed", error_chain(&e));
                Ok(None)
            }
        }
    }
}

/// The PIDs that exec'd since the last wake-up; never ready without a watch.
async fn exec_events(watch: &mut Option<AsyncFd<ExecWatch>>) -> io::Result<Vec<u32>> {
    let Some(fd) = watch else { return std::future::pending().await };
    let mut guard = fd.readable_mut().await?;
    let pids = guard.get_inner_mut().drain();
    guard.clear_ready();
    Ok(pids)
}

/// Sends `pid` on `exits` when the process exits: a pidfd becomes readable
/// then (Linux 5.3+), for any process, not just our children, so exits are
/// seen without polling /proc. One already gone is reported at once.
pub fn watch_exit(pid: u32, exits: mpsc::UnboundedSender<u32>) -> io::Result<()> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            let _ = exits.send(pid);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // SAFETY: the OwnedFd owns its descriptor for as long as the AsyncFd holds it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
    tokio::spawn(async move {
        if fd.readable().await.is_ok() {
            let _ = exits.send(pid);
        }
    });
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the fd is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One target's live line: rates since the last line (exact mode) or over
/// the burst time so far (sampled mode sees allocations only in bursts, so
/// an interval may hold none). Several targets' lines name their PIDs.
fn status_line(t: &Target, feed: &crate::ingest::feed::Feed, stats: KernelStats, driver: Option<&BurstDriver>, interval_s: f64, several: bool) -> String {
    let agg = &feed.agg;
    let c = &agg.counts();
    let (dt, base, note) = match driver {
        // Paced by the runtime's own allocation total when known (see report::build).
        Some(d) => (agg.rate_time(agg.bursts().window_s), (0, 0, 0), format!("  (est. from {:.2}s of bursts, duty {:.2}%)", agg.bursts().window_s, d.gov.alloc_duty * 100.0)),
        None => (interval_s, t.last_line, String::new()),
    };
    let per_s = |n: u64| if dt > 0.0 { n as f64 / dt } else { 0.0 };
    format!(
        "[gcprobe {:>6.1}s{}] allocs {:>7}/s {:>10}/s  growslice {:>7}/s  gc {:>4}  stw p99 {:>6.0}us max {:>6.0}us  lost {}{note}",
        t.started.elapsed().as_secs_f64(),
        if several { format!(" pid {}", t.pid()) } else { String::new() },
        si(per_s(c.mallocgc - base.0)),
        bytes(per_s(agg.alloc_bytes() - base.1) as u64),
        si(per_s(c.growslice - base.2)),
        c.cycles,
        agg.stw_hist().value_at_quantile(0.99) as f64 / 1e3,
        agg.stw_hist().max() as f64 / 1e3,
        stats.ringbuf_full + c.undecodable,
    )
}
