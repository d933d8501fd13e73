//! Where function addresses come from: the ELF symbol table when present,
//! else Go's own `.gopclntab`, which `-ldflags=-s` leaves in place.
use crate::{
    tracee::binary::{Binary, Symbol},
    tracee::pclntab::Pclntab,
};

/// A binary's functions, by name.
pub struct Symbols<'a> {
    pub bin: &'a Binary,
    pub pclntab: Option<&'a Pclntab>,
}

impl Symbols<'_> {
    pub fn lookup(&self, name: &str) -> Option<Symbol> {
        if let Some(s) = self.bin.symbol(name) {
            return Some(s.clone());
        }
        let f = self.pclntab?.function(name).ok()??;
        Some(Symbol { name: f.name, addr: f.entry, size: f.size })
    }

    /// Every function name known to either source.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.bin.symbols().map(|s| s.name.clone()).collect();
        if v.is_empty() {
            if let Some(t) = self.pclntab {
                v.extend(t.functions().filter_map(|f| f.ok()).map(|f| f.name));
            }
        }
        v
    }

    /// Every function (name, link-time entry, size): from the pclntab,
    /// which stripped binaries keep, else from the symbol table.
    pub fn functions(&self) -> Vec<(String, u64, u64)> {
        if let Some(t) = self.pclntab {
            return t.functions().filter_map(|f| f.ok()).map(|f| (f.name, f.entry, f.size)).collect();
        }
        self.bin.symbols().map(|s| (s.name.clone(), s.addr, s.size)).collect()
    }
}
