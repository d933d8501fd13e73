//! The recording's framing: a versioned header, then self-checking frames,
//! appended as the session runs.
//!
//! ```text
//! file   = header frame*
//! header = "GCPROBE\0" version:u16le reserved:u16le flags:u32le        (16 bytes)
//! frame  = len:u32le kind:u8 reserved:[u8;3] crc32:u32le payload[len]  (12 + len bytes)
//! ```
//!
//! `crc32` (IEEE, as zlib's) covers the kind byte and the payload. A file
//! cut short by a crash, `kill -9` or a full disk ends in a partial or
//! corrupt frame: the reader returns every complete frame before it and says
//! how many bytes it could not use; it never guesses past a bad frame.
use std::io::{self, Write};

pub const MAGIC: &[u8; 8] = b"GCPROBE\0";
/// Version 2: a ring record may hold two events (a growslice and the
/// allocation it made); a version-1 reader would count those undecodable.
/// Version 3: ops 10-12, the state a file that continues a session starts
/// from (node mode's rotation); a version-2 reader would stop at them.
/// Version 1 and 2 files read the same way.
pub const VERSION: u16 = 3;
/// The oldest version this gcprobe reads.
pub const OLDEST_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
pub const FRAME_HEADER_LEN: usize = 12;
/// Larger frames are refused on both sides: a corrupt length must not make
/// the reader allocate gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("not a gcprobe recording (no GCPROBE header)")]
    NotARecording,
    #[error("recording format version {found}; this gcprobe reads versions {OLDEST_VERSION} to {VERSION}")]
    Version { found: u16 },
    #[error("frame of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge { len: usize },
    #[error("writing the recording")]
    Io(#[source] io::Error),
    /// ENOSPC or EDQUOT: its own words, as the user's next step is to free space.
    #[error("the disk is full ({0}); the recording keeps every whole frame written before")]
    DiskFull(io::Error),
}

impl FrameError {
    /// A write error, a full disk said as such.
    pub fn write(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => FrameError::DiskFull(e),
            _ => FrameError::Io(e),
        }
    }
}

/// Writes the header, then frames.
pub struct FrameWriter<W: Write> {
    out: W,
    /// Bytes of the header and the whole frames written: where a write that
    /// failed part way must be cut back to.
    whole: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(mut out: W) -> Result<Self, FrameError> {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out.write_all(&h).map_err(FrameError::write)?;
        Ok(Self { out, whole: HEADER_LEN as u64 })
    }

    /// Appends one frame in a single write, so a crash leaves at most the
    /// last frame partial.
    pub fn frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLarge { len: payload.len() });
        }
        let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[kind, 0, 0, 0]);
        buf.extend_from_slice(&checksum(kind, payload).to_le_bytes());
        buf.extend_from_slice(payload);
        self.out.write_all(&buf).map_err(FrameError::write)?;
        self.whole += buf.len() as u64;
        Ok(())
    }

    /// Bytes of the header and the whole frames written so far.
    pub fn whole_len(&self) -> u64 {
        self.whole
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A frame's `crc32` field: over its kind byte and its payload.
pub fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// One frame as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    /// Offset of the frame in the file.
    pub offset: u64,
}

/// Where and why reading stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first frame that could not be used.
    pub offset: u64,
    /// Bytes from there to the end of the data.
    pub bytes_lost: u64,
    pub cause: DamageCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageCause {
    /// The data ends inside a frame: the recording was cut short.
    Truncated,
    /// A complete frame whose checksum does not match.
    Corrupt,
    /// A frame header announcing more than MAX_PAYLOAD.
    BadLength,
}

