//! The target process as /proc shows it: existence, executable, mappings.
//!
//! The executable is always opened through `/proc/PID/exe`, never by the path it
//! names: that path may live in another mount namespace (containers) or may have
//! been deleted since the process started, and the magic link still reaches the
//! inode either way.
use std::{
    fs,
    io,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with PID {pid}")]
    NoSuchPid { pid: u32 },
    #[error("process {pid} exited before gcprobe could attach")]
    Exited { pid: u32 },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed line in /proc/{pid}/maps: {line:?}")]
    BadMaps { pid: u32, line: String },
    #[error("process {pid} has no mapping of its own executable")]
    ExeNotMapped { pid: u32 },
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub executable: bool,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: String,
}

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    /// What the exe link names, for display; may be `... (deleted)` or a path
    /// inside the target's mount namespace.
    pub exe_display: String,
    /// The path gcprobe opens and attaches to: `/proc/PID/exe`.
    pub exe_path: PathBuf,
    /// Device and inode of the executable, to pick its mappings out of maps.
    pub exe_dev: u64,
    pub exe_ino: u64,
    /// The executable's size, and whether it is on an overlayfs mount
    /// (see [`FileKey`]).
    exe_size: u64,
    exe_on_overlay: bool,
    /// `/proc/PID`, or its like under another root (tests, a host /proc
    /// mounted elsewhere).
    dir: PathBuf,
}

impl Process {
    pub fn open(pid: u32) -> Result<Self, ProcessError> {
        Self::open_in(std::path::Path::new("/proc"), pid)
    }

    /// As [`Process::open`], with /proc at `proc`.
    pub fn open_in(proc: &std::path::Path, pid: u32) -> Result<Self, ProcessError> {
        let proc_dir = proc.join(pid.to_string());
        if pid == 0 || !proc_dir.exists() {
            return Err(ProcessError::NoSuchPid { pid });
        }
        let exe_path = proc_dir.join("exe");
        // A zombie (exited, not yet reaped) still has /proc/PID but no exe.
        let exe_display = match fs::read_link(&exe_path) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProcessError::Exited { pid })
            }
            Err(source) => return Err(ProcessError::Read { path: exe_path, source }),
        };
        let meta = fs::metadata(&exe_path).map_err(|source| exited_or(pid, &exe_path, source))?;
        let exe_on_overlay = on_overlay(&exe_path);
        Ok(Self { pid, exe_display, exe_path, exe_dev: meta.dev(), exe_ino: meta.ino(), exe_size: meta.len(), exe_on_overlay, dir: proc_dir })
    }

    /// User plus system CPU seconds of all the process's threads so far
    /// (/proc/PID/stat fields 14 and 15, in clock ticks); None once it is gone.
    pub fn cpu_time_s(&self) -> Option<f64> {
        if let Some(s) = process_cpu_clock(self.pid) {
            return Some(s);
        }
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks_per_s())
    }

    /// True while the process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        fs::read_link(&self.exe_path).is_ok()
    }

    pub fn maps(&self) -> Result<Vec<Mapping>, ProcessError> {
        let path = self.dir.join("maps");
        let text = fs::read_to_string(&path).map_err(|source| exited_or(self.pid, &path, source))?;
        parse_maps(self.pid, &text)
    }

    /// The mappings backed by the target's own executable.
    pub fn exe_mappings(&self) -> Result<Vec<Mapping>, ProcessError> {
        let maps = self.maps()?;
        let key = self.key_in(&maps);
        Ok(maps.into_iter().filter(|m| key.is_some_and(|k| k.holds(m))).collect())
    }

    /// The executable's file as the kernel knows it (see [`FileKey`]).
    pub fn file_key(&self) -> Result<FileKey, ProcessError> {
        let maps = self.maps()?;
        self.key_in(&maps).ok_or(ProcessError::ExeNotMapped { pid: self.pid })
    }

    /// The key of the mapping that names the exe link's path; failing that,
    /// of the one with the file's stat() device and inode.
    fn key_in(&self, maps: &[Mapping]) -> Option<FileKey> {
        let (major, minor) = (libc::major(self.exe_dev), libc::minor(self.exe_dev));
        let m = maps.iter()
            .find(|m| m.inode != 0 && m.path == self.exe_display)
            .or_else(|| maps.iter().find(|m| m.inode == self.exe_ino && m.dev_major == major && m.dev_minor == minor))?;
        Some(if self.exe_on_overlay { FileKey::on_overlay(m.inode, self.exe_size) } else { FileKey::of(m) })
    }
}

/// Whether `path` is on overlayfs (statfs f_type OVERLAYFS_SUPER_MAGIC).
fn on_overlay(path: &std::path::Path) -> bool {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())) else { return false };
    // SAFETY: statfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == OVERLAYFS_SUPER_MAGIC }
}

/// An executable file as the kernel knows it: the device and inode its
/// mappings show in /proc/PID/maps. Uprobes land on the real inode behind
/// a path. On overlayfs (every container image) both stat() and the maps
/// give each mount its own device, while the inode number is the lower
/// file's (overlayfs keeps the real number when its layers share a
/// filesystem, as a runtime's snapshot directory does): two containers of
/// one image run one real file, so the key is that inode number and the
/// file's size, with no device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    device: Device,
    pub inode: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Device {
    Block { major: u32, minor: u32 },
    /// Any overlayfs mount, with the file's size as a check.
    Overlay { size: u64 },
}

