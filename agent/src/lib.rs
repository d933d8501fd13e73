//! gcprobe: attach to running Go programs with uprobes, find the loop that fills
//! the heap and measure how long the garbage collector stops the world.
pub mod tracee;
pub mod kernel;
pub mod sampling;
pub mod ingest;
pub mod analysis;
pub mod cli;
pub mod error;
pub mod intervals;
pub mod outfile;
pub mod export;
pub mod plan;
pub mod record;
pub mod render;
pub mod report;
pub mod session;
pub mod node;
pub mod units;
