//! Turns a hot append callsite into a diagnosis: the `for` that drives it, the
//! loop's kind and what it ranges over, the element type, what one call costs,
//! and the fix with its expected saving.
use serde::{Deserialize, Serialize};

use crate::analysis::appendloop::{LoopKind, LoopReport};
use crate::{
    analysis::facts::Facts,
    tracee::gotypes::TypeInfo,
    units::{bytes, short},
};

/// What the aggregator knows about one growslice callsite.
#[derive(Debug, Clone, Default)]
pub struct GrowEvidence {
    /// Return addresses (runtime) of the heaviest growslice stack through
    /// this site, starting with the growslice call's.
    pub stack: Box<[u64]>,
    /// Element `*_type` (runtime address).
    pub elem_type: u64,
    pub growths: u64,
    pub calls: u64,
    pub finished_calls: u64,
    pub final_len_sum: u64,
    pub final_alloc_sum: u64,
    pub final_allocs: crate::ingest::aggregate::Quantiles,
    pub old_len_sum: u64,
    pub bytes: u64,
}

/// The share of calls whose final length a suggested size covers.
pub const SIZE_QUANTILE: f64 = 0.9;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerCall {
    /// Calls observed (appends starting from an empty slice).
    pub calls: u64,
    pub growslice: f64,
    pub bytes: f64,
    /// Typical final length per call: at least this (the last growth's length)...
    pub final_len: Option<f64>,
    /// ...and at most this (the capacity that growth produced).
    pub final_cap: Option<f64>,
    /// The capacity 9 in 10 calls ended with (the 90th percentile of their
    /// last growths' allocations, in elements): a size to preallocate that
    /// never regrows for them, the same across runs.
    pub final_cap_p90: Option<u64>,
    /// Bytes copied from old to new backing arrays per call.
    pub copied_bytes: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saving {
    pub bytes_per_s: f64,
    pub share_of_bytes: f64,
    pub allocations_per_call_after: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    pub loop_: Option<LoopReport>,
    pub elem_type: Option<TypeInfo>,
    pub per_call: Option<PerCall>,
    pub suggestion: String,
    pub expected_saving: Option<Saving>,
}

/// The diagnosis of a growslice callsite: the static facts (loop, element
/// type) from `facts`, the rest from what the session counted.
pub fn diagnose(facts: &mut dyn Facts, callsite_fn: &str, ev: &GrowEvidence, duration_s: f64, total_bytes: u64) -> Diagnosis {
    let elem_type = facts.elem_type(ev.elem_type);
    let loop_ = facts.append_loop(callsite_fn, &ev.stack);
    let per_call = (ev.calls > 0).then(|| PerCall {
        calls: ev.calls,
        growslice: ev.growths as f64 / ev.calls as f64,
        bytes: ev.bytes as f64 / ev.calls as f64,
        final_len: (ev.finished_calls > 0).then(|| ev.final_len_sum as f64 / ev.finished_calls as f64),
        final_cap_p90: elem_type.as_ref().filter(|t| t.size > 0).and_then(|t| Some(ev.final_allocs.quantile_max(SIZE_QUANTILE)? / t.size)),
        final_cap: match &elem_type {
            Some(t) if ev.finished_calls > 0 && t.size > 0 => Some(ev.final_alloc_sum as f64 / ev.finished_calls as f64 / t.size as f64),
            _ => None,
        },
        copied_bytes: elem_type.as_ref().map(|t| ev.old_len_sum as f64 * t.size as f64 / ev.calls as f64),
    });
    let expected_saving = match (&per_call, &elem_type) {
        // Conservative: one allocation sized to the largest final length
        // the evidence allows.
        (Some(pc), Some(t)) => pc.final_cap.map(|cap| {
            let right_sized = cap * t.size as f64;
            let saved_per_call = (pc.bytes - right_sized).max(0.0);
            let per_s = saved_per_call * ev.calls as f64 / duration_s.max(1e-9);
            Saving {
                bytes_per_s: per_s,
                share_of_bytes: saved_per_call * ev.calls as f64 / total_bytes.max(1) as f64,
                allocations_per_call_after: 1,
            }
        }),
        _ => None,
    };
    let suggestion = match builder_kind(callsite_fn) {
        Some(ty) => suggest_grow(ty, loop_.as_ref(), per_call.as_ref(), expected_saving.as_ref()),
        None => suggest(loop_.as_ref(), elem_type.as_ref(), per_call.as_ref(), expected_saving.as_ref()),
    };
    Diagnosis { loop_, elem_type, per_call, suggestion, expected_saving }
}

fn suggest(lp: Option<&LoopReport>, t: Option<&TypeInfo>, pc: Option<&PerCall>, saving: Option<&Saving>) -> String {
    let ty = t.map(|t| t.name.as_str()).unwrap_or("T");
    let n = pc.and_then(|p| p.final_cap_p90).map(|l| l.to_string());
    let make = match lp {
        Some(LoopReport { kind: LoopKind::Map | LoopKind::Slice | LoopKind::String, over: Some(over), .. }) => {
            format!("make([]{ty}, 0, len({over}))")
        }
        Some(LoopReport { kind: LoopKind::Integer, over: Some(over), .. }) => format!("make([]{ty}, 0, {over})"),
        _ => match &n {
            Some(n) => format!("make([]{ty}, 0, {n}) (enough for 9 in 10 of the calls seen)"),
            None => format!("make([]{ty}, 0, n)"),
        },
    };
    let at = before_loop(lp);
    let mut s = match lp.map(|l| l.kind) {
        Some(LoopKind::Channel | LoopKind::FuncIterator) => format!(
            "allocate once{at}: {make} if the count is known, or keep one buffer across calls and reset it with s = s[:0]"
        ),
        _ => format!("preallocate{at}: s := {make}"),
    };
    if let Some(sv) = saving {
        s.push_str(&format!("; saves at least {}/s ({:.0}% of allocated bytes), one allocation per call instead of {:.1}",
            bytes(sv.bytes_per_s as u64), sv.share_of_bytes * 100.0, pc.map(|p| p.growslice).unwrap_or(0.0)));
    }
    s
}

fn before_loop(lp: Option<&LoopReport>) -> String {
    match lp {
        Some(LoopReport { file: Some(f), line: Some(l), .. }) => format!(" before the loop at {}:{l}", short(f)),
        _ => " before the loop".into(),
    }
}

/// Appends inside strings.Builder or bytes.Buffer are fixed with their Grow.
fn builder_kind(callsite_fn: &str) -> Option<&'static str> {
    if callsite_fn.starts_with("strings.(*Builder).") {
        Some("strings.Builder")
    } else if callsite_fn.starts_with("bytes.(*Buffer).") {
        Some("bytes.Buffer")
    } else {
        None
    }
}

