//! `--log-probes`: the kernel program's rare diagnostics (aya-log records
//! from probe-ebpf) as `gcprobe: probe: ...` lines on stderr.
use std::{future::Future, io, os::fd::AsRawFd as _};

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::{unix::AsyncFd, Interest};

/// Prints every record it is given: the kernel sends them only when the user
/// asked (--log-probes), so they are shown whatever RUST_LOG filters.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("gcprobe: probe: {}", record.args());
    }

    fn flush(&self) {}
}

/// The reader of the kernel's log ring buffer.
pub struct ProbeLog(EbpfLogger<Stderr>);

impl ProbeLog {
    /// Takes the object's log map; the records flow only if it was loaded
    /// with LOG_PROBES set.
    pub fn init(ebpf: &mut Ebpf) -> Result<Self, aya_log::Error> {
        EbpfLogger::init_with_logger(ebpf, Stderr).map(Self)
    }

    /// Prints what the kernel has queued so far.
    pub fn flush(&mut self) {
        self.0.flush();
    }

    /// Runs `fut`, printing the kernel's records as they arrive (none when
    /// `log` is None): on the session's own runtime, no thread of its own.
    pub async fn alongside<T>(log: Option<&mut Self>, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let Some(log) = log else { return fut.await };
        // Readiness only. SAFETY: the logger owns the fd and keeps it open,
        // unchanged, for all of this call, which `ready` does not outlive.
        let ready = unsafe { AsyncFd::register_with_interest(log.0.as_raw_fd(), Interest::READABLE) }?;
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                guard = ready.readable() => {
                    let mut guard = guard?;
                    log.flush();
                    guard.clear_ready();
                }
            }
        }
    }
}
