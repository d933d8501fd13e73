//! A session: inspect the targets, plan, attach, stream, report.
//!
//! One agent holds one kernel object and serves every target with it;
//! each executable is inspected, symbolized and analysed once however many
//! of its processes are targets ([`Binaries`]); each process has its own
//! probes, books and report ([`target::Target`]). `prepare` places
//! everything, [`live`] streams until the session ends (`--duration`,
//! Ctrl-C, SIGTERM, or the last target's exit), and `finish` writes the
//! reports: one, or one per target.
pub mod compare;
mod inspect;
pub mod fleet;
mod live;
mod recordings;
mod target;
mod watched;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use inspect::{inspect, inspect_exe, print_plan, ExeInfo, Inspected};
pub use live::watch_exit;

use crate::{
    analysis::facts::{BinaryFacts, Facts},
    error::{error_chain, Exit},
    ingest::{aggregate::Aggregator, feed::{Feed, Feeds}},
    kernel::{
        calibrate,
        probelog::ProbeLog,
        links::Attached,
        probes::{AttachPoint, Kernel, Loader, ProbeError, Program, Sizing},
    },
    plan::{Mode, PlanError},
    record::{RecordError, Recorder},
    render::{self, Format, RenderError},
    report::{self, Report},
    sampling::{bursts::BurstDriver, governor::Governor},
    tracee::{
        binary::BinaryError,
        buildinfo::BuildInfoError,
        launch::{Held, LaunchError},
        pclntab::PclntabError,
        process::{FileKey, Process, ProcessError},
        symbolize::{dwarf::DwarfError, SymbolSource},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("gcprobe needs root, or CAP_BPF with CAP_PERFMON, to load BPF programs and attach uprobes")]
    Privileges,
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{path}: not a Go binary")]
    NotGo {
        path: String,
        #[source]
        source: NotGoReason,
    },
    #[error("{path}: unreadable .gopclntab")]
    Pclntab {
        path: String,
        #[source]
        source: PclntabError,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Binary(BinaryError),
    #[error(transparent)]
    Dwarf(#[from] DwarfError),
    #[error("required probe {symbol} could not be attached")]
    RequiredProbe {
        symbol: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("event loop I/O")]
    Io(#[source] io::Error),
    #[error("recording")]
    Record(#[from] RecordError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("pid {pid} is given twice")]
    DuplicatePid { pid: u32 },
    #[error("calibrating")]
    Calibrate(#[from] calibrate::CalibrateError),
    #[error("{what} reports on one target: give --pid once")]
    OneTargetOnly { what: &'static str },
    #[error(transparent)]
    Caps(#[from] crate::tracee::caps::CapsError),
    #[error(transparent)]
    Load(#[from] compare::LoadError),
}

#[derive(Debug, thiserror::Error)]
pub enum NotGoReason {
    #[error(transparent)]
    Elf(BinaryError),
    #[error(transparent)]
    BuildInfo(BuildInfoError),
}

impl From<BinaryError> for SessionError {
    fn from(e: BinaryError) -> Self {
        match e {
            BinaryError::NotElf { ref path, .. } | BinaryError::UnsupportedArch { ref path, .. } => {
                SessionError::NotGo { path: path.display().to_string(), source: NotGoReason::Elf(e) }
            }
            other => SessionError::Binary(other),
        }
    }
}

impl SessionError {
    /// The exit status this error ends gcprobe with.
    pub fn exit(&self) -> Exit {
        match self {
            SessionError::Privileges | SessionError::Probe(ProbeError::PermissionDenied { .. }) => Exit::Privileges,
            SessionError::Process(ProcessError::NoSuchPid { .. }) => Exit::NoSuchPid,
            SessionError::Process(ProcessError::Exited { .. }) | SessionError::Probe(ProbeError::TargetGone { .. }) => Exit::TargetExited,
            SessionError::NotGo { .. } | SessionError::Plan(PlanError::TooOld { .. }) => Exit::NotGo,
            SessionError::Plan(PlanError::MissingSymbol { .. }) => Exit::MissingSymbol,
            _ => Exit::Failure,
        }
    }
}

/// What to attach to.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Running processes, one report each.
    Pids(Vec<u32>),
    /// `gcprobe run`: start it, held at its first instruction until attached.
    Launch { program: String, args: Vec<String> },
}

/// Where `gcprobe record` writes.
#[derive(Debug, Clone)]
pub struct RecordTo {
    pub path: PathBuf,
    /// Replace an existing file.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// When gcprobe was started: `duration` counts from here, start-up included.
    pub invoked: Instant,
    pub target: TargetSpec,
    pub record: Option<RecordTo>,
    pub duration: Option<Duration>,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub interval: Duration,
    pub quiet: bool,
    pub program: Program,
    pub mode: Mode,
    /// The kernel program's diagnostics on stderr (`--log-probes`).
    pub log_probes: bool,
    /// Allowed slowdown of the target, as a fraction (0.01 = 1%).
    pub budget: f64,
    /// Frames per callsite in the text report.
    pub stack_depth: usize,
    /// `--app-prefix`: more of the owner's import paths.
    pub app_prefixes: Vec<crate::analysis::owner::AppPrefix>,
}

/// What a session ends with.
pub struct Outcome {
    /// One per target, in the order given.
    pub reports: Vec<Report>,
    /// `gcprobe run`: how the program exited.
    pub exit: Option<crate::tracee::launch::ProgramExit>,
    /// The recording's path and size, when recording.
    pub recorded: Option<(PathBuf, u64)>,
}

/// Each executable the session's targets run, inspected once: processes of
/// one binary share its plan, symbols, loops and types.
pub(crate) struct Binaries {
    exes: BTreeMap<FileKey, ExeInfo>,
    /// What each binary says about PCs and types, asked lazily.
    facts: BTreeMap<FileKey, BinaryFacts>,
}

impl Binaries {
    fn exe(&self, key: FileKey) -> &ExeInfo {
        self.exes.get(&key).expect("every target's binary is inspected before it is placed")
    }

    /// Inspects `process`'s executable unless another target's was the
    /// same file; its facts are made from the tables read, and the file's
    /// pages are let go (the facts read them again as PCs ask).
    fn add(&mut self, process: &Process) -> Result<FileKey, SessionError> {
        let key = process.file_key()?;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.exes.entry(key) {
            let mut exe = inspect_exe(&process.exe_path, &process.exe_display).map_err(|e| exited_or(process.pid, e))?;
            for w in &exe.plan.warnings {
                eprintln!("gcprobe: warning: {w}");
            }
            let facts = BinaryFacts::new(std::rc::Rc::clone(&exe.binary), exe.pclntab.take())?;
            exe.binary.drop_resident_pages();
            self.facts.insert(key, facts);
            slot.insert(exe);
        }
        Ok(key)
    }

    /// Forgets a binary: its plan, symbols and caches.
    fn remove(&mut self, key: FileKey) {
        self.exes.remove(&key);
        self.facts.remove(&key);
    }
}

/// A vanished executable is a target that exited.
fn exited_or(pid: u32, e: SessionError) -> SessionError {
    match e {
        SessionError::Binary(BinaryError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => SessionError::Process(ProcessError::Exited { pid }),
        other => other,
    }
}

/// Attaches to processes (or starts one, held at its first instruction),
/// streams until the session ends, and writes the reports in the format
/// asked for. Attach, record and run are this one pipeline: a recording
/// holds exactly what the live report was made from.
pub fn attach(opts: AttachOptions) -> Result<Outcome, SessionError> {
    let pids = match &opts.target {
        TargetSpec::Pids(p) => p.clone(),
        TargetSpec::Launch { .. } => Vec::new(),
    };
    check_target_count(&opts, &pids)?;
    if !crate::tracee::process::has_bpf_privileges() {
        return Err(SessionError::Privileges);
    }
    let caught = live::Caught::now().map_err(SessionError::Io)?;
    // Before touching a target: a bad path must cost it nothing.
    if let Some(out) = &opts.output {
        crate::outfile::refuse_symlink(out).map_err(RenderError::from)?;
    }
    let recorder = match &opts.record {
        Some(r) => Some(Recorder::create(&r.path, r.force)?),
        None => None,
    };
    let held = match &opts.target {
        TargetSpec::Launch { program, args } => Some(Held::spawn(program, args)?),
        TargetSpec::Pids(_) => None,
    };
    let pids = match &held {
        Some(h) => vec![h.pid()],
        None => pids,
    };
    let mut processes = Vec::with_capacity(pids.len());
    let mut binaries = Binaries { exes: BTreeMap::new(), facts: BTreeMap::new() };
    let several = pids.len() > 1;
    for &pid in &pids {
        match Process::open(pid).map_err(SessionError::from).and_then(|p| Ok((binaries.add(&p)?, p))) {
            Ok((key, process)) => processes.push((process, key)),
            Err(e) => skip_if_gone(e, several)?,
        }
    }
    if processes.is_empty() {
        return Err(ProcessError::Exited { pid: pids[0] }.into());
    }
    let prepared = prepare(&opts, processes, &binaries)?;
    // Each target's memory is open: reading any file (CAP_DAC_READ_SEARCH)
    // is needed no more. What bursts, re-attaching and reads still need stays
    // (README, "Capabilities"); node mode keeps it for processes yet to come.
    crate::tracee::caps::drop(&[crate::tracee::caps::CAP_DAC_READ_SEARCH])?;
    live::run(&opts, prepared, recorder, held, binaries, caught)
}

/// `record` and `run` follow one process; the same PID twice is a typo.
fn check_target_count(opts: &AttachOptions, pids: &[u32]) -> Result<(), SessionError> {
    if pids.len() > 1 {
        if opts.record.is_some() {
            return Err(SessionError::OneTargetOnly { what: "gcprobe record" });
        }
        let what = match opts.format {
            Format::Pprof => Some("--format pprof"),
            Format::Perfetto => Some("--format perfetto"),
            Format::Prometheus => Some("--format prometheus"),
            Format::Html => Some("--format html"),
            Format::Text | Format::Json => None,
        };
        if let Some(what) = what {
            return Err(SessionError::OneTargetOnly { what });
        }
    }
    for (i, p) in pids.iter().enumerate() {
        if pids[..i].contains(p) {
            return Err(SessionError::DuplicatePid { pid: *p });
        }
    }
    Ok(())
}

/// The targets of one binary: its probes (one link set for all of them,
/// or one each) and, in sampled mode, the burst driver that switches them.
pub(crate) struct Group {
    key: FileKey,
    attached: Attached,
    driver: Option<BurstDriver>,
    /// Why each plan probe not placed was not.
    notes: HashMap<u32, String>,
    /// When its last target left, while its links linger.
    emptied: Option<Instant>,
}

/// What `prepare` hands the live session.
pub(crate) struct Prepared {
    kernel: Kernel,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    /// `--log-probes`: the reader of the kernel's diagnostics.
    probe_log: Option<ProbeLog>,
    targets: Vec<target::Target>,
    groups: Vec<Group>,
    feeds: Feeds,
    budget: f64,
    cost_s: f64,
}

/// Calibrates once, loads the kernel object once, and places each
/// binary's probes once for its targets; the programs are not yet
/// running under them.
fn prepare(opts: &AttachOptions, processes: Vec<(Process, FileKey)>, binaries: &Binaries) -> Result<Prepared, SessionError> {
    let mut loader = Loader::default().log_probes(opts.log_probes);
    let (kernel, mut ring) = Kernel::load(&mut loader, opts.program, Sizing::Session)?;
    let probe_log = opts.log_probes.then(|| kernel.probe_log()).transpose()?;
    // Measure what a hit costs here before touching a target.
    let (calibration, cost_s) = calibrate_or_assume(&mut loader, (&kernel, &mut ring));
    let common = target::Common { mode: opts.mode, budget: opts.budget, calibration, cost_s, app_prefixes: opts.app_prefixes.clone() };
    let mut by_key: Vec<(FileKey, Vec<Process>)> = Vec::new();
    for (process, key) in processes {
        match by_key.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ps)) => ps.push(process),
            None => by_key.push((key, vec![process])),
        }
    }
    let several = by_key.iter().map(|(_, ps)| ps.len()).sum::<usize>() > 1;
    let first_pid = by_key.first().and_then(|(_, ps)| ps.first()).map_or(0, |p| p.pid);
    let mut targets = Vec::new();
    let mut groups = Vec::new();
    for (key, processes) in by_key {
        let exe = binaries.exe(key);
        let source = binaries.facts.get(&key).map_or(SymbolSource::Symtab, Facts::source);
        let share = share_links(key, &processes);
        let mut attached = kernel.binary(AttachPoint::from_plan(&exe.plan), share);
        let first = targets.len();
        for process in processes {
            match target::Target::register(process, key, source, binaries, &kernel, &common, &mut attached) {
                Ok(t) => targets.push(t),
                Err(e) => skip_if_gone(e, several)?,
            }
        }
        let notes = loop {
            match target::place_probes(&exe.plan, &mut attached, opts.mode) {
                Ok(notes) => break notes,
                Err(e) => {
                    // A shared set finds no living target as pid 0: nothing to leave out.
                    let Some(pid) = exited_pid(&e).filter(|&p| p != 0) else { return Err(e) };
                    skip_if_gone(e, several)?;
                    // Placed again for the others, without the one that left.
                    attached.remove(pid);
                    targets.retain(|t| t.pid() != pid);
                    if attached.pids().next().is_none() {
                        break HashMap::new();
                    }
                }
            }
        };
        let mut i = first;
        while i < targets.len() {
            if let Err(e) = targets[i].placed(&attached, &notes) {
                attached.remove(targets[i].pid());
                targets.remove(i);
                skip_if_gone(e, several)?;
                continue;
            }
            let t = &targets[i];
            i += 1;
            if !opts.quiet {
                let what = format!("{} probes to pid {} ({}, {}){}", t.meta.attached.len(), t.pid(), t.process.exe_display, exe.build.version_raw, if share { ", shared by every process of its binary" } else { "" });
                announce(opts, &what, cost_s, opts.record.as_ref().map(|r| r.path.as_path()), matches!(opts.target, TargetSpec::Launch { .. }));
            }
        }
        if attached.pids().next().is_some() {
            groups.push(Group { key, attached, driver: None, notes: notes.clone(), emptied: None });
        }
    }
    if targets.is_empty() {
        // Every one left during start-up (each said so): the first's error.
        return Err(ProcessError::Exited { pid: first_pid }.into());
    }
    let mut feeds = Feeds::default();
    for t in &targets {
        let mut feed = Feed::new(Aggregator::new(t.pid(), &t.meta.plan));
        if opts.record.is_some() {
            feed = feed.recording();
        }
        feeds.insert(t.pid(), feed);
    }
    Ok(Prepared { kernel, ring, probe_log, targets, groups, feeds, budget: opts.budget, cost_s })
}

/// The process an error says has exited, if it says that.
fn exited_pid(e: &SessionError) -> Option<u32> {
    match e {
        SessionError::Process(ProcessError::Exited { pid }) | SessionError::Probe(ProbeError::TargetGone { pid }) => Some(*pid),
        _ => None,
    }
}

/// A target that exits while the session starts is left out with a
/// warning when there are others to watch; any other error ends the session.
fn skip_if_gone(e: SessionError, several: bool) -> Result<(), SessionError> {
    match exited_pid(&e) {
        Some(pid) if several => {
            eprintln!("gcprobe: warning: process {pid} exited before gcprobe could attach; watching the others");
            Ok(())
        }
        _ => Err(e),
    }
}

/// One link set may serve a binary's targets only when every process
/// running it is one: any other would pay a trap per hit for nothing. A
/// single target keeps a link filtered to it, so a process started later
/// from the same file pays nothing either.
fn share_links(key: FileKey, targets: &[Process]) -> bool {
    if targets.len() < 2 {
        return false;
    }
    let name = Path::new(&targets[0].exe_display).file_name().map(|n| n.to_owned());
    let running = crate::tracee::process::running(key, name.as_deref());
    running.iter().all(|pid| targets.iter().any(|t| t.pid == *pid))
}

impl Prepared {
    /// The programs run from here: every target's clock starts, its first
    /// reads are taken and, in sampled mode, each binary's first burst opens.
    fn start(&mut self, mode: Mode) -> Result<(), SessionError> {
        for t in &mut self.targets {
            t.start();
            let feed = self.feeds.get_mut(t.pid()).expect("a feed per target");
            t.read_rate(feed);
            t.read_gc(feed);
        }
        if mode == Mode::Sampled {
            for g in &mut self.groups {
                let plan = &self.targets.iter().find(|t| t.key == g.key).expect("a group has targets").meta.plan;
                watched::start_driver(g, plan, Governor::new(self.budget, self.cost_s), &self.targets, &mut self.feeds, &self.kernel, &mut self.ring)?;
            }
        }
        Ok(())
    }
}

/// The line that says the session has begun: what, in which mode, for how long.
fn announce(opts: &AttachOptions, what: &str, cost_s: f64, recording: Option<&Path>, launched: bool) {
    eprintln!(
        "gcprobe: attached {what}, {} mode{}{}{}",
        opts.mode.name(),
        if opts.mode == Mode::Sampled { format!(", budget {:.1}% at {:.1} us/hit", opts.budget * 100.0, cost_s * 1e6) } else { String::new() },
        recording.map(|p| format!(", recording to {}", p.display())).unwrap_or_default(),
        match (launched, opts.duration) {
            (true, _) => "; until it exits".into(),
            (false, Some(d)) => format!(" for {}", humantime::format_duration(d)),
            (false, None) => "; Ctrl-C to stop".into(),
        }
    );
}

/// `gcprobe calibrate` (benchmarks): the per-hit costs with a synthetic
/// stack `depth` frames deep, as one JSON line.
pub fn print_calibration(depth: usize, effort: calibrate::Effort) -> Result<(), SessionError> {
    if !crate::tracee::process::has_bpf_privileges() {
        return Err(SessionError::Privileges);
    }
    let c = calibrate::calibrate_at_depth(&mut Loader::default(), depth, effort, None)?;
    println!("{}", serde_json::json!({ "depth": depth, "calibration": c }));
    Ok(())
}

/// Per-hit cost assumed when calibration fails: the top of what this kind of
/// VM showed (field notes: 5–16 µs), so the governor errs on the safe side.
const FALLBACK_COST_NS: f64 = 16_000.0;

/// This host's per-hit cost, or the assumed one when calibration fails.
fn calibrate_or_assume(loader: &mut Loader, session: calibrate::SessionObject<'_>) -> (Option<calibrate::Calibration>, f64) {
    match calibrate::calibrate(loader, Some(session)) {
        Ok(c) => (Some(c), c.cost_s()),
        Err(e) => {
            eprintln!("gcprobe: warning: could not calibrate the per-hit cost ({}); assuming {FALLBACK_COST_NS} ns", error_chain(&e));
            (None, FALLBACK_COST_NS / 1e9)
        }
    }
}

/// Several targets' reports: text one after another, JSON as one document
/// (`gcprobe.reports/v1`) holding each target's `gcprobe.report/v1`.
fn write_reports(opts: &AttachOptions, reports: &[Report]) -> Result<(), SessionError> {
    let bytes = match opts.format {
        Format::Json => {
            let doc = serde_json::json!({ "schema": "gcprobe.reports/v1", "reports": reports });
            let mut s = serde_json::to_string_pretty(&doc).expect("reports serialize");
            s.push('\n');
            s
        }
        _ => reports.iter().map(|r| report::text::render(r, opts.stack_depth)).collect::<Vec<_>>().join("\n"),
    };
    render::write_bytes(opts.output.as_deref(), bytes.as_bytes()).map_err(Into::into)
}

/// `gcprobe report FILE`: the report of a recording, as the live session
/// printed it; a file cut short reports what it holds and says what it lost.
pub fn report_recording(path: &Path, format: Format, stack_depth: usize, app_prefixes: &[crate::analysis::owner::AppPrefix], output: Option<&Path>) -> Result<Report, SessionError> {
    let to = render::Output { format, stack_depth, path: output };
    render::refuse_binary_to_terminal(&to)?;
    let display = path.display().to_string();
    let mut recorded = render::RecordedReport::with_app_prefixes(&display, &crate::record::read(path)?, app_prefixes)?;
    if let Some(note) = &recorded.damage {
        eprintln!("gcprobe: warning: {display}: {note}");
    }
    render::write_bytes(output, &recorded.render(format, stack_depth))?;
    Ok(recorded.report)
}
