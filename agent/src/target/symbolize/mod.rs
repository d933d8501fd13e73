//! Runtime PCs to source frames, inlined frames included.
//!
//! One folder per format: `dwarf` today, `.gopclntab` for stripped binaries next.
//! A PC that no format knows is not an error: it becomes a frame named by its
//! address, and the report says how many there were.
pub mod dwarf;

use std::{collections::HashMap, rc::Rc};

use crate::{target::binary::Binary, target::pclntab::Pclntab};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Inlined into the frame after it in the same physical call.
    pub inlined: bool,
}

impl Frame {
    /// Runtime-internal frames are skipped when naming the user's callsite.
    /// That includes runtime code linknamed into other packages, such as
    /// `internal/bytealg.MakeNoZero` (GOROOT/src/runtime/slice.go) or
    /// `reflect.unsafe_New` (GOROOT/src/runtime/malloc.go).
    pub fn is_runtime(&self) -> bool {
        if self.function.starts_with("runtime.") || self.function.starts_with("internal/runtime/") {
            return true;
        }
        let in_runtime_dir = self
            .file
            .as_deref()
            .and_then(|f| f.rsplit_once('/'))
            .is_some_and(|(dir, _)| dir.ends_with("/src/runtime"));
        in_runtime_dir
    }
}

/// ELF symbol table as a sorted interval list: the fallback for function names.
struct SymTab(Vec<(u64, u64, String)>);

impl SymTab {
    fn new(bin: &Binary) -> Self {
        let mut v: Vec<_> = bin.symbols().filter(|s| s.size > 0).map(|s| (s.addr, s.size, s.name.clone())).collect();
        v.sort_unstable();
        Self(v)
    }
    /// The symbol (start, size, name) covering `vaddr`.
    fn find(&self, vaddr: u64) -> Option<&(u64, u64, String)> {
        let i = self.0.partition_point(|(a, _, _)| *a <= vaddr).checked_sub(1)?;
        let sym = &self.0[i];
        (vaddr < sym.0 + sym.1).then_some(sym)
    }

    fn lookup(&self, vaddr: u64) -> Option<&str> {
        self.find(vaddr).map(|(_, _, n)| n.as_str())
    }
}

pub struct Symbolizer {
    dwarf: Option<dwarf::Dwarf>,
    pclntab: Option<Pclntab>,
    symtab: SymTab,
    bias: u64,
    cache: HashMap<u64, Rc<[Frame]>>,
    pub unresolved: u64,
    pub dwarf_errors: u64,
    pub pclntab_errors: u64,
}

impl Symbolizer {
    /// `bias` is the load bias: runtime address minus link-time address.
    /// DWARF is preferred where present; the pclntab covers stripped binaries.
    pub fn new(bin: &Binary, pclntab: Option<Pclntab>, bias: u64) -> Result<Self, dwarf::DwarfError> {
        let dwarf = if bin.has_dwarf { Some(dwarf::Dwarf::open(&bin.path)?) } else { None };
        Ok(Self { dwarf, pclntab, symtab: SymTab::new(bin), bias, cache: HashMap::new(), unresolved: 0, dwarf_errors: 0, pclntab_errors: 0 })
    }

