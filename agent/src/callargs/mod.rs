//! Static first arguments at calls: which link-time address a function
//! passes as its first register argument to a known callee.
//!
//! Go loads the address of a package variable or a type descriptor into the
//! first argument register right before the call (`LEAQ sym(SB), AX` on
//! amd64, `ADRP`+`ADD` into R0 on arm64; Go's register ABI puts the first
//! integer argument in RAX / R0, cmd/compile/abi-internal.md). gcprobe uses
//! it to find `&runtime.gcController` in stripped binaries and the map types
//! a program deletes from.
use std::collections::HashSet;

use crate::binary::Arch;

/// (call address, static first argument) at each direct call in `code`
/// (starting at link-time `entry`) to one of `targets`.
pub fn first_args(arch: Arch, code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
    match arch {
        Arch::X86_64 => x86::first_args(code, entry, targets),
        Arch::Aarch64 => arm64::first_args(code, entry, targets),
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

    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};

    /// (call address, static address in RAX) at direct calls to `targets`.
    pub fn first_args(code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
        let mut d = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
        let mut info = InstructionInfoFactory::new();
        let mut rax: Option<u64> = None;
        let mut out = Vec::new();
        while d.can_decode() {
            let ins = d.decode();
            if ins.is_invalid() {
                break;
            }
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

    /// (call address, static address in R0) at `BL`s to `targets`: `ADRP x0,
    /// page` then `ADD x0, x0, #lo12`, with nothing else writing x0 before the call.
    pub fn first_args(code: &[u8], entry: u64, targets: &HashSet<u64>) -> Vec<(u64, u64)> {
        let mut page: Option<u64> = None;
        let mut x0: Option<u64> = None;
        let mut out = Vec::new();
        for (i, w) in code.chunks_exact(4).enumerate() {
            let pc = entry + 4 * i as u64;
            let insn = u32::from_le_bytes(w.try_into().expect("4-byte chunk"));
            let rd = insn & 0x1f;
            if insn & 0x9f00_0000 == 0x9000_0000 {
                // ADRP: immhi (23:5), immlo (30:29), 4 KiB pages.
                if rd == 0 {
                    let imm = (((insn >> 5) & 0x7_ffff) << 2 | (insn >> 29) & 3) as u64;
                    let off = ((imm << 43) as i64 >> 31) as u64; // sign-extend 21 bits, × 4096
                    page = Some((pc & !0xfff).wrapping_add(off));
                    x0 = None;
                    continue;
                }
            } else if insn & 0xffc0_03ff == 0x9100_0000 {
                // ADD x0, x0, #imm12 (64-bit, unshifted).
                if let Some(p) = page.take() {
                    x0 = Some(p + u64::from((insn >> 10) & 0xfff));
                    continue;
                }
            } else if insn & 0xfc00_0000 == 0x9400_0000 {
                // BL imm26.
                let off = (((insn & 0x03ff_ffff) << 6) as i32 >> 4) as i64 as u64;
                if let Some(r) = x0.filter(|_| targets.contains(&pc.wrapping_add(off))) {
                    out.push((pc, r));
                }
                (page, x0) = (None, None);
                continue;
            }
            // Conservatively: anything whose destination field is x0 may write it.
            if rd == 0 {
                (page, x0) = (None, None);
            }
        }
        out
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
            // A write to x0 in between (MOVD ZR, R0) drops it.
            let code: Vec<u8> = [0x90000ba0u32, 0x910d0000, 0xaa1f03e0, 0x97fffe9c].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(first_args(&code, 0x3d8e4, &methods), Vec::<(u64, u64)>::new());
        }
    }
}
