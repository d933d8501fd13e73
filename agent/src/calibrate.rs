//! What one probe hit costs on this host, measured at start: the same uprobe
//! with our program, with the empty program, and with none, on a function in
//! gcprobe's own process. A uprobe hit costs ~0.3 µs on bare metal and
//! 5–16 µs in some VMs, so no constant could stand in for the measurement.
//!
//! The probed function is called with a synthetic frame-pointer chain as deep
//! as a typical Go allocation stack, so our program's walk does the same work
//! it does in the target.
use std::{
    path::Path,
    time::Duration,
};

use gcprobe_common::{cookie, kind, TargetConfig};

use crate::probes::{AttachPoint, Attached, ProbeError, Program};

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("finding gcprobe's own calibration function in /proc/self/maps")]
    SelfMaps(#[source] std::io::Error),
    #[error("gcprobe's calibration function at {addr:#x} is in no file-backed mapping")]
    NotMapped { addr: u64 },
    #[error("loading the calibration probe")]
    Probe(#[from] ProbeError),
    #[error("the calibration probe did not fire ({hits} of {calls} calls)")]
    NoHits { hits: u64, calls: u64 },
}

/// Per-hit costs on this host, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Our program, counting into the kernel map (most allocation hits).
    pub aggregated_ns: f64,
    /// Our program, sending a whole event (growslice, GC events, new stacks).
    pub event_ns: f64,
    /// The empty program: the trap alone.
    pub empty_ns: f64,
}

impl Calibration {
    /// What the governor budgets per hit: the dearer of our two paths.
    pub fn cost_s(&self) -> f64 {
        self.aggregated_ns.max(self.event_ns) / 1e9
    }
}

/// Frames in the synthetic chain: a typical Go allocation stack
/// (mallocgc ← newobject ← user code ← … ← runtime.main ← goexit).
const DEPTH: usize = 10;
const CALLS: u64 = 500;
const ROUNDS: usize = 5;

pub fn calibrate() -> Result<Calibration, CalibrateError> {
    let offset = self_file_offset(calibration_point as *const () as u64)?;
    let pid = std::process::id();
    let exe = Path::new("/proc/self/exe");
    let walk = cookie::FLAG_WALK_STACK;
    let points = vec![
        AttachPoint { id: 0, file_offset: offset, cookie: cookie::encode(0, kind::MALLOC, walk | cookie::FLAG_AGGREGATE) },
        AttachPoint { id: 1, file_offset: offset, cookie: cookie::encode(1, kind::MALLOC, walk) },
    ];
    let (mut real, mut ring) = Attached::load(exe, pid, TargetConfig::default(), points.clone(), Program::Real)?;
    let (mut empty, _ring2) = Attached::load(exe, pid, TargetConfig::default(), points, Program::Empty)?;
    let chain = FrameChain::new();

    let (mut bare, mut agg, mut ev, mut emp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare.push(time_calls(&chain));
        for (which, id) in [(0, 0), (0, 1), (1, 0)] {
            let (guard, out) = match (which, id) {
                (0, 0) => (&mut real, &mut agg),
                (0, _) => (&mut real, &mut ev),
                _ => (&mut empty, &mut emp),
            };
            let before = hits(guard);
            if let Some((_, e)) = guard.attach([id])?.into_iter().next() {
                return Err(ProbeError::Attach { symbol: "gcprobe calibration point".into(), offset, source: e }.into());
            }
            out.push(time_calls(&chain));
            guard.detach_some([id]);
            // Consume what the event path sent, as the session's reader
            // would: a ring left to fill would make the kernel wake a reader
            // on every event past the threshold, and the cost would be ours.
            while ring.next().is_some() {}
            let got = hits(guard) - before;
            if got < CALLS {
                return Err(CalibrateError::NoHits { hits: got, calls: CALLS });
            }
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_nanos() as f64
    };
    let bare = med(&mut bare);
    let per_hit = |v: &mut Vec<Duration>| ((med(v) - bare) / CALLS as f64).max(1.0);
    Ok(Calibration { aggregated_ns: per_hit(&mut agg), event_ns: per_hit(&mut ev), empty_ns: per_hit(&mut emp) })
}

fn hits(a: &Attached) -> u64 {
    let s = a.stats();
    s.hits + s.empty_hits
}

/// This thread's CPU time for CALLS calls: the trap is charged to the
/// trapping thread, and CPU time leaves out time lost to other processes on
/// a shared machine, which wall time would not.
fn time_calls(chain: &FrameChain) -> Duration {
    let t = thread_cpu();
    for i in 0..CALLS {
        std::hint::black_box(chain.call(i));
    }
    thread_cpu().saturating_sub(t)
}

fn thread_cpu() -> Duration {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The probed function: trivial, never inlined, a real symbol in our text.
#[inline(never)]
extern "C" fn calibration_point(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

/// `DEPTH` frame records `[next frame pointer, return address]` at rising
/// addresses, the last one ending the chain: what our walk follows in Go.
struct FrameChain {
    records: Box<[u64]>,
}

impl FrameChain {
    fn new() -> Self {
        let mut records = vec![0u64; 2 * DEPTH].into_boxed_slice();
        let base = records.as_ptr() as u64;
        for i in 0..DEPTH {
            records[2 * i] = if i + 1 < DEPTH { base + 16 * (i as u64 + 1) } else { 0 };
            records[2 * i + 1] = calibration_point as *const () as u64 + 1 + i as u64;
        }
        Self { records }
    }

    /// Calls the probed function with the frame pointer on our chain.
    #[cfg(target_arch = "x86_64")]
    fn call(&self, x: u64) -> u64 {
        let out: u64;
        // SAFETY: rbp is saved and restored around the call; the callee is a
        // leaf that reads only its argument. Without `nostack` the stack is
        // call-aligned on entry; the push plus 8 keeps it aligned.
        unsafe {
            std::arch::asm!(
                "push rbp",
                "sub rsp, 8",
                "mov rbp, {chain}",
                "call {f}",
                "add rsp, 8",
                "pop rbp",
                chain = in(reg) self.records.as_ptr(),
                f = sym calibration_point,
                inout("rdi") x => _,
                out("rax") out,
                clobber_abi("C"),
            );
        }
        out
    }

    #[cfg(target_arch = "aarch64")]
    fn call(&self, x: u64) -> u64 {
        let out: u64;
        // SAFETY: x29/x30 are saved and restored around the call.
        unsafe {
            std::arch::asm!(
                "stp x29, x30, [sp, #-16]!",
                "mov x29, {chain}",
                "bl {f}",
                "ldp x29, x30, [sp], #16",
                chain = in(reg) self.records.as_ptr(),
                f = sym calibration_point,
                inout("x0") x => out,
                clobber_abi("C"),
            );
        }
        out
    }
}

/// File offset of `addr` in our own executable, for the uprobe PMU.
fn self_file_offset(addr: u64) -> Result<u64, CalibrateError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(CalibrateError::SelfMaps)?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(inode)) = (f.next(), f.next(), f.next(), f.next(), f.next()) else { continue };
        if inode == "0" {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi), Ok(off)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16), u64::from_str_radix(off, 16)) else { continue };
        if (lo..hi).contains(&addr) {
            return Ok(addr - lo + off);
        }
    }
    Err(CalibrateError::NotMapped { addr })
}
