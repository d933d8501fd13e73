//! Which Go processes run on this host: a sweep of /proc that tells each
//! binary apart once, by the file the kernel maps (device and inode in
//! /proc/PID/maps: on overlayfs stat() of the path gives each container its
//! own device, while uprobes land on the real inode).
//!
//! A sweep costs three small reads per process it already knows (the exe
//! link, its stat, the start time), and the maps and the binary's build
//! information only for a process whose executable it has not seen: the
//! verdict "Go, and which version" is kept per file.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::tracee::{
    buildinfo::{self, GoVersion},
    process::{FileKey, Process},
};

/// A Go process found by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoProcess {
    pid: u32,
    file: FileKey,
    /// What the exe link names (may be a path in the process's own mount
    /// namespace, or end in " (deleted)").
    exe: String,
    go_version: String,
}

impl GoProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn file(&self) -> FileKey {
        self.file
    }

    pub fn exe(&self) -> &str {
        &self.exe
    }

    pub fn go_version(&self) -> &str {
        &self.go_version
    }
}

/// What one sweep changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Go processes not seen before (new, or a PID that exec'd a Go binary).
    pub started: Vec<GoProcess>,
    /// PIDs of Go processes seen before that are gone, or exec'd another binary.
    pub ended: Vec<u32>,
}

/// Tells whether a file is a Go binary, and its Go version.
pub trait Classify {
    fn go_version(&mut self, path: &Path) -> Option<String>;
}

/// Reads the binary's build information (`.go.buildinfo`), and nothing
/// else: no symbol table, no segments. A file whose ELF section headers
/// hold no `.go.buildinfo` is not Go; only a file without section headers
/// (rare: stripped by hand) is scanned whole for the blob's magic. The
/// mapping is dropped at once, so a sweep over many binaries leaves none
/// of their pages resident.
pub struct BuildInfoClassifier;

impl Classify for BuildInfoClassifier {
    fn go_version(&mut self, path: &Path) -> Option<String> {
        use object::{Object as _, ObjectSection as _};
        let file = fs::File::open(path).ok()?;
        // SAFETY: read-only private mapping, read here and dropped before returning.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let obj = object::File::parse(&data[..]).ok()?;
        let section = obj.section_by_name(".go.buildinfo");
        let info = match (section, obj.sections().next()) {
            (Some(s), _) => buildinfo::parse(Some(s.data().ok()?), &[]).ok()?,
            (None, Some(_)) => return None,
            (None, None) => buildinfo::parse(None, &data).ok()?,
        };
        // Older than gcprobe reads is not a target either.
        (info.version >= GoVersion::new(1, 19, 0)).then_some(info.version_raw)
    }
}

/// A process as the last sweep saw it: enough to tell it is still the same
/// process running the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// Start time in clock ticks since boot (/proc/PID/stat field 22): a
    /// reused PID has another.
    start: u64,
    /// stat() device and inode of /proc/PID/exe: an exec changes them.
    exe_dev: u64,
    exe_ino: u64,
    /// Its Go identity, None when it is not a Go process.
    go: Option<GoProcess>,
}

/// Sweeps /proc, remembering processes and binaries between sweeps.
pub struct Discovery<C: Classify> {
    proc: PathBuf,
    classify: C,
    seen: BTreeMap<u32, Seen>,
    /// Per binary file: its Go version, or None for not Go.
    verdicts: HashMap<FileKey, Option<String>>,
    /// Processes the last sweep was not allowed to look at (another
    /// user's, without CAP_SYS_PTRACE), by PID.
    denied: Vec<u32>,
}

impl Discovery<BuildInfoClassifier> {
    pub fn new() -> Self {
        Self::with(PathBuf::from("/proc"), BuildInfoClassifier)
    }
}

impl Default for Discovery<BuildInfoClassifier> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Classify> Discovery<C> {
    pub fn with(proc: PathBuf, classify: C) -> Self {
        Self { proc, classify, seen: BTreeMap::new(), verdicts: HashMap::new(), denied: Vec::new() }
    }

