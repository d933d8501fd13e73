//! gcprobe's kernel programs: uprobes on the Go runtime.
//!
//! One program, `go_entry`, serves every attach point. The attach cookie
//! (see `gcprobe_common::cookie`) carries the probe id, its kind and flags, so
//! the per-hit work is: PID filter, optional nested-call check, reserve, copy
//! five registers, bounded frame-pointer walk, submit. No uretprobes anywhere:
//! Go moves goroutine stacks and a patched return address crashes the target.
#![no_std]
#![no_main]

mod arch;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_get_attach_cookie},
    macros::{map, uprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
    EbpfContext, Global,
};
use aya_log_ebpf::{info, warn};
use gcprobe_common::{cookie, event_flag, kind, size_bucket, stat, AggKey, AggValue, EventHeader, RawEvent, TargetConfig, TargetStats, MAX_ARGS, MAX_FRAMES, MAX_TARGETS};

/// Event stream to the agent, shared by every target. Most allocation
/// hits are counted in `AGG`, not sent; 4 MiB holds ~25k whole records,
/// over half a second of a growslice-heavy target here, while the agent
/// drains at 256 KiB. Its pages are mapped into the agent (twice, for the
/// ring's wrap-around), so they are the agent's resident memory too.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Wake the agent only once this much is queued: a wakeup per event would
/// cost a context switch per hit. The agent also drains on a short timer,
/// so a quiet target's events are not stuck.
const WAKEUP_BYTES: u64 = 256 << 10;

/// Host tgids being probed. Uprobes attach per binary (inode), so another
/// process running the same executable must be filtered out here.
#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

/// Counters per target, per CPU: row `TargetConfig::slot`, row 0 the agent's
/// own. A row is one lookup per hit however many counters the hit bumps.
#[map]
static STATS: PerCpuArray<TargetStats> = PerCpuArray::with_max_entries(MAX_TARGETS + 1, 0);

/// Allocation counts by (stack, probe, size bucket), per CPU. Replaces a
/// ring-buffer record per hit with a map update; a key's first hit also sends
/// its stack. Not LRU: eviction would lose counts silently, so a full map
/// falls back to whole events (stat::AGG_FULL).
#[map]
static AGG: PerCpuHashMap<AggKey, AggValue> = PerCpuHashMap::with_max_entries(1 << 14, 0);

/// Where a record is assembled before `bpf_ringbuf_output` copies its used
/// prefix: reserve needs a constant size, and most stacks are far shorter
/// than MAX_FRAMES.
#[map]
static SCRATCH: PerCpuArray<RawEvent> = PerCpuArray::with_max_entries(1, 0);

/// 1 when the agent runs with --log-probes. A global lands in .rodata, which
/// the loader freezes: the verifier knows its value and, when it is 0,
/// removes every log call (see `diagnose`).
#[unsafe(no_mangle)]
static LOG_PROBES: Global<u32> = Global::new(0);

/// What --log-probes reports: rare events, each counted per CPU in LOG_COUNTS.
#[derive(Clone, Copy)]
enum Diag {
    /// A frame-pointer record could not be read: (address, frame index).
    StackFault,
    /// AGG had no room for a new key: (cookie, stack id).
    AggFull,
    /// A bursted probe hit while its gate was shut: (cookie, 0).
    Gated,
    /// A cookie whose kind is past kind::MAX: (cookie, 0).
    BadCookie,
}

/// Only touched with LOG_PROBES set; STATS keeps the counts for the report.
#[map]
static LOG_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// Logs `what` with --log-probes. Only the check is inline: the record is
/// built in a function of its own, so the hot path's registers and stack
/// barely change, and without the flag the verifier removes the call.
#[inline(always)]
fn diagnose(ctx: &ProbeContext, what: Diag, a: u64, b: u64) {
    if LOG_PROBES.load() != 0 {
        log_diagnostic(ctx, what, a, b);
    }
}

