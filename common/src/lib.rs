//! Types shared by the kernel programs (`probe-ebpf`) and the agent.
//!
//! Everything here crosses the kernel boundary as raw bytes, so every type is
//! `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding, and
//! has its size pinned by a `const` assertion. No `bool`, enum or `Option` crosses:
//! discriminants travel as integers and the agent converts them with `TryFrom`.
#![no_std]

/// Frames kept per event: the probed PC, the caller, then up to 30 frame-pointer hops.
pub const MAX_FRAMES: usize = 32;

/// Go's register ABI passes up to 9 integer arguments in registers; the probed
/// runtime functions take at most 5, so that is all the kernel copies.
pub const MAX_ARGS: usize = 5;

/// What a probe hit means. Carried in the attach cookie and echoed in each event.
pub mod kind {
    /// `runtime.mallocgc` or one of its size-specialized entry points.
    pub const MALLOC: u32 = 1;
    /// `runtime.growslice` (and Go 1.27's growslice variants).
    pub const GROWSLICE: u32 = 2;
    /// `runtime.gcStart`.
    pub const GC_START: u32 = 3;
    /// `runtime.stopTheWorldWithSema`.
    pub const STW_STOP: u32 = 4;
    /// `runtime.startTheWorldWithSema`.
    pub const STW_START: u32 = 5;
    /// `runtime.gcAssistAlloc`.
    pub const ASSIST: u32 = 6;
    /// A map growing: `runtime.hashGrow` (hmap, Go ≤ 1.23) or the swiss-map
    /// growth functions of internal/runtime/maps (Go 1.24+).
    pub const MAP_GROW: u32 = 7;
    /// `runtime.mProf_Malloc`: the runtime's own allocation sample, about one
    /// per `runtime.MemProfileRate` bytes (runtime/malloc.go profilealloc).
    pub const MPROF: u32 = 8;
    /// `runtime.mapassign` and its fast variants: an insert into a map
    /// (`m[k] = v`), whose caller is the inserting line.
    pub const MAP_INSERT: u32 = 9;
    /// The instruction after a call of `runtime.startTheWorldWithSema`: the
    /// world has restarted. Not a function entry: no uretprobe (Go moves
    /// goroutine stacks), a uprobe at each call's return address instead.
    /// Go's result register holds the function's `now`, the time Go ends
    /// the pause at (runtime/proc.go, Go 1.19 to 1.27).
    pub const STW_RESUMED: u32 = 10;
    /// Highest kind; per-kind hit counters are sized by it.
    pub const MAX: u32 = 10;
}

/// Attach-cookie layout: `probe_id | slot << 16 | kind << 32 | flags << 48`.
///
/// `slot` is the target's row in `CONFIGS` and `STATS` when the link fires
/// in that one process (the kernel's own PID filter), 0 on a link shared by
/// every process of a binary: the program then finds the row by tgid, in
/// `TARGETS`. A helper call costs ~50 ns here (AMD with SRSO's safe-RET
/// return thunks), and the slot in the cookie saves two per hit: the tgid
/// and the hash lookup.
///
/// One kernel program serves every attach point; the cookie tells it what the
/// point is, so adding a probe never adds a program.
pub mod cookie {
    /// Walk the caller's frame pointers (allocation probes). Without it only the
    /// probed PC and the immediate caller are recorded.
    pub const FLAG_WALK_STACK: u64 = 1 << 0;
    /// Drop the hit when the immediate caller lies inside the target's
    /// `[nested_lo, nested_hi)` range: Go 1.27's `mallocgc` dispatches to the
    /// size-specialized allocators that compiled code also calls directly, and
    /// one allocation must count once.
    pub const FLAG_SKIP_NESTED: u64 = 1 << 1;
    /// Count the hit in the kernel's `AGG` map, keyed by stack, size bucket
    /// and probe, instead of sending an event: only a key's first hit sends
    /// its stack. Hits whose caller lies in the target's `[pair_lo, pair_hi)`
    /// (growslice) are still sent whole: the agent pairs each growth with the
    /// allocation that follows it on the same thread.
    pub const FLAG_AGGREGATE: u64 = 1 << 2;
    /// One of sampled mode's bursted probes: while the target's
    /// [`TargetConfig::burst_open`] is 0 the hit is only counted (in
    /// [`stat::GATED_BY_KIND`]). Uprobes attach and detach one at a time and
    /// a detach keeps trapping for an RCU grace period or more after its
    /// program is gone: the gate gives every bursted probe the same window,
    /// and makes the switching's own traps measured rather than unseen.
    pub const FLAG_BURST: u64 = 1 << 3;
    /// A growth entry with a caller's stack buffer, `growsliceBuf(oldPtr,
    /// newLen, oldCap, num, et, bufPtr, bufLen)` and its NoAlias twin (Go
    /// 1.26+, runtime/slice.go): the kernel reads `bufLen` (argument
    /// [`GROW_BUF_LEN_ARG`](super::GROW_BUF_LEN_ARG)) to tell a growth into
    /// the buffer, which allocates nothing, from one that calls growslice.
    pub const FLAG_GROW_BUF: u64 = 1 << 4;