    /// Which source names frames: "dwarf", "gopclntab" or "symtab".
    pub fn source(&self) -> &'static str {
        match (&self.dwarf, &self.pclntab) {
            (Some(_), _) => "dwarf",
            (None, Some(_)) => "gopclntab",
            _ => "symtab",
        }
    }

    /// Entry and size of the function holding link-time address `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<(u64, u64)> {
        if let Some(f) = self.pclntab.as_ref().and_then(|t| t.function_at(vaddr).ok().flatten()) {
            return Some((f.entry, f.size));
        }
        self.symtab.find(vaddr).map(|&(a, s, _)| (a, s))
    }

    pub fn bias(&self) -> u64 {
        self.bias
    }

    /// Every function (name, link-time entry, size): from the pclntab,
    /// which stripped binaries keep, else from the symbol table.
    pub fn functions(&self) -> Vec<(String, u64, u64)> {
        if let Some(t) = &self.pclntab {
            return t.functions().filter_map(|f| f.ok()).map(|f| (f.name, f.entry, f.size)).collect();
        }
        self.symtab.0.iter().map(|(a, s, n)| (n.clone(), *a, *s)).collect()
    }

    /// `moduledata.types`, for naming type descriptors.
    pub fn types_base(&self) -> Option<u64> {
        self.pclntab.as_ref()?.types
    }

    /// Frames at a link-time address (no bias applied).
    pub fn frames_at_vaddr(&mut self, vaddr: u64) -> Rc<[Frame]> {
        self.frames(vaddr.wrapping_add(self.bias), false)
    }

    /// Frames for one runtime PC, innermost (inlined) first. Return addresses
    /// point after the CALL, so they are looked up one byte earlier to land on
    /// the call's own line; `frames[0]` of an event is a function entry and is not.
    pub fn frames(&mut self, runtime_pc: u64, is_return_address: bool) -> Rc<[Frame]> {
        let key = runtime_pc << 1 | u64::from(is_return_address);
        if let Some(f) = self.cache.get(&key) {
            return f.clone();
        }
        let vaddr = runtime_pc.wrapping_sub(self.bias).wrapping_sub(u64::from(is_return_address));
        let frames: Rc<[Frame]> = self.lookup(vaddr).into();
        self.cache.insert(key, frames.clone());
        frames
    }

    fn lookup(&mut self, vaddr: u64) -> Vec<Frame> {
        let mut partial = None;
        if let Some(d) = &self.dwarf {
            match d.frames(vaddr) {
                Ok(Some(frames)) if frames[0].line.is_some() => return frames,
                // Go's linker starts some line programs past the entry (seen on
                // <autogenerated> wrappers): DWARF names the function but has
                // no row there, while the pclntab does.
                Ok(Some(frames)) => partial = Some(frames),
                Ok(None) => {}
                Err(_) => self.dwarf_errors += 1,
            }
        }
        if let Some(t) = &self.pclntab {
            match t.frames(vaddr) {
                Ok(Some(frames)) => return frames,
                Ok(None) => {}
                Err(_) => self.pclntab_errors += 1,
            }
        }
        if let Some(frames) = partial {
            return frames;
        }
        match self.symtab.lookup(vaddr) {
            Some(name) => vec![Frame { function: name.to_owned(), file: None, line: None, inlined: false }],
            None => {
                self.unresolved += 1;
                vec![Frame { function: format!("{vaddr:#x}"), file: None, line: None, inlined: false }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_frames_are_recognised() {
        let f = |n: &str| Frame { function: n.into(), file: None, line: None, inlined: false };
        assert!(f("runtime.growslice").is_runtime());
        assert!(f("internal/runtime/maps.(*Map).Put").is_runtime());
        assert!(!f("runtime/pprof.StartCPUProfile").is_runtime());
        assert!(!f("main.main").is_runtime());
        let linknamed = Frame { function: "internal/bytealg.MakeNoZero".into(), file: Some("/usr/lib/go/src/runtime/slice.go".into()), line: Some(400), inlined: false };
        assert!(linknamed.is_runtime());
        let reflect = Frame { function: "reflect.unsafe_New".into(), file: Some("/go/src/runtime/malloc.go".into()), line: Some(2162), inlined: false };
        assert!(reflect.is_runtime());
        let user = Frame { function: "reflect.Value.Interface".into(), file: Some("/go/src/reflect/value.go".into()), line: Some(1), inlined: false };
        assert!(!user.is_runtime());
        let pprof = Frame { function: "runtime/pprof.writeHeap".into(), file: Some("/usr/lib/go/src/runtime/pprof/pprof.go".into()), line: Some(1), inlined: false };
        assert!(!pprof.is_runtime());
    }

    #[test]
    fn symbolizes_own_functions() {
        // The test binary itself carries DWARF and a symbol table.
        let exe = std::env::current_exe().unwrap();
        let bin = Binary::open(&exe).unwrap();
        let mut s = Symbolizer::new(&bin, None, 0).unwrap();
        let sym = bin.symbols().find(|s| s.name.contains("symbolizes_own_functions") && s.size > 0).expect("own symbol");
        let frames = s.frames(sym.addr, false);
        assert!(frames.last().unwrap().function.contains("symbolizes_own_functions"), "{frames:?}");
        let unknown = s.frames(0xffff_ffff_0000_0000, false);
        assert!(unknown[0].function.starts_with("0x"), "{unknown:?}");
        assert_eq!(s.unresolved, 1);
    }
}
