//! A session's results in the format asked for, to a file or stdout.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    ingest::aggregate::Aggregator,
    export,
    analysis::facts::Facts,
    record::{self, frame::DamageCause, End, Meta, RecordError, Replayed},
    report::{self, Report},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The human report.
    Text,
    /// The report as JSON (gcprobe.report/v1).
    Json,
    /// Allocations as a gzipped pprof profile, for `go tool pprof` (needs -o when stdout is a terminal).
    Pprof,
    /// The GC timeline as Chrome trace-event JSON, for ui.perfetto.dev.
    Perfetto,
    /// The report's figures as Prometheus metrics (text format 0.0.4): the families node mode serves, for node_exporter's textfile collector or promtool.
    Prometheus,
    /// One self-contained HTML page (nothing loaded from the network): headline figures, culprit cards with their fixes, an allocation flame graph, pauses and the live heap over time.
    Html,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("pprof profiles are binary: write one to a file with -o FILE, or pipe stdout")]
    BinaryToTerminal,
    #[error(transparent)]
    Open(#[from] crate::outfile::OutputError),
    #[error("writing the report to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where and how the results go.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub format: Format,
    /// Frames per callsite in the text report.
    pub stack_depth: usize,
    /// A file, or stdout.
    pub path: Option<&'a Path>,
}

/// Writes the session's results as asked.
pub fn write(to: Output<'_>, report: &Report, meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> Result<(), RenderError> {
    refuse_binary_to_terminal(&to)?;
    write_bytes(to.path, &bytes(to.format, to.stack_depth, report, meta, end, agg, facts))
}

/// A binary format is not written onto a terminal.
pub fn refuse_binary_to_terminal(to: &Output<'_>) -> Result<(), RenderError> {
    use std::io::IsTerminal as _;
    if to.format == Format::Pprof && to.path.is_none() && io::stdout().is_terminal() {
        return Err(RenderError::BinaryToTerminal);
    }
    Ok(())
}

/// A recording read and reported: `gcprobe report FILE` from the file's
/// bytes, in memory, whatever they hold (the fuzz target drives this too).
pub struct RecordedReport {
    pub report: Report,
    /// Why the report covers less than the file, when it does (also among the report's warnings).
    pub damage: Option<String>,
    replayed: Replayed,
}

impl RecordedReport {
    /// Replays `data` and builds its report. Nothing named in the file is
    /// opened or run: every fact comes from the bytes. `name` labels errors.
    pub fn from_bytes(name: &str, data: &[u8]) -> Result<Self, RecordError> {
        Self::with_app_prefixes(name, data, &[])
    }

    /// The same, counting `extra` import paths as the owner's code too
    /// (`gcprobe report --app-prefix`).
    pub fn with_app_prefixes(name: &str, data: &[u8], extra: &[crate::analysis::owner::AppPrefix]) -> Result<Self, RecordError> {
        let mut replayed = record::replay_bytes(name, data)?;
        let Replayed { meta, end, agg, facts, damage, bytes } = &mut replayed;
        meta.app = std::mem::take(&mut meta.app).with_prefixes(extra);
        let mut report = meta.report(end, agg, facts);
        let damage = damage.map(|d| {
            let what = match d.cause {
                DamageCause::Truncated => "cut short",
                DamageCause::Corrupt => "corrupt",
                DamageCause::BadLength => "corrupt (impossible frame length)",
            };
            format!("recording {what} at byte {} of {bytes}: the last {} bytes were lost; this report covers the first {:.1}s", d.offset, d.bytes_lost, end.progress.elapsed_s)
        });
        // Whole frames, but no END: the recorder was killed, or its disk filled.
        let damage = damage.or_else(|| {
            (end.ended_by == crate::report::EndedBy::RecordingCutShort).then(|| {
                format!("recording cut short: it ends without its final frame (the recorder was killed, or its disk was full); this report covers the first {:.1}s", end.progress.elapsed_s)
            })
        });
        report.warnings.extend(damage.clone());
        Ok(Self { report, damage, replayed })
    }

    /// Its stacks and pauses, as the HTML pages draw them.
    pub fn drawn(&mut self) -> export::html::Drawn {
        let Replayed { agg, facts, .. } = &mut self.replayed;
        export::drawn(agg, facts)
    }

