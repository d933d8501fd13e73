//! The GC cycles of a window, one by one while they are few, evenly thinned
//! when they are many.
//!
//! A program with a small heap under heavy allocation collects hundreds of
//! times a second (the 4 MiB minimum goal, runtime/mgcpacer.go): a list of
//! every cycle, and every report built from it, would grow without end in a
//! long session or in node mode. Past [`MAX_CYCLES`] every other cycle is
//! dropped and from then on only every second one is kept; the stride
//! doubles each time, so the series still spans the whole window, evenly.

/// Cycles kept one by one before the series thins.
pub const MAX_CYCLES: usize = 4096;

/// One GC cycle as its pauses saw it. The heap figures are the runtime's
/// own, read by the kernel at the pause (None where it could not read them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// The sweep-termination pause that began it.
    pub start_ktime: u64,
    /// `heapLive` then: the heap that triggered the cycle.
    pub heap_at_start: Option<u64>,
    /// `gcPercentHeapGoal` then: the GOGC goal the cycle was paced toward.
    pub goal: Option<u64>,
    /// `heapLive` as mark termination restarts the world: the bytes marked
    /// live (runtime/mgc.go gcMark resets heapLive to them).
    pub marked: Option<u64>,
}

/// Invariant: `kept[i]` is the window's cycle number `i * stride`.
#[derive(Debug, Clone)]
pub struct CycleSeries {
    kept: Vec<Cycle>,
    /// Cycles begun in the window.
    seen: u64,
    stride: u64,
}

impl Default for CycleSeries {
    fn default() -> Self {
        Self { kept: Vec::new(), seen: 0, stride: 1 }
    }
}

impl CycleSeries {
    /// A cycle begins (its sweep-termination pause).
    pub fn begin(&mut self, start_ktime: u64, heap_at_start: Option<u64>, goal: Option<u64>) {
        self.seen += 1;
        if !self.last_kept() {
            return;
        }
        if self.kept.len() >= MAX_CYCLES {
            // Kept: cycle numbers 0, s, 2s...; this one is MAX_CYCLES * s, a multiple of 2s.
            keep_every_other(&mut self.kept);
            self.stride *= 2;
        }
        self.kept.push(Cycle { start_ktime, heap_at_start, goal, marked: None });
    }

    /// The cycle begun last ends (its mark-termination pause, at `ktime`),
    /// having marked `marked` bytes live; nothing if that cycle was not kept.
    pub fn end(&mut self, ktime: u64, marked: Option<u64>) {
        if !self.last_kept() {
            return;
        }
        if let Some(c) = self.kept.last_mut().filter(|c| c.marked.is_none() && c.start_ktime <= ktime) {
            c.marked = marked;
        }
    }

    /// Whether the cycle begun last is in `kept` (its end belongs to it). Thinning keeps
    /// it so: the cycle that thins the series is numbered a multiple of the new stride.
    fn last_kept(&self) -> bool {
        self.seen > 0 && (self.seen - 1) % self.stride == 0
    }

    pub fn as_slice(&self) -> &[Cycle] {
        &self.kept
    }

    /// 1 while every cycle is kept; then 2, 4...: one kept in so many.
    pub fn stride(&self) -> u64 {
        self.stride
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Keeps the first, third, fifth... of `v`: a series at half the grain that
/// still spans the same time.
pub(super) fn keep_every_other<T>(v: &mut Vec<T>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 1
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_cycles_thin_evenly_and_ends_go_to_their_own_cycle() {
        let mut s = CycleSeries::default();
        let n = MAX_CYCLES as u64 * 5 + 3;
        for k in 0..n {
            s.begin(k * 10, Some(k), None);
            s.end(k * 10 + 5, Some(k + 1_000_000));
        }
        // 5 × MAX_CYCLES + 3 cycles: thinned at MAX, 2 MAX and 4 MAX cycles.
        assert_eq!(s.stride(), 8);
        let kept = s.as_slice();
        assert_eq!(kept.len() as u64, (n + 7) / 8);
        for (i, c) in kept.iter().enumerate() {
            let k = i as u64 * 8;
            assert_eq!((c.start_ktime, c.heap_at_start, c.marked), (k * 10, Some(k), Some(k + 1_000_000)), "cycle {k}");
        }
        // A dropped cycle's end does not land on the kept one before it.
        let mut s = CycleSeries { stride: 2, ..CycleSeries::default() };
        s.begin(0, None, None);
        s.begin(10, None, None);
        s.end(15, Some(7));
        assert_eq!(s.as_slice()[0].marked, None);
    }
}