    /// Plan ids and slots each have 16 bits.
    pub const MAX_PROBE_ID: u32 = 0xffff;

    /// A probe's cookie, for a link shared by every process (slot 0).
    pub const fn encode(probe_id: u32, kind: u32, flags: u64) -> u64 {
        (probe_id as u64 & 0xffff) | ((kind as u64 & 0xffff) << 32) | (flags << 48)
    }
    /// `cookie` on a link that fires in one target only, whose row is `slot`.
    pub const fn with_slot(cookie: u64, slot: u32) -> u64 {
        (cookie & !0xffff_0000) | ((slot as u64 & 0xffff) << 16)
    }
    pub const fn probe_id(cookie: u64) -> u32 {
        (cookie & 0xffff) as u32
    }
    pub const fn slot(cookie: u64) -> u32 {
        ((cookie >> 16) & 0xffff) as u32
    }
    pub const fn kind(cookie: u64) -> u32 {
        ((cookie >> 32) & 0xffff) as u32
    }
    pub const fn flags(cookie: u64) -> u64 {
        cookie >> 48
    }
}

/// Fixed part of one ring-buffer record; `nframes` return addresses follow
/// it, so a record is `size_of::<EventHeader>() + 8 * nframes` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Index into the agent's probe plan.
    pub probe_id: u32,
    /// Process ID as the host (initial PID namespace) sees it.
    pub tgid: u32,
    /// Who ran the hit. For gcStart, the stop/start of the world and
    /// assists, the host thread id (those are run on the system stack, so
    /// only the thread ties them together). For every other kind, the
    /// goroutine: its `g` pointer (Go's g register, R14/R28, read with no
    /// helper call) folded to 32 bits by [`goroutine_key`]. A growslice and
    /// the allocation it makes run on one goroutine with no scheduling
    /// point between them; a goroutine may change threads mid-loop.
    pub thread: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC. 0 for the kinds [`is_timed`]
    /// leaves out: no figure uses an allocation's time, and the clock is a
    /// helper call (~45 ns here, kvm-clock) on the hottest path.
    pub ktime_ns: u64,
    /// Go register-ABI integer arguments, raw; the agent decodes them per Go version.
    pub args: [u64; MAX_ARGS],
    /// The stack's hash, naming it in [`AggKey`]; 0 when not aggregated.
    pub stack_id: u64,
    /// Valid return addresses after the header.
    pub nframes: u32,
    /// [`event_flag`] bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 80);

/// [`EventHeader::thread`] of a goroutine: its g pointer, high half folded
/// into the low (g structs lie far less than 4 GiB apart, so two live
/// goroutines never share a key).
#[inline(always)]
pub const fn goroutine_key(g: u64) -> u32 {
    (g ^ (g >> 32)) as u32
}

/// Whether a kind's [`EventHeader::thread`] is the host thread id rather
/// than a goroutine key.
#[inline(always)]
pub const fn names_os_thread(k: u32) -> bool {
    matches!(k, kind::GC_START | kind::STW_STOP | kind::STW_START | kind::STW_RESUMED | kind::ASSIST)
}

/// Whether a kind's probe sits on a function's first instruction, where
/// the caller's return address is at [rsp] or in LR. At a return site
/// ([`kind::STW_RESUMED`]) neither holds one: nothing is read there.
#[inline(always)]
pub const fn at_function_entry(k: u32) -> bool {
    !matches!(k, kind::STW_RESUMED)
}

