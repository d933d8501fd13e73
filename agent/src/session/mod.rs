//! One attach session: inspect the target, plan, attach, stream, report.
//!
//! The event loop is a single-threaded tokio runtime: the ring buffer and a
//! pidfd are both `AsyncFd`s (no sleep-polling), and the session ends on
//! `--duration`, Ctrl-C, SIGTERM, or the target's exit. The report is printed
//! in every case.
use std::{
    collections::HashMap,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    ingest::aggregate::Aggregator,
    tracee::binary::{Binary, BinaryError},
    tracee::buildinfo::{self, BuildInfoError},
    sampling::bursts::BurstDriver,
    kernel::calibrate,
    units::{bytes, si},
    analysis::facts::{BinaryFacts, Facts as _},
    ingest::feed::Feed,
    sampling::governor::Governor,
    tracee::launch::{Held, LaunchError},
    tracee::pclntab::{Pclntab, PclntabError},
    error::{error_chain, Exit},
    intervals,
    plan::{Mode, PlanError, ProbeGroup, ProbePlan},
    tracee::symbols::Symbols,
    kernel::probes::{self, AttachPoint, Attached, ProbeError, Program},
    kernel::probelog::ProbeLog,
    tracee::process::{self, Process, ProcessError},
    record::{End, Meta, Progress, RecordError, Recorder, FLUSH_BYTES},
    render::{self, Format, RenderError},
    report::{self, EndedBy, Report},
    tracee::symbolize::{dwarf::DwarfError, Symbolizer},
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
    Pid(u32),
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
}

/// Everything learned about the target before touching the kernel.
pub struct Inspected {
    pub process: Process,
    pub exe: ExeInfo,
}

/// What `inspect_exe` learns from a file.
pub struct ExeInfo {
    pub binary: Binary,
    pub build: buildinfo::BuildInfo,
    pub pclntab: Option<Pclntab>,
    pub plan: ProbePlan,
}