    /// Binaries told apart so far (Go or not).
    pub fn binaries_seen(&self) -> usize {
        self.verdicts.len()
    }

    /// Processes the last sweep could not look at: permission denied on
    /// their executable (the kernel's ptrace access check).
    pub fn denied(&self) -> &[u32] {
        &self.denied
    }

    /// The Go processes alive at the last sweep, by PID.
    pub fn go_processes(&self) -> impl Iterator<Item = &GoProcess> {
        self.seen.values().filter_map(|s| s.go.as_ref())
    }

    /// One pass over /proc. A process that vanishes mid-read, or whose
    /// files cannot be read (a kernel thread has no exe), is skipped: the
    /// next sweep looks again.
    pub fn sweep(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut alive = BTreeMap::new();
        self.denied.clear();
        for pid in pids(&self.proc) {
            let id = match self.identity(pid) {
                Ok(id) => id,
                Err(denied) => {
                    if denied {
                        self.denied.push(pid);
                    }
                    continue;
                }
            };
            let seen = self.update(pid, id, &mut changes);
            alive.insert(pid, seen);
        }
        changes.ended.extend(self.seen.iter().filter(|(_, s)| s.go.is_some()).map(|(pid, _)| *pid));
        changes.ended.sort_unstable();
        self.seen = alive;
        changes
    }

    /// One process, as an exec event names it: the same verdict a sweep
    /// would reach, without the sweep.
    pub fn look(&mut self, pid: u32) -> Changes {
        let mut changes = Changes::default();
        match self.identity(pid).ok() {
            Some(id) => {
                let seen = self.update(pid, id, &mut changes);
                self.seen.insert(pid, seen);
            }
            None => {
                if let Some(Seen { go: Some(_), .. }) = self.seen.remove(&pid) {
                    changes.ended.push(pid);
                }
            }
        }
        changes
    }

    /// What `pid` is now, against what was last seen of it (which it takes out).
    fn update(&mut self, pid: u32, (start, exe_dev, exe_ino): (u64, u64, u64), changes: &mut Changes) -> Seen {
        match self.seen.remove(&pid) {
            Some(s) if (s.start, s.exe_dev, s.exe_ino) == (start, exe_dev, exe_ino) => s,
            old => {
                if let Some(Seen { go: Some(_), .. }) = old {
                    changes.ended.push(pid);
                }
                let go = self.go_identity(pid);
                if let Some(g) = &go {
                    changes.started.push(g.clone());
                }
                Seen { start, exe_dev, exe_ino, go }
            }
        }
    }

    /// Start time and the exe's stat identity. Err for a process without
    /// an executable (kernel threads, zombies) or one already gone, or
    /// Err(true) for one whose executable we may not look at.
    fn identity(&self, pid: u32) -> Result<(u64, u64, u64), bool> {
        let dir = self.proc.join(pid.to_string());
        let stat = fs::read_to_string(dir.join("stat")).map_err(|_| false)?;
        // A kernel thread has no executable; unprivileged, its exe link says EACCES, not ENOENT.
        if is_kernel_thread(&stat) {
            return Err(false);
        }
        let meta = fs::metadata(dir.join("exe")).map_err(|e| e.kind() == std::io::ErrorKind::PermissionDenied)?;
        Ok((start_ticks(&stat).ok_or(false)?, meta.dev(), meta.ino()))
    }

    /// The process's binary as the kernel maps it, classified once per file.
    fn go_identity(&mut self, pid: u32) -> Option<GoProcess> {
        let process = Process::open_in(&self.proc, pid).ok()?;
        let file = process.file_key().ok()?;
        let classify = &mut self.classify;
        let version = self.verdicts.entry(file).or_insert_with(|| classify.go_version(&process.exe_path)).clone()?;
        Some(GoProcess { pid, file, exe: process.exe_display, go_version: version })
    }
}

