//! Reader for Go's `.gopclntab`: functions, file:line and inlined frames from
//! the runtime's own tables, so stripped binaries symbolize and probe too.
//!
//! Layouts follow go/src/runtime/symtab.go and symtabinl.go of each release:
//! `pcHeader`, the functab of (entryOff, funcOff) pairs, `_func` records with
//! their pcdata/funcdata offsets, zig-zag pc-value tables, and the inline tree
//! (`FUNCDATA_InlTree`, indexed by `PCDATA_InlTreeIndex`). Supported formats:
//! magic 0xfffffff0 (Go 1.18–1.19) and 0xfffffff1 (Go 1.20+). Every read is
//! bounds-checked: a corrupt table yields an error, never a panic.
mod moduledata;

use std::{collections::HashMap, sync::OnceLock};

use bytes::Bytes;

use crate::{
    tracee::binary::{Arch, Binary},
    tracee::buildinfo::GoVersion,
    tracee::frame::Frame,
};

const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
const HEADER_LEN: usize = 72;
/// runtime: `_PCDATA_InlTreeIndex`, `_FUNCDATA_InlTree`.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// Deepest inline chain followed; Go's inliner stops far earlier.
const MAX_INLINE_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error(".gopclntab magic {magic:#x} is not a Go 1.18+ table")]
    Magic { magic: u32 },
    #[error(".gopclntab header is invalid: {field}")]
    Header { field: &'static str },
    #[error(".gopclntab is truncated reading {what} at offset {offset:#x}")]
    Truncated { what: &'static str, offset: usize },
    #[error("cannot find the text start of this Go module (no moduledata, no header field, no runtime.text)")]
    NoTextStart,
}

type Result<T> = std::result::Result<T, PclntabError>;

/// Table format, from the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Go118,
    Go120,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub entry: u64,
    pub size: u64,
}

pub struct Pclntab {
    /// The table's bytes (from pcHeader to the end of its section or segment),
    /// a zero-copy view of the binary's mapping.
    data: Bytes,
    pub vaddr: u64,
    pub format: Format,
    min_lc: u64,
    nfunc: usize,
    pub text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    /// Inline trees live at `gofunc + funcdata[FUNCDATA_InlTree]`, outside the
    /// table; copied out of the binary on demand.
    gofunc: Option<u64>,
    /// `moduledata.types`, where type descriptors' names live.
    pub types: Option<u64>,
    inl: Option<InlineSource>,
    names: OnceLock<HashMap<String, usize>>,
}

/// The go:func.* region, for reading inline trees.
struct InlineSource {
    base: u64,
    bytes: Bytes,
}

impl std::fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pclntab").field("vaddr", &self.vaddr).field("format", &self.format).field("nfunc", &self.nfunc).finish_non_exhaustive()
    }
}

struct Func {
    entry: u64,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
    /// Offset of the pcdata array (then funcdata).
    tables: usize,
}

impl Pclntab {
    /// Finds and parses the table of `bin`; `Ok(None)` when there is none.
    pub fn parse(bin: &Binary, go: GoVersion) -> Result<Option<Self>> {
        let Some((vaddr, data)) = locate(bin) else { return Ok(None) };
        Self::from_parts(bin, go, vaddr, data).map(Some)
    }

    /// Parses a table already extracted from `bin` (its bytes from the
    /// pcHeader on, and the address they were loaded at).
    pub fn from_table(bin: &Binary, go: GoVersion, vaddr: u64, data: Vec<u8>) -> Result<Self> {
        Self::from_parts(bin, go, vaddr, Bytes::from(data))
    }

