//! Turns a hot append callsite into a diagnosis: the `for` that drives it, the
//! loop's kind and what it ranges over, the element type, what one call costs,
//! and the fix with its expected saving.
use serde::{Deserialize, Serialize};

use crate::{
    target::binary::Binary,
    analysis::culprits::bytes,
    analysis::facts::Facts,
    target::gotypes::TypeInfo,
    analysis::loops,
    target::symbolize::{Frame, Symbolizer},
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopReport {
    pub file: Option<String>,
    pub line: Option<u32>,
    /// map, slice, string, channel, integer, func-iterator, for, unknown.
    pub kind: String,
    /// The ranged-over expression, when the source line is readable.
    pub over: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The loop driving an append, from the binary's code: `frames` are the
/// growslice stack's (innermost first), `stack` its return addresses.
pub(crate) fn append_loop(bin: &Binary, sym: &mut Symbolizer, callsite_fn: &str, frames: &[Frame], stack: &[u64]) -> Option<LoopReport> {
    // The append may sit in a helper that was not inlined; its loop is
    // then in a caller: walk up a few return addresses.
    range_func_loop(callsite_fn, frames).or_else(|| stack.iter().take(4).find_map(|&pc| find_loop(bin, sym, callsite_fn, pc)))
}

fn find_loop(bin: &Binary, sym: &mut Symbolizer, callsite_fn: &str, ret_pc: u64) -> Option<LoopReport> {
    let call = ret_pc.wrapping_sub(sym.bias()).wrapping_sub(1);
    let (entry, size) = sym.function_at(call)?;
    let code = bin.bytes_at(entry, usize::try_from(size).ok()?)?;
    let insns = loops::decode(bin.arch, code, entry).ok()?;
    // Go 1.23 range-over-func: the body is a closure `f-range1`, called by
    // the iterator; its loop lives in the iterator, not here.
    let in_closure = callsite_fn.contains("-range");
    let Some(lp) = loops::innermost_loop(&insns, call) else {
        return in_closure.then(|| LoopReport { file: None, line: None, kind: "func-iterator".into(), over: None });
    };
    // The loop belongs to the innermost non-runtime function at its
    // header. The header is the loop's condition check and carries the
    // `for` line; trust it when it precedes the callsite's own line in that
    // function. Otherwise (a `for {}` with no condition) take the smallest
    // line of that function inside the loop. Not the smallest line always:
    // nested loops reload outer-loop spills inside the inner one.
    let head = sym.frames_at_vaddr(lp.head);
    let owner = head.iter().find(|f| !f.is_runtime()).or(head.last())?.clone();
    let at_call = sym.frames_at_vaddr(call).iter().find(|f| f.function == owner.function).and_then(|f| f.line);
    let line = match (owner.line, at_call) {
        (Some(h), Some(c)) if h <= c => Some(h),
        _ => {
            let mut best: Option<u32> = None;
            for &ip in &lp.insns {
                let frames = sym.frames_at_vaddr(ip);
                if let Some(l) = frames.iter().find(|f| f.function == owner.function && f.file == owner.file).and_then(|f| f.line) {
                    best = Some(best.map_or(l, |b| b.min(l)));
                }
            }
            best.or(owner.line)
        }
    };
    let callee_names: Vec<String> = lp.calls.iter().filter_map(|&t| sym.frames_at_vaddr(t).last().map(|f| f.function.clone())).collect();
    let code_kind = kind_from_calls(&callee_names, in_closure);
    let source = owner.file.as_deref().zip(line).and_then(|(f, l)| source_line(f, l));
    let (kind, over) = refine_with_source(code_kind, source.as_deref());
    Some(LoopReport { file: owner.file, line, kind, over })
}

/// Go 1.23 range-over-func: the loop body becomes a closure `F-rangeN` that
/// the iterator calls, so the `for ... range it` statement is the frame of `F`
/// further up the stack, not a loop in the machine code around the append.
fn range_func_loop(callsite_fn: &str, frames: &[Frame]) -> Option<LoopReport> {
    let (parent, _) = callsite_fn.rsplit_once("-range")?;
    let f = frames.iter().find(|f| f.function == parent)?;
    let source = f.file.as_deref().zip(f.line).and_then(|(file, l)| source_line(file, l));
    let (_, over) = refine_with_source("func-iterator", source.as_deref());
    Some(LoopReport { file: f.file.clone(), line: f.line, kind: "func-iterator".into(), over })
}

/// The loop's kind from what it calls: map and channel iteration go through
/// the runtime (mapiternext before Go 1.24, mapIterNext with swiss maps),
/// string ranges decode runes.
fn kind_from_calls(callees: &[String], in_closure: bool) -> &'static str {
    let calls = |pred: &dyn Fn(&str) -> bool| callees.iter().any(|c| pred(c));
    if calls(&|c| c == "runtime.mapiternext" || c == "runtime.mapIterNext" || c.ends_with("maps.(*Iter).Next")) {
        "map"
    } else if calls(&|c| c.starts_with("runtime.chanrecv")) {
        "channel"
    } else if in_closure {
        "func-iterator"
    } else if calls(&|c| c == "runtime.decoderune") {
        "string"
    } else {
        "unknown"
    }
}

fn source_line(file: &str, line: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().nth(line.checked_sub(1)? as usize).map(|l| l.trim().to_owned())
}

/// Refines the machine-code kind with the `for` statement's text when the
/// source is on this machine (slices, strings and integers look alike in code).
fn refine_with_source(code_kind: &str, line: Option<&str>) -> (String, Option<String>) {
    let Some(text) = line.and_then(|l| l.strip_prefix("for")) else { return (code_kind.into(), None) };
    let text = text.split("//").next().unwrap_or(text);
    let body = text.trim().trim_end_matches('{').trim();
    if let Some(pos) = body.find("range ").filter(|&p| p == 0 || body[..p].ends_with(' ') || body[..p].ends_with('=')) {
        let over = body[pos + "range ".len()..].trim().to_owned();
        let kind = match code_kind {
            "unknown" if over.parse::<u64>().is_ok() => "integer",
            "unknown" => "slice",
            k => k,
        };
        return (kind.into(), Some(over));
    }
    let kind = if code_kind == "unknown" { "for" } else { code_kind };
    (kind.into(), None)
}

fn suggest(lp: Option<&LoopReport>, t: Option<&TypeInfo>, pc: Option<&PerCall>, saving: Option<&Saving>) -> String {
    let ty = t.map(|t| t.name.as_str()).unwrap_or("T");
    let n = pc.and_then(|p| p.final_cap_p90).map(|l| l.to_string());
    let make = match lp {
        Some(LoopReport { kind, over: Some(over), .. }) if matches!(kind.as_str(), "map" | "slice" | "string") => {
            format!("make([]{ty}, 0, len({over}))")
        }
        Some(LoopReport { kind, over: Some(over), .. }) if kind == "integer" => format!("make([]{ty}, 0, {over})"),
        _ => match &n {
            Some(n) => format!("make([]{ty}, 0, {n}) (enough for 9 in 10 of the calls seen)"),
            None => format!("make([]{ty}, 0, n)"),
        },
    };
    let at = before_loop(lp);
    let mut s = match lp.map(|l| l.kind.as_str()) {
        Some("channel") | Some("func-iterator") => format!(
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

pub fn short(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_runtime_calls() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(kind_from_calls(&v(&["runtime.mapiternext"]), false), "map");
        assert_eq!(kind_from_calls(&v(&["runtime.mapIterNext", "runtime.growslice"]), false), "map");
        assert_eq!(kind_from_calls(&v(&["internal/runtime/maps.(*Iter).Next"]), false), "map");
        assert_eq!(kind_from_calls(&v(&["runtime.chanrecv2"]), false), "channel");
        assert_eq!(kind_from_calls(&v(&["runtime.decoderune"]), false), "string");
        assert_eq!(kind_from_calls(&v(&["runtime.growslice"]), true), "func-iterator");
        assert_eq!(kind_from_calls(&v(&["runtime.growslice"]), false), "unknown");
    }

    #[test]
    fn source_refines_kind_and_names_the_range_expression() {
        assert_eq!(refine_with_source("map", Some("for name := range d.tenants {")), ("map".into(), Some("d.tenants".into())));
        assert_eq!(refine_with_source("unknown", Some("for _, v := range xs {")), ("slice".into(), Some("xs".into())));
        assert_eq!(refine_with_source("unknown", Some("for i := range 100 {")), ("integer".into(), Some("100".into())));
        assert_eq!(refine_with_source("map", Some("for k := range c.items { // note")), ("map".into(), Some("c.items".into())));
        assert_eq!(refine_with_source("unknown", Some("for i := 0; i < n; i++ {")), ("for".into(), None));
        assert_eq!(refine_with_source("unknown", Some("for {")), ("for".into(), None));
        assert_eq!(refine_with_source("channel", Some("for v := range ch {")), ("channel".into(), Some("ch".into())));
        assert_eq!(refine_with_source("map", None), ("map".into(), None));
        assert_eq!(refine_with_source("unknown", Some("x = append(x, 1)")), ("unknown".into(), None));
    }

    #[test]
    fn suggestions_name_the_fix() {
        let lp = LoopReport { file: Some("/src/main.go".into()), line: Some(21), kind: "map".into(), over: Some("ix.byName".into()) };
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