/// The numeric entries of a /proc directory, in order.
fn pids(proc: &Path) -> Vec<u32> {
    let Ok(rd) = fs::read_dir(proc) else { return Vec::new() };
    let mut pids: Vec<u32> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids
}

/// PF_KTHREAD in the flags, field 9 of /proc/PID/stat (include/linux/sched.h).
fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(6)?.parse::<u64>().ok());
    flags.is_some_and(|f| f & PF_KTHREAD != 0)
}

/// Field 22 of /proc/PID/stat. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself: fields are
/// counted after its last ')'.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_past_an_odd_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(987654));
        assert_eq!(start_ticks("42 (x) S 1"), None);
        // kthreadd, then an ordinary process.
        assert!(is_kernel_thread("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0"));
        assert!(!is_kernel_thread(stat));
    }

    /// Says Go for files whose name starts with "go", and counts its calls.
    struct ByName(u32);

    impl Classify for ByName {
        fn go_version(&mut self, path: &Path) -> Option<String> {
            self.0 += 1;
            let target = fs::read_link(path).ok()?;
            target.file_name()?.to_str()?.starts_with("go").then(|| "go1.24.11".to_owned())
        }
    }

    /// A fake /proc: each process a directory with `exe` linked to a real
    /// file, a `stat` and a `maps` naming that file's device and inode.
    struct FakeProc {
        root: PathBuf,
    }

    impl FakeProc {
        fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!("gcprobe-discover-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("bin")).unwrap();
            Self { root }
        }

        fn binary(&self, name: &str) -> PathBuf {
            let p = self.root.join("bin").join(name);
            if !p.exists() {
                fs::write(&p, name).unwrap();
            }
            p
        }

        fn spawn(&self, pid: u32, start: u64, exe: &str) {
            let bin = self.binary(exe);
            let dir = self.root.join("proc").join(pid.to_string());
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&bin, dir.join("exe")).unwrap();
            fs::write(dir.join("stat"), format!("{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0")).unwrap();
            let m = fs::metadata(&bin).unwrap();
            let (maj, min) = (libc::major(m.dev()), libc::minor(m.dev()));
            fs::write(dir.join("maps"), format!("00400000-00401000 r-xp 00000000 {maj:02x}:{min:02x} {} {}\n", m.ino(), bin.display())).unwrap();
        }

        fn exit(&self, pid: u32) {
            fs::remove_dir_all(self.root.join("proc").join(pid.to_string())).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn sweeps_see_go_processes_come_and_go_and_classify_each_binary_once() {
        let p = FakeProc::new();
        p.spawn(10, 100, "go-api");
        p.spawn(11, 101, "go-api");
        p.spawn(12, 102, "bash");
        let mut d = Discovery::with(p.root.join("proc"), ByName(0));
        let c = d.sweep();
        assert_eq!(c.started.iter().map(GoProcess::pid).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(c.started[0].go_version(), "go1.24.11");
        assert_eq!(c.started[0].file(), c.started[1].file());
        assert!(c.ended.is_empty());
        // Two binaries, each classified once.
        assert_eq!((d.binaries_seen(), d.classify.0), (2, 2));

        // Nothing changed: nothing reported, nothing classified again.
        assert_eq!(d.sweep(), Changes::default());
        assert_eq!(d.classify.0, 2);

        // 11 exits; 12 execs a Go binary; 10's PID is reused by another process.
        p.exit(11);
        p.spawn(12, 102, "go-worker");
        p.spawn(10, 200, "go-api");
        let c = d.sweep();
        assert_eq!(c.started.iter().map(GoProcess::pid).collect::<Vec<_>>(), [10, 12]);
        assert_eq!(c.ended, [10, 11]);
        assert_eq!(d.go_processes().map(GoProcess::pid).collect::<Vec<_>>(), [10, 12]);
        // go-api was known; only go-worker was classified.
        assert_eq!(d.classify.0, 3);
    }
}
