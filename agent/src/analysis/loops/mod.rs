//! Which loop drives a hot callsite: the innermost natural loop of the
//! function's control-flow graph that contains the call.
//!
//! Go's compiler may lay the growslice slow path out of line and jump back
//! into the loop, so address ranges between back-edges are not enough; the
//! loop is found the textbook way: basic blocks, dominators, back-edges
//! (an edge to a block that dominates its source), natural-loop bodies.
//! Decoding is per architecture; the analysis is not.
mod arm64;
mod x86;

use std::collections::{BTreeMap, BTreeSet};

use crate::tracee::binary::Arch;

/// How control leaves an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Next,
    Jump(u64),
    CondJump(u64),
    /// A direct call, with its target when known.
    Call(Option<u64>),
    /// Return, indirect jump, trap: no successor inside the function.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub ip: u64,
    pub len: u64,
    pub flow: Flow,
}

pub fn decode(arch: Arch, code: &[u8], entry: u64) -> Vec<Insn> {
    match arch {
        Arch::X86_64 => x86::decode(code, entry),
        Arch::Aarch64 => arm64::decode(code, entry),
    }
}

/// A natural loop: its header block's first address and every instruction in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    pub head: u64,
    /// Addresses of the loop's instructions, ascending.
    pub insns: Vec<u64>,
    /// Direct call targets inside the loop.
    pub calls: Vec<u64>,
}

struct Block {
    start: u64,
    insns: Vec<usize>,
    succs: Vec<usize>,
}

/// The innermost loop containing the instruction at `pc` (use the CALL's own
/// address, or a return address minus one).
pub fn innermost_loop(insns: &[Insn], pc: u64) -> Option<Loop> {
    let blocks = blocks(insns);
    if blocks.is_empty() {
        return None;
    }
    let target_block = blocks.iter().position(|b| {
        b.insns.iter().any(|&i| pc >= insns[i].ip && pc < insns[i].ip + insns[i].len)
    })?;
    let idom = dominators(&blocks);
    let dominates = |a: usize, mut b: usize| loop {
        if a == b {
            return true;
        }
        match idom[b] {
            Some(p) if p != b => b = p,
            _ => return false,
        }
    };
    let mut preds = vec![Vec::new(); blocks.len()];
    for (i, b) in blocks.iter().enumerate() {
        for &s in &b.succs {
            preds[s].push(i);
        }
    }
    // Merge back-edges by header: one natural loop per header.
    let mut bodies: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (u, b) in blocks.iter().enumerate() {
        for &h in &b.succs {
            if idom[u].is_some() && dominates(h, u) {
                let body = bodies.entry(h).or_insert_with(|| BTreeSet::from([h]));
                let mut stack = vec![u];
                while let Some(n) = stack.pop() {
                    if body.insert(n) {
                        // Unreachable blocks are data decoded as code (arm64
                        // keeps literal pools in a function's text): no part of a loop.
                        stack.extend(preds[n].iter().copied().filter(|&p| idom[p].is_some()));
                    }
                }
            }
        }
    }
    let (head, body) = bodies.into_iter().filter(|(_, body)| body.contains(&target_block)).min_by_key(|(_, body)| body.len())?;
    let mut ips: Vec<u64> = body.iter().flat_map(|&b| blocks[b].insns.iter().map(|&i| insns[i].ip)).collect();
    ips.sort_unstable();
    let calls = body
        .iter()
        .flat_map(|&b| blocks[b].insns.iter())
        .filter_map(|&i| match insns[i].flow {
            Flow::Call(Some(t)) => Some(t),
            _ => None,
        })
        .collect();
    Some(Loop { head: blocks[head].start, insns: ips, calls })
}

fn blocks(insns: &[Insn]) -> Vec<Block> {
    let Some(first) = insns.first() else { return Vec::new() };
    let end = insns.last().map(|i| i.ip + i.len).unwrap_or(first.ip);
    let inside = |t: u64| t >= first.ip && t < end;
    let mut leaders = BTreeSet::from([first.ip]);
    for (k, i) in insns.iter().enumerate() {
        let next = insns.get(k + 1).map(|n| n.ip);
        match i.flow {
            Flow::Jump(t) | Flow::CondJump(t) => {
                if inside(t) {
                    leaders.insert(t);
                }
                leaders.extend(next);
            }
            Flow::Stop => leaders.extend(next),
            Flow::Next | Flow::Call(_) => {}
        }
    }
    let index_of: BTreeMap<u64, usize> = insns.iter().enumerate().map(|(k, i)| (i.ip, k)).collect();
    // A jump into the middle of an instruction (data or misdecode) is ignored.
    leaders.retain(|l| index_of.contains_key(l));
    let starts: Vec<u64> = leaders.iter().copied().collect();
    let block_of: BTreeMap<u64, usize> = starts.iter().enumerate().map(|(b, &s)| (s, b)).collect();
    let mut out: Vec<Block> = Vec::with_capacity(starts.len());
    for (b, &s) in starts.iter().enumerate() {
        let first_k = index_of[&s];
        let last_k = starts.get(b + 1).map(|n| index_of[n]).unwrap_or(insns.len());
        let ks: Vec<usize> = (first_k..last_k).collect();
        let last = &insns[*ks.last().expect("non-empty block")];
        let fall = starts.get(b + 1).map(|_| b + 1);
        let jump = |t: u64| block_of.get(&t).copied();
        let succs = match last.flow {
            Flow::Jump(t) => jump(t).into_iter().collect(),
            Flow::CondJump(t) => jump(t).into_iter().chain(fall).collect(),
            Flow::Stop => Vec::new(),
            Flow::Next | Flow::Call(_) => fall.into_iter().collect(),
        };
        out.push(Block { start: s, insns: ks, succs });
    }
    out
}

