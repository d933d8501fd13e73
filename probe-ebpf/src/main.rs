//! gcprobe's kernel programs: uprobes on the Go runtime.
//!
//! One program, `go_entry`, serves every attach point. The attach cookie
//! (see `gcprobe_common::cookie`) carries the probe id, its kind and flags, so
//! the per-hit work is: PID filter, optional nested-call check, reserve, copy
//! five registers, bounded frame-pointer walk, submit. No uretprobes anywhere:
//! Go moves goroutine stacks and a patched return address crashes the target;
//! where a function's end matters, a probe sits on the instruction after its
//! call instead (`kind::STW_RESUMED`).
#![no_std]
#![no_main]

mod arch;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_get_attach_cookie},
    macros::{btf_tracepoint, map, raw_tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::{info, warn};
use gcprobe_common::{
    AGG_WAYS, AggKey, AggSlot, AggValue, CallersRead, EventHeader, ExecEvent, HEADER_WORDS, MAX_ARGS, MAX_FRAMES, MAX_TARGETS, PAIRED_ALLOC_FRAMES, PendingGrowth, RawEvent, TargetConfig, TargetStats, agg_set,
    at_function_entry, cookie, event_flag, goroutine_key, grows_in_buffer, is_timed, kind, names_os_thread, size_bucket, stat,
};

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

/// Records sent by this CPU: the ring's fill is checked every
/// WAKE_CHECK_EVERY of them, not each time (a helper call, ~50 ns here).
/// Past the threshold that lets at most that many records per CPU more
/// queue before the agent wakes: a few KiB of a 4 MiB ring.
#[map]
static SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
const WAKE_CHECK_EVERY: u64 = 16;

/// Whether this record should check the ring's fill.
#[inline(always)]
fn wake_check_due() -> bool {
    let Some(n) = SENT.get_ptr_mut(0) else { return true };
    // SAFETY: this CPU's counter; a lost increment only shifts the check.
    unsafe {
        *n += 1;
        *n % WAKE_CHECK_EVERY == 0
    }
}

/// Host tgid → slot, for links shared by every process of a binary: a
/// process outside it is not a target. Links filtered by the kernel to one
/// process carry its slot in the cookie and never look here.
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

/// Each target's settings, by slot: an array lookup is inlined by the
/// verifier (no helper call).
#[map]
static CONFIGS: Array<TargetConfig> = Array::with_max_entries(MAX_TARGETS + 1, 0);

/// Counters per target, per CPU: row `TargetConfig::slot`, row 0 the agent's
/// own. A row is one lookup per hit however many counters the hit bumps.
#[map]
static STATS: PerCpuArray<TargetStats> = PerCpuArray::with_max_entries(MAX_TARGETS + 1, 0);

/// Allocation counts by (stack, probe, size bucket, process): see
/// `AggSlot`. Each CPU owns AGG_SLOTS_PER_CPU slots; the agent sizes the
/// array for every possible CPU and maps it to read the counts. Not LRU:
/// eviction would lose counts silently, so a full set falls back to whole
/// events (stat::AGG_FULL).
#[map]
static AGG: Array<AggSlot> = Array::with_max_entries(1 << 12, BPF_F_MMAPABLE);

/// Slots of AGG per CPU, a power of two: the agent sets it at load (frozen
/// .rodata, so the verifier knows it).
#[unsafe(no_mangle)]
static AGG_SLOTS_PER_CPU: Global<u32> = Global::new(1 << 12);

/// Per CPU, a growslice's record awaiting the allocation it makes (see
/// `PendingGrowth`): the pair goes out in one record.
#[map]
static PENDING: PerCpuArray<PendingGrowth> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, the last growth entry: tells the inner call of a growslice
/// variant from a growth of its own (see `inner_growth`).
#[map]
static LAST_GROWTH: PerCpuArray<GrowthCall> = PerCpuArray::with_max_entries(1, 0);

/// A growth entry's goroutine, stack pointer and first five arguments, and
/// whether it grew into its caller's stack buffer (sent at once, unheld).
#[repr(C)]
#[derive(Clone, Copy)]
struct GrowthCall {
    goroutine: u64,
    sp: u64,
    in_buffer: u64,
    args: [u64; MAX_ARGS],
}

/// Which of growslice's calls to mallocgc each CPU has sent the return
/// address of, per target slot (see `CallersRead`).
#[map]
static CALLERS_READ: PerCpuArray<CallersRead> = PerCpuArray::with_max_entries(MAX_TARGETS + 1, 0);

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
    /// Both slots of a new key's set in AGG were taken: (cookie, stack id).
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
        Diag::AggFull => warn!(ctx, "AGG set full: probe {} stack {:x} sent as a whole event, tgid {} (#{} on this CPU)", cookie::probe_id(a), b, tgid, n),
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
        // SAFETY: this CPU's row; one hit of ours runs on a CPU at a time
        // (RUNNING), and a lost increment from the empty program is harmless.
        if let Some(c) = unsafe { (*self.0).counts.get_mut(stat as usize) } {
            *c += 1;
        }
    }
}

