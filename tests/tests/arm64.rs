//! arm64, end to end: the cross-built static agent in an emulated arm64 machine
//! (Debian's arm64 cloud kernels under qemu-system-aarch64, `xtask::vm`), attached to
//! arm64 Go fixtures built from source. Each test boots once and runs several checks.
//! Emulation is 10–50x slower than the host: nothing here is a timing assertion.
use std::{path::PathBuf, process::Command};

use gcprobe_tests::*;
use xtask::{
    fixtures::GoArch,
    vm::{Guest, Kernel, Outcome},
};

/// $GCPROBE_ARM64_BIN (set by `cargo xtask test`), else cross-built here.
fn arm64_agent() -> PathBuf {
    match std::env::var_os("GCPROBE_ARM64_BIN") {
        Some(p) => xtask::workspace_root().join(PathBuf::from(p)),
        None => xtask::build::arm64_agent().unwrap_or_else(|e| panic!("cross-building the arm64 agent: {e:#}")),
    }
}

fn arm64_fixture(name: &str, go: &str, flavor: Flavor) -> PathBuf {
    fixtures::build_for(name, go, flavor, GoArch::Arm64).unwrap_or_else(|e| panic!("building {name} for arm64 with Go {go}: {e:#}"))
}

fn boot(guest: Guest) -> Outcome {
    let out = guest.boot().unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{} booted and ran in {:.1} s", out.kernel_package, out.elapsed.as_secs_f64());
    out
}

fn json(out: &Outcome, name: &str) -> serde_json::Value {
    let bytes = out.file(name).unwrap_or_else(|e| panic!("{e:#}"));
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{name}: {e}\n{}", String::from_utf8_lossy(bytes)))
}

/// Guest shell: start `bin`, attach for `secs`, hand back the JSON report as NAME.json.
/// `--duration` counts from gcprobe's start, and reading a binary takes seconds under
/// emulation: callers leave room for it.
fn attach_script(bin: &str, secs: u32) -> String {
    format!("./{bin} >/dev/null & P=$!\nsleep 1\n/gcprobe attach --pid $P --duration {secs}s --format json -o /tmp/{bin}.json\nkill $P\nsend /tmp/{bin}.json {bin}.json\n")
}

/// appendloop's culprit, its `for`, the loop kind, the element type and the fix.
fn assert_culprit_and_loop(r: &serde_json::Value, what: &str) {
    assert_eq!(r["target"]["arch"], "arm64", "{what}");
    eprintln!("{what}: watched for {:.1} s", r["window"]["duration_s"].as_f64().unwrap());
    let c = culprits(r).first().unwrap_or_else(|| panic!("{what}: no culprit: {:#}", r["callsites"]));
    assert_eq!(str_of(c, "function"), "main.(*Index).Names", "{what}: {c:#}");
    assert_eq!(c["line"], fixtures::marker_line("appendloop", "gcprobe:culprit"), "{what}: {c:#}");
    assert_eq!(c["loop"]["line"], fixtures::marker_line("appendloop", "gcprobe:for-names"), "{what}: {c:#}");
    assert_eq!(c["loop"]["kind"], "map", "{what}: {c:#}");
    assert_eq!(c["elem_type"]["name"], "string", "{what}: {c:#}");
    assert!(str_of(c, "suggestion").contains("make([]string, 0, "), "{what}: {c:#}");
}

