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
}

/// Attach-cookie layout: `probe_id | kind << 32 | flags << 48`.
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

    pub const fn encode(probe_id: u32, kind: u32, flags: u64) -> u64 {
        (probe_id as u64) | ((kind as u64 & 0xffff) << 32) | (flags << 48)
    }
    pub const fn probe_id(cookie: u64) -> u32 {
        cookie as u32
    }
    pub const fn kind(cookie: u64) -> u32 {
        ((cookie >> 32) & 0xffff) as u32
    }
    pub const fn flags(cookie: u64) -> u64 {
        cookie >> 48
    }
}

/// One probe hit, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    /// One of [`kind`].
    pub kind: u32,
    /// Index into the agent's probe plan.
    pub probe_id: u32,
    /// Process ID as the host (initial PID namespace) sees it.
    pub tgid: u32,
    /// Thread ID, host view.
    pub tid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    /// Go register-ABI integer arguments, raw; the agent decodes them per Go version.
    pub args: [u64; MAX_ARGS],
    /// Valid entries in `frames`.
    pub nframes: u32,
    pub _pad: u32,
    /// `frames[0]` is the probed PC, `frames[1]` the caller's return address, then
    /// return addresses found by walking frame pointers.
    pub frames: [u64; MAX_FRAMES],
}
const _: () = assert!(core::mem::size_of::<RawEvent>() == 328);

/// Per-target settings, keyed by host tgid in the `TARGETS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetConfig {
    /// Runtime address range of `runtime.mallocgc` in this process (see
    /// [`cookie::FLAG_SKIP_NESTED`]); `0..0` disables the check.
    pub nested_lo: u64,
    pub nested_hi: u64,
    /// Runtime address of `runtime.gcController.heapLive`, read (never
    /// written) at each gcStart into `args[4]`; 0 when unknown.
    pub heap_live_addr: u64,
}
const _: () = assert!(core::mem::size_of::<TargetConfig>() == 24);

/// Slots of the per-CPU `STATS` array.
pub mod stat {
    /// Hits that passed the PID filter.
    pub const HITS: u32 = 0;
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 1;
    /// Hits dropped as nested allocator calls (counted once by the outer probe).
    pub const NESTED: u32 = 2;
    /// Stack reads that faulted (the walk stops there; the event is still sent).
    pub const STACK_FAULT: u32 = 3;
    /// Hits on the empty baseline program (benchmarks).
    pub const EMPTY_HITS: u32 = 4;
    pub const COUNT: u32 = 5;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, every bit pattern valid.
    unsafe impl aya::Pod for super::TargetConfig {}
    unsafe impl aya::Pod for super::RawEvent {}
}
