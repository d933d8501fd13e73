//! A Go map's length, read from the target's header bytes, only when the
//! header looks like a map's.
//!
//! gcprobe learns a map's address from an insert or a growth and reads its
//! length later, once a second. By then a short-lived map may be gone and
//! its memory reused for anything: the first word is then no length. The
//! other header fields bound what the length can be, and a live map's hash
//! seed is never zero, so a reused slot almost never passes for a map
//! (zeroed memory, the commonest reuse, never does).
use serde::{Deserialize, Serialize};

use crate::{tracee::buildinfo::GoVersion, tracee::symbols::Symbols};

/// Bytes of header a check reads.
pub const HEADER_BYTES: usize = 40;

/// Which map implementation the binary's runtime has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapImpl {
    /// runtime.hmap (Go 1.19–1.23, and 1.24–1.25 built with
    /// GOEXPERIMENT=noswissmap): count int @0, B uint8 @9 (log2 of the
    /// bucket count), hash0 uint32 @12, buckets pointer @16 (runtime/map.go).
    Classic,
    /// internal/runtime/maps.Map (Go 1.24+): used uint64 @0, seed @8, dirPtr @16,
    /// dirLen int @24, globalDepth uint8 @32 (internal/runtime/maps/map.go).
    Swiss,
}

/// Slots per bucket (classic) and per group of a small swiss map; a swiss
/// table holds at most maxTableCapacity slots (internal/runtime/maps/table.go).
const BUCKET_SLOTS: u64 = 8;
const MAX_TABLE_CAPACITY: u64 = 1024;

impl MapImpl {
    /// `runtime.hashGrow` exists only where the runtime has hmaps.
    pub fn for_binary(syms: &Symbols<'_>, go: GoVersion) -> Self {
        if go < GoVersion::new(1, 24, 0) || syms.lookup("runtime.hashGrow").is_some() {
            MapImpl::Classic
        } else {
            MapImpl::Swiss
        }
    }

    /// The length, if `h` is a plausible live header of this kind.
    pub fn len(self, h: &[u8; HEADER_BYTES]) -> Option<u64> {
        let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let len = word(0);
        // Every map gets a random seed when made, and a new one when emptied
        // (runtime/map.go makemap: hash0 = rand(); internal/runtime/maps
        // NewMap, Clear, Delete): zero only by a 2^-32 chance (classic's is a
        // uint32), while freed memory the allocator zeroed reads as zero.
        let seed = match self {
            MapImpl::Classic => u64::from(u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"))),
            MapImpl::Swiss => word(8),
        };
        if seed == 0 {
            return None;
        }
        match self {
            MapImpl::Classic => {
                // The load factor (6.5 per bucket) regrows long before a
                // bucket's 8 slots per bucket are all used on average.
                let (b, buckets) = (u32::from(h[9]), word(16));
                let ok = b <= 48 && len <= BUCKET_SLOTS << b && (len == 0 || buckets != 0);
                ok.then_some(len)
            }
            MapImpl::Swiss => {
                let (dir, dir_len, depth) = (word(16), word(24), u32::from(h[32]));
                let ok = if dir_len == 0 {
                    // A small map: one group, or none yet.
                    len <= BUCKET_SLOTS && (len == 0 || dir != 0)
                } else {
                    depth < 40 && dir_len == 1 << depth && dir != 0 && len <= dir_len * MAX_TABLE_CAPACITY
                };
                ok.then_some(len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(words: [u64; 4], byte_9: u8, byte_32: u8) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        for (i, w) in words.iter().enumerate() {
            h[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        h[9] = byte_9;
        h[32] = byte_32;
        h
    }

    #[test]
    fn classic_headers() {
        // 600k entries in 2^17 buckets.
        // hash0 (bytes 12..16) is the seed.
        let seed = 0x9e37_79b9u64 << 32;
        assert_eq!(MapImpl::Classic.len(&header([600_000, seed, 0xc000_1000, 0], 17, 0)), Some(600_000));
        assert_eq!(MapImpl::Classic.len(&header([0, seed, 0, 0], 0, 0)), Some(0));
        assert_eq!(MapImpl::Classic.len(&header([0, 0, 0, 0], 0, 0)), None, "zeroed memory: no seed");
        // 7.3M "entries" in 2^3 buckets: not a map any more.
        assert_eq!(MapImpl::Classic.len(&header([7_288_016, seed, 0xc000_1000, 0], 3, 0)), None);
        assert_eq!(MapImpl::Classic.len(&header([5, seed, 0, 0], 0, 0)), None, "entries without buckets");
    }

    #[test]
    fn swiss_headers() {
        let seed = 0x84a0_b10f_0351_923c;
        assert_eq!(MapImpl::Swiss.len(&header([5, seed, 0xc000_2000, 0], 0, 0)), Some(5), "small map");
        assert_eq!(MapImpl::Swiss.len(&header([0, seed, 0, 0], 0, 0)), Some(0), "empty, no group yet");
        assert_eq!(MapImpl::Swiss.len(&header([0, 0, 0, 0], 0, 0)), None, "zeroed memory: no seed");
        assert_eq!(MapImpl::Swiss.len(&header([9, seed, 0xc000_2000, 0], 0, 0)), None, "a small map holds 8");
        assert_eq!(MapImpl::Swiss.len(&header([600_000, seed, 0xc000_2000, 1024], 0, 10)), Some(600_000));
        assert_eq!(MapImpl::Swiss.len(&header([600_000, seed, 0xc000_2000, 1000], 0, 10)), None, "dirLen is a power of two");
        assert_eq!(MapImpl::Swiss.len(&header([2_000_000, seed, 0xc000_2000, 1024], 0, 10)), None, "more than 1024 tables hold");
    }
}
