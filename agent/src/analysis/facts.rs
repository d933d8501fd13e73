//! What the target's executable says about the PCs and types a session saw:
//! the static half of a report, apart from the counts.
//!
//! A live session asks the binary ([`BinaryFacts`]); a report from a
//! recording asks the answers the recorder stored as it went
//! (`record::RecordedFacts`). The report is built the same way from either,
//! which is what makes a recording's report equal the live one.
use std::{
    collections::{HashMap, HashSet},
    rc::Rc,
};

use crate::{
    tracee::binary::Binary,
    analysis::appendloop::LoopReport,
    tracee::gotypes::{self, MapTypeInfo, TypeInfo},
    tracee::{
        frame::Frame,
        symbolize::{SymbolSource, Symbolizer},
    },
};

pub trait Facts {
    /// Frames of the call that returns to runtime address `ret_pc`,
    /// innermost (inlined) first.
    fn frames(&mut self, ret_pc: u64) -> Rc<[Frame]>;
    /// The element type of a slice grown with `*_type` at runtime address `addr`.
    fn elem_type(&mut self, addr: u64) -> Option<TypeInfo>;
    /// The loop driving the appends of growslice stack `stack` (return
    /// addresses, the growslice call's first), whose callsite is `callsite_fn`.
    fn append_loop(&mut self, callsite_fn: &str, stack: &[u64]) -> Option<LoopReport>;
    /// The map type at runtime address `addr` (an insert's first argument):
    /// key, value, and where the program deletes from such maps.
    fn map_type(&mut self, addr: u64) -> Option<MapTypeInfo>;
    /// What names frames.
    fn source(&self) -> SymbolSource;
    /// Distinct return addresses asked for that no table could name.
    fn unresolved(&self) -> u64;
}

/// A frame list that is only an address: nothing named it.
pub fn is_unresolved(frames: &[Frame]) -> bool {
    matches!(frames, [f] if f.file.is_none() && f.function.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// Distinct unresolved return addresses, counted the same way by every
/// [`Facts`]: each PC once, however often it is asked for.
#[derive(Default)]
pub struct UnresolvedCount(HashSet<u64>);

impl UnresolvedCount {
    pub fn note(&mut self, pc: u64, frames: &[Frame]) {
        if is_unresolved(frames) {
            self.0.insert(pc);
        }
    }
    pub fn get(&self) -> u64 {
        self.0.len() as u64
    }
}

/// Answers from the executable itself: symbol tables, DWARF, machine code,
/// type descriptors, and the source files when they are on this machine.
pub struct BinaryFacts {
    pub bin: Rc<Binary>,
    pub sym: Symbolizer,
    unresolved: UnresolvedCount,
    loops: HashMap<Box<[u64]>, Option<LoopReport>>,
    /// Deletion sites (link-time call addresses) by map type (link-time),
    /// from one scan of the code, made on first need.
    deletes: Option<HashMap<u64, Vec<u64>>>,
}

impl BinaryFacts {
    /// Answers at link-time addresses, shared by every process of `bin`:
    /// each asks through a [`TargetFacts`] that moves its addresses by its
    /// own load bias.
    pub fn new(bin: Rc<Binary>, pclntab: Option<crate::tracee::pclntab::Pclntab>) -> Result<Self, crate::tracee::symbolize::dwarf::DwarfError> {
        let sym = Symbolizer::new(&bin, pclntab, 0)?;
        Ok(Self { bin, sym, unresolved: UnresolvedCount::default(), loops: HashMap::new(), deletes: None })
    }

    /// One process's view: its runtime addresses are `bias` above these;
    /// what it cannot name is counted in the process's own `unresolved`.
    pub fn for_target<'f>(&'f mut self, bias: u64, unresolved: &'f mut UnresolvedCount) -> TargetFacts<'f> {
        TargetFacts { shared: self, bias, unresolved }
    }

    /// Every call to `runtime.mapdelete*` or `runtime.mapclear` outside the
    /// runtime, by the static map type it passes (Go loads the type
    /// descriptor into the first argument register right before the call).
    fn scan_deletes(&self) -> HashMap<u64, Vec<u64>> {
        let funcs = self.sym.functions();
        let targets: HashSet<u64> = funcs.iter().filter(|(n, _, _)| is_map_delete(n)).map(|&(_, a, _)| a).collect();
        let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
        if targets.is_empty() {
            return out;
        }
        for (name, entry, size) in &funcs {
            if name.starts_with("runtime.") || name.starts_with("internal/runtime/") {
                continue;
            }
            let Some(code) = usize::try_from(*size).ok().and_then(|n| self.bin.bytes_at(*entry, n)) else { continue };
            if !crate::tracee::staticrefs::may_call(self.bin.arch, code, *entry, &targets) {
                continue;
            }
            for (call, t) in crate::tracee::staticrefs::first_args(self.bin.arch, code, *entry, &targets) {
                out.entry(t).or_default().push(call);
            }
        }
        out
    }
}

/// The runtime's deletion entry points: `delete(m, k)` compiles to a call
/// of `runtime.mapdelete` or a key-specialized variant, `clear(m)` to
/// `runtime.mapclear` (cmd/compile/internal/walk), in every Go since 1.19.
fn is_map_delete(name: &str) -> bool {
    name == "runtime.mapclear" || name == "runtime.mapdelete" || name.strip_prefix("runtime.mapdelete_").is_some_and(|v| v.starts_with("fast"))
}

/// Deletion sites named for a report: at most this many.
const DELETE_SITES_SHOWN: usize = 3;

impl Facts for BinaryFacts {
    fn frames(&mut self, ret_pc: u64) -> Rc<[Frame]> {
        let f = self.sym.frames(ret_pc, true);
        self.unresolved.note(ret_pc, &f);
        f
    }

    fn elem_type(&mut self, addr: u64) -> Option<TypeInfo> {
        let types = self.sym.types_base()?;
        gotypes::describe(&self.bin, types, addr.wrapping_sub(self.sym.bias()))
    }

    fn append_loop(&mut self, callsite_fn: &str, stack: &[u64]) -> Option<LoopReport> {
        if let Some(l) = self.loops.get(stack) {
            return l.clone();
        }
        let frames: Vec<Frame> = stack.iter().flat_map(|&pc| self.frames(pc).to_vec()).collect();
        let l = crate::analysis::appendloop::append_loop(&self.bin, &mut self.sym, callsite_fn, &frames, stack);
        self.loops.insert(stack.into(), l.clone());
        l
    }

    fn map_type(&mut self, addr: u64) -> Option<MapTypeInfo> {
        let types = self.sym.types_base()?;
        let t = addr.wrapping_sub(self.sym.bias());
        let (k, v) = gotypes::map_key_value(&self.bin, t)?;
        let (key, value) = (gotypes::describe(&self.bin, types, k)?, gotypes::describe(&self.bin, types, v)?);
        if self.deletes.is_none() {
            self.deletes = Some(self.scan_deletes());
        }
        let sites = self.deletes.as_ref().and_then(|d| d.get(&t)).cloned().unwrap_or_default();
        let deleted_at = sites
            .iter()
            .take(DELETE_SITES_SHOWN)
            .map(|&pc| {
                let f = self.sym.frames_at_vaddr(pc);
                let inner = &f[0];
                format!("{} {}:{}", inner.function, inner.file.as_deref().map(crate::units::short).unwrap_or("?"), inner.line.unwrap_or(0))
            })
            .collect();
        Some(MapTypeInfo { key, value, deleted_at, deletes: sites.len() as u64 })
    }

    fn source(&self) -> SymbolSource {
        self.sym.source()
    }

    fn unresolved(&self) -> u64 {
        self.unresolved.get()
    }
}

/// One process's questions to its binary's shared [`BinaryFacts`]: runtime
/// addresses move by the process's load bias to the link-time ones the
/// shared answers are kept at, so processes of one binary (PIE ones loaded
/// at different addresses included) look each PC, loop and type up once.
/// What it could not name is counted per process.
pub struct TargetFacts<'f> {
    shared: &'f mut BinaryFacts,
    bias: u64,
    unresolved: &'f mut UnresolvedCount,
}

impl TargetFacts<'_> {
    fn link_time(&self, addr: u64) -> u64 {
        addr.wrapping_sub(self.bias)
    }
}

