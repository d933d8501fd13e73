//! Decoding ring-buffer records into typed events.
use gcprobe_common::{RawEvent, MAX_ARGS, MAX_FRAMES};

use crate::plan::{ProbeKind, UnknownKind};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record is {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
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
    pub tid: u32,
    pub ktime_ns: u64,
    pub args: [u64; MAX_ARGS],
    /// `[probed pc, caller return address, ...older return addresses]`.
    pub frames: Vec<u64>,
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let want = std::mem::size_of::<RawEvent>();
        if bytes.len() != want {
            return Err(DecodeError::Size { got: bytes.len(), want });
        }
        // SAFETY: length checked; RawEvent is plain old data, any bit pattern valid.
        let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = ProbeKind::try_from(raw.kind)?;
        let n = raw.nframes as usize;
        if n > MAX_FRAMES {
            return Err(DecodeError::Frames { nframes: raw.nframes });
        }
        Ok(Self {
            kind,
            probe_id: raw.probe_id,
            tgid: raw.tgid,
            tid: raw.tid,
            ktime_ns: raw.ktime_ns,
            args: raw.args,
            frames: raw.frames[..n].to_vec(),
        })
    }
}

#[cfg(test)]
pub(crate) fn encode(kind: u32, probe_id: u32, ktime_ns: u64, args: [u64; MAX_ARGS], frames: &[u64]) -> Vec<u8> {
    let mut raw = RawEvent { kind, probe_id, tgid: 42, tid: 43, ktime_ns, args, nframes: frames.len() as u32, _pad: 0, frames: [0; MAX_FRAMES] };
    raw.frames[..frames.len()].copy_from_slice(frames);
    // SAFETY: RawEvent is repr(C) POD with explicit padding.
    unsafe { std::slice::from_raw_parts((&raw as *const RawEvent).cast::<u8>(), std::mem::size_of::<RawEvent>()) }.to_vec()
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
        assert_eq!((ev.tgid, ev.tid, ev.ktime_ns), (42, 43, 99));
        assert_eq!(ev.args, [1, 2, 3, 4, 5]);
        assert_eq!(ev.frames, vec![0x10, 0x20, 0x30]);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(Event::decode(&[0u8; 10]), Err(DecodeError::Size { got: 10, .. })));
        let bytes = encode(77, 0, 0, [0; 5], &[]);
        assert!(matches!(Event::decode(&bytes), Err(DecodeError::Kind(_))));
        let mut bytes = encode(kind::MALLOC, 0, 0, [0; 5], &[]);
        let off = std::mem::offset_of!(RawEvent, nframes);
        bytes[off..off + 4].copy_from_slice(&999u32.to_le_bytes());
        assert!(matches!(Event::decode(&bytes), Err(DecodeError::Frames { nframes: 999 })));
    }
}
