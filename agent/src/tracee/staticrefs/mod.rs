//! Static addresses in machine code: which link-time address a function
//! passes as its first register argument to a known callee, and which
//! addresses it loads 8-byte values from.
//!
//! Go loads the address of a package variable or a type descriptor into the
//! first argument register right before the call (`LEAQ sym(SB), AX` on
//! amd64, `ADRP`+`ADD` into R0 on arm64; Go's register ABI puts the first
//! integer argument in RAX / R0, cmd/compile/abi-internal.md). gcprobe uses
//! it to find `&runtime.gcController` in stripped binaries and the map types
//! a program deletes from.
use std::collections::HashSet;

use crate::tracee::binary::Arch;

/// (call address, static first argument) at each direct call in `code`
/// (starting at link-time `entry`) to one of `targets`.
pub fn first_args(arch: Arch, code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
    match arch {
        Arch::X86_64 => x86::first_args(code, entry, targets),
        Arch::Aarch64 => arm64::first_args(code, entry, targets),
    }
}

/// An 8-byte access to a package variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
}

/// Addresses `code` loads 8-byte values from or stores them to directly
/// (`MOVQ sym(SB), reg` / `MOVQ reg, sym(SB)` on amd64; `ADRP` then
/// `LDR`/`STR xT, [xN, #off]` on arm64), in order.
pub fn data_refs(arch: Arch, code: &[u8], entry: u64) -> Vec<(u64, Access)> {
    match arch {
        Arch::X86_64 => x86::data_refs(code, entry),
        Arch::Aarch64 => arm64::data_refs(code, entry),
    }
}

/// Where each direct call in `code` (starting at link-time `entry`) to
/// `target` returns: the address of the instruction after the call
/// (`CALL rel32` on amd64, `BL` on arm64, whose return address is its own + 4).
pub fn return_sites(arch: Arch, code: &[u8], entry: u64, target: u64) -> Vec<u64> {
    match arch {
        Arch::X86_64 => x86::return_sites(code, entry, target),
        Arch::Aarch64 => arm64::return_sites(code, entry, target),
    }
}

/// Where a probe at a function's entry fires once per call: the
/// instruction after the prologue's stack-bound check, when `code`
/// (starting at link-time `entry`) begins with one. Go's prologue compares
/// the stack pointer with g's stackguard and branches to a stub at the
/// function's end that calls runtime.morestack and then jumps back to the
/// entry (cmd/internal/obj/x86/obj6.go and arm64/obj7.go, stacksplit). Every
/// growth of the stack, and every cooperative preemption (the runtime sets
/// stackguard0 to stackPreempt: sysmon after 10 ms, the GC to scan a stack,
/// runtime/preempt.go), runs the entry a second time with the same
/// arguments; past the check it runs once. The registers and the stack are
/// those of the entry there: the check writes only scratch registers (R12,
/// R13 on amd64; R16, R17 on arm64) and the flags, and the frame is not yet
/// made. None for a function without the check (nosplit, or a small leaf).
pub fn past_stack_check(arch: Arch, code: &[u8], entry: u64) -> Option<u64> {
    match arch {
        Arch::X86_64 => x86::past_stack_check(code, entry),
        Arch::Aarch64 => arm64::past_stack_check(code, entry),
    }
}

/// The prologue's check is at most five instructions (a frame larger than
/// StackBig adds an underflow test) and its stub a few argument spills,
/// the call and the jump back (one spill per argument register).
const PROLOGUE_MAX: usize = 6;
const STUB_MAX: usize = 48;

/// Whether `code` may call one of `targets` directly: a byte scan for
/// `CALL rel32` (amd64) or `BL` (arm64) encodings that land on a target,
/// cheap enough to skip most functions before decoding them. It may say
/// yes where a decode finds no call (bytes inside other instructions).
pub fn may_call(arch: Arch, code: &[u8], entry: u64, targets: &HashSet<u64>) -> bool {
    match arch {
        Arch::X86_64 => code.windows(5).enumerate().any(|(i, w)| {
            w[0] == 0xe8 && targets.contains(&(entry + i as u64 + 5).wrapping_add(i32::from_le_bytes([w[1], w[2], w[3], w[4]]) as i64 as u64))
        }),
        Arch::Aarch64 => code.chunks_exact(4).enumerate().any(|(i, w)| {
            let insn = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            insn & 0xfc00_0000 == 0x9400_0000 && targets.contains(&(entry + 4 * i as u64).wrapping_add(arm64::imm26_offset(insn)))
        }),
    }
}

