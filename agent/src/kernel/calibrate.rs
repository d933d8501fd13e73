//! What one probe hit costs on this host, measured at start: the same uprobe
//! with our program, with the empty program, and with none, on a function in
//! gcprobe's own process. A uprobe hit costs ~0.3 µs on bare metal and
//! 0.8–25 µs in this project's VMs, by host and by the probed instruction,
//! so no constant could stand in for the measurement.
//!
//! The probed function is called with a synthetic frame-pointer chain as deep
//! as a typical Go allocation stack, so our program's walk does the same work
//! it does in the target.
use std::time::Duration;

use aya::maps::{MapData, RingBuf};

use gcprobe_common::{cookie, kind, TargetConfig};

use crate::kernel::{
    links::Attached,
    probes::{bpf_stats_on, AttachPoint, Kernel, Loader, ProbeError, Program, RunStats, Sizing},
    selfmap::{self_file_offset, thread_cpu, SelfMapError},
};

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("finding gcprobe's own calibration function")]
    SelfMap(#[from] SelfMapError),
    #[error("loading the calibration probe")]
    Probe(#[from] ProbeError),
    #[error("the calibration probe did not fire ({hits} of {calls} calls)")]
    NoHits { hits: u64, calls: u64 },
}

/// Per-hit costs on this host, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Our program, counting into the kernel map (most allocation hits).
    pub aggregated_ns: f64,
    /// Our program, sending a whole event (growslice, GC events, new stacks).
    pub event_ns: f64,
    /// The empty program: the trap alone.
    pub empty_ns: f64,
    /// The programs' own run time per hit, by the kernel's accounting,
    /// when `kernel.bpf_stats_enabled` is on (benchmarks): no trap, no
    /// clock noise of this thread's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_ns: Option<ProgramNs>,
}

/// The kernel's timing of each program's runs, nanoseconds per hit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProgramNs {
    pub aggregated: f64,
    pub event: f64,
    pub empty: f64,
}

impl Calibration {
    /// What the governor budgets per hit: the dearer of our two paths.
    pub fn cost_s(&self) -> f64 {
        self.aggregated_ns.max(self.event_ns) / 1e9
    }
}

/// Frames in the synthetic chain: a typical Go allocation stack
/// (mallocgc ← newobject ← user code ← … ← runtime.main ← goexit).
pub const DEPTH: usize = 10;
/// How far apart its frame records are, as in Go code (a frame holds the
/// function's spills and outgoing arguments: tens to a few hundred bytes),
/// repeated for deeper chains. The kernel program reads the stack in
/// chunks, so records packed together would measure a cheaper walk than
/// the target's.
const FRAME_BYTES: [usize; 10] = [48, 96, 160, 64, 224, 80, 128, 48, 96, 176];
/// How long a calibration measures: at start-up, 3 rounds of 300 calls per
/// function (a few milliseconds); benchmarks ask for more, for precision.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    pub calls: u64,
    pub rounds: usize,
}

impl Effort {
    pub const START_UP: Effort = Effort { calls: 300, rounds: 3 };
}

/// The session's object and its ring, before any target: when it holds our
/// program, calibration measures that one rather than load it again (the
/// verifier takes ~0.1 s over it here, per load).
pub type SessionObject<'k> = (&'k Kernel, &'k mut RingBuf<MapData>);

pub fn calibrate(loader: &mut Loader, session: Option<SessionObject<'_>>) -> Result<Calibration, CalibrateError> {
    calibrate_at_depth(loader, DEPTH, Effort::START_UP, session)
}

