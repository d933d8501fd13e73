//! The kernel's initramfs format: "newc" cpio (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Written here rather than by the host's `cpio` so that device nodes and root ownership need no root
//! and no fakeroot: the kernel creates whatever the archive describes.
use std::io::{self, Write};

const MAGIC: &str = "070701";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// An archive being written; `finish` adds the trailer.
pub struct Archive<W: Write> {
    out: W,
    written: u64,
    ino: u32,
}

impl<W: Write> Archive<W> {
    pub fn new(out: W) -> Self {
        Archive { out, written: 0, ino: 1 }
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, S_IFDIR | 0o755, (0, 0), b"")
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (mode & 0o7777), (0, 0), data)
    }

    /// A character device: init needs /dev/console before anything mounts devtmpfs
    /// (Debian's cloud kernels do not set DEVTMPFS_MOUNT).
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | 0o600, (major, minor), b"")
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), b"")?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let size = u32::try_from(data.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB")))?;
        let ino = self.ino;
        self.ino += 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        let mut header = String::from(MAGIC);
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Headers and file data start on 4-byte boundaries.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.put(&[0; 3][..n as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_entry_is_the_newc_header_name_and_data_each_padded_to_four_bytes() {
        let mut a = Archive::new(Vec::new());
        a.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        let out = a.finish().unwrap();
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(&header[..6], "070701");
        assert_eq!(&header[14..22], "000081ed", "S_IFREG|0755");
        assert_eq!(&header[54..62], "0000000a", "file size 10");
        assert_eq!(&header[94..102], "00000005", "name size: 'init' and its NUL");
        // 110-byte header + "init\0" = 115, padded to 116; then 10 bytes of data padded to 12.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701", "the trailer starts on the next boundary");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn a_device_node_carries_its_major_and_minor_in_rdev() {
        let mut a = Archive::new(Vec::new());
        a.char_dev("dev/console", 5, 1).unwrap();
        let out = a.finish().unwrap();
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(&header[14..22], "00002180", "S_IFCHR|0600");
        assert_eq!(&header[78..86], "00000005");
        assert_eq!(&header[86..94], "00000001");
    }
}
