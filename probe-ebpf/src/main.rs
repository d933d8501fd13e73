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
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
    EbpfContext,
};
use core::ptr::addr_of_mut;
use gcprobe_common::{cookie, stat, RawEvent, TargetConfig, MAX_FRAMES};

/// Event stream to the agent. 16 MiB holds ~50k events: several seconds of a
/// busy allocator at this VM's uprobe cost, so the agent can fall behind briefly.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Host tgids being probed. Uprobes attach per binary (inode), so another
/// process running the same executable must be filtered out here.
/// Wake the agent only once this much is queued (or for a rare GC event):
/// a wakeup per allocation would cost a context switch per hit. The agent
/// also drains on a short timer, so a quiet target's events are not stuck.
const WAKEUP_BYTES: u64 = 256 << 10;

#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
fn bump(slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
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
        return Ok(());
    };
    let cfg = *cfg;
    bump(stat::HITS);

    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let flags = cookie::flags(ck);
    let caller = arch::entry_return_address(ctx)?;
    if flags & cookie::FLAG_SKIP_NESTED != 0 && caller >= cfg.nested_lo && caller < cfg.nested_hi {
        bump(stat::NESTED);
        return Ok(());
    }

    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        bump(stat::RINGBUF_FULL);
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at reserved ring-buffer memory of size_of::<RawEvent>();
    // every field is written before submit.
    unsafe {
        addr_of_mut!((*ev).kind).write(cookie::kind(ck));
        addr_of_mut!((*ev).probe_id).write(cookie::probe_id(ck));
        addr_of_mut!((*ev).tgid).write(tgid);
        addr_of_mut!((*ev).tid).write(pid_tgid as u32);
        addr_of_mut!((*ev).ktime_ns).write(bpf_ktime_get_ns());
        let mut args = arch::go_args(ctx);
        if cookie::kind(ck) == gcprobe_common::kind::GC_START && cfg.heap_live_addr != 0 {
            // gcStart takes a 3-word gcTrigger; the 5th slot carries the heap.
            args[4] = bpf_probe_read_user(cfg.heap_live_addr as *const u64).unwrap_or(0);
        }
        addr_of_mut!((*ev).args).write(args);
        addr_of_mut!((*ev)._pad).write(0);
        let frames = &mut *addr_of_mut!((*ev).frames);
        frames[0] = arch::pc(ctx);
        frames[1] = caller;
        let n = if flags & cookie::FLAG_WALK_STACK != 0 {
            walk_frame_pointers(arch::frame_pointer(ctx), frames)
        } else {
            2
        };
        let mut i = n;
        while i < MAX_FRAMES {
            frames[i] = 0;
            i += 1;
        }
        addr_of_mut!((*ev).nframes).write(n as u32);
    }
    let kind = cookie::kind(ck);
    let rare = kind != gcprobe_common::kind::MALLOC && kind != gcprobe_common::kind::GROWSLICE;
    if rare || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    } else {
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    }
    Ok(())
}

/// Follows Go's frame-pointer chain from the caller's frame: each record is
/// [saved FP, return address] on amd64 and arm64 alike. Bounded by MAX_FRAMES;
/// stops at a null or non-increasing FP (stacks grow down, so a walk that does
/// not go up is corrupt or crosses onto another stack).
#[inline(always)]
fn walk_frame_pointers(mut fp: u64, frames: &mut [u64; MAX_FRAMES]) -> usize {
    let mut n = 2;
    while n < MAX_FRAMES {
        if fp == 0 {
            break;
        }
        let (next_fp, ret) = match unsafe {
            (bpf_probe_read_user(fp as *const u64), bpf_probe_read_user((fp + 8) as *const u64))
        } {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                bump(stat::STACK_FAULT);
                break;
            }
        };
        if ret == 0 {
            break;
        }
        frames[n] = ret;
        n += 1;
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    n
}

/// Baseline for benchmarks: the cheapest possible program at the same attach
/// points, so the cost of the trap itself can be told from ours.
#[uprobe]
pub fn go_empty(_ctx: ProbeContext) -> u32 {
    bump(stat::EMPTY_HITS);
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
