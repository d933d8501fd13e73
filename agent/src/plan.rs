//! The probe plan: which runtime functions to probe in this binary, where, and
//! how to read their arguments for its Go version.
//!
//! Built from the binary alone, so it can be printed, recorded and checked
//! before anything touches the kernel.
use gcprobe_common::{cookie, kind};

use crate::tracee::{binary::Symbol, symbols::Symbols};
use crate::tracee::buildinfo::GoVersion;

/// Oldest toolchain whose runtime layout gcprobe has checked: register ABI on
/// amd64 (1.17) and arm64 (1.18), inline buildinfo (1.18).
pub const MIN_GO: GoVersion = GoVersion::new(1, 19, 0);
/// Newest toolchain checked; newer ones are probed as this one, with a warning.
pub const MAX_GO: GoVersion = GoVersion::new(1, 27, u32::MAX);

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{binary}: {version} is older than Go 1.19, which gcprobe needs (register ABI and inline build info)")]
    TooOld { binary: String, version: GoVersion },
    #[error("{binary}: required symbol {symbol} not found{hint}")]
    MissingSymbol { binary: String, symbol: &'static str, hint: &'static str },
}

/// How allocations are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every allocation entry point, all the time: exact counts, and the
    /// target pays a trap per allocation.
    Exact,
    /// GC probes always; allocations from the runtime's own sample
    /// (mProf_Malloc, when MemProfileRate > 0) and from duty-cycled exact
    /// bursts sized to stay within --overhead-budget.
    Sampled,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Sampled => "sampled",
        }
    }
}

/// What a probe measures. Travels through the kernel as `gcprobe_common::kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ProbeKind {
    Malloc,
    Growslice,
    GcStart,
    StwStop,
    StwStart,
    Assist,
    MapGrow,
    /// `runtime.mProf_Malloc`: the runtime's own allocation sample.
    MProf,
    /// `runtime.mapassign*`: an insert into a map.
    MapInsert,
    /// The instruction after a call of `runtime.startTheWorldWithSema`: the
    /// pause's end (see [`PauseEnd`]).
    StwResumed,
}

pub const ALL_KINDS: [ProbeKind; 10] = [
    ProbeKind::Malloc,
    ProbeKind::Growslice,
    ProbeKind::GcStart,
    ProbeKind::StwStop,
    ProbeKind::StwStart,
    ProbeKind::Assist,
    ProbeKind::MapGrow,
    ProbeKind::MProf,
    ProbeKind::MapInsert,
    ProbeKind::StwResumed,
];

/// When a probe is attached, by what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeGroup {
    /// Stop-the-world (and gcStart before Go 1.21): a few hits per GC cycle,
    /// always on, so every pause is timed.
    Gc,
    /// Every allocation (mallocgc and its variants, growslice), map growth
    /// and GC assists: always on in exact mode, in governed bursts in sampled
    /// mode. A program that builds a map per request grows maps as often as
    /// it allocates, and a GC-bound one assists from many of its allocations.
    Burst,
    /// The runtime's own sample (`mProf_Malloc`), sampled mode only.
    Sample,
}

impl ProbeKind {
    pub const fn group(self) -> ProbeGroup {
        match self {
            ProbeKind::Malloc | ProbeKind::Growslice | ProbeKind::MapGrow | ProbeKind::MapInsert | ProbeKind::Assist => ProbeGroup::Burst,
            ProbeKind::GcStart | ProbeKind::StwStop | ProbeKind::StwStart | ProbeKind::StwResumed => ProbeGroup::Gc,
            ProbeKind::MProf => ProbeGroup::Sample,
        }
    }

    pub const fn raw(self) -> u32 {
        match self {
            ProbeKind::Malloc => kind::MALLOC,
            ProbeKind::Growslice => kind::GROWSLICE,
            ProbeKind::GcStart => kind::GC_START,
            ProbeKind::StwStop => kind::STW_STOP,
            ProbeKind::StwStart => kind::STW_START,
            ProbeKind::Assist => kind::ASSIST,
            ProbeKind::MapGrow => kind::MAP_GROW,
            ProbeKind::MProf => kind::MPROF,
            ProbeKind::MapInsert => kind::MAP_INSERT,
            ProbeKind::StwResumed => kind::STW_RESUMED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown probe kind {0}")]
pub struct UnknownKind(pub u32);

impl TryFrom<u32> for ProbeKind {
    type Error = UnknownKind;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Ok(match v {
            kind::MALLOC => ProbeKind::Malloc,
            kind::GROWSLICE => ProbeKind::Growslice,
            kind::GC_START => ProbeKind::GcStart,
            kind::STW_STOP => ProbeKind::StwStop,
            kind::STW_START => ProbeKind::StwStart,
            kind::ASSIST => ProbeKind::Assist,
            kind::MAP_GROW => ProbeKind::MapGrow,
            kind::MPROF => ProbeKind::MProf,
            kind::MAP_INSERT => ProbeKind::MapInsert,
            kind::STW_RESUMED => ProbeKind::StwResumed,
            other => return Err(UnknownKind(other)),
        })
    }
}

/// Where a stop-the-world pause is taken to end.
///
/// Go ends a pause inside `startTheWorldWithSema`, once every P has its M
/// again (`now := nanotime()` after procresize and the wakeups, which it
/// returns), or with a `now` its caller read just before the call and
/// passed in (gcMarkTermination, Go 1.22+), which it returns too; Go
/// 1.19-1.21's gcMarkTermination reads its own `now` before the call and
/// drops the result (runtime/proc.go, runtime/mgc.go). The function's entry
/// comes before the restart's work, which on a busy machine is a good part
/// of the pause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseEnd {
    /// At each call's return site ([`ProbeKind::StwResumed`]), from the
    /// function's result: the `now` Go itself took.
    #[default]
    Return,
    /// At `startTheWorldWithSema`'s entry (its `now` argument when the
    /// caller passed one, else the probe's clock): no return site was
    /// found or attached, so pauses end before the world restarts.
    Entry,
}

impl PauseEnd {
    /// As reports name it.
    pub const fn name(self) -> &'static str {
        match self {
            PauseEnd::Return => "restart-return",
            PauseEnd::Entry => "restart-entry",
        }
    }
}

