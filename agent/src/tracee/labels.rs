//! Who a process is, without Kubernetes API credentials: its container,
//! pod and systemd unit, from `/proc/PID/cgroup` and, when the node's log
//! directories are mounted, the kubelet's log layout.
//!
//! The kubelet names a container's cgroup after its pod and the runtime
//! after the container (systemd driver:
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`,
//! the pod uid's dashes written as underscores; cgroupfs driver:
//! `/kubepods/burstable/pod<uid>/<id>`). The names come from
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`, which the
//! kubelet links for every container, or else from the pod's directory
//! `/var/log/pods/<namespace>_<pod>_<uid>/`. Kubernetes names (DNS-1123)
//! never hold `_`, so both split without ambiguity.
use std::path::{Path, PathBuf};

/// Where a process's labels are read from: the host's /proc and /var/log,
/// as the agent sees them (a DaemonSet mounts the host's under its own).
#[derive(Debug, Clone)]
pub struct LabelRoots {
    proc: PathBuf,
    var_log: PathBuf,
}

impl Default for LabelRoots {
    fn default() -> Self {
        Self { proc: "/proc".into(), var_log: "/var/log".into() }
    }
}

impl LabelRoots {
    pub fn new(proc: impl Into<PathBuf>, var_log: impl Into<PathBuf>) -> Self {
        Self { proc: proc.into(), var_log: var_log.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The container runtime that named a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

impl Runtime {
    /// As the JSON names it.
    pub const fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        }
    }
}

/// What a cgroup path says about its process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFacts {
    pod_uid: Option<String>,
    container_id: Option<String>,
    runtime: Option<Runtime>,
    unit: Option<String>,
}

impl CgroupFacts {
    /// Reads the path's segments, innermost last. Only names the kubelet,
    /// a runtime or systemd write count: anything else is left unknown.
    pub fn of_path(path: &str) -> Self {
        let mut f = CgroupFacts::default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for (i, seg) in segments.iter().enumerate() {
            if let Some(uid) = pod_uid_of(seg) {
                f.pod_uid = Some(uid);
                // cgroupfs driver: the container's directory is the pod's child, its bare id.
                if let Some(next) = segments.get(i + 1).filter(|n| is_container_id(n)) {
                    f.container_id = Some((*next).to_owned());
                }
            }
            if let Some((runtime, id)) = runtime_scope(seg) {
                f.runtime = Some(runtime);
                f.container_id = Some(id.to_owned());
            }
            if seg.ends_with(".service") {
                f.unit = Some((*seg).to_owned());
            }
        }
        // Docker outside Kubernetes, cgroupfs driver: /docker/<id>.
        if f.container_id.is_none() {
            if let [.., "docker", id] = segments.as_slice() {
                if is_container_id(id) {
                    f.runtime = Some(Runtime::Docker);
                    f.container_id = Some((*id).to_owned());
                }
            }
        }
        f
    }

    /// The process's cgroup from `/proc/PID/cgroup`: the unified (v2)
    /// hierarchy's line when it names anything, else the first v1 line
    /// that does. On a hybrid host the unified line may be a bare `/`
    /// while the v1 controllers hold the container's path.
    pub fn of_proc_cgroup(text: &str) -> Self {
        let mut unified = None;
        let mut v1 = None;
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) = (it.next(), it.next(), it.next()) else { continue };
            let f = Self::of_path(path);
            if f == CgroupFacts::default() {
                continue;
            }
            if controllers.is_empty() {
                unified.get_or_insert(f);
            } else {
                v1.get_or_insert(f);
            }
        }
        unified.or(v1).unwrap_or_default()
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.pod_uid.as_deref()
    }

    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    pub fn runtime(&self) -> Option<Runtime> {
        self.runtime
    }

    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
}

