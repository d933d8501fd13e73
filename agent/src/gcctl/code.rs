//! `&runtime.gcController` from machine code, for binaries without a symbol
//! table.
//!
//! The runtime calls the controller's methods on the global itself
//! (`gcController.update(...)` in runtime/mcache.go, `.commit` in
//! gcControllerCommit, `.startCycle` in gcStart, ...). A pointer receiver is
//! the first register argument, so each such call is preceded by the
//! variable's address loaded into it: `LEAQ runtime.gcController(SB), AX` on
//! amd64, `ADRP`+`ADD` into R0 on arm64. `.gopclntab` names the methods, so
//! the calls are known; the address every call agrees on is the variable's
//! (see [`crate::callargs`]).
use std::collections::{BTreeMap, HashSet};

use crate::{callargs, plan::Symbols};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FindError {
    #[error("no runtime.(*gcControllerState) method is named in the binary")]
    NoMethods,
    #[error("no call passes runtime.gcController's address to its methods")]
    NoCalls,
    #[error("calls to runtime.(*gcControllerState) methods disagree on the receiver ({0} addresses)")]
    Ambiguous(usize),
}

/// Callers that pass `&gcController` to its methods in every supported
/// runtime (mcache refill and release, GC start and end, the setters).
const CALLERS: [&str; 8] = [
    "runtime.gcControllerCommit",
    "runtime.gcinit",
    "runtime.gcStart",
    "runtime.gcMarkDone",
    "runtime.gcMarkTermination",
    "runtime.(*mcache).refill",
    "runtime.(*mcache).releaseAll",
    "runtime.(*mcache).allocLarge",
];

/// The address and how many calls agreed on it; at least two must, and none may disagree.
pub fn find_controller(syms: &Symbols<'_>) -> Result<(u64, u32), FindError> {
    let methods: HashSet<u64> = syms
        .names()
        .into_iter()
        .filter(|n| n.starts_with("runtime.(*gcControllerState)."))
        .filter_map(|n| syms.lookup(&n).map(|s| s.addr))
        .collect();
    if methods.is_empty() {
        return Err(FindError::NoMethods);
    }
    let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
    for caller in CALLERS {
        let Some(f) = syms.lookup(caller) else { continue };
        let Some(code) = syms.bin.bytes_at(f.addr, f.size as usize) else { continue };
        for (_, r) in callargs::first_args(syms.bin.arch, code, f.addr, &methods) {
            *votes.entry(r).or_default() += 1;
        }
    }
    match votes.len() {
        0 => Err(FindError::NoCalls),
        1 => {
            let (&addr, &n) = votes.iter().next().expect("one entry");
            if n >= 2 { Ok((addr, n)) } else { Err(FindError::NoCalls) }
        }
        n => Err(FindError::Ambiguous(n)),
    }
}
