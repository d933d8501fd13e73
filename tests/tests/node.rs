//! Node mode: every Go process on the host (root).
use std::{path::PathBuf, process::Command};

use gcprobe_tests::*;


/// `gcprobe ps --json`'s processes, by PID.
fn ps() -> Vec<serde_json::Value> {
    let out = gcprobe(&["ps", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "gcprobe.processes/v1");
    v["processes"].as_array().unwrap().clone()
}

#[test]
fn ps_lists_go_processes_once_per_binary_and_no_others() {
    if !privileged("ps_lists_go_processes_once_per_binary_and_no_others") {
        return;
    }
    let append = fixture("appendloop");
    let (a, b) = (Target::start(&append, &["-mode=grow"], &[]), Target::start(&append, &["-mode=grow"], &[]));
    let c = Target::start(&fixture("mapleak"), &[], &[]);
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let listed = ps();
    let find = |pid: u32| listed.iter().find(|p| p["pid"] == pid).cloned();
    let (pa, pb, pc) = (find(a.pid()).expect("a listed"), find(b.pid()).expect("b listed"), find(c.pid()).expect("c listed"));
    assert!(find(sleeper.id()).is_none(), "sleep is not a Go program");
    let go = format!("go{}", pins::GO_DEFAULT);
    assert_eq!([&pa["go_version"], &pb["go_version"], &pc["go_version"]], [go.as_str(); 3]);
    // One binary, one file; another binary, another.
    assert_eq!(pa["file"], pb["file"]);
    assert_ne!(pa["file"], pc["file"]);
    assert_eq!(PathBuf::from(str_of(&pa, "exe")), append);
    // Not in a container: its labels say so with nulls, not guesses.
    assert_eq!(pa["labels"]["pod"], serde_json::Value::Null);
    assert_eq!(pa["labels"]["error"], serde_json::Value::Null);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn ps_finds_stripped_pie_and_cgo_builds() {
    if !privileged("ps_finds_stripped_pie_and_cgo_builds") {
        return;
    }
    let go = format!("go{}", pins::GO_DEFAULT);
    for flavor in [Flavor::Stripped, Flavor::Pie, Flavor::Cgo] {
        let exe = fixtures::build("appendloop", pins::GO_DEFAULT, flavor).unwrap();
        let t = Target::start(&exe, &["-mode=grow"], &[]);
        let listed = ps();
        let p = listed.iter().find(|p| p["pid"] == t.pid()).unwrap_or_else(|| panic!("{} build not listed: {listed:?}", flavor.name()));
        assert_eq!(p["go_version"], go.as_str(), "{}", flavor.name());
    }
}