/// Rate-limited: logs when this CPU's count of `what` reaches a power of
/// two, so an event that recurs on every hit (a shut gate, a full map) is
/// logged about log2(n) times, not n times. One function for every call
/// site: the records' code once, not four times.
#[cold]
#[inline(never)]
fn log_diagnostic(ctx: &ProbeContext, what: Diag, a: u64, b: u64) {
    let Some(p) = LOG_COUNTS.get_ptr_mut(what as u32) else { return };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let n = unsafe {
        *p += 1;
        *p
    };
    if !n.is_power_of_two() {
        return;
    }
    // Fetched here rather than passed: one value fewer for the hot path to keep.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match what {
        Diag::StackFault => warn!(ctx, "frame walk fault at {:x}, frame {}, tgid {} (#{} on this CPU)", a, b, tgid, n),
        Diag::AggFull => warn!(ctx, "AGG map full: probe {} stack {:x} sent as a whole event, tgid {} (#{} on this CPU)", cookie::probe_id(a), b, tgid, n),
        Diag::Gated => info!(ctx, "gated hit: probe {} kind {} tgid {} (#{} on this CPU)", cookie::probe_id(a), cookie::kind(a), tgid, n),
        Diag::BadCookie => warn!(ctx, "unexpected cookie {:x}: kind {} > {}, tgid {} (#{} on this CPU)", a, cookie::kind(a), kind::MAX, tgid, n),
    }
}

/// One target's counters on this CPU.
struct Counters(*mut TargetStats);

impl Counters {
    #[inline(always)]
    fn row(slot: u32) -> Result<Self, i64> {
        STATS.get_ptr_mut(slot).map(Counters).ok_or(-1)
    }

    #[inline(always)]
    fn bump(&self, stat: u32) {
        // SAFETY: this CPU's row; the kernel runs one tracing program at a
        // time per CPU (bpf_prog_active), so nothing else writes it now.
        if let Some(c) = unsafe { (*self.0).counts.get_mut(stat as usize) } {
            *c += 1;
        }
    }
}

#[uprobe]
pub fn go_entry(ctx: ProbeContext) -> u32 {
    let _ = try_go_entry(&ctx);
    0
}