mod x86 {
    use std::collections::HashSet;

    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register};

    /// `code`'s instructions from `entry`, up to the first that does not decode.
    fn decoded(code: &[u8], entry: u64) -> impl Iterator<Item = Instruction> + '_ {
        let mut d = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
        std::iter::from_fn(move || d.can_decode().then(|| d.decode()).filter(|ins| !ins.is_invalid()))
    }

    pub fn data_refs(code: &[u8], entry: u64) -> Vec<(u64, super::Access)> {
        let mut out = Vec::new();
        for ins in decoded(code, entry) {
            let access = match ins.code() {
                Code::Mov_r64_rm64 => super::Access::Load,
                Code::Mov_rm64_r64 => super::Access::Store,
                _ => continue,
            };
            if ins.is_ip_rel_memory_operand() {
                out.push((ins.ip_rel_memory_address(), access));
            }
        }
        out
    }

    pub fn past_stack_check(code: &[u8], entry: u64) -> Option<u64> {
        let mut info = InstructionInfoFactory::new();
        let mut past = None;
        for ins in decoded(code, entry).take(super::PROLOGUE_MAX) {
            match ins.flow_control() {
                FlowControl::ConditionalBranch if returns_to(code, entry, ins.near_branch_target()) => past = Some(ins.next_ip()),
                FlowControl::Next => {
                    let used = info.info(&ins);
                    let writes = |a: OpAccess| matches!(a, OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite);
                    let scratch_only = used.used_registers().iter().all(|u| !writes(u.access()) || matches!(u.register().full_register(), Register::R12 | Register::R13));
                    if !scratch_only || used.used_memory().iter().any(|m| writes(m.access())) {
                        break;
                    }
                }
                _ => break,
            }
        }
        past
    }

    /// Whether the block at `stub` jumps back to `entry` (after calling
    /// runtime.morestack) before any other unconditional transfer.
    fn returns_to(code: &[u8], entry: u64, stub: u64) -> bool {
        let Some(at) = stub.checked_sub(entry).and_then(|o| usize::try_from(o).ok()).filter(|&o| o < code.len()) else { return false };
        decoded(&code[at..], stub)
            .take(super::STUB_MAX)
            .find(|ins| matches!(ins.flow_control(), FlowControl::UnconditionalBranch | FlowControl::Return | FlowControl::IndirectBranch | FlowControl::Interrupt))
            .is_some_and(|ins| ins.flow_control() == FlowControl::UnconditionalBranch && ins.near_branch_target() == entry)
    }

    pub fn return_sites(code: &[u8], entry: u64, target: u64) -> Vec<u64> {
        decoded(code, entry).filter(|ins| ins.flow_control() == FlowControl::Call && ins.near_branch_target() == target).map(|ins| ins.next_ip()).collect()
    }

    /// (call address, static address in RAX) at direct calls to `targets`.
    pub fn first_args(code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
        let mut info = InstructionInfoFactory::new();
        let mut rax: Option<u64> = None;
        let mut out = Vec::new();
        for ins in decoded(code, entry) {
            if ins.code() == Code::Lea_r64_m && ins.op0_register() == Register::RAX && ins.is_ip_rel_memory_operand() {
                rax = Some(ins.ip_rel_memory_address());
                continue;
            }
            match ins.flow_control() {
                FlowControl::Call => {
                    if let Some(r) = rax.filter(|_| targets.contains(&ins.near_branch_target())) {
                        out.push((ins.ip(), r));
                    }
                    // The callee owns every register after a call.
                    rax = None;
                }
                FlowControl::Next | FlowControl::ConditionalBranch => {
                    let writes_rax = info
                        .info(&ins)
                        .used_registers()
                        .iter()
                        .any(|u| u.register().full_register() == Register::RAX && matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite));
                    if writes_rax {
                        rax = None;
                    }
                }
                _ => rax = None,
            }
        }
        out
    }
}

