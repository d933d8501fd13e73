//! Targets as containers present them: another PID namespace, a binary only
//! visible in another mount namespace, a binary deleted since it started (root).
use std::path::PathBuf;

use gcprobe_tests::*;

/// The single child of `pid` (unshare --fork's child, which execs the fixture;
/// --kill-child takes it down with unshare, so no test leaves it running).
fn only_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kids: Vec<u32> = children.split_whitespace().map(|c| c.parse().unwrap()).collect();
    assert_eq!(kids.len(), 1, "children of {pid}: {kids:?}");
    kids[0]
}

#[test]
fn target_in_its_own_pid_namespace() {
    if !privileged("target_in_its_own_pid_namespace") {
        return;
    }
    let exe = fixture("appendloop");
    let unshare = Target::start(&PathBuf::from("unshare"), &["--pid", "--fork", "--kill-child", "--mount-proc", exe.to_str().unwrap(), "-mode=grow"], &[]);
    let host_pid = only_child(unshare.pid());
    // Inside its namespace the fixture is PID 1; the host sees another number.
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "{nspid}");
    let r = attach_json(host_pid, "3s");
    assert_eq!(r["target"]["pid"], host_pid);
    assert_appendloop_culprit(&r);
    assert_eq!(r["events"]["lost"], 0);
}

#[test]
fn binary_only_visible_in_another_mount_namespace() {
    if !privileged("binary_only_visible_in_another_mount_namespace") {
        return;
    }
    let exe = fixture("appendloop");
    let dir = std::env::temp_dir().join(format!("gcprobe-mntns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A private tmpfs over `dir`, seen only inside the new mount namespace.
    let script = format!("mount -t tmpfs tmpfs {d} && cp {e} {d}/app && exec {d}/app -mode=grow", d = dir.display(), e = exe.display());
    let t = Target::start(&PathBuf::from("unshare"), &["--mount", "--propagation", "private", "sh", "-c", &script], &[]);
    assert!(!dir.join("app").exists(), "the host must not see the binary");
    let r = attach_json(t.pid(), "3s");
    drop(t);
    let _ = std::fs::remove_dir(&dir);
    assert!(str_of(&r["target"], "exe").ends_with("/app"), "{}", r["target"]);
    assert_appendloop_culprit(&r);
}

#[test]
fn binary_deleted_after_start() {
    if !privileged("binary_deleted_after_start") {
        return;
    }
    let exe = fixture("appendloop");
    let copy = std::env::temp_dir().join(format!("gcprobe-deleted-{}", std::process::id()));
    std::fs::copy(&exe, &copy).unwrap();
    let t = Target::start(&copy, &["-mode=grow"], &[]);
    std::fs::remove_file(&copy).unwrap();
    let r = attach_json(t.pid(), "3s");
    assert!(str_of(&r["target"], "exe").ends_with("(deleted)"), "{}", r["target"]);
    assert_appendloop_culprit(&r);
}

#[test]
fn a_process_in_a_kubelet_cgroup_is_labelled_with_its_pod() {
    if !privileged("a_process_in_a_kubelet_cgroup_is_labelled_with_its_pod") {
        return;
    }
    // Names unique to this run, in the shapes the kubelet and containerd use.
    let n = std::process::id();
    let uid = format!("{n:08x}-0000-4000-8000-{:012x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() & 0xffff_ffff_ffff);
    let id = format!("{:064x}", u128::from(n) << 64 | 0xc0ffee);
    let (ns, pod, container) = ("shop", format!("web-{n}"), "api-server");
    let exe = fixture("appendloop");
    let t = Target::start(&exe, &["-mode=grow"], &[]);
    let mut layout = KubeletLayout { cgroups: Vec::new(), files: Vec::new(), dirs: Vec::new(), root: cgroup2_mount(), pid: t.pid() };
    let pid = t.pid().to_string();
    let labels = || {
        let out = gcprobe(&["plan", "--pid", &pid]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().find_map(|l| l.strip_prefix("labels: ").map(str::to_owned)).expect("a labels line")
    };

    // systemd driver, containerd, before the kubelet's log entries exist.
    let uid_ = uid.replace('-', "_");
    layout.enter(&format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"));
    assert_eq!(labels(), format!("container id {id}, pod uid {uid}, containerd"));

    // The pod's log directory names the pod, and its one container.
    let pod_dir = layout.pod_logs(ns, &pod, &uid, container);
    assert_eq!(labels(), format!("namespace {ns}, pod {pod}, container {container}; container id {id}, pod uid {uid}, containerd"));

    // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>; the container's log
    // link names it even beside a second container.
    std::fs::create_dir_all(pod_dir.join("sidecar")).unwrap();
    layout.dirs.push(pod_dir.join("sidecar"));
    let containers = PathBuf::from("/var/log/containers");
    if !containers.exists() {
        std::fs::create_dir_all(&containers).unwrap();
        layout.dirs.insert(0, containers);
    }
    let link = PathBuf::from(format!("/var/log/containers/{pod}_{ns}_{container}-{id}.log"));
    std::fs::write(&link, "").unwrap();
    layout.files.push(link);
    layout.enter(&format!("kubepods/burstable/pod{uid}/{id}"));
    assert_eq!(labels(), format!("namespace {ns}, pod {pod}, container {container}; container id {id}, pod uid {uid}"));
    drop(layout);
    drop(t);
}