    fn from_parts(bin: &Binary, go: GoVersion, vaddr: u64, data: Bytes) -> Result<Self> {
        if data.len() < HEADER_LEN {
            return Err(PclntabError::Truncated { what: "header", offset: 0 });
        }
        let magic = le32(&data, 0).expect("checked length");
        let format = match magic {
            MAGIC_118 => Format::Go118,
            MAGIC_120 => Format::Go120,
            magic => return Err(PclntabError::Magic { magic }),
        };
        if data[4] != 0 || data[5] != 0 {
            return Err(PclntabError::Header { field: "padding" });
        }
        let min_lc = u64::from(data[6]);
        if !matches!(min_lc, 1 | 2 | 4) {
            return Err(PclntabError::Header { field: "minLC" });
        }
        if data[7] != 8 {
            return Err(PclntabError::Header { field: "ptrSize (only 64-bit targets are supported)" });
        }
        let word = |at: usize| le64(&data, at).expect("checked length");
        let nfunc = word(8) as usize;
        let offset = |at: usize, field: &'static str| -> Result<usize> {
            let v = word(at);
            if v == 0 || v >= data.len() as u64 {
                return Err(PclntabError::Header { field });
            }
            Ok(v as usize)
        };
        let header_text = word(24);
        let funcnametab = offset(32, "funcnameOffset")?;
        let cutab = offset(40, "cuOffset")?;
        let filetab = offset(48, "filetabOffset")?;
        let pctab = offset(56, "pctabOffset")?;
        let functab = offset(64, "pclnOffset")?;
        let functab_end = nfunc.checked_add(1).and_then(|n| n.checked_mul(8)).and_then(|n| n.checked_add(functab));
        if nfunc == 0 || functab_end.is_none_or(|end| end > data.len()) {
            return Err(PclntabError::Header { field: "nfunc" });
        }