/// Immediate dominators (Cooper, Harvey, Kennedy), entry = block 0.
/// `None` for blocks unreachable from the entry.
fn dominators(blocks: &[Block]) -> Vec<Option<usize>> {
    // Reverse postorder.
    let n = blocks.len();
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let mut stack = vec![(0usize, 0usize)];
    seen[0] = true;
    while let Some((b, i)) = stack.pop() {
        if let Some(&s) = blocks[b].succs.get(i) {
            stack.push((b, i + 1));
            if !seen[s] {
                seen[s] = true;
                stack.push((s, 0));
            }
        } else {
            order.push(b);
        }
    }
    order.reverse();
    let mut rpo = vec![usize::MAX; n];
    for (k, &b) in order.iter().enumerate() {
        rpo[b] = k;
    }
    let mut preds = vec![Vec::new(); n];
    for (i, b) in blocks.iter().enumerate() {
        for &s in &b.succs {
            preds[s].push(i);
        }
    }
    let mut idom: Vec<Option<usize>> = vec![None; n];
    idom[0] = Some(0);
    let intersect = |idom: &Vec<Option<usize>>, mut a: usize, mut b: usize| {
        while a != b {
            while rpo[a] > rpo[b] {
                a = idom[a].expect("processed");
            }
            while rpo[b] > rpo[a] {
                b = idom[b].expect("processed");
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &b in order.iter().skip(1) {
            let mut new = None;
            for &p in &preds[b] {
                if idom[p].is_some() {
                    new = Some(match new {
                        None => p,
                        Some(cur) => intersect(&idom, p, cur),
                    });
                }
            }
            if new.is_some() && idom[b] != new {
                idom[b] = new;
                changed = true;
            }
        }
    }
    idom
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(ip: u64, flow: Flow) -> Insn {
        Insn { ip, len: 1, flow }
    }

    #[test]
    fn finds_the_innermost_of_nested_loops() {
        // 0: entry
        // 1: outer head
        // 2: inner head
        // 3: call (in inner)
        // 4: cond jump back to inner head (inner latch)
        // 5: cond jump back to outer head (outer latch)
        // 6: return
        let code = [
            i(0, Flow::Next),
            i(1, Flow::Next),
            i(2, Flow::Next),
            i(3, Flow::Call(Some(0x99))),
            i(4, Flow::CondJump(2)),
            i(5, Flow::CondJump(1)),
            i(6, Flow::Stop),
        ];
        let l = innermost_loop(&code, 3).unwrap();
        assert_eq!(l.head, 2);
        assert_eq!(l.insns, vec![2, 3, 4]);
        assert_eq!(l.calls, vec![0x99]);
        let outer = innermost_loop(&code, 5).unwrap();
        assert_eq!(outer.head, 1);
        assert!(innermost_loop(&code, 6).is_none());
    }

    #[test]
    fn out_of_line_slow_path_belongs_to_the_loop() {
        // 0: entry; 1: head; 2: cond jump to slow path at 6; 3: body;
        // 4: cond jump back to head; 5: return; 6: call growslice; 7: jump back to 3.
        let code = [
            i(0, Flow::Next),
            i(1, Flow::Next),
            i(2, Flow::CondJump(6)),
            i(3, Flow::Next),
            i(4, Flow::CondJump(1)),
            i(5, Flow::Stop),
            i(6, Flow::Call(Some(0x77))),
            i(7, Flow::Jump(3)),
        ];
        let l = innermost_loop(&code, 6).expect("slow path is inside the loop");
        assert_eq!(l.head, 1);
        assert!(l.insns.contains(&6) && l.insns.contains(&7));
    }

    #[test]
    fn data_after_a_return_is_not_part_of_a_loop() {
        // 0: entry; 1: head, calls; 2: cond jump back to head; 3: return;
        // 4: a literal-pool word that decodes as a call and a jump into the loop.
        let code = [
            i(0, Flow::Next),
            i(1, Flow::Call(Some(0x77))),
            i(2, Flow::CondJump(1)),
            i(3, Flow::Stop),
            i(4, Flow::Call(Some(0x66))),
            i(5, Flow::Jump(2)),
        ];
        let l = innermost_loop(&code, 1).unwrap();
        assert_eq!((l.head, l.insns, l.calls), (1, vec![1, 2], vec![0x77]));
    }

    #[test]
    fn straight_line_code_has_no_loop() {
        let code = [i(0, Flow::Next), i(1, Flow::Call(Some(5))), i(2, Flow::Stop)];
        assert!(innermost_loop(&code, 1).is_none());
        assert!(innermost_loop(&[], 0).is_none());
    }
}
