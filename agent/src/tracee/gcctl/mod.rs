//! The runtime's GC controller, `runtime.gcController` (runtime/mgcpacer.go,
//! `gcControllerState`): the live heap, the GOGC heap goal, GOGC and the
//! memory limit as the program set them, and the runtime's own allocation
//! total (`totalAlloc`, what `MemStats.TotalAlloc` reports).
//!
//! Finding it: the symbol table names the variable; a stripped binary keeps
//! only `.gopclntab`, which names functions, not variables, so the address is
//! read from the machine code that passes `&gcController` to the controller's
//! own methods (see [`code`]). Its layout comes from the binary's DWARF, or
//! else from a per-version table that the tests hold against DWARF.
mod code;

use std::collections::HashMap;

pub use code::{find_controller, find_cpu_stats, FindError};

use serde::{Deserialize, Serialize};

use crate::{tracee::binary::Binary, tracee::buildinfo::GoVersion, tracee::symbols::Symbols};

/// Where a figure read from the controller would have come from, or why it
/// is not available: the report prints the reason, never a guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Located {
    Found(GcController),
    Unavailable { reason: String },
}

impl Located {
    pub fn found(&self) -> Option<&GcController> {
        match self {
            Located::Found(c) => Some(c),
            Located::Unavailable { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Located::Found(_) => None,
            Located::Unavailable { reason } => Some(reason),
        }
    }
}

/// How the controller's address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressSource {
    /// The ELF symbol table's `runtime.gcController`.
    Symbol,
    /// `&gcController` passed to its methods, agreed on by this many calls.
    MachineCode { calls: u32 },
}

/// How the field offsets were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutSource {
    Dwarf,
    /// The table below, for this Go version.
    Table,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcController {
    /// Link-time address of `runtime.gcController`.
    pub addr: u64,
    pub address_from: AddressSource,
    pub layout: Layout,
    pub layout_from: LayoutSource,
    /// Link-time address of `runtime.work.cpuStats`, the runtime's
    /// cumulative GC CPU counters, or why there is none.
    #[serde(default = "cpu_stats_unrecorded")]
    pub cpu_stats: Result<u64, String>,
}

fn cpu_stats_unrecorded() -> Result<u64, String> {
    Err("not in this recording (made by an older gcprobe)".into())
}

/// `cpuStats` (runtime/mstats.go, Go 1.20 on): eleven int64 counters, the
/// same order in every release through 1.27 (renamed with capitals in
/// 1.25): gcIdleTime at 16, gcTotalTime at 32, totalTime at 80.
const CPU_STATS_GC_IDLE: u64 = 16;
const CPU_STATS_GC_TOTAL: u64 = 32;
const CPU_STATS_TOTAL: u64 = 80;

/// Where the runtime's cumulative GC CPU counters are, for `go`.
fn locate_cpu_stats(syms: &Symbols<'_>, go: GoVersion) -> Result<u64, String> {
    if go < GoVersion::new(1, 21, 0) {
        return Err(format!("{go} keeps no cumulative GC CPU counters gcprobe has checked (runtime.work.cpuStats, Go 1.21+)"));
    }
    let (addr, _) = code::find_cpu_stats(syms).map_err(|e| e.to_string())?;
    if in_data(syms.bin, addr) { Ok(addr) } else { Err(format!("runtime.work.cpuStats at {addr:#x} is not in a data section")) }
}

/// Offsets of the fields gcprobe reads, in bytes from the variable's start.
/// All are 8 bytes wide except `gc_percent` (an `atomic.Int32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub gc_percent: u64,
    pub memory_limit: u64,
    pub heap_minimum: u64,
    pub gc_percent_heap_goal: u64,
    pub heap_live: u64,
    pub heap_marked: u64,
    pub total_alloc: u64,
}

/// Go field names, in [`Layout`] order.
const FIELDS: [&str; 7] = ["gcPercent", "memoryLimit", "heapMinimum", "gcPercentHeapGoal", "heapLive", "heapMarked", "totalAlloc"];

impl Layout {
    fn from_offsets(o: [u64; 7]) -> Self {
        let [gc_percent, memory_limit, heap_minimum, gc_percent_heap_goal, heap_live, heap_marked, total_alloc] = o;
        Self { gc_percent, memory_limit, heap_minimum, gc_percent_heap_goal, heap_live, heap_marked, total_alloc }
    }