    /// The report in `format`, as `gcprobe report --format` writes it.
    pub fn render(&mut self, format: Format, stack_depth: usize) -> Vec<u8> {
        let Replayed { meta, end, agg, facts, .. } = &mut self.replayed;
        bytes(format, stack_depth, &self.report, meta, end, agg, facts)
    }
}

/// The session's results in `format`, in memory.
pub fn bytes(format: Format, stack_depth: usize, report: &Report, meta: &Meta, end: &End, agg: &Aggregator, facts: &mut dyn Facts) -> Vec<u8> {
    match format {
        Format::Pprof => {
            let mut b = Vec::new();
            export::allocation_profile(meta, end, agg, facts, &mut b).expect("writing to memory");
            b
        }
        Format::Perfetto => {
            let mut s = serde_json::to_string(&export::gc_timeline(meta, end, agg, facts)).expect("trace serializes");
            s.push('\n');
            s.into_bytes()
        }
        Format::Text => report::text::render(report, stack_depth).into_bytes(),
        Format::Prometheus => report::text::printable(export::report_metrics(report, agg, facts)).into_bytes(),
        Format::Html => export::report_page(report, agg, facts).into_bytes(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("report serializes");
            s.push('\n');
            s.into_bytes()
        }
    }
}

/// Writes finished output to the file, or to stdout.
pub fn write_bytes(output: Option<&Path>, bytes: &[u8]) -> Result<(), RenderError> {
    match output {
        Some(path) => {
            // A report is meant to be shared: the umask's mode, not a private one.
            let mut f = crate::outfile::create(path, crate::outfile::Existing::Replace, crate::outfile::Access::Umask)?;
            f.write_all(bytes).map_err(|source| RenderError::Write { path: path.to_owned(), source })
        }
        None => io::stdout().lock().write_all(bytes).map_err(|source| RenderError::Write { path: "<stdout>".into(), source }),
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use clap::ValueEnum as _;
    use gcprobe_common::kind as ev;

    use super::*;
    use crate::{
        analysis::appendloop::{LoopKind, LoopReport},
        error::error_chain,
        ingest::{events::encode_full, ops::Op},
        kernel::probes::{KernelStats, Mechanism},
        record::{frame::FrameWriter, kind, test_meta, Progress, Symbols},
        report::{AgentReport, EndedBy},
        tracee::frame::Frame,
    };

    fn progress(t: f64) -> Progress {
        Progress { elapsed_s: t, kernel: KernelStats::default(), mechanism: Mechanism::UprobeMulti, target_cpu_s: Some(t), agent: AgentReport { cpu_s: 0.1, max_rss_kib: 1 }, runtime_samples_off_after_s: None }
    }

    /// A whole recording in memory: META, one flush (SYMBOLS, then OPS ending
    /// in a checkpoint at 1 s), and an END frame.
    fn recording(meta: &Meta, symbols: &Symbols, ops: &[Op<'_>]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.frame(kind::META, &serde_json::to_vec(meta).unwrap()).unwrap();
        w.frame(kind::SYMBOLS, &serde_json::to_vec(symbols).unwrap()).unwrap();
        let mut b = Vec::new();
        for op in ops {
            op.encode(&mut b);
        }
        let checkpoint = serde_json::to_vec(&progress(1.0)).unwrap();
        Op::Checkpoint(&checkpoint).encode(&mut b);
        w.frame(kind::OPS, &b).unwrap();
        let end = End { ended_by: EndedBy::Duration, progress: progress(1.0), program_exit: None };
        w.frame(kind::END, &serde_json::to_vec(&end).unwrap()).unwrap();
        w.into_inner()
    }

    fn every_format(r: &mut RecordedReport) -> Vec<(Format, Vec<u8>)> {
        Format::value_variants().iter().map(|&f| (f, r.render(f, 8))).collect()
    }

    /// Found by fuzzing: two pauses of almost 2^64 ns each overflowed the
    /// pause total (a panic in a checked build, a wrapped total in release).
    /// It now saturates, and every format still renders.
    #[test]
    fn pauses_summing_past_u64_saturate() {
        let pause = encode_full(ev::STW_START, 0, 5, [u64::MAX, 2, 1, 0, 0], &[1, 2], 0, 0);
        let data = recording(&test_meta(), &Symbols::default(), &[Op::Ring(&pause), Op::Ring(&pause)]);
        let mut r = RecordedReport::from_bytes("hostile", &data).unwrap();
        assert_eq!((r.report.gc.stw.count, r.report.gc.stw.total_ms), (2, u64::MAX as f64 / 1e6));
        assert!(every_format(&mut r).iter().all(|(_, b)| !b.is_empty()));
    }

    /// Found by fuzzing: allocations whose sizes sum past 2^64 overflowed
    /// the allocation total and the callsite's bytes.
    #[test]
    fn allocation_bytes_summing_past_u64_saturate() {
        let alloc = encode_full(ev::MALLOC, 1, 5, [u64::MAX, 0, 1, 0, 0], &[0x20, 0x700], 0, 0);
        let data = recording(&test_meta(), &Symbols::default(), &[Op::Ring(&alloc), Op::Ring(&alloc)]);
        let mut r = RecordedReport::from_bytes("hostile", &data).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&r.render(Format::Json, 8)).unwrap();
        assert_eq!(json["events"]["mallocgc"], 2, "{:#}", json["events"]);
        assert_eq!(json["callsites"][0]["bytes"], u64::MAX, "{:#}", json["callsites"]);
    }

    /// `gcprobe report` opens nothing a recording names: not the target's
    /// executable, not a frame's source file, not a loop's. The names are
    /// a FIFO (opening it would block), a file beside it (watched with
    /// inotify for any open or read), /etc/shadow and /proc/self/mem.
    #[test]
    fn a_report_opens_no_path_the_recording_names() {
        let dir = std::env::temp_dir().join(format!("gcprobe-hostile-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (fifo, secret) = (dir.join("main.go"), dir.join("secret.go"));
        std::fs::write(&secret, "for hunter2 := range xs {\n").unwrap();
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated paths; the inotify fd is ours and closed below.
        let watch = unsafe {
            assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0);
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let d = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
            assert!(libc::inotify_add_watch(fd, d.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) >= 0);
            fd
        };
        let (fifo_s, secret_s) = (fifo.to_str().unwrap().to_owned(), secret.to_str().unwrap().to_owned());
        let mut meta = test_meta();
        meta.target.exe = fifo_s.clone();
        meta.exe_path = "/proc/self/mem".into();
        let frame = |function: &str, file: &str| vec![Frame { function: function.into(), file: Some(file.into()), line: Some(1), inlined: false }];
        let symbols = Symbols {
            frames: vec![(0x500, frame("main.fill", &fifo_s)), (0x600, frame("main.main", "/etc/shadow")), (0x700, frame("main.alloc", &secret_s)), (0x800, frame("main.put", "/proc/self/mem"))],
            loops: vec![(vec![0x500, 0x600], Some(LoopReport { file: Some(secret_s.clone()), line: Some(1), kind: LoopKind::Unknown, over: None }))],
            ..Symbols::default()
        };
        let grow = encode_full(ev::GROWSLICE, 0, 5, [0, 9, 8, 1, 0xe7], &[0x10, 0x500, 0x600], 0, 0);
        let alloc = encode_full(ev::MALLOC, 1, 6, [64, 0, 1, 0, 0], &[0x20, 0x700, 0x600], 0, 0);
        let insert = encode_full(ev::MAP_INSERT, 2, 7, [0x7a, 0xbeef, 0, 0, 0], &[0x30, 0x800], 0, 0);
        let data = recording(&meta, &symbols, &[Op::Ring(&grow), Op::Ring(&alloc), Op::Ring(&insert)]);
        // In a thread: a report that opened the FIFO would block, and the
        // test must fail rather than hang.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = RecordedReport::from_bytes("hostile", &data).unwrap();
            let _ = tx.send(every_format(&mut r));
        });
        let Ok(outputs) = rx.recv_timeout(Duration::from_secs(60)) else {
            // Let the blocked reader go before failing.
            let _ = std::os::unix::fs::OpenOptionsExt::custom_flags(std::fs::OpenOptions::new().write(true), libc::O_NONBLOCK).open(&fifo);
            panic!("the report blocked: it opened the FIFO the recording names");
        };
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our own buffer from our own fd.
        let got = unsafe { libc::read(watch, buf.as_mut_ptr().cast(), buf.len()) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: our fd, closed once.
        unsafe { libc::close(watch) };
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((got, errno), (-1, Some(libc::EAGAIN)), "something opened or read a file the recording names");
        let text = String::from_utf8_lossy(&outputs.iter().find(|(f, _)| *f == Format::Text).unwrap().1).into_owned();
        // Named, as strings, never read: the loop's line stays unknown.
        assert!(text.contains(&fifo_s) && text.contains("main.fill"), "{text}");
        assert!(outputs.iter().all(|(_, b)| !String::from_utf8_lossy(b).contains("hunter2")));
    }

    /// A name in a recording that holds a terminal escape (here: set the
    /// window title, then ring the bell) reaches text output without it.
    #[test]
    fn escape_sequences_in_names_do_not_reach_the_terminal() {
        let mut meta = test_meta();
        meta.target.exe = "/bin/\x1b]0;owned\x07x".into();
        let symbols = Symbols { frames: vec![(0x700, vec![Frame { function: "main.\x1b[2Jwipe\u{9b}31m".into(), file: Some("a.go".into()), line: Some(3), inlined: false }])], ..Symbols::default() };
        let alloc = encode_full(ev::MALLOC, 1, 5, [64, 0, 1, 0, 0], &[0x20, 0x700], 0, 0);
        let mut r = RecordedReport::from_bytes("hostile", &recording(&meta, &symbols, &[Op::Ring(&alloc)])).unwrap();
        for format in [Format::Text, Format::Prometheus, Format::Html] {
            let out = String::from_utf8(r.render(format, 8)).unwrap();
            assert!(!out.contains(['\x1b', '\x07', '\u{9b}']), "{format:?}: {out}");
            assert!(out.contains("/bin/\u{fffd}]0;owned\u{fffd}x"), "{format:?}: {out}");
        }
        let text = String::from_utf8(r.render(Format::Text, 8)).unwrap();
        assert!(text.contains("main.\u{fffd}[2Jwipe\u{fffd}31m"), "{text}");
    }

    /// Every hostile file that fails, fails with one line that names it and what is wrong.
    #[test]
    fn hostile_recordings_fail_with_one_line() {
        use crate::record::frame::{FRAME_HEADER_LEN, HEADER_LEN};
        let meta = serde_json::to_vec(&test_meta()).unwrap();
        let frames = |list: &[(u8, &[u8])]| {
            let mut w = FrameWriter::new(Vec::new()).unwrap();
            for (k, p) in list {
                w.frame(*k, p).unwrap();
            }
            w.into_inner()
        };
        let ops_at = HEADER_LEN + FRAME_HEADER_LEN + meta.len();
        let cases = [
            (b"GCPROBE".to_vec(), "hostile: not a gcprobe recording (no GCPROBE header)".to_owned()),
            (frames(&[]), "hostile: the recording has no metadata frame (it was cut short before the session started)".into()),
            (frames(&[(kind::META, b"[1]")]), "hostile: frame at byte 16 is not valid metadata: invalid type: integer `1`, expected a string at line 1 column 2".into()),
            (frames(&[(kind::META, &meta)]), "hostile: the recording holds no events (it was cut short as the session started)".into()),
            (frames(&[(kind::META, &meta), (kind::OPS, &[99])]), format!("hostile: frame at byte {ops_at} is not valid events: OPS frame is malformed at byte 0: unknown op tag")),
            (frames(&[(kind::META, &meta), (kind::OPS, &[1, 0xff, 0xff, 0xff, 0xff])]), format!("hostile: frame at byte {ops_at} is not valid events: OPS frame is malformed at byte 5: op runs past the frame")),
        ];
        for (data, says) in cases {
            let e = RecordedReport::from_bytes("hostile", &data).err().unwrap_or_else(|| panic!("{says}: reported"));
            assert_eq!(error_chain(&e), says);
        }
    }
}