/// 1 while our program runs on this CPU (see stat::OVERLAPPED): the per-CPU
/// records (SCRATCH, PENDING, STACK_CHUNK, AGG slots) are one hit's at a time.
#[map]
static RUNNING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[uprobe]
pub fn go_entry(ctx: ProbeContext) -> u32 {
    let _ = try_go_entry(&ctx);
    0
}

fn try_go_entry(ctx: &ProbeContext) -> Result<(), i64> {
    let ck = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(slot) = target_slot(ck)? else {
        // Only a link shared by every process of a binary lets one in: the
        // agent watches this count to see a process that is not its target.
        Counters::row(stat::AGENT_SLOT)?.bump(stat::FOREIGN);
        return Ok(());
    };
    let cfg = *CONFIGS.get(slot).ok_or(-1i64)?;
    let stats = Counters::row(slot)?;

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
    let running = RUNNING.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: this CPU's flag. A hit that preempts ours on this CPU sees it
    // set; ours resumes on this CPU (migration is disabled) and clears it.
    unsafe {
        if *running != 0 {
            stats.bump(stat::OVERLAPPED);
            return Ok(());
        }
        *running = 1;
    }
    let r = record_hit(ctx, ck, slot, &cfg, &stats);
    // SAFETY: as above.
    unsafe { *running = 0 };
    r
}

/// A hit that passed the filters: sent with or as a growth, counted in
/// AGG, or sent whole. Uses this CPU's records, which are its alone.
#[inline(always)]
fn record_hit(ctx: &ProbeContext, ck: u64, slot: u32, cfg: &TargetConfig, stats: &Counters) -> Result<(), i64> {
    let (kind, flags) = (cookie::kind(ck), cookie::flags(ck));
    let g = arch::goroutine(ctx);
    let pending = PENDING.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: this CPU's slot; one program at a time writes it (see count_in_agg).
    let pending = unsafe { &mut *pending };
    // This goroutine's growth waits on this CPU: the hit is most likely the
    // allocation growslice makes next (nothing allocates between its entry
    // and mallocgc), sent with it.
    if kind != kind::GROWSLICE && g != 0 && pending.goroutine == g && complete_growth(ctx, ck, cfg, slot, stats, g, pending)? {
        return Ok(());
    }
    // Decided before the walk: an inner call costs no stack read.
    let in_buffer = kind == kind::GROWSLICE && flags & cookie::FLAG_GROW_BUF != 0 && grows_in_buffer(arch::go_args(ctx)[1], arch::grow_buf_len(ctx));
    if kind == kind::GROWSLICE && inner_growth(ctx, g, pending, in_buffer)? {
        stats.bump(stat::NESTED);
        return Ok(());
    }
    let walk = flags & cookie::FLAG_WALK_STACK != 0;
    let chunk = STACK_CHUNK.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: this CPU's slot, ours for the duration of the program.
    let chunk = unsafe { &mut *chunk };
    // A walking probe reads the caller with the stack's first chunk: one
    // helper call where there were two. A return site has no caller to read.
    let (caller, mut window) = if at_function_entry(kind) { entry_caller(ctx, walk.then_some(&mut *chunk))? } else { (0, Window::EMPTY) };
    if flags & cookie::FLAG_SKIP_NESTED != 0 && caller >= cfg.nested_lo && caller < cfg.nested_hi {
        stats.bump(stat::NESTED);
        return Ok(());
    }
    if kind == kind::GROWSLICE {
        return hold_growth(ctx, ck, cfg, slot, stats, chunk, &mut window, caller, g, walk, pending, in_buffer);
    }
    send_or_count(ctx, ck, cfg, stats, chunk, &mut window, caller, g, walk, in_growslice(cfg, caller))
}

