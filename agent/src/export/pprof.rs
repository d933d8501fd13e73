//! Profiles as pprof's profile.proto, gzip-compressed, for `go tool pprof`.
//!
//! Format: <https://github.com/google/pprof/blob/main/proto/profile.proto>.
//! The messages are derived with prost by hand (no protoc, no build script):
//! only the fields written here are declared, and tests decode with the same
//! structs, so they check what the bytes mean rather than the bytes.
use std::{
    collections::HashMap,
    hash::Hash,
    io::{self, Write},
};

use flate2::{write::GzEncoder, Compression};
use prost::Message as _;

use crate::tracee::frame::Frame;

/// One profile: every sample has a value per `sample_types` entry.
#[derive(Debug, Clone, Default)]
pub struct Profile<'a> {
    /// `(type, unit)` per value, e.g. `("alloc_space", "bytes")`. pprof's
    /// convention puts an event count first, with unit "count".
    pub sample_types: Vec<(&'a str, &'a str)>,
    /// What `go tool pprof` shows without `-sample_index`. Written only when
    /// it names one of `sample_types`: pprof would ignore it otherwise and
    /// show the last type, and other readers may not be as lenient.
    pub default_sample_type: Option<&'a str>,
    pub samples: Vec<Sample>,
    /// Start of collection, ns since the Unix epoch.
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub mapping: MappingInfo,
    pub comments: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Leaf first. Return addresses are written as given: the caller decides
    /// how they were symbolized.
    pub pcs: Vec<u64>,
    /// One per sample type; missing ones count as 0, extra ones are dropped.
    pub values: Vec<i64>,
}

/// The one executable every PC belongs to.
#[derive(Debug, Clone, Default)]
pub struct MappingInfo {
    pub file: String,
    pub build_id: Option<String>,
    /// Where the file is mapped (from /proc/PID/maps); `None` writes the span
    /// of the profile's PCs at offset 0. pprof uses it only to find
    /// instructions in the file (`-disasm`, `weblist`), not to name them.
    pub memory: Option<MemoryRange>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryRange {
    pub start: u64,
    pub limit: u64,
    pub file_offset: u64,
}

/// Writes `p` gzip-compressed to `out`. `frames` symbolizes one PC, innermost
/// (inlined) frame first, and is called once per distinct PC.
pub fn write<R: AsRef<[Frame]>>(p: &Profile, frames: impl FnMut(u64) -> R, out: impl Write) -> io::Result<()> {
    let raw = build(p, frames).encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&raw)?;
    gz.finish()?;
    Ok(())
}

/// `pcs` without its leading runtime PCs (those whose innermost frame is
/// runtime code), so the leaf is the user's allocation site; the whole of
/// `pcs` when every PC is runtime. The same rule as Go's own heap profiles
/// (`hideRuntime` in GOROOT/src/runtime/pprof/protomem.go). A PC with no
/// frames counts as user code, as an unknown function does there.
pub fn trim_runtime_leaf<R: AsRef<[Frame]>>(pcs: &[u64], mut frames: impl FnMut(u64) -> R) -> &[u64] {
    match pcs.iter().position(|&pc| !frames(pc).as_ref().first().is_some_and(Frame::is_runtime)) {
        Some(i) => &pcs[i..],
        None => pcs,
    }
}

