//! The kernel's allocation counts, read through a shared mapping of the
//! `AGG` array (`BPF_F_MMAPABLE`): no syscall per key.
//!
//! Each CPU owns `per_cpu` consecutive slots (see `gcprobe_common::AggSlot`),
//! written only by hits on that CPU. The agent finds a CPU's occupied slots
//! by scanning them when that CPU's `AGG_CLAIMED` counts moved (new keys
//! are rare after the first seconds), and rereads the slots it knows at each
//! flush. It writes one thing: a departed target's slots' stack ids, to 0,
//! which frees them.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use gcprobe_common::{AggKey, AggSlot, AggValue};
use memmap2::{MmapOptions, MmapRaw};

#[derive(Debug, thiserror::Error)]
pub enum AggMapError {
    #[error("mapping the kernel's allocation counts ({bytes} bytes)")]
    Map {
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
}

const WORDS: usize = std::mem::size_of::<AggSlot>() / 8;

/// The `AGG` array, mapped.
pub(super) struct AggMap {
    mem: MmapRaw,
    per_cpu: usize,
    cpus: usize,
    /// Occupied slots found by the last scan of each CPU's.
    known: Vec<Vec<usize>>,
    /// Each CPU's claim count at its last scan.
    scanned_at: Vec<u64>,
    /// Keeps the map's fd, and so the array, alive (None in unit tests).
    _map: Option<MapData>,
}

impl AggMap {
    /// Maps `map`, which holds `per_cpu` slots for each of `cpus` CPUs.
    pub(super) fn new(map: MapData, per_cpu: usize, cpus: usize) -> Result<Self, AggMapError> {
        let bytes = per_cpu * cpus * std::mem::size_of::<AggSlot>();
        let fd = map.fd().as_fd().as_raw_fd();
        // A BPF array created BPF_F_MMAPABLE maps its values from offset 0;
        // the kernel changes them under us, so every access below goes
        // through atomics, never a reference to plain data.
        let mem = MmapOptions::new().len(bytes).map_raw(fd).map_err(|source| AggMapError::Map { bytes, source })?;
        Ok(Self::over(mem, per_cpu, cpus, Some(map)))
    }

    fn over(mem: MmapRaw, per_cpu: usize, cpus: usize, map: Option<MapData>) -> Self {
        Self { mem, per_cpu, cpus, known: vec![Vec::new(); cpus], scanned_at: vec![0; cpus], _map: map }
    }

    fn word(&self, slot: usize, w: usize) -> &AtomicU64 {
        debug_assert!(slot < self.per_cpu * self.cpus && w < WORDS);
        // SAFETY: in bounds of the mapping (slot < per_cpu × cpus), 8-byte
        // aligned (a page-aligned base, 40-byte slots), and only ever
        // accessed atomically from this side.
        unsafe { AtomicU64::from_ptr((self.mem.as_mut_ptr() as *mut u64).add(slot * WORDS + w)) }
    }

    /// The slot's key and counts; None when it is free.
    fn read(&self, slot: usize) -> Option<(AggKey, AggValue)> {
        let stack_id = self.word(slot, 0).load(Ordering::Acquire);
        if stack_id == 0 {
            return None;
        }
        let [w1, w2, count, bytes] = [1, 2, 3, 4].map(|w| self.word(slot, w).load(Ordering::Relaxed));
        let key = AggKey { stack_id, probe_id: w1 as u32, size_bucket: (w1 >> 32) as u32, tgid: w2 as u32, _pad: 0 };
        Some((key, AggValue { count, bytes }))
    }

    /// Every occupied slot's key and counts, after scanning the CPUs whose
    /// entry in `claims` (claims so far, by CPU) moved since their last scan.
    pub(super) fn slots(&mut self, claims: &[u64]) -> Vec<(AggKey, AggValue)> {
        for (cpu, &n) in claims.iter().enumerate().take(self.cpus) {
            if n != self.scanned_at[cpu] {
                self.scanned_at[cpu] = n;
                let base = cpu * self.per_cpu;
                let occupied = (base..base + self.per_cpu).filter(|&s| self.word(s, 0).load(Ordering::Relaxed) != 0).collect();
                self.known[cpu] = occupied;
            }
        }
        self.known.iter().flatten().filter_map(|&s| self.read(s)).collect()
    }