/// On 6.12 (uprobe_multi): Go 1.21 and 1.27, default and `-s -w` stripped, and a PIE;
/// and the reverse cross-inspection, an amd64 binary's plan read on arm64.
#[test]
fn arm64_attach_names_the_culprit_its_loop_and_fix() {
    let builds = [
        ("a121", pins::GO_PYPI[0], Flavor::Default),
        ("s121", pins::GO_PYPI[0], Flavor::Stripped),
        ("a127", *pins::GO_PYPI.last().unwrap(), Flavor::Default),
        ("s127", *pins::GO_PYPI.last().unwrap(), Flavor::Stripped),
        ("p127", *pins::GO_PYPI.last().unwrap(), Flavor::Pie),
    ];
    let amd64 = fixtures::build_for("appendloop", pins::GO_DEFAULT, Flavor::Default, GoArch::Amd64).unwrap();
    let mut guest = Guest::new(Kernel::V6_12, &arm64_agent()).file("amd64", &amd64);
    let mut script = String::from("/gcprobe plan --exe ./amd64 > /tmp/plan.txt 2>&1\nsend /tmp/plan.txt plan.txt\n");
    for (name, go, flavor) in builds {
        guest = guest.file(name, &arm64_fixture("appendloop", go, flavor));
        script.push_str(&attach_script(name, 10));
    }
    let out = boot(guest.script(&script));
    for (name, go, flavor) in builds {
        let r = json(&out, &format!("{name}.json"));
        assert_eq!(r["kernel"]["mechanism"], "uprobe_multi", "{name}");
        assert_eq!(str_of(&r["target"], "go_version"), format!("go{go}"), "{name}");
        assert_culprit_and_loop(&r, &format!("Go {go} {}", flavor.name()));
    }
    let plan = String::from_utf8_lossy(out.file("plan.txt").unwrap()).into_owned();
    let first = plan.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("./amd64 go{} amd64 pie=false dwarf=true symtab=true gopclntab=", pins::GO_DEFAULT)), "{plan}");
    assert!(plan.lines().any(|l| l.trim_start().starts_with("probe runtime.growslice ")), "{plan}");
}

/// On 6.1 (one perf event per probe): GC cycles against the program's own gctrace, and
/// the culprit once more.
#[test]
fn arm64_gc_cycles_match_gctrace_on_the_perf_event_path() {
    let gcstress = arm64_fixture("gcstress", *pins::GO_PYPI.last().unwrap(), Flavor::Default);
    let appendloop = arm64_fixture("appendloop", pins::GO_PYPI[0], Flavor::Default);
    let script = format!(
        "echo go | GODEBUG=gctrace=1 /gcprobe run --mode exact --format json -o /tmp/gc.json -- ./gcstress -cycles=40 2>/tmp/trace.txt\n\
         send /tmp/gc.json gc.json\nsend /tmp/trace.txt trace.txt\n{}",
        attach_script("appendloop", 8)
    );
    let out = boot(Guest::new(Kernel::V6_1, &arm64_agent()).file("gcstress", &gcstress).file("appendloop", &appendloop).script(&script));
    let r = json(&out, "gc.json");
    assert_eq!(r["kernel"]["mechanism"], "perf_event");
    assert_eq!(r["window"]["ended_by"], "target-exited");
    let trace = String::from_utf8_lossy(out.file("trace.txt").unwrap()).into_owned();
    // `run` watches from the first instruction: every cycle gctrace printed counts.
    let gc: Vec<(f64, f64)> = trace.lines().filter_map(parse_gctrace).collect();
    let cycles = r["gc"]["cycles"].as_u64().unwrap() as i64;
    let trace_stw_ms: f64 = gc.iter().map(|g| g.0 + g.1).sum();
    let stw_ms = r["gc"]["stw"]["total_ms"].as_f64().unwrap();
    eprintln!("gctrace: {} cycles, STW {trace_stw_ms:.3} ms; gcprobe: {cycles} cycles, STW {stw_ms:.3} ms", gc.len());
    assert!(gc.len() >= 40, "{trace}");
    assert!((cycles - gc.len() as i64).abs() <= 2, "cycles {cycles} vs gctrace {}", gc.len());
    // Every forced cycle stops the world twice, and each stop is seen and timed.
    let by_reason = &r["gc"]["stw"]["by_reason"];
    assert!(by_reason["GC sweep termination"]["count"].as_u64().unwrap() as i64 >= cycles, "{by_reason:#}");
    assert!(by_reason["GC mark termination"]["count"].as_u64().unwrap() as i64 >= cycles, "{by_reason:#}");
    // The same band as on x86_64 (attach.rs). gcprobe ends each pause where Go does (the
    // value startTheWorldWithSema returns) and starts it when stopping starts; gctrace's
    // termination phases start once the world is stopped and hold work besides the pause.
    let ratio = stw_ms / trace_stw_ms;
    assert!((0.65..=1.35).contains(&ratio), "STW total {stw_ms:.3} ms vs gctrace {trace_stw_ms:.3} ms (ratio {ratio:.2})");

    let r = json(&out, "appendloop.json");
    assert_eq!(r["kernel"]["mechanism"], "perf_event");
    assert_culprit_and_loop(&r, "Go 1.21 on 6.1");
}

