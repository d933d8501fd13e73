//! Which `for` drives an append: the innermost natural loop around the
//! growslice call in the function's machine code, its kind (map, channel,
//! string, range-over-func from the runtime calls it makes; slice, integer
//! or plain `for` from the source line when it is on this machine) and the
//! expression it ranges over.
use serde::{Deserialize, Serialize};

use crate::{
    analysis::loops,
    tracee::{
        binary::Binary,
        frame::Frame,
        symbolize::Symbolizer,
    },
};

/// What a loop ranges over, as far as the machine code and the source say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopKind {
    /// The runtime's map iterator.
    Map,
    /// `range` over a slice or array (from the source line).
    Slice,
    /// Rune decoding.
    String,
    /// Channel receives.
    Channel,
    /// `range N` (Go 1.22+, from the source line).
    Integer,
    /// Go 1.23 range-over-func: the body is a closure the iterator calls.
    FuncIterator,
    /// A three-clause or bare `for` (from the source line).
    For,
    /// Nothing in the code says, and the source is not here.
    Unknown,
}

impl LoopKind {
    /// As the report names it.
    pub const fn name(self) -> &'static str {
        match self {
            LoopKind::Map => "map",
            LoopKind::Slice => "slice",
            LoopKind::String => "string",
            LoopKind::Channel => "channel",
            LoopKind::Integer => "integer",
            LoopKind::FuncIterator => "func-iterator",
            LoopKind::For => "for",
            LoopKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for LoopKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopReport {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub kind: LoopKind,
    /// The ranged-over expression, when the source line is readable.
    pub over: Option<String>,
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
    let insns = loops::decode(bin.arch, code, entry);
    // Go 1.23 range-over-func: the body is a closure `f-range1`, called by
    // the iterator; its loop lives in the iterator, not here.
    let in_closure = callsite_fn.contains("-range");
    let Some(lp) = loops::innermost_loop(&insns, call) else {
        return in_closure.then_some(LoopReport { file: None, line: None, kind: LoopKind::FuncIterator, over: None });
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
    let (_, over) = refine_with_source(LoopKind::FuncIterator, source.as_deref());
    Some(LoopReport { file: f.file.clone(), line: f.line, kind: LoopKind::FuncIterator, over })
}

/// The loop's kind from what it calls: map and channel iteration go through
/// the runtime (mapiternext before Go 1.24, mapIterNext with swiss maps),
/// string ranges decode runes.
fn kind_from_calls(callees: &[String], in_closure: bool) -> LoopKind {
    let calls = |pred: &dyn Fn(&str) -> bool| callees.iter().any(|c| pred(c));
    if calls(&|c| c == "runtime.mapiternext" || c == "runtime.mapIterNext" || c.ends_with("maps.(*Iter).Next")) {
        LoopKind::Map
    } else if calls(&|c| c.starts_with("runtime.chanrecv")) {
        LoopKind::Channel
    } else if in_closure {
        LoopKind::FuncIterator
    } else if calls(&|c| c == "runtime.decoderune") {
        LoopKind::String
    } else {
        LoopKind::Unknown
    }
}

/// Source read for a loop's `for` line stops here: a line past it is not looked for.
const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Line `line` of a Go source file on this machine. The name comes from the
/// target's binary, which the target controls: only a regular `.go` file is
/// read (never a FIFO, device or /proc file, which could hang or flood the
/// agent), opened without blocking, and no more of it than MAX_SOURCE_BYTES.
fn source_line(file: &str, line: u32) -> Option<String> {
    use std::{io::{BufRead as _, Read as _}, os::unix::fs::OpenOptionsExt as _};
    if !file.ends_with(".go") || !std::fs::metadata(file).ok()?.is_file() {
        return None;
    }
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(file).ok()?;
    // Checked again on what was opened: the path may have changed since.
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut lines = std::io::BufReader::new(f.take(MAX_SOURCE_BYTES)).lines();
    lines.nth(line.checked_sub(1)? as usize)?.ok().map(|l| l.trim().to_owned())
}

/// Refines the machine-code kind with the `for` statement's text when the
/// source is on this machine (slices, strings and integers look alike in code).
fn refine_with_source(code_kind: LoopKind, line: Option<&str>) -> (LoopKind, Option<String>) {
    let Some(text) = line.and_then(|l| l.strip_prefix("for")) else { return (code_kind, None) };
    let text = text.split("//").next().unwrap_or(text);
    let body = text.trim().trim_end_matches('{').trim();
    if let Some(pos) = body.find("range ").filter(|&p| p == 0 || body[..p].ends_with(' ') || body[..p].ends_with('=')) {
        let over = body[pos + "range ".len()..].trim().to_owned();
        let kind = match code_kind {
            LoopKind::Unknown if over.parse::<u64>().is_ok() => LoopKind::Integer,
            LoopKind::Unknown => LoopKind::Slice,
            k => k,
        };
        return (kind, Some(over));
    }
    let kind = if code_kind == LoopKind::Unknown { LoopKind::For } else { code_kind };
    (kind, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_runtime_calls() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(kind_from_calls(&v(&["runtime.mapiternext"]), false), LoopKind::Map);
        assert_eq!(kind_from_calls(&v(&["runtime.mapIterNext", "runtime.growslice"]), false), LoopKind::Map);
        assert_eq!(kind_from_calls(&v(&["internal/runtime/maps.(*Iter).Next"]), false), LoopKind::Map);
        assert_eq!(kind_from_calls(&v(&["runtime.chanrecv2"]), false), LoopKind::Channel);
        assert_eq!(kind_from_calls(&v(&["runtime.decoderune"]), false), LoopKind::String);
        assert_eq!(kind_from_calls(&v(&["runtime.growslice"]), true), LoopKind::FuncIterator);
        assert_eq!(kind_from_calls(&v(&["runtime.growslice"]), false), LoopKind::Unknown);
    }

    /// Only a regular `.go` file is read for a `for` line: a binary naming a
    /// FIFO (which would block), a /proc file or a secret gets nothing read.
    #[test]
    fn source_lines_come_only_from_regular_go_files() {
        let dir = std::env::temp_dir().join(format!("gcprobe-srcline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let go = dir.join("main.go");
        std::fs::write(&go, "package main\n\nfunc main() {\n\tfor _, v := range xs {\n").unwrap();
        assert_eq!(source_line(go.to_str().unwrap(), 4).as_deref(), Some("for _, v := range xs {"));
        assert_eq!(source_line(go.to_str().unwrap(), 0), None);
        assert_eq!(source_line(go.to_str().unwrap(), 99), None);
        let fifo = dir.join("fifo.go");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever if it were opened for reading without O_NONBLOCK or read.
        assert_eq!(source_line(fifo.to_str().unwrap(), 1), None);
        let plain = dir.join("notes.txt");
        std::fs::write(&plain, "for x := range secret {\n").unwrap();
        assert_eq!(source_line(plain.to_str().unwrap(), 1), None);
        for path in ["/etc/shadow", "/proc/self/mem", "/dev/zero"] {
            assert_eq!(source_line(path, 1), None, "{path}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn source_refines_kind_and_names_the_range_expression() {
        assert_eq!(refine_with_source(LoopKind::Map, Some("for name := range d.tenants {")), (LoopKind::Map, Some("d.tenants".into())));
        assert_eq!(refine_with_source(LoopKind::Unknown, Some("for _, v := range xs {")), (LoopKind::Slice, Some("xs".into())));
        assert_eq!(refine_with_source(LoopKind::Unknown, Some("for i := range 100 {")), (LoopKind::Integer, Some("100".into())));
        assert_eq!(refine_with_source(LoopKind::Map, Some("for k := range c.items { // note")), (LoopKind::Map, Some("c.items".into())));
        assert_eq!(refine_with_source(LoopKind::Unknown, Some("for i := 0; i < n; i++ {")), (LoopKind::For, None));
        assert_eq!(refine_with_source(LoopKind::Unknown, Some("for {")), (LoopKind::For, None));
        assert_eq!(refine_with_source(LoopKind::Channel, Some("for v := range ch {")), (LoopKind::Channel, Some("ch".into())));
        assert_eq!(refine_with_source(LoopKind::Map, None), (LoopKind::Map, None));
        assert_eq!(refine_with_source(LoopKind::Unknown, Some("x = append(x, 1)")), (LoopKind::Unknown, None));
    }
}