/// Argument layout of `runtime.growslice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GrowsliceAbi {
    /// Go 1.19: `growslice(et *_type, old slice, cap int) slice`
    /// (go1.19/src/runtime/slice.go) — RAX=et, RBX/RCX/RDI=old, RSI=cap.
    Go119,
    /// Go 1.20+: `growslice(oldPtr unsafe.Pointer, newLen, oldCap, num int, et *_type) slice`
    /// (go1.20/src/runtime/slice.go).
    Go120,
}

/// The functions compiled code calls to grow a slice (`append`). Go 1.26
/// added three beside growslice (runtime/slice.go, the same in 1.27),
/// chosen by cmd/compile/internal/ssagen/ssa.go's `append`:
/// growsliceBuf when the slice escapes only by being returned and its
/// capacity is read (the slice pass's move2heap), the NoAlias ones when
/// escape analysis proves the old array unaliased, which only a compiler
/// built with GOEXPERIMENT=runtimefreegc does (cmd/compile reads its own
/// internal/goexperiment constant); a stock toolchain's binaries then
/// lack them. Their first five arguments are growslice's Go 1.20+ layout,
/// the Buf ones add `bufPtr, bufLen`, and each calls growslice (or
/// growsliceBuf) with those five unchanged: the kernel counts that inner
/// call's growth once, by the outer probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrowEntry {
    /// `growslice(oldPtr, newLen, oldCap, num int, et *_type) slice` (1.20+; see [`GrowsliceAbi`]).
    Growslice,
    /// `growsliceNoAlias(oldPtr, newLen, oldCap, num int, et *_type) slice`: growslice, then frees the old array.
    NoAlias,
    /// `growsliceBuf(oldPtr, newLen, oldCap, num int, et *_type, bufPtr unsafe.Pointer, bufLen int) slice`:
    /// grows into the caller's stack buffer while `newLen <= bufLen`, else calls growslice.
    Buf,
    /// `growsliceBufNoAlias(...)`, growsliceBuf's arguments: growsliceBuf, then frees the old array.
    BufNoAlias,
}

impl GrowEntry {
    /// The variants probed beside growslice, where the binary has them.
    pub const VARIANTS: [GrowEntry; 3] = [GrowEntry::NoAlias, GrowEntry::Buf, GrowEntry::BufNoAlias];
    #[cfg(test)]
    const ALL: [GrowEntry; 4] = [GrowEntry::Growslice, GrowEntry::NoAlias, GrowEntry::Buf, GrowEntry::BufNoAlias];

    pub const fn symbol(self) -> &'static str {
        match self {
            GrowEntry::Growslice => "runtime.growslice",
            GrowEntry::NoAlias => "runtime.growsliceNoAlias",
            GrowEntry::Buf => "runtime.growsliceBuf",
            GrowEntry::BufNoAlias => "runtime.growsliceBufNoAlias",
        }
    }

    /// The first runtime that has it.
    pub const fn since(self) -> GoVersion {
        match self {
            GrowEntry::Growslice => MIN_GO,
            _ => GoVersion::new(1, 26, 0),
        }
    }

    /// Which Go argument is the stack buffer's length, for the entries that take one.
    pub const fn buf_len_arg(self) -> Option<usize> {
        match self {
            GrowEntry::Buf | GrowEntry::BufNoAlias => Some(gcprobe_common::GROW_BUF_LEN_ARG),
            GrowEntry::Growslice | GrowEntry::NoAlias => None,
        }
    }

    /// Cookie flags of its probe: every entry walks the appending stack;
    /// the Buf ones have the kernel read `bufLen`.
    pub const fn flags(self) -> u64 {
        let buf = if self.buf_len_arg().is_some() { cookie::FLAG_GROW_BUF } else { 0 };
        cookie::FLAG_WALK_STACK | buf
    }

    /// Why the plan has no probe on it (`go` is the binary's runtime).
    fn absent_reason(self, go: GoVersion) -> String {
        if go < self.since() {
            return format!("not in this Go (Go {}.{}+)", self.since().major, self.since().minor);
        }
        match self {
            GrowEntry::NoAlias | GrowEntry::BufNoAlias => "not in binary: only a compiler built with GOEXPERIMENT=runtimefreegc calls it".into(),
            _ => "not in binary: no append calls it".into(),
        }
    }
}

