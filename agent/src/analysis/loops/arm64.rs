//! arm64 decoding through yaxpeax-arm: just enough to build a CFG.
//!
//! Chosen over bad64 and disarm64 (2026-12). All three classified every
//! branch (B, B.cond, CBZ/CBNZ, TBZ/TBNZ, BL, BLR, BR, RET, BRK, UDF) and its
//! target exactly as `go tool objdump` did over the whole .text of
//! tests/fixtures/loopkinds built for arm64 with Go 1.19, 1.21.13 and 1.27.3
//! (411k instructions). They differ elsewhere:
//! - bad64 (Apache-2.0, 0.13.0, 2026-09) wraps Binary Ninja's C decoder: its
//!   build runs bindgen, so every build machine needs libclang and clang's
//!   headers besides a C compiler.
//! - disarm64 (MIT/Unlicense, 0.2.0, 2026-07) is pure Rust but rejects the
//!   `STXRB` encodings Go's assembler emits (Rt2 not all ones, in the
//!   runtime's atomics) and exposes no branch targets: the offset would be
//!   re-extracted from the bits here.
//! - yaxpeax-arm (0BSD, 0.5.0, 2026-09) is pure Rust, hands PC offsets over
//!   as operands, and its only departure from Go's disassembler is calling a
//!   dozen unallocated data words UDF, which stops a block as an invalid
//!   word would.
use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode, Operand};

use super::{Flow, Insn};

pub fn decode(code: &[u8], entry: u64) -> Vec<Insn> {
    let d = InstDecoder::default();
    code.chunks_exact(4)
        .enumerate()
        .map(|(k, word)| {
            let ip = entry + 4 * k as u64;
            // Fixed width: an undecodable word (data in text) ends its block
            // and decoding goes on at the next word.
            let flow = d.decode(&mut U8Reader::new(word)).map_or(Flow::Stop, |ins| flow(ip, &ins.opcode, &ins.operands));
            Insn { ip, len: 4, flow }
        })
        .collect()
}

