//! Finding the runtime's `firstmoduledata` in the file, for `text` and
//! `gofunc` (go/src/runtime/symtab.go `type moduledata`).
//!
//! Go 1.26+ gives it a section, `.go.module`. Before that it sits in
//! .noptrdata and is found by its first field, a pointer to the pcHeader. In a
//! PIE that pointer is written by a RELATIVE relocation, so the file bytes are
//! not enough: `Binary::read_ptr` applies the addend.
use crate::{tracee::binary::Binary, tracee::buildinfo::GoVersion};

/// `moduledata.text`: 22 words in, the same from Go 1.16 through 1.27.
const TEXT: u64 = 22 * 8;

/// `moduledata.gofunc`: moved by fields added before it.
fn gofunc_offset(go: GoVersion) -> u64 {
    if go < GoVersion::new(1, 20, 0) {
        304 // end, gcdata, gcbss, types, etypes, rodata, gofunc
    } else if go < GoVersion::new(1, 27, 0) {
        320 // + covctrs, ecovctrs (1.20)
    } else {
        344 // + typedesclen, itaboffset, itabsize (1.27)
    }
}

/// `moduledata.types`: base of type descriptors and their names.
fn types_offset(go: GoVersion) -> u64 {
    if go < GoVersion::new(1, 20, 0) { 280 } else { 296 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moduledata {
    pub vaddr: u64,
    pub text: u64,
    pub gofunc: Option<u64>,
    pub types: Option<u64>,
}

pub fn find(bin: &Binary, go: GoVersion, pclntab: u64, funcnametab: u64) -> Option<Moduledata> {
    let valid = |md: u64| bin.read_ptr(md) == Some(pclntab) && bin.read_ptr(md.wrapping_add(8)) == Some(funcnametab);
    let candidate = bin
        .section(".go.module")
        .map(|s| s.addr)
        .filter(|&a| valid(a))
        .or_else(|| bin.relocated_pointers_to(pclntab).find(|&a| valid(a)))
        .or_else(|| scan(bin, pclntab).find(|&a| valid(a)))?;
    let text = bin.read_ptr(candidate.wrapping_add(TEXT))?;
    let gofunc = bin.read_ptr(candidate.wrapping_add(gofunc_offset(go))).filter(|&g| bin.bytes_at(g, 1).is_some());
    let types = bin.read_ptr(candidate.wrapping_add(types_offset(go))).filter(|&t| bin.bytes_at(t, 1).is_some());
    Some(Moduledata { vaddr: candidate, text, gofunc, types })
}

/// Aligned words equal to `target` in the writable, file-backed segments.
fn scan(bin: &Binary, target: u64) -> impl Iterator<Item = u64> + '_ {
    let needle = target.to_le_bytes();
    bin.segments.iter().filter(|s| !s.executable && s.filesz >= 8).flat_map(move |s| {
        let bytes = bin.bytes_at(s.vaddr, s.filesz as usize).unwrap_or(&[]);
        bytes
            .chunks_exact(8)
            .enumerate()
            .filter(move |(_, w)| *w == needle)
            .map(move |(i, _)| s.vaddr.wrapping_add(8 * i as u64))
            .collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gofunc_moves_with_the_version() {
        assert_eq!(gofunc_offset(GoVersion::new(1, 19, 8)), 304);
        assert_eq!(gofunc_offset(GoVersion::new(1, 21, 0)), 320);
        assert_eq!(gofunc_offset(GoVersion::new(1, 26, 6)), 320);
        assert_eq!(gofunc_offset(GoVersion::new(1, 27, 3)), 344);
    }
}