/// Whether this growth entry is the inner call of the one before it on
/// this CPU: Go 1.26+'s growsliceNoAlias and growsliceBuf call growslice,
/// and growsliceBufNoAlias calls growsliceBuf, each passing its first five
/// arguments on unchanged (runtime/slice.go), deeper on the same
/// goroutine's stack, while the outer growth still waits for its
/// allocation or grew into the stack buffer. Such a growth is counted
/// once, by the outer probe; the held growth's stack pointer moves to the
/// inner frame, from which the allocation is called (see PendingGrowth::sp).
#[inline(always)]
fn inner_growth(ctx: &ProbeContext, g: u64, pending: &mut PendingGrowth, in_buffer: bool) -> Result<bool, i64> {
    let last = LAST_GROWTH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: this CPU's slot, ours for the duration of the program (RUNNING).
    let last = unsafe { &mut *last };
    let (args, sp) = (arch::go_args(ctx), arch::stack_pointer(ctx));
    let open = pending.goroutine == g || last.in_buffer != 0;
    // Word by word: an array comparison may become a bcmp call, which BPF has not.
    let same = (0..MAX_ARGS).all(|i| last.args[i] == args[i]);
    if g != 0 && last.goroutine == g && open && sp < last.sp && same {
        last.sp = sp;
        if pending.goroutine == g {
            pending.sp = sp;
        }
        return Ok(true);
    }
    *last = GrowthCall { goroutine: g, sp, in_buffer: in_buffer as u64, args };
    Ok(false)
}

/// Whether `pc` lies in the target's runtime.growslice.
#[inline(always)]
fn in_growslice(cfg: &TargetConfig, pc: u64) -> bool {
    pc >= cfg.pair_lo && pc < cfg.pair_hi
}

/// A hit's record, but for the frames. The thread id and the clock are a
/// helper call each (~50 ns here): only the kinds whose figures use them
/// pay for them.
#[inline(always)]
fn header(ck: u64, cfg: &TargetConfig, g: u64, args: [u64; MAX_ARGS], stack_id: u64, nframes: usize, flags: u32) -> EventHeader {
    let kind = cookie::kind(ck);
    let thread = if names_os_thread(kind) { bpf_get_current_pid_tgid() as u32 } else { goroutine_key(g) };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let ktime_ns = if is_timed(kind) { unsafe { bpf_ktime_get_ns() } } else { 0 };
    EventHeader { kind, probe_id: cookie::probe_id(ck), tgid: cfg.tgid, thread, ktime_ns, args, stack_id, nframes: nframes as u32, flags }
}

/// The frame count through memory: each exit of the walk knows its own
/// count, and the verifier would check the rest of the program once per
/// count (4x the instructions, ~0.1 s of start-up per load). Read back,
/// the count is one unknown, and the first check covers every exit.
#[inline(always)]
fn launder(slot: &mut u32, n: usize) -> usize {
    *slot = n as u32;
    // SAFETY: our own per-CPU memory; volatile so the compiler keeps the load.
    unsafe { core::ptr::read_volatile(slot) as usize }
}

/// A count already in memory, read as one unknown (see `launder`).
#[inline(always)]
fn reread(slot: &u32) -> usize {
    // SAFETY: our own per-CPU memory.
    unsafe { core::ptr::read_volatile(slot) as usize }
}

