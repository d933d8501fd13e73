//! The version × build matrix: every supported Go toolchain, each build mode.
//!
//! Symbolization (no root): for a few hundred PCs per binary, gcprobe's
//! pclntab reader gives the same function and file:line as `go tool addr2line`
//! of the same toolchain, and DWARF and pclntab agree frame for frame where
//! both exist. Attach (root): gcprobe names the culprit append in every build.
use std::{io::Write as _, path::Path, process::{Command, Stdio}};

use gcprobe::{tracee::binary::Binary, tracee::buildinfo, tracee::pclntab::Pclntab, tracee::symbolize::Symbolizer};
use gcprobe_tests::*;

fn build(version: &str, flavor: Flavor) -> std::path::PathBuf {
    fixtures::build("appendloop", version, flavor).unwrap_or_else(|e| panic!("Go {version} {flavor:?}: {e:#}"))
}

fn sample_pcs(tab: &Pclntab) -> Vec<u64> {
    // `size` runs to the next function, padding included; go tool addr2line
    // has no line for padding either, so samples stay in the first 3/4.
    let funcs: Vec<_> = tab.functions().map(|f| f.unwrap()).filter(|f| f.size >= 64).collect();
    let step = (funcs.len() / 120).max(1);
    let mut pcs = Vec::new();
    for f in funcs.iter().step_by(step) {
        pcs.push(f.entry);
        pcs.push(f.entry + f.size / 3);
        pcs.push(f.entry + f.size * 2 / 3);
    }
    // Dense in the fixture's own code, where the inlined appends are.
    for f in funcs.iter().filter(|f| f.name.starts_with("main.")) {
        for k in 0..12 {
            pcs.push(f.entry + f.size * k / 16);
        }
    }
    pcs
}

/// `go tool addr2line`: (function, file:line) per PC.
fn go_addr2line(version: &str, exe: &Path, pcs: &[u64]) -> Vec<(String, String)> {
    let go = xtask::tools::go_bin(version);
    let mut child = Command::new(&go).args(["tool", "addr2line"]).arg(exe).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pcs.len() * 2, "go tool addr2line output for {}", exe.display());
    lines.chunks(2).map(|c| (c[0].to_owned(), c[1].to_owned())).collect()
}

#[test]
fn symbolization_matches_go_tool_addr2line_in_every_build() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for version in fixtures::go_versions() {
        for flavor in Flavor::ALL {
            let exe = build(version, flavor);
            let bin = Binary::open(&exe).unwrap();
            let info = buildinfo::parse(bin.section_data(".go.buildinfo"), bin.data()).unwrap();
            let tab = Pclntab::parse(&bin, info.version).unwrap().expect("every Go binary has a pclntab");
            assert!(tab.has_inline_tree(), "Go {version} {flavor:?}: inline tree not found");
            let pcs = sample_pcs(&tab);
            assert!(pcs.len() >= 300, "{}", pcs.len());
            // Go 1.19 puts a PIE's table in .data.rel.ro.gopclntab, which its own
            // addr2line does not look for (it answers "?"); 1.21's reads it.
            let oracle = if version == pins::GO_DEBIAN && flavor == Flavor::Pie { pins::GO_PYPI[0] } else { version };
            let want = go_addr2line(oracle, &exe, &pcs);
            let dwarf = bin.has_dwarf.then(|| Symbolizer::new(&bin, None, 0).unwrap());
            let mut dwarf = dwarf;
            for (&pc, (want_fn, want_loc)) in pcs.iter().zip(&want) {
                checked += 1;
                let frames = tab.frames(pc).unwrap().unwrap_or_else(|| panic!("Go {version} {flavor:?}: no frames at {pc:#x}"));
                let got_fn = &frames.last().unwrap().function;
                // addr2line prints ":-1" where no line covers the PC (alignment
                // padding after a short function); there we must have none either.
                let got_loc = match (&frames[0].file, frames[0].line) {
                    (Some(f), Some(l)) => format!("{f}:{l}"),
                    _ => ":-1".to_owned(),
                };
                if got_fn != want_fn || &got_loc != want_loc {
                    failures.push(format!("Go {version} {flavor:?} {pc:#x}: pclntab {got_fn} {got_loc}; go tool addr2line {want_fn} {want_loc}"));
                }
                // Where DWARF has a row, it and the pclntab must agree frame for frame.
                if let Some(d) = dwarf.as_mut().filter(|_| want_loc != ":-1") {
                    let from_dwarf = d.frames(pc, false);
                    if from_dwarf[0].line.is_some() && !frames_agree(&from_dwarf, &frames) {
                        failures.push(format!("Go {version} {flavor:?} {pc:#x}: DWARF {from_dwarf:?} != pclntab {frames:?}"));
                    }
                }
            }
        }
    }
    eprintln!("checked {checked} PCs");
    let mut per_build = std::collections::BTreeMap::<String, usize>::new();
    for f in &failures {
        *per_build.entry(f.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).or_default() += 1;
    }
    assert!(failures.is_empty(), "{} mismatches {per_build:?}:\n{}", failures.len(), failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n"));
}

/// Equal, except that Go 1.18–1.19 pclntabs abbreviate generic array types
/// in names as `[...]` (`type..eq.[...]runtime.Frame`), which DWARF spells out.
fn frames_agree(dwarf: &[gcprobe::tracee::frame::Frame], pcln: &[gcprobe::tracee::frame::Frame]) -> bool {
    dwarf.len() == pcln.len()
        && dwarf.iter().zip(pcln).all(|(d, p)| {
            let names = d.function == p.function || {
                let parts: Vec<&str> = p.function.split("[...]").collect();
                parts.len() > 1 && d.function.starts_with(parts[0]) && d.function.ends_with(parts[parts.len() - 1])
            };
            names && d.file == p.file && d.line == p.line && d.inlined == p.inlined
        })
}

#[test]
fn culprit_is_found_in_every_build() {
    if !privileged("culprit_is_found_in_every_build") {
        return;
    }
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let mut failures = Vec::new();
    for version in fixtures::go_versions() {
        for flavor in Flavor::ALL {
            let exe = build(version, flavor);
            let t = Target::start(&exe, &["-mode=grow"], &[]);
            let r = attach_json(t.pid(), "2s");
            let got = culprits(&r).first().map(|c| (str_of(c, "function").to_owned(), c["line"].as_u64().unwrap_or(0)));
            if got != Some(("main.(*Index).Names".to_owned(), u64::from(line))) {
                failures.push(format!("Go {version} {flavor:?}: culprit {got:?}, probes {}", r["probes"]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
