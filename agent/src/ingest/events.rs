//! Decoding ring-buffer records into typed events.
use gcprobe_common::{event_flag, EventHeader, MAX_ARGS, MAX_FRAMES};

use crate::plan::{ProbeKind, UnknownKind};

const HEADER: usize = std::mem::size_of::<EventHeader>();

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record is {got} bytes, not {HEADER} plus 8 per frame")]
    Size { got: usize },
    #[error("ring buffer record has an unknown probe kind")]
    Kind(#[from] UnknownKind),
    #[error("ring buffer record claims {nframes} frames, at most {MAX_FRAMES} fit")]
    Frames { nframes: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: ProbeKind,
    pub probe_id: u32,
    pub tgid: u32,
    pub thread: u32,
    pub ktime_ns: u64,
    pub args: [u64; MAX_ARGS],
    /// `[probed pc, caller return address, ...older return addresses]`,
    /// in place (see [`Event::frames`]): an allocation per event was a
    /// tenth of the agent's CPU per event.
    frames: [u64; MAX_FRAMES],
    nframes: usize,
    /// Set when the record only names the frames of an in-kernel aggregation
    /// key (`stack_id`): its hit is counted in the kernel's map, not here.
    pub defines_stack: Option<u64>,
    /// `gcController.heapLive` and `.gcPercentHeapGoal`, when the kernel read
    /// them at this pause (never a register's leftover).
    pub heap_live: Option<u64>,
    pub heap_goal: Option<u64>,
    /// A growth sent without its allocation (`event_flag::ALONE`).
    pub alone: bool,
    /// An allocation made inside growslice (`event_flag::IN_GROWTH`).
    pub in_growth: bool,
    /// A growth into its caller's stack buffer (`event_flag::IN_BUFFER`).
    pub in_buffer: bool,
}

/// The process a record came from, read without decoding the rest: the
/// header's `tgid`. None for a record too short to hold one.
pub fn sender(bytes: &[u8]) -> Option<u32> {
    let at = std::mem::offset_of!(EventHeader, tgid);
    bytes.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

impl Event {
    /// `[probed pc, caller return address, ...older return addresses]`.
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.nframes]
    }

    /// One record that holds exactly one event.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (ev, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(DecodeError::Size { got: bytes.len() });
        }
        Ok(ev)
    }

    /// The event at the start of `bytes`, and the bytes it takes.
    fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError::Size { got: bytes.len() });
        }
        // SAFETY: length checked; EventHeader is plain old data, any bit pattern valid.
        let raw: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = ProbeKind::try_from(raw.kind)?;
        let n = raw.nframes as usize;
        if n > MAX_FRAMES {
            return Err(DecodeError::Frames { nframes: raw.nframes });
        }
        let used = HEADER + 8 * n;
        if bytes.len() < used {
            return Err(DecodeError::Size { got: bytes.len() });
        }
        let bytes = &bytes[..used];
        let mut frames = [0u64; MAX_FRAMES];
        for (f, c) in frames.iter_mut().zip(bytes[HEADER..].chunks_exact(8)) {
            *f = u64::from_ne_bytes(c.try_into().expect("8-byte chunk"));
        }
        Ok((Self {
            kind,
            probe_id: raw.probe_id,
            tgid: raw.tgid,
            thread: raw.thread,
            ktime_ns: raw.ktime_ns,
            args: raw.args,
            frames,
            nframes: n,
            defines_stack: (raw.flags & event_flag::STACK_ONLY != 0).then_some(raw.stack_id),
            heap_live: (raw.flags & event_flag::HEAP_LIVE != 0).then_some(raw.args[event_flag::HEAP_LIVE_SLOT]),
            heap_goal: (raw.flags & event_flag::HEAP_GOAL != 0).then_some(raw.args[event_flag::HEAP_GOAL_SLOT]),
            alone: raw.flags & event_flag::ALONE != 0,
            in_growth: raw.flags & event_flag::IN_GROWTH != 0,
            in_buffer: raw.flags & event_flag::IN_BUFFER != 0,
        }, used))
    }
}

/// The events of one ring record, in order: one, or a growslice and the
/// allocation it made (`PendingGrowth`: the kernel sends the pair in one
/// record). Ends after the first error.
pub fn decode_record(bytes: &[u8]) -> impl Iterator<Item = Result<Event, DecodeError>> + '_ {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest.take().filter(|r| !r.is_empty())?;
        Some(Event::decode_prefix(r).map(|(ev, used)| {
            rest = Some(&r[used..]);
            ev
        }))
    })
}

#[cfg(test)]
pub(crate) fn encode(kind: u32, probe_id: u32, ktime_ns: u64, args: [u64; MAX_ARGS], frames: &[u64]) -> Vec<u8> {
    encode_full(kind, probe_id, ktime_ns, args, frames, 0, 0)
}