fn try_go_entry(ctx: &ProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: value is Copy and only read.
    let Some(cfg) = (unsafe { TARGETS.get(tgid) }) else {
        // Only a link shared by every process of a binary lets one in: the
        // agent watches this count to see a process that is not its target.
        Counters::row(stat::AGENT_SLOT)?.bump(stat::FOREIGN);
        return Ok(());
    };
    let cfg = *cfg;
    let stats = Counters::row(cfg.slot)?;

    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let flags = cookie::flags(ck);
    let kind = cookie::kind(ck);
    // The per-kind counters have kind::MAX + 1 slots each; a cookie the
    // agent never writes must not index past them.
    if kind > kind::MAX {
        diagnose(ctx, Diag::BadCookie, ck, 0);
        return Ok(());
    }
    stats.bump(stat::HITS_BY_KIND + kind);
    if flags & cookie::FLAG_BURST != 0 && cfg.burst_open == 0 {
        stats.bump(stat::GATED_BY_KIND + kind);
        diagnose(ctx, Diag::Gated, ck, 0);
        return Ok(());
    }
    let caller = arch::entry_return_address(ctx)?;
    if flags & cookie::FLAG_SKIP_NESTED != 0 && caller >= cfg.nested_lo && caller < cfg.nested_hi {
        stats.bump(stat::NESTED);
        return Ok(());
    }

    let ev = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let ev = unsafe { &mut *ev };
    let mut args = arch::go_args(ctx);
    let mut event_flags = 0;
    if kind == kind::GC_START || kind == kind::STW_STOP || kind == kind::STW_START {
        // The heap at each pause, in slots these functions' arguments do
        // not use; a flag says a slot was read, so a register's leftover is
        // never taken for the heap.
        event_flags |= read_into(&mut args, event_flag::HEAP_LIVE_SLOT, cfg.heap_live_addr, event_flag::HEAP_LIVE);
        event_flags |= read_into(&mut args, event_flag::HEAP_GOAL_SLOT, cfg.heap_goal_addr, event_flag::HEAP_GOAL);
    }
    ev.frames[0] = arch::pc(ctx);
    ev.frames[1] = caller;
    // An allocation growslice makes: its stack is growslice's, which the
    // growslice event just before it on this thread carries, so the agent
    // joins the two and the kernel walks nothing (see `Aggregator::add`).
    let in_growslice = caller >= cfg.pair_lo && caller < cfg.pair_hi;
    let (n, stack_id) = if flags & cookie::FLAG_WALK_STACK != 0 && !in_growslice {
        walk_frame_pointers(ctx, arch::frame_pointer(ctx), &mut ev.frames, caller, &stats)
    } else {
        (2, 0)
    };
    let mut id = 0;
    if flags & cookie::FLAG_AGGREGATE != 0 && !in_growslice {
        let size = args[0];
        let key = AggKey { stack_id, probe_id: cookie::probe_id(ck), size_bucket: size_bucket(size), tgid, _pad: 0 };
        if count_into(&key, size, &stats) {
            return Ok(());
        }
        if AGG.insert(&key, &AggValue { count: 1, bytes: size }, BPF_NOEXIST as u64).is_ok() {
            stats.bump(stat::AGGREGATED);
            event_flags |= event_flag::STACK_ONLY;
            id = stack_id;
        } else if count_into(&key, size, &stats) {
            // Another CPU created the key between our lookup and insert.
            return Ok(());
        } else {
            stats.bump(stat::AGG_FULL);
            diagnose(ctx, Diag::AggFull, ck, stack_id);
        }
    }

    ev.header = EventHeader {
        kind,
        probe_id: cookie::probe_id(ck),
        tgid,
        tid: pid_tgid as u32,
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        args,
        stack_id: id,
        nframes: n as u32,
        flags: event_flags,
    };
    // No kind forces a wakeup: a program collecting hundreds of times a
    // second makes GC events as frequent as allocations, and a wakeup costs
    // the target a context switch. The agent's 200 ms drain bounds latency.
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    // Send only the frames in use: header words plus n.
    let words = core::mem::size_of::<EventHeader>() / 8 + n;
    // SAFETY: RawEvent is repr(C) u64-aligned POD; the view covers it exactly.
    let all = unsafe { &*(ev as *const RawEvent as *const [u64; core::mem::size_of::<RawEvent>() / 8]) };
    if words > all.len() {
        return Err(-1);
    }
    if EVENTS.output::<[u64]>(&all[..words], wake as u64).is_err() {
        stats.bump(stat::RINGBUF_FULL);
        return Err(-1);
    }
    Ok(())
}

/// Reads the target's u64 at `addr` (never writes it) into `args[slot]`;
/// returns `flag` when it did.
#[inline(always)]
fn read_into(args: &mut [u64; MAX_ARGS], slot: usize, addr: u64, flag: u32) -> u32 {
    if addr == 0 || slot >= MAX_ARGS {
        return 0;
    }
    match unsafe { bpf_probe_read_user(addr as *const u64) } {
        Ok(v) => {
            args[slot] = v;
            flag
        }
        Err(_) => 0,
    }
}

/// Adds one hit to `key`'s per-CPU value; false when the key is absent.
#[inline(always)]
fn count_into(key: &AggKey, size: u64, stats: &Counters) -> bool {
    let Some(v) = AGG.get_ptr_mut(key) else { return false };
    // SAFETY: this CPU's value. Plain adds suffice: the kernel runs one
    // tracing program at a time per CPU (bpf_prog_active in trace_call_bpf),
    // so nothing else updates this slot while we do.
    unsafe {
        (*v).count += 1;
        (*v).bytes += size;
    }
    stats.bump(stat::AGGREGATED);
    true
}

/// Bytes of stack read at once by the frame walk: most Go frames are tens
/// to a few hundred bytes, so one read holds several frame records. A
/// power of two (lengths are masked by CHUNK - 1 for the verifier).
const CHUNK: usize = 1024;
const CHUNK_WORDS: usize = CHUNK / 8;

