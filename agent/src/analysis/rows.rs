//! The rows of a report that analysis makes and ranks: allocation
//! callsites, culprits, maps, and the heap at each GC cycle.
use serde::{Deserialize, Serialize};

use crate::{
    analysis::{
        appendloop::LoopReport,
        diagnose::{GrowEvidence, PerCall, Saving},
    },
    tracee::{frame::Frame, gotypes::TypeInfo},
};

/// Which allocations a callsite row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowProbe {
    /// The bytes come from growing a slice at this line (`append`).
    Growslice,
    /// Every other allocation.
    Mallocgc,
}

impl RowProbe {
    pub const fn name(self) -> &'static str {
        match self {
            RowProbe::Growslice => "growslice",
            RowProbe::Mallocgc => "mallocgc",
        }
    }
}

impl std::fmt::Display for RowProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeapSample {
    pub t_s: f64,
    /// `heapLive` as the cycle started: the heap that triggered it.
    pub bytes: u64,
    /// The GOGC goal it was paced toward (`gcPercentHeapGoal`).
    pub goal: Option<u64>,
    /// Bytes marked live by the cycle.
    pub marked: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapReport {
    /// The map's address in the target.
    pub map: String,
    pub growths: u64,
    /// Stretches between GC starts (the one before the first included)
    /// during which it grew.
    pub gc_cycles_growing: u64,
    pub first_growth_s: f64,
    pub last_growth_s: f64,
    /// Where entries are inserted: the first frame outside the runtime.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub frames: Vec<Frame>,
    /// Its length when first and last read (about once a second, and at
    /// each GC), and how many reads there were.
    pub len_first: Option<u64>,
    pub len_last: Option<u64>,
    pub len_samples: usize,
    /// Reads that found no map at its address: the memory was unreadable, or held
    /// something else (the map was freed and its memory reused). None of them is a length.
    pub len_unread: u64,
    /// Seconds between the first and last reads.
    pub observed_s: f64,
    /// Entries per second between the first and last reads.
    pub growth_per_s: Option<f64>,
    /// Its length only grew, in most intervals, by at least 1%.
    pub likely_leak: bool,
    /// Inserts seen (`m[k] = v`; in sampled mode only those in bursts).
    pub inserts: u64,
    /// `map[K]V`, with its key and value types (known once an insert was seen).
    pub map_type: Option<String>,
    pub key_type: Option<TypeInfo>,
    pub value_type: Option<TypeInfo>,
    /// len_last × (key size + value size): a floor on the bytes it holds
    /// (what keys and values point to is not counted).
    pub bytes_held_min: Option<u64>,
    /// Calls to delete() or clear() on a map of this type anywhere in the
    /// program's code, and the first few of them (None: type unknown).
    pub deletes_in_program: Option<u64>,
    pub deleted_at: Vec<String>,
    /// The whole verdict in one sentence (likely leaks).
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Callsite {
    /// `growslice` when the bytes come from growing a slice at this line,
    /// `mallocgc` for every other allocation.
    pub probe: RowProbe,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The heaviest full stack through this callsite, innermost first.
    pub frames: Vec<Frame>,
    /// growslice calls (probe `growslice`) or allocations (probe `mallocgc`).
    pub count: u64,
    /// Allocations made at this callsite (through growslice or directly).
    pub allocs: u64,
    pub bytes: u64,
    pub per_s: f64,
    pub bytes_per_s: f64,
    pub share_of_bytes: f64,
    pub share_of_allocs: f64,
    /// Relative 95% confidence half-width of bytes_per_s (sampled mode).
    pub bytes_per_s_ci95: Option<f64>,
    /// The same callsite's rate estimated from the runtime's own samples,
    /// weighted as pprof weights them (sampled mode, MemProfileRate > 0).
    pub runtime_sampled_bytes_per_s: Option<f64>,
    /// Mean length requested per growth (growslice callsites).
    pub mean_new_len: Option<f64>,
    /// The first frame of the owner's code on `frames` (None: none within
    /// the frames walked).
    pub app_frame: Option<Frame>,
    /// What the culprit diagnosis needs (growslice callsites).
    #[serde(skip)]
    pub evidence: Option<GrowEvidence>,
}

/// A function of the owner's code, by the bytes it causes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppCallsite {
    pub rank: u32,
    pub function: String,
    /// Its line on the heaviest stack it causes.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Bytes allocated where it is the owner's frame nearest the
    /// allocation: by its own lines and the library code it calls.
    pub bytes: u64,
    pub allocs: u64,
    pub bytes_per_s: f64,
    pub share_of_bytes: f64,
    /// Of `bytes`, those that grew slices.
    pub growslice_bytes: u64,
    pub growslice_share: f64,
    /// Bytes allocated with it anywhere on the stack (each stack once):
    /// its own and those of the owner's functions it calls.
    pub inclusive_bytes: u64,
    pub inclusive_share: f64,
    /// The library function its heaviest stack allocates in, when the
    /// allocation is not in the owner's code itself.
    pub via: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Culprit {
    pub rank: u32,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub kind: String,
    pub share_of_bytes: f64,
    pub share_of_allocs: f64,
    pub evidence: String,
    pub suggestion: String,
    /// One sentence: the whole diagnosis.
    pub summary: String,
    /// The innermost loop around the append: its `for` line, kind, range expression.
    #[serde(rename = "loop")]
    pub loop_: Option<LoopReport>,
    pub elem_type: Option<TypeInfo>,
    pub per_call: Option<PerCall>,
    pub expected_saving: Option<Saving>,
    /// When the append is in library code: the owner's frame that calls
    /// into it, and the loop around that call in the owner's code.
    pub app_frame: Option<Frame>,
    pub app_loop: Option<LoopReport>,
}