fn suggest_grow(ty: &str, lp: Option<&LoopReport>, pc: Option<&PerCall>, saving: Option<&Saving>) -> String {
    let at = before_loop(lp);
    let n = pc.and_then(|p| p.final_cap_p90).map(|l| l.to_string()).unwrap_or_else(|| "n".into());
    let mut s = format!("size the {ty} once{at}: b.Grow({n}) (the bytes 9 in 10 of the calls seen ended with), instead of letting each write regrow it");
    if let Some(sv) = saving {
        s.push_str(&format!("; saves at least {}/s ({:.0}% of allocated bytes)", bytes(sv.bytes_per_s as u64), sv.share_of_bytes * 100.0));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_name_the_fix() {
        let lp = LoopReport { file: Some("/src/main.go".into()), line: Some(21), kind: LoopKind::Map, over: Some("ix.byName".into()) };
        let t = TypeInfo { name: "string".into(), size: 16 };
        let s = suggest(Some(&lp), Some(&t), None, None);
        assert_eq!(s, "preallocate before the loop at main.go:21: s := make([]string, 0, len(ix.byName))");
        let pc = PerCall { calls: 10, growslice: 7.0, bytes: 4000.0, final_len: Some(100.0), final_cap: Some(128.0), final_cap_p90: Some(112), copied_bytes: None };
        let sv = Saving { bytes_per_s: 2048.0, share_of_bytes: 0.5, allocations_per_call_after: 1 };
        let s = suggest(None, None, Some(&pc), Some(&sv));
        assert!(s.starts_with("preallocate before the loop: s := make([]T, 0, 112) (enough for 9 in 10 of the calls seen); saves at least 2.0 KiB/s (50%"), "{s}");
        assert_eq!(builder_kind("strings.(*Builder).WriteString"), Some("strings.Builder"));
        assert_eq!(builder_kind("main.f"), None);
        let g = suggest_grow("strings.Builder", Some(&lp), Some(&pc), None);
        assert_eq!(g, "size the strings.Builder once before the loop at main.go:21: b.Grow(112) (the bytes 9 in 10 of the calls seen ended with), instead of letting each write regrow it");
    }
}