mod arm64 {
    use std::collections::HashSet;

    use super::Access;

    /// The byte offset a `B` or `BL` jumps by: imm26 words, signed.
    pub(super) fn imm26_offset(insn: u32) -> u64 {
        (((insn & 0x03ff_ffff) << 6) as i32 >> 4) as i64 as u64
    }

    /// What one instruction does with static addresses.
    enum Step {
        /// An 8-byte load or store at a known address.
        Ref(u64, Access),
        /// `BL target` with x0 holding a known address, or not.
        Call { pc: u64, target: u64, x0: Option<u64> },
    }

    /// Follows static addresses through registers in straight-line code:
    /// `ADRP` sets a page, `ADD #imm` adds to a known base (Go's linker
    /// writes `ADRP`+`ADD` into the register itself, or, in go1.19, through
    /// R27), `LDR`/`STR xT, [xN, #imm12 × 8]` use one. Anything else that
    /// may write a register forgets it; a call forgets them all.
    fn steps(code: &[u8], entry: u64) -> Vec<Step> {
        let mut regs = [None::<u64>; 32];
        let mut out = Vec::new();
        for (i, w) in code.chunks_exact(4).enumerate() {
            let pc = entry + 4 * i as u64;
            let insn = u32::from_le_bytes(w.try_into().expect("4-byte chunk"));
            let (rd, rn) = ((insn & 0x1f) as usize, ((insn >> 5) & 0x1f) as usize);
            let imm12 = u64::from((insn >> 10) & 0xfff);
            if insn & 0x9f00_0000 == 0x9000_0000 {
                // ADRP: immhi (23:5), immlo (30:29), 4 KiB pages.
                let imm = (((insn >> 5) & 0x7_ffff) << 2 | (insn >> 29) & 3) as u64;
                regs[rd] = Some((pc & !0xfff).wrapping_add(((imm << 43) as i64 >> 31) as u64));
            } else if insn & 0xff80_0000 == 0x9100_0000 {
                // ADD xd, xn, #imm12{, lsl #12} (64-bit).
                let imm = if insn & (1 << 22) != 0 { imm12 << 12 } else { imm12 };
                regs[rd] = regs[rn].map(|b| b.wrapping_add(imm));
            } else if insn & 0xffc0_0000 == 0xf940_0000 {
                if let Some(b) = regs[rn] {
                    out.push(Step::Ref(b.wrapping_add(8 * imm12), Access::Load));
                }
                regs[rd] = None;
            } else if insn & 0xffc0_0000 == 0xf900_0000 {
                if let Some(b) = regs[rn] {
                    out.push(Step::Ref(b.wrapping_add(8 * imm12), Access::Store));
                }
            } else if insn & 0xfc00_0000 == 0x9400_0000 {
                let off = imm26_offset(insn);
                out.push(Step::Call { pc, target: pc.wrapping_add(off), x0: regs[0] });
                regs = [None; 32];
            } else {
                regs[rd] = None;
            }
        }
        out
    }

    pub fn data_refs(code: &[u8], entry: u64) -> Vec<(u64, Access)> {
        steps(code, entry).into_iter().filter_map(|s| if let Step::Ref(a, acc) = s { Some((a, acc)) } else { None }).collect()
    }

