//! A binary's uprobes and the targets they serve.
//!
//! [`Registration`] is one process's part of the kernel object: its entry
//! in the PID filter (`TARGETS`) and its row of counters. [`Attached`] holds
//! the uprobes of one executable file for its targets, in one of two ways:
//!
//! - one link set shared by every process of the file (`Scope::Every`),
//!   the kernel filter routing hits by tgid: probes placed once per binary.
//!   Only where every process running the file is a target, since a
//!   process outside `TARGETS` still pays the trap;
//! - one link set per target, each filtered by the kernel to its process
//!   (`Scope::One`), where other processes run the same file.
//!
//! Every link is held by its RAII guard (`UProbeLink`, or the link's fd):
//! dropping them detaches, on every exit path. A registration leaves the
//! filter when dropped.
use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    rc::Rc,
};

use aya::programs::{
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    ProgramError,
};
use gcprobe_common::{cookie, AggKey, AggValue, TargetConfig, MAX_TARGETS};

use super::{
    probes::{loaded_uprobe, AttachPoint, Kernel, KernelStats, Mechanism, ProbeError, Shared},
    selfmap::thread_cpu,
};

impl Kernel {
    /// Registers `pid` with its own settings and counters, and in the
    /// filter of links shared by every process of a binary.
    pub fn register(&self, pid: u32, mut cfg: TargetConfig) -> Result<Registration, ProbeError> {
        let sh = &self.shared;
        let slot = {
            let mut slots = sh.slots.borrow_mut();
            let slot = (1..=MAX_TARGETS).find(|s| !slots.contains(s)).ok_or(ProbeError::TooManyTargets { max: MAX_TARGETS })?;
            slots.insert(slot);
            slot
        };
        cfg.slot = slot;
        cfg.tgid = pid;
        let registered = sh.zero_row(slot).and_then(|()| {
            // Settings before the filter: a shared link's first hit finds them.
            sh.configs.borrow_mut().set(slot, cfg, 0).map_err(|source| ProbeError::Map { name: "CONFIGS", source })?;
            sh.targets.borrow_mut().insert(pid, slot, 0).map_err(|source| ProbeError::Map { name: "TARGETS", source })
        });
        if let Err(e) = registered {
            sh.slots.borrow_mut().remove(&slot);
            return Err(e);
        }
        Ok(Registration { pid, cfg, shared: Rc::clone(sh) })
    }

    /// A binary's probes at `points`, for the targets added to it: one link
    /// set for every process of the file when `shared_links`, else one per
    /// target. Nothing is attached yet (see [`Attached::attach`]).
    pub fn binary(&self, points: Vec<AttachPoint>, shared_links: bool) -> Attached {
        Attached::new(points, shared_links, Rc::clone(&self.shared))
    }

}

/// Probes whose attach failed, by plan id; the caller decides what is fatal.
pub type AttachFailures = Vec<(u32, ProgramError)>;

/// One target's entry in the kernel's filter and its counters' row.
pub struct Registration {
    pub(super) pid: u32,
    pub(super) cfg: TargetConfig,
    pub(super) shared: Rc<Shared>,
}

impl Registration {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Opens or shuts the gate of its bursted probes (`cookie::FLAG_BURST`):
    /// one map update, seen by every CPU's next hit.
    pub fn set_burst_open(&mut self, open: bool) -> Result<(), ProbeError> {
        self.cfg.burst_open = open as u32;
        self.shared.configs.borrow_mut().set(self.cfg.slot, self.cfg, 0).map_err(|source| ProbeError::Map { name: "CONFIGS", source })
    }

    /// This target's counters (the empty program's hits are the agent's).
    pub fn stats(&self) -> KernelStats {
        self.shared.stats_of(self.cfg.slot)
    }

    /// This target's allocation counts in the kernel's map: running totals per key.
    pub fn agg_totals(&self) -> Vec<(AggKey, AggValue)> {
        self.shared.agg_totals().into_iter().filter(|(k, _)| k.tgid == self.pid).collect()
    }
}

impl Drop for Registration {
    /// Takes the target out of the filter and frees its counters' row and
    /// its keys in the shared map, which would fill it for the targets still running.
    fn drop(&mut self) {
        self.shared.unregister(self.pid, self.cfg.slot);
    }
}

/// Which processes a link set's uprobes fire in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every process that runs the file (no kernel PID filter).
    Every,
    One(u32),
}