/// A growslice hit: its record waits in this CPU's PENDING slot for the
/// allocation growslice makes next, which sends both. A growth still
/// waiting there is sent alone first (its allocation never came here).
/// A growth into the caller's stack buffer allocates nothing: sent at once.
#[inline(always)]
fn hold_growth(ctx: &ProbeContext, ck: u64, cfg: &TargetConfig, slot: u32, stats: &Counters, chunk: &mut Chunk, window: &mut Window, caller: u64, g: u64, walk: bool, p: &mut PendingGrowth, in_buffer: bool) -> Result<(), i64> {
    if p.goroutine != 0 {
        p.goroutine = 0;
        if let Ok(row) = Counters::row(p.slot) {
            row.bump(stat::GROW_ALONE);
        }
        p.event.header.flags |= event_flag::ALONE;
        let n = reread(&p.event.header.nframes);
        let _ = send(pending_words(p), HEADER_WORDS + n, stats);
    }
    let ev = &mut p.event;
    ev.frames[0] = arch::pc(ctx);
    ev.frames[1] = caller;
    let n = if walk { walk_frame_pointers(ctx, arch::frame_pointer(ctx), chunk, window, &mut ev.frames, caller, stats).0 } else { 2 };
    ev.header = header(ck, cfg, g, arch::go_args(ctx), 0, n, 0);
    p.slot = slot;
    p.sp = arch::stack_pointer(ctx);
    // g is never 0 in Go code; were it, no allocation could claim the
    // growth, so it goes at once, alone.
    if g == 0 || in_buffer {
        p.event.header.flags |= if in_buffer { event_flag::IN_BUFFER } else { event_flag::ALONE };
        let n = launder(&mut p.event.header.nframes, n);
        return send(pending_words(p), HEADER_WORDS + n, stats);
    }
    p.goroutine = g;
    Ok(())
}

/// The allocation a held growth makes: appended to the growth's record
/// (its own header, probed PC and caller inside growslice) and sent with
/// it. Ok(false) when the hit is not that allocation (its type is not the
/// growth's, or it is not called from growslice): it goes the usual way.
#[inline(always)]
fn complete_growth(ctx: &ProbeContext, ck: u64, cfg: &TargetConfig, slot: u32, stats: &Counters, g: u64, p: &mut PendingGrowth) -> Result<bool, i64> {
    let args = arch::go_args(ctx);
    // mallocgc(size, typ, needzero): growslice passes nil or its element type.
    let typ = args[1];
    let elem = p.event.header.args.get(cfg.grow_type_arg as usize).copied().unwrap_or(0);
    if typ != 0 && typ != elem {
        return Ok(false);
    }
    let bit = if typ == 0 { 1 } else { 2 };
    let read = CALLERS_READ.get_ptr_mut(slot).ok_or(-1i64)?;
    // SAFETY: this CPU's row, as above.
    let read = unsafe { &mut *read };
    let known = read.tgid == cfg.tgid && read.bits & bit != 0;
    // Called from this growth's growslice frame (see PendingGrowth::sp),
    // and this CPU already sent that call's return address: only the PC.
    let (caller, n) = match arch::caller_in_register(ctx) {
        Some(lr) => (lr, PAIRED_ALLOC_FRAMES),
        None if known && arch::frame_pointer(ctx) == p.sp.wrapping_sub(8) => (0, 1),
        None => (entry_caller(ctx, None)?.0, PAIRED_ALLOC_FRAMES),
    };
    if n == PAIRED_ALLOC_FRAMES && !in_growslice(cfg, caller) {
        return Ok(false);
    }
    p.goroutine = 0;
    let held = reread(&p.event.header.nframes);
    if held > MAX_FRAMES {
        return Err(-1);
    }
    let h = header(ck, cfg, g, args, 0, n, event_flag::IN_GROWTH);
    let at = HEADER_WORDS + held;
    let words = pending_words(p);
    // SAFETY: at ≤ HEADER_WORDS + MAX_FRAMES, and PendingGrowth's tail holds
    // a header and two frames past that (PendingGrowth::WORDS).
    unsafe {
        core::ptr::write_unaligned(words.as_mut_ptr().add(at) as *mut EventHeader, h);
    }
    let Some(frames) = words.get_mut(at + HEADER_WORDS..at + HEADER_WORDS + PAIRED_ALLOC_FRAMES) else {
        return Err(-1);
    };
    frames[0] = arch::pc(ctx);
    frames[1] = caller;
    send(words, at + HEADER_WORDS + n, stats)?;
    if n == PAIRED_ALLOC_FRAMES {
        // Only once sent: the agent must have the caller before a record
        // that leaves it out (one ring keeps each CPU's records in order).
        if read.tgid != cfg.tgid {
            *read = CallersRead { tgid: cfg.tgid, bits: 0 };
        }
        read.bits |= bit;
    }
    Ok(true)
}

