//! The agent's clocks, in one place.
use std::time::Duration;

/// How often the session drains the ring, folds the kernel's counters,
/// reads the GC controller and hands ops to the recorder. The kernel
/// batches wakeups (probe-ebpf's WAKEUP_BYTES): this bounds how long a
/// trickle of events can sit unread.
pub const FLUSH: Duration = Duration::from_millis(200);

/// How often the busiest maps' lengths are read (read-only, /proc/PID/mem),
/// besides at each GC: a leaking service may collect once a minute.
pub const MAP_LENS: Duration = Duration::from_secs(1);