/// Uprobes of one scope. Declaration order is drop order.
struct LinkSet {
    scope: Scope,
    /// uprobe_multi links, each with the plan ids it holds.
    multi: Vec<(Vec<u32>, OwnedFd)>,
    perf: BTreeMap<u32, UProbeLink>,
}

impl LinkSet {
    fn new(scope: Scope) -> Self {
        Self { scope, multi: Vec::new(), perf: BTreeMap::new() }
    }

    fn has(&self, id: u32) -> bool {
        self.perf.contains_key(&id) || self.multi.iter().any(|(ids, _)| ids.contains(&id))
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.perf.keys().copied().chain(self.multi.iter().flat_map(|(ids, _)| ids.iter().copied()))
    }

    /// Detaches the given probes in order; a uprobe_multi link holding any
    /// goes whole. The uprobe_multi links are returned, to be closed.
    fn detach_in_order(&mut self, ids: &[u32]) -> Vec<OwnedFd> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.multi).into_iter().partition(|(held, _)| held.iter().any(|h| ids.contains(h)));
        self.multi = kept;
        for id in ids {
            drop(self.perf.remove(id));
        }
        gone.into_iter().map(|(_, fd)| fd).collect()
    }

    fn detach_all(&mut self) {
        self.multi.clear();
        detach_in_parallel(std::mem::take(&mut self.perf).into_values().collect());
    }
}

/// A binary's uprobes and the targets they serve (see the module's docs).
pub struct Attached {
    // Declaration order is drop order: links detach before the targets
    // leave the filter, and both before the object can unload.
    sets: Vec<LinkSet>,
    members: Vec<Registration>,
    points: Vec<AttachPoint>,
    /// One link set for every process of the file, or one per member.
    shared_links: bool,
    /// A shared set stays when the last member leaves (node mode: the
    /// binary's next process needs no attach; see [`Attached::linger`]).
    linger: bool,
    /// CPU nanoseconds spent by the threads that close links.
    background_cpu_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    shared: Rc<Shared>,
}

impl Attached {
    pub(super) fn new(points: Vec<AttachPoint>, shared_links: bool, shared: Rc<Shared>) -> Self {
        Self { sets: Vec::new(), members: Vec::new(), points, shared_links, linger: false, background_cpu_ns: Default::default(), shared }
    }

    /// Adds a target of this binary (already registered with the kernel).
    pub fn add(&mut self, r: Registration) {
        if !self.shared_links {
            self.sets.push(LinkSet::new(Scope::One(r.pid)));
        } else if self.sets.is_empty() {
            self.sets.push(LinkSet::new(Scope::Every));
        }
        self.members.push(r);
    }

    /// Keeps a shared link set when the last member leaves, until dropped:
    /// a binary whose processes come and go (a cron job, a CLI run by a
    /// script) is attached once, not once per process.
    pub fn linger(&mut self) {
        self.linger = true;
    }

    /// Whether its links stay when the last member leaves.
    pub fn lingers(&self) -> bool {
        self.linger
    }

    /// Whether one link set serves every process of the binary.
    pub fn shares_links(&self) -> bool {
        self.shared_links
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().map(|m| m.pid)
    }

    pub fn member(&self, pid: u32) -> Option<&Registration> {
        self.members.iter().find(|m| m.pid == pid)
    }

    /// Takes a target out: its own links detach (a shared set stays for the
    /// others, and goes with the last). Returns its registration, whose
    /// counters stay readable until it is dropped.
    pub fn remove(&mut self, pid: u32) -> Option<Registration> {
        let i = self.members.iter().position(|m| m.pid == pid)?;
        let r = self.members.remove(i);
        let last = self.members.is_empty() && !self.linger;
        let primer = self.prime_detach();
        for s in self.sets.iter_mut().filter(|s| last || s.scope == Scope::One(pid)) {
            s.detach_all();
        }
        self.sets.retain(|s| !last && s.scope != Scope::One(pid));
        drop(primer);
        Some(r)
    }

    /// A path to the binary as a living member's process sees it.
    fn exe(&self, scope: Scope) -> Option<PathBuf> {
        match scope {
            Scope::One(pid) => Some(proc_exe(pid)),
            Scope::Every => self.members.iter().map(|m| proc_exe(m.pid)).find(|p| std::fs::read_link(p).is_ok()),
        }
    }

