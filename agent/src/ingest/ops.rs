//! The payload of an OPS frame: every change made to the aggregator, in the
//! order the live session made it, so a replay reaches the same state.
//!
//! ```text
//! op = tag:u8 body
//!   1 RING        len:u32 record[len]          a ring-buffer record as read
//!   2 TOTALS      n:u32 (stack_id:u64 probe_id:u32 size_bucket:u32 count:u64 bytes:u64)[n]
//!                                              kernel running totals that changed
//!   3 BEGIN_BURST t_s:f64                      seconds since the session started
//!   4 END_BURST   window_s:f64
//!   5 MEM_RATE    rate:u64                     runtime.MemProfileRate as read
//!   6 MAP_LENS    n:u32 (addr:u64 has:u8 len:u64)[n]   map lengths read at a GC
//!   7 CHECKPOINT  len:u32 json[len]            the session's progress (see meta)
//!   8 GC_SETTINGS ktime:u64 gc_percent:i32 memory_limit:i64 heap_minimum:u64 total_alloc:u64
//!                 has_cpu:u8 gc_cpu_ns:u64 total_cpu_ns:u64
//!                                              runtime.gcController as read on the timer
//!   9 MAP_LENS_AT ktime:u64 n:u32 (addr:u64 has:u8 len:u64)[n]
//!                                              map lengths read on the timer (6 is the older, untimed form)
//!  10 AGG_STACKS  n:u32 (stack_id:u64 len:u32 frame:u64[len])[n]
//!                                              the kernel's stack table as known (a file that continues a session)
//!  11 AGG_SEEN    n:u32 (stack_id:u64 probe_id:u32 size_bucket:u32 count:u64 bytes:u64)[n]
//!                                              the kernel's running totals as last read: a baseline, not counted
//!  12 GROWTH_CALLERS (has:u8 pc:u64)[2]        growslice's calls to mallocgc as the kernel sent them once
//! ```
//!
//! A recording that continues a session begun in an earlier file (node
//! mode's rotation) starts with AGG_STACKS, AGG_SEEN and GROWTH_CALLERS:
//! what the kernel's later records and totals are read against.
//! Integers are little-endian. Ring records are kept byte for byte as the
//! kernel wrote them (native order: little-endian on both supported hosts).
use gcprobe_common::{AggKey, AggValue};

const RING: u8 = 1;
const TOTALS: u8 = 2;
const BEGIN_BURST: u8 = 3;
const END_BURST: u8 = 4;
const MEM_RATE: u8 = 5;
const MAP_LENS: u8 = 6;
const CHECKPOINT: u8 = 7;
const GC_SETTINGS: u8 = 8;
const MAP_LENS_AT: u8 = 9;
const AGG_STACKS: u8 = 10;
const AGG_SEEN: u8 = 11;
const GROWTH_CALLERS: u8 = 12;

#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    Ring(&'a [u8]),
    Totals(Vec<(AggKey, AggValue)>),
    BeginBurst { t_s: f64 },
    EndBurst { window_s: f64 },
    MemProfileRate(u64),
    MapLens(Vec<(u64, Option<u64>)>),
    Checkpoint(&'a [u8]),
    GcSettings { ktime: u64, settings: crate::tracee::gcctl::Settings },
    MapLensAt { ktime: u64, reads: Vec<(u64, Option<u64>)> },
    AggStacks(Vec<(u64, Box<[u64]>)>),
    AggSeen(Vec<(AggKey, AggValue)>),
    GrowthCallers([Option<u64>; 2]),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("OPS frame is malformed at byte {offset}: {what}")]
pub struct OpsError {
    pub offset: usize,
    pub what: &'static str,
}

