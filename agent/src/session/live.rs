//! The live part of a session: the event loop, the status line, each
//! target's end, and the reports.
//!
//! The loop is a single-threaded tokio runtime: the shared ring buffer and
//! each target's pidfd are `AsyncFd`s (no sleep-polling). A target that
//! exits ends its own part, with its report kept for the end; the session
//! ends on `--duration`, Ctrl-C, SIGTERM, or the last target's exit, and
//! every report is written in each case.
use std::{
    collections::BTreeMap,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{error_chain, target::Target, write_reports, AttachOptions, Outcome, Prepared, SessionError};
use crate::{
    analysis::facts::BinaryFacts,
    ingest::feed::Feeds,
    intervals,
    kernel::{
        probelog::ProbeLog,
        probes::{Kernel, ProbeError},
    },
    record::{End, RecordError, Recorder, FLUSH_BYTES},
    render,
    report::EndedBy,
    sampling::bursts,
    tracee::{launch::Held, process::FileKey},
    units::{bytes, si},
};

/// One target's books as its burst driver sees them: the shared ring and
/// totals come in for every target, each to its own feed.
pub(super) struct Books<'a> {
    pub ring: &'a mut RingBuf<MapData>,
    pub feeds: &'a mut Feeds,
    pub kernel: &'a Kernel,
    pub pid: u32,
}

impl bursts::Books for Books<'_> {
    fn fold(&mut self) {
        fold_all(self.ring, self.feeds, self.kernel);
    }

    fn begin_burst(&mut self) {
        if let Some(f) = self.feeds.get_mut(self.pid) {
            f.begin_burst();
        }
    }

    fn end_burst(&mut self, window_s: f64) {
        if let Some(f) = self.feeds.get_mut(self.pid) {
            f.end_burst(window_s);
        }
    }
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

/// What the event loop works on.
struct Live<'s, 'f, 'b> {
    opts: &'s AttachOptions,
    kernel: Kernel,
    /// Targets still running, in the order given.
    targets: Vec<Target>,
    /// Targets whose part has ended, with how.
    done: Vec<(Target, End)>,
    feeds: Feeds,
    /// `gcprobe record` (one target).
    recorder: Option<Recorder>,
    /// `gcprobe run`'s child: signals are passed on to it.
    held: Option<Held>,
    facts: &'f mut BTreeMap<FileKey, BinaryFacts<'b>>,
    /// Writing the recording failed: the session ends, the report is still made.
    record_error: Option<RecordError>,
}

/// Streams until the session ends, then ends every target's part and
/// writes the reports.
pub(super) fn run(
    opts: &AttachOptions,
    mut prepared: Prepared,
    mut recorder: Option<Recorder>,
    mut held: Option<Held>,
    facts: &mut BTreeMap<FileKey, BinaryFacts<'_>>,
) -> Result<Outcome, SessionError> {
    if let (Some(r), Some(t)) = (&mut recorder, prepared.targets.first()) {
        r.meta(&t.meta)?;
    }
    // Everything is in place: the program may run.
    if let Some(h) = &mut held {
        h.release();
    }
    prepared.start(opts.mode)?;
    let Prepared { kernel, ring, mut probe_log, targets, feeds, .. } = prepared;
    let order: Vec<u32> = targets.iter().map(Target::pid).collect();
    let mut live = Live { opts, kernel, targets, done: Vec::new(), feeds, recorder, held, facts, record_error: None };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SessionError::Io)?;
    let (mut ring, ended_by) = rt.block_on(ProbeLog::alongside(probe_log.as_mut(), live.stream(ring))).map_err(SessionError::Io)?;
    live.end_all(&mut ring, ended_by);
    if let Some(log) = &mut probe_log {
        log.flush();
    }
    let exit = match live.held.take() {
        Some(h) => {
            // A second signal: the user wants out now, program included.
            if ended_by == EndedBy::Signal {
                h.signal(libc::SIGKILL);
            }
            Some(h.wait()?)
        }
        None => None,
    };
    live.done.sort_by_key(|(t, _)| order.iter().position(|&p| p == t.pid()));
    live.finish(exit)
}