/// Whether a kind's events carry their time ([`EventHeader::ktime_ns`]):
/// all but allocations and growths.
#[inline(always)]
pub const fn is_timed(k: u32) -> bool {
    !matches!(k, kind::MALLOC | kind::GROWSLICE)
}

/// Bits of [`EventHeader::flags`].
pub mod event_flag {
    /// The record only defines `stack_id`'s frames: its hit is already
    /// counted in the `AGG` map, and must not be counted again.
    pub const STACK_ONLY: u32 = 1;
    /// `args[4]` holds `gcController.heapLive`, read by the kernel at this pause.
    pub const HEAP_LIVE: u32 = 1 << 1;
    /// `args[3]` holds `gcController.gcPercentHeapGoal`, read likewise.
    pub const HEAP_GOAL: u32 = 1 << 2;
    /// A growslice record sent without its allocation (see
    /// [`PendingGrowth`](super::PendingGrowth)): an allocation made inside
    /// growslice that came earlier, alone, may be its.
    pub const ALONE: u32 = 1 << 3;
    /// An allocation made inside growslice, sent unwalked: its stack is
    /// its growth's.
    pub const IN_GROWTH: u32 = 1 << 4;
    /// A growth that stays in its caller's stack buffer
    /// ([`grows_in_buffer`](super::grows_in_buffer)): counted, sent at
    /// once, and no allocation follows it.
    pub const IN_BUFFER: u32 = 1 << 5;
    /// Which argument slots carry those reads: the pause probes' own
    /// arguments never use them (worldStop's finishedStopping and
    /// stoppingCPUTime, Go 1.22+, are not needed).
    pub const HEAP_LIVE_SLOT: usize = 4;
    pub const HEAP_GOAL_SLOT: usize = 3;
}

/// The largest record: header plus [`MAX_FRAMES`] frames. The kernel builds
/// records here (in a per-CPU scratch slot) and sends only the used prefix.
/// `frames[0]` is the probed PC, `frames[1]` the caller's return address,
/// then return addresses found by walking frame pointers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    pub header: EventHeader,
    pub frames: [u64; MAX_FRAMES],
}
const _: () = assert!(core::mem::size_of::<RawEvent>() == 80 + 8 * MAX_FRAMES);

/// Which Go argument of `growsliceBuf` is `bufLen` (its seventh: R9 on
/// amd64, R6 on arm64).
pub const GROW_BUF_LEN_ARG: usize = 6;

/// Whether `growsliceBuf` keeps the slice in its caller's stack buffer:
/// only a `newLen` beyond `bufLen` calls growslice, which allocates
/// (runtime/slice.go, Go 1.26+). Both are Go ints: compared signed.
pub const fn grows_in_buffer(new_len: u64, buf_len: u64) -> bool {
    (new_len as i64) <= (buf_len as i64)
}

/// Words of an [`EventHeader`].
pub const HEADER_WORDS: usize = core::mem::size_of::<EventHeader>() / 8;

/// Frames of the allocation a growslice makes: its probed PC and its caller
/// inside growslice (the rest of its stack is the growslice's). Only the
/// PC where the kernel did not read the caller (see [`CallersRead`]).
pub const PAIRED_ALLOC_FRAMES: usize = 2;

/// Per CPU and target slot, which of growslice's two calls to mallocgc
/// this CPU has read the return address of and sent: bit 0 the call for
/// element types without pointers (`mallocgc(capmem, nil, false)`), bit 1
/// the other (`mallocgc(capmem, et, true)`), runtime/slice.go, Go 1.19 to
/// 1.27. Reading the caller from the stack is a helper call (~140 ns here,
/// the dearest part of the pair): once a CPU has sent it, its later pairs
/// send the probed PC alone, and the agent takes the caller it was sent.
/// Reset when the slot serves another process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallersRead {
    pub tgid: u32,
    pub bits: u32,
}
const _: () = assert!(core::mem::size_of::<CallersRead>() == 8);