/// Decoded growslice arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowArgs {
    pub elem_type: u64,
    pub old_cap: u64,
    pub new_len: u64,
    /// Elements already in the slice (copied by the growth).
    pub old_len: u64,
}

impl GrowsliceAbi {
    pub fn for_version(v: GoVersion) -> Self {
        if v < GoVersion::new(1, 20, 0) { GrowsliceAbi::Go119 } else { GrowsliceAbi::Go120 }
    }

    /// Which argument slot holds the element type.
    pub fn elem_type_arg(self) -> u32 {
        match self {
            GrowsliceAbi::Go119 => 0,
            GrowsliceAbi::Go120 => 4,
        }
    }

    pub fn decode(self, a: &[u64; gcprobe_common::MAX_ARGS]) -> GrowArgs {
        match self {
            // Go 1.19 passes the wanted capacity; one append grows by one.
            GrowsliceAbi::Go119 => GrowArgs { elem_type: a[0], old_cap: a[3], new_len: a[4], old_len: a[2] },
            GrowsliceAbi::Go120 => GrowArgs { elem_type: a[4], old_cap: a[2], new_len: a[1], old_len: a[1].saturating_sub(a[3]) },
        }
    }
}

/// Why the world stopped: runtime/proc.go `stwReason`, in code order, and
/// its `stwReasonStrings` (identical from Go 1.21 to 1.27). Before Go 1.21
/// `stopTheWorldWithSema` takes no reason; the GC's two are inferred from
/// the cycle's shape, and others are named by who called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StwReason {
    Unknown,
    GcMarkTerm,
    GcSweepTerm,
    WriteHeapDump,
    GoroutineProfile,
    GoroutineProfileCleanup,
    AllGoroutinesStackTrace,
    ReadMemStats,
    AllThreadsSyscall,
    GoMaxProcs,
    StartTrace,
    StopTrace,
    CountPagesInUse,
    ReadMetricsSlow,
    ReadMemStatsSlow,
    PageCachePagesLeaked,
    ResetDebugLog,
}

impl StwReason {
    const ALL: [StwReason; 17] = [
        StwReason::Unknown,
        StwReason::GcMarkTerm,
        StwReason::GcSweepTerm,
        StwReason::WriteHeapDump,
        StwReason::GoroutineProfile,
        StwReason::GoroutineProfileCleanup,
        StwReason::AllGoroutinesStackTrace,
        StwReason::ReadMemStats,
        StwReason::AllThreadsSyscall,
        StwReason::GoMaxProcs,
        StwReason::StartTrace,
        StwReason::StopTrace,
        StwReason::CountPagesInUse,
        StwReason::ReadMetricsSlow,
        StwReason::ReadMemStatsSlow,
        StwReason::PageCachePagesLeaked,
        StwReason::ResetDebugLog,
    ];