    /// Attaches the given plan probes in every link set (those already
    /// attached are skipped), as one uprobe_multi link per set when the
    /// kernel has them. Per-probe failures are returned; a vanished target
    /// is an error naming it.
    pub fn attach(&mut self, ids: impl IntoIterator<Item = u32>) -> Result<AttachFailures, ProbeError> {
        let ids: Vec<u32> = ids.into_iter().collect();
        let mut failures = AttachFailures::new();
        for i in 0..self.sets.len() {
            let scope = self.sets[i].scope;
            let todo: Vec<AttachPoint> = ids.iter().filter(|&&id| !self.sets[i].has(id)).filter_map(|&id| self.points.iter().find(|p| p.id == id).copied()).collect();
            if todo.is_empty() {
                continue;
            }
            let gone = |s: Scope| ProbeError::TargetGone { pid: if let Scope::One(p) = s { p } else { 0 } };
            let exe = self.exe(scope).ok_or_else(|| gone(scope))?;
            // A link that fires in one process names its slot in the cookie.
            let (pid, slot) = match scope {
                Scope::One(p) => (p, self.member(p).map_or(0, |m| m.cfg.slot)),
                Scope::Every => (0, 0),
            };
            let todo: Vec<AttachPoint> = todo.into_iter().map(|p| AttachPoint { cookie: cookie::with_slot(p.cookie, slot), ..p }).collect();
            for f in attach_set(&self.shared, &mut self.sets[i], &exe, pid, &todo)? {
                if !failures.iter().any(|(id, _)| *id == f.0) {
                    failures.push(f);
                }
            }
        }
        Ok(failures)
    }

    /// From one link set for every process to one per target: a process
    /// that is not a target has started running the binary, and must not
    /// pay for traps. The new sets are in place before the shared one goes.
    pub fn unshare(&mut self) -> Result<AttachFailures, ProbeError> {
        let Some(i) = self.sets.iter().position(|s| s.scope == Scope::Every) else { return Ok(Vec::new()) };
        let ids: Vec<u32> = self.sets[i].ids().collect();
        self.shared_links = false;
        let mut old = self.sets.remove(i);
        for pid in self.pids().collect::<Vec<_>>() {
            self.sets.push(LinkSet::new(Scope::One(pid)));
        }
        let failures = self.attach(ids);
        let primer = self.prime_detach();
        old.detach_all();
        drop(primer);
        failures
    }

    /// Readies the kernel to remove breakpoints without waiting: returns a
    /// uprobe_multi link on a function of gcprobe's own that nothing calls,
    /// to be dropped after the detach it primes; None on perf-event uprobes.
    ///
    /// Every uprobe (un)registration takes the global `dup_mmap_sem` for
    /// writing (kernel/events/uprobes.c register_for_each_vma), and a
    /// percpu rwsem's writer waits an RCU grace period unless another writer
    /// was there within the last one (kernel/rcu/sync.c rcu_sync_enter). Our
    /// program leaves a uprobe_multi link before its breakpoints do, so
    /// during that wait the target traps for nothing and nobody counts it
    /// (~14-24% more target CPU at 1M allocations/s, measured). Attaching the
    /// primer takes the wait instead, while the burst's gate is still open.
    pub fn prime_detach(&self) -> Option<OwnedFd> {
        self.shared.prime_detach()
    }

    /// uprobe_multi links, or one perf-event uprobe per probe.
    pub fn mechanism(&self) -> Mechanism {
        self.shared.mechanism()
    }

    /// Opens or shuts the bursted probes' gate of every target.
    pub fn set_burst_open(&mut self, open: bool) -> Result<(), ProbeError> {
        self.members.iter_mut().try_for_each(|m| m.set_burst_open(open))
    }