impl FileKey {
    fn of(m: &Mapping) -> Self {
        Self { device: Device::Block { major: m.dev_major, minor: m.dev_minor }, inode: m.inode }
    }

    fn on_overlay(inode: u64, size: u64) -> Self {
        Self { device: Device::Overlay { size }, inode }
    }

    /// Whether a mapping of the process that gave this key is of its file.
    pub fn holds(&self, m: &Mapping) -> bool {
        match self.device {
            Device::Block { .. } => *self == Self::of(m),
            // One process's mappings are all through one mount.
            Device::Overlay { .. } => m.inode == self.inode,
        }
    }
}

/// Every process on this host running the file `key`. Candidates are the
/// processes whose exe stat()s to the key's inode or has `name` for its
/// file name (cheap), confirmed by the key their maps give. One missed
/// (an overlayfs that renumbers inodes) only costs it traps, which the
/// kernel counts apart (`stat::FOREIGN`) for the session to see.
pub fn running(key: FileKey, name: Option<&std::ffi::OsStr>) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let exe = e.path().join("exe");
        let by_ino = fs::metadata(&exe).is_ok_and(|m| m.ino() == key.inode);
        let by_name = name.is_some() && fs::read_link(&exe).is_ok_and(|p| p.file_name() == name);
        if !(by_ino || by_name) {
            continue;
        }
        if Process::open(pid).and_then(|p| p.file_key()).is_ok_and(|k| k == key) {
            out.push(pid);
        }
    }
    out
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.device {
            Device::Block { major, minor } => write!(f, "{major:02x}:{minor:02x}:{}", self.inode),
            Device::Overlay { .. } => write!(f, "overlay:{}", self.inode),
        }
    }
}

fn exited_or(pid: u32, path: &std::path::Path, source: io::Error) -> ProcessError {
    if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
        ProcessError::Exited { pid }
    } else {
        ProcessError::Read { path: path.to_owned(), source }
    }
}

pub fn parse_maps(pid: u32, text: &str) -> Result<Vec<Mapping>, ProcessError> {
    text.lines().filter(|l| !l.is_empty()).map(|line| parse_maps_line(line).ok_or_else(|| ProcessError::BadMaps { pid, line: line.to_owned() })).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    // 00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
    let mut it = line.splitn(6, ' ');
    let (range, perms, offset, dev, inode) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let path = it.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        dev_major: u32::from_str_radix(maj, 16).ok()?,
        dev_minor: u32::from_str_radix(min, 16).ok()?,
        inode: inode.parse().ok()?,
        path,
    })
}

/// Whether this process may load BPF and attach uprobes: root, or CAP_BPF with
/// CAP_PERFMON, or CAP_SYS_ADMIN. Read from CapEff so a clear message comes
/// before any syscall fails with a bare EPERM.
pub fn has_bpf_privileges() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = effective_caps();
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Whether this process may look at other users' processes: their
/// /proc/PID/exe and maps (CAP_SYS_PTRACE) and mem, mode 0600 (CAP_DAC_READ_SEARCH).
pub fn can_inspect_others() -> bool {
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    let has = effective_caps();
    has(CAP_SYS_PTRACE) && has(CAP_DAC_READ_SEARCH)
}

/// This process's effective capabilities (/proc/self/status CapEff), as a test by number.
fn effective_caps() -> impl Fn(u32) -> bool {
    let cap = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .unwrap_or(0);
    move |c: u32| cap & (1 << c) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "00400000-0048a000 r-xp 00000000 fd:00 1234   /usr/bin/app\n\
                    7f00-7f10 rw-p 00001000 00:00 0 \n\
                    55d0c0000000-55d0c0001000 r--p 0008a000 fd:00 1234 /tmp/app (deleted)\n";
        let maps = parse_maps(1, text).unwrap();
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].start, 0x400000);
        assert!(maps[0].executable);
        assert_eq!(maps[0].inode, 1234);
        assert_eq!(maps[0].path, "/usr/bin/app");
        assert_eq!(maps[1].path, "");
        assert!(!maps[1].executable);
        assert_eq!(maps[2].offset, 0x8a000);
        assert_eq!(maps[2].dev_major, 0xfd);
        assert_eq!(maps[2].path, "/tmp/app (deleted)");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse_maps(7, "nonsense\n"), Err(ProcessError::BadMaps { pid: 7, .. })));
    }

    #[test]
    fn missing_pid_is_reported() {
        // PIDs above pid_max (4194304 at most) never exist.
        assert!(matches!(Process::open(99_999_999), Err(ProcessError::NoSuchPid { .. })));
    }
}

/// The process's CPU clock (all threads, nanosecond resolution; /proc/PID/stat
/// counts in 10 ms ticks, too coarse for short bursts).
fn process_cpu_clock(pid: u32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain libc calls with valid out-pointers.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return None;
    }
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// utime + stime from a /proc/PID/stat line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod cpu_tests {
    #[test]
    fn parses_cpu_ticks_past_odd_command_names() {
        let line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 1000 0 0";
        assert_eq!(super::parse_cpu_ticks(line), Some(287));
        assert_eq!(super::parse_cpu_ticks("garbage"), None);
    }
}