/// `run --fail-on` gates in the VM, and the recording it made reports the same on this
/// x86_64 host as the report the VM printed.
#[test]
fn arm64_run_gates_and_its_recording_reports_the_same_here() {
    let exe = arm64_fixture("appendloop", *pins::GO_PYPI.last().unwrap(), Flavor::Default);
    let run = |mode: &str, extra: &str| {
        format!(
            "/gcprobe run --quiet --format json -o /tmp/{mode}.json --fail-on 'growslice.share > 30%' {extra} -- ./appendloop -for 4s -mode {mode} >/dev/null 2>/tmp/{mode}.err\n\
             echo $? > /tmp/{mode}.status\nsend /tmp/{mode}.json {mode}.json\nsend /tmp/{mode}.err {mode}.err\nsend /tmp/{mode}.status {mode}.status\n"
        )
    };
    let script = format!("{}{}send /tmp/grow.gcprobe grow.gcprobe\n", run("grow", "--record /tmp/grow.gcprobe"), run("prealloc", ""));
    let out = boot(Guest::new(Kernel::V6_12, &arm64_agent()).file("appendloop", &exe).script(&script));
    let status = |mode: &str| String::from_utf8_lossy(out.file(&format!("{mode}.status")).unwrap()).trim().to_owned();
    let err = |mode: &str| String::from_utf8_lossy(out.file(&format!("{mode}.err")).unwrap()).into_owned();
    assert_eq!(status("grow"), "10", "{}", err("grow"));
    assert!(err("grow").contains("FAIL growslice.share > 30%"), "{}", err("grow"));
    assert_eq!(status("prealloc"), "0", "{}", err("prealloc"));
    assert!(err("prealloc").contains("ok   growslice.share > 30%"), "{}", err("prealloc"));

    let in_vm = json(&out, "grow.json");
    assert_culprit_and_loop(&in_vm, "run in the VM");
    let dir = std::env::temp_dir().join(format!("gcprobe-arm64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("grow.gcprobe");
    std::fs::write(&rec, out.file("grow.gcprobe").unwrap()).unwrap();
    let here = Command::new(gcprobe_bin()).args(["report", "--format", "json", "--fail-on", "growslice.share > 30%"]).arg(&rec).output().unwrap();
    assert_eq!(here.status.code(), Some(10), "{}", String::from_utf8_lossy(&here.stderr));
    let here: serde_json::Value = serde_json::from_slice(&here.stdout).unwrap();
    assert_eq!(here, in_vm);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `cargo xtask vm --exe PROGRAM --out FILE -- ARGS`, on a program written here and
/// never built anywhere else: the report comes back, and the exit status is gcprobe's.
#[test]
fn xtask_vm_runs_a_program_it_has_never_seen() {
    let dir = std::env::temp_dir().join(format!("gcprobe-unseen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("go.mod"), "module example.com/unseen\n\ngo 1.21\n").unwrap();
    let src = "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"strconv\"\n)\n\ntype point struct{ x, y, z float64 }\n\nfunc main() {\n\tn, _ := strconv.Atoi(os.Args[1])\n\tsum := 0.0\n\tfor r := 0; r < n; r++ {\n\t\tvar ps []point\n\t\tfor i := 0; i < 4000; i++ {\n\t\t\tps = append(ps, point{float64(i), 1, 2}) // the append\n\t\t}\n\t\tsum += ps[len(ps)-1].x\n\t}\n\tfmt.Println(sum)\n}\n";
    std::fs::write(dir.join("main.go"), src).unwrap();
    let exe = dir.join("unseen");
    let go = xtask::tools::ensure_go(*pins::GO_PYPI.last().unwrap()).unwrap();
    let st = Command::new(go).current_dir(&dir).args(["build", "-o"]).arg(&exe).arg(".").env("GOARCH", "arm64").env("CGO_ENABLED", "0").env("GOTOOLCHAIN", "local").status().unwrap();
    assert!(st.success());
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO"))
        .current_dir(xtask::workspace_root())
        .args(["xtask", "vm", "--arch", "aarch64", "--exe"])
        .arg(&exe)
        .arg("--out")
        .arg(&report)
        .args(["--", "200"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.lines().any(|l| l == "799800"), "the program's own output (200 rounds of 0..3999): {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let line = src.lines().position(|l| l.ends_with("// the append")).unwrap() + 1;
    let c = culprits(&r).first().unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!((str_of(c, "function"), c["line"].as_u64()), ("main.main", Some(line as u64)), "{c:#}");
    assert_eq!(c["elem_type"]["name"], "main.point", "{c:#}");
    assert_eq!(c["loop"]["line"].as_u64(), Some(line as u64 - 1), "{c:#}");

    // Not arm64: a one-line error before anything boots.
    let out = Command::new(env!("CARGO")).current_dir(xtask::workspace_root()).args(["xtask", "vm", "--exe"]).arg(gcprobe_bin()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.trim_end().ends_with("is not an arm64 program (ELF machine 62); build it with GOARCH=arm64"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Map growth and heap reads on arm64: the cache that only grows is flagged beside the
/// climbing live heap, with classic maps (Go 1.19, on 6.1) and swiss maps (Go 1.27, on 6.12).
#[test]
fn arm64_a_map_that_only_grows_is_flagged() {
    let leak_line = fixtures::marker_line("mapleak", "gcprobe:map-insert");
    let bounded_line = fixtures::marker_line("mapleak", "gcprobe:bounded-insert");
    for (kernel, go) in [(Kernel::V6_1, pins::GO_DEBIAN), (Kernel::V6_12, *pins::GO_PYPI.last().unwrap())] {
        let exe = arm64_fixture("mapleak", go, Flavor::Default);
        // The cache starts filling once gcprobe is attached, as on x86_64: a fifo holds
        // the program at its "go" until the probes are in.
        let script = "mkfifo /tmp/go\n./mapleak < /tmp/go >/dev/null & P=$!\nexec 3>/tmp/go\n\
                      /gcprobe attach --pid $P --mode exact --duration 20s --format json --interval 1h -o /tmp/m.json 2>/tmp/m.err & G=$!\n\
                      while ! grep -q attached /tmp/m.err; do sleep 0.2; done\necho go >&3\nwait $G\nkill $P\nsend /tmp/m.json m.json\nsend /tmp/m.err m.err\n";
        let out = boot(Guest::new(kernel, &arm64_agent()).file("mapleak", &exe).script(script));
        let r = json(&out, "m.json");
        let what = format!("Go {go} on {}", kernel.name());
        eprintln!("{what}: watched {:.1} s; {} cycles", r["window"]["duration_s"], r["gc"]["heap_live"].as_array().map_or(0, Vec::len));
        let maps = r["maps"].as_array().unwrap();
        let leak = maps.iter().find(|m| m["line"] == leak_line).unwrap_or_else(|| panic!("{what}: no map at line {leak_line}: {maps:#?}"));
        assert_eq!((leak["likely_leak"].as_bool(), str_of(leak, "function")), (Some(true), "main.remember"), "{what}: {leak:#}");
        assert!(!maps.iter().any(|m| m["line"] == bounded_line && m["likely_leak"] == true), "{what}: the bounded map is flagged: {maps:#?}");
        assert_eq!(r["gc"]["heap_climbing"], true, "{what}: {}", r["gc"]["heap_live"]);
    }
}

/// Debian's own arm64 restic (stripped, cgo-linked, Go from Debian's toolchain) under
/// `gcprobe run`: `restic init` derives its key with scrypt, whose 64 MiB work buffer is
/// the top callsite, named through .gopclntab alone.
#[test]
fn arm64_debian_restic_names_scrypt() {
    let (package, path) = pins::VM_DEBIAN_GO_PROGRAM;
    let restic = xtask::vm::debian_arm64_file(package, path).unwrap_or_else(|e| panic!("{e:#}"));
    // Exact: one 32 MiB allocation decides the ranking, and a burst could miss it.
    let script = "/gcprobe run --mode exact --format json -o /tmp/r.json -- ./restic init --repo /tmp/repo --insecure-no-password\nst=$?\nsend /tmp/r.json report.json\nexit $st";
    let out = boot(Guest::new(Kernel::V6_12, &arm64_agent()).file("restic", &restic).script(script));
    assert_eq!(out.status(), 0, "{}", out.transcript.text);
    assert!(out.transcript.text.contains("created restic repository"), "{}", out.transcript.text);
    let r = json(&out, "report.json");
    assert_eq!((r["target"]["arch"].as_str(), r["window"]["ended_by"].as_str()), (Some("arm64"), Some("target-exited")));
    let top = &r["callsites"][0];
    assert_eq!(str_of(top, "function"), "golang.org/x/crypto/scrypt.Key", "{top:#}");
    assert!(str_of(top, "file").ends_with("scrypt/scrypt.go"), "{top:#}");
}
