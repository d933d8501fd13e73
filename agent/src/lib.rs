//! gcprobe: attach to running Go programs with uprobes, find the loop that fills
//! the heap and measure how long the garbage collector stops the world.
pub mod aggregate;
pub mod binary;
pub mod bursts;
pub mod buildinfo;
pub mod calibrate;
pub mod cli;
pub mod culprits;
pub mod diagnose;
pub mod events;
pub mod gotypes;
pub mod governor;
pub mod loops;
pub mod memory;
pub mod pclntab;
pub mod plan;
pub mod probes;
pub mod record;
pub mod process;
pub mod report;
pub mod rules;
pub mod session;
pub mod symbolize;
pub mod uprobe_multi;
