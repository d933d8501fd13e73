#![no_main]
//! ELF parsing and every query the agent makes of a binary, on arbitrary files.
use std::path::Path;

use gcprobe::{tracee::binary::Binary, tracee::buildinfo::GoVersion, tracee::pclntab::Pclntab, tracee::process::Mapping};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bin) = Binary::from_bytes(Path::new("fuzz"), data.to_vec()) else { return };
    let _ = bin.section_data(".go.buildinfo");
    for s in bin.segments.clone() {
        let _ = bin.file_offset(s.vaddr);
        let _ = bin.read_ptr(s.vaddr);
        let _ = bin.bytes_at(s.vaddr, s.filesz as usize);
    }
    let maps = [Mapping { start: 0x5555_0000_0000, end: 0x5555_0010_0000, offset: 0, executable: true, dev_major: 0, dev_minor: 0, inode: 1, path: String::new() }];
    let _ = bin.load_bias(&maps);
    if let Ok(Some(tab)) = Pclntab::parse(&bin, GoVersion::new(1, 24, 0)) {
        for f in tab.functions().take(64).flatten() {
            let _ = tab.frames(f.entry);
        }
    }
});
