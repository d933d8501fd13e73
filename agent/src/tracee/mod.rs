//! The traced program (the tracee): what a process and its binary are. The process and its memory, the ELF file, Go's build info, pclntab and DWARF symbolization, type descriptors, runtime variables found in the machine code (the GC controller, map headers), who the process is (its container, pod and systemd unit), and starting a program held at its first instruction. (Not `target/`: that is Cargo's build directory.)
pub mod process;
pub mod binary;
pub mod buildinfo;
pub mod pclntab;
pub mod symbolize;
pub mod symbols;
pub mod frame;
pub mod gotypes;
pub mod memory;
pub mod launch;
pub mod caps;
pub mod staticrefs;
pub mod gcctl;
pub mod gomaps;
pub mod labels;
