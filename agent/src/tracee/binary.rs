//! The target's ELF file: architecture, symbols, segments, sections.
//!
//! Parsed once into owned tables; the mapping stays alive so the section bytes
//! (buildinfo, later pclntab) can be read without copying.
use std::{collections::HashMap, fs::File, io, path::{Path, PathBuf}};

use bytes::Bytes;
use memmap2::Mmap;
use object::{
    elf, Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SegmentFlags,
};

use crate::tracee::process::Mapping;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a readable ELF file")]
    NotElf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{path}: unsupported architecture (machine {machine}); gcprobe supports x86_64 and arm64")]
    UnsupportedArch { path: PathBuf, machine: u16 },
    #[error("{path}: no executable mapping in the target's address space matches the file's segments")]
    NoBias { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
}

impl Segment {
    /// File bytes from `vaddr` to the end of the segment, if the file backs
    /// `vaddr`. Overflow-safe: every field comes from the (untrusted) file.
    pub fn file_bytes_after(&self, vaddr: u64) -> Option<u64> {
        let into = vaddr.checked_sub(self.vaddr)?;
        (into < self.filesz).then(|| self.filesz - into)
    }

    /// The file offset of `vaddr`, if this segment's file bytes hold it.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.file_bytes_after(vaddr)?;
        (vaddr - self.vaddr).checked_add(self.offset)
    }
}

#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub offset: u64,
    /// Bytes in the file (0 for NOBITS sections).
    pub size: u64,
    /// Bytes in memory.
    pub mem_size: u64,
}

impl Section {
    pub fn holds(&self, vaddr: u64) -> bool {
        vaddr >= self.addr && vaddr - self.addr < self.mem_size
    }
}

pub struct Binary {
    pub path: PathBuf,
    pub arch: Arch,
    pub is_pie: bool,
    data: Bytes,
    symbols: HashMap<String, Symbol>,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section>,
    pub has_dwarf: bool,
    /// Hex of the GNU build-id note, or Go's build id when that is all there is.
    pub build_id: Option<String>,
    /// `R_*_RELATIVE` dynamic relocations: address → addend. In a PIE the
    /// pointers in Go's moduledata are stored this way, not in the file bytes.
    relative: HashMap<u64, u64>,
    /// `data` is a private mapping of the file (not bytes in memory).
    mapped: bool,
}

impl std::fmt::Debug for Binary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binary").field("path", &self.path).field("arch", &self.arch).finish_non_exhaustive()
    }
}

impl Binary {
    pub fn open(path: &Path) -> Result<Self, BinaryError> {
        let file = File::open(path).map_err(|source| BinaryError::Open { path: path.into(), source })?;
        // SAFETY: read-only private mapping; a binary rewritten under a running
        // process is already undefined behaviour for that process.
        let data = unsafe { Mmap::map(&file) }.map_err(|source| BinaryError::Open { path: path.into(), source })?;
        let mut bin = Self::parse(path, Bytes::from_owner(data))?;
        bin.mapped = true;
        Ok(bin)
    }

    /// Lets the kernel take back the file's pages that start-up read (the
    /// scans of machine code and tables touch most of a binary); later
    /// lookups fault in only what they read. Only for a mapping of the file:
    /// its pages are clean and come back from the file unchanged
    /// (madvise(2), MADV_DONTNEED on a private file mapping never written).
    pub fn drop_resident_pages(&self) {
        if !self.mapped || self.data.is_empty() {
            return;
        }
        // SAFETY: the range is exactly our read-only private file mapping
        // (mmap returns it page-aligned); dropping its pages changes no byte
        // anyone can read.
        unsafe { libc::madvise(self.data.as_ptr() as *mut libc::c_void, self.data.len(), libc::MADV_DONTNEED) };
    }

    /// Parses an ELF image held in memory (tests, fuzzing, recordings).
    pub fn from_bytes(label: &Path, data: Vec<u8>) -> Result<Self, BinaryError> {
        Self::parse(label, Bytes::from(data))
    }

