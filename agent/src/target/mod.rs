//! What a process and its binary are: the process and its memory, the ELF file, Go's build info, pclntab and DWARF symbolization, type descriptors, runtime variables found in the machine code (the GC controller, map headers), and starting a program held at its first instruction.
pub mod process;
pub mod binary;
pub mod buildinfo;
pub mod pclntab;
pub mod symbolize;
pub mod symbols;
pub mod gotypes;
pub mod memory;
pub mod launch;
pub mod staticrefs;
pub mod gcctl;
pub mod gomaps;
