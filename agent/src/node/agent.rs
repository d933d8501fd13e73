//! `gcprobe node`: every Go process on the host, watched from one agent
//! and served over HTTP. The event loop owns everything: the fleet's
//! kernel object and targets, discovery, the metrics; HTTP requests come
//! in as queries it answers between events.
//!
//! Processes are found three ways: one sweep of /proc at start, the
//! kernel's exec events as they happen, and a reconcile sweep every
//! `--sweep` for anything an event missed (a full ring, a process that
//! was not Go when it exec'd and is now). Exits come from each target's
//! pidfd.
use std::{
    collections::HashMap,
    net::SocketAddr,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use hyper::StatusCode;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{
    discover::{Changes, Discovery, GoProcess},
    filter::Filter,
    http::{self, Answer, Ask, Query},
};
use crate::{
    error::error_chain,
    export::openmetrics::{raise, to_prometheus_text, Exposition, TargetFigures},
    intervals,
    render::Format,
    session::{
        self,
        fleet::{Fleet, FleetOptions},
        SessionError,
    },
    tracee::{
        labels::{LabelRoots, Labels},
        process::{FileKey, Process},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("event loop I/O")]
    Io(#[from] std::io::Error),
    #[error("--record-dir {dir}: cannot write there")]
    RecordDir {
        dir: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl NodeError {
    pub fn exit(&self) -> crate::error::Exit {
        match self {
            NodeError::Session(e) => e.exit(),
            _ => crate::error::Exit::Failure,
        }
    }
}

/// `gcprobe node`'s settings.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub listen: SocketAddr,
    pub fleet: FleetOptions,
    pub filter: Filter,
    /// Callsites with their own series per target.
    pub top_callsites: usize,
    /// How long a binary's probes stay after its last process exits.
    pub grace: Duration,
    /// How often /proc is swept for what exec events missed.
    pub sweep: Duration,
    /// Frames per callsite in text reports.
    pub stack_depth: usize,
    pub quiet: bool,
}

/// Why a Go process is not watched: the `reason` of
/// `gcprobe_attach_errors_total`. One short list, so the label is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refusal {
    /// It exited before its probes were in place.
    Exited,
    /// Its Go is older than 1.19, or the file is not a Go binary after all.
    NotGo,
    /// A runtime function gcprobe needs is not in the binary.
    MissingSymbol,
    /// The kernel's filter is full (MAX_TARGETS).
    TooManyTargets,
    /// The kernel refused: privileges.
    Permission,
    Other,
}

impl Refusal {
    fn of(e: &SessionError) -> Self {
        use crate::error::Exit;
        if let SessionError::Probe(crate::kernel::probes::ProbeError::TooManyTargets { .. }) = e {
            return Refusal::TooManyTargets;
        }
        match e.exit() {
            Exit::TargetExited | Exit::NoSuchPid => Refusal::Exited,
            Exit::NotGo => Refusal::NotGo,
            Exit::MissingSymbol => Refusal::MissingSymbol,
            Exit::Privileges => Refusal::Permission,
            _ => Refusal::Other,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Refusal::Exited => "exited",
            Refusal::NotGo => "not_go",
            Refusal::MissingSymbol => "missing_symbol",
            Refusal::TooManyTargets => "too_many_targets",
            Refusal::Permission => "permission",
            Refusal::Other => "other",
        }
    }

    /// A refusal that will hold for every process of the binary.
    const fn is_the_binarys(self) -> bool {
        matches!(self, Refusal::NotGo | Refusal::MissingSymbol)
    }
}

/// The agent's own health families.
struct Health {
    targets: Gauge,
    binaries: Gauge,
    placed: Counter,
    denied: Gauge,
    started: Counter,
    attach_errors: Family<Vec<(&'static str, String)>, Counter>,
    execs_lost: Counter,
    foreign_hits: Counter,
    deferred: Counter,
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    resident_bytes: Gauge,
}

impl Health {
    fn register(e: &mut Exposition) -> Self {
        let h = Health {
            targets: Gauge::default(),
            binaries: Gauge::default(),
            placed: Counter::default(),
            denied: Gauge::default(),
            started: Counter::default(),
            attach_errors: Family::default(),
            execs_lost: Counter::default(),
            foreign_hits: Counter::default(),
            deferred: Counter::default(),
            cpu_seconds: Counter::default(),
            resident_bytes: Gauge::default(),
        };
        let r = e.registry_mut();
        r.register("gcprobe_targets", "Go processes gcprobe watches now", h.targets.clone());
        r.register("gcprobe_processes_denied", "Processes the last /proc sweep was not allowed to look at (CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH let it)", h.denied.clone());
        r.register("gcprobe_binaries", "Go executables with gcprobe's probes in place (lingering ones included)", h.binaries.clone());
        r.register("gcprobe_binary_attaches", "Times a Go executable's probes were placed (once per binary while its processes come and go within --grace)", h.placed.clone());
        r.register("gcprobe_go_processes_started", "Go processes gcprobe began watching, short-lived ones included", h.started.clone());
        r.register("gcprobe_attach_errors", "Go processes gcprobe could not watch, by reason", h.attach_errors.clone());
        r.register("gcprobe_exec_events_lost", "Exec events the kernel's ring had no room for (the next /proc sweep finds those processes)", h.execs_lost.clone());
        r.register("gcprobe_foreign_hits", "Probe hits in processes of a probed binary before gcprobe watched them (a trap each)", h.foreign_hits.clone());
        r.register("gcprobe_bursts_deferred", "Allocation bursts that waited because the agent was over --agent-cpu", h.deferred.clone());
        r.register("gcprobe_agent_cpu_seconds", "CPU time gcprobe itself has used (user and system)", h.cpu_seconds.clone());
        r.register("gcprobe_agent_resident_bytes", "gcprobe's own resident memory (its mapped BPF rings included)", h.resident_bytes.clone());
        h
    }
}

/// A watched process's node-mode extras.
struct Watch {
    labels: Option<Labels>,
    /// Its pauses already given to the histogram.
    pauses_seen: u64,
}

struct Agent {
    opts: NodeOptions,
    fleet: Fleet,
    discovery: Discovery<super::discover::BuildInfoClassifier>,
    roots: LabelRoots,
    exposition: Exposition,
    health: Health,
    watches: HashMap<u32, Watch>,
    /// Binaries every process of which is refused, and why.
    refused: HashMap<FileKey, Refusal>,
    exits: mpsc::UnboundedSender<u32>,
}

/// Runs node mode until SIGINT or SIGTERM.
pub fn run(opts: NodeOptions) -> Result<(), NodeError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve(opts))
}

/// Makes the recording directory if need be, and proves it takes a file:
/// a bad path is an error at start, not a warning per process later.
fn check_record_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| NodeError::RecordDir { dir: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
    let probe = dir.join(format!(".gcprobe-write-test-{}", std::process::id()));
    // Made as the recordings will be: private, and not through a link.
    drop(crate::outfile::create(&probe, crate::outfile::Existing::Refuse, crate::outfile::Access::Private).map_err(|e| err(e.into()))?);
    std::fs::remove_file(&probe).map_err(|e| err(e.into()))
}

async fn serve(opts: NodeOptions) -> Result<(), NodeError> {
    // First: a SIGTERM while the node is still starting (a pod deleted as it
    // comes up) then ends it cleanly at the loop's first turn.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    if let Some(p) = &opts.fleet.record {
        check_record_dir(&p.dir)?;
    }
    let listener = http::bind(opts.listen).await.map_err(|source| NodeError::Listen { addr: opts.listen, source })?;
    let (fleet, ring) = Fleet::start(opts.fleet.clone())?;
    let execs = fleet.watch_execs()?;
    let (queries_tx, mut queries) = mpsc::channel::<Query>(64);
    tokio::spawn(http::serve(listener, queries_tx));
    let (exits, mut exited) = mpsc::unbounded_channel();
    let mut exposition = Exposition::new(opts.top_callsites);
    let health = Health::register(&mut exposition);
    let mut agent = Agent { opts, fleet, discovery: Discovery::new(), roots: LabelRoots::default(), exposition, health, watches: HashMap::new(), refused: HashMap::new(), exits };
    // SAFETY: each RingBuf owns its descriptor and keeps it open, unchanged,
    // for as long as its AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(std::io::Error::from)?;
    let changes = agent.discovery.sweep();
    agent.apply(changes, ring.get_mut());
    agent.warn_denied();
    if !agent.opts.quiet {
        eprintln!("gcprobe: node mode on http://{}/metrics: watching {} Go process(es) of {} binary(ies); exec events {}", agent.opts.listen, agent.watches.len(), agent.fleet.binaries(), if execs.typed { "from the BTF tracepoint" } else { "from the raw tracepoint" });
    }
    let mut exec_fd = unsafe { AsyncFd::register_with_interest(execs, Interest::READABLE) }.map_err(std::io::Error::from)?;
    let mut flush = tokio::time::interval(intervals::FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(agent.opts.sweep);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    loop {
        let due = agent.fleet.driver_due().map(tokio::time::Instant::from_std);
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                agent.fleet.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            guard = exec_fd.readable_mut() => {
                let mut guard = guard?;
                let pids = guard.get_inner_mut().drain();
                guard.clear_ready();
                for pid in pids {
                    let changes = agent.discovery.look(pid);
                    agent.apply(changes, ring.get_mut());
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                let gone = agent.fleet.fire_due(ring.get_mut());
                agent.forget(gone);
            }
            _ = flush.tick() => {
                let gone = agent.fleet.flush(ring.get_mut());
                agent.forget(gone);
            }
            _ = sweep.tick() => {
                let changes = agent.discovery.sweep();
                agent.apply(changes, ring.get_mut());
                agent.fleet.retire(agent.opts.grace);
            }
            Some(pid) = exited.recv() => agent.end(pid, ring.get_mut()),
            Some(q) = queries.recv() => {
                let a = agent.answer(q.ask, ring.get_mut());
                let _ = q.reply.send(a);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    if !agent.opts.quiet {
        eprintln!("gcprobe: node mode stopping: detaching from {} process(es)", agent.watches.len());
    }
    Ok(())
}

impl Agent {
    /// Says once, at start, which processes the agent may not look at, and
    /// what would let it (when a capability would: a security module or a
    /// foreign user namespace can refuse root too).
    fn warn_denied(&self) {
        let denied = self.discovery.denied();
        if denied.is_empty() {
            return;
        }
        let pids: Vec<String> = denied.iter().take(5).map(u32::to_string).collect();
        let more = if denied.len() > 5 { format!(" and {} more", denied.len() - 5) } else { String::new() };
        let hint = if crate::tracee::process::can_inspect_others() { String::new() } else { ": node mode needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to see other users' processes".to_owned() };
        eprintln!("gcprobe: warning: permission denied on /proc/PID/exe of pid {}{more}; not watched{hint}", pids.join(", "));
    }

    /// Ends what ended, then watches what started and is admitted.
    fn apply(&mut self, changes: Changes, ring: &mut RingBuf<MapData>) {
        for pid in changes.ended {
            self.end(pid, ring);
        }
        for p in changes.started {
            self.start(&p, ring);
        }
        self.health.targets.set(self.watches.len() as i64);
    }

    fn start(&mut self, p: &GoProcess, ring: &mut RingBuf<MapData>) {
        if self.refused.contains_key(&p.file()) || self.fleet.is_target(p.pid()) || p.pid() == std::process::id() {
            return;
        }
        let labels = Labels::of_process(p.pid(), &self.roots).ok();
        if !self.opts.filter.admits(p.exe(), labels.as_ref()) {
            return;
        }
        let added = Process::open(p.pid()).map_err(SessionError::from).and_then(|process| self.fleet.add(process, ring));
        match added {
            Ok(()) => {
                if let Err(e) = session::watch_exit(p.pid(), self.exits.clone()) {
                    eprintln!("gcprobe: warning: pid {}: cannot watch for its exit: {e}", p.pid());
                }
                self.watches.insert(p.pid(), Watch { labels, pauses_seen: 0 });
                self.health.started.inc();
            }
            Err(e) => self.refuse(p, &e),
        }
    }

    /// Counts a process not watched; a reason that holds for its whole
    /// binary is said once and remembered, so its next processes cost nothing.
    fn refuse(&mut self, p: &GoProcess, e: &SessionError) {
        let why = Refusal::of(e);
        self.health.attach_errors.get_or_create(&vec![("reason", why.name().to_owned())]).inc();
        if why.is_the_binarys() {
            self.refused.insert(p.file(), why);
        }
        if why != Refusal::Exited && !self.opts.quiet {
            eprintln!("gcprobe: warning: pid {} ({}): not watched: {}", p.pid(), p.exe(), error_chain(e));
        }
    }

    fn end(&mut self, pid: u32, ring: &mut RingBuf<MapData>) {
        if self.watches.remove(&pid).is_some() {
            self.fleet.remove(pid, ring);
            self.exposition.remove(pid);
            self.health.targets.set(self.watches.len() as i64);
        }
    }

    /// Targets the fleet already ended itself (found gone by a burst):
    /// their node-mode extras and series go too.
    fn forget(&mut self, gone: Vec<u32>) {
        for pid in gone {
            if self.watches.remove(&pid).is_some() {
                self.exposition.remove(pid);
            }
        }
        self.health.targets.set(self.watches.len() as i64);
    }

    fn answer(&mut self, ask: Ask, ring: &mut RingBuf<MapData>) -> Answer {
        // Fresh figures: what the kernel queued since the last flush.
        self.fleet.drain(ring);
        match ask {
            Ask::Metrics { openmetrics } => {
                let text = self.metrics();
                if openmetrics {
                    Answer::ok("application/openmetrics-text; version=1.0.0; charset=utf-8", text.into_bytes())
                } else {
                    Answer::ok("text/plain; version=0.0.4; charset=utf-8", to_prometheus_text(&text).into_bytes())
                }
            }
            Ask::Targets => Answer::ok("application/json", self.targets_json()),
            Ask::Report { params } => self.report(&params),
        }
    }

    /// Brings every target's series and the agent's own up to now.
    fn metrics(&mut self) -> String {
        let pids: Vec<u32> = self.watches.keys().copied().collect();
        for pid in pids {
            let Some(w) = self.watches.get_mut(&pid) else { continue };
            let Some(s) = self.fleet.snapshot(pid, w.pauses_seen) else { continue };
            w.pauses_seen = s.pauses_seen;
            let extra = w.labels.as_ref().map(Labels::pairs).unwrap_or_else(|| Labels::default().pairs());
            self.exposition.update(&TargetFigures { report: &s.report, pauses: &s.new_pauses }, &extra);
        }
        let h = &self.health;
        h.targets.set(self.watches.len() as i64);
        h.binaries.set(self.fleet.binaries() as i64);
        h.denied.set(self.discovery.denied().len() as i64);
        let (lost, foreign) = self.fleet.kernel_counts();
        raise(&h.execs_lost, lost);
        raise(&h.foreign_hits, foreign);
        raise(&h.deferred, self.fleet.bursts_deferred());
        raise(&h.placed, self.fleet.binaries_placed());
        let (cpu, rss) = self_usage();
        let c = h.cpu_seconds.get();
        if cpu > c {
            h.cpu_seconds.inc_by(cpu - c);
        }
        h.resident_bytes.set(rss as i64);
        self.exposition.encode()
    }

    fn targets_json(&self) -> Vec<u8> {
        let mut pids: Vec<u32> = self.watches.keys().copied().collect();
        pids.sort_unstable();
        let targets: Vec<serde_json::Value> = pids
            .iter()
            .filter_map(|&pid| {
                let info = self.fleet.info(pid)?;
                let labels: serde_json::Map<String, serde_json::Value> = self.watches[&pid].labels.as_ref().map(Labels::pairs).unwrap_or_default().into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), v.into())).collect();
                Some(serde_json::json!({ "pid": pid, "exe": info.exe, "go_version": info.go_version, "build_id": info.build_id, "watched_s": info.watched_s, "labels": labels }))
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&serde_json::json!({ "schema": "gcprobe.targets/v1", "targets": targets })).expect("targets serialize");
        s.push('\n');
        s.into_bytes()
    }

    /// `/report?pid=N&format=F`: the report `attach` would give, since the
    /// process was first watched.
    fn report(&mut self, params: &HashMap<String, String>) -> Answer {
        let Some(pid) = params.get("pid") else { return Answer::error(StatusCode::BAD_REQUEST, "/report needs ?pid=N") };
        let Ok(pid) = pid.parse::<u32>() else { return Answer::error(StatusCode::BAD_REQUEST, format!("pid {pid:?} is not a process ID")) };
        let format = match params.get("format").map(String::as_str).unwrap_or("json") {
            "json" => Format::Json,
            "text" => Format::Text,
            "pprof" => Format::Pprof,
            "perfetto" => Format::Perfetto,
            "prometheus" => Format::Prometheus,
            "html" => Format::Html,
            other => return Answer::error(StatusCode::BAD_REQUEST, format!("format {other:?}: text, json, pprof, perfetto, prometheus or html")),
        };
        let window = match params.get("window").map(|w| humantime::parse_duration(w)) {
            None => None,
            Some(Ok(w)) if !w.is_zero() => Some(w),
            Some(_) => return Answer::error(StatusCode::BAD_REQUEST, format!("window {:?}: a duration such as 60s or 5m", params["window"])),
        };
        if let Some(extra) = params.keys().find(|k| !["pid", "format", "window"].contains(&k.as_str())) {
            return Answer::error(StatusCode::BAD_REQUEST, format!("unknown parameter {extra:?}: /report takes pid, format and window"));
        }
        if !self.watches.contains_key(&pid) {
            return Answer::error(StatusCode::NOT_FOUND, format!("pid {pid} is not watched (see /targets)"));
        }
        let Some(body) = self.fleet.render(pid, format, self.opts.stack_depth, window) else { return Answer::error(StatusCode::NOT_FOUND, format!("pid {pid} is not watched (see /targets)")) };
        let content_type = match format {
            Format::Json | Format::Perfetto => "application/json",
            Format::Pprof => "application/octet-stream",
            Format::Text => "text/plain; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        };
        Answer::ok(content_type, body)
    }
}

/// This process's CPU seconds so far and resident bytes now.
fn self_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let rss = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()).map_or(0, |p| p * page);
    (secs(ru.ru_utime) + secs(ru.ru_stime), rss)
}