/// A growslice's record, held on its CPU until the allocation it makes:
/// that hit sends both in one ring-buffer record, the growslice's words
/// then the allocation's header and two frames. One output call for the
/// pair, where there were two, each with its clock and thread reads.
/// The agent reads every CPU's slot at the end for a growslice whose
/// allocation never came (zero-size elements allocate nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingGrowth {
    /// The g pointer of the goroutine that entered growslice; 0 when the
    /// slot holds nothing.
    pub goroutine: u64,
    /// The target's row in `STATS`, for a growth sent alone.
    pub slot: u32,
    pub _pad: u32,
    /// The stack pointer at growslice's entry: inside growslice the frame
    /// pointer is 8 below it (Go's amd64 prologue saves BP under the return
    /// address), which tells a call from this growth's frame.
    pub sp: u64,
    pub event: RawEvent,
    /// Room for the allocation's record right after the growslice's used
    /// frames, when all MAX_FRAMES are used.
    pub tail: [u64; HEADER_WORDS + PAIRED_ALLOC_FRAMES],
}
const _: () = assert!(core::mem::size_of::<PendingGrowth>() == 24 + 80 + 8 * MAX_FRAMES + 80 + 16);

impl PendingGrowth {
    /// Words of the event and tail, as one record is laid out.
    pub const WORDS: usize = HEADER_WORDS + MAX_FRAMES + HEADER_WORDS + PAIRED_ALLOC_FRAMES;
}

/// Key of the kernel's allocation counts (see [`AggSlot`]). `stack_id` is
/// never 0: a slot whose `stack_id` is 0 is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AggKey {
    /// Hash of the return addresses `frames[1..]`.
    pub stack_id: u64,
    pub probe_id: u32,
    /// [`size_bucket`] of the requested size.
    pub size_bucket: u32,
    /// The process that allocated: one kernel map serves every target, and
    /// processes of one binary share stacks, probe ids and sizes.
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AggKey>() == 24);

/// The kernel's allocation counts of one key on one CPU: only ever
/// incremented, so the agent reads deltas and nothing is lost between reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggValue {
    pub count: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<AggValue>() == 16);

/// One slot of the `AGG` array: each CPU owns `AGG_SLOTS_PER_CPU`
/// consecutive slots, grouped in sets of [`AGG_WAYS`]; a key lives in the
/// set its hash names. An array lookup is inlined by the verifier where a
/// hash map's is a helper call and a hash (~70 ns a hit here), and the agent
/// reads the counts through a shared mapping, without a syscall per key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggSlot {
    pub key: AggKey,
    pub value: AggValue,
}
const _: () = assert!(core::mem::size_of::<AggSlot>() == 40);

/// Slots per set of the `AGG` array: a key's second chance when another
/// key hashes to its slot.
pub const AGG_WAYS: u32 = 2;

/// The set of the `AGG` array `key` belongs in, among `sets` (a power of
/// two): its first slot's index within a CPU's slots.
pub const fn agg_set(key: &AggKey, sets: u32) -> u32 {
    let rest = ((key.probe_id as u64) << 40) ^ ((key.size_bucket as u64) << 24) ^ key.tgid as u64;
    // Multiplying carries every input bit into the high half, taken here.
    let h = (key.stack_id ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    ((h >> 32) as u32 & (sets - 1)) * AGG_WAYS
}

/// Log-linear size bucket: exact below 16 bytes, then four buckets per power
/// of two (at most 25% wide). The kernel keys counts by it so that a callsite
/// allocating many sizes needs a few keys, not one per size; the exact bytes
/// are summed in [`AggValue::bytes`].
#[inline(always)]
pub const fn size_bucket(size: u64) -> u32 {
    if size < 16 {
        return size as u32;
    }
    let e = 63 - size.leading_zeros();
    let m = (size >> (e - 2)) & 3;
    16 + (e - 4) * 4 + m as u32
}

/// Smallest size in `bucket` (the inverse of [`size_bucket`]).
pub const fn bucket_floor(bucket: u32) -> u64 {
    if bucket < 16 {
        return bucket as u64;
    }
    let e = (bucket - 16) / 4 + 4;
    let m = ((bucket - 16) % 4) as u64;
    (4 + m) << (e - 2)
}

/// Per-target settings: row `slot` of the `CONFIGS` array. `TARGETS` maps a
/// host tgid to its slot, for links shared by every process of a binary.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetConfig {
    /// Runtime address range of `runtime.mallocgc` in this process (see
    /// [`cookie::FLAG_SKIP_NESTED`]); `0..0` disables the check.
    pub nested_lo: u64,
    pub nested_hi: u64,
    /// Runtime address of `runtime.gcController.heapLive`, read (never
    /// written) at each pause probe into `args[4]`; 0 when unknown. The
    /// event says whether the read happened ([`event_flag::HEAP_LIVE`]):
    /// without it `args[4]` is whatever the register held.
    pub heap_live_addr: u64,
    /// Runtime address of `gcController.gcPercentHeapGoal`, read likewise
    /// into `args[3]` ([`event_flag::HEAP_GOAL`]); 0 when unknown.
    pub heap_goal_addr: u64,
    /// Runtime address range of `runtime.growslice`: allocations it makes
    /// are sent whole even from aggregating probes (see [`cookie::FLAG_AGGREGATE`]).
    pub pair_lo: u64,
    pub pair_hi: u64,
    /// 1 while a burst's window is open (always, in exact mode): see
    /// [`cookie::FLAG_BURST`].
    pub burst_open: u32,
    /// This target's row of the `CONFIGS` and `STATS` arrays, from 1
    /// ([`stat::AGENT_SLOT`] is the agent's own) to [`MAX_TARGETS`].
    pub slot: u32,
    /// The target's host tgid: a hit on its own link learns it here, with
    /// no helper call.
    pub tgid: u32,
    /// Which growslice argument is the element type (0 on Go 1.19, 4 after).
    pub grow_type_arg: u32,
}
const _: () = assert!(core::mem::size_of::<TargetConfig>() == 64);
const _: () = assert!(core::mem::offset_of!(TargetConfig, heap_goal_addr) == 24);
const _: () = assert!(core::mem::offset_of!(TargetConfig, burst_open) == 48);