impl Op<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Ring(r) => {
                out.push(RING);
                out.extend_from_slice(&(r.len() as u32).to_le_bytes());
                out.extend_from_slice(r);
            }
            Op::Totals(t) => {
                out.push(TOTALS);
                encode_totals(t, out);
            }
            Op::AggSeen(t) => {
                out.push(AGG_SEEN);
                encode_totals(t, out);
            }
            Op::GrowthCallers(pcs) => {
                out.push(GROWTH_CALLERS);
                for pc in pcs {
                    out.push(u8::from(pc.is_some()));
                    out.extend_from_slice(&pc.unwrap_or(0).to_le_bytes());
                }
            }
            Op::AggStacks(stacks) => {
                out.push(AGG_STACKS);
                out.extend_from_slice(&(stacks.len() as u32).to_le_bytes());
                for (id, frames) in stacks {
                    out.extend_from_slice(&id.to_le_bytes());
                    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
                    for f in frames.iter() {
                        out.extend_from_slice(&f.to_le_bytes());
                    }
                }
            }
            Op::BeginBurst { t_s } => {
                out.push(BEGIN_BURST);
                out.extend_from_slice(&t_s.to_le_bytes());
            }
            Op::EndBurst { window_s } => {
                out.push(END_BURST);
                out.extend_from_slice(&window_s.to_le_bytes());
            }
            Op::MemProfileRate(r) => {
                out.push(MEM_RATE);
                out.extend_from_slice(&r.to_le_bytes());
            }
            Op::MapLens(l) => {
                out.push(MAP_LENS);
                encode_lens(l, out);
            }
            Op::MapLensAt { ktime, reads } => {
                out.push(MAP_LENS_AT);
                out.extend_from_slice(&ktime.to_le_bytes());
                encode_lens(reads, out);
            }
            Op::Checkpoint(j) => {
                out.push(CHECKPOINT);
                out.extend_from_slice(&(j.len() as u32).to_le_bytes());
                out.extend_from_slice(j);
            }
            Op::GcSettings { ktime, settings: s } => {
                out.push(GC_SETTINGS);
                out.extend_from_slice(&ktime.to_le_bytes());
                out.extend_from_slice(&s.gc_percent.to_le_bytes());
                out.extend_from_slice(&s.memory_limit.to_le_bytes());
                out.extend_from_slice(&s.heap_minimum.to_le_bytes());
                out.extend_from_slice(&s.total_alloc.to_le_bytes());
                out.push(u8::from(s.cpu.is_some()));
                let c = s.cpu.unwrap_or(crate::tracee::gcctl::GcCpu { gc_ns: 0, total_ns: 0 });
                out.extend_from_slice(&c.gc_ns.to_le_bytes());
                out.extend_from_slice(&c.total_ns.to_le_bytes());
            }
        }
    }

    /// Every op of an OPS frame's payload, in order.
    pub fn decode_all(payload: &[u8]) -> Result<Vec<Op<'_>>, OpsError> {
        let mut r = Reader { buf: payload, at: 0 };
        let mut ops = Vec::new();
        while r.at < payload.len() {
            let tag = r.u8()?;
            ops.push(match tag {
                RING => {
                    let n = r.u32()? as usize;
                    Op::Ring(r.take(n)?)
                }
                TOTALS => Op::Totals(r.totals(payload.len())?),
                AGG_SEEN => Op::AggSeen(r.totals(payload.len())?),
                GROWTH_CALLERS => {
                    let mut pcs = [None; 2];
                    for pc in &mut pcs {
                        let has = r.u8()? != 0;
                        let v = r.u64()?;
                        *pc = has.then_some(v);
                    }
                    Op::GrowthCallers(pcs)
                }
                AGG_STACKS => {
                    let n = r.u32()? as usize;
                    let mut stacks = Vec::with_capacity(n.min(payload.len() / 12));
                    for _ in 0..n {
                        let id = r.u64()?;
                        let len = r.u32()? as usize;
                        let mut frames = Vec::with_capacity(len.min(payload.len() / 8));
                        for _ in 0..len {
                            frames.push(r.u64()?);
                        }
                        stacks.push((id, frames.into_boxed_slice()));
                    }
                    Op::AggStacks(stacks)
                }
                BEGIN_BURST => Op::BeginBurst { t_s: r.f64()? },
                END_BURST => Op::EndBurst { window_s: r.f64()? },
                MEM_RATE => Op::MemProfileRate(r.u64()?),
                MAP_LENS => Op::MapLens(r.lens(payload.len())?),
                MAP_LENS_AT => Op::MapLensAt { ktime: r.u64()?, reads: r.lens(payload.len())? },
                CHECKPOINT => {
                    let n = r.u32()? as usize;
                    Op::Checkpoint(r.take(n)?)
                }
                GC_SETTINGS => Op::GcSettings {
                    ktime: r.u64()?,
                    settings: crate::tracee::gcctl::Settings {
                        gc_percent: r.u32()? as i32,
                        memory_limit: r.u64()? as i64,
                        heap_minimum: r.u64()?,
                        total_alloc: r.u64()?,
                        cpu: {
                            let has = r.u8()? != 0;
                            let c = crate::tracee::gcctl::GcCpu { gc_ns: r.u64()?, total_ns: r.u64()? };
                            has.then_some(c)
                        },
                    },
                },
                _ => return Err(OpsError { offset: r.at - 1, what: "unknown op tag" }),
            });
        }
        Ok(ops)
    }
}

