//! Opening the files gcprobe writes: reports, exports, recordings, and node
//! mode's files. One place, so each gets the same care:
//!
//! - A symbolic link at the path is refused, never followed (`O_NOFOLLOW`):
//!   gcprobe mostly runs as root, and a link planted where it writes (in
//!   /tmp, a shared CI directory) would have it overwrite any file the link
//!   names. The error names the path.
//! - Recordings are made private (0600): they hold the target's code paths,
//!   type names and memory figures, and are kept on disk for later.
use std::{
    fs::{File, OpenOptions, Permissions},
    io,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// What to do when the file exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// An error (`Exists`): the caller asks for `--force` or picks another name.
    Refuse,
    /// Truncate and write it anew (a regular file only, not a link).
    Replace,
}

/// Who may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The owner only (0600), a replaced file included.
    Private,
    /// As the umask allows (0666 & !umask): reports, meant to be shared.
    Umask,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{}: is a symbolic link; gcprobe does not write through one (remove it, or give another path)", path.display())]
    Symlink { path: PathBuf },
    #[error("cannot create {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Opens `path` for writing as `existing` and `access` say, never through a
/// symbolic link.
pub fn create(path: &Path, existing: Existing, access: Access) -> Result<File, OutputError> {
    let mut o = OpenOptions::new();
    o.write(true).custom_flags(libc::O_NOFOLLOW).mode(match access {
        Access::Private => 0o600,
        Access::Umask => 0o666,
    });
    match existing {
        Existing::Refuse => o.create_new(true),
        Existing::Replace => o.create(true).truncate(true),
    };
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let file = o.open(path).map_err(|source| match source.raw_os_error() {
        // O_EXCL does not follow a link either, but says EEXIST: name what is there.
        Some(libc::EEXIST) if is_link() => OutputError::Symlink { path: path.to_owned() },
        Some(libc::EEXIST) => OutputError::Exists { path: path.to_owned() },
        // ELOOP is also "too many links" in a directory above: only the last one is ours to name.
        Some(libc::ELOOP) if is_link() => OutputError::Symlink { path: path.to_owned() },
        _ => OutputError::Open { path: path.to_owned(), source },
    })?;
    // The mode applies only to a file the open made; a replaced one keeps
    // its own unless made private here.
    if access == Access::Private && existing == Existing::Replace {
        file.set_permissions(Permissions::from_mode(0o600)).map_err(|source| OutputError::Open { path: path.to_owned(), source })?;
    }
    Ok(file)
}

/// Refuses a symbolic link at `path` now, for an output written only when
/// the session ends: a bad path must cost the target nothing. [`create`]
/// still refuses one that appears in between.
pub fn refuse_symlink(path: &Path) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(OutputError::Symlink { path: path.to_owned() }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gcprobe-outfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn private_files_are_0600_even_when_replaced() {
        let d = scratch("mode");
        let p = d.join("rec");
        drop(create(&p, Existing::Refuse, Access::Private).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        drop(create(&p, Existing::Replace, Access::Private).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(create(&p, Existing::Refuse, Access::Private), Err(OutputError::Exists { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let d = scratch("link");
        let target = d.join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = d.join("out");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dangling = d.join("dangling");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        for (path, existing) in [(&link, Existing::Replace), (&link, Existing::Refuse), (&dangling, Existing::Replace), (&dangling, Existing::Refuse)] {
            let e = create(path, existing, Access::Umask).unwrap_err();
            assert_eq!(e.to_string(), format!("{}: is a symbolic link; gcprobe does not write through one (remove it, or give another path)", path.display()));
        }
        assert!(matches!(refuse_symlink(&link), Err(OutputError::Symlink { .. })) && refuse_symlink(&target).is_ok() && refuse_symlink(&d.join("new")).is_ok());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert!(!d.join("nowhere").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
