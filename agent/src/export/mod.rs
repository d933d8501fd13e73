//! Writers for formats other tools open: pprof's profile.proto for `go tool pprof`,
//! Chrome trace-event JSON for ui.perfetto.dev and chrome://tracing.
//!
//! Each takes neutral inputs (PCs, values, spans in ktime) and knows nothing of
//! sessions or aggregation, so either side can change without the other.
pub mod perfetto;
pub mod pprof;
