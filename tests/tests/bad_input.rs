//! Every bad input: one clear line on stderr, a distinct exit code, no panic.
use std::process::{Command, Output, Stdio};

use gcprobe_tests::*;

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("gcprobe: error: "), "{err}");
    assert!(lines[0].contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn no_such_pid() {
    if !privileged("no_such_pid") {
        return;
    }
    let out = gcprobe(&["attach", "--pid", "99999999", "--duration", "1s"]);
    assert_one_line_error(&out, 4, "no process with PID 99999999");
}

#[test]
fn not_a_go_binary() {
    if !privileged("not_a_go_binary") {
        return;
    }
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let out = gcprobe(&["attach", "--pid", &sleep.id().to_string(), "--duration", "1s"]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert_one_line_error(&out, 6, "not a Go binary");
}

#[test]
fn target_exited_before_attach() {
    if !privileged("target_exited_before_attach") {
        return;
    }
    // A zombie: exited, not yet reaped, so its PID still exists.
    let mut z = Command::new("true").spawn().unwrap();
    let pid = z.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = gcprobe(&["attach", "--pid", &pid.to_string(), "--duration", "1s"]);
    let _ = z.wait();
    assert_one_line_error(&out, 5, "exited before gcprobe could attach");
}

#[test]
fn missing_symbol() {
    if !privileged("missing_symbol") {
        return;
    }
    // A stripped build whose pclntab no longer names runtime.growslice: the
    // program runs (the runtime does not look itself up by name) but the
    // required probe has nowhere to go.
    let exe = fixtures::build("appendloop", pins::GO_DEFAULT, Flavor::Stripped).unwrap();
    let mut bytes = std::fs::read(&exe).unwrap();
    let name = b"runtime.growslice\0";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("name in funcnametab");
    bytes[at + 10] = b'X';
    let patched = std::env::temp_dir().join(format!("gcprobe-nosym-{}", std::process::id()));
    std::fs::write(&patched, &bytes).unwrap();
    std::fs::set_permissions(&patched, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = Target::start(&patched, &[], &[]);
    let out = gcprobe(&["attach", "--pid", &t.pid().to_string(), "--duration", "1s"]);
    drop(t);
    let _ = std::fs::remove_file(&patched);
    assert_one_line_error(&out, 7, "required symbol runtime.growslice not found");
}

#[test]
fn not_root() {
    if !privileged("not_root") {
        return;
    }
    let exe = fixture("appendloop");
    let t = Target::start(&exe, &[], &[]);
    // Drop to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(gcprobe_bin())
        .args(["attach", "--pid", &t.pid().to_string(), "--duration", "1s"])
        .stdout(Stdio::piped())
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_error(&out, 3, "needs root");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [&["attach"][..], &["attach", "--pid", "abc"], &["attach", "--pid", "1", "--duration", "soon"], &["attach", "--pid", "1", "--format", "xml"]] {
        let out = gcprobe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}