    /// Frees `tgid`'s slots, all of them (some may be newer than the last
    /// scan): its probes are gone, and its keys would hold slots the
    /// targets still running need. Once per target, at its end.
    ///
    /// A hit of `tgid` still running on another CPU (a shared link, whose
    /// filter entry is already gone) may claim a slot again just after:
    /// that one slot stays taken, its counts routed to no target.
    pub(super) fn free(&mut self, tgid: u32) {
        for s in 0..self.per_cpu * self.cpus {
            if self.read(s).is_some_and(|(k, _)| k.tgid == tgid) {
                self.word(s, 0).store(0, Ordering::Release);
            }
        }
        let mut known = std::mem::take(&mut self.known);
        for slots in &mut known {
            slots.retain(|&s| self.word(s, 0).load(Ordering::Relaxed) != 0);
        }
        self.known = known;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An array in anonymous memory, written below as the kernel writes `AGG`.
    fn table(per_cpu: usize, cpus: usize) -> AggMap {
        let mem = MmapOptions::new().len(per_cpu * cpus * std::mem::size_of::<AggSlot>()).map_anon().expect("anonymous mapping");
        AggMap::over(MmapRaw::from(mem), per_cpu, cpus, None)
    }

    fn claim(t: &AggMap, slot: usize, key: AggKey, count: u64, bytes: u64) {
        let w1 = key.probe_id as u64 | (key.size_bucket as u64) << 32;
        for (w, v) in [(1, w1), (2, key.tgid as u64), (3, count), (4, bytes), (0, key.stack_id)] {
            t.word(slot, w).store(v, Ordering::Release);
        }
    }

    fn key(stack_id: u64, tgid: u32) -> AggKey {
        AggKey { stack_id, probe_id: 3, size_bucket: 17, tgid, _pad: 0 }
    }

    #[test]
    fn finds_a_cpus_new_slots_only_when_its_claims_move_and_rereads_them() {
        let mut t = table(8, 2);
        claim(&t, 5, key(0x51, 100), 1, 64);
        assert!(t.slots(&[0, 0]).is_empty(), "no claim counted yet: no scan");
        assert_eq!(t.slots(&[1, 0]), vec![(key(0x51, 100), AggValue { count: 1, bytes: 64 })]);
        // Counted on: the known slot is reread without a scan.
        claim(&t, 5, key(0x51, 100), 4, 256);
        claim(&t, 8 + 2, key(0x51, 100), 2, 128);
        assert_eq!(t.slots(&[1, 0]), vec![(key(0x51, 100), AggValue { count: 4, bytes: 256 })]);
        let mut both = t.slots(&[1, 1]);
        both.sort_by_key(|(_, v)| v.count);
        assert_eq!(both, vec![(key(0x51, 100), AggValue { count: 2, bytes: 128 }), (key(0x51, 100), AggValue { count: 4, bytes: 256 })]);
    }

    #[test]
    fn freeing_a_process_frees_its_slots_on_every_cpu_and_only_its() {
        let mut t = table(8, 2);
        claim(&t, 1, key(0x51, 100), 3, 30);
        claim(&t, 8 + 6, key(0x61, 100), 1, 10);
        claim(&t, 2, key(0x71, 200), 5, 50);
        assert_eq!(t.slots(&[2, 1]).len(), 3);
        t.free(100);
        assert_eq!(t.word(1, 0).load(Ordering::Relaxed), 0);
        assert_eq!(t.word(8 + 6, 0).load(Ordering::Relaxed), 0);
        assert_eq!(t.slots(&[2, 1]), vec![(key(0x71, 200), AggValue { count: 5, bytes: 50 })]);
    }
}