    fn parse(path: &Path, data: Bytes) -> Result<Self, BinaryError> {
        let obj = object::File::parse(&data[..]).map_err(|source| BinaryError::NotElf { path: path.into(), source })?;
        let (arch, machine) = match obj.architecture() {
            object::Architecture::X86_64 => (Arch::X86_64, elf::EM_X86_64),
            object::Architecture::Aarch64 => (Arch::Aarch64, elf::EM_AARCH64),
            _ => {
                let machine = if data.len() > 20 { u16::from_le_bytes([data[18], data[19]]) } else { 0 };
                return Err(BinaryError::UnsupportedArch { path: path.into(), machine });
            }
        };
        let _ = machine;
        let is_pie = matches!(obj.kind(), object::ObjectKind::Dynamic);

        let mut symbols = HashMap::new();
        for sym in obj.symbols() {
            if sym.address() == 0 {
                continue;
            }
            if let Ok(name) = sym.name() {
                symbols.entry(name.to_owned()).or_insert_with(|| Symbol { name: name.to_owned(), addr: sym.address(), size: sym.size() });
            }
        }

        let segments = obj
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let executable = match s.flags() {
                    SegmentFlags::Elf { p_flags, .. } => p_flags.0 & elf::PF_X.0 != 0,
                    _ => false,
                };
                Segment { vaddr: s.address(), memsz: s.size(), offset, filesz, executable }
            })
            .collect();

        let sections = obj
            .sections()
            .filter_map(|s| {
                // NOBITS sections (.bss, .noptrbss) have no file bytes but hold variables.
                let (offset, size) = s.file_range().unwrap_or((0, 0));
                Some(Section { name: s.name().ok()?.to_owned(), addr: s.address(), offset, size, mem_size: s.size() })
            })
            .collect::<Vec<_>>();
        let has_dwarf = sections.iter().any(|s| s.name == ".debug_info" || s.name == ".zdebug_info");

        // R_X86_64_RELATIVE = 8, R_AARCH64_RELATIVE = 1027 (ELF psABIs).
        let relative_type = if arch == Arch::X86_64 { 8 } else { 1027 };
        let relative = obj
            .dynamic_relocations()
            .into_iter()
            .flatten()
            .filter_map(|(at, r)| match r.flags() {
                object::RelocationFlags::Elf { r_type } if r_type.0 == relative_type => Some((at, r.addend() as u64)),
                _ => None,
            })
            .collect();

        let build_id = match obj.build_id() {
            Ok(Some(id)) => Some(id.iter().map(|b| format!("{b:02x}")).collect()),
            _ => go_build_id(&obj),
        };

        Ok(Self { path: path.into(), arch, is_pie, data, symbols, segments, sections, has_dwarf, build_id, relative, mapped: false })
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.get(name)
    }

    pub fn symbols(&self) -> impl Iterator<Item = &Symbol> {
        self.symbols.values()
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn section_data(&self, name: &str) -> Option<&[u8]> {
        let s = self.section(name)?;
        self.data.get(usize::try_from(s.offset).ok()?..usize::try_from(s.offset.checked_add(s.size)?).ok()?)
    }

    /// File offset of a virtual address, through the PT_LOAD that holds it.
    /// This is what the uprobe PMU wants, and it differs from the address in
    /// PIE binaries and wherever a segment's vaddr and offset are not equal.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| s.file_offset(vaddr))
    }

    /// File bytes at a link-time virtual address, if the file backs them.
    pub fn bytes_at(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let seg = self.segments.iter().find(|s| s.file_bytes_after(vaddr).is_some())?;
        if len as u64 > seg.file_bytes_after(vaddr)? {
            return None;
        }
        let off = usize::try_from(seg.file_offset(vaddr)?).ok()?;
        self.data.get(off..off.checked_add(len)?)
    }

    /// Like `bytes_at`, as a zero-copy slice of the mapped file.
    pub fn slice_at(&self, vaddr: u64, len: usize) -> Option<Bytes> {
        let b = self.bytes_at(vaddr, len)?;
        Some(self.data.slice_ref(b))
    }

    /// A section's bytes, zero-copy.
    pub fn section_bytes(&self, name: &str) -> Option<Bytes> {
        Some(self.data.slice_ref(self.section_data(name)?))
    }

    /// A pointer-sized value as the loaded program sees it (before the load
    /// bias): the RELATIVE relocation's addend if one targets this address,
    /// else the file bytes.
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        if let Some(&addend) = self.relative.get(&vaddr) {
            return Some(addend);
        }
        let b = self.bytes_at(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Addresses of pointers that the dynamic loader sets to `target`.
    pub fn relocated_pointers_to(&self, target: u64) -> impl Iterator<Item = u64> + '_ {
        self.relative.iter().filter(move |(_, &a)| a == target).map(|(&at, _)| at)
    }

    /// Load bias: runtime address minus link-time virtual address. Zero for a
    /// classic static Go binary, the ASLR base for PIE.
    pub fn load_bias(&self, exe_maps: &[Mapping]) -> Result<u64, BinaryError> {
        for seg in self.segments.iter().filter(|s| s.executable) {
            if let Some(m) = exe_maps
                .iter()
                .find(|m| m.executable && seg.offset >= m.offset && seg.offset - m.offset < m.end.saturating_sub(m.start))
            {
                let runtime = m.start + (seg.offset - m.offset);
                return Ok(runtime.wrapping_sub(seg.vaddr));
            }
        }
        Err(BinaryError::NoBias { path: self.path.clone() })
    }
}

/// Go writes its own build id into `.note.go.buildid`: name "Go", type 4.
fn go_build_id(obj: &object::File<'_>) -> Option<String> {
    let sec = obj.section_by_name(".note.go.buildid")?;
    let data = sec.data().ok()?;
    // Elf note: namesz, descsz, type, name (padded to 4), desc.
    let descsz = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
    let desc = data.get(16..16 + descsz)?;
    Some(String::from_utf8_lossy(desc).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_itself() {
        let exe = std::env::current_exe().unwrap();
        let bin = Binary::open(&exe).unwrap();
        assert!(!bin.segments.is_empty());
        let text = bin.section(".text").expect(".text");
        // Every address in .text maps back to its own file offset.
        assert_eq!(bin.file_offset(text.addr), Some(text.offset));
    }

    #[test]
    fn rejects_non_elf() {
        let dir = std::env::temp_dir().join(format!("gcprobe-notelf-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\necho hi\n").unwrap();
        let err = Binary::open(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(err, BinaryError::NotElf { .. }), "{err:?}");
    }

    #[test]
    fn bias_of_pie_mapping() {
        let exe = std::env::current_exe().unwrap();
        let bin = Binary::open(&exe).unwrap();
        let seg = *bin.segments.iter().find(|s| s.executable).unwrap();
        let page = seg.offset & !0xfff;
        let maps = vec![Mapping {
            start: 0x5555_0000_0000 + (seg.vaddr & !0xfff),
            end: 0x5555_0000_0000 + (seg.vaddr & !0xfff) + 0x10_0000_0000,
            offset: page,
            executable: true,
            dev_major: 0,
            dev_minor: 0,
            inode: 1,
            path: String::new(),
        }];
        assert_eq!(bin.load_bias(&maps).unwrap(), 0x5555_0000_0000);
    }
}
