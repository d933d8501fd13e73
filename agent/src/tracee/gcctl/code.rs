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
//! (see [`crate::tracee::staticrefs`]).
use std::collections::{BTreeMap, HashSet};

use crate::{tracee::symbols::Symbols, tracee::staticrefs};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FindError {
    #[error("no {ty} method is named in the binary")]
    NoMethods { ty: &'static str },
    #[error("no call passes a static address to {ty} methods")]
    NoCalls { ty: &'static str },
    #[error("calls to {ty} methods disagree on the receiver ({n} addresses)")]
    Ambiguous { ty: &'static str, n: usize },
}

/// A package variable whose methods the runtime calls on the variable
/// itself, and functions that do so in every supported runtime.
struct Receiver {
    /// The method-name prefix, e.g. `runtime.(*gcControllerState).`.
    methods: &'static str,
    callers: &'static [&'static str],
}

/// `runtime.gcController`: mcache refill and release, GC start and end, the setters.
const GC_CONTROLLER: Receiver = Receiver {
    methods: "runtime.(*gcControllerState).",
    callers: &[
        "runtime.gcControllerCommit",
        "runtime.gcinit",
        "runtime.gcStart",
        "runtime.gcMarkDone",
        "runtime.gcMarkTermination",
        "runtime.(*mcache).refill",
        "runtime.(*mcache).releaseAll",
        "runtime.(*mcache).allocLarge",
    ],
};

/// `runtime.work.cpuStats` (Go 1.20+, runtime/mstats.go): gcStart and
/// gcMarkTermination call `work.cpuStats.accumulate` and, from 1.22,
/// `accumulateGCPauseTime` on it.
const CPU_STATS: Receiver = Receiver { methods: "runtime.(*cpuStats).", callers: &["runtime.gcStart", "runtime.gcMarkDone", "runtime.gcMarkTermination"] };

/// `&runtime.gcController` and how many calls agreed on it.
pub fn find_controller(syms: &Symbols<'_>) -> Result<(u64, u32), FindError> {
    find_receiver(syms, &GC_CONTROLLER, 2)
}

/// `&runtime.work.cpuStats` and how many calls agreed on it: one suffices
/// where gcMarkTermination makes the only call (Go 1.21).
pub fn find_cpu_stats(syms: &Symbols<'_>) -> Result<(u64, u32), FindError> {
    find_receiver(syms, &CPU_STATS, 1)
}

/// The address at least `min_calls` calls agree on; none may disagree.
fn find_receiver(syms: &Symbols<'_>, r: &Receiver, min_calls: u32) -> Result<(u64, u32), FindError> {
    let ty = r.methods.trim_end_matches('.');
    let methods: HashSet<u64> = syms
        .names()
        .into_iter()
        .filter(|n| n.starts_with(r.methods))
        .filter_map(|n| syms.lookup(&n).map(|s| s.addr))
        .collect();
    if methods.is_empty() {
        return Err(FindError::NoMethods { ty });
    }
    let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
    for caller in r.callers {
        let Some(f) = syms.lookup(caller) else { continue };
        let Some(code) = syms.bin.bytes_at(f.addr, f.size as usize) else { continue };
        for (_, a) in staticrefs::first_args(syms.bin.arch, code, f.addr, &methods) {
            *votes.entry(a).or_default() += 1;
        }
    }
    match votes.len() {
        0 => Err(FindError::NoCalls { ty }),
        1 => {
            let (&addr, &n) = votes.iter().next().expect("one entry");
            if n >= min_calls { Ok((addr, n)) } else { Err(FindError::NoCalls { ty }) }
        }
        n => Err(FindError::Ambiguous { ty, n }),
    }
}
