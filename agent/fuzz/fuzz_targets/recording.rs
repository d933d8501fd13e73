#![no_main]
//! `gcprobe report FILE` on any bytes: frames, ops, replay, the report, every
//! output format the CLI offers and every `--fail-on` metric give an output
//! or an error, never a panic, a hang or an unbounded allocation.
use clap::ValueEnum as _;
use gcprobe::{
    record::frame::{self, FRAME_HEADER_LEN, HEADER_LEN},
    render::{Format, RecordedReport},
    report::rules::{self, Rule},
};
use libfuzzer_sys::fuzz_target;

/// One rule per metric, each in the unit it takes (the parser is strict).
fn every_rule() -> Vec<Rule> {
    rules::metrics()
        .map(|m| ["1ms", "1", "1MB/s", "1MB", "30%"].iter().find_map(|t| format!("{m} >= {t}").parse().ok()).unwrap_or_else(|| panic!("no threshold parses for {m}")))
        .collect()
}

/// Rewrites every frame's checksum to match its (mutated) payload: else
/// almost every mutation only ends the file at a corrupt frame, and the
/// ops and JSON behind it are never reached. Lengths are left as they are.
fn reseal(data: &mut [u8]) {
    let mut at = HEADER_LEN;
    while let Some(h) = data.get(at..at + FRAME_HEADER_LEN) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = h[4];
        let start = at + FRAME_HEADER_LEN;
        let Some(payload) = data.get(start..start.saturating_add(len)) else { return };
        let crc = frame::checksum(kind, payload);
        data[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        at = start + len;
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes once through the framing, checksums and all.
    let _ = frame::read_frames(data);
    let mut data = data.to_vec();
    reseal(&mut data);
    let Ok(mut r) = RecordedReport::from_bytes("fuzz", &data) else { return };
    for &format in Format::value_variants() {
        let out = r.render(format, 8);
        assert!(!out.is_empty(), "{format:?} rendered nothing");
    }
    let _ = rules::evaluate(&every_rule(), &r.report);
});
