#![no_main]
//! `.go.buildinfo` parsing: any bytes give a BuildInfo or an error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gcprobe::tracee::buildinfo::parse(Some(data), data);
    let _ = gcprobe::tracee::buildinfo::parse(None, data);
});