#[cfg(test)]
pub(crate) fn encode_full(kind: u32, probe_id: u32, ktime_ns: u64, args: [u64; MAX_ARGS], frames: &[u64], stack_id: u64, flags: u32) -> Vec<u8> {
    let h = EventHeader { kind, probe_id, tgid: 42, thread: 43, ktime_ns, args, stack_id, nframes: frames.len() as u32, flags };
    // SAFETY: EventHeader is repr(C) POD with explicit padding.
    let mut v = unsafe { std::slice::from_raw_parts((&h as *const EventHeader).cast::<u8>(), HEADER) }.to_vec();
    v.extend(frames.iter().flat_map(|f| f.to_ne_bytes()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use gcprobe_common::kind;

    #[test]
    fn round_trips() {
        let bytes = encode(kind::GROWSLICE, 1, 99, [1, 2, 3, 4, 5], &[0x10, 0x20, 0x30]);
        let ev = Event::decode(&bytes).unwrap();
        assert_eq!(ev.kind, ProbeKind::Growslice);
        assert_eq!(ev.probe_id, 1);
        assert_eq!((ev.tgid, ev.thread, ev.ktime_ns), (42, 43, 99));
        assert_eq!(ev.args, [1, 2, 3, 4, 5]);
        assert_eq!(ev.frames(), [0x10, 0x20, 0x30]);
        assert_eq!(ev.defines_stack, None);
        let bytes = encode_full(kind::MALLOC, 1, 99, [0; 5], &[0x10, 0x20], 0xabc1, event_flag::STACK_ONLY);
        assert_eq!(bytes.len(), HEADER + 16);
        assert_eq!(Event::decode(&bytes).unwrap().defines_stack, Some(0xabc1));
    }

    #[test]
    fn heap_slots_mean_something_only_when_flagged() {
        // A pause whose fifth register held 611 (stoppingCPUTime) is no heap.
        let ev = Event::decode(&encode(kind::STW_START, 0, 9, [1, 2, 3, 4, 611], &[0x10, 0x20])).unwrap();
        assert_eq!((ev.heap_live, ev.heap_goal), (None, None));
        let both = encode_full(kind::STW_START, 0, 9, [1, 2, 3, 8 << 20, 6 << 20], &[0x10, 0x20], 0, event_flag::HEAP_LIVE | event_flag::HEAP_GOAL);
        let ev = Event::decode(&both).unwrap();
        assert_eq!((ev.heap_live, ev.heap_goal), (Some(6 << 20), Some(8 << 20)));
        let live = encode_full(kind::STW_START, 0, 9, [1, 2, 3, 8 << 20, 6 << 20], &[0x10, 0x20], 0, event_flag::HEAP_LIVE);
        assert_eq!(Event::decode(&live).unwrap().heap_goal, None);
    }

    #[test]
    fn a_record_may_hold_a_growth_and_its_allocation() {
        let mut pair = encode(kind::GROWSLICE, 1, 99, [1, 2, 3, 4, 5], &[0x10, 0x20, 0x30]);
        pair.extend(encode(kind::MALLOC, 2, 99, [48, 0, 0, 0, 0], &[0x40, 0x50]));
        let evs: Vec<Event> = decode_record(&pair).collect::<Result<_, _>>().unwrap();
        assert_eq!(evs.iter().map(|e| (e.kind, e.frames().len())).collect::<Vec<_>>(), [(ProbeKind::Growslice, 3), (ProbeKind::Malloc, 2)]);
        assert_eq!(evs[1].args[0], 48);
        // One event alone is not a pair: Event::decode wants the whole record.
        assert!(matches!(Event::decode(&pair), Err(DecodeError::Size { .. })));
        // A torn second event yields the first, then one error, then stops.
        let torn = &pair[..pair.len() - 8];
        let got: Vec<_> = decode_record(torn).map(|r| r.is_ok()).collect();
        assert_eq!(got, [true, false]);
        assert_eq!(decode_record(&[]).count(), 0);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(Event::decode(&[0u8; 10]), Err(DecodeError::Size { got: 10 })));
        let mut short = encode(kind::MALLOC, 0, 0, [0; 5], &[1, 2, 3]);
        short.truncate(short.len() - 8);
        assert!(matches!(Event::decode(&short), Err(DecodeError::Size { .. })));
        let bytes = encode(77, 0, 0, [0; 5], &[]);
        assert!(matches!(Event::decode(&bytes), Err(DecodeError::Kind(_))));
        let mut bytes = encode(kind::MALLOC, 0, 0, [0; 5], &[]);
        let off = std::mem::offset_of!(EventHeader, nframes);
        bytes[off..off + 4].copy_from_slice(&999u32.to_le_bytes());
        assert!(matches!(Event::decode(&bytes), Err(DecodeError::Frames { nframes: 999 })));
    }
}
