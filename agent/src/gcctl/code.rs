//! `&runtime.gcController` from machine code, for binaries without a symbol
//! table.
//!
//! The runtime calls the controller's methods on the global itself
//! (`gcController.update(...)` in runtime/mcache.go, `.commit` in
//! gcControllerCommit, `.startCycle` in gcStart, ...). A pointer receiver is
//! the first register argument, so each such call is preceded by the
//! variable's address loaded into it: `LEAQ runtime.gcController(SB), AX` on
//! amd64, `ADRP`+`ADD` into R0 on arm64. `.gopclntab` names the methods, so
//! the calls are known; the address every call agrees on is the variable's.
use std::collections::{BTreeMap, HashSet};

use crate::{binary::Arch, plan::Symbols};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FindError {
    #[error("no runtime.(*gcControllerState) method is named in the binary")]
    NoMethods,
    #[error("no call passes runtime.gcController's address to its methods")]
    NoCalls,
    #[error("calls to runtime.(*gcControllerState) methods disagree on the receiver ({0} addresses)")]
    Ambiguous(usize),
}

/// Callers that pass `&gcController` to its methods in every supported
/// runtime (mcache refill and release, GC start and end, the setters).
const CALLERS: [&str; 8] = [
    "runtime.gcControllerCommit",
    "runtime.gcinit",
    "runtime.gcStart",
    "runtime.gcMarkDone",
    "runtime.gcMarkTermination",
    "runtime.(*mcache).refill",
    "runtime.(*mcache).releaseAll",
    "runtime.(*mcache).allocLarge",
];

/// The address and how many calls agreed on it; at least two must, and none may disagree.
pub fn find_controller(syms: &Symbols<'_>) -> Result<(u64, u32), FindError> {
    let methods: HashSet<u64> = syms
        .names()
        .into_iter()
        .filter(|n| n.starts_with("runtime.(*gcControllerState)."))
        .filter_map(|n| syms.lookup(&n).map(|s| s.addr))
        .collect();
    if methods.is_empty() {
        return Err(FindError::NoMethods);
    }
    let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
    for caller in CALLERS {
        let Some(f) = syms.lookup(caller) else { continue };
        let Some(code) = syms.bin.bytes_at(f.addr, f.size as usize) else { continue };
        let receivers = match syms.bin.arch {
            Arch::X86_64 => x86::receivers(code, f.addr, &methods),
            Arch::Aarch64 => arm64::receivers(code, f.addr, &methods),
        };
        for r in receivers {
            *votes.entry(r).or_default() += 1;
        }
    }
    match votes.len() {
        0 => Err(FindError::NoCalls),
        1 => {
            let (&addr, &n) = votes.iter().next().expect("one entry");
            if n >= 2 { Ok((addr, n)) } else { Err(FindError::NoCalls) }
        }
        n => Err(FindError::Ambiguous(n)),
    }
}

mod x86 {
    use std::collections::HashSet;

    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};

    /// Static addresses in RAX at direct calls to `methods`.
    pub fn receivers(code: &[u8], entry: u64, methods: &HashSet<u64>) -> Vec<u64> {
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
                    if let Some(r) = rax.filter(|_| methods.contains(&ins.near_branch_target())) {
                        out.push(r);
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

    /// Static addresses in R0 at `BL`s to `methods`: `ADRP x0, page` then
    /// `ADD x0, x0, #lo12`, with nothing else writing x0 before the call.
    pub fn receivers(code: &[u8], entry: u64, methods: &HashSet<u64>) -> Vec<u64> {
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
                if let Some(r) = x0.filter(|_| methods.contains(&pc.wrapping_add(off))) {
                    out.push(r);
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
            assert_eq!(receivers(&code, 0x3d8e4, &methods), vec![(0x3d8e4 & !0xfff) + 1523712 + 832]);
            // A write to x0 in between (MOVD ZR, R0) drops it.
            let code: Vec<u8> = [0x90000ba0u32, 0x910d0000, 0xaa1f03e0, 0x97fffe9c].iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(receivers(&code, 0x3d8e4, &methods), Vec::<u64>::new());
        }
    }
}
