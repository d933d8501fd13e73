//! Symbolization agrees with Go's own `go tool addr2line` (no root needed).
use std::{io::Write as _, process::{Command, Stdio}};

use gcprobe::{tracee::binary::Binary, tracee::buildinfo, tracee::pclntab::Pclntab, tracee::symbolize::Symbolizer};
use gcprobe_tests::*;

#[test]
fn dwarf_frames_match_go_tool_addr2line() {
    let exe = fixture("appendloop");
    let bin = Binary::open(&exe).unwrap();
    // As gcprobe runs: DWARF first, the pclntab where DWARF has no row.
    let go = buildinfo::parse(bin.section_data(".go.buildinfo"), bin.data()).unwrap().version;
    let mut sym = Symbolizer::new(&bin, Pclntab::parse(&bin, go).unwrap(), 0).unwrap();

    // A few hundred PCs spread over every function: entries and interior points.
    let mut funcs: Vec<_> = bin.symbols().filter(|s| s.size > 16 && bin.section(".text").is_some_and(|t| s.addr >= t.addr && s.addr < t.addr + t.size)).cloned().collect();
    funcs.sort_by_key(|s| s.addr);
    let step = (funcs.len() / 150).max(1);
    let mut pcs = Vec::new();
    for f in funcs.iter().step_by(step) {
        pcs.push(f.addr);
        pcs.push(f.addr + f.size / 2);
    }
    for f in funcs.iter().filter(|f| f.name.starts_with("main.")) {
        for k in 0..8 {
            pcs.push(f.addr + f.size * k / 8);
        }
    }
    assert!(pcs.len() >= 300, "{}", pcs.len());

    let go = xtask::tools::go_bin(pins::GO_DEFAULT);
    let mut child = Command::new(&go).args(["tool", "addr2line"]).arg(&exe).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), pcs.len() * 2);

    let mut mismatches = Vec::new();
    for (i, &pc) in pcs.iter().enumerate() {
        let (want_fn, want_loc) = (lines[2 * i], lines[2 * i + 1]);
        let frames = sym.frames(pc, false);
        // addr2line names the physical function and the innermost position.
        let got_fn = &frames.last().unwrap().function;
        let inner = &frames[0];
        let got_loc = format!("{}:{}", inner.file.as_deref().unwrap_or("?"), inner.line.unwrap_or(0));
        if got_fn != want_fn || got_loc != want_loc {
            mismatches.push(format!("{pc:#x}: got {got_fn} {got_loc}, go tool addr2line {want_fn} {want_loc}"));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} PCs differ:\n{}", mismatches.len(), pcs.len(), mismatches.join("\n"));
}