/// Every complete, intact frame of `data` (a whole recording), in order,
/// and the damage that ended the walk early, if any.
pub fn read_frames(data: &[u8]) -> Result<(Vec<Frame<'_>>, Option<Damage>), FrameError> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(FrameError::NotARecording);
    }
    let found = u16::from_le_bytes([data[8], data[9]]);
    if !(OLDEST_VERSION..=VERSION).contains(&found) {
        return Err(FrameError::Version { found });
    }
    let mut frames = Vec::new();
    let mut at = HEADER_LEN;
    let damage = |at: usize, cause| Some(Damage { offset: at as u64, bytes_lost: (data.len() - at) as u64, cause });
    while at < data.len() {
        let Some(h) = data.get(at..at + FRAME_HEADER_LEN) else {
            return Ok((frames, damage(at, DamageCause::Truncated)));
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = h[4];
        let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if len > MAX_PAYLOAD {
            return Ok((frames, damage(at, DamageCause::BadLength)));
        }
        let start = at + FRAME_HEADER_LEN;
        let Some(payload) = data.get(start..start + len) else {
            return Ok((frames, damage(at, DamageCause::Truncated)));
        };
        if checksum(kind, payload) != crc {
            return Ok((frames, damage(at, DamageCause::Corrupt)));
        }
        frames.push(Frame { kind, payload, offset: at as u64 });
        at = start + len;
    }
    Ok((frames, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(frames: &[(u8, &[u8])]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        for (k, p) in frames {
            w.frame(*k, p).unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn frames_round_trip() {
        let data = recording(&[(1, b"{\"meta\":1}"), (2, &[]), (3, &[0xff; 1000])]);
        let (frames, damage) = read_frames(&data).unwrap();
        assert_eq!(damage, None);
        let got: Vec<(u8, usize)> = frames.iter().map(|f| (f.kind, f.payload.len())).collect();
        assert_eq!(got, [(1, 10), (2, 0), (3, 1000)]);
        assert_eq!(frames[0].offset, HEADER_LEN as u64);
    }

    #[test]
    fn a_file_cut_anywhere_keeps_its_complete_frames() {
        let data = recording(&[(1, b"first"), (2, b"second frame"), (3, b"third")]);
        let whole_two = HEADER_LEN + 2 * FRAME_HEADER_LEN + 5 + 12;
        for cut in whole_two..data.len() {
            let (frames, damage) = read_frames(&data[..cut]).unwrap();
            assert_eq!(frames.len(), 2, "cut at {cut}");
            if cut > whole_two {
                let d = damage.unwrap();
                assert_eq!((d.offset, d.bytes_lost, d.cause), (whole_two as u64, (cut - whole_two) as u64, DamageCause::Truncated));
            } else {
                assert_eq!(damage, None);
            }
        }
    }

    #[test]
    fn a_flipped_bit_stops_the_walk_at_that_frame() {
        let mut data = recording(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        let second = HEADER_LEN + FRAME_HEADER_LEN + 5;
        data[second + FRAME_HEADER_LEN + 2] ^= 0x10;
        let (frames, damage) = read_frames(&data).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(damage.unwrap().cause, DamageCause::Corrupt);
        // A garbage length is refused, not allocated.
        let mut data = recording(&[(1, b"first")]);
        data[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_frames(&data).unwrap().1.unwrap().cause, DamageCause::BadLength);
    }

    /// A disk with room for `room` bytes: short writes, then ENOSPC, as tmpfs does.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_said_and_the_whole_frames_are_known() {
        let room = HEADER_LEN + FRAME_HEADER_LEN + 5 + 20;
        let mut w = FrameWriter::new(Disk { data: Vec::new(), room }).unwrap();
        w.frame(1, b"first").unwrap();
        let e = w.frame(2, &[7; 100]).unwrap_err();
        assert!(matches!(e, FrameError::DiskFull(_)), "{e:?}");
        assert!(e.to_string().starts_with("the disk is full (No space left on device"), "{e}");
        assert_eq!(w.whole_len(), (HEADER_LEN + FRAME_HEADER_LEN + 5) as u64);
        // What the writer cuts the file back to reads whole, with no damage.
        let data = w.into_inner().data;
        let (frames, damage) = read_frames(&data[..(HEADER_LEN + FRAME_HEADER_LEN + 5)]).unwrap();
        assert_eq!((frames.len(), damage), (1, None));
        assert_eq!(read_frames(&data).unwrap().1.unwrap().cause, DamageCause::Truncated);
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        assert!(matches!(read_frames(b"ELF\x7f not a recording"), Err(FrameError::NotARecording)));
        let mut data = recording(&[]);
        data[8] = 9;
        assert!(matches!(read_frames(&data), Err(FrameError::Version { found: 9 })));
        assert_eq!(read_frames(&recording(&[])).unwrap(), (vec![], None));
        data[8] = 1;
        assert_eq!(read_frames(&data).unwrap(), (vec![], None));
    }
}
