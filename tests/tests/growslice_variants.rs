//! Every function Go grows a slice through is probed: growslice, and Go
//! 1.26+'s growsliceNoAlias, growsliceBuf and growsliceBufNoAlias. Each
//! append line of the growvariants fixture is counted in exact mode as the
//! program counts itself (see `within` for the bound): its growths
//! (capacity changes) and the heap bytes they allocate (growths into the
//! stack buffer allocate none). Which
//! function each line calls is read from the machine code (`go tool objdump`).
use std::{
    path::Path,
    process::Command,
};

use gcprobe_tests::*;

const FIXTURE: &str = "growvariants";
const LINES: [&str; 4] = ["append-global", "append-big", "append-buf", "append-ptrbuf"];

/// The fixture's own counts of one append line.
struct Own {
    name: String,
    growths: u64,
    in_buffer: u64,
    heap_bytes: u64,
}

/// The fixture's own counts, per marker.
fn own_counts(text: &str) -> Vec<Own> {
    text.lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_owned();
            let kv: Vec<u64> = f.map(|kv| kv.split_once('=').unwrap().1.parse().unwrap()).collect();
            Own { name, growths: kv[0], in_buffer: kv[1], heap_bytes: kv[2] }
        })
        .collect()
}

/// The runtime function each marked append line calls, by `go tool objdump`.
fn called_per_line(version: &str, exe: &Path) -> Vec<(u32, String)> {
    let out = Command::new(xtask::tools::go_bin(version)).args(["tool", "objdump", "-s", r"^main\."]).arg(exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut calls = Vec::new();
    for l in text.lines() {
        let (Some(at), Some(callee)) = (l.split_whitespace().next(), l.split("CALL runtime.").nth(1)) else { continue };
        let callee = callee.split('(').next().unwrap();
        if callee.starts_with("growslice") {
            let line = at.rsplit(':').next().unwrap().parse().unwrap();
            calls.push((line, format!("runtime.{callee}")));
        }
    }
    calls
}

/// `gcprobe run --mode exact` over the fixture: the report and its own counts.
fn run_exact(exe: &Path, name: &str) -> (serde_json::Value, Vec<Own>) {
    let dir = scratch_dir("growslice-variants", name);
    let (report, counts) = (dir.join("report.json"), dir.join("counts.txt"));
    let out = Command::new(gcprobe_bin())
        .args(["run", "--quiet", "--mode", "exact", "--format", "json", "-o"])
        .arg(&report)
        .arg("--")
        .arg(exe)
        .args(["-rounds", "60", "-counts"])
        .arg(&counts)
        .output()
        .expect("running gcprobe");
    assert!(out.status.success(), "{name}: {}", stderr_text(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (r, own_counts(&std::fs::read_to_string(&counts).unwrap()))
}

/// `got` is `want` or a little more: at least every growth, at most one in
/// `per` (plus `slack`) seen twice. A hit is seen twice when its thread
/// moves to another CPU between a variant's entry and its inner growslice
/// call, which the kernel tells apart per CPU. (A prologue that calls
/// runtime.morestack no longer counts twice: stack_check.rs.) A variant
/// counted twice (+55-100%) or the stack-buffer growths missed (-44%) are
/// far outside.
fn within(got: u64, want: u64, per: u64, slack: u64) -> bool {
    got >= want && got <= want + want / per + slack
}

/// Each marked line's growslice row holds the fixture's growths and
/// heap bytes; every variant the binary calls is attached.
fn assert_counted(version: &str, flavor: Flavor, expect: [&str; 4]) {
    let what = format!("Go {version} {flavor:?}");
    let exe = fixtures::build(FIXTURE, version, flavor).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let lines: Vec<u32> = LINES.iter().map(|m| fixtures::marker_line(FIXTURE, &format!("gcprobe:{m}"))).collect();
    let calls = called_per_line(version, &exe);
    for ((line, marker), want) in lines.iter().zip(LINES).zip(expect) {
        let at: Vec<&str> = calls.iter().filter(|(l, _)| l == line).map(|(_, c)| c.as_str()).collect();
        assert_eq!(at, [want], "{what}: {marker} (line {line}) calls");
    }
    let (r, own) = run_exact(&exe, &format!("{version}-{}", flavor.name()));
    assert_eq!(r["events"]["lost"], 0, "{what}");
    for symbol in expect {
        let p = r["probes"].as_array().unwrap().iter().find(|p| p["symbol"] == symbol);
        assert_eq!(p.map(|p| p["attached"].clone()), Some(serde_json::json!(true)), "{what}: probe on {symbol}: {}", r["probes"]);
    }
    let rows = r["callsites"].as_array().unwrap();
    let mut inner = 0;
    for (((line, marker), o), via) in lines.iter().zip(LINES).zip(&own).zip(expect) {
        assert_eq!(marker, o.name);
        assert!(o.growths > 0, "{what}: {marker} never grew");
        // Each variant calls growslice (or growsliceBuf) with its arguments: a hit the kernel drops.
        inner += match via {
            "runtime.growsliceNoAlias" => o.growths,
            "runtime.growsliceBuf" => o.growths - o.in_buffer,
            "runtime.growsliceBufNoAlias" => o.growths + o.growths - o.in_buffer,
            _ => 0,
        };
        let row = rows
            .iter()
            .find(|c| c["probe"] == "growslice" && c["line"] == *line && str_of(c, "file").ends_with("growvariants/main.go"))
            .unwrap_or_else(|| panic!("{what}: no growslice row at {marker} (line {line}): {rows:#?}"));
        let (count, bytes) = (row["count"].as_u64().unwrap(), row["bytes"].as_u64().unwrap());
        assert!(within(count, o.growths, 100, 2) && within(bytes, o.heap_bytes, 50, 4096), "{what}: {marker} (line {line}): {count} growths of {bytes} B, the program made {} of {} B", o.growths, o.heap_bytes);
    }
    // Go 1.27's mallocgc also calls its size-specialized entries: those count here too.
    let skipped = r["events"]["nested_skipped"].as_u64().unwrap();
    assert!(skipped >= inner, "{what}: {skipped} nested hits skipped, {inner} inner growslice calls made");
}

#[test]
fn every_growslice_variant_is_probed_and_counts_its_appends() {
    if !privileged("every_growslice_variant_is_probed_and_counts_its_appends") {
        return;
    }
    let go = "1.27.3";
    assert_counted(go, Flavor::Default, ["runtime.growslice", "runtime.growslice", "runtime.growsliceBuf", "runtime.growsliceBuf"]);
    assert_counted(go, Flavor::FreeGc, ["runtime.growslice", "runtime.growsliceNoAlias", "runtime.growsliceBufNoAlias", "runtime.growsliceBuf"]);
}

/// Before Go 1.26 every line calls growslice, the plan says the variants
/// are not in this Go (no warning), and the counts hold as well.
#[test]
fn older_go_grows_through_growslice_alone() {
    for go in [pins::GO_DEBIAN, "1.21.13", "1.24.11"] {
        let exe = fixtures::build(FIXTURE, go, Flavor::Default).unwrap();
        let out = gcprobe(&["plan", "--exe", exe.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "Go {go}: {}", stderr_text(&out));
        for v in ["runtime.growsliceNoAlias", "runtime.growsliceBuf", "runtime.growsliceBufNoAlias"] {
            assert!(text.lines().any(|l| l.trim_start().starts_with("skip") && l.contains(&format!("{v} ")) && l.ends_with("not in this Go (Go 1.26+)")), "Go {go}: {text}");
        }
        assert!(!text.contains("warning: runtime.growslice"), "Go {go}: {text}");
        if privileged("older_go_grows_through_growslice_alone") {
            assert_counted(go, Flavor::Default, ["runtime.growslice"; 4]);
        }
    }
}