    /// Detaches the given probes, in the given order. Only a detach makes
    /// the targets stop paying for them (disabling a perf event would
    /// not); a uprobe_multi link holding any of them goes whole.
    ///
    /// uprobe_multi links close on a thread of their own, primed (see
    /// [`Attached::prime_detach`]): the close waits out the kernel's grace
    /// periods, ~50-100 ms here, and the event loop serves other binaries'
    /// windows meanwhile. The gate is already shut, so what the targets
    /// trap meanwhile is counted as gated, not taken as data.
    ///
    /// Perf-event uprobes go one at a time, on this thread: the kernel
    /// serializes their teardown (perf_uprobe_destroy holds event_mutex
    /// through its RCU waits, ~0.1 s each here), so the k-th keeps trapping
    /// through k of them, and callers put the busiest first.
    pub fn detach_in_order(&mut self, ids: impl IntoIterator<Item = u32>) {
        let ids: Vec<u32> = ids.into_iter().collect();
        let closing: Vec<OwnedFd> = self.sets.iter_mut().flat_map(|s| s.detach_in_order(&ids)).collect();
        if closing.is_empty() {
            return;
        }
        let Some(primer) = self.shared.primer() else {
            drop(closing);
            return;
        };
        let cpu_ns = std::sync::Arc::clone(&self.background_cpu_ns);
        std::thread::spawn(move || {
            let p = primer.prime();
            drop(closing);
            drop(p);
            cpu_ns.fetch_add(thread_cpu().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// CPU time the detach threads have spent so far.
    pub fn background_cpu(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.background_cpu_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The plan ids attached (in any set).
    pub fn attached_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.sets.iter().flat_map(LinkSet::ids).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn is_attached(&self, id: u32) -> bool {
        self.sets.iter().any(|s| s.has(id))
    }

    /// The targets' counters summed: what their probes cost together.
    pub fn stats(&self) -> KernelStats {
        self.members.iter().map(Registration::stats).fold(KernelStats::default(), |a, b| a.plus(&b))
    }

    /// Detaches everything now rather than at drop, so no event arrives
    /// after the final drain. The targets stay registered until dropped.
    pub fn detach(&mut self) {
        let primer = self.prime_detach();
        for s in &mut self.sets {
            s.multi.clear();
        }
        drop(primer);
        detach_in_parallel(self.sets.iter_mut().flat_map(|s| std::mem::take(&mut s.perf).into_values()).collect());
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.detach();
    }
}

fn proc_exe(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// Attaches `todo` into `set` at `exe`, firing in `pid` only (0: every
/// process): one uprobe_multi link when the kernel has them, else one
/// perf-event uprobe per point.
fn attach_set(shared: &Shared, set: &mut LinkSet, exe: &Path, pid: u32, todo: &[AttachPoint]) -> Result<AttachFailures, ProbeError> {
    let gone = || pid != 0 && target_gone(pid);
    if let Some(multi) = shared.multi.borrow().as_ref() {
        let offsets: Vec<u64> = todo.iter().map(|p| p.file_offset).collect();
        let cookies: Vec<u64> = todo.iter().map(|p| p.cookie).collect();
        match multi.attach(exe, &offsets, &cookies, pid) {
            Ok(link) => {
                set.multi.push((todo.iter().map(|p| p.id).collect(), link));
                return Ok(Vec::new());
            }
            Err(_) if gone() => return Err(ProbeError::TargetGone { pid }),
            // One bad point fails the whole link: one at a time below
            // names it. If they all attach that way, this kernel cannot
            // link uprobe_multi, and the rest of the agent does without.
            Err(e) => log::debug!("uprobe_multi link: {}", crate::error::error_chain(&e)),
        }
    }
    let program = shared.program;
    let name = program.name();
    let mut ebpf = shared.ebpf.borrow_mut();
    let prog = loaded_uprobe(&mut ebpf, program)?;
    let scope = match NonZeroU32::new(pid) {
        Some(p) => UProbeScope::OneProcess(p),
        None => UProbeScope::AllProcesses,
    };
    let mut failures = Vec::new();
    for p in todo {
        let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(p.file_offset), cookie: Some(p.cookie) };
        match prog.attach(point, exe, scope) {
            Ok(link_id) => {
                let link = prog.take_link(link_id).map_err(|source| ProbeError::Program { name, source })?;
                set.perf.insert(p.id, link);
            }
            Err(_) if gone() => return Err(ProbeError::TargetGone { pid }),
            Err(e) => failures.push((p.id, e)),
        }
    }
    drop(ebpf);
    if failures.is_empty() {
        *shared.multi.borrow_mut() = None;
    }
    Ok(failures)
}

/// At the end of a session, order does not matter and the agent should not
/// wait longer than it must: threads overlap what the kernel lets overlap.
fn detach_in_parallel(links: Vec<UProbeLink>) {
    if links.len() < 2 {
        drop(links);
        return;
    }
    std::thread::scope(|s| {
        for link in links {
            s.spawn(move || drop(link));
        }
    });
}

/// A zombie keeps /proc/PID but not its exe: gone either way.
fn target_gone(pid: u32) -> bool {
    std::fs::read_link(proc_exe(pid)).is_err()
}