impl Live<'_, '_, '_> {
    /// Hands the ops gathered so far to the recorder, with the session's
    /// figures as of now (what a report of a file cut here would use).
    fn record(&mut self) -> Result<(), ()> {
        let (Some(rec), Some(t)) = (self.recorder.as_mut(), self.targets.first_mut()) else { return Ok(()) };
        let (Some(feed), Some(facts)) = (self.feeds.get_mut(t.process.pid), self.facts.get_mut(&t.key)) else { return Ok(()) };
        let progress = t.progress(t.cpu_last);
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        rec.flush(feed, &mut view, &progress).map_err(|e| {
            eprintln!("gcprobe: error: recording stopped: {}", error_chain(&e));
            self.record_error = Some(e);
        })
    }

    /// Lets target `i`'s burst driver act; true when the target is gone.
    /// Other errors cost a burst, not the session: they are reported and
    /// the session goes on.
    fn fire(&mut self, i: usize, ring: &mut RingBuf<MapData>) -> bool {
        let t = &mut self.targets[i];
        let Some(d) = t.driver.as_mut() else { return false };
        let mut books = Books { ring, feeds: &mut self.feeds, kernel: &self.kernel, pid: t.process.pid };
        match d.fire(&mut t.attached, &mut books, &t.process) {
            Ok(()) => false,
            Err(ProbeError::TargetGone { .. }) => true,
            Err(e) => {
                eprintln!("gcprobe: warning: pid {}: burst: {}", t.process.pid, error_chain(&e));
                false
            }
        }
    }

    /// Fires the drivers that are due (all of them on a flush tick); ends
    /// the part of any target found gone.
    fn fire_due(&mut self, ring: &mut RingBuf<MapData>, all: bool) {
        let now = std::time::Instant::now();
        let mut gone = Vec::new();
        for i in 0..self.targets.len() {
            let due = self.targets[i].driver.as_ref().is_some_and(|d| all || d.next <= now);
            if due && self.fire(i, ring) {
                gone.push(self.targets[i].pid());
            }
        }
        for pid in gone {
            self.end_target(pid, ring, EndedBy::TargetExited);
        }
    }

    /// A flush tick: everything queued, the drivers, each target's reads.
    fn flush(&mut self, ring: &mut RingBuf<MapData>) {
        fold_all(ring, &mut self.feeds, &self.kernel);
        self.fire_due(ring, true);
        for t in &mut self.targets {
            if let Some(feed) = self.feeds.get_mut(t.process.pid) {
                t.on_flush(feed);
            }
        }
    }

    /// Ends one target's part: its probes leave, what the kernel queued
    /// for it is drained, and its books close.
    fn end_target(&mut self, pid: u32, ring: &mut RingBuf<MapData>, ended_by: EndedBy) {
        let Some(i) = self.targets.iter().position(|t| t.pid() == pid) else { return };
        let mut t = self.targets.remove(i);
        let stopped = t.stop();
        drain_into(ring, &mut self.feeds);
        let feed = self.feeds.get_mut(pid).expect("a feed per target");
        let end = t.end(stopped, ended_by, feed);
        self.done.push((t, end));
    }

    /// The session's end for every target still running: all stop before
    /// one drain, so none waits on another's detach.
    fn end_all(&mut self, ring: &mut RingBuf<MapData>, ended_by: EndedBy) {
        let stopped: Vec<_> = self.targets.iter_mut().map(Target::stop).collect();
        drain_into(ring, &mut self.feeds);
        for (t, s) in std::mem::take(&mut self.targets).into_iter().zip(stopped) {
            let feed = self.feeds.get_mut(t.pid()).expect("a feed per target");
            let end = t.end(s, ended_by, feed);
            self.done.push((t, end));
        }
    }

    /// The recording's end, then each target's report, written as asked.
    fn finish(mut self, exit: Option<std::process::ExitStatus>) -> Result<Outcome, SessionError> {
        let mut recorded = None;
        let mut reports = Vec::with_capacity(self.done.len());
        let single = self.done.len() == 1;
        for (t, end) in &mut self.done {
            let feed = self.feeds.get_mut(t.process.pid).expect("a feed per target");
            let facts = self.facts.get_mut(&t.key).expect("facts per binary");
            let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
            if let (Some(r), None) = (self.recorder.take(), &self.record_error) {
                let path = r.path().to_owned();
                recorded = Some((path, r.finish(feed, &mut view, end)?));
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
        let several = self.targets.len() + self.done.len() > 1;
        for t in &mut self.targets {
            let Some(feed) = self.feeds.get(t.process.pid) else { continue };
            eprintln!("{}", status_line(t, feed, self.opts.interval.as_secs_f64(), several));
            let c = feed.agg.counts();
            t.last_line = (c.mallocgc, feed.agg.alloc_bytes(), c.growslice);
        }
    }

    async fn stream(&mut self, ring: RingBuf<MapData>) -> io::Result<(RingBuf<MapData>, EndedBy)> {
        let opts = self.opts;
        let (exits_tx, mut exits) = mpsc::unbounded_channel();
        for t in &self.targets {
            watch_exit(t.pid(), exits_tx.clone())?;
        }
        // SAFETY: the RingBuf owns its descriptor and keeps it open,
        // unchanged, for as long as the AsyncFd holds it.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
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
        let mut signals = 0;

        let ended_by = loop {
            if self.targets.is_empty() {
                break EndedBy::TargetExited;
            }
            let governor_due = self.targets.iter().filter_map(|t| t.driver.as_ref().map(|d| d.next)).min().map(tokio::time::Instant::from_std);
            // A signal to `gcprobe run` goes on to the program, whose exit ends
            // the session; a second one ends it at once.
            let held = self.held.as_ref();
            let mut on_signal = |sig: i32| match held {
                Some(h) if signals == 0 => {
                    signals += 1;
                    h.signal(sig);
                    false
                }
                _ => true,
            };
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    drain_into(guard.get_inner_mut(), &mut self.feeds);
                    guard.clear_ready();
                    let pending = self.targets.first().and_then(|t| self.feeds.get(t.pid())).map_or(0, |f| f.pending());
                    if pending >= FLUSH_BYTES && self.record().is_err() {
                        break EndedBy::RecordError;
                    }
                }
                _ = tokio::time::sleep_until(governor_due.unwrap_or_else(tokio::time::Instant::now)), if governor_due.is_some() => {
                    self.fire_due(ring.get_mut(), false);
                }
                _ = flush.tick() => {
                    self.flush(ring.get_mut());
                    if self.record().is_err() {
                        break EndedBy::RecordError;
                    }
                }
                _ = tick.tick(), if !opts.quiet => self.status(),
                _ = &mut deadline => break EndedBy::Duration,
                _ = sigint.recv() => if on_signal(libc::SIGINT) { break EndedBy::Signal },
                _ = sigterm.recv() => if on_signal(libc::SIGTERM) { break EndedBy::Signal },
                Some(pid) = exits.recv() => self.end_target(pid, ring.get_mut(), EndedBy::TargetExited),
            }
        };
        Ok((ring.into_inner(), ended_by))
    }
}

/// Sends `pid` on `exits` when the process exits: a pidfd becomes readable
/// then (Linux 5.3+), for any process, not just our children, so exits are
/// seen without polling /proc. One already gone is reported at once.
fn watch_exit(pid: u32, exits: mpsc::UnboundedSender<u32>) -> io::Result<()> {
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
fn status_line(t: &Target, feed: &crate::ingest::feed::Feed, interval_s: f64, several: bool) -> String {
    let agg = &feed.agg;
    let c = &agg.counts();
    let stats = t.attached.stats();
    let (dt, base, note) = match t.driver.as_ref() {
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