/// Targets one agent can hold: the `TARGETS` map's size, and the rows of
/// `CONFIGS` and `STATS` after the agent's own. Below 2^16 (a cookie's slot).
pub const MAX_TARGETS: u32 = 1024;
const _: () = assert!(MAX_TARGETS <= 0xffff);

/// One row of the per-CPU `STATS` array: a target's counters (one map
/// lookup per hit serves them all), indexed by the [`stat`] constants.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TargetStats {
    pub counts: [u64; stat::COUNT as usize],
}
const _: () = assert!(core::mem::size_of::<TargetStats>() == 8 * stat::COUNT as usize);

impl Default for TargetStats {
    fn default() -> Self {
        Self { counts: [0; stat::COUNT as usize] }
    }
}

/// Counters in a [`TargetStats`] row.
/// A process replaced its program image (`execve`): node mode's cue to
/// look at it. Sent from the `sched_process_exec` tracepoint, which runs in
/// the exec'ing task after the old image is gone, so its tgid is the
/// process's PID from then on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    /// Host PID (tgid) of the process.
    pub tgid: u32,
    pub _pad: u32,
    /// bpf_ktime_get_ns() at the exec.
    pub ktime: u64,
}
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 16);

pub mod stat {
    /// The `STATS` row of counts that belong to no target: hits of processes
    /// outside `TARGETS` on a shared probe ([`FOREIGN`]) and the empty
    /// baseline program's ([`EMPTY_HITS`]).
    pub const AGENT_SLOT: u32 = 0;
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Hits dropped as nested allocator calls, or as the inner call of a
    /// growslice variant (counted once by the outer probe).
    pub const NESTED: u32 = 1;
    /// Stack reads that faulted (the walk stops there; the event is still sent).
    pub const STACK_FAULT: u32 = 2;
    /// Hits on the empty baseline program (benchmarks).
    pub const EMPTY_HITS: u32 = 3;
    /// Hits counted in the `AGG` map rather than sent.
    pub const AGGREGATED: u32 = 4;
    /// `AGG` was full: the hit was sent as a whole event instead.
    pub const AGG_FULL: u32 = 5;
    /// Agent row only: hits that a probe took in a process that is not a
    /// target (a trap it paid for nothing; zero where links filter by PID).
    pub const FOREIGN: u32 = 6;
    /// Slots of `AGG` this target's hits took, per CPU: the agent looks
    /// for new keys in a CPU's slots only when its count moved.
    pub const AGG_CLAIMED: u32 = 7;
    /// Growslice records sent without their allocation: another growslice
    /// came first on the CPU (zero-size elements allocate nothing, or the
    /// thread moved between the two), or the allocation's hit was on
    /// another CPU.
    pub const GROW_ALONE: u32 = 8;
    /// Hits dropped because our program was already running on this CPU:
    /// a uprobe's program runs with migration, not preemption, disabled,
    /// so on a preemptible kernel another thread's hit can start on the
    /// CPU of one that was preempted; it must not touch that one's
    /// per-CPU record.
    pub const OVERLAPPED: u32 = 9;
    /// Agent row only: exec events node mode's ring had no room for (its
    /// sweep of /proc finds those processes later).
    pub const EXEC_LOST: u32 = 10;
    /// Hits that passed the PID filter, per kind: slot `HITS_BY_KIND + kind`.
    /// Their sum is all hits (one counter per hit, not two).
    pub const HITS_BY_KIND: u32 = 11;
    /// Of those, hits on a bursted probe while its gate was shut (attaching or
    /// detaching): slot `GATED_BY_KIND + kind`. They cost a trap and carry no data.
    pub const GATED_BY_KIND: u32 = HITS_BY_KIND + super::kind::MAX + 1;
    pub const COUNT: u32 = GATED_BY_KIND + super::kind::MAX + 1;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, every bit pattern valid.
    unsafe impl aya::Pod for super::TargetConfig {}
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::AggValue {}
    unsafe impl aya::Pod for super::AggSlot {}
    unsafe impl aya::Pod for super::TargetStats {}
    unsafe impl aya::Pod for super::PendingGrowth {}
    unsafe impl aya::Pod for super::ExecEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_keeps_its_fields_apart() {
        let c = cookie::encode(0xfffe, kind::MAP_INSERT, cookie::FLAG_WALK_STACK | cookie::FLAG_BURST);
        assert_eq!(cookie::slot(c), 0);
        let c = cookie::with_slot(c, MAX_TARGETS);
        assert_eq!((cookie::probe_id(c), cookie::slot(c), cookie::kind(c)), (0xfffe, MAX_TARGETS, kind::MAP_INSERT));
        assert_eq!(cookie::flags(c), cookie::FLAG_WALK_STACK | cookie::FLAG_BURST);
        assert_eq!(cookie::slot(cookie::with_slot(c, 7)), 7);
    }

