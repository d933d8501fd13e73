//! The deployment manifests, validated offline: yamllint, kubernetes-validate
//! --strict against several Kubernetes versions, helm lint and the chart's
//! rendering, and the capability set the README documents. No root needed;
//! no cluster can run here, so this is what is checked.
use std::{path::PathBuf, process::Output};

/// What the README says each is for, and the order the manifests list them.
const CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];

fn deploy() -> PathBuf {
    xtask::workspace_root().join("deploy")
}

fn tool(name: &str, args: &[&str]) -> Output {
    // One install at a time: the tests of this file run in parallel.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = xtask::tools::py_tool(name).unwrap_or_else(|e| panic!("installing {name}: {e:#}"));
    drop(guard);
    cmd.args(args).current_dir(deploy()).output().unwrap_or_else(|e| panic!("running {name}: {e}"))
}

fn ok(what: &str, out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    text
}

const MANIFESTS: [&str; 5] = ["kubernetes/namespace.yaml", "kubernetes/daemonset.yaml", "kubernetes/service.yaml", "kubernetes/servicemonitor.yaml", "kubernetes/kustomization.yaml"];

#[test]
fn manifests_pass_yamllint() {
    let mut args = vec!["--strict", "-c", ".yamllint", "helm/gcprobe/Chart.yaml", "helm/gcprobe/values.yaml"];
    args.extend(MANIFESTS);
    ok("yamllint", &tool("yamllint", &args));
}

/// kubernetes-validate on `files`, strictly, for every pinned Kubernetes version.
fn validate(files: &[&str]) -> Vec<(String, Output)> {
    xtask::pins::KUBERNETES_VERSIONS.iter().map(|k| {
        let mut args = vec!["--strict", "-k", k];
        args.extend(files);
        (k.to_string(), tool("kubernetes-validate", &args))
    }).collect()
}

#[test]
fn manifests_validate_strictly_against_several_kubernetes_versions() {
    for (k, out) in validate(&MANIFESTS[..3]) {
        let text = ok(&format!("kubernetes-validate {k}"), &out);
        assert_eq!(text.matches(" passed for resource ").count(), 3, "{k}: {text}");
    }
    // The validator bites: a field the DaemonSet schema does not have fails it.
    let bad = std::env::temp_dir().join(format!("gcprobe-bad-ds-{}.yaml", std::process::id()));
    let ds = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(&bad, ds.replace("      hostPID: true", "      hostPID: true\n      hostPIDs: true")).unwrap();
    let out = tool("kubernetes-validate", &["--strict", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "an unknown field passed: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn helm_chart_lints_and_renders_valid_manifests() {
    ok("helm lint", &tool("helm", &["lint", "--strict", "helm/gcprobe"]));
    let rendered = std::env::temp_dir().join(format!("gcprobe-helm-{}.yaml", std::process::id()));
    let out = tool("helm", &["template", "gcprobe", "helm/gcprobe", "--namespace", "gcprobe", "--set", "serviceMonitor.enabled=true", "--set", "include={/usr/bin/*,namespace=shop}", "--set", "exclude={namespace=kube-system}"]);
    let yaml = ok("helm template", &out);
    std::fs::write(&rendered, String::from_utf8_lossy(&out.stdout).as_bytes()).unwrap();
    for (k, out) in validate(&[rendered.to_str().unwrap()]) {
        let text = ok(&format!("kubernetes-validate {k} of helm template"), &out);
        assert_eq!(text.matches(" passed for resource ").count(), 2, "{k}: {text}");
    }
    let _ = std::fs::remove_file(&rendered);
    for arg in ["- --include=/usr/bin/*", "- --include=namespace=shop", "- --exclude=namespace=kube-system", "kind: ServiceMonitor", "- --listen=0.0.0.0:9466", "- --agent-cpu=20%"] {
        assert!(yaml.contains(arg), "{arg} not in:\n{yaml}");
    }
    assert_eq!(capabilities(&yaml), CAPABILITIES);
}

/// The capabilities a manifest adds (its one `add:` line).
fn capabilities(yaml: &str) -> Vec<String> {
    let line = yaml.lines().map(str::trim).find_map(|l| l.strip_prefix("add: [")).expect("a capabilities add: line");
    line.trim_end_matches(']').split(',').map(|c| c.trim().trim_matches('"').to_owned()).collect()
}

#[test]
fn the_daemonset_runs_least_privileged_with_the_documented_capabilities() {
    let ds = std::fs::read_to_string(deploy().join("kubernetes/daemonset.yaml")).unwrap();
    assert_eq!(capabilities(&ds), CAPABILITIES);
    for want in ["hostPID: true", "automountServiceAccountToken: false", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false", "privileged: false", "drop: [\"ALL\"]", "- name: metrics", "- operator: Exists"] {
        assert!(ds.contains(want), "{want} not in the DaemonSet");
    }
    assert!(!ds.contains("SYS_ADMIN"));
    // The README says why each one is there.
    let readme = std::fs::read_to_string(xtask::workspace_root().join("README.md")).unwrap();
    for c in CAPABILITIES {
        assert!(readme.lines().any(|l| l.starts_with(&format!("| `CAP_{c}` |"))), "README has no row for CAP_{c}");
    }
}