fn build<R: AsRef<[Frame]>>(p: &Profile, mut frames: impl FnMut(u64) -> R) -> pb::Profile {
    let mut cache: HashMap<u64, R> = HashMap::new();
    for &pc in p.samples.iter().flat_map(|s| &s.pcs) {
        cache.entry(pc).or_insert_with(|| frames(pc));
    }
    let frames_of = |pc: u64| cache.get(&pc).map_or(&[][..], |f| f.as_ref());

    let mut t = Tables::default();
    let mut out = pb::Profile {
        sample_type: p.sample_types.iter().map(|(ty, unit)| pb::ValueType { r#type: t.string(ty), unit: t.string(unit) }).collect(),
        time_nanos: p.time_nanos,
        duration_nanos: p.duration_nanos,
        comment: p.comments.iter().map(|c| t.string(c)).collect(),
        ..Default::default()
    };
    if let Some(d) = p.default_sample_type.filter(|d| p.sample_types.iter().any(|(ty, _)| ty == d)) {
        out.default_sample_type = t.string(d);
    }

    // Merged after trimming: stacks that differ only inside the runtime are
    // one allocation site.
    let width = p.sample_types.len();
    let mut merged: Vec<(&[u64], Vec<i64>)> = Vec::new();
    let mut index: HashMap<&[u64], usize> = HashMap::new();
    for s in &p.samples {
        let pcs = trim_runtime_leaf(&s.pcs, frames_of);
        let i = *index.entry(pcs).or_insert_with(|| {
            merged.push((pcs, vec![0; width]));
            merged.len() - 1
        });
        for (sum, v) in merged[i].1.iter_mut().zip(&s.values) {
            *sum = sum.saturating_add(*v);
        }
    }
    for (pcs, value) in merged {
        let location_id = pcs.iter().map(|&pc| t.location(pc, frames_of(pc))).collect();
        out.sample.push(pb::Sample { location_id, value });
    }

    let file = t.string(&p.mapping.file);
    let build_id = p.mapping.build_id.as_deref().map_or(0, |b| t.string(b));
    let range = p.mapping.memory.unwrap_or_else(|| {
        let addrs = || t.locations.iter().map(|l| l.address);
        let start = addrs().min().unwrap_or(0);
        let limit = addrs().max().map_or(0, |a| a.saturating_add(1));
        MemoryRange { start, limit, file_offset: 0 }
    });
    out.mapping.push(pb::Mapping {
        id: MAPPING_ID,
        memory_start: range.start,
        memory_limit: range.limit,
        file_offset: range.file_offset,
        filename: file,
        build_id,
        // Fully symbolized: without these pprof would look for the binary
        // and symbolize the addresses again.
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    });
    out.location = t.locations;
    out.function = t.functions;
    out.string_table = t.strings;
    out
}

const MAPPING_ID: u64 = 1;

/// The deduplicated tables; every id is its index plus one, as 0 means unset.
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<pb::Function>,
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<pb::Location>,
    location_ids: HashMap<u64, u64>,
}

impl Default for Tables {
    fn default() -> Self {
        // string_table[0] must be "".
        let (strings, string_ids) = (vec![String::new()], HashMap::from([(String::new(), 0)]));
        Self { strings, string_ids, functions: Vec::new(), function_ids: HashMap::new(), locations: Vec::new(), location_ids: HashMap::new() }
    }
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    /// One Function per (name, file): pprof shows a Function's file, so
    /// functions of one name in two files must not share one.
    fn function(&mut self, f: &Frame) -> u64 {
        let (name, filename) = (self.string(&f.function), self.string(f.file.as_deref().unwrap_or("")));
        intern(&mut self.function_ids, &mut self.functions, (name, filename), |id| pb::Function { id, name, system_name: name, filename, start_line: 0 })
    }

    /// One Location per PC; its Lines keep the frames' order, innermost first,
    /// which is the proto's: the last Line is the function the others were
    /// inlined into.
    fn location(&mut self, pc: u64, frames: &[Frame]) -> u64 {
        if let Some(&id) = self.location_ids.get(&pc) {
            return id;
        }
        let line = frames.iter().map(|f| pb::Line { function_id: self.function(f), line: f.line.map_or(0, i64::from) }).collect();
        intern(&mut self.location_ids, &mut self.locations, pc, |id| pb::Location { id, mapping_id: MAPPING_ID, address: pc, line })
    }
}

/// The id of `key` in a table whose ids are index + 1, adding `make(id)` when new.
fn intern<K: Hash + Eq, V>(ids: &mut HashMap<K, u64>, table: &mut Vec<V>, key: K, make: impl FnOnce(u64) -> V) -> u64 {
    *ids.entry(key).or_insert_with(|| {
        let id = table.len() as u64 + 1;
        table.push(make(id));
        id
    })
}

/// The subset of profile.proto written here, field numbers as there.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        path::{Path, PathBuf},
        process::Command,
    };

    use super::*;

    fn frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
        Frame { function: function.into(), file: Some(file.into()), line: Some(line), inlined }
    }

    const MALLOC: u64 = 0x41_1000;
    const GROW: u64 = 0x41_2000;
    const FILL: u64 = 0x48_1000;
    const OTHER: u64 = 0x48_2000;
    const MAIN: u64 = 0x48_3000;
    const UNKNOWN: u64 = 0x48_4000;

    /// `main.fill` inlined into `main.run` at one PC, below runtime frames.
    fn frames(pc: u64) -> Vec<Frame> {
        match pc {
            MALLOC => vec![frame("runtime.mallocgc", "/go/src/runtime/malloc.go", 1000, false)],
            GROW => vec![frame("runtime.growslice", "/go/src/runtime/slice.go", 177, false)],
            FILL => vec![frame("main.fill", "/src/main.go", 63, true), frame("main.run", "/src/main.go", 80, false)],
            OTHER => vec![frame("main.other", "/src/other.go", 12, false)],
            MAIN => vec![frame("main.main", "/src/main.go", 20, false)],
            UNKNOWN => vec![Frame { function: "0x484000".into(), file: None, line: None, inlined: false }],
            _ => vec![],
        }
    }

    fn profile() -> Profile<'static> {
        Profile {
            sample_types: vec![("alloc_objects", "count"), ("alloc_space", "bytes"), ("growslice", "count")],
            default_sample_type: Some("alloc_space"),
            samples: vec![
                Sample { pcs: vec![MALLOC, GROW, FILL, MAIN], values: vec![10, 6400, 5] },
                Sample { pcs: vec![OTHER, MAIN], values: vec![2, 100, 0] },
                // The first stack less one runtime frame: the same site once trimmed.
                Sample { pcs: vec![MALLOC, FILL, MAIN], values: vec![3, 300, 1] },
                Sample { pcs: vec![UNKNOWN, MAIN], values: vec![1, 16, 0] },
            ],
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 5_000_000_000,
            mapping: MappingInfo { file: "/src/main".into(), build_id: Some("abc123".into()), memory: None },
            comments: vec!["gcprobe test".into()],
        }
    }

    fn decode(gz: &[u8]) -> pb::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
        pb::Profile::decode(&raw[..]).unwrap()
    }

    fn written(p: &Profile) -> pb::Profile {
        let mut out = Vec::new();
        write(p, frames, &mut out).unwrap();
        decode(&out)
    }

    fn str_at(p: &pb::Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).unwrap()]
    }

    /// A location's lines as "function file:line", innermost first.
    fn lines(p: &pb::Profile, id: u64) -> Vec<String> {
        let loc = p.location.iter().find(|l| l.id == id).unwrap();
        loc.line
            .iter()
            .map(|l| {
                let f = p.function.iter().find(|f| f.id == l.function_id).unwrap();
                format!("{} {}:{}", str_at(p, f.name), str_at(p, f.filename), l.line)
            })
            .collect()
    }

    #[test]
    fn repeated_numbers_are_packed() {
        // profile.proto is proto3, where repeated scalars are packed: one
        // length-delimited field (tag 1, wire type 2) holding both varints.
        let bytes = pb::Sample { location_id: vec![1, 300], value: vec![-1] }.encode_to_vec();
        assert_eq!(&bytes[..5], &[0x0a, 3, 1, 0xac, 0x02]);
        assert_eq!(bytes[5], 0x12);
    }

    #[test]
    fn tables_follow_the_proto_rules() {
        let p = written(&profile());
        assert_eq!(p.string_table[0], "");
        let types: Vec<_> = p.sample_type.iter().map(|t| (str_at(&p, t.r#type), str_at(&p, t.unit))).collect();
        assert_eq!(types, [("alloc_objects", "count"), ("alloc_space", "bytes"), ("growslice", "count")]);
        assert_eq!(str_at(&p, p.default_sample_type), "alloc_space");
        assert_eq!(p.comment.iter().map(|&c| str_at(&p, c)).collect::<Vec<_>>(), ["gcprobe test"]);
        assert_eq!((p.time_nanos, p.duration_nanos), (1_700_000_000_000_000_000, 5_000_000_000));

        let ids = |v: Vec<u64>| assert_eq!(v, (1..=v.len() as u64).collect::<Vec<_>>());
        ids(p.location.iter().map(|l| l.id).collect());
        ids(p.function.iter().map(|f| f.id).collect());
        let mut strings = p.string_table.clone();
        strings.sort();
        strings.dedup();
        assert_eq!(strings.len(), p.string_table.len(), "strings are deduplicated");

        let [m] = &p.mapping[..] else { panic!("{:?}", p.mapping) };
        assert_eq!((m.id, str_at(&p, m.filename), str_at(&p, m.build_id)), (1, "/src/main", "abc123"));
        assert!(m.has_functions && m.has_filenames && m.has_line_numbers && m.has_inline_frames);
        // No range given: the span of the PCs written.
        assert_eq!((m.memory_start, m.memory_limit, m.file_offset), (FILL, UNKNOWN + 1, 0));
        assert!(p.location.iter().all(|l| l.mapping_id == 1));
    }

    #[test]
    fn one_location_per_pc_with_inlined_lines_innermost_first() {
        let p = written(&profile());
        let addrs: Vec<u64> = p.location.iter().map(|l| l.address).collect();
        assert_eq!(addrs, [FILL, MAIN, OTHER, UNKNOWN], "runtime leaves are not written");
        assert_eq!(lines(&p, 1), ["main.fill /src/main.go:63", "main.run /src/main.go:80"]);
        assert_eq!(lines(&p, 2), ["main.main /src/main.go:20"]);
        assert_eq!(lines(&p, 4), ["0x484000 :0"], "no file or line: \"\" and 0");
        // main.fill, main.run and main.main share a file but not a Function.
        assert_eq!(p.function.len(), 5);
        let f = &p.function[0];
        assert_eq!((str_at(&p, f.name), str_at(&p, f.system_name), str_at(&p, f.filename)), ("main.fill", "main.fill", "/src/main.go"));
    }

    #[test]
    fn samples_are_trimmed_then_merged() {
        let p = written(&profile());
        let samples: Vec<(Vec<u64>, Vec<i64>)> = p.sample.iter().map(|s| (s.location_id.clone(), s.value.clone())).collect();
        assert_eq!(samples, [(vec![1, 2], vec![13, 6700, 6]), (vec![3, 2], vec![2, 100, 0]), (vec![4, 2], vec![1, 16, 0])]);
    }

    #[test]
    fn trim_keeps_all_runtime_stacks_whole() {
        let all_runtime = [MALLOC, GROW];
        assert_eq!(trim_runtime_leaf(&all_runtime, frames), &all_runtime);
        assert_eq!(trim_runtime_leaf(&[MALLOC, GROW, FILL, MAIN], frames), &[FILL, MAIN]);
        // Runtime frames above the user's leaf stay, as in Go's own profiles.
        assert_eq!(trim_runtime_leaf(&[FILL, MALLOC], frames), &[FILL, MALLOC]);
        // No frames: not known to be runtime, so it is the leaf.
        assert_eq!(trim_runtime_leaf(&[MALLOC, 0xdead, MAIN], frames), &[0xdead, MAIN]);
        assert!(trim_runtime_leaf(&[], frames).is_empty());
    }

    #[test]
    fn odd_inputs_still_make_a_valid_profile() {
        let p = written(&Profile::default());
        assert_eq!(p.string_table, [""]);
        assert!(p.sample.is_empty() && p.location.is_empty() && p.function.is_empty());
        assert_eq!(p.mapping.len(), 1);
        assert_eq!(p.default_sample_type, 0);

        let odd = Profile {
            sample_types: vec![("a", "count"), ("b", "bytes")],
            // Names no sample type: left out rather than written dangling.
            default_sample_type: Some("c"),
            samples: vec![
                Sample { pcs: vec![0x1], values: vec![i64::MAX] },
                Sample { pcs: vec![0x1], values: vec![1, 2, 3] },
                Sample { pcs: vec![], values: vec![] },
            ],
            mapping: MappingInfo { memory: Some(MemoryRange { start: 0x40_0000, limit: 0x50_0000, file_offset: 0x1000 }), ..Default::default() },
            ..Default::default()
        };
        let p = written(&odd);
        assert_eq!(p.default_sample_type, 0);
        let values: Vec<_> = p.sample.iter().map(|s| s.value.clone()).collect();
        assert_eq!(values, [vec![i64::MAX, 2], vec![0, 0]], "saturated, padded and cut to two values");
        assert_eq!(lines(&p, 1), Vec::<String>::new(), "a PC without frames has no lines");
        assert_eq!((p.mapping[0].memory_start, p.mapping[0].memory_limit, p.mapping[0].file_offset), (0x40_0000, 0x50_0000, 0x1000));
    }

    #[test]
    fn frames_are_asked_once_per_pc() {
        let mut asked = Vec::new();
        let mut out = Vec::new();
        write(
            &profile(),
            |pc| {
                asked.push(pc);
                frames(pc)
            },
            &mut out,
        )
        .unwrap();
        let n = asked.len();
        asked.sort();
        asked.dedup();
        assert_eq!(n, asked.len());
        assert_eq!(n, 6);
    }

    /// $GCPROBE_GO, else a toolchain `cargo xtask setup` installed (the pinned
    /// default first), else `go` on PATH.
    fn find_go() -> Option<PathBuf> {
        if let Some(go) = std::env::var_os("GCPROBE_GO") {
            return Some(go.into());
        }
        let tools = std::env::var_os("GCPROBE_TOOLS")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/gcprobe")));
        let mut installed: Vec<PathBuf> = tools
            .and_then(|t| std::fs::read_dir(t.join("go")).ok())
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path().join("go/bin/go")))
            .filter(|go| go.is_file())
            .collect();
        // The pinned default ships a prebuilt pprof; Go 1.25+ build it on first
        // use, which takes a while in a fresh GOCACHE.
        installed.sort_by_key(|go| go.to_string_lossy().contains("/1.24.11/"));
        if let Some(go) = installed.pop() {
            return Some(go);
        }
        Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()).then(|| "go".into())
    }

    #[test]
    fn go_tool_pprof_reads_it() {
        let Some(go) = find_go() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("no Go toolchain for `go tool pprof`, and CI=true forbids skipping");
            }
            eprintln!("skipping go_tool_pprof_reads_it: no Go toolchain (set GCPROBE_GO or run `cargo xtask setup`)");
            return;
        };
        let dir = std::env::temp_dir().join(format!("gcprobe-pprof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("heap.pb.gz");
        let mut out = Vec::new();
        write(&profile(), frames, &mut out).unwrap();
        std::fs::write(&file, out).unwrap();

        let pprof = |args: &[&str]| {
            let out = Command::new(&go)
                .args(["tool", "pprof"])
                .args(args)
                .arg(&file)
                .current_dir(&dir)
                // Nothing may land in the user's home, and nothing may be fetched.
                .env("HOME", &dir)
                .env("PPROF_TMPDIR", &dir)
                .env("PPROF_BINARY_PATH", &dir)
                .env("GOTOOLCHAIN", "local")
                .env_remove("GOROOT")
                .output()
                .unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "go tool pprof {args:?}: {}\n{stdout}\n{stderr}", out.status);
            stdout
        };

        let top = pprof(&["-top", "-lines", "-sample_index=alloc_space"]);
        // The first row after the header is the heaviest flat entry.
        let first = top.lines().skip_while(|l| !l.trim_start().starts_with("flat")).nth(1).unwrap_or_default();
        assert!(first.contains("main.fill /src/main.go:63"), "{top}");
        assert!(!top.contains("runtime."), "runtime leaves trimmed: {top}");

        let raw = pprof(&["-raw"]);
        let fill = raw.find("main.fill /src/main.go:63").unwrap_or_else(|| panic!("{raw}"));
        let after = &raw[fill..];
        let run = after.find("main.run /src/main.go:80").unwrap_or_else(|| panic!("{raw}"));
        // Both lines belong to the one location: no location id between them.
        assert!(!after[..run].contains(": 0x"), "{raw}");

        let traces = pprof(&["-traces", "-sample_index=alloc_space"]);
        assert!(traces.contains("main.fill") && traces.contains("main.run") && traces.contains("main.main"), "{traces}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
