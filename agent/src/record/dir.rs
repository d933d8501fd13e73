//! Node mode's recordings (`gcprobe node --record-dir DIR`): one file per
//! process, started again when it grows past a size or an age, each file
//! standing alone for `gcprobe report`; the directory kept under a total
//! size by removing the oldest finished files.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// Where and how node mode records.
#[derive(Debug, Clone)]
pub struct RecordPolicy {
    pub dir: PathBuf,
    /// A file is finished and a new one begun past this many bytes...
    pub file_bytes: u64,
    /// ...or this long after it was begun.
    pub file_age: Duration,
    /// The directory's recordings are kept under this many bytes in all.
    pub dir_bytes: u64,
}

/// The extension every file written here has; retention touches no other.
pub const EXTENSION: &str = "gcprobe";

impl RecordPolicy {
    /// `exe-PID-UNIXSECONDS-N.gcprobe`: sorted by name, a process's files
    /// are in order; the executable's name says whose they are.
    pub fn file_for(&self, exe: &str, pid: u32, part: u32) -> PathBuf {
        let name = Path::new(exe).file_name().and_then(|n| n.to_str()).unwrap_or("process");
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
        let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.dir.join(format!("{name}-{pid}-{secs}-{part}.{EXTENSION}"))
    }

    /// Removes the oldest recordings (by modification time) not in `open`
    /// until the directory's recordings fit in `dir_bytes`. Returns how many went.
    pub fn enforce(&self, open: &[&Path]) -> std::io::Result<usize> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut total = 0;
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(EXTENSION) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            total += meta.len();
            if !open.contains(&path.as_path()) {
                files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), path));
            }
        }
        files.sort();
        let mut removed = 0;
        for (_, len, path) in files {
            if total <= self.dir_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_finished_files_go_first_and_open_ones_stay() {
        let dir = std::env::temp_dir().join(format!("gcprobe-recdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = RecordPolicy { dir: dir.clone(), file_bytes: 1 << 20, file_age: Duration::from_secs(60), dir_bytes: 250 };
        let names = ["a-1-1-0.gcprobe", "a-1-1-1.gcprobe", "b-2-1-0.gcprobe", "notes.txt"];
        for (i, n) in names.iter().enumerate() {
            std::fs::write(dir.join(n), vec![0u8; 100]).unwrap();
            let t = std::fs::File::options().write(true).open(dir.join(n)).unwrap();
            t.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64)).unwrap();
        }
        // 300 bytes of recordings, 250 allowed; the oldest, a-1-1-0, is still open.
        let open = dir.join(names[0]);
        assert_eq!(p.enforce(&[open.as_path()]).unwrap(), 1);
        let left: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
        assert_eq!(left, [true, false, true, true]);
        assert_eq!(p.file_for("/usr/bin/my app", 7, 2).file_name().unwrap().to_str().unwrap().split('-').next(), Some("my_app"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