fn encode_totals(t: &[(AggKey, AggValue)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    for (k, v) in t {
        out.extend_from_slice(&k.stack_id.to_le_bytes());
        out.extend_from_slice(&k.probe_id.to_le_bytes());
        out.extend_from_slice(&k.size_bucket.to_le_bytes());
        out.extend_from_slice(&v.count.to_le_bytes());
        out.extend_from_slice(&v.bytes.to_le_bytes());
    }
}

fn encode_lens(l: &[(u64, Option<u64>)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(l.len() as u32).to_le_bytes());
    for (addr, len) in l {
        out.extend_from_slice(&addr.to_le_bytes());
        out.push(u8::from(len.is_some()));
        out.extend_from_slice(&len.unwrap_or(0).to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OpsError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(OpsError { offset: self.at, what: "op runs past the frame" })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, OpsError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, OpsError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, OpsError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> Result<f64, OpsError> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// A counted list of kernel totals; `payload` bounds the preallocation.
    fn totals(&mut self, payload: usize) -> Result<Vec<(AggKey, AggValue)>, OpsError> {
        let n = self.u32()? as usize;
        let mut t = Vec::with_capacity(n.min(payload / 32));
        for _ in 0..n {
            // A recording holds one target: its keys need not name it.
            let key = AggKey { stack_id: self.u64()?, probe_id: self.u32()?, size_bucket: self.u32()?, tgid: 0, _pad: 0 };
            t.push((key, AggValue { count: self.u64()?, bytes: self.u64()? }));
        }
        Ok(t)
    }

    /// A counted list of (map address, length if read); `payload` bounds
    /// the preallocation.
    fn lens(&mut self, payload: usize) -> Result<Vec<(u64, Option<u64>)>, OpsError> {
        let n = self.u32()? as usize;
        let mut l = Vec::with_capacity(n.min(payload / 17));
        for _ in 0..n {
            let addr = self.u64()?;
            let has = self.u8()? != 0;
            let len = self.u64()?;
            l.push((addr, has.then_some(len)));
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let key = AggKey { stack_id: 7, probe_id: 2, size_bucket: 40, tgid: 0, _pad: 0 };
        let ops = vec![
            Op::Ring(&[1, 2, 3]),
            Op::Totals(vec![(key, AggValue { count: 3, bytes: 96 })]),
            Op::AggStacks(vec![(7, vec![0x401000, 0x402000].into_boxed_slice()), (9, Box::new([]))]),
            Op::AggSeen(vec![(key, AggValue { count: 5, bytes: 160 })]),
            Op::GrowthCallers([Some(0x4a2f10), None]),
            Op::BeginBurst { t_s: 1.25 },
            Op::EndBurst { window_s: 0.002 },
            Op::MemProfileRate(524288),
            Op::MapLens(vec![(0xc000, Some(12)), (0xd000, None)]),
            Op::MapLensAt { ktime: 77, reads: vec![(0xc000, Some(13))] },
            Op::Checkpoint(b"{}"),
            Op::GcSettings { ktime: 9, settings: crate::tracee::gcctl::Settings { gc_percent: -1, memory_limit: i64::MAX, heap_minimum: 3, total_alloc: 1 << 40, cpu: Some(crate::tracee::gcctl::GcCpu { gc_ns: 5, total_ns: 9 }) } },
        ];
        let mut buf = Vec::new();
        for op in &ops {
            op.encode(&mut buf);
        }
        assert_eq!(Op::decode_all(&buf).unwrap(), ops);
    }

    #[test]
    fn malformed_ops_are_errors_not_panics() {
        let mut buf = Vec::new();
        Op::Ring(&[9; 10]).encode(&mut buf);
        for cut in 0..buf.len() {
            let r = Op::decode_all(&buf[..cut]);
            assert!(cut == 0 || r.is_err(), "cut at {cut}");
        }
        assert_eq!(Op::decode_all(&[42]).unwrap_err(), OpsError { offset: 0, what: "unknown op tag" });
        // A huge count must not allocate before the bytes are there.
        let mut huge = vec![TOTALS];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Op::decode_all(&huge).is_err());
    }
}