/// The same, with a synthetic stack `depth` frames deep (1 to MAX_FRAMES):
/// the benchmark's cost per frame walked.
pub fn calibrate_at_depth(loader: &mut Loader, depth: usize, effort: Effort, session: Option<SessionObject<'_>>) -> Result<Calibration, CalibrateError> {
    let Effort { calls, rounds } = effort;
    // Four functions: our program counting into the map, our program sending
    // whole events, the empty program, and none. Each attaches once: a
    // detach waits out an RCU grace period (~0.2 s here), too slow to repeat.
    let fns: [extern "C" fn(u64) -> u64; 4] = [point_agg, point_event, point_empty, point_bare];
    let off = |f: extern "C" fn(u64) -> u64| self_file_offset(f as *const () as u64);
    let (off_agg, off_event, off_empty) = (off(point_agg)?, off(point_event)?, off(point_empty)?);
    let pid = std::process::id();
    let walk = cookie::FLAG_WALK_STACK;
    let real_points = vec![
        AttachPoint { id: 0, file_offset: off_agg, cookie: cookie::encode(0, kind::MALLOC, walk | cookie::FLAG_AGGREGATE) },
        AttachPoint { id: 1, file_offset: off_event, cookie: cookie::encode(1, kind::MALLOC, walk) },
    ];
    let empty_points = vec![AttachPoint { id: 0, file_offset: off_empty, cookie: cookie::encode(0, kind::MALLOC, walk) }];
    // Objects of their own: the agent's has no target yet, and the empty
    // program is a second program at the same kind of point.
    let mut own = None;
    let (real_kernel, ring) = match session.filter(|(k, _)| k.program() == Program::Real) {
        Some(object) => object,
        None => {
            let (k, r) = own.insert(Kernel::load(loader, Program::Real, Sizing::Calibration)?);
            (&*k, r)
        }
    };
    let (empty_kernel, _ring2) = Kernel::load(loader, Program::Empty, Sizing::Calibration)?;
    let mut real = real_kernel.binary(real_points, false);
    real.add(real_kernel.register(pid, TargetConfig::default())?);
    let mut empty = empty_kernel.binary(empty_points, false);
    empty.add(empty_kernel.register(pid, TargetConfig::default())?);
    for (guard, ids) in [(&mut real, &[(0u32, off_agg), (1, off_event)][..]), (&mut empty, &[(0, off_empty)][..])] {
        if let Some((id, e)) = guard.attach(ids.iter().map(|i| i.0))?.into_iter().next() {
            let offset = ids.iter().find(|i| i.0 == id).map_or(0, |i| i.1);
            return Err(ProbeError::Attach { symbol: "gcprobe calibration point".into(), offset, source: e }.into());
        }
    }
    let chain = FrameChain::new(depth.max(1));
    let mut times: [Vec<Duration>; 4] = Default::default();
    // Per function: the kernel's run time and runs of the program it hits.
    let mut runs: [RunStats; 3] = Default::default();
    // Only when the kernel times runs (benchmarks): otherwise these are
    // procfs reads at every start-up for nothing.
    let kernels = if bpf_stats_on() { vec![real_kernel, real_kernel, &empty_kernel] } else { Vec::new() };
    for _ in 0..rounds {
        for (i, f) in fns.iter().enumerate() {
            let before = kernels.get(i).and_then(|k| k.run_stats());
            times[i].push(time_calls(&chain, *f, calls));
            if let (Some(b), Some(a)) = (before, kernels.get(i).and_then(|k| k.run_stats())) {
                runs[i].ns += a.ns.saturating_sub(b.ns);
                runs[i].runs += a.runs.saturating_sub(b.runs);
            }
            // Consume what the event path sent, as the session's reader
            // would: a ring left to fill would make the kernel wake a reader
            // on every event past the threshold, and the cost would be ours.
            while ring.next().is_some() {}
        }
    }
    let want = rounds as u64 * calls;
    for got in [hits(&real) / 2, hits(&empty)] {
        if got < want {
            return Err(CalibrateError::NoHits { hits: got, calls: want });
        }
    }
    // Detach both objects' probes together: one grace period.
    drop((real, empty));
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_nanos() as f64
    };
    let [mut agg, mut ev, mut emp, mut bare] = times;
    let bare = med(&mut bare);
    let per_hit = |v: &mut Vec<Duration>| ((med(v) - bare) / calls as f64).max(1.0);
    let each = |r: &RunStats| RunStats::default().ns_per_run_until(r);
    let program_ns = match runs.each_ref().map(each) {
        [Some(aggregated), Some(event), Some(empty)] => Some(ProgramNs { aggregated, event, empty }),
        _ => None,
    };
    Ok(Calibration { aggregated_ns: per_hit(&mut agg), event_ns: per_hit(&mut ev), empty_ns: per_hit(&mut emp), program_ns })
}

fn hits(a: &Attached) -> u64 {
    let s = a.stats();
    s.hits + s.empty_hits
}

/// This thread's CPU time for `calls` calls: the trap is charged to the
/// trapping thread, and CPU time leaves out time lost to other processes on
/// a shared machine, which wall time would not.
fn time_calls(chain: &FrameChain, f: extern "C" fn(u64) -> u64, calls: u64) -> Duration {
    let mut records = [0u64; CHAIN_WORDS];
    chain.lay_out(&mut records);
    let t = thread_cpu();
    for i in 0..calls {
        std::hint::black_box(FrameChain::call(&records, f, i));
    }
    thread_cpu().saturating_sub(t)
}