fn flow(ip: u64, op: &Opcode, operands: &[Operand; 4]) -> Flow {
    let target = || operands.iter().find_map(|o| if let Operand::PCOffset(off) = o { Some(ip.wrapping_add(*off as u64)) } else { None });
    match op {
        Opcode::B => target().map_or(Flow::Stop, Flow::Jump),
        Opcode::Bcc(_) | Opcode::BCcc(_) | Opcode::CBZ | Opcode::CBNZ | Opcode::TBZ | Opcode::TBNZ => target().map_or(Flow::Stop, Flow::CondJump),
        Opcode::BL => Flow::Call(target()),
        Opcode::BLR | Opcode::BLRAA | Opcode::BLRAAZ | Opcode::BLRAB | Opcode::BLRABZ => Flow::Call(None),
        Opcode::BR
        | Opcode::BRAA
        | Opcode::BRAAZ
        | Opcode::BRAB
        | Opcode::BRABZ
        | Opcode::RET
        | Opcode::RETAA
        | Opcode::RETAB
        | Opcode::ERET
        | Opcode::ERETAA
        | Opcode::ERETAB
        | Opcode::UDF
        | Opcode::BRK
        | Opcode::HLT => Flow::Stop,
        _ => Flow::Next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::loops::innermost_loop;

    fn bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// main.doubled of tests/fixtures/loopkinds, Go 1.27.3 linux/arm64, at
    /// 0xa3d20 (runtime.growslice at 0x85a50): `for _, v := range xs` with
    /// the append's slow path laid out after the loop and jumping back.
    const DOUBLED: [u32; 76] = [
        0xf9400b90, 0xd10043f1, 0xeb10023f, 0x54000849, 0xf8170ffe, 0xf81f83fd, 0xd10023fd, 0xf9004fe0, 0xf90053e1, 0xaa1f03e5, 0xaa1f03e6, 0xaa1f03e7, 0xaa1f03e2,
        0xaa1f03e3, 0x14000006, 0xd100050a, 0x8b090129, 0xf82a78e9, 0x910004a5, 0xaa0803e3, 0xeb05003f, 0x5400040d, 0x91000468, 0xf8657809, 0xeb08005f, 0x54fffec2,
        0xf90043e5, 0xf9002fe9, 0x39015fe6, 0xf100111f, 0x5400012c, 0x37000106, 0xb50000e3, 0x910183e7, 0xa9007cff, 0xa9017cff, 0xb27e03e2, 0xb24003e6, 0x17ffffe9,
        0xaa0703e0, 0xaa0803e1, 0xb24003e3, 0xb0000624, 0x910ec084, 0x97ff8720, 0xf94043e5, 0xf9402fe9, 0xaa0103e8, 0xaa0003e7, 0x39415fe6, 0xf9404fe0, 0xf94053e1,
        0x17ffffdb, 0x910243e4, 0x910003e5, 0xcb050084, 0xaa0703e0, 0xcb0500e5, 0xeb0400bf, 0x540000c2, 0xaa0003e1, 0xaa0303e2, 0xb27d03e0, 0x97ff1465, 0xaa0103e3,
        0xaa0303e1, 0xf85f83fd, 0xf84907fe, 0xd65f03c0, 0xa90087e0, 0xf9000fe2, 0xaa1e03e3, 0x97ff8fc0, 0xa94087e0, 0xf9400fe2, 0x17ffffb5,
    ];

    #[test]
    fn go_branches_decode_with_their_targets() {
        let insns = decode(&bytes(&DOUBLED), 0xa3d20);
        assert_eq!(insns.len(), 76);
        assert!(insns.iter().enumerate().all(|(k, i)| i.ip == 0xa3d20 + 4 * k as u64 && i.len == 4));
        let at = |ip: u64| insns[((ip - 0xa3d20) / 4) as usize].flow;
        assert_eq!(at(0xa3d20), Flow::Next); // MOVD 16(R28), R16
        assert_eq!(at(0xa3d2c), Flow::CondJump(0xa3e34)); // BLS 66(PC): to morestack
        assert_eq!(at(0xa3d58), Flow::Jump(0xa3d70)); // JMP 6(PC)
        assert_eq!(at(0xa3d74), Flow::CondJump(0xa3df4)); // BLE 32(PC)
        assert_eq!(at(0xa3d84), Flow::CondJump(0xa3d5c)); // BCS -10(PC)
        assert_eq!(at(0xa3d9c), Flow::CondJump(0xa3dbc)); // TBNZ $0, R6, 8(PC)
        assert_eq!(at(0xa3da0), Flow::CondJump(0xa3dbc)); // CBNZ R3, 7(PC)
        assert_eq!(at(0xa3dd0), Flow::Call(Some(0x85a50))); // CALL runtime.growslice
        assert_eq!(at(0xa3e30), Flow::Stop); // RET
        assert_eq!(at(0xa3e4c), Flow::Jump(0xa3d20)); // JMP main.doubled
    }

    #[test]
    fn the_range_loop_holds_its_out_of_line_growslice_call() {
        let insns = decode(&bytes(&DOUBLED), 0xa3d20);
        // A return address minus one, as a growslice stack gives it.
        let l = innermost_loop(&insns, 0xa3dd4 - 1).expect("growslice is called inside the loop");
        // CMP R5, R1; BLE: the range's bounds check, line 26.
        assert_eq!(l.head, 0xa3d70);
        assert_eq!(l.calls, vec![0x85a50]);
        assert_eq!((l.insns.first(), l.insns.last()), (Some(&0xa3d5c), Some(&0xa3df0)));
        assert!(!l.insns.contains(&0xa3df4));
        // The morestack tail jumps back to the entry: a loop, but not this one.
        assert!(innermost_loop(&insns, 0xa3e40).is_some_and(|m| m.head == 0xa3d20 && !m.insns.contains(&0xa3dd0)));
    }

    #[test]
    fn calls_returns_and_traps_from_the_runtime() {
        // Go 1.27.3 linux/arm64: internal/cpu.Initialize `CALL (R0)` at 0x11b20,
        // internal/abi.(*Type).ExportedMethods `JMP (R27)` at 0x111a8,
        // internal/abi.BoundsDecode `TBZ $0, R6, 7(PC)` at 0x11044,
        // internal/abi.Kind.String `CBZ R4, 10(PC)` at 0x11120,
        // debugCall32 `BRK $0` at 0x87640, and the zero padding after
        // internal/abi.BoundsDecode at 0x110d4 (UDF #0).
        let one = |w: u32, ip: u64| decode(&w.to_le_bytes(), ip)[0].flow;
        assert_eq!(one(0xd63f0000, 0x11b20), Flow::Call(None));
        assert_eq!(one(0xd61f0360, 0x111a8), Flow::Stop);
        assert_eq!(one(0x360000e6, 0x11044), Flow::CondJump(0x11060));
        assert_eq!(one(0xb4000144, 0x11120), Flow::CondJump(0x11148));
        assert_eq!(one(0xd4200000, 0x87640), Flow::Stop);
        assert_eq!(one(0x00000000, 0x110d4), Flow::Stop);
        // A trailing partial word is not an instruction.
        assert_eq!(decode(&[0xc0, 0x03, 0x5f, 0xd6, 0x00, 0x00], 0x1000), vec![Insn { ip: 0x1000, len: 4, flow: Flow::Stop }]);
    }
}