    pub fn past_stack_check(code: &[u8], entry: u64) -> Option<u64> {
        let mut past = None;
        for (i, w) in code.chunks_exact(4).take(super::PROLOGUE_MAX).enumerate() {
            let pc = entry + 4 * i as u64;
            let insn = u32::from_le_bytes(w.try_into().expect("4-byte chunk"));
            let rd = insn & 0x1f;
            if insn & 0xff00_0010 == 0x5400_0000 {
                // B.cond: imm19 words from here.
                let target = pc.wrapping_add(((((insn >> 5) & 0x7_ffff) << 13) as i32 >> 11) as i64 as u64);
                // Any other branch this early is not Go's prologue.
                if !returns_to(code, entry, target) {
                    break;
                }
                past = Some(pc + 4);
                continue;
            }
            // The check's own instructions, each writing R16/R17 or only the
            // flags: LDR (64-bit, unsigned offset) of a stackguard; SUB/SUBS
            // (immediate) of the frame size; CMP, SUBS (shifted or extended
            // register) into XZR. For SUB (immediate) 31 is RSP, never scratch.
            let ldr = insn & 0xffc0_0000 == 0xf940_0000 && matches!(rd, 16 | 17);
            let sub_imm = insn & 0xff80_0000 == 0xd100_0000 && matches!(rd, 16 | 17);
            let subs_imm = insn & 0xff80_0000 == 0xf100_0000 && matches!(rd, 16 | 17 | 31);
            let subs_reg = (insn & 0xff20_0000 == 0xeb00_0000 || insn & 0xffe0_0000 == 0xeb20_0000) && matches!(rd, 16 | 17 | 31);
            if !(ldr || sub_imm || subs_imm || subs_reg) {
                break;
            }
        }
        past
    }

    /// Whether the block at `stub` ends with `B entry`: a plain branch
    /// (imm26 words), the first one after runtime.morestack's `BL`.
    fn returns_to(code: &[u8], entry: u64, stub: u64) -> bool {
        let Some(at) = stub.checked_sub(entry).and_then(|o| usize::try_from(o).ok()).filter(|&o| o < code.len() && o % 4 == 0) else { return false };
        code[at..]
            .chunks_exact(4)
            .take(super::STUB_MAX)
            .enumerate()
            .map(|(i, w)| (stub + 4 * i as u64, u32::from_le_bytes(w.try_into().expect("4-byte chunk"))))
            .find(|&(_, insn)| insn & 0xfc00_0000 == 0x1400_0000 || insn & 0xfffffc1f == 0xd65f_0000)
            .is_some_and(|(pc, insn)| insn & 0xfc00_0000 == 0x1400_0000 && pc.wrapping_add(imm26_offset(insn)) == entry)
    }

    pub fn return_sites(code: &[u8], entry: u64, target: u64) -> Vec<u64> {
        steps(code, entry).into_iter().filter_map(|s| if let Step::Call { pc, target: t, .. } = s { (t == target).then_some(pc + 4) } else { None }).collect()
    }