// The probed functions: trivial, distinct (so the linker cannot fold them
// into one address), real code in our text. Each begins with the instruction
// a Go probe sits on, past its function's stack check (plan.rs): the kernel
// emulates some instructions at a uprobe and single-steps the rest out of
// line, a second trap that cost ~25 µs a hit on this project's VMs against
// ~0.8 µs for an emulated `push rbp` (BENCHMARKS.md), so the calibration
// must trap on the same kind of instruction as the target. amd64: `PUSHQ
// BP` (arch/x86/kernel/uprobes.c emulates push); arm64: `MOVD.W R30,
// -N(RSP)`, a store stepped out of line (arch/arm64/kernel/probes/decode-insn.c).
macro_rules! point {
    ($name:ident, $k:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        extern "C" fn $name(_x: u64) -> u64 {
            std::arch::naked_asm!("push rbp", "mov rbp, rsp", concat!("imul rax, rdi, ", $k), "pop rbp", "ret")
        }
        #[cfg(target_arch = "aarch64")]
        #[unsafe(naked)]
        extern "C" fn $name(_x: u64) -> u64 {
            std::arch::naked_asm!("str x30, [sp, #-16]!", concat!("mov x1, #", $k), "mul x0, x0, x1", "ldr x30, [sp], #16", "ret")
        }
    };
}
point!(point_agg, 3);
point!(point_event, 5);
point!(point_empty, 7);
point!(point_bare, 11);

/// Words the deepest chain takes: MAX_FRAMES records at the widest gap.
const CHAIN_WORDS: usize = gcprobe_common::MAX_FRAMES * 224 / 8 + 2;

/// `depth` frame records `[next frame pointer, return address]` at rising
/// addresses, the last one ending the chain: what our walk follows in Go.
struct FrameChain {
    depth: usize,
}

impl FrameChain {
    fn new(depth: usize) -> Self {
        Self { depth: depth.min(gcprobe_common::MAX_FRAMES) }
    }

    /// Writes the chain into `records`, which lie on the caller's stack,
    /// within a KiB above the probed function's stack pointer (~960 bytes
    /// here): a Go caller's frame records lie just above it, where the
    /// program's first read of the stack finds them. A chain on the heap
    /// would cost the walk a read Go's does not.
    fn lay_out(&self, records: &mut [u64; CHAIN_WORDS]) {
        let gap = |i: usize| FRAME_BYTES[i % FRAME_BYTES.len()] / 8;
        let base = records.as_ptr() as u64;
        let mut at = 0;
        for i in 0..self.depth {
            let next = at + gap(i);
            records[at] = if i + 1 < self.depth { base + 8 * next as u64 } else { 0 };
            records[at + 1] = point_bare as *const () as u64 + 1 + i as u64;
            at = next;
        }
    }

    /// Calls the probed function with the frame pointer on our chain.
    #[cfg(target_arch = "x86_64")]
    fn call(records: &[u64; CHAIN_WORDS], f: extern "C" fn(u64) -> u64, x: u64) -> u64 {
        let out: u64;
        // SAFETY: rbp is saved and restored around the call; the callee is a
        // leaf that reads only its argument. Without `nostack` the stack is
        // call-aligned on entry; the push plus 8 keeps it aligned.
        unsafe {
            // Both operands in named registers: without a frame pointer
            // (release builds) the compiler may otherwise pick rbp for one,
            // which the chain overwrites before the call.
            std::arch::asm!(
                "push rbp",
                "sub rsp, 8",
                "mov rbp, rsi",
                "call rax",
                "add rsp, 8",
                "pop rbp",
                in("rsi") records.as_ptr(),
                inout("rax") f as usize => out,
                inout("rdi") x => _,
                clobber_abi("C"),
            );
        }
        out
    }

    #[cfg(target_arch = "aarch64")]
    fn call(records: &[u64; CHAIN_WORDS], f: extern "C" fn(u64) -> u64, x: u64) -> u64 {
        let out: u64;
        // SAFETY: x29/x30 are saved and restored around the call.
        unsafe {
            std::arch::asm!(
                "stp x29, x30, [sp, #-16]!",
                "mov x29, {chain}",
                "blr {f}",
                "ldp x29, x30, [sp], #16",
                chain = in(reg) records.as_ptr(),
                f = in(reg) f,
                inout("x0") x => out,
                clobber_abi("C"),
            );
        }
        out
    }
}

