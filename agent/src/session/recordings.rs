//! Node mode's recordings of its targets (`--record-dir`), driven by the
//! fleet: each target's file is written at every flush, finished and begun
//! anew past the policy's size or age, and finished when the target goes.
//! A file that continues a session is made to stand alone: it starts from
//! the point it was begun (its clock, counters and CPU are differences from
//! then) and carries what decodes the rest (`Feed::continue_recording`).
use std::{collections::HashMap, path::Path, time::Instant};

use super::{error_chain, target::Target};
use crate::{
    analysis::facts::BinaryFacts,
    ingest::feed::Feed,
    kernel::probes::KernelStats,
    record::{dir::RecordPolicy, End, Meta, Progress, Recorder},
    report::EndedBy,
    tracee::process::FileKey,
};

/// One target's file and where it began.
struct Recording {
    rec: Recorder,
    part: u32,
    begun: Instant,
    /// Counters and CPU clock when the file began.
    base: (KernelStats, Option<f64>),
}

pub(super) struct Recordings {
    policy: RecordPolicy,
    by_pid: HashMap<u32, Recording>,
}

impl Recordings {
    pub fn new(policy: RecordPolicy) -> Self {
        Self { policy, by_pid: HashMap::new() }
    }

    /// Begins a target's first file; the feed keeps ops for it from now on.
    /// A file that cannot be made is said and skipped: the target is still watched.
    pub fn begin(&mut self, t: &Target, feed: Feed, stats: KernelStats) -> Feed {
        match open(&self.policy, t, &t.meta, 0) {
            Some(rec) => {
                self.by_pid.insert(t.pid(), Recording { rec, part: 0, begun: t.started, base: (stats, t.cpu_start) });
                feed.recording()
            }
            None => feed,
        }
    }

    /// Writes each target's ops and figures so far, and moves a file that is
    /// past the policy's size or age on to the next.
    /// `now`: each target's counters and figures as of now, by PID.
    pub fn flush(&mut self, targets: &mut [Target], feeds: &mut crate::ingest::feed::Feeds, facts: &mut std::collections::BTreeMap<FileKey, BinaryFacts>, now: &HashMap<u32, (KernelStats, Progress)>) {
        let Self { policy, by_pid } = self;
        let mut dropped = Vec::new();
        for t in targets.iter_mut() {
            let pid = t.pid();
            let (Some(r), Some(feed), Some(f), Some((kernel, progress))) = (by_pid.get_mut(&pid), feeds.get_mut(pid), facts.get_mut(&t.key), now.get(&pid).cloned()) else { continue };
            let progress = rebase(progress, r, t);
            let written = r.rec.flush(feed, &mut f.for_target(t.meta.load_bias, &mut t.unresolved), &progress);
            if let Err(e) = written {
                eprintln!("gcprobe: warning: pid {pid}: recording stopped: {}", error_chain(&e));
                dropped.push(pid);
                continue;
            }
            let size = std::fs::metadata(r.rec.path()).map_or(0, |m| m.len());
            if size < policy.file_bytes && r.begun.elapsed() < policy.file_age {
                continue;
            }
            let Some(next) = next_file(policy, t, r.part + 1) else {
                dropped.push(pid);
                continue;
            };
            let old = std::mem::replace(r, Recording { rec: next, part: r.part + 1, begun: Instant::now(), base: (kernel, t.cpu_last) });
            let end = End { ended_by: EndedBy::Rotated, progress, program_exit: None };
            if let Err(e) = old.rec.finish(feed, &mut f.for_target(t.meta.load_bias, &mut t.unresolved), &end) {
                eprintln!("gcprobe: warning: pid {pid}: {}", error_chain(&e));
            }
            feed.continue_recording();
        }
        for pid in dropped {
            by_pid.remove(&pid);
        }
        self.enforce();
    }

    /// The target has gone: its last file is finished with how it ended.
    pub fn finish(&mut self, t: &mut Target, end: &End, feed: &mut Feed, facts: &mut BinaryFacts) {
        let Some(r) = self.by_pid.remove(&t.pid()) else { return };
        let end = End { ended_by: end.ended_by, progress: rebase(end.progress.clone(), &r, t), program_exit: end.program_exit };
        let mut view = facts.for_target(t.meta.load_bias, &mut t.unresolved);
        if let Err(e) = r.rec.finish(feed, &mut view, &end) {
            eprintln!("gcprobe: warning: pid {}: {}", t.pid(), error_chain(&e));
        }
        self.enforce();
    }

    /// Keeps the directory under its size, open files aside.
    fn enforce(&self) {
        let open: Vec<&Path> = self.by_pid.values().map(|r| r.rec.path()).collect();
        if let Err(e) = self.policy.enforce(&open) {
            eprintln!("gcprobe: warning: {}: {e}", self.policy.dir.display());
        }
    }
}

/// A target's file number `part`, begun with `meta`; one that cannot be
/// made is said and skipped (the target is still watched).
fn open(policy: &RecordPolicy, t: &Target, meta: &Meta, part: u32) -> Option<Recorder> {
    let path = policy.file_for(&t.process.exe_display, t.pid(), part);
    let made = Recorder::create(&path, false).and_then(|mut r| r.meta(meta).map(|()| r));
    made.map_err(|e| eprintln!("gcprobe: warning: pid {}: not recorded: {}", t.pid(), error_chain(&e))).ok()
}

/// The next file of a target, beginning now: its meta's clock starts here.
fn next_file(policy: &RecordPolicy, t: &Target, part: u32) -> Option<Recorder> {
    let mut meta = t.meta.clone();
    let offset = Instant::now().saturating_duration_since(t.started).as_nanos() as u64;
    meta.start_unix_ns += offset;
    meta.start_monotonic_ns += offset;
    open(policy, t, &meta, part)
}

/// A target's figures as of now, measured from where its file began.
fn rebase(mut p: Progress, r: &Recording, t: &Target) -> Progress {
    if r.part > 0 {
        p.elapsed_s = r.begun.elapsed().as_secs_f64();
        p.kernel = p.kernel.since(&r.base.0);
        p.target_cpu_s = t.cpu_last.zip(r.base.1).map(|(a, b)| a - b);
    }
    p
}