    #[test]
    fn a_buffered_growth_stays_in_the_buffer_up_to_buf_len() {
        // growsliceBuf(oldPtr, newLen, oldCap, num, et, bufPtr, bufLen): newLen > bufLen calls growslice.
        assert!(grows_in_buffer(1, 4) && grows_in_buffer(4, 4));
        assert!(!grows_in_buffer(5, 4) && !grows_in_buffer(1, 0));
        // Go ints: a register holding a negative length is not a huge buffer.
        assert!(!grows_in_buffer(3, (-1i64) as u64));
        assert_eq!((GROW_BUF_LEN_ARG, cookie::flags(cookie::encode(1, kind::GROWSLICE, cookie::FLAG_GROW_BUF))), (6, cookie::FLAG_GROW_BUF));
    }

    #[test]
    fn agg_sets_start_on_a_way_boundary_inside_the_cpus_slots() {
        for stack_id in (1..20_000u64).step_by(7) {
            let key = AggKey { stack_id, probe_id: (stack_id % 5) as u32, size_bucket: 3, tgid: 4242, _pad: 0 };
            let set = agg_set(&key, 1024);
            assert!(set % AGG_WAYS == 0 && set + AGG_WAYS <= 1024 * AGG_WAYS, "{set}");
        }
        let a = AggKey { stack_id: 0x51, probe_id: 1, size_bucket: 3, tgid: 1, _pad: 0 };
        let b = AggKey { tgid: 2, ..a };
        assert_ne!(agg_set(&a, 1 << 11), agg_set(&b, 1 << 11), "processes sharing a stack spread over sets");
    }

    #[test]
    fn size_buckets_are_monotonic_and_at_most_a_quarter_wide() {
        let mut last = 0;
        for size in 0..100_000u64 {
            let b = size_bucket(size);
            assert!(b >= last, "{size}");
            last = b;
            let lo = bucket_floor(b);
            assert!(lo <= size && size < lo + lo / 4 + 1, "{size} in bucket {b} from {lo}");
        }
        assert_eq!(size_bucket(16), 16);
        assert_eq!(bucket_floor(size_bucket(1 << 40)), 1 << 40);
        assert!(size_bucket(u64::MAX) < 256);
    }
}