/// Per-CPU copy of the stack the walk is reading.
#[map]
static STACK_CHUNK: PerCpuArray<[u64; CHUNK_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Follows Go's frame-pointer chain from the caller's frame: each record is
/// [saved FP, return address] on amd64 and arm64 alike. The stack is read
/// CHUNK bytes at a time (to the page's end where a chunk would cross the
/// end of the mapping), and records inside the last chunk cost no further
/// read: 1 KiB holds most of a Go allocation stack's records, and a helper
/// call per record was half of a hit's cost (measured by calibration: ~1.3
/// µs over the empty program per 10-frame hit before, ~0.5 µs after).
/// Bounded by MAX_FRAMES; stops at a null or non-increasing FP (stacks grow
/// down, so a walk that does not go up is corrupt or crosses onto another
/// stack). Returns the frame count and a hash of `frames[1..]` (the caller on).
#[inline(always)]
fn walk_frame_pointers(ctx: &ProbeContext, mut fp: u64, frames: &mut [u64; MAX_FRAMES], caller: u64, stats: &Counters) -> (usize, u64) {
    let mut n = 2;
    let mut h = mix(0x9e37_79b9_7f4a_7c15, caller);
    let Some(chunk) = STACK_CHUNK.get_ptr_mut(0) else { return (n, h | 1) };
    // SAFETY: this CPU's slot, ours for the duration of the program.
    let chunk = unsafe { &mut *chunk };
    // The chunk holds the stack from `base`, `valid` bytes of it.
    let (mut base, mut valid) = (0u64, 0u64);
    while n < MAX_FRAMES {
        if fp == 0 {
            break;
        }
        let mut off = fp.wrapping_sub(base);
        if off + 16 > valid || off & 7 != 0 {
            valid = read_chunk(chunk, fp);
            if valid == 0 {
                stats.bump(stat::STACK_FAULT);
                diagnose(ctx, Diag::StackFault, fp, n as u64);
                break;
            }
            base = fp;
            off = 0;
        }
        // Masked, so the verifier sees both indices inside the chunk; the
        // check above already keeps the record whole within `valid`.
        let i = (off >> 3) as usize & (CHUNK_WORDS - 1);
        if i >= CHUNK_WORDS - 1 {
            break;
        }
        let (next_fp, ret) = (chunk[i], chunk[(i + 1) & (CHUNK_WORDS - 1)]);
        if ret == 0 {
            break;
        }
        frames[n] = ret;
        h = mix(h, ret);
        n += 1;
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    // 0 means "not aggregated" in EventHeader::stack_id.
    (n, h | 1)
}

/// Reads the stack at `at` into `chunk`: CHUNK bytes, or up to the end of
/// its page where the chunk would run past the mapping (the top of a
/// thread's stack). Returns the bytes read, 0 when not even one record
/// could be.
#[inline(always)]
fn read_chunk(chunk: &mut [u64; CHUNK_WORDS], at: u64) -> u64 {
    // SAFETY: a byte view of the same per-CPU slot.
    let bytes = unsafe { core::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, CHUNK) };
    if unsafe { bpf_probe_read_user_buf(at as *const u8, bytes) }.is_ok() {
        return CHUNK as u64;
    }
    const PAGE: u64 = 4096;
    // Masked so the verifier sees a length within the chunk.
    let to_page_end = ((PAGE - (at & (PAGE - 1))) as usize) & (CHUNK - 1);
    if to_page_end < 16 {
        return 0;
    }
    match unsafe { bpf_probe_read_user_buf(at as *const u8, &mut bytes[..to_page_end]) } {
        Ok(()) => to_page_end as u64,
        Err(_) => 0,
    }
}

#[inline(always)]
fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
}

/// Baseline for benchmarks: the cheapest possible program at the same attach
/// points, so the cost of the trap itself can be told from ours.
#[uprobe]
pub fn go_empty(_ctx: ProbeContext) -> u32 {
    if let Ok(c) = Counters::row(stat::AGENT_SLOT) {
        c.bump(stat::EMPTY_HITS);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