    /// The reason with the runtime's code `c`, if the runtime has one.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(usize::from(c)).copied()
    }

    pub const fn code(self) -> u8 {
        self as u8
    }

    /// As the runtime names it (`stwReasonStrings`).
    pub const fn name(self) -> &'static str {
        match self {
            StwReason::Unknown => "unknown",
            StwReason::GcMarkTerm => "GC mark termination",
            StwReason::GcSweepTerm => "GC sweep termination",
            StwReason::WriteHeapDump => "write heap dump",
            StwReason::GoroutineProfile => "goroutine profile",
            StwReason::GoroutineProfileCleanup => "goroutine profile cleanup",
            StwReason::AllGoroutinesStackTrace => "all goroutines stack trace",
            StwReason::ReadMemStats => "read mem stats",
            StwReason::AllThreadsSyscall => "AllThreadsSyscall",
            StwReason::GoMaxProcs => "GOMAXPROCS",
            StwReason::StartTrace => "start trace",
            StwReason::StopTrace => "stop trace",
            StwReason::CountPagesInUse => "CountPagesInUse (test)",
            StwReason::ReadMetricsSlow => "ReadMetricsSlow (test)",
            StwReason::ReadMemStatsSlow => "ReadMemStatsSlow (test)",
            StwReason::PageCachePagesLeaked => "PageCachePagesLeaked (test)",
            StwReason::ResetDebugLog => "ResetDebugLog (test)",
        }
    }

    /// The collector's own pauses: a cycle starts with sweep termination
    /// and ends with mark termination.
    pub const fn is_gc(self) -> bool {
        matches!(self, StwReason::GcMarkTerm | StwReason::GcSweepTerm)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlannedProbe {
    pub id: u32,
    /// Short name for reports: `mallocgc`, `growslice`, ...
    pub name: String,
    pub symbol: String,
    pub kind: ProbeKind,
    /// Link-time virtual address of the function entry.
    pub vaddr: u64,
    /// How far past `vaddr` the uprobe sits: past the prologue's stack
    /// check ([`crate::tracee::staticrefs::past_stack_check`]), or 0.
    #[serde(default)]
    pub past_entry: u64,
    /// Offset in the ELF file of the uprobe, for the uprobe PMU.
    pub file_offset: u64,
    pub size: u64,
    pub flags: u64,
    /// The session fails if this probe cannot be attached.
    pub required: bool,
    /// For map-growth probes: which argument register holds the map.
    pub map_arg: Option<usize>,
}

impl PlannedProbe {
    pub fn cookie(&self) -> u64 {
        let burst = if self.kind.group() == ProbeGroup::Burst { cookie::FLAG_BURST } else { 0 };
        cookie::encode(self.id, self.kind.raw(), self.flags | burst)
    }
}

/// A probe the plan wanted but could not place, and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SkippedProbe {
    pub name: String,
    pub symbol: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProbePlan {
    pub go: GoVersion,
    pub probes: Vec<PlannedProbe>,
    pub skipped: Vec<SkippedProbe>,
    /// Probes this runtime makes unnecessary (the data comes from another),
    /// and why: shown by `gcprobe plan`, not reported as missing.
    pub not_needed: Vec<SkippedProbe>,
    pub growslice_abi: GrowsliceAbi,
    /// `stopTheWorldWithSema` takes a `stwReason` (Go 1.21+).
    pub stw_reason_arg: bool,
    /// `startTheWorldWithSema(now, w worldStop)` receives the pause's reason
    /// and start time (Go 1.22+): its entry probe names and starts each pause.
    pub stw_span_arg: bool,
    /// Where pauses end: at the return sites of `startTheWorldWithSema`
    /// when the plan has them all (and, once attached, every one is).
    #[serde(default = "entry_end")]
    pub pause_end: PauseEnd,
    /// Link-time range of `runtime.mallocgc`, for the nested-allocation check.
    pub nested_range: Option<(u64, u64)>,
    /// Link-time range of `runtime.growslice`: allocations made there are
    /// sent whole, never aggregated in the kernel.
    pub growslice_range: Option<(u64, u64)>,
    /// Which argument of `mProf_Malloc` is the size: `(p, size)` through Go
    /// 1.22, `(mp, p, size)` from 1.23 (runtime/mprof.go).
    pub mprof_size_arg: usize,
    /// Link-time address of `runtime.MemProfileRate`: the symbol table's,
    /// or found in the machine code of a stripped binary.
    pub mem_profile_rate: Option<u64>,
    /// `runtime.gcController`, or why it could not be found: the live heap,
    /// the heap goal, GOGC, the memory limit and the allocation total.
    #[serde(default = "gc_controller_unrecorded")]
    pub gc_controller: crate::tracee::gcctl::Located,
    /// How to read a map's length from its header.
    #[serde(default = "classic_maps")]
    pub map_impl: crate::tracee::gomaps::MapImpl,
    pub warnings: Vec<String>,
}

impl ProbePlan {
    pub fn probe(&self, id: u32) -> Option<&PlannedProbe> {
        self.probes.get(id as usize).filter(|p| p.id == id)
    }

    pub fn build(syms: &Symbols<'_>, go: GoVersion) -> Result<Self, PlanError> {
        let bin = syms.bin;
        let name = bin.path.display().to_string();
        if go < MIN_GO {
            return Err(PlanError::TooOld { binary: name, version: go });
        }
        let mut warnings = Vec::new();
        if go > MAX_GO {
            warnings.push(format!("{go} is newer than the newest runtime gcprobe has checked (go1.27); probing it as go1.27"));
        }
        let hint = match (bin.symbols().next().is_none(), syms.pclntab.is_none()) {
            (true, true) => " (the binary has neither a symbol table nor a readable .gopclntab)",
            _ => "",
        };

        let mut plan = ProbePlan {
            go,
            probes: Vec::new(),
            skipped: Vec::new(),
            not_needed: Vec::new(),
            growslice_abi: GrowsliceAbi::for_version(go),
            stw_reason_arg: go >= GoVersion::new(1, 21, 0),
            stw_span_arg: go >= GoVersion::new(1, 22, 0),
            pause_end: PauseEnd::Entry,
            nested_range: None,
            growslice_range: None,
            mprof_size_arg: if go < GoVersion::new(1, 23, 0) { 1 } else { 2 },
            mem_profile_rate: mem_profile_rate_address(syms),
            gc_controller: crate::tracee::gcctl::locate(syms, go),
            map_impl: crate::tracee::gomaps::MapImpl::for_binary(syms, go),
            warnings,
        };

        let walk = cookie::FLAG_WALK_STACK;
        let agg = cookie::FLAG_AGGREGATE;
        // Required: without these there is no allocation or STW story to tell.
        let required: &[(&str, &str, ProbeKind, u64)] = &[
            ("mallocgc", "runtime.mallocgc", ProbeKind::Malloc, walk | agg),
            ("growslice", GrowEntry::Growslice.symbol(), ProbeKind::Growslice, GrowEntry::Growslice.flags()),
            ("stopTheWorld", "runtime.stopTheWorldWithSema", ProbeKind::StwStop, 0),
            ("startTheWorld", "runtime.startTheWorldWithSema", ProbeKind::StwStart, 0),
        ];
        let sites = start_the_world_returns(syms);
        if sites.is_empty() {
            plan.warnings.push("no return site of runtime.startTheWorldWithSema found: stop-the-world pauses end at its entry, before the world restarts".into());
        } else {
            plan.pause_end = PauseEnd::Return;
        }
        for &(short, symbol, kind, flags) in required {
            if kind == ProbeKind::StwStart && !plan.stw_span_arg && plan.pause_end == PauseEnd::Return {
                // Go 1.19-1.21's gcMarkTermination ends its pause before the
                // call (see PauseEnd): a trap at the entry would lengthen
                // the restart past Go's end by the trap's own cost.
                plan.not_needed.push(SkippedProbe {
                    name: short.into(),
                    symbol: symbol.into(),
                    reason: "not needed: its return sites end each pause and read the heap there (before Go 1.22)".into(),
                });
                continue;
            }
            if kind == ProbeKind::StwStop && plan.stw_span_arg {
                // startTheWorldWithSema's worldStop carries the reason and
                // the start: half the hits of a probe at each end.
                plan.not_needed.push(SkippedProbe {
                    name: short.into(),
                    symbol: symbol.into(),
                    reason: "not needed: startTheWorldWithSema receives each pause's reason and start (Go 1.22+)".into(),
                });
                continue;
            }
            if !plan.add(syms, short, symbol, kind, flags, true) {
                return Err(PlanError::MissingSymbol { binary: name, symbol, hint });
            }
        }
        // Before Go 1.22 the return sites end each pause by themselves, and
        // stand in for the entry probe: required then.
        for site in &sites {
            plan.add_at(syms, "startTheWorld.return", site, ProbeKind::StwResumed, 0, !plan.stw_span_arg);
        }
        if let Some(m) = syms.lookup("runtime.mallocgc") {
            plan.nested_range = Some((m.addr, m.addr + m.size.max(1)));
        }
        if let Some(g) = syms.lookup("runtime.growslice") {
            plan.growslice_range = Some((g.addr, g.addr + g.size.max(1)));
        }
        // Optional, as mallocgc's size-specialized entries: none allocates
        // itself (each calls growslice, whose range pairs the allocation).
        for entry in GrowEntry::VARIANTS {
            let short = entry.symbol().trim_start_matches("runtime.");
            if !plan.add(syms, short, entry.symbol(), ProbeKind::Growslice, entry.flags(), false) {
                plan.not_needed.push(SkippedProbe { name: short.into(), symbol: entry.symbol().into(), reason: entry.absent_reason(go) });
            }
        }
        // Optional, sampled mode only: silent unless MemProfileRate > 0.
        if !plan.add(syms, "mProf_Malloc", "runtime.mProf_Malloc", ProbeKind::MProf, walk, false) {
            plan.skipped.push(SkippedProbe { name: "mProf_Malloc".into(), symbol: "runtime.mProf_Malloc".into(), reason: "symbol not in binary".into() });
        }

        // Optional: the report degrades without them, and says so. From Go
        // 1.21 the sweep-termination stop names each cycle and carries the
        // heap: a gcStart probe would only add hits (every allocating
        // goroutine that sees the trigger calls it, runtime/mgc.go).
        if plan.stw_reason_arg {
            plan.not_needed.push(SkippedProbe {
                name: "gcStart".into(),
                symbol: "runtime.gcStart".into(),
                reason: "not needed: the stop-the-world reason marks each cycle (Go 1.21+)".into(),
            });
        }
        let optional: &[(&str, &str, ProbeKind)] = if plan.stw_reason_arg {
            &[("gcAssistAlloc", "runtime.gcAssistAlloc", ProbeKind::Assist)]
        } else {
            &[("gcStart", "runtime.gcStart", ProbeKind::GcStart), ("gcAssistAlloc", "runtime.gcAssistAlloc", ProbeKind::Assist)]
        };
        for &(short, symbol, kind) in optional {
            if !plan.add(syms, short, symbol, kind, 0, false) {
                plan.skipped.push(SkippedProbe { name: short.into(), symbol: symbol.into(), reason: "symbol not in binary".into() });
                plan.warnings.push(format!("{symbol} not found: {short} events will be missing"));
            }
        }

        // Map growth, by the runtime's map implementation (the one that
        // also says how to read a map's length): hashGrow(t *maptype, h
        // *hmap) for hmaps (runtime/map.go); with swiss maps
        // (internal/runtime/maps) (*Map).growToSmall/growToTable(m, typ) and
        // (*table).grow(t, typ, m, newCap) / (*table).split(t, typ, m).
        let map_growth: &[(&str, &str, usize)] = match plan.map_impl {
            crate::tracee::gomaps::MapImpl::Classic => &[("hashGrow", "runtime.hashGrow", 1)],
            crate::tracee::gomaps::MapImpl::Swiss => &[
                ("map.growToSmall", "internal/runtime/maps.(*Map).growToSmall", 0),
                ("map.growToTable", "internal/runtime/maps.(*Map).growToTable", 0),
                ("table.grow", "internal/runtime/maps.(*table).grow", 2),
                ("table.split", "internal/runtime/maps.(*table).split", 2),
            ],
        };
        for &(short, symbol, arg) in map_growth {
            if plan.add(syms, short, symbol, ProbeKind::MapGrow, walk, false) {
                if let Some(p) = plan.probes.last_mut() {
                    p.map_arg = Some(arg);
                }
            } else {
                plan.skipped.push(SkippedProbe { name: short.into(), symbol: symbol.into(), reason: "symbol not in binary (no map of this kind grows)".into() });
            }
        }

        // Map inserts, in bursts: a map that only grows is found by who
        // inserts into it, and its length is then read on a timer. Every
        // Go from 1.19 to 1.27 names them runtime.mapassign* (1.24+'s swiss
        // maps linkname internal/runtime/maps' versions to these names); all
        // take (type, map, key...). Only the caller is kept: it is the
        // `m[k] = v` line.
        for variant in MAP_ASSIGN {
            if plan.add(syms, variant.trim_start_matches("runtime."), variant, ProbeKind::MapInsert, 0, false) {
                if let Some(p) = plan.probes.last_mut() {
                    p.map_arg = Some(1);
                }
            } else {
                plan.not_needed.push(SkippedProbe { name: variant.trim_start_matches("runtime.").into(), symbol: (*variant).into(), reason: "not in binary: no map is written this way".into() });
            }
        }

        // Go 1.26+ (GOEXPERIMENT sizespecializedmalloc, default in 1.27): compiled
        // code calls size-class-specialized allocators directly, bypassing
        // mallocgc (cmd/compile/internal/ssagen/ssa.go, runtime/malloc_generated.go).
        // mallocgc also dispatches into them, hence FLAG_SKIP_NESTED.
        let mut specialized: Vec<_> = syms.names().into_iter().filter(|n| is_size_specialized_malloc(n)).collect();
        specialized.sort_by_key(|s| natural_key(s));
        for symbol in specialized {
            let short = symbol.trim_start_matches("runtime.").to_owned();
            plan.add(syms, &short, &symbol, ProbeKind::Malloc, walk | agg | cookie::FLAG_SKIP_NESTED, false);
        }
        Ok(plan)
    }

    /// A plan with no probes for `go`'s argument layouts, for tests that
    /// feed it events by hand.
    #[cfg(test)]
    pub(crate) fn for_test(go: GoVersion) -> Self {
        ProbePlan {
            go,
            probes: vec![],
            skipped: vec![],
            not_needed: vec![],
            growslice_abi: GrowsliceAbi::for_version(go),
            stw_reason_arg: go >= GoVersion::new(1, 21, 0),
            stw_span_arg: go >= GoVersion::new(1, 22, 0),
            pause_end: PauseEnd::Entry,
            nested_range: None,
            growslice_range: None,
            mprof_size_arg: 2,
            mem_profile_rate: None,
            gc_controller: crate::tracee::gcctl::Located::Unavailable { reason: "test".into() },
            map_impl: crate::tracee::gomaps::MapImpl::Swiss,
            warnings: vec![],
        }
    }

    fn add(&mut self, syms: &Symbols<'_>, short: &str, symbol: &str, kind: ProbeKind, flags: u64, required: bool) -> bool {
        let Some(sym) = syms.lookup(symbol) else { return false };
        self.add_at(syms, short, &sym, kind, flags, required)
    }

    /// A probe on the function `at` (past its stack check), or
    /// (`StwResumed`) on the instruction at `at.addr`, named `at.name`.
    fn add_at(&mut self, syms: &Symbols<'_>, short: &str, at: &Symbol, kind: ProbeKind, flags: u64, required: bool) -> bool {
        let (symbol, vaddr, size) = (at.name.as_str(), at.addr, at.size);
        let past_entry = if kind == ProbeKind::StwResumed { 0 } else { past_stack_check(syms, at) };
        let Some(file_offset) = syms.bin.file_offset(vaddr + past_entry) else {
            self.skipped.push(SkippedProbe { name: short.into(), symbol: symbol.into(), reason: format!("address {:#x} is in no loadable segment", vaddr + past_entry) });
            return false;
        };
        let id = self.probes.len() as u32;
        // A cookie has 16 bits for the id; a plan holds a few dozen probes.
        if id > cookie::MAX_PROBE_ID {
            self.skipped.push(SkippedProbe { name: short.into(), symbol: symbol.into(), reason: format!("the plan is full ({} probes)", id) });
            return false;
        }
        self.probes.push(PlannedProbe { id, name: short.into(), symbol: symbol.into(), kind, vaddr, past_entry, file_offset, size, flags, required, map_arg: None });
        true
    }

    /// Once the probes are placed: a return site that did not attach
    /// would leave its pauses open, so every pause ends at the entry then
    /// (`attached`: the ids placed). Only from Go 1.22, where the entry
    /// probe is placed too; before, the sites are required.
    pub fn settle_pause_end(&mut self, attached: &[u32]) {
        if self.pause_end == PauseEnd::Return && self.probes.iter().any(|p| p.kind == ProbeKind::StwResumed && !attached.contains(&p.id)) {
            self.pause_end = PauseEnd::Entry;
            self.warnings.push("a return site of runtime.startTheWorldWithSema did not attach: stop-the-world pauses end at its entry, before the world restarts".into());
        }
    }
}

/// How far past the entry of the function `at` a probe fires once per
/// call: past the stack check of its prologue, whose morestack path runs the
/// entry again ([`crate::tracee::staticrefs::past_stack_check`]); 0 where it
/// has none or its code is not in the file.
fn past_stack_check(syms: &Symbols<'_>, at: &Symbol) -> u64 {
    let code = usize::try_from(at.size).ok().and_then(|n| syms.bin.bytes_at(at.addr, n));
    code.and_then(|code| crate::tracee::staticrefs::past_stack_check(syms.bin.arch, code, at.addr)).map_or(0, |past| past - at.addr)
}

/// The instruction after every call of `runtime.startTheWorldWithSema`,
/// named `caller+offset`, where a probe ends each pause as the world
/// restarts ([`PauseEnd::Return`]). Its callers are the runtime's own: Go
/// 1.19 to 1.27 call it from closures run on the system stack in gcStart
/// (sweep termination ends), gcMarkDone (a mark termination that found
/// work and restarts), gcMarkTermination and startTheWorld (every other
/// stop): four sites, found by decoding every runtime function that may
/// call it rather than by those closures' names, which change between
/// versions. Empty when there is none, or one lies outside every loadable
/// segment: pauses then end at the entry.
fn start_the_world_returns(syms: &Symbols<'_>) -> Vec<Symbol> {
    use crate::tracee::staticrefs::{may_call, return_sites};
    let Some(start) = syms.lookup("runtime.startTheWorldWithSema") else { return Vec::new() };
    let targets = std::collections::HashSet::from([start.addr]);
    let mut sites = Vec::new();
    for (name, entry, size) in syms.functions() {
        if !name.starts_with("runtime.") {
            continue;
        }
        let Some(code) = usize::try_from(size).ok().and_then(|n| syms.bin.bytes_at(entry, n)) else { continue };
        if !may_call(syms.bin.arch, code, entry, &targets) {
            continue;
        }
        sites.extend(return_sites(syms.bin.arch, code, entry, start.addr).into_iter().map(|at| Symbol { name: format!("{name}+{:#x}", at - entry), addr: at, size: 0 }));
    }
    sites.sort_by_key(|s| s.addr);
    // Never some pauses ended one way and some the other.
    if sites.iter().any(|s| syms.bin.file_offset(s.addr).is_none()) {
        return Vec::new();
    }
    sites
}

/// runtime.MemProfileRate's default (runtime/mprof.go).
pub const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// `runtime.MemProfileRate`'s address. Without a symbol table: of the
/// 8-byte values `runtime.profilealloc` loads (mcache0 and MemProfileRate
/// in every Go from 1.19 to 1.27, runtime/malloc.go), the one the runtime
/// initializes: statically to `512 * 1024` (the file holds it, Go 1.20+),
/// or in `runtime.init` (go1.19's `defaultMemProfileRate(512 * 1024)`).
fn mem_profile_rate_address(syms: &Symbols<'_>) -> Option<u64> {
    syms.bin.symbol("runtime.MemProfileRate").map(|s| s.addr).or_else(|| mem_profile_rate_in_code(syms))
}

/// The machine-code half of [`mem_profile_rate_address`].
pub fn mem_profile_rate_in_code(syms: &Symbols<'_>) -> Option<u64> {
    let f = syms.lookup("runtime.profilealloc")?;
    let code = syms.bin.bytes_at(f.addr, usize::try_from(f.size).ok()?)?;
    use crate::tracee::staticrefs::{data_refs, Access};
    let arch = syms.bin.arch;
    let init_stores: Vec<u64> = syms
        .lookup("runtime.init")
        .and_then(|i| syms.bin.bytes_at(i.addr, usize::try_from(i.size).ok()?).map(|c| data_refs(arch, c, i.addr)))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(a, acc)| (acc == Access::Store).then_some(a))
        .collect();
    let mut found: Vec<u64> = data_refs(arch, code, f.addr)
        .into_iter()
        .filter_map(|(a, acc)| (acc == Access::Load).then_some(a))
        .filter(|&a| syms.bin.read_ptr(a) == Some(DEFAULT_MEM_PROFILE_RATE) || init_stores.contains(&a))
        .collect();
    found.sort_unstable();
    found.dedup();
    match found[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// `runtime.mapassign` and its key-specialized variants (runtime/map_fast*.go).
pub const MAP_ASSIGN: [&str; 6] = [
    "runtime.mapassign",
    "runtime.mapassign_fast32",
    "runtime.mapassign_fast32ptr",
    "runtime.mapassign_fast64",
    "runtime.mapassign_fast64ptr",
    "runtime.mapassign_faststr",
];

/// Recordings made before return-site probes ended pauses at the entry.
fn entry_end() -> PauseEnd {
    PauseEnd::Entry
}

/// Recordings made before `map_impl` hold lengths already read.
fn classic_maps() -> crate::tracee::gomaps::MapImpl {
    crate::tracee::gomaps::MapImpl::Classic
}

fn gc_controller_unrecorded() -> crate::tracee::gcctl::Located {
    crate::tracee::gcctl::Located::Unavailable { reason: "not in this recording (made by an older gcprobe)".into() }
}

fn is_size_specialized_malloc(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("runtime.mallocgcSmallNoScanSC")
        .or_else(|| name.strip_prefix("runtime.mallocgcSmallScanNoHeaderSC"))
        .or_else(|| name.strip_prefix("runtime.mallocgcTinySC"))
    else {
        return false;
    };
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

fn natural_key(s: &str) -> (String, u32) {
    let digits = s.len() - s.bytes().rev().take_while(u8::is_ascii_digit).count();
    (s[..digits].to_owned(), s[digits..].parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in ALL_KINDS {
            assert_eq!(ProbeKind::try_from(k.raw()).unwrap(), k);
        }
        assert!(ProbeKind::try_from(0).is_err());
        assert!(ProbeKind::try_from(99).is_err());
    }

    #[test]
    fn stw_reasons_round_trip_their_codes() {
        for c in 0..=16u8 {
            assert_eq!(StwReason::from_code(c).map(StwReason::code), Some(c));
        }
        assert_eq!(StwReason::from_code(17), None);
        assert_eq!((StwReason::from_code(2).map(StwReason::name), StwReason::GcMarkTerm.code()), (Some("GC sweep termination"), 1));
        assert!(StwReason::GcSweepTerm.is_gc() && !StwReason::ReadMemStats.is_gc());
    }

    #[test]
    fn a_return_site_left_unattached_ends_every_pause_at_the_entry() {
        let probe = |id, kind| PlannedProbe { id, name: "p".into(), symbol: "s".into(), kind, vaddr: 0, past_entry: 0, file_offset: 0, size: 0, flags: 0, required: false, map_arg: None };
        let mut plan = ProbePlan { pause_end: PauseEnd::Return, ..ProbePlan::for_test(GoVersion::new(1, 24, 0)) };
        plan.probes = vec![probe(0, ProbeKind::StwStart), probe(1, ProbeKind::StwResumed), probe(2, ProbeKind::StwResumed)];
        plan.settle_pause_end(&[0, 1, 2]);
        assert_eq!((plan.pause_end, plan.warnings.len()), (PauseEnd::Return, 0));
        plan.settle_pause_end(&[0, 2]);
        assert_eq!(plan.pause_end, PauseEnd::Entry);
        assert_eq!(plan.warnings, ["a return site of runtime.startTheWorldWithSema did not attach: stop-the-world pauses end at its entry, before the world restarts"]);
        // Recordings from before return sites ended every pause at the entry.
        let mut old = serde_json::to_value(&plan).unwrap();
        old.as_object_mut().unwrap().remove("pause_end");
        assert_eq!(serde_json::from_value::<ProbePlan>(old).unwrap().pause_end, PauseEnd::Entry);
        assert_eq!((PauseEnd::Return.name(), PauseEnd::Entry.name()), ("restart-return", "restart-entry"));
    }

    #[test]
    fn growslice_layouts() {
        assert_eq!(GrowsliceAbi::for_version(GoVersion::new(1, 19, 8)), GrowsliceAbi::Go119);
        assert_eq!(GrowsliceAbi::for_version(GoVersion::new(1, 20, 0)), GrowsliceAbi::Go120);
        let a = [0x10, 0x20, 0x30, 0x40, 0x50];
        assert_eq!(GrowsliceAbi::Go119.decode(&a), GrowArgs { elem_type: 0x10, old_cap: 0x40, new_len: 0x50, old_len: 0x30 });
        assert_eq!(GrowsliceAbi::Go120.decode(&a), GrowArgs { elem_type: 0x50, old_cap: 0x30, new_len: 0x20, old_len: 0 });
    }

    #[test]
    fn growslice_variants_share_growslices_first_five_arguments() {
        // growsliceBuf(oldPtr, newLen, oldCap, num, et, bufPtr, bufLen) as Go 1.27 passes it: RAX..RSI, R8, R9.
        let regs = [0xc000_1000, 9, 8, 1, 0x4a_2000, 0xc000_0800, 16];
        let five: [u64; 5] = regs[..5].try_into().unwrap();
        let want = GrowArgs { elem_type: 0x4a_2000, old_cap: 8, new_len: 9, old_len: 8 };
        assert_eq!(GrowsliceAbi::for_version(GrowEntry::Buf.since()).decode(&five), want);
        let buf = |e: GrowEntry| e.buf_len_arg().map(|i| (regs[i], gcprobe_common::grows_in_buffer(regs[1], regs[i])));
        assert_eq!(GrowEntry::ALL.map(buf), [None, None, Some((16, true)), Some((16, true))]);
        assert_eq!(GrowEntry::ALL.map(|e| e.flags() & cookie::FLAG_GROW_BUF != 0), [false, false, true, true]);
        assert!(GrowEntry::ALL.iter().all(|e| e.flags() & cookie::FLAG_WALK_STACK != 0));
        assert_eq!(GrowEntry::ALL.map(|e| (e.since().major, e.since().minor)), [(1, 19), (1, 26), (1, 26), (1, 26)]);
    }

    #[test]
    fn a_missing_growslice_variant_says_why() {
        assert_eq!(GrowEntry::Buf.absent_reason(GoVersion::new(1, 24, 11)), "not in this Go (Go 1.26+)");
        assert_eq!(GrowEntry::Buf.absent_reason(GoVersion::new(1, 27, 3)), "not in binary: no append calls it");
        assert_eq!(GrowEntry::NoAlias.absent_reason(GoVersion::new(1, 27, 3)), "not in binary: only a compiler built with GOEXPERIMENT=runtimefreegc calls it");
    }

    #[test]
    fn recognises_specialized_mallocs() {
        assert!(is_size_specialized_malloc("runtime.mallocgcSmallNoScanSC7"));
        assert!(is_size_specialized_malloc("runtime.mallocgcSmallScanNoHeaderSC12"));
        assert!(is_size_specialized_malloc("runtime.mallocgcTinySC2"));
        assert!(!is_size_specialized_malloc("runtime.mallocgcTinySlowPath"));
        assert!(!is_size_specialized_malloc("runtime.mallocgcSmallNoscan"));
        assert!(!is_size_specialized_malloc("runtime.mallocgcSmallNoScanSC"));
        let mut v = vec!["runtime.mallocgcTinySC10", "runtime.mallocgcTinySC2"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["runtime.mallocgcTinySC2", "runtime.mallocgcTinySC10"]);
    }
}