/// The held growth's record and the room after it, as one run of words.
#[inline(always)]
fn pending_words(p: &mut PendingGrowth) -> &mut [u64; PendingGrowth::WORDS] {
    // SAFETY: `event` and `tail` are consecutive u64 arrays in a repr(C)
    // struct (size pinned in common), so together they are WORDS words.
    unsafe { &mut *(&mut p.event as *mut RawEvent as *mut [u64; PendingGrowth::WORDS]) }
}

/// Sends the first `words` of `all` as one record, waking the agent only
/// when the ring holds WAKEUP_BYTES: a wakeup per record would cost the
/// target a context switch per hit. No kind forces one: a program
/// collecting hundreds of times a second makes GC events as frequent as
/// allocations. The agent's 200 ms drain bounds latency.
#[inline(always)]
fn send<const N: usize>(all: &[u64; N], words: usize, stats: &Counters) -> Result<(), i64> {
    if words > N {
        return Err(-1);
    }
    let wake = if wake_check_due() && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    if EVENTS.output::<[u64]>(&all[..words], wake as u64).is_err() {
        stats.bump(stat::RINGBUF_FULL);
        return Err(-1);
    }
    Ok(())
}

/// Any other hit: counted in AGG when its probe aggregates and the key has
/// (or takes) a slot, else sent whole.
#[inline(always)]
fn send_or_count(ctx: &ProbeContext, ck: u64, cfg: &TargetConfig, stats: &Counters, chunk: &mut Chunk, window: &mut Window, caller: u64, g: u64, walk: bool, in_growslice: bool) -> Result<(), i64> {
    let ev = SCRATCH.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let ev = unsafe { &mut *ev };
    let kind = cookie::kind(ck);
    let flags = cookie::flags(ck);
    let mut args = arch::go_args(ctx);
    // Inside growslice, but this CPU holds no growth of this goroutine (its
    // thread moved since, and the growth waits on the CPU it left): walked
    // from growslice's frame, so it names the growth's stack by itself.
    let mut event_flags = if in_growslice { event_flag::IN_GROWTH } else { 0 };
    if kind == kind::GC_START || kind == kind::STW_STOP || kind == kind::STW_START || kind == kind::STW_RESUMED {
        // The heap at each pause, in slots these functions' arguments do
        // not use; a flag says a slot was read, so a register's leftover is
        // never taken for the heap.
        event_flags |= read_into(&mut args, event_flag::HEAP_LIVE_SLOT, cfg.heap_live_addr, event_flag::HEAP_LIVE);
        event_flags |= read_into(&mut args, event_flag::HEAP_GOAL_SLOT, cfg.heap_goal_addr, event_flag::HEAP_GOAL);
    }
    ev.frames[0] = arch::pc(ctx);
    ev.frames[1] = caller;
    let (n, stack_id) = if walk { walk_frame_pointers(ctx, arch::frame_pointer(ctx), chunk, window, &mut ev.frames, caller, stats) } else { (2, 0) };
    let n = launder(&mut ev.header.nframes, n);
    let mut id = 0;
    let mut claimed = None;
    if flags & cookie::FLAG_AGGREGATE != 0 && !in_growslice {
        let size = args[0];
        let key = AggKey { stack_id, probe_id: cookie::probe_id(ck), size_bucket: size_bucket(size), tgid: cfg.tgid, _pad: 0 };
        match count_in_agg(&key, size) {
            Agg::Counted => {
                stats.bump(stat::AGGREGATED);
                return Ok(());
            }
            Agg::Claimed(slot) => {
                // The key's first hit on this CPU: its count is in the slot,
                // and the record only names the stack.
                claimed = Some(slot);
                event_flags |= event_flag::STACK_ONLY;
                id = stack_id;
            }
            Agg::Full => {
                stats.bump(stat::AGG_FULL);
                diagnose(ctx, Diag::AggFull, ck, stack_id);
            }
        }
    }
    ev.header = header(ck, cfg, g, args, id, n, event_flags);
    // SAFETY: RawEvent is repr(C) u64-aligned POD; the view covers it exactly.
    let all = unsafe { &*(ev as *const RawEvent as *const [u64; core::mem::size_of::<RawEvent>() / 8]) };
    if send(all, HEADER_WORDS + n, stats).is_err() {
        if let Some(slot) = claimed {
            // Without its stack the agent could not name the key's counts:
            // free the slot, so the hit is lost (and counted) but the next
            // one claims it again and sends the stack.
            // SAFETY: this CPU's slot, which only this CPU's hits write.
            unsafe { (*slot).key.stack_id = 0 };
        }
        return Err(-1);
    }
    if claimed.is_some() {
        // After the slot and its record: the agent looks for new slots
        // when this moves, and counts them when AGGREGATED does.
        stats.bump(stat::AGG_CLAIMED);
        stats.bump(stat::AGGREGATED);
    }
    Ok(())
}

