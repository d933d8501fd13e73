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

/// A glob that admits the test fixtures only: node mode must not attach to
/// whatever else runs Go on the machine (a `go build` of another test).
fn fixtures_only() -> String {
    format!("{}/**", xtask::workspace_root().join("target/fixtures").display())
}

#[test]
fn node_watches_a_program_started_after_it_and_serves_its_culprit() {
    if !privileged("node_watches_a_program_started_after_it_and_serves_its_culprit") {
        return;
    }
    let exe = fixture("appendloop");
    let node = Node::start(&["-q", "--include", &fixtures_only(), "--grace", "2s", "--sweep", "1s"]);
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    let started = std::time::Instant::now();
    let pid = t.pid();
    assert!(node.wait_for(pid, std::time::Duration::from_secs(1)), "not watched within 1 s of its start");
    let at = format!("pid=\"{pid}\"");
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let site = format!("main.go:{line}\"");
    // Within 2 s of its start: its culprit and its pauses.
    let text = loop {
        let text = node.get("/metrics");
        let culprit = metric(&text, "gcprobe_culprit_share{", &[&at, &site, "callsite=\"main.(*Index).Names "]);
        let pauses = metric(&text, "gcprobe_gc_stw_seconds_count{", &[&at, "reason=\"GC sweep termination\""]);
        if culprit.is_some() && pauses.is_some_and(|n| n > 0.0) {
            break text;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "no culprit and pauses in /metrics 2 s after the start:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    promtool_check(&text);
    let share = metric(&text, "gcprobe_culprit_share{", &[&at, &site]).unwrap();
    assert!(share > 0.5 && share <= 1.0, "{share}");
    assert_eq!(metric(&text, "gcprobe_targets ", &[]), Some(1.0), "{text}");
    assert!(text.lines().any(|l| l.starts_with("gcprobe_target_info{") && l.contains(&at) && l.contains(&format!("exe=\"{}\"", exe.display()))), "{text}");
    // OpenMetrics to a scraper that asks for it.
    let (status, ctype, body) = node.try_get("/metrics", Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")).unwrap();
    assert_eq!((status, ctype.starts_with("application/openmetrics-text")), (200, true), "{ctype}");
    assert!(String::from_utf8(body).unwrap().ends_with("# EOF\n"));

    // The report attach would give, on demand.
    let r: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    assert_eq!((r["target"]["pid"].as_u64(), r["window"]["ended_by"].as_str()), (Some(pid.into()), Some("still-running")));
    assert_appendloop_culprit(&r);
    assert_totals_agree(&r);
    assert!(node.get(&format!("/report?pid={pid}&format=text")).contains("CULPRITS"));
    for (path, status) in [(format!("/report?pid={}", std::process::id()), 404), (format!("/report?pid={pid}&format=xml"), 400), ("/report".to_owned(), 400), ("/nothing".to_owned(), 404)] {
        let (got, _, body) = node.try_get(&path, None).unwrap();
        let body = String::from_utf8(body).unwrap();
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.starts_with("gcprobe: ") && body.lines().count() == 1, "{path}: {body}");
    }

    // Gone: from the targets at once, from the metrics, then its binary's probes.
    drop(t);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!node.target_pids().contains(&pid));
    let text = node.get("/metrics");
    assert!(!text.contains(&at), "{text}");
    assert_eq!(metric(&text, "gcprobe_targets ", &[]), Some(0.0));
    assert_eq!(metric(&text, "gcprobe_binaries ", &[]), Some(1.0), "its probes linger for --grace");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(metric(&node.get("/metrics"), "gcprobe_binaries ", &[]), Some(0.0), "retired after --grace");
    assert!(node.stop().success());
}

#[test]
fn node_labels_a_process_in_a_kubelet_cgroup_and_filters_on_its_namespace() {
    if !privileged("node_labels_a_process_in_a_kubelet_cgroup_and_filters_on_its_namespace") {
        return;
    }
    let n = std::process::id();
    let uid = format!("{n:08x}-0000-4000-8000-00000000abcd");
    let id = format!("{:064x}", u128::from(n) << 64 | 0xbeef);
    let (ns, pod, container) = ("shop", format!("cart-{n}"), "cart");
    let t = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let mut layout = KubeletLayout { cgroups: Vec::new(), files: Vec::new(), dirs: Vec::new(), root: cgroup2_mount(), pid: t.pid() };
    layout.enter(&format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope", uid.replace('-', "_")));
    layout.pod_logs(ns, &pod, &uid, container);

    let node = Node::start(&["-q", "--include", &fixtures_only()]);
    assert!(node.wait_for(t.pid(), std::time::Duration::from_secs(5)));
    let text = node.get("/metrics");
    let info = text.lines().find(|l| l.starts_with("gcprobe_target_info{") && l.contains(&format!("pid=\"{}\"", t.pid()))).unwrap_or_else(|| panic!("{text}"));
    for want in [format!("namespace=\"{ns}\""), format!("pod=\"{pod}\""), format!("container=\"{container}\""), format!("container_id=\"{id}\""), format!("pod_uid=\"{uid}\"")] {
        assert!(info.contains(&want), "{want} in {info}");
    }
    let targets: serde_json::Value = serde_json::from_str(&node.get("/targets")).unwrap();
    assert_eq!(targets["targets"][0]["labels"]["pod"], pod.as_str(), "{targets:#}");
    drop(node);

    // The same process, excluded by its namespace, and included by its pod.
    let node = Node::start(&["-q", "--include", &fixtures_only(), "--exclude", "namespace=sh*"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!node.target_pids().contains(&t.pid()));
    drop(node);
    let node = Node::start(&["-q", "--include", &format!("pod={pod}")]);
    assert!(node.wait_for(t.pid(), std::time::Duration::from_secs(5)));
    assert_eq!(node.target_pids(), [t.pid()]);
    drop(node);
    drop(layout);
}
