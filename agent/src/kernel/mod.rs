//! The kernel side as the agent drives it: loading the BPF object, attaching uprobes (uprobe_multi or perf events), the per-target config, kernel counters, and calibrating what a hit costs.
pub mod aggmap;
pub mod links;
pub mod probes;
pub mod probelog;
pub mod uprobe_multi;
pub mod calibrate;
pub mod selfmap;
pub mod execs;