        let md = moduledata::find(bin, go, vaddr, vaddr.wrapping_add(funcnametab as u64));
        // Go 1.26+ no longer stores textStart in the header (it needed a
        // relocation); moduledata.text is authoritative, and in cgo binaries
        // it is not the start of .text.
        let text_start = md
            .as_ref()
            .map(|m| m.text)
            .filter(|&t| t != 0)
            .or((header_text != 0).then_some(header_text))
            .or_else(|| bin.symbol("runtime.text").map(|s| s.addr))
            .ok_or(PclntabError::NoTextStart)?;
        let gofunc = md.and_then(|m| m.gofunc);
        let types = md.and_then(|m| m.types);
        let mut tab = Self {
            data,
            vaddr,
            format,
            min_lc,
            nfunc,
            text_start,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
            gofunc,
            types,
            inl: None,
            names: OnceLock::new(),
        };
        tab.inl = tab.gofunc.and_then(|base| inline_source(bin, base));
        Ok(tab)
    }

    pub fn has_inline_tree(&self) -> bool {
        self.inl.is_some()
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    fn u32(&self, at: usize, what: &'static str) -> Result<u32> {
        le32(&self.data, at).ok_or(PclntabError::Truncated { what, offset: at })
    }

    fn cstr(&self, at: usize, what: &'static str) -> Result<&str> {
        let tail = self.data.get(at..).ok_or(PclntabError::Truncated { what, offset: at })?;
        let end = tail.iter().position(|&b| b == 0).ok_or(PclntabError::Truncated { what, offset: at })?;
        std::str::from_utf8(&tail[..end]).map_err(|_| PclntabError::Truncated { what, offset: at })
    }

    fn entry_off(&self, i: usize) -> Result<u32> {
        self.u32(self.functab + i * 8, "functab")
    }

    fn func(&self, i: usize) -> Result<Func> {
        let funcoff = self.u32(self.functab + i * 8 + 4, "functab")? as usize;
        let off = self.functab.checked_add(funcoff).ok_or(PclntabError::Truncated { what: "_func", offset: funcoff })?;
        let r = |k: usize| self.u32(off + 4 * k, "_func");
        let (nfuncdata_at, tables) = match self.format {
            Format::Go118 => (off + 39, off + 40),
            Format::Go120 => (off + 43, off + 44),
        };
        let nfuncdata = *self.data.get(nfuncdata_at).ok_or(PclntabError::Truncated { what: "_func", offset: nfuncdata_at })?;
        Ok(Func {
            entry: self.text_start.wrapping_add(u64::from(r(0)?)),
            name_off: r(1)?,
            pcfile: r(5)?,
            pcln: r(6)?,
            npcdata: r(7)?,
            cu_offset: r(8)?,
            nfuncdata,
            tables,
        })
    }

    fn func_name(&self, name_off: u32) -> Result<&str> {
        self.cstr(self.funcnametab + name_off as usize, "function name")
    }

    /// Index of the function containing `vaddr`, if any.
    fn find(&self, vaddr: u64) -> Result<Option<usize>> {
        let rel = match vaddr.checked_sub(self.text_start) {
            Some(r) if r <= u64::from(u32::MAX) => r as u32,
            _ => return Ok(None),
        };
        if rel >= self.entry_off(self.nfunc)? {
            return Ok(None);
        }
        // Largest i with entry_off(i) <= rel.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry_off(mid)? <= rel {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.checked_sub(1))
    }

    /// runtime.pcvalue: the value of the table at `off` for `target`, or None.
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Result<Option<i32>> {
        if off == 0 {
            return Ok(None);
        }
        let mut p = self.pctab + off as usize;
        let mut val: i32 = -1;
        let mut pc = entry;
        let mut first = true;
        loop {
            let uv = self.varint(&mut p)?;
            if uv == 0 && !first {
                return Ok(None);
            }
            first = false;
            let delta = if uv & 1 != 0 { !(uv >> 1) } else { uv >> 1 } as i32;
            val = val.wrapping_add(delta);
            let pcd = self.varint(&mut p)?;
            pc = pc.saturating_add(u64::from(pcd) * self.min_lc);
            if target < pc {
                return Ok(Some(val));
            }
        }
    }

    fn varint(&self, p: &mut usize) -> Result<u32> {
        let mut v: u32 = 0;
        let mut shift = 0;
        loop {
            let b = *self.data.get(*p).ok_or(PclntabError::Truncated { what: "pc-value table", offset: *p })?;
            *p += 1;
            if shift < 32 {
                v |= u32::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 35 {
                return Err(PclntabError::Truncated { what: "varint", offset: *p });
            }
        }
    }

    fn file_line(&self, f: &Func, pc: u64) -> Result<(Option<String>, Option<u32>)> {
        let file = match self.pcvalue(f.pcfile, f.entry, pc)? {
            Some(fileno) if fileno >= 0 => {
                let idx = (f.cu_offset as usize).checked_add(fileno as usize).ok_or(PclntabError::Truncated { what: "cutab", offset: 0 })?;
                let fileoff = self.u32(self.cutab + idx * 4, "cutab")?;
                if fileoff == u32::MAX { None } else { Some(self.cstr(self.filetab + fileoff as usize, "file name")?.to_owned()) }
            }
            _ => None,
        };
        let line = self.pcvalue(f.pcln, f.entry, pc)?.filter(|&l| l > 0).map(|l| l as u32);
        Ok((file, line))
    }

    fn pcdata_off(&self, f: &Func, table: u32) -> Result<Option<u32>> {
        if table >= f.npcdata {
            return Ok(None);
        }
        Ok(Some(self.u32(f.tables + 4 * table as usize, "pcdata")?))
    }

    fn funcdata_off(&self, f: &Func, slot: u32) -> Result<Option<u32>> {
        if slot >= u32::from(f.nfuncdata) {
            return Ok(None);
        }
        let at = f.tables + 4 * (f.npcdata as usize + slot as usize);
        let v = self.u32(at, "funcdata")?;
        Ok((v != u32::MAX).then_some(v))
    }

    /// Frames at a link-time address, innermost (inlined) first; `None`
    /// outside every Go function.
    pub fn frames(&self, vaddr: u64) -> Result<Option<Vec<Frame>>> {
        let Some(i) = self.find(vaddr)? else { return Ok(None) };
        let f = self.func(i)?;
        let tree = match (&self.inl, self.funcdata_off(&f, FUNCDATA_INL_TREE)?) {
            (Some(src), Some(off)) => Some((src, off)),
            _ => None,
        };
        let mut out = Vec::new();
        let mut pc = vaddr;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.file_line(&f, pc)?;
            let ix = match (tree, self.pcdata_off(&f, PCDATA_INL_TREE_INDEX)?) {
                (Some(_), Some(off)) => self.pcvalue(off, f.entry, pc)?.unwrap_or(-1),
                _ => -1,
            };
            if ix < 0 {
                out.push(Frame { function: self.func_name(f.name_off)?.to_owned(), file, line, inlined: false });
                return Ok(Some(out));
            }
            let (src, tree_off) = tree.expect("ix >= 0 only with a tree");
            let call = self.inlined_call(src, tree_off, ix as u32)?;
            out.push(Frame { function: self.func_name(call.name_off)?.to_owned(), file, line, inlined: true });
            pc = f.entry.wrapping_add(u64::from(call.parent_pc));
        }
        Err(PclntabError::Truncated { what: "inline tree (cycle)", offset: tree.map(|t| t.1 as usize).unwrap_or(0) })
    }

    fn inlined_call(&self, src: &InlineSource, tree_off: u32, ix: u32) -> Result<InlinedCall> {
        // Go 1.18–1.19: {parent i16, funcID u8, _ u8, file i32, line i32, func_ i32, parentPc i32}
        // Go 1.20+:     {funcID u8, _ [3]u8, nameOff i32, parentPc i32, startLine i32}
        let (size, name_at, parent_at) = match self.format {
            Format::Go118 => (20, 12, 16),
            Format::Go120 => (16, 4, 8),
        };
        let abs = self.gofunc.unwrap_or(0).wrapping_add(u64::from(tree_off)).wrapping_add(u64::from(ix) * size);
        let at = abs.checked_sub(src.base).map(|a| a as usize).ok_or(PclntabError::Truncated { what: "inline tree", offset: tree_off as usize })?;
        let rd = |k: usize| le32(&src.bytes, at + k).ok_or(PclntabError::Truncated { what: "inline tree", offset: at + k });
        Ok(InlinedCall { name_off: rd(name_at)?, parent_pc: rd(parent_at)? })
    }

    /// Function `i` of the functab; its size runs to the next entry.
    fn function_by_index(&self, i: usize) -> Result<Function> {
        let f = self.func(i)?;
        let next = self.text_start.wrapping_add(u64::from(self.entry_off(i + 1)?));
        Ok(Function { name: self.func_name(f.name_off)?.to_owned(), entry: f.entry, size: next.saturating_sub(f.entry) })
    }

    /// The function containing `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Result<Option<Function>> {
        self.find(vaddr)?.map(|i| self.function_by_index(i)).transpose()
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = Result<Function>> + '_ {
        (0..self.nfunc).map(move |i| self.function_by_index(i))
    }

    /// Looks a function up by its full name (`runtime.mallocgc`).
    pub fn function(&self, name: &str) -> Result<Option<Function>> {
        let names = self.names.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.nfunc);
            for i in 0..self.nfunc {
                if let Ok(f) = self.func(i) {
                    if let Ok(n) = self.func_name(f.name_off) {
                        m.entry(n.to_owned()).or_insert(i);
                    }
                }
            }
            m
        });
        names.get(name).map(|&i| self.function_by_index(i)).transpose()
    }
}