/// `kubepods-burstable-pod<uid>.slice` (systemd driver, the uid's dashes as
/// underscores), `kubepods-pod<uid>.slice` (guaranteed QoS) or `pod<uid>`
/// (cgroupfs driver): the pod's uid, with dashes.
fn pod_uid_of(seg: &str) -> Option<String> {
    let raw = match seg.strip_suffix(".slice") {
        Some(s) => s.rsplit_once("-pod")?.1,
        None => seg.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope`.
/// CRI-O's `crio-conmon-<id>.scope` holds its monitor, not the container.
fn runtime_scope(seg: &str) -> Option<(Runtime, &str)> {
    let s = seg.strip_suffix(".scope")?;
    let (runtime, id) = if let Some(id) = s.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = s.strip_prefix("crio-") {
        (Runtime::CriO, id)
    } else if let Some(id) = s.strip_prefix("docker-") {
        (Runtime::Docker, id)
    } else {
        return None;
    };
    is_container_id(id).then_some((runtime, id))
}

/// Runtimes name containers by 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod uid: an RFC 4122 UUID, 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Kubernetes names of a container, from the kubelet's log layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNames {
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
}

impl PodNames {
    /// From `<var_log>/containers/<pod>_<namespace>_<container>-<id>.log`,
    /// else the pod's directory `<var_log>/pods/<namespace>_<pod>_<uid>/`
    /// (the container then stays unknown unless the pod has only one).
    /// Nothing when neither is mounted or lists this container.
    pub fn find(var_log: &Path, pod_uid: Option<&str>, container_id: Option<&str>) -> Result<Option<Self>, LabelError> {
        if let Some(id) = container_id {
            if let Some(n) = Self::from_containers_dir(&var_log.join("containers"), id)? {
                return Ok(Some(n));
            }
        }
        match pod_uid {
            Some(uid) => Self::from_pods_dir(&var_log.join("pods"), uid),
            None => Ok(None),
        }
    }

    fn from_containers_dir(dir: &Path, container_id: &str) -> Result<Option<Self>, LabelError> {
        let suffix = format!("-{container_id}.log");
        for name in dir_names(dir)? {
            let Some(stem) = name.strip_suffix(&suffix) else { continue };
            let mut parts = stem.splitn(3, '_');
            if let (Some(pod), Some(ns), Some(container)) = (parts.next(), parts.next(), parts.next()) {
                return Ok(Some(Self { namespace: Some(ns.into()), pod: Some(pod.into()), container: Some(container.into()) }));
            }
        }
        Ok(None)
    }

    fn from_pods_dir(dir: &Path, pod_uid: &str) -> Result<Option<Self>, LabelError> {
        let suffix = format!("_{pod_uid}");
        for name in dir_names(dir)? {
            let Some((ns, pod)) = name.strip_suffix(&suffix).and_then(|s| s.split_once('_')) else { continue };
            let containers = dir_names(&dir.join(&name))?;
            let container = match containers.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            };
            return Ok(Some(Self { namespace: Some(ns.into()), pod: Some(pod.into()), container }));
        }
        Ok(None)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn pod(&self) -> Option<&str> {
        self.pod.as_deref()
    }

    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }
}

/// The entry names of `dir`, sorted; none when it does not exist (the
/// node's logs are not mounted), an error when it cannot be read.
fn dir_names(dir: &Path) -> Result<Vec<String>, LabelError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LabelError::Read { path: dir.into(), source }),
    };
    let mut names: Vec<String> = rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    Ok(names)
}

/// Everything known about who a process is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    cgroup: CgroupFacts,
    names: PodNames,
}

impl Labels {
    /// Reads the process's cgroup, then the kubelet's log layout for its
    /// names. A process that has exited is an error; missing log
    /// directories only leave the names unknown.
    pub fn of_process(pid: u32, roots: &LabelRoots) -> Result<Self, LabelError> {
        let path = roots.proc.join(pid.to_string()).join("cgroup");
        let text = std::fs::read_to_string(&path).map_err(|source| LabelError::Read { path, source })?;
        let cgroup = CgroupFacts::of_proc_cgroup(&text);
        let names = PodNames::find(&roots.var_log, cgroup.pod_uid(), cgroup.container_id())?.unwrap_or_default();
        Ok(Self { cgroup, names })
    }

    pub fn cgroup(&self) -> &CgroupFacts {
        &self.cgroup
    }

    pub fn names(&self) -> &PodNames {
        &self.names
    }

    /// As metric labels: every name always present, empty when unknown, so
    /// each target's info series has the same label set.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let (c, n) = (&self.cgroup, &self.names);
        let s = |v: Option<&str>| v.unwrap_or_default().to_owned();
        vec![
            ("namespace", s(n.namespace())),
            ("pod", s(n.pod())),
            ("container", s(n.container())),
            ("container_id", s(c.container_id())),
            ("pod_uid", s(c.pod_uid())),
            ("unit", s(c.unit())),
        ]
    }
}

/// One line: the names first, then the ids they rest on, then the unit;
/// only what is known.
impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, n) = (&self.cgroup, &self.names);
        let named: Vec<String> = [("namespace", n.namespace()), ("pod", n.pod()), ("container", n.container())].iter().filter_map(|(k, v)| v.map(|v| format!("{k} {v}"))).collect();
        let ids: Vec<String> = [("container id", c.container_id()), ("pod uid", c.pod_uid())].iter().filter_map(|(k, v)| v.map(|v| format!("{k} {v}"))).collect();
        let mut parts = Vec::new();
        if !named.is_empty() {
            parts.push(named.join(", "));
        }
        if !ids.is_empty() {
            let runtime = c.runtime().map(|r| format!(", {}", r.name())).unwrap_or_default();
            parts.push(format!("{}{runtime}", ids.join(", ")));
        }
        if let Some(u) = c.unit() {
            parts.push(format!("unit {u}"));
        }
        if parts.is_empty() {
            return f.write_str("no container, pod or systemd unit in its cgroup");
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7";
    const UID: &str = "8b1a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn systemd_driver_names_pod_and_container() {
        let uid_ = UID.replace('-', "_");
        for (scope, runtime) in [("cri-containerd", Runtime::Containerd), ("crio", Runtime::CriO), ("docker", Runtime::Docker)] {
            let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/{scope}-{ID}.scope");
            let f = CgroupFacts::of_path(&path);
            assert_eq!((f.pod_uid(), f.container_id(), f.runtime(), f.unit()), (Some(UID), Some(ID), Some(runtime), None), "{path}");
            assert_eq!(serde_json::to_value(runtime).unwrap(), runtime.name());
        }
        // Guaranteed QoS has no class in the slice's name.
        let f = CgroupFacts::of_path(&format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope"));
        assert_eq!(f.pod_uid(), Some(UID));
        // CRI-O's monitor is not the container.
        let f = CgroupFacts::of_path(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{ID}.scope"));
        assert_eq!((f.pod_uid(), f.container_id()), (Some(UID), None));
    }

    #[test]
    fn cgroupfs_driver_names_pod_and_container() {
        let f = CgroupFacts::of_path(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!((f.pod_uid(), f.container_id(), f.runtime()), (Some(UID), Some(ID), None));
        let f = CgroupFacts::of_path(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!((f.pod_uid(), f.container_id()), (Some(UID), Some(ID)));
        let f = CgroupFacts::of_path(&format!("/docker/{ID}"));
        assert_eq!((f.container_id(), f.runtime()), (Some(ID), Some(Runtime::Docker)));
    }

    #[test]
    fn paths_seen_from_inside_a_cgroup_namespace_still_name_the_pod() {
        // The agent's own pod has a cgroup namespace (the default on cgroup
        // v2): another pod's path is relative to it, up then down.
        let f = CgroupFacts::of_proc_cgroup("0::/../../kubepods-besteffort-pod0b6e1c2a_7f55_4b8e_9a56_3c9d2e8f4a11.slice/cri-containerd-4e1f9a7c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7.scope\n");
        assert_eq!(f.pod_uid(), Some("0b6e1c2a-7f55-4b8e-9a56-3c9d2e8f4a11"));
        assert_eq!(f.container_id(), Some("4e1f9a7c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7"));
    }

    #[test]
    fn units_outside_kubernetes() {
        assert_eq!(CgroupFacts::of_path("/system.slice/caddy.service").unit(), Some("caddy.service"));
        let f = CgroupFacts::of_path("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-foo.scope");
        assert_eq!((f.unit(), f.pod_uid(), f.container_id()), (Some("user@1000.service"), None, None));
        assert_eq!(CgroupFacts::of_path("/"), CgroupFacts::default());
        // Look-alikes are not ids: a short hex name, a pod with a bad uid.
        assert_eq!(CgroupFacts::of_path("/docker/abc123"), CgroupFacts::default());
        assert_eq!(CgroupFacts::of_path("/kubepods/podnot-a-uid/x").pod_uid(), None);
    }

    #[test]
    fn proc_cgroup_prefers_the_unified_hierarchy() {
        let v2 = format!("0::/kubepods/burstable/pod{UID}/{ID}\n");
        assert_eq!(CgroupFacts::of_proc_cgroup(&v2).container_id(), Some(ID));
        let v1 = format!("12:pids:/\n11:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n");
        assert_eq!(CgroupFacts::of_proc_cgroup(&v1).pod_uid(), Some(UID));
        // Hybrid: v1 controllers and the unified line; the unified one counts
        // when it names something, else a v1 line that does.
        let hybrid = "4:memory:/system.slice/old.service\n0::/system.slice/caddy.service\n";
        assert_eq!(CgroupFacts::of_proc_cgroup(hybrid).unit(), Some("caddy.service"));
        let root_unified = format!("4:memory:/kubepods/pod{UID}/{ID}\n0::/\n");
        assert_eq!(CgroupFacts::of_proc_cgroup(&root_unified).container_id(), Some(ID));
        assert_eq!(CgroupFacts::of_proc_cgroup("garbage"), CgroupFacts::default());
    }

    #[test]
    fn names_come_from_the_kubelets_log_layout() {
        let root = tempdir();
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(containers.join(format!("web-7d9f-abcde_shop_api-server-{ID}.log")), "").unwrap();
        let n = PodNames::find(&root, Some(UID), Some(ID)).unwrap().unwrap();
        assert_eq!((n.namespace(), n.pod(), n.container()), (Some("shop"), Some("web-7d9f-abcde"), Some("api-server")));

        // No link for this container: the pod's directory names the pod,
        // and its container only when it is the pod's one.
        let other = "0".repeat(64);
        let pod_dir = root.join("pods").join(format!("shop_web-7d9f-abcde_{UID}"));
        std::fs::create_dir_all(pod_dir.join("api-server")).unwrap();
        let n = PodNames::find(&root, Some(UID), Some(&other)).unwrap().unwrap();
        assert_eq!((n.namespace(), n.pod(), n.container()), (Some("shop"), Some("web-7d9f-abcde"), Some("api-server")));
        std::fs::create_dir_all(pod_dir.join("sidecar")).unwrap();
        assert_eq!(PodNames::find(&root, Some(UID), Some(&other)).unwrap().unwrap().container(), None);

        // Nothing mounted: unknown, not an error.
        assert_eq!(PodNames::find(&root.join("absent"), Some(UID), Some(ID)).unwrap(), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_process_is_labelled_from_its_proc_entry() {
        let root = tempdir();
        let proc = root.join("proc");
        std::fs::create_dir_all(proc.join("42")).unwrap();
        std::fs::write(proc.join("42/cgroup"), format!("0::/kubepods/burstable/pod{UID}/{ID}\n")).unwrap();
        let logs = root.join("log");
        std::fs::create_dir_all(logs.join("containers")).unwrap();
        std::fs::write(logs.join("containers").join(format!("web_shop_api-{ID}.log")), "").unwrap();
        let l = Labels::of_process(42, &LabelRoots::new(&proc, &logs)).unwrap();
        assert_eq!((l.cgroup().container_id(), l.names().pod(), l.names().container()), (Some(ID), Some("web"), Some("api")));
        assert_eq!(l.to_string(), format!("namespace shop, pod web, container api; container id {ID}, pod uid {UID}"));
        std::fs::write(proc.join("42/cgroup"), "0::/system.slice/caddy.service\n").unwrap();
        assert_eq!(Labels::of_process(42, &LabelRoots::new(&proc, &logs)).unwrap().to_string(), "unit caddy.service");
        std::fs::write(proc.join("42/cgroup"), "0::/\n").unwrap();
        assert_eq!(Labels::of_process(42, &LabelRoots::new(&proc, &logs)).unwrap().to_string(), "no container, pod or systemd unit in its cgroup");
        // A process that is gone is an error that names the file.
        let e = Labels::of_process(43, &LabelRoots::new(&proc, &logs)).unwrap_err();
        assert!(e.to_string().contains("43/cgroup"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!("gcprobe-labels-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