    /// (call address, static address in R0) at `BL`s to `targets`.
    pub fn first_args(code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
        steps(code, entry)
            .into_iter()
            .filter_map(|s| match s {
                Step::Call { pc, target, x0: Some(a) } if targets.contains(&target) => Some((pc, a)),
                _ => None,
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn adrp_add_bl() {
            // From go1.27.3 linux/arm64 runtime.gcControllerCommit:
            //   0x3d8e4 ADRP 1523712(PC), R0; 0x3d8e8 ADD $832, R0, R0;
            //   0x3d8ec CALL runtime.(*gcControllerState).commit (0x3d360).
            let code: Vec<u8> = [0x90000ba0u32, 0x910d0000, 0x97fffe9d].iter().flat_map(|w| w.to_le_bytes()).collect();
            let methods = HashSet::from([0x3d8ec - 4 * 0x163]);
            assert_eq!(first_args(&code, 0x3d8e4, &methods), vec![(0x3d8ec, (0x3d8e4 & !0xfff) + 1523712 + 832)]);
            // go1.27.3 linux/arm64 runtime.profilealloc: ADRP 1409024(PC), R27;
            // MOVD 1528(R27), R4 loads runtime.MemProfileRate (0x1805f8).
            let code: Vec<u8> = [0x90000adbu32, 0xf942ff64, 0xf9000464].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(data_refs(&code, 0x28c04), vec![(0x1805f8, crate::tracee::staticrefs::Access::Load)]);
            // go1.19 linux/arm64 runtime.profilealloc: ADRP 1490944(PC), R27;
            // ADD $856, R27, R27; MOVD (R27), R0 loads runtime.MemProfileRate.
            let code: Vec<u8> = [0x90000b7bu32, 0x910d637b, 0xf9400360].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(data_refs(&code, 0x1b9bc), vec![((0x1b9bc & !0xfff) + 1490944 + 856, crate::tracee::staticrefs::Access::Load)]);
            // A write to x0 in between (MOVD ZR, R0) drops it.
            let code: Vec<u8> = [0x90000ba0u32, 0x910d0000, 0xaa1f03e0, 0x97fffe9c].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(first_args(&code, 0x3d8e4, &methods), Vec::<(u64, u64)>::new());
        }

        /// go1.27.3 linux/arm64 runtime.mallocgc (0x839b0), its words at
        /// `prologue`, then NOPs up to its stub at 0x83b64.
        fn mallocgc_with(prologue: &[u32], back: u32) -> Vec<u8> {
            let mut words = prologue.to_vec();
            words.resize((0x83b64 - 0x839b0) / 4, 0xd503201f);
            // STP (R0, R1), 8(RSP); MOVB R2, 24(RSP); MOVD R30, R3;
            // CALL runtime.morestack_noctxt; LDP; MOVBU; JMP `back`.
            words.extend([0xa90087e0, 0x390063e2, 0xaa1e03e3, 0x94001430, 0xa94087e0, 0x394063e2, back]);
            words.iter().flat_map(|w| w.to_le_bytes()).collect()
        }

        #[test]
        fn past_the_stack_check_and_its_branch_to_morestack() {
            // MOVD 16(R28), R16; CMP R16, RSP; BLS 107(PC) (the stub);
            // MOVD.W R30, -48(RSP): the frame begins at 0x839bc.
            let check = [0xf9400b90, 0xeb3063ff, 0x54000d69, 0xf81d0ffe];
            assert_eq!(past_stack_check(&mallocgc_with(&check, 0x17ffff8d), 0x839b0), Some(0x839bc));
            // go1.27.3 runtime.gcStart's larger frame: MOVD 16(R28), R16; SUB
            // $176, RSP, R17; CMP R16, R17; BLS; SUB $304, RSP, R20.
            let big = [0xf9400b90, 0xd102c3f1, 0xeb10023f, 0x54000d69 - 0x20, 0xd104c3f4];
            assert_eq!(past_stack_check(&mallocgc_with(&big, 0x17ffff8d), 0x839b0), Some(0x839c0));
            // A stub that jumps elsewhere is not the morestack tail.
            assert_eq!(past_stack_check(&mallocgc_with(&check, 0x17ffff8c), 0x839b0), None);
            // A nosplit function begins with its frame.
            assert_eq!(past_stack_check(&mallocgc_with(&check[3..], 0x17ffff8d), 0x839b0), None);
            // A write to an argument register (MOVD ZR, R0) before the branch ends the prologue.
            assert_eq!(past_stack_check(&mallocgc_with(&[0xaa1f03e0, 0xeb3063ff, 0x54000d49], 0x17ffff8d), 0x839b0), None);
        }

        #[test]
        fn the_instruction_after_a_bl_to_the_target() {
            // go1.27.3 linux/arm64 runtime.gcMarkTermination.func3: MOVB ZR,
            // 2210(R27); 0x84ac4 CALL runtime.startTheWorldWithSema (0x5ce00);
            // MOVD -8(RSP), R29; MOVD.P 64(RSP), R30; RET; MOVD R30, R3;
            // 0x84ad8 CALL runtime.morestack.abi0.
            let code: Vec<u8> = [0x39228b7fu32, 0x97ff60cf, 0xf85f83fd, 0xf84407fe, 0xd65f03c0, 0xaa1e03e3, 0x94002eca].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(return_sites(&code, 0x84ac0, 0x5ce00), vec![0x84ac8]);
            assert_eq!(return_sites(&code, 0x84ac0, 0x5ce04), Vec::<u64>::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tracee::binary::Arch;

    /// go1.27.3 linux/amd64 runtime.mallocgc (0x478c20): `prologue`, NOPs up
    /// to its stub at 0x478dc6, and the stub: MOVQ AX, 0x8(SP); MOVQ BX,
    /// 0x10(SP); MOVB CL, 0x18(SP); CALL runtime.morestack_noctxt; three
    /// reloads; JMP runtime.mallocgc (`back` the jump's own bytes).
    fn mallocgc_with(prologue: &[u8], back: [u8; 5]) -> Vec<u8> {
        let mut code = prologue.to_vec();
        code.resize(0x478dc6 - 0x478c20, 0x90);
        code.extend([0x48, 0x89, 0x44, 0x24, 0x08, 0x48, 0x89, 0x5c, 0x24, 0x10, 0x88, 0x4c, 0x24, 0x18, 0xe8, 0x47, 0x55, 0x00, 0x00]);
        code.extend([0x48, 0x8b, 0x44, 0x24, 0x08, 0x48, 0x8b, 0x5c, 0x24, 0x10, 0x0f, 0xb6, 0x4c, 0x24, 0x18]);
        code.extend(back);
        code
    }

    #[test]
    fn past_the_stack_check_and_its_jbe_to_morestack() {
        const BACK: [u8; 5] = [0xe9, 0x33, 0xfe, 0xff, 0xff];
        // CMPQ SP, 0x10(R14); JBE 0x478dc6; PUSHQ BP: the frame begins at 0x478c2a.
        let check = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x9c, 0x01, 0x00, 0x00, 0x55];
        assert_eq!(super::past_stack_check(Arch::X86_64, &mallocgc_with(&check, BACK), 0x478c20), Some(0x478c2a));
        // A larger frame's: LEAQ -0x28(SP), R12; CMPQ R12, 0x10(R14); JBE; PUSHQ BP
        // (go1.27.3 runtime.mapassign_faststr), its JBE 5 bytes further on.
        let leaq = [0x4c, 0x8d, 0x64, 0x24, 0xd8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x97, 0x01, 0x00, 0x00, 0x55];
        assert_eq!(super::past_stack_check(Arch::X86_64, &mallocgc_with(&leaq, BACK), 0x478c20), Some(0x478c2f));
        // A stub that jumps one byte past the entry is not the morestack tail.
        assert_eq!(super::past_stack_check(Arch::X86_64, &mallocgc_with(&check, [0xe9, 0x34, 0xfe, 0xff, 0xff]), 0x478c20), None);
        // No check: a nosplit function begins with PUSHQ BP.
        assert_eq!(super::past_stack_check(Arch::X86_64, &mallocgc_with(&check[10..], BACK), 0x478c20), None);
        // LEAQ into an argument register (AX) before the branch ends the prologue.
        let into_ax = [0x48, 0x8d, 0x44, 0x24, 0xd8, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x97, 0x01, 0x00, 0x00];
        assert_eq!(super::past_stack_check(Arch::X86_64, &mallocgc_with(&into_ax, BACK), 0x478c20), None);
    }

    #[test]
    fn the_instruction_after_a_call_rel32_to_the_target() {
        // go1.22.10 linux/amd64 runtime.gcStart.func3: MOVZX 0(SI), BX; MOVQ
        // 0x8(SI), CX; XORL AX, AX; 0x41a94d CALL runtime.startTheWorldWithSema
        // (0x43c9e0); 0x41a952 MOVQ 0x20(SP), DX.
        let code = [0x0f, 0xb6, 0x1e, 0x48, 0x8b, 0x4e, 0x08, 0x31, 0xc0, 0xe8, 0x8e, 0x20, 0x02, 0x00, 0x48, 0x8b, 0x54, 0x24, 0x20];
        let arch = crate::tracee::binary::Arch::X86_64;
        assert_eq!(super::return_sites(arch, &code, 0x41a944, 0x43c9e0), vec![0x41a952]);
        assert_eq!(super::return_sites(arch, &code, 0x41a944, 0x43c9e1), Vec::<u64>::new());
        assert!(super::may_call(arch, &code, 0x41a944, &std::collections::HashSet::from([0x43c9e0])));
    }
}