pub fn inspect(pid: u32) -> Result<Inspected, SessionError> {
    let process = Process::open(pid)?;
    let exe = inspect_exe(&process.exe_path, &process.exe_display).map_err(|e| match e {
        SessionError::Binary(BinaryError::Open { ref source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            SessionError::Process(ProcessError::Exited { pid })
        }
        other => other,
    })?;
    Ok(Inspected { process, exe })
}

/// ELF, build info and probe plan of an executable; `display` names it in errors.
pub fn inspect_exe(path: &Path, display: &str) -> Result<ExeInfo, SessionError> {
    let binary = Binary::open(path)?;
    let build = buildinfo::parse(binary.section_data(".go.buildinfo"), binary.data())
        .map_err(|source| SessionError::NotGo { path: display.to_owned(), source: NotGoReason::BuildInfo(source) })?;
    let pclntab = Pclntab::parse(&binary, build.version).map_err(|source| SessionError::Pclntab { path: display.to_owned(), source })?;
    let plan = ProbePlan::build(&Symbols { bin: &binary, pclntab: pclntab.as_ref() }, build.version)?;
    Ok(ExeInfo { binary, build, pclntab, plan })
}

/// `gcprobe plan`: what would be probed, and where.
pub fn print_plan(pid: Option<u32>, exe: Option<PathBuf>) -> Result<(), SessionError> {
    let ExeInfo { binary, build, pclntab, plan } = match (pid, exe) {
        (Some(pid), _) => inspect(pid)?.exe,
        (None, Some(exe)) => inspect_exe(&exe, &exe.display().to_string())?,
        (None, None) => unreachable!("clap requires --pid or --exe"),
    };
    println!(
        "{} {} {} pie={} dwarf={} symtab={} gopclntab={}",
        binary.path.display(),
        build.version_raw,
        binary.arch.go_name(),
        binary.is_pie,
        binary.has_dwarf,
        binary.symbols().next().is_some(),
        match &pclntab {
            Some(t) => format!("{} functions, text {:#x}, inline tree {}", t.len(), t.text_start, if t.has_inline_tree() { "yes" } else { "no" }),
            None => "absent".into(),
        }
    );
    if let Some((m, v)) = &build.main_module {
        println!("main module {m} {v}");
    }
    println!("growslice ABI {:?}; stopTheWorld reason argument: {}; startTheWorld worldStop argument: {}", plan.growslice_abi, plan.stw_reason_arg, plan.stw_span_arg);
    for line in gc_controller_lines(&plan.gc_controller) {
        println!("{line}");
    }
    match plan.mem_profile_rate {
        Some(a) => println!("runtime.MemProfileRate at {a:#x}: the runtime's own samples weighted at the program's rate"),
        None => println!("runtime.MemProfileRate not found: runtime samples would be weighted for the default 512 KiB"),
    }
    for p in &plan.probes {
        println!("  probe {:<32} {:<14} vaddr {:#x} file offset {:#x}{}", p.symbol, format!("{:?}", p.kind), p.vaddr, p.file_offset, if p.required { "" } else { " (optional)" });
    }
    for s in plan.skipped.iter().chain(&plan.not_needed) {
        println!("  skip  {:<32} {}", s.symbol, s.reason);
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

/// What a session ends with.
pub struct Outcome {
    pub report: Report,
    /// `gcprobe run`: how the program exited.
    pub exit: Option<std::process::ExitStatus>,
    /// The recording's path and size, when recording.
    pub recorded: Option<(PathBuf, u64)>,
}

/// Attaches to a process (or starts one, held at its first instruction),
/// streams until the session ends, and writes the report in the format
/// asked for. Attach, record and run are this one pipeline: a recording
/// holds exactly what the live report was made from.
pub fn attach(opts: AttachOptions) -> Result<Outcome, SessionError> {
    if !process::has_bpf_privileges() {
        return Err(SessionError::Privileges);
    }
    // Before touching the target: a bad path must cost it nothing.
    let mut recorder = match &opts.record {
        Some(r) => Some(Recorder::create(&r.path, r.force)?),
        None => None,
    };
    let mut held = match &opts.target {
        TargetSpec::Launch { program, args } => Some(Held::spawn(program, args)?),
        TargetSpec::Pid(_) => None,
    };
    let pid = match (&opts.target, &held) {
        (_, Some(h)) => h.pid(),
        (TargetSpec::Pid(p), None) => *p,
        (TargetSpec::Launch { .. }, None) => unreachable!("spawned above"),
    };
    let Inspected { process, exe: ExeInfo { binary, build, pclntab, mut plan } } = inspect(pid)?;
    for w in &plan.warnings {
        eprintln!("gcprobe: warning: {w}");
    }
    let bias = binary.load_bias(&process.exe_mappings()?)?;
    let mut facts = BinaryFacts::new(&binary, Symbolizer::new(&binary, pclntab, bias)?);

    // Measure what a hit costs here before touching the target.
    let (calibration, cost_s) = calibrate_or_assume();

    let mem = crate::tracee::memory::TargetMemory::open(pid).ok();
    check_gc_controller(&mut plan, bias, mem.as_ref());
    let cfg = probes::target_config(&plan, plan.gc_controller.found(), bias);
    let (mut attached, ring) = Attached::load(&process.exe_path, pid, cfg, AttachPoint::from_plan(&plan), opts.program, opts.log_probes)?;
    let mut probe_log = opts.log_probes.then(|| attached.probe_log()).transpose()?;
    let notes = place_probes(&plan, &mut attached, opts.mode)?;
    if !process.alive() {
        return Err(ProcessError::Exited { pid }.into());
    }
    let attached_ids: Vec<u32> = attached.attached_ids().collect();
    if !opts.quiet {
        let what = format!("{} probes to pid {pid} ({}, {})", attached_ids.len(), process.exe_display, build.version_raw);
        announce(&opts, &what, cost_s, recorder.as_ref().map(|r| r.path()), held.is_some());
    }

    let meta = Meta {
        gcprobe_version: env!("CARGO_PKG_VERSION").into(),
        target: report::Target {
            pid,
            exe: process.exe_display.clone(),
            go_version: build.version_raw.clone(),
            arch: binary.arch.go_name().into(),
            build_id: binary.build_id.clone(),
        },
        exe_path: process.exe_path.display().to_string(),
        load_bias: bias,
        plan,
        attached: attached_ids,
        attach_notes: notes,
        mode: opts.mode,
        budget: opts.budget,
        calibration,
        cost_s,
        start_unix_ns: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        start_monotonic_ns: monotonic_ns(),
        symbols_from: facts.source(),
    };
    let plan = &meta.plan;
    if let Some(r) = &mut recorder {
        r.meta(&meta)?;
    }
    // Everything is in place: the program may run.
    if let Some(h) = &mut held {
        h.release();
    }
    let started = Instant::now();
    let cpu_start = process.cpu_time_s();
    let mut feed = Feed::new(Aggregator::new(pid, plan));
    if recorder.is_some() {
        feed = feed.recording();
    }
    let rate_addr = plan.mem_profile_rate.map(|a| a.wrapping_add(bias));
    let read_rate = |feed: &mut Feed| {
        // A failed read (the target just exited) keeps the last value.
        if let Some(r) = mem.as_ref().zip(rate_addr).and_then(|(mem, addr)| mem.read_u64(addr)) {
            feed.mem_profile_rate(r);
        }
    };
    read_rate(&mut feed);
    let gc = plan.gc_controller.found();
    let read_gc = |feed: &mut Feed| {
        if let Some(s) = mem.as_ref().zip(gc).and_then(|(mem, c)| c.settings(bias, |a| mem.read_u64(a))) {
            // Zeros before gcinit (a program held at its first instruction) are no settings.
            if s.check() == crate::tracee::gcctl::Check::Consistent {
                feed.gc_settings(monotonic_ns(), s);
            }
        }
    };
    read_gc(&mut feed);
    // A map's length only where its header still looks like a map's.
    let map_impl = plan.map_impl;
    let map_len = |addr: u64| mem.as_ref().and_then(|m| map_impl.len(&m.read_array::<{ crate::tracee::gomaps::HEADER_BYTES }>(addr)?));
    let mut driver = match opts.mode {
        Mode::Sampled => Some(BurstDriver::start(Governor::new(opts.budget, cost_s), plan, &mut attached, &process, &mut feed)?),
        Mode::Exact => None,
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SessionError::Io)?;
    let mut live = Live {
        opts: &opts,
        feed: &mut feed,
        attached: &mut attached,
        driver: driver.as_mut(),
        process: &process,
        held: held.as_ref(),
        read_rate: &read_rate,
        read_gc: &read_gc,
        map_len: &map_len,
        started,
        cpu_start,
        cpu_last: cpu_start,
        recorder: recorder.as_mut(),
        facts: &mut facts,
        record_error: None,
    };
    let (mut ring, ended_by) = rt.block_on(ProbeLog::alongside(probe_log.as_mut(), stream(ring, &mut live))).map_err(SessionError::Io)?;
    let (cpu_last, record_error) = (live.cpu_last, live.record_error.take());
    let duration_s = started.elapsed().as_secs_f64();

    // Shut the gate and detach first, then drain what the kernel already
    // queued: nothing is lost between the last read and the end of the window.
    let open_burst = driver.as_ref().and_then(|d| d.open_window());
    if open_burst.is_some() {
        if let Err(e) = attached.set_burst_open(false) {
            eprintln!("gcprobe: warning: {}", error_chain(&e));
        }
    }
    let kernel = attached.stats();
    let mechanism = attached.mechanism();
    // Once the target has exited its CPU clock is gone: use the last reading.
    let cpu_end = process.cpu_time_s().or(cpu_last);
    let totals = attached.agg_totals();
    attached.detach();
    drain_into(&mut ring, &mut feed);
    if let Some(log) = &mut probe_log {
        log.flush();
    }
    feed.kernel_totals(&totals);
    read_gc(&mut feed);
    if !feed.agg.maps().is_empty() {
        feed.map_lens(monotonic_ns(), map_len);
    }
    if let Some(w) = open_burst {
        feed.end_burst(w.as_secs_f64());
    }
    let end = End { ended_by, progress: progress(started, duration_s, kernel, mechanism, cpu_start, cpu_end, driver.as_ref()) };
    let exit = match held {
        Some(h) => {
            // A second signal: the user wants out now, program included.
            if ended_by == EndedBy::Signal {
                h.signal(libc::SIGKILL);
            }
            Some(h.wait()?)
        }
        None => None,
    };
    let recorded = match (recorder, &record_error) {
        (Some(r), None) => {
            let path = r.path().to_owned();
            Some((path, r.finish(&mut feed, &mut facts, &end)?))
        }
        _ => None,
    };
    let report = meta.report(&end, &feed.agg, &mut facts);
    let to = render::Output { format: opts.format, stack_depth: opts.stack_depth, path: opts.output.as_deref() };
    render::write(to, &report, &meta, &end, &feed.agg, &mut facts)?;
    // The report is out; a recording that failed part way is still an error.
    if let Some(e) = record_error {
        return Err(e.into());
    }
    Ok(Outcome { report, exit, recorded })
}

/// What `gcprobe plan` says of the GC controller and its CPU counters.
fn gc_controller_lines(located: &crate::tracee::gcctl::Located) -> Vec<String> {
    use crate::tracee::gcctl::{AddressSource, LayoutSource, Located};
    let c = match located {
        Located::Unavailable { reason } => return vec![format!("runtime.gcController unavailable: {reason}")],
        Located::Found(c) => c,
    };
    let from = match c.address_from {
        AddressSource::Symbol => "the symbol table".to_owned(),
        AddressSource::MachineCode { calls } => format!("machine code, {calls} calls agreeing"),
    };
    let layout = match c.layout_from {
        LayoutSource::Dwarf => "DWARF",
        LayoutSource::Table => "gcprobe's table for this Go version",
    };
    vec![
        format!("runtime.gcController at {:#x} (address from {from}, layout from {layout}): heap, goal, GOGC, memory limit and allocation total readable", c.addr),
        match &c.cpu_stats {
            Ok(a) => format!("runtime.work.cpuStats at {a:#x} (machine code): GC CPU share readable"),
            Err(reason) => format!("GC CPU share unavailable: {reason}"),
        },
    ]
}

/// This host's per-hit cost, or the assumed one when calibration fails.
fn calibrate_or_assume() -> (Option<calibrate::Calibration>, f64) {
    match calibrate::calibrate() {
        Ok(c) => (Some(c), c.cost_s()),
        Err(e) => {
            eprintln!("gcprobe: warning: could not calibrate the per-hit cost ({}); assuming {FALLBACK_COST_NS} ns", error_chain(&e));
            (None, FALLBACK_COST_NS / 1e9)
        }
    }
}

/// Attaches the plan's probes in three sets, each its own uprobe_multi
/// link, so that a burst's detach (a whole link) or the governor dropping
/// the runtime's sample leaves the stop-the-world probes in place. Exact
/// mode has no use for the runtime's sample; sampled mode starts with
/// everything attached: that is its first, short burst. Returns why each
/// probe not placed was not; a required one that fails ends the session.
fn place_probes(plan: &ProbePlan, attached: &mut Attached, mode: Mode) -> Result<HashMap<u32, String>, SessionError> {
    let wanted: Vec<u32> = plan.probes.iter().filter(|p| mode == Mode::Sampled || p.kind.group() != ProbeGroup::Sample).map(|p| p.id).collect();
    if mode == Mode::Sampled {
        // Bursts open the gate once every bursted probe is in place.
        attached.set_burst_open(false)?;
    }
    let mut failures = Vec::new();
    for group in [ProbeGroup::Gc, ProbeGroup::Sample, ProbeGroup::Burst] {
        failures.extend(attached.attach(wanted.iter().copied().filter(|&id| plan.probe(id).is_some_and(|p| p.kind.group() == group)))?);
    }
    let mut notes: HashMap<u32, String> = plan
        .probes
        .iter()
        .filter(|p| !wanted.contains(&p.id))
        .map(|p| (p.id, "not placed in exact mode: every allocation is probed, so the runtime's own sample adds nothing".to_owned()))
        .collect();
    for (id, err) in failures {
        let p = plan.probe(id).expect("failure ids come from the plan");
        if p.required {
            return Err(SessionError::RequiredProbe { symbol: p.symbol.clone(), source: err });
        }
        eprintln!("gcprobe: warning: {} not attached: {err}", p.symbol);
        notes.insert(id, format!("attach failed: {err}"));
    }
    Ok(notes)
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

/// Holds the plan's GC controller against the target's memory: a wrong
/// address or layout shows as fields that contradict each other, and then
/// nothing is read from it (the kernel included), with the reason reported.
fn check_gc_controller(plan: &mut ProbePlan, bias: u64, mem: Option<&crate::tracee::memory::TargetMemory>) {
    use crate::tracee::gcctl::{Check, Located};
    let Some(c) = plan.gc_controller.found() else { return };
    let reason = match mem.map(|m| c.settings(bias, |a| m.read_u64(a))) {
        None => "the target's memory cannot be read (/proc/PID/mem)".to_owned(),
        Some(None) => format!("runtime.gcController at {:#x} cannot be read", c.addr),
        Some(Some(s)) if s.check() == Check::Inconsistent => {
            format!("runtime.gcController at {:#x} holds inconsistent values (GOGC {}, minimum heap {}): not trusted", c.addr, s.gc_percent, s.heap_minimum)
        }
        Some(Some(_)) => return,
    };
    eprintln!("gcprobe: warning: GC heap figures unavailable: {reason}");
    plan.gc_controller = Located::Unavailable { reason };
}

/// The session's figures `elapsed_s` into it; `cpu_*` are the target's CPU
/// clock at the start and at the latest reading.
fn progress(started: Instant, elapsed_s: f64, kernel: probes::KernelStats, mechanism: probes::Mechanism, cpu_start: Option<f64>, cpu_now: Option<f64>, driver: Option<&BurstDriver>) -> Progress {
    Progress {
        elapsed_s,
        kernel,
        mechanism,
        target_cpu_s: cpu_start.zip(cpu_now).map(|(a, b)| b - a),
        agent: self_usage(),
        runtime_samples_off_after_s: driver.and_then(|d| d.samples_off_at).map(|t| t.saturating_duration_since(started).as_secs_f64()),
    }
}

/// CLOCK_MONOTONIC, the clock of the kernel's event times (bpf_ktime_get_ns).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Per-hit cost assumed when calibration fails: the top of what this kind of
/// VM showed (field notes: 5–16 µs), so the governor errs on the safe side.
const FALLBACK_COST_NS: f64 = 16_000.0;

/// CPU and peak memory of this process (getrusage(RUSAGE_SELF)).
fn self_usage() -> report::AgentReport {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    report::AgentReport { cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime), max_rss_kib: ru.ru_maxrss as u64 }
}

fn drain_into(ring: &mut RingBuf<MapData>, feed: &mut Feed) {
    while let Some(item) = ring.next() {
        feed.ring(&item);
    }
}

/// Everything queued so far: the ring first (it defines stacks), then the
/// kernel's running totals.
fn fold_all(ring: &mut RingBuf<MapData>, feed: &mut Feed, attached: &Attached) {
    drain_into(ring, feed);
    feed.kernel_totals(&attached.agg_totals());
}

/// Lets the burst driver act; true when the target is gone. Other errors
/// cost a burst, not the session: they are reported and the session goes on.
fn fire(d: &mut BurstDriver, attached: &mut Attached, ring: &mut RingBuf<MapData>, feed: &mut Feed, process: &Process) -> bool {
    match d.fire(attached, ring, feed, process, fold_all) {
        Ok(()) => false,
        Err(ProbeError::TargetGone { .. }) => true,
        Err(e) => {
            eprintln!("gcprobe: warning: burst: {}", error_chain(&e));
            false
        }
    }
}

/// What the event loop works on.
struct Live<'a, 'b> {
    opts: &'a AttachOptions,
    feed: &'a mut Feed,
    attached: &'a mut Attached,
    driver: Option<&'a mut BurstDriver>,
    process: &'a Process,
    /// `gcprobe run`'s child: signals are passed on to it.
    held: Option<&'a Held>,
    read_rate: &'a dyn Fn(&mut Feed),
    /// Reads the GC controller's settings and allocation total into the feed.
    read_gc: &'a dyn Fn(&mut Feed),
    /// A map's length at an address, if its header still looks like a map's.
    map_len: &'a dyn Fn(u64) -> Option<u64>,
    started: Instant,
    cpu_start: Option<f64>,
    /// The target's CPU time at the last flush.
    cpu_last: Option<f64>,
    recorder: Option<&'a mut Recorder>,
    facts: &'a mut BinaryFacts<'b>,
    /// Writing the recording failed: the session ends, the report is still made.
    record_error: Option<RecordError>,
}

impl Live<'_, '_> {
    /// Hands the ops gathered so far to the recorder, with the session's
    /// figures as of now (what a report of a file cut here would use).
    fn record(&mut self) -> Result<(), ()> {
        let Some(rec) = self.recorder.as_deref_mut() else { return Ok(()) };
        let progress = progress(self.started, self.started.elapsed().as_secs_f64(), self.attached.stats(), self.attached.mechanism(), self.cpu_start, self.cpu_last, self.driver.as_deref());
        rec.flush(self.feed, self.facts, &progress).map_err(|e| {
            eprintln!("gcprobe: error: recording stopped: {}", error_chain(&e));
            self.record_error = Some(e);
        })
    }
}

async fn stream(ring: RingBuf<MapData>, live: &mut Live<'_, '_>) -> io::Result<(RingBuf<MapData>, EndedBy)> {
    let (opts, process, started) = (live.opts, live.process, live.started);
    let pid = live.feed.agg.pid();
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // Gone between attach and here: still a session, with a report.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok((ring, EndedBy::TargetExited)),
        Err(e) => return Err(e),
    };
    // SAFETY: the RingBuf and the OwnedFd own their descriptors and keep them
    // open, unchanged, for as long as the AsyncFd holds them.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(opts.interval);
    tick.tick().await;
    // The kernel batches wakeups (see WAKEUP_BYTES in probe-ebpf); this bounds
    // how long a trickle of events can sit unread.
    let mut flush = tokio::time::interval(intervals::FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // From gcprobe's own start: attaching and calibrating are part of what
    // the user asked to wait for.
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(opts.invoked + d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut last = (0u64, 0u64, 0u64);
    let mut sampled_at_gc = 0u64;
    let mut maps_read_at = Instant::now();
    let mut signals = 0;

    let ended_by = loop {
        let governor_due = live.driver.as_ref().map(|d| tokio::time::Instant::from_std(d.next));
        // A signal to `gcprobe run` goes on to the program, whose exit ends
        // the session; a second one ends it at once.
        let mut on_signal = |sig: i32| match live.held {
            Some(h) if signals == 0 => {
                signals += 1;
                h.signal(sig);
                false
            }
            _ => true,
        };
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain_into(guard.get_inner_mut(), live.feed);
                guard.clear_ready();
                if live.feed.pending() >= FLUSH_BYTES && live.record().is_err() {
                    break EndedBy::RecordError;
                }
            }
            _ = tokio::time::sleep_until(governor_due.unwrap_or_else(tokio::time::Instant::now)), if governor_due.is_some() => {
                let d = live.driver.as_mut().expect("guarded by governor_due");
                if fire(d, live.attached, ring.get_mut(), live.feed, process) {
                    break EndedBy::TargetExited;
                }
            }
            _ = flush.tick() => {
                fold_all(ring.get_mut(), live.feed, live.attached);
                if let Some(d) = live.driver.as_mut() {
                    if fire(d, live.attached, ring.get_mut(), live.feed, process) {
                        break EndedBy::TargetExited;
                    }
                }
                live.cpu_last = process.cpu_time_s().or(live.cpu_last);
                (live.read_gc)(live.feed);
                let new_cycle = live.feed.agg.counts().cycles != sampled_at_gc;
                if new_cycle {
                    sampled_at_gc = live.feed.agg.counts().cycles;
                    (live.read_rate)(live.feed);
                }
                // Map lengths at each GC and at least once a second: a
                // leaking service may collect once a minute.
                if (new_cycle || maps_read_at.elapsed() >= intervals::MAP_LENS) && !live.feed.agg.maps().is_empty() {
                    maps_read_at = Instant::now();
                    live.feed.map_lens(monotonic_ns(), live.map_len);
                }
                if live.record().is_err() {
                    break EndedBy::RecordError;
                }
            }
            _ = tick.tick(), if !opts.quiet => {
                let agg = &live.feed.agg;
                let c = &agg.counts();
                let stats = live.attached.stats();
                // Sampled mode sees allocations only in bursts: rates over
                // the burst time so far, not over an interval that may hold none.
                let (dt, base, note) = match live.driver.as_ref() {
                    // Paced by the runtime's own allocation total when known (see report::build).
                    Some(d) => (
                        agg.rate_time(agg.bursts().window_s),
                        (0, 0, 0),
                        format!("  (est. from {:.2}s of bursts, duty {:.2}%)", agg.bursts().window_s, d.gov.alloc_duty * 100.0),
                    ),
                    None => (opts.interval.as_secs_f64(), last, String::new()),
                };
                let per_s = |n: u64| if dt > 0.0 { n as f64 / dt } else { 0.0 };
                eprintln!(
                    "[gcprobe {:>6.1}s] allocs {:>7}/s {:>10}/s  growslice {:>7}/s  gc {:>4}  stw p99 {:>6.0}us max {:>6.0}us  lost {}{note}",
                    started.elapsed().as_secs_f64(),
                    si(per_s(c.mallocgc - base.0)),
                    bytes(per_s(agg.alloc_bytes() - base.1) as u64),
                    si(per_s(c.growslice - base.2)),
                    c.cycles,
                    agg.stw_hist().value_at_quantile(0.99) as f64 / 1e3,
                    agg.stw_hist().max() as f64 / 1e3,
                    stats.ringbuf_full + c.undecodable,
                );
                last = (c.mallocgc, agg.alloc_bytes(), c.growslice);
            }
            _ = &mut deadline => break EndedBy::Duration,
            _ = sigint.recv() => if on_signal(libc::SIGINT) { break EndedBy::Signal },
            _ = sigterm.recv() => if on_signal(libc::SIGTERM) { break EndedBy::Signal },
            _ = pidfd.readable() => break EndedBy::TargetExited,
        }
    };
    Ok((ring.into_inner(), ended_by))
}

/// A pidfd becomes readable when the process exits (Linux 5.3+), for any
/// process, not just our children: exit detection without polling /proc.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the fd is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `gcprobe report FILE`: the report of a recording, as the live session
/// printed it; a file cut short reports what it holds and says what it lost.
pub fn report_recording(path: &Path, format: Format, stack_depth: usize, output: Option<&Path>) -> Result<Report, SessionError> {
    let crate::record::Replayed { meta, end, agg, mut facts, damage, bytes } = crate::record::replay(path)?;
    let mut report = meta.report(&end, &agg, &mut facts);
    if let Some(d) = damage {
        let what = match d.cause {
            crate::record::frame::DamageCause::Truncated => "cut short",
            crate::record::frame::DamageCause::Corrupt => "corrupt",
            crate::record::frame::DamageCause::BadLength => "corrupt (impossible frame length)",
        };
        let note = format!(
            "recording {what} at byte {} of {bytes}: the last {} bytes were lost; this report covers the first {:.1}s",
            d.offset, d.bytes_lost, end.progress.elapsed_s
        );
        eprintln!("gcprobe: warning: {}: {note}", path.display());
        report.warnings.push(note);
    }
    render::write(render::Output { format, stack_depth, path: output }, &report, &meta, &end, &agg, &mut facts)?;
    Ok(report)
}
