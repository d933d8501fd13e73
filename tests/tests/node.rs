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
    // The last two seconds only: the same culprit, fewer pauses and cycles
    // than since the start, and the window it says it covers (sampled
    // mode reaches back to the start of the last whole burst).
    // Long enough that the whole is well past a 2 s window, even one that
    // reaches back to its last burst.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let whole: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    let last: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json&window=2s"))).unwrap();
    assert_appendloop_culprit(&last);
    assert_totals_agree(&last);
    let (w, all) = (last["window"]["duration_s"].as_f64().unwrap(), whole["window"]["duration_s"].as_f64().unwrap());
    assert!(w >= 2.0 && w < all - 1.0, "window {w} s of {all} s");
    assert!(last["sampling"]["bursts"].as_u64().unwrap() >= 1);
    for k in ["cycles"] {
        assert!(last["gc"][k].as_u64().unwrap() < whole["gc"][k].as_u64().unwrap(), "{k}: {} of {}", last["gc"][k], whole["gc"][k]);
    }
    assert!(last["gc"]["stw"]["count"].as_u64().unwrap() < whole["gc"]["stw"]["count"].as_u64().unwrap());
    let far: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json&window=1h"))).unwrap();
    assert!(far["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("as far back as gcprobe keeps")), "{}", far["warnings"]);
    for (path, status) in [(format!("/report?pid={}", std::process::id()), 404), (format!("/report?pid={pid}&format=xml"), 400), (format!("/report?pid={pid}&window=soon"), 400), (format!("/report?pid={pid}&since=1"), 400), ("/report".to_owned(), 400), ("/nothing".to_owned(), 404)] {
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

/// The capabilities the DaemonSet adds (deploy/kubernetes/daemonset.yaml's `add:` line).
fn daemonset_capabilities() -> Vec<String> {
    let ds = std::fs::read_to_string(xtask::workspace_root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let line = ds.lines().map(str::trim).find_map(|l| l.strip_prefix("add: [")).expect("an add: line");
    line.trim_end_matches(']').split(',').map(|c| c.trim().trim_matches('"').to_ascii_lowercase()).collect()
}

#[test]
fn node_runs_with_exactly_the_daemonsets_capabilities_and_each_is_needed() {
    if !privileged("node_runs_with_exactly_the_daemonsets_capabilities_and_each_is_needed") {
        return;
    }
    let caps = daemonset_capabilities();
    assert_eq!(caps, ["bpf", "perfmon", "sys_ptrace", "dac_read_search"]);
    let bin = gcprobe_for_nobody();
    // A root target: the agent, as nobody, sees it only through its capabilities.
    let t = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let pid = t.pid();
    let run = |caps: &[String]| {
        let prefix = as_nobody_with(caps);
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        Node::start_under(&prefix, &bin, &["-q", "--include", &fixtures_only()])
    };

    let node = run(&caps);
    assert!(node.wait_for(pid, std::time::Duration::from_secs(5)), "not watched with the DaemonSet's capabilities");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    assert_appendloop_culprit(&r);
    assert!(r["gc"]["heap_unavailable"].is_null(), "{}", r["gc"]["heap_unavailable"]);
    assert!(node.stop().success());

    // Without SYS_PTRACE another user's process cannot be looked at, and it says so.
    let node = run(&caps.iter().filter(|c| *c != "sys_ptrace").cloned().collect::<Vec<_>>());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!node.target_pids().contains(&pid));
    assert!(metric(&node.get("/metrics"), "gcprobe_processes_denied ", &[]).is_some_and(|n| n >= 1.0));
    drop(node);

    // Without DAC_READ_SEARCH its memory is unreadable: no heap figures, and the report says why.
    let node = run(&caps.iter().filter(|c| *c != "dac_read_search").cloned().collect::<Vec<_>>());
    assert!(node.wait_for(pid, std::time::Duration::from_secs(5)));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    assert!(r["gc"]["heap_unavailable"].as_str().is_some_and(|s| !s.is_empty()), "{:#}", r["gc"]);
    drop(node);

    // Without BPF or PERFMON nothing loads: a clear error and exit status 3.
    for missing in ["bpf", "perfmon"] {
        let prefix = as_nobody_with(&caps.iter().filter(|c| *c != missing).cloned().collect::<Vec<_>>());
        let out = Command::new(&prefix[0]).args(&prefix[1..]).arg(&bin).args(["node", "--listen", "127.0.0.1:0"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "without {missing}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// The churn's five binaries: appendloop built five ways.
fn churn_binaries() -> Vec<PathBuf> {
    let go = pins::GO_DEFAULT;
    [(go, Flavor::Default), (go, Flavor::Stripped), (go, Flavor::Pie), (go, Flavor::Cgo), ("1.27.3", Flavor::Default)]
        .iter()
        .map(|&(v, f)| fixtures::build("appendloop", v, f).unwrap_or_else(|e| panic!("building appendloop {v} {}: {e:#}", f.name())))
        .collect()
}

/// One process of the churn: when it started, when gcprobe listed it, when it was stopped.
struct Churned {
    t: Target,
    started: std::time::Instant,
    seen_after: Option<std::time::Duration>,
    in_metrics: bool,
    stop_at: std::time::Instant,
}

/// 50 Go processes of 5 binaries (appendloop built five ways) started and
/// stopped over a minute under one agent: each is watched within 1 s of its
/// start, is in /metrics while it lives and leaves both when it exits;
/// afterwards nothing is left, in the agent or in the kernel. The agent's
/// CPU and memory over the minute go to $GCPROBE_CHURN_OUT when set
/// (`cargo xtask bench --only churn`).
#[test]
fn churn_of_fifty_processes_is_followed_and_leaves_nothing_behind() {
    use std::time::{Duration, Instant};
    if !privileged("churn_of_fifty_processes_is_followed_and_leaves_nothing_behind") {
        return;
    }
    let binaries = churn_binaries();
    let before = BpfObjects::now();
    let node = Node::start(&["-q", "--include", &fixtures_only(), "--grace", "2s", "--sweep", "1s"]);
    let t0 = Instant::now();
    let mut live: Vec<Churned> = Vec::new();
    let mut done: Vec<(u32, Duration, bool)> = Vec::new();
    let mut samples: Vec<(f64, f64, f64, usize)> = Vec::new();
    let mut next_scrape = t0;
    let mut started = 0;
    while started < 50 || !live.is_empty() {
        let now = Instant::now();
        // One every 1.1 s, living 3 to 5 s: about four at a time.
        if started < 50 && now >= t0 + Duration::from_millis(1100) * started {
            let exe = &binaries[started as usize % binaries.len()];
            let t = Target::spawn(exe, &["-mode=grow"]);
            live.push(Churned { t, started: Instant::now(), seen_after: None, in_metrics: false, stop_at: now + Duration::from_millis(3000 + 1000 * u64::from(started % 3)) });
            started += 1;
        }
        let listed = node.target_pids();
        for c in live.iter_mut().filter(|c| c.seen_after.is_none() && listed.contains(&c.t.pid())) {
            c.seen_after = Some(c.started.elapsed());
        }
        if now >= next_scrape {
            next_scrape = now + Duration::from_secs(1);
            let text = node.get("/metrics");
            for c in live.iter_mut() {
                c.in_metrics |= text.lines().any(|l| l.starts_with("gcprobe_target_info{") && l.contains(&format!("pid=\"{}\"", c.t.pid())));
            }
            let cpu = metric(&text, "gcprobe_agent_cpu_seconds_total ", &[]).unwrap();
            let rss = metric(&text, "gcprobe_agent_resident_bytes ", &[]).unwrap();
            samples.push((t0.elapsed().as_secs_f64(), cpu, rss, live.len()));
        }
        let (ending, staying): (Vec<Churned>, Vec<Churned>) = live.into_iter().partition(|c| Instant::now() >= c.stop_at);
        live = staying;
        for c in ending {
            let pid = c.t.pid();
            drop(c.t);
            let gone = Instant::now();
            while node.target_pids().contains(&pid) {
                assert!(gone.elapsed() < Duration::from_secs(1), "pid {pid} still listed 1 s after it exited");
                std::thread::sleep(Duration::from_millis(10));
            }
            let text = node.get("/metrics");
            assert!(!text.contains(&format!("pid=\"{pid}\"")), "pid {pid} still in /metrics after it exited");
            done.push((pid, c.seen_after.unwrap_or_else(|| panic!("pid {pid} was never listed")), c.in_metrics));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(done.len(), 50);
    let slowest = done.iter().map(|d| d.1).max().unwrap();
    assert!(slowest <= Duration::from_secs(1), "slowest to be watched: {slowest:?}");
    let missing: Vec<u32> = done.iter().filter(|d| !d.2).map(|d| d.0).collect();
    assert!(missing.is_empty(), "never in /metrics while alive: {missing:?}");
    let text = node.get("/metrics");
    assert_eq!(metric(&text, "gcprobe_targets ", &[]), Some(0.0));
    assert_eq!(metric(&text, "gcprobe_go_processes_started_total ", &[]), Some(50.0));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(metric(&node.get("/metrics"), "gcprobe_binaries ", &[]), Some(0.0), "every binary retired after --grace");
    assert!(node.stop().success());
    assert_eq!(before.settle_to(), before, "BPF objects left behind");
    let first = samples.first().unwrap();
    let last = samples.last().unwrap();
    let peak = samples.iter().map(|s| s.2).fold(0.0, f64::max);
    eprintln!("churn: 50 processes of 5 binaries in {:.1}s; slowest to be watched {:.0} ms; agent CPU {:.2}s ({:.2}% of a core); resident {:.1} MiB first, {:.1} MiB peak, {:.1} MiB last",
        last.0, slowest.as_secs_f64() * 1e3, last.1 - first.1, (last.1 - first.1) / (last.0 - first.0) * 100.0, first.2 / 1048576.0, peak / 1048576.0, last.2 / 1048576.0);
    if let Some(out) = std::env::var_os("GCPROBE_CHURN_OUT") {
        let rows: Vec<serde_json::Value> = samples.iter().map(|s| serde_json::json!({"t_s": s.0, "cpu_s": s.1, "rss_bytes": s.2, "targets": s.3})).collect();
        let seen: Vec<f64> = done.iter().map(|d| d.1.as_secs_f64() * 1e3).collect();
        std::fs::write(out, serde_json::to_string_pretty(&serde_json::json!({"samples": rows, "watched_after_ms": seen})).unwrap()).unwrap();
    }
}

#[test]
fn bursts_wait_while_the_agent_is_over_its_cpu_ceiling() {
    if !privileged("bursts_wait_while_the_agent_is_over_its_cpu_ceiling") {
        return;
    }
    let t = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let only = fixtures_only();
    let deferred = |ceiling: Option<&str>| {
        let mut args = vec!["-q", "--include", &only];
        if let Some(c) = ceiling {
            args.extend(["--agent-cpu", c]);
        }
        let node = Node::start(&args);
        assert!(node.wait_for(t.pid(), std::time::Duration::from_secs(5)));
        std::thread::sleep(std::time::Duration::from_secs(6));
        metric(&node.get("/metrics"), "gcprobe_bursts_deferred_total ", &[]).unwrap()
    };
    // Start-up alone (calibrating, reading the binary) takes the agent far
    // over 0.1% of a core for the five seconds the ceiling looks back: every
    // burst due then waits. No ceiling, or one the agent never reaches, and none does.
    assert_eq!(deferred(None), 0.0);
    assert_eq!(deferred(Some("100%")), 0.0);
    let held = deferred(Some("0.1%"));
    assert!(held >= 2.0, "{held}");
}

#[test]
fn a_program_run_again_and_again_is_attached_once_and_each_run_counted() {
    if !privileged("a_program_run_again_and_again_is_attached_once_and_each_run_counted") {
        return;
    }
    let exe = fixture("appendloop");
    let node = Node::start(&["-q", "--include", &fixtures_only(), "--grace", "30s"]);
    for _ in 0..20 {
        let st = Command::new(&exe).args(["-mode=grow", "-for=400ms"]).stdout(std::process::Stdio::null()).status().unwrap();
        assert!(st.success());
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = node.get("/metrics");
    assert_eq!(metric(&text, "gcprobe_go_processes_started_total ", &[]), Some(20.0), "{text}");
    assert_eq!(metric(&text, "gcprobe_binary_attaches_total ", &[]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "gcprobe_targets ", &[]), Some(0.0));
    assert_eq!(metric(&text, "gcprobe_binaries ", &[]), Some(1.0), "lingering for --grace");
}

/// Two containers of one image: one lower directory under two overlay
/// mounts. The kernel maps the one real file in both, and that is the key
/// (stat() through each mount gives each its own device).
#[test]
fn two_overlay_mounts_of_one_image_share_one_binary() {
    if !privileged("two_overlay_mounts_of_one_image_share_one_binary") {
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    let root = std::env::temp_dir().join(format!("gcprobe-overlay-{}", std::process::id()));
    let lower = root.join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::copy(fixture("appendloop"), lower.join("app")).unwrap();
    let mut merged = Vec::new();
    for i in 0..2 {
        let (upper, work, m) = (root.join(format!("upper{i}")), root.join(format!("work{i}")), root.join(format!("merged{i}")));
        for d in [&upper, &work, &m] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        let st = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&m).status().unwrap();
        assert!(st.success(), "mounting an overlay");
        merged.push(m);
    }
    struct Unmount(Vec<PathBuf>, PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for m in &self.0 {
                let _ = Command::new("umount").arg(m).status();
            }
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Unmount(merged.clone(), root.clone());
    let (a, b) = (merged[0].join("app"), merged[1].join("app"));
    assert_ne!(std::fs::metadata(&a).unwrap().dev(), std::fs::metadata(&b).unwrap().dev(), "each overlay has its own device");
    let node = Node::start(&["-q", "--include", &format!("{}/**", root.display())]);
    let (ta, tb) = (Target::start(&a, &["-mode=grow"], &[]), Target::start(&b, &["-mode=grow"], &[]));
    assert!(node.wait_for(ta.pid(), std::time::Duration::from_secs(2)) && node.wait_for(tb.pid(), std::time::Duration::from_secs(2)));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let text = node.get("/metrics");
    assert_eq!(metric(&text, "gcprobe_binaries ", &[]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "gcprobe_binary_attaches_total ", &[]), Some(1.0), "{text}");
    for t in [&ta, &tb] {
        let r: serde_json::Value = serde_json::from_str(&node.get(&format!("/report?pid={}&format=json", t.pid()))).unwrap();
        assert_appendloop_culprit(&r);
    }
    drop((ta, tb, node));
}

/// `--record-dir`: a file per process, begun anew past --record-file-mib,
/// each standing alone for `gcprobe report`, the oldest removed past
/// --record-dir-mib.
#[test]
fn node_records_each_process_in_files_that_each_report_on_their_own() {
    if !privileged("node_records_each_process_in_files_that_each_report_on_their_own") {
        return;
    }
    // A directory that cannot be written: one line, at start.
    let bad = Command::new(gcprobe_bin()).args(["node", "--listen", "127.0.0.1:0", "--record-dir", "/proc/self/no-such-dir"]).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!((bad.status.code(), err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.starts_with("gcprobe: error: --record-dir /proc/self/no-such-dir: cannot write there"), "{err}");
    let dir = std::env::temp_dir().join(format!("gcprobe-recdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let node = Node::start(&["-q", "--mode", "exact", "--include", &fixtures_only(), "--record-dir", dir.to_str().unwrap(), "--record-file-mib", "1", "--record-dir-mib", "4"]);
    let t = Target::start(&fixture("appendloop"), &["-mode=grow"], &[]);
    let pid = t.pid();
    assert!(node.wait_for(pid, std::time::Duration::from_secs(2)));
    // Wait for the sixth file rather than a fixed time: a debug build on a busy machine
    // writes half as fast. Six files of 1 MiB under a 4 MiB cap must have cost the oldest.
    let parts = |dir: &std::path::Path| -> Vec<(u32, PathBuf)> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<PathBuf>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.file_stem()?.to_str()?.rsplit('-').next()?.parse().ok()?, p)))
            .collect();
        files.sort();
        files
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while parts(&dir).last().map_or(true, |(part, _)| *part < 5) {
        assert!(std::time::Instant::now() < deadline, "no sixth file in 120 s: {:?}", parts(&dir));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(t);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(node.stop().success());
    let files = parts(&dir);
    let total: u64 = files.iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
    assert!(files.len() >= 3 && files[0].0 > 0, "{files:?}");
    assert!(total <= 4 << 20, "{total} bytes kept");
    let mut prev_end: Option<f64> = None;
    for (i, (part, path)) in files.iter().enumerate() {
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with(&format!("appendloop-default-{pid}-")), "{path:?}");
        // Private to the agent's user: a recording holds the process's code paths and heap figures.
        assert_eq!(std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(path).unwrap()) & 0o777, 0o600, "{path:?}");
        let out = gcprobe(&["report", path.to_str().unwrap(), "--format", "json"]);
        assert!(out.status.success(), "{path:?}: {}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let last = i + 1 == files.len();
        assert_eq!(r["window"]["ended_by"], if last { "target-exited" } else { "rotated" }, "part {part}");
        assert_eq!(r["target"]["pid"], pid);
        assert_totals_agree(&r);
        // Each file's window is its own, not the session's so far: it begins where the
        // previous file's ended.
        let (start, d) = (r["window"]["start_unix_ns"].as_u64().unwrap() as f64 / 1e9, r["window"]["duration_s"].as_f64().unwrap());
        if let Some(prev_end) = prev_end {
            assert!((start - prev_end).abs() < 0.1, "part {part} starts {:.3} s from the previous end", start - prev_end);
        }
        prev_end = Some(start + d);
        if !last {
            assert!(d > 0.2, "part {part}: {d} s");
            assert_appendloop_culprit(&r);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One reading of the agent during the soak.
#[derive(Clone, Copy)]
struct SoakSample {
    t_s: f64,
    cpu_s: f64,
    rss: f64,
    fds: usize,
    targets: usize,
}

/// The soak: node mode for $GCPROBE_SOAK_SECS (240 s by default; `cargo xtask bench --only
/// soak` runs 30 minutes) under churn, a process of the churn's five binaries started every
/// 1.1 s and living 3 to 5 s, beside the workload fixture, which allocates slices and maps
/// all along. The agent's resident memory, CPU and descriptors must stay flat: the last fifth
/// of the run against the third. The first two are warm-up: binaries are read, and the
/// workload's bounded books fill (its last 65,536 pauses take ~90 s at ~760 a second).
/// Samples go to $GCPROBE_SOAK_OUT when set.
#[test]
fn a_soak_under_churn_keeps_the_agents_memory_cpu_and_descriptors_flat() {
    use std::time::{Duration, Instant};
    if !privileged("a_soak_under_churn_keeps_the_agents_memory_cpu_and_descriptors_flat") {
        return;
    }
    let secs: u64 = std::env::var("GCPROBE_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(240);
    let binaries = churn_binaries();
    let before = BpfObjects::now();
    let _steady = Target::start(&fixture("workload"), &["-every", "1h"], &[]);
    let node = Node::start(&["-q", "--include", &fixtures_only(), "--grace", "5s", "--sweep", "2s"]);
    let t0 = Instant::now();
    let mut live: Vec<(Target, Instant)> = Vec::new();
    let mut samples: Vec<SoakSample> = Vec::new();
    let (mut started, mut next_sample) = (0u32, t0);
    while t0.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now >= t0 + Duration::from_millis(1100) * started {
            let exe = &binaries[started as usize % binaries.len()];
            live.push((Target::spawn(exe, &["-mode=grow"]), now + Duration::from_millis(3000 + 1000 * u64::from(started % 3))));
            started += 1;
        }
        live.retain(|(_, stop_at)| now < *stop_at);
        if now >= next_sample {
            next_sample = now + Duration::from_secs(5);
            let text = node.get("/metrics");
            let m = |name: &str| metric(&text, name, &[]).unwrap_or_else(|| panic!("{name} in /metrics"));
            samples.push(SoakSample { t_s: t0.elapsed().as_secs_f64(), cpu_s: m("gcprobe_agent_cpu_seconds_total "), rss: m("gcprobe_agent_resident_bytes "), fds: open_fds(node.child.id()), targets: m("gcprobe_targets ") as usize });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(live);
    assert!(node.stop().success());
    assert_eq!(before.settle_to(), before, "BPF objects left behind");
    let fifth = |k: usize| {
        let (from, to) = (secs as f64 * k as f64 / 5.0, secs as f64 * (k + 1) as f64 / 5.0);
        samples.iter().filter(|s| s.t_s >= from && s.t_s <= to + 0.5).copied().collect::<Vec<_>>()
    };
    let (early, late) = (fifth(2), fifth(4));
    let cpu_pct = |w: &[SoakSample]| (w.last().unwrap().cpu_s - w[0].cpu_s) / (w.last().unwrap().t_s - w[0].t_s) * 100.0;
    let max_rss = |w: &[SoakSample]| w.iter().map(|s| s.rss).fold(0.0, f64::max);
    let max_fds = |w: &[SoakSample]| w.iter().map(|s| s.fds).max().unwrap();
    eprintln!(
        "soak: {started} processes in {secs} s; agent CPU {:.2}% then {:.2}% of a core; resident {:.1} then {:.1} MiB (peak); descriptors {} then {}",
        cpu_pct(&early), cpu_pct(&late), max_rss(&early) / 1048576.0, max_rss(&late) / 1048576.0, max_fds(&early), max_fds(&late)
    );
    if let Some(out) = std::env::var_os("GCPROBE_SOAK_OUT") {
        let rows: Vec<serde_json::Value> = samples.iter().map(|s| serde_json::json!({"t_s": s.t_s, "cpu_s": s.cpu_s, "rss_bytes": s.rss, "fds": s.fds, "targets": s.targets})).collect();
        std::fs::write(out, serde_json::to_string_pretty(&serde_json::json!({"processes": started, "samples": rows})).unwrap()).unwrap();
    }
    assert!(max_rss(&late) <= max_rss(&early) * 1.10 + 4.0 * 1048576.0, "resident memory grew: {:.1} -> {:.1} MiB", max_rss(&early) / 1048576.0, max_rss(&late) / 1048576.0);
    assert!(max_fds(&late) <= max_fds(&early) + 8, "descriptors grew: {} -> {}", max_fds(&early), max_fds(&late));
    assert!(cpu_pct(&late) <= cpu_pct(&early) * 1.5 + 1.0, "CPU grew: {:.2}% -> {:.2}% of a core", cpu_pct(&early), cpu_pct(&late));
}
