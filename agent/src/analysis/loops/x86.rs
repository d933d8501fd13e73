//! x86_64 decoding through iced-x86: just enough to build a CFG.
use iced_x86::{Decoder, DecoderOptions, FlowControl};

use super::{Flow, Insn};

pub fn decode(code: &[u8], entry: u64) -> Vec<Insn> {
    let mut d = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let ins = d.decode();
        let flow = match ins.flow_control() {
            FlowControl::Next | FlowControl::XbeginXabortXend => Flow::Next,
            FlowControl::UnconditionalBranch => Flow::Jump(ins.near_branch_target()),
            FlowControl::ConditionalBranch => Flow::CondJump(ins.near_branch_target()),
            FlowControl::Call => Flow::Call(Some(ins.near_branch_target())),
            FlowControl::IndirectCall => Flow::Call(None),
            FlowControl::Return | FlowControl::IndirectBranch | FlowControl::Interrupt | FlowControl::Exception => Flow::Stop,
        };
        out.push(Insn { ip: ins.ip(), len: ins.len() as u64, flow });
        if ins.is_invalid() {
            break;
        }
    }
    out
}
