//! The files gcprobe writes: recordings private to their owner, no output
//! written through a symbolic link, and a disk that fills while recording
//! (root).
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use gcprobe_tests::*;

fn scratch(name: &str) -> PathBuf {
    scratch_dir("outputs", name)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o777
}

/// Recordings (`record -o`, `run --record`) are 0600, a replaced one too;
/// a symbolic link at any output path (report, recording, export) is refused
/// with one line naming it, exit 1, and the file it points to is untouched.
#[test]
fn recordings_are_private_and_no_output_goes_through_a_symlink() {
    if !privileged("recordings_are_private_and_no_output_goes_through_a_symlink") {
        return;
    }
    let dir = scratch("links");
    let t = Target::start(&fixture("appendloop"), &[], &[]);
    let pid = t.pid().to_string();
    let rec = dir.join("rec.gcprobe");
    let out = gcprobe(&["record", "-q", "--pid", &pid, "-d", "2s", "-o", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(mode(&rec), 0o600);
    // --force over a file anyone could read leaves it private.
    std::fs::set_permissions(&rec, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = gcprobe(&["record", "-q", "--pid", &pid, "-d", "2s", "--force", "-o", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(mode(&rec), 0o600);
    let run_rec = dir.join("run.gcprobe");
    let exe = fixture("appendloop");
    let out = gcprobe(&["run", "-q", "--record", run_rec.to_str().unwrap(), "--", exe.to_str().unwrap(), "-for", "300ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(mode(&run_rec), 0o600);

    let precious = dir.join("precious");
    std::fs::write(&precious, b"not gcprobe's to overwrite").unwrap();
    let link = dir.join("out");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let l = link.to_str().unwrap();
    let said = format!("{l}: is a symbolic link; gcprobe does not write through one (remove it, or give another path)");
    let cases: [&[&str]; 7] = [
        &["record", "-q", "--pid", &pid, "-d", "1s", "-o", l],
        &["record", "-q", "--pid", &pid, "-d", "1s", "--force", "-o", l],
        &["attach", "-q", "--pid", &pid, "-d", "1s", "-o", l],
        &["run", "-q", "-o", l, "--", exe.to_str().unwrap(), "-for", "300ms"],
        &["run", "-q", "--record", l, "--", exe.to_str().unwrap(), "-for", "300ms"],
        &["report", rec.to_str().unwrap(), "-o", l],
        &["report", rec.to_str().unwrap(), "--format", "pprof", "-o", l],
    ];
    for args in cases {
        let out = gcprobe(args);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.lines().count() == 1 && err.starts_with("gcprobe: error: ") && err.trim_end().ends_with(&said), "{args:?}: {err}");
        assert_eq!(std::fs::read(&precious).unwrap(), b"not gcprobe's to overwrite", "{args:?}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{args:?}");
    }
    // The target was never touched: still running, not traced.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "TracerPid:\t0"), "{status}");
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for the test, unmounted (and its directory removed) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(&dir).status().unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A disk that fills while recording: one line saying so, exit 1, the live
/// report still printed, the target unharmed, and the file reports up to its
/// last whole frame (it ends on one) with a warning that it was cut short.
#[test]
fn a_full_disk_while_recording_is_one_clear_error_and_the_file_still_reports() {
    if !privileged("a_full_disk_while_recording_is_one_clear_error_and_the_file_still_reports") {
        return;
    }
    // Exact mode writes about 1 MiB/s here (README), in a frame per 200 ms:
    // a few whole frames fit, then one does not, a second or so in.
    let disk = Tmpfs::mount(scratch("enospc").join("disk"), "1m");
    let mut t = Target::start(&fixture("appendloop"), &[], &[]);
    let file = disk.0.join("x.gcprobe");
    let out = gcprobe(&["record", "-q", "--mode", "exact", "--pid", &t.pid().to_string(), "-d", "60s", "--format", "json", "-o", file.to_str().unwrap()]);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("gcprobe: error: recording: {}: the disk is full (No space left on device", file.display())), "{err}");
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the live report, still printed");
    assert_eq!(live["window"]["ended_by"], "record-error");
    assert!(live["window"]["duration_s"].as_f64().unwrap() < 30.0, "{:#}", live["window"]);

    // The target runs on, untraced, and was not killed by anything.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(t.child.try_wait().unwrap().is_none(), "the target died");
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    assert!(status.lines().any(|l| l == "TracerPid:\t0"), "{status}");

    let out = Command::new(gcprobe_bin()).args(["report", "--format", "json"]).arg(&file).output().unwrap();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.lines().count() == 1 && err.contains("recording cut short: it ends without its final frame"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "recording-cut-short");
    assert!(r["events"]["growslice"].as_u64().unwrap() > 0, "{:#}", r["events"]);
    // Nothing torn at the end: the writer cut its partial frame off.
    assert!(!r["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("bytes were lost")), "{:#}", r["warnings"]);
    drop(t);
    drop(disk);
}
