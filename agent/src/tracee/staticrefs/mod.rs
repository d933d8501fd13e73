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
            insn & 0xfc00_0000 == 0x9400_0000 && targets.contains(&(entry + 4 * i as u64).wrapping_add((((insn & 0x03ff_ffff) << 6) as i32 >> 4) as i64 as u64))
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
                let off = (((insn & 0x03ff_ffff) << 6) as i32 >> 4) as i64 as u64;
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
