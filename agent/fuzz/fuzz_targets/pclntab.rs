#![no_main]
//! The pclntab decoders on arbitrary table bytes: header, functab, _func,
//! pc-value tables, names, file table. Errors are fine; panics and hangs are not.
use std::{path::Path, sync::OnceLock};

use gcprobe::{tracee::binary::Binary, tracee::buildinfo::GoVersion, tracee::pclntab::Pclntab};
use libfuzzer_sys::fuzz_target;

/// Any valid ELF will do as the surrounding binary; this one is always at hand.
fn host() -> &'static Binary {
    static BIN: OnceLock<Binary> = OnceLock::new();
    BIN.get_or_init(|| Binary::open(&std::env::current_exe().unwrap()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    for go in [GoVersion::new(1, 19, 0), GoVersion::new(1, 24, 0)] {
        let Ok(tab) = Pclntab::from_table(host(), go, 0x40_0000, data.to_vec()) else { continue };
        for f in tab.functions().take(256) {
            let Ok(f) = f else { break };
            for pc in [f.entry, f.entry + f.size / 2, f.entry.wrapping_sub(1)] {
                let _ = tab.frames(pc);
            }
            let _ = tab.function(&f.name);
        }
    }
    let _ = Path::new("");
});