    /// The layouts checked against each toolchain's DWARF (tests/tests/gc_figures.rs):
    /// go1.19's `consMarkController` was replaced by `lastConsMark [4]float64`
    /// later; 1.21 through 1.27 share one layout. Go 1.20 is not in the test
    /// matrix, so it gets no table: a stripped go1.20 binary reports the
    /// controller's figures as unavailable rather than read at a guess.
    pub fn for_version(go: GoVersion) -> Option<Self> {
        if go.major != 1 {
            return None;
        }
        match go.minor {
            19 => Some(Self::from_offsets([0, 8, 16, 104, 136, 184, 328])),
            21..=27 => Some(Self::from_offsets([0, 8, 16, 72, 104, 152, 296])),
            _ => None,
        }
    }

    /// From the binary's DWARF; `Ok(None)` when it has no such type or lacks a field.
    pub fn from_dwarf(bin: &Binary) -> Result<Option<Self>, gimli::Error> {
        let Some(members) = crate::tracee::symbolize::dwarf::member_offsets(bin.data(), "runtime.gcControllerState")? else { return Ok(None) };
        Ok(Self::from_members(&members))
    }

    fn from_members(members: &HashMap<String, u64>) -> Option<Self> {
        let mut o = [0; 7];
        for (slot, name) in o.iter_mut().zip(FIELDS) {
            *slot = *members.get(name)?;
        }
        Some(Self::from_offsets(o))
    }
}

/// Finds `runtime.gcController` and its layout in `syms.bin`.
pub fn locate(syms: &Symbols<'_>, go: GoVersion) -> Located {
    let bin = syms.bin;
    let dwarf = if bin.has_dwarf { Layout::from_dwarf(bin).ok().flatten() } else { None };
    let (layout, layout_from) = match (dwarf, Layout::for_version(go)) {
        (Some(l), _) => (l, LayoutSource::Dwarf),
        (None, Some(l)) => (l, LayoutSource::Table),
        (None, None) => {
            return Located::Unavailable { reason: format!("no DWARF, and gcprobe has no checked gcControllerState layout for {go}") };
        }
    };
    let (addr, address_from) = match bin.symbol("runtime.gcController") {
        Some(s) => (s.addr, AddressSource::Symbol),
        None => match code::find_controller(syms) {
            Ok((addr, calls)) => (addr, AddressSource::MachineCode { calls }),
            Err(e) => return Located::Unavailable { reason: e.to_string() },
        },
    };
    if !in_data(bin, addr) {
        return Located::Unavailable { reason: format!("runtime.gcController at {addr:#x} is not in a data section") };
    }
    Located::Found(GcController { addr, address_from, layout, layout_from, cpu_stats: locate_cpu_stats(syms, go) })
}

/// Go puts package variables in .noptrbss/.bss/.noptrdata/.data.
fn in_data(bin: &Binary, addr: u64) -> bool {
    bin.sections
        .iter()
        .filter(|s| matches!(s.name.as_str(), ".noptrbss" | ".bss" | ".noptrdata" | ".data"))
        .any(|s| s.holds(addr))
}

/// `defaultHeapMinimum` (runtime/mgcpacer.go): 4 MiB, or 512 KiB under
/// GOEXPERIMENT=heapminimum512kib.
const HEAP_MINIMUMS: [u64; 2] = [4 << 20, 512 << 10];

/// The controller's settings and totals as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// GOGC as the runtime holds it; -1 is off.
    pub gc_percent: i32,
    /// GOMEMLIMIT in bytes; `i64::MAX` is no limit.
    pub memory_limit: i64,
    pub heap_minimum: u64,
    /// `totalAlloc`: bytes allocated since the program started.
    pub total_alloc: u64,
    /// The runtime's cumulative GC CPU counters, where found.
    pub cpu: Option<GcCpu>,
}

/// From `work.cpuStats`, updated at each cycle's end: CPU time GC used
/// apart from idle-priority marking (`gcTotalTime - gcIdleTime`, what
/// `MemStats.GCCPUFraction` divides), and `totalTime` (GOMAXPROCS × wall time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcCpu {
    pub gc_ns: u64,
    pub total_ns: u64,
}

/// What a read of the controller says about the layout and address used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The fields hold what the runtime's own code puts there.
    Consistent,
    /// All zero: the runtime has not run `gcinit` yet (a program started
    /// held at its first instruction).
    NotYetInitialized,
    /// The fields disagree with each other: the address or the layout is wrong.
    Inconsistent,
}