/// The target's slot: from the cookie on a link that fires in one process,
/// else by tgid (`Ok(None)`: not a target).
#[inline(always)]
fn target_slot(ck: u64) -> Result<Option<u32>, i64> {
    let slot = cookie::slot(ck);
    if slot != 0 {
        return Ok(Some(slot));
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: value is Copy and only read.
    Ok(unsafe { TARGETS.get(tgid) }.copied())
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

/// Where a hit's count went.
enum Agg {
    /// Into its key's slot.
    Counted,
    /// Into a free slot this hit took for its key: the stack must be sent.
    Claimed(*mut AggSlot),
    /// Nowhere: both slots of the key's set hold other keys.
    Full,
}

/// Adds one hit to `key`'s slot among this CPU's, taking a free slot of
/// its set when the key has none. Plain stores suffice: only this CPU's
/// hits write its slots, one at a time (RUNNING). The agent reads the
/// slots as they change.
#[inline(always)]
fn count_in_agg(key: &AggKey, size: u64) -> Agg {
    let per_cpu = AGG_SLOTS_PER_CPU.load();
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let first = cpu.wrapping_mul(per_cpu).wrapping_add(agg_set(key, per_cpu / AGG_WAYS));
    let mut free = None;
    for way in 0..AGG_WAYS {
        let Some(p) = AGG.get_ptr_mut(first + way) else {
            break;
        };
        // SAFETY: a slot of this CPU's (see above).
        let slot = unsafe { &mut *p };
        if slot.key.stack_id == key.stack_id && slot.key.probe_id == key.probe_id && slot.key.size_bucket == key.size_bucket && slot.key.tgid == key.tgid {
            slot.value.count += 1;
            slot.value.bytes += size;
            return Agg::Counted;
        }
        if slot.key.stack_id == 0 && free.is_none() {
            free = Some(p);
        }
    }
    let Some(p) = free else { return Agg::Full };
    // SAFETY: as above. Volatile stores keep their order, so the key's stack
    // id is written last: a reader that sees it non-zero finds the rest
    // written (x86's stores are ordered; on arm64 a torn read lasts until
    // the next one).
    unsafe {
        core::ptr::write_volatile(&mut (*p).value, AggValue { count: 1, bytes: size });
        core::ptr::write_volatile(&mut (*p).key, AggKey { stack_id: 0, ..*key });
        core::ptr::write_volatile(&mut (*p).key.stack_id, key.stack_id);
    }
    Agg::Claimed(p)
}

/// Bytes of stack read at once by the frame walk: most Go frames are tens
/// to a few hundred bytes, so one read holds several frame records. A
/// power of two (lengths are masked by CHUNK - 1 for the verifier).
const CHUNK: usize = 1024;
const CHUNK_WORDS: usize = CHUNK / 8;
/// One word past the CHUNK bytes read: a record at the last masked index
/// stays inside the value whatever the compiler makes of the bounds (the
/// `valid` check keeps records whole within what was read).
type Chunk = [u64; CHUNK_WORDS + 1];

/// Per-CPU copy of the stack the walk is reading.
#[map]
static STACK_CHUNK: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(1, 0);

/// Which part of the stack the chunk holds: `valid` bytes from `base`.
#[derive(Clone, Copy)]
struct Window {
    base: u64,
    valid: u64,
}

impl Window {
    const EMPTY: Window = Window { base: 0, valid: 0 };
}

/// The caller's return address at function entry and, when `chunk` is
/// given (a walking probe), the stack read from the stack pointer up:
/// where the caller's address sits in memory (amd64) it comes with the
/// first frame records in one helper call. A helper call costs ~50 ns here.
#[inline(always)]
fn entry_caller(ctx: &ProbeContext, chunk: Option<&mut Chunk>) -> Result<(u64, Window), i64> {
    if let Some(lr) = arch::caller_in_register(ctx) {
        return Ok((lr, Window::EMPTY));
    }
    let sp = arch::stack_pointer(ctx);
    let Some(chunk) = chunk else {
        // SAFETY: reads the target's stack, never writes it.
        return Ok((unsafe { bpf_probe_read_user(sp as *const u64) }.map_err(|e| e as i64)?, Window::EMPTY));
    };
    let valid = read_chunk(chunk, sp);
    if valid == 0 {
        return Err(-1);
    }
    Ok((chunk[0], Window { base: sp, valid }))
}

/// Follows Go's frame-pointer chain from the caller's frame: each record is
/// [saved FP, return address] on amd64 and arm64 alike. The stack is read
/// CHUNK bytes at a time (to the page's end where a chunk would cross the
/// end of the mapping), and records inside the chunk in hand cost no
/// further read: 1 KiB from the stack pointer holds most of a Go
/// allocation stack's records, and a helper call per record was half of a
/// hit's cost (measured by calibration: ~1.3 µs over the empty program per
/// 10-frame hit before, ~0.5 µs after).
/// Bounded by MAX_FRAMES; stops at a null or non-increasing FP (stacks grow
/// down, so a walk that does not go up is corrupt or crosses onto another
/// stack). Returns the frame count and a hash of `frames[1..]` (the caller on).
#[inline(always)]
fn walk_frame_pointers(ctx: &ProbeContext, mut fp: u64, chunk: &mut Chunk, window: &mut Window, frames: &mut [u64; MAX_FRAMES], caller: u64, stats: &Counters) -> (usize, u64) {
    let mut n = 2;
    let mut h = mix(0x9e37_79b9_7f4a_7c15, caller);
    while n < MAX_FRAMES {
        if fp == 0 {
            break;
        }
        // An FP below the window wraps to a huge offset: read afresh.
        let mut off = fp.wrapping_sub(window.base);
        if off >= window.valid || window.valid - off < 16 || off & 7 != 0 {
            let valid = read_chunk(chunk, fp);
            if valid == 0 {
                stats.bump(stat::STACK_FAULT);
                diagnose(ctx, Diag::StackFault, fp, n as u64);
                break;
            }
            *window = Window { base: fp, valid };
            off = 0;
        }
        // Masked, so the verifier sees both indices inside the value; the
        // check above already keeps the record whole within `valid`. LLVM
        // knows that too and drops the mask, and the 6.1 verifier cannot carry
        // the `off < valid` bound across two registers ("math between
        // map_value pointer and register with unbounded min value"): the
        // volatile read hides the range from LLVM so the mask stays.
        // SAFETY: reading a local.
        let off = unsafe { core::ptr::read_volatile(&off) };
        let i = (off >> 3) as usize & (CHUNK_WORDS - 1);
        let (next_fp, ret) = (chunk[i], chunk[i + 1]);
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
fn read_chunk(chunk: &mut Chunk, at: u64) -> u64 {
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

/// Node mode's exec events: one 16-byte record per execve on the host,
/// read by the agent at once. 64 KiB holds 4096 of them, far more than a
/// node execs between two reads; a full ring is counted (stat::EXEC_LOST)
/// and the agent's periodic sweep of /proc finds what was missed.
#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

/// `sched_process_exec`, typed by the kernel's BTF (5.5+): no tracefs, and
/// the cheapest way in. Runs only when node mode attaches it.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_btf(_ctx: BtfTracePointContext) -> i32 {
    send_exec();
    0
}

/// The same for a kernel without BTF (raw tracepoints need no type information).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn exec_raw(_ctx: RawTracePointContext) -> i32 {
    send_exec();
    0
}

/// The exec'ing task's tgid: the tracepoint fires after de_thread(), in
/// the task that now leads the thread group, so no task_struct read (and no
/// CO-RE offset) is needed.
#[inline(always)]
fn send_exec() {
    let ev = ExecEvent { tgid: (bpf_get_current_pid_tgid() >> 32) as u32, _pad: 0, ktime: unsafe { bpf_ktime_get_ns() } };
    if EXECS.output::<ExecEvent>(&ev, 0).is_err() {
        if let Ok(c) = Counters::row(stat::AGENT_SLOT) {
            c.bump(stat::EXEC_LOST);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