impl Facts for TargetFacts<'_> {
    fn frames(&mut self, ret_pc: u64) -> Rc<[Frame]> {
        let f = self.shared.frames(self.link_time(ret_pc));
        self.unresolved.note(ret_pc, &f);
        f
    }

    fn elem_type(&mut self, addr: u64) -> Option<TypeInfo> {
        self.shared.elem_type(self.link_time(addr))
    }

    fn append_loop(&mut self, callsite_fn: &str, stack: &[u64]) -> Option<LoopReport> {
        let stack: Vec<u64> = stack.iter().map(|&pc| self.link_time(pc)).collect();
        // Frames the loop search names count as this process's too.
        for &pc in &stack {
            let f = self.shared.frames(pc);
            self.unresolved.note(pc.wrapping_add(self.bias), &f);
        }
        self.shared.append_loop(callsite_fn, &stack)
    }

    fn map_type(&mut self, addr: u64) -> Option<MapTypeInfo> {
        self.shared.map_type(self.link_time(addr))
    }

    fn source(&self) -> SymbolSource {
        self.shared.source()
    }

    fn unresolved(&self) -> u64 {
        self.unresolved.get()
    }
}

/// Knows nothing: for tests of what is built around the facts. Counts
/// the addresses it could not name, as every [`Facts`] does.
#[cfg(test)]
#[derive(Default)]
pub struct NoFacts(UnresolvedCount);

#[cfg(test)]
impl Facts for NoFacts {
    fn frames(&mut self, ret_pc: u64) -> Rc<[Frame]> {
        let f: Rc<[Frame]> = vec![Frame { function: format!("{ret_pc:#x}"), file: None, line: None, inlined: false }].into();
        self.0.note(ret_pc, &f);
        f
    }
    fn elem_type(&mut self, _: u64) -> Option<TypeInfo> {
        None
    }
    fn append_loop(&mut self, _: &str, _: &[u64]) -> Option<LoopReport> {
        None
    }
    fn map_type(&mut self, _: u64) -> Option<MapTypeInfo> {
        None
    }
    fn source(&self) -> SymbolSource {
        SymbolSource::Symtab
    }
    fn unresolved(&self) -> u64 {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_addresses_are_unresolved() {
        let f = |name: &str, file: Option<&str>| vec![Frame { function: name.into(), file: file.map(Into::into), line: None, inlined: false }];
        assert!(is_unresolved(&f("0x4a2f10", None)));
        assert!(!is_unresolved(&f("0x", None)));
        assert!(!is_unresolved(&f("main.main", None)));
        assert!(!is_unresolved(&f("0x/pkg.F", None)));
        assert!(!is_unresolved(&f("0x4a2f10", Some("a.go"))));
        let mut c = UnresolvedCount::default();
        c.note(1, &f("0x1", None));
        c.note(1, &f("0x1", None));
        c.note(2, &f("main.f", None));
        assert_eq!(c.get(), 1);
    }
}
