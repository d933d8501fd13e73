//! Go runtime type descriptors (`internal/abi.Type`, runtime `_type` before
//! 1.21): the element type a slice grows with, named as Go prints it.
//!
//! Layout, identical from Go 1.19 to 1.27: Size_ uintptr @0, PtrBytes @8,
//! Hash u32 @16, TFlag u8 @20, Align_ @21, FieldAlign_ @22, Kind_ @23,
//! Equal @24, GCData @32, Str NameOff (i32) @40. `Str` is an offset from
//! moduledata.types to a name: a flags byte, a uvarint length, the bytes.
use serde::{Deserialize, Serialize};

use crate::tracee::binary::Binary;

/// abi.TFlagExtraStar: the stored name has a '*' prefix to drop.
const TFLAG_EXTRA_STAR: u8 = 1 << 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    pub name: String,
    /// Bytes per element.
    pub size: u64,
}

/// Reads the descriptor at link-time address `addr`; `None` when the bytes
/// there do not look like one (no types base, out of the file, bad name).
pub fn describe(bin: &Binary, types: u64, addr: u64) -> Option<TypeInfo> {
    let t = bin.bytes_at(addr, 48)?;
    let size = u64::from_le_bytes(t[0..8].try_into().ok()?);
    let tflag = t[20];
    let str_off = i32::from_le_bytes(t[40..44].try_into().ok()?);
    let name_at = types.checked_add_signed(i64::from(str_off))?;
    let head = bin.bytes_at(name_at, 1)?;
    let _flags = head[0];
    let (len, varint_len) = uvarint(bin.bytes_at(name_at + 1, 10.min(remaining(bin, name_at + 1)?))?)?;
    let raw = bin.bytes_at(name_at + 1 + varint_len as u64, usize::try_from(len).ok()?)?;
    let mut name = std::str::from_utf8(raw).ok()?;
    if tflag & TFLAG_EXTRA_STAR != 0 {
        name = name.strip_prefix('*').unwrap_or(name);
    }
    if name.is_empty() {
        return None;
    }
    Some(TypeInfo { name: name.to_owned(), size })
}

/// A map type: its key and value types, and where the program deletes from
/// or clears maps of this type (`delete(m, k)`, `clear(m)`), if anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapTypeInfo {
    pub key: TypeInfo,
    pub value: TypeInfo,
    /// "function file:line" of the first few deletion sites.
    pub deleted_at: Vec<String>,
    /// All deletion sites found in the binary's code.
    pub deletes: u64,
}

impl MapTypeInfo {
    pub fn name(&self) -> String {
        format!("map[{}]{}", self.key.name, self.value.name)
    }
}

/// Key and value type descriptors of the map type at link-time `addr`:
/// `Key *Type` at 48 and `Elem *Type` at 56, right after the common
/// `Type` header, in abi.MapType and abi.SwissMapType alike (and go1.19's
/// runtime.maptype).
pub fn map_key_value(bin: &Binary, addr: u64) -> Option<(u64, u64)> {
    Some((bin.read_ptr(addr.checked_add(48)?)?, bin.read_ptr(addr.checked_add(56)?)?))
}

fn remaining(bin: &Binary, vaddr: u64) -> Option<usize> {
    bin.segments.iter().find_map(|s| s.file_bytes_after(vaddr)).and_then(|n| usize::try_from(n).ok())
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_uvarints() {
        assert_eq!(uvarint(&[5]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80 | 44, 1]), Some((172, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }
}