impl Settings {
    /// `setGCPercent` sets `heapMinimum = defaultHeapMinimum * uint64(in) / 100`
    /// (runtime/mgcpacer.go), and the memory limit is never negative: a
    /// check that a wrong address or layout fails almost surely.
    pub fn check(&self) -> Check {
        if self.gc_percent == 0 && self.memory_limit == 0 && self.heap_minimum == 0 && self.total_alloc == 0 {
            return Check::NotYetInitialized;
        }
        let p = self.gc_percent as i64 as u64;
        let minimum_fits = HEAP_MINIMUMS.iter().any(|m| m.wrapping_mul(p) / 100 == self.heap_minimum);
        if self.gc_percent >= -1 && self.memory_limit >= 0 && minimum_fits {
            Check::Consistent
        } else {
            Check::Inconsistent
        }
    }

    pub fn gc_off(&self) -> bool {
        self.gc_percent < 0
    }

    pub fn limit(&self) -> Option<u64> {
        (self.memory_limit != i64::MAX).then_some(self.memory_limit as u64)
    }
}

impl GcController {
    /// Runtime addresses the kernel reads at each pause: the live heap and
    /// the GOGC goal.
    pub fn heap_live_addr(&self, bias: u64) -> u64 {
        self.addr.wrapping_add(bias).wrapping_add(self.layout.heap_live)
    }

    pub fn heap_goal_addr(&self, bias: u64) -> u64 {
        self.addr.wrapping_add(bias).wrapping_add(self.layout.gc_percent_heap_goal)
    }

    /// Reads the settings through `read_u64` (runtime addresses).
    pub fn settings(&self, bias: u64, mut read_u64: impl FnMut(u64) -> Option<u64>) -> Option<Settings> {
        let base = self.addr.wrapping_add(bias);
        let l = &self.layout;
        Some(Settings {
            gc_percent: read_u64(base + l.gc_percent)? as u32 as i32,
            memory_limit: read_u64(base + l.memory_limit)? as i64,
            heap_minimum: read_u64(base + l.heap_minimum)?,
            total_alloc: read_u64(base + l.total_alloc)?,
            cpu: self.cpu_stats.as_ref().ok().and_then(|&at| {
                let at = at.wrapping_add(bias);
                let (total, idle) = (read_u64(at + CPU_STATS_GC_TOTAL)?, read_u64(at + CPU_STATS_GC_IDLE)?);
                Some(GcCpu { gc_ns: total.saturating_sub(idle), total_ns: read_u64(at + CPU_STATS_TOTAL)? })
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gc_percent: i32, memory_limit: i64, heap_minimum: u64) -> Settings {
        Settings { gc_percent, memory_limit, heap_minimum, total_alloc: 1, cpu: None }
    }

    #[test]
    fn settings_check_follows_set_gc_percent() {
        assert_eq!(s(100, i64::MAX, 4 << 20).check(), Check::Consistent);
        assert_eq!(s(50, 1 << 30, 2 << 20).check(), Check::Consistent);
        assert_eq!(s(400, i64::MAX, 16 << 20).check(), Check::Consistent);
        assert_eq!(s(100, i64::MAX, 512 << 10).check(), Check::Consistent);
        // GOGC=off: uint64(-1) wraps in the runtime's multiplication too.
        assert_eq!(s(-1, i64::MAX, (4u64 << 20).wrapping_mul(u64::MAX) / 100).check(), Check::Consistent);
        assert_eq!(s(100, i64::MAX, 4 << 21).check(), Check::Inconsistent);
        assert_eq!(s(100, -5, 4 << 20).check(), Check::Inconsistent);
        assert_eq!(s(-7, i64::MAX, 0).check(), Check::Inconsistent);
        assert_eq!(Settings { gc_percent: 0, memory_limit: 0, heap_minimum: 0, total_alloc: 0, cpu: None }.check(), Check::NotYetInitialized);
        assert_eq!(s(100, i64::MAX, 4 << 20).limit(), None);
        assert_eq!(s(100, 1 << 30, 4 << 20).limit(), Some(1 << 30));
    }

    #[test]
    fn layouts_by_version() {
        assert_eq!(Layout::for_version(GoVersion::new(1, 19, 8)).map(|l| l.heap_live), Some(136));
        assert_eq!(Layout::for_version(GoVersion::new(1, 27, 3)).map(|l| l.total_alloc), Some(296));
        assert_eq!(Layout::for_version(GoVersion::new(1, 20, 14)), None);
        assert_eq!(Layout::for_version(GoVersion::new(1, 28, 0)), None);
        let m: HashMap<String, u64> = FIELDS.iter().enumerate().map(|(i, f)| (f.to_string(), i as u64 * 8)).collect();
        assert_eq!(Layout::from_members(&m).map(|l| l.total_alloc), Some(48));
        let mut short = m.clone();
        short.remove("heapLive");
        assert_eq!(Layout::from_members(&short), None);
    }
}
