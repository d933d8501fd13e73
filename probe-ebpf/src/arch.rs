//! Per-architecture register access: the only place that knows register names.
//!
//! Go's register ABI (Go 1.17+) is not the C ABI, so `ProbeContext::arg` is
//! wrong for Go code. See go/src/cmd/compile/abi-internal.md:
//! amd64 integer args RAX, RBX, RCX, RDI, RSI, R8..R11; arm64 R0..R15.
use aya_ebpf::programs::ProbeContext;
use gcprobe_common::MAX_ARGS;

#[cfg(bpf_target_arch = "x86_64")]
mod imp {
    use super::*;
    use aya_ebpf::bindings::pt_regs;

    #[inline(always)]
    fn regs(ctx: &ProbeContext) -> &pt_regs {
        // SAFETY: for uprobes the context is the trapped task's pt_regs.
        unsafe { &*ctx.regs }
    }

    #[inline(always)]
    pub fn go_args(ctx: &ProbeContext) -> [u64; MAX_ARGS] {
        let r = regs(ctx);
        [r.rax, r.rbx, r.rcx, r.rdi, r.rsi]
    }

    /// `growsliceBuf`'s bufLen, Go's seventh integer argument
    /// (gcprobe_common::GROW_BUF_LEN_ARG): RAX, RBX, RCX, RDI, RSI, R8, R9.
    #[inline(always)]
    pub fn grow_buf_len(ctx: &ProbeContext) -> u64 {
        regs(ctx).r9
    }

    #[inline(always)]
    pub fn pc(ctx: &ProbeContext) -> u64 {
        regs(ctx).rip
    }

    #[inline(always)]
    pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
        regs(ctx).rbp
    }

    #[inline(always)]
    pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
        regs(ctx).rsp
    }

    /// Go's ABIInternal keeps the running goroutine's g in R14 (Go 1.17+),
    /// at every Go function's entry.
    #[inline(always)]
    pub fn goroutine(ctx: &ProbeContext) -> u64 {
        regs(ctx).r14
    }

    /// At function entry the CALL has pushed the return address and the
    /// prologue has not run yet, so the caller lives at [rsp], in memory,
    /// and is not in any frame-pointer record (the kernel's stack helper
    /// misses it too).
    #[inline(always)]
    pub fn caller_in_register(_ctx: &ProbeContext) -> Option<u64> {
        None
    }
}

#[cfg(bpf_target_arch = "aarch64")]
mod imp {
    use super::*;
    use aya_ebpf::bindings::user_pt_regs;

    #[inline(always)]
    fn regs(ctx: &ProbeContext) -> &user_pt_regs {
        // SAFETY: on arm64 struct pt_regs begins with user_pt_regs.
        unsafe { &*(ctx.regs as *const user_pt_regs) }
    }

    #[inline(always)]
    pub fn go_args(ctx: &ProbeContext) -> [u64; MAX_ARGS] {
        let r = &regs(ctx).regs;
        [r[0], r[1], r[2], r[3], r[4]]
    }

    /// `growsliceBuf`'s bufLen: the seventh integer argument is R6.
    #[inline(always)]
    pub fn grow_buf_len(ctx: &ProbeContext) -> u64 {
        regs(ctx).regs[gcprobe_common::GROW_BUF_LEN_ARG]
    }

    #[inline(always)]
    pub fn pc(ctx: &ProbeContext) -> u64 {
        regs(ctx).pc
    }

    #[inline(always)]
    pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
        regs(ctx).regs[29]
    }

    #[inline(always)]
    pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
        regs(ctx).sp
    }

    /// On arm64 Go keeps g in R28 at all times (abi-internal.md).
    #[inline(always)]
    pub fn goroutine(ctx: &ProbeContext) -> u64 {
        regs(ctx).regs[28]
    }

    /// BL leaves the return address in LR (X30); at entry nothing has saved it yet.
    #[inline(always)]
    pub fn caller_in_register(ctx: &ProbeContext) -> Option<u64> {
        Some(regs(ctx).regs[30])
    }
}

pub use imp::*;
