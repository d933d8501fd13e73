#![no_main]
//! DWARF loading and lookups (addr2line/gimli under our wrapper) on arbitrary
//! files: the loader wants a path, so each input goes through a temp file.
use gcprobe::tracee::symbolize::dwarf::Dwarf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("gcprobe-fuzz-dwarf-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(d) = Dwarf::open(&path) {
        for addr in [0u64, 0x1000, 0x40_1000, 0x40_2000, u64::MAX - 1] {
            let _ = d.frames(addr);
        }
    }
    let _ = std::fs::remove_file(&path);
});