struct InlinedCall {
    name_off: u32,
    parent_pc: u32,
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The table's address and bytes: the `.gopclntab` section, or a header found
/// by scanning read-only segments when section headers are gone.
fn locate(bin: &Binary) -> Option<(u64, Bytes)> {
    if let Some(sec) = bin.section(".gopclntab") {
        return Some((sec.addr, bin.section_bytes(".gopclntab")?));
    }
    let quantum = match bin.arch {
        Arch::X86_64 => 1,
        Arch::Aarch64 => 4,
    };
    for seg in bin.segments.iter().filter(|s| !s.executable && s.filesz as usize >= HEADER_LEN) {
        let bytes = bin.slice_at(seg.vaddr, seg.filesz as usize)?;
        let mut at = 0;
        while at + HEADER_LEN <= bytes.len() {
            let h = &bytes[at..];
            let magic = u32::from_le_bytes(h[..4].try_into().ok()?);
            if matches!(magic, MAGIC_118 | MAGIC_120) && h[4] == 0 && h[5] == 0 && h[6] == quantum && h[7] == 8 {
                return Some((seg.vaddr.wrapping_add(at as u64), bytes.slice(at..)));
            }
            at += 8;
        }
    }
    None
}

/// Copies the go:func.* region (inline trees and other funcdata) out of the
/// segment that holds it.
fn inline_source(bin: &Binary, base: u64) -> Option<InlineSource> {
    let len = bin.segments.iter().find_map(|s| s.file_bytes_after(base))?;
    Some(InlineSource { base, bytes: bin.slice_at(base, usize::try_from(len).ok()?)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(data: Vec<u8>, format: Format) -> Pclntab {
        Pclntab {
            data: data.into(),
            vaddr: 0,
            format,
            min_lc: 1,
            nfunc: 0,
            text_start: 0x1000,
            funcnametab: 0,
            cutab: 0,
            filetab: 0,
            pctab: 0,
            functab: 0,
            gofunc: None,
            types: None,
            inl: None,
            names: OnceLock::new(),
        }
    }

    #[test]
    fn decodes_pc_value_tables() {
        // Values 10 over [entry, entry+4), then 12 over [entry+4, entry+10), end.
        // First delta: 10 - (-1) = 11 -> zigzag 22; pc delta 4.
        // Second: +2 -> 4; pc delta 6. Terminator 0.
        let t = tab(vec![0, 22, 4, 4, 6, 0], Format::Go120);
        assert_eq!(t.pcvalue(1, 0x1000, 0x1000).unwrap(), Some(10));
        assert_eq!(t.pcvalue(1, 0x1000, 0x1003).unwrap(), Some(10));
        assert_eq!(t.pcvalue(1, 0x1000, 0x1004).unwrap(), Some(12));
        assert_eq!(t.pcvalue(1, 0x1000, 0x1009).unwrap(), Some(12));
        assert_eq!(t.pcvalue(1, 0x1000, 0x100a).unwrap(), None);
        assert_eq!(t.pcvalue(0, 0x1000, 0x1000).unwrap(), None);
        // Truncated tables are errors.
        assert!(tab(vec![0, 22], Format::Go120).pcvalue(1, 0x1000, 0x2000).is_err());
        assert!(tab(vec![0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], Format::Go120).pcvalue(1, 0, 5).is_err());
    }

    #[test]
    fn rejects_bad_headers() {
        let mut h = vec![0u8; 128];
        h[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        let exe = std::env::current_exe().unwrap();
        let bin = Binary::open(&exe).unwrap();
        let go = GoVersion::new(1, 24, 0);
        let from = |h: &[u8]| Pclntab::from_table(&bin, go, 0, h.to_vec());
        assert_eq!(from(&h).unwrap_err(), PclntabError::Magic { magic: 0xffff_fffb });
        h[..4].copy_from_slice(&MAGIC_120.to_le_bytes());
        h[6] = 1;
        h[7] = 4;
        assert!(matches!(from(&h).unwrap_err(), PclntabError::Header { .. }));
        h[7] = 8;
        assert!(matches!(from(&h).unwrap_err(), PclntabError::Header { .. }));
        assert!(matches!(from(&h[..10]).unwrap_err(), PclntabError::Truncated { .. }));
    }
}
