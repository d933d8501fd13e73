//! A probed function whose prologue grows the stack runs again from its
//! entry (runtime.morestack jumps back to it with the same arguments), so
//! gcprobe probes the instruction after the prologue's stack check. The
//! stackedge fixture appends once in each of a few hundred goroutines whose
//! stacks end at every depth: for some of them the stack runs out in
//! growslice's prologue. A uprobe of the kernel's own (tracefs) on
//! growslice's entry counts those second entries; gcprobe counts each
//! append once.
use std::path::Path;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

use gcprobe_tests::*;

const TRACING: &str = "/sys/kernel/tracing";

/// A uprobe event on one file offset, counted by the kernel
/// (uprobe_profile); removed on drop.
struct EntryCounter {
    event: String,
}

impl EntryCounter {
    fn place(exe: &Path, offset: u64) -> Self {
        let event = format!("gcprobe_test_{}", std::process::id());
        let define = format!("p:gcprobe_tests/{event} {}:{offset:#x}\n", exe.display());
        append(&format!("{TRACING}/uprobe_events"), &define).unwrap_or_else(|e| panic!("{TRACING}/uprobe_events: {define:?}: {e}"));
        let c = EntryCounter { event };
        std::fs::write(c.control("enable"), "1").unwrap();
        c
    }

    fn control(&self, file: &str) -> String {
        format!("{TRACING}/events/gcprobe_tests/{}/{file}", self.event)
    }

    /// Its hits so far: uprobe_profile's `  FILE EVENT HITS` line.
    fn hits(&self) -> u64 {
        let profile = std::fs::read_to_string(format!("{TRACING}/uprobe_profile")).unwrap();
        let line = profile.lines().find(|l| l.split_whitespace().nth(1) == Some(self.event.as_str())).unwrap_or_else(|| panic!("{} not in uprobe_profile:\n{profile}", self.event));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }
}

impl Drop for EntryCounter {
    fn drop(&mut self) {
        let _ = std::fs::write(self.control("enable"), "0");
        let _ = append(&format!("{TRACING}/uprobe_events"), &format!("-:gcprobe_tests/{}\n", self.event));
    }
}

/// Appends `text` to a tracefs file, which takes one definition per write.
fn append(path: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new().append(true).open(path)?.write_all(text.as_bytes())
}

/// The file offset of `symbol`'s entry, from the ELF's own symbol table and
/// segments.
fn entry_offset(exe: &Path, symbol: &str) -> u64 {
    let data = std::fs::read(exe).unwrap();
    let f = object::File::parse(&*data).unwrap();
    let addr = f.symbols().find(|s| s.name() == Ok(symbol)).unwrap_or_else(|| panic!("{symbol} not in {}", exe.display())).address();
    let seg = f.segments().find(|s| (s.address()..s.address() + s.size()).contains(&addr)).unwrap();
    addr - seg.address() + seg.file_range().0
}

#[test]
fn a_function_run_again_after_its_stack_grew_is_counted_once() {
    if !privileged("a_function_run_again_after_its_stack_grew_is_counted_once") {
        return;
    }
    let line = fixtures::marker_line("stackedge", "gcprobe:stackedge-append");
    for go in [pins::GO_DEBIAN, "1.22.10", "1.27.3"] {
        let exe = fixtures::build("stackedge", go, Flavor::Default).unwrap();
        let entries = EntryCounter::place(&exe, entry_offset(&exe, "runtime.growslice"));
        let dir = scratch_dir("stack-check", go);
        let report = dir.join("report.json");
        let out = std::process::Command::new(gcprobe_bin())
            .args(["run", "--quiet", "--mode", "exact", "--format", "json", "-o"])
            .arg(&report)
            .arg("--")
            .arg(&exe)
            .args(["-rounds", "4", "-depths", "96"])
            // The runtime's fixed 2 KiB first stack, not the average of those it has scanned.
            .env("GODEBUG", "adaptivestackstart=0")
            .output()
            .unwrap();
        let stderr = stderr_text(&out);
        assert!(out.status.success(), "Go {go}: {stderr}");
        let appends: u64 = stderr.lines().find_map(|l| l.strip_prefix("appends=")).unwrap_or_else(|| panic!("Go {go}: {stderr}")).parse().unwrap();
        assert_eq!(appends, 4 * 96);
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let rows = r["callsites"].as_array().unwrap();
        let row = rows
            .iter()
            .find(|c| c["probe"] == "growslice" && c["line"] == line && str_of(c, "file").ends_with("stackedge/main.go"))
            .unwrap_or_else(|| panic!("Go {go}: no growslice row at line {line}: {rows:#?}"));
        // The kernel saw growslice entered more often than the program appended (plus the
        // runtime's own few growths): some appends entered it twice.
        let entered = entries.hits();
        let others = r["events"]["growslice"].as_u64().unwrap() - row["count"].as_u64().unwrap();
        assert!(entered > appends + others, "Go {go}: growslice entered {entered} times for {appends} appends and {others} other growths");
        eprintln!("Go {go}: growslice entered {entered} times for {appends} appends and {others} other growths; gcprobe counted {}", row["count"]);
        // gcprobe counted each append once, and its 8 bytes once.
        assert_eq!((row["count"].as_u64(), row["bytes"].as_u64()), (Some(appends), Some(8 * appends)), "Go {go}: entered {entered} times");
        drop(entries);
    }
}
