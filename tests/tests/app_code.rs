//! Attribution to the owner's code: the appcode fixture's own loop
//! (module example.com/shop) drives appends inside a dependency
//! (example.com/acme/textutil, its own module). Root.
use gcprobe_tests::*;

fn marker(m: &str) -> u64 {
    fixtures::marker_line("appcode", m).into()
}

/// `gcprobe run --mode exact` over appcode for `secs` seconds, with `extra`
/// gcprobe arguments; the JSON report.
fn run_json(tag: &str, extra: &[&str]) -> serde_json::Value {
    let exe = fixture("appcode");
    let out_path = scratch_dir("app_code", tag).join("report.json");
    let mut args = vec!["run", "--quiet", "--mode", "exact", "--format", "json", "-o", out_path.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", exe.to_str().unwrap(), "-for", "2s"]);
    let out = gcprobe(&args);
    assert!(out.status.success(), "{}", stderr_text(&out));
    serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap()
}

fn function_of(v: &serde_json::Value) -> &str {
    v["function"].as_str().unwrap_or("")
}

/// Without --app-prefix the dependency's append is library code: the
/// culprit is its line, and names the shop's function and loop behind it;
/// BY YOUR CODE ranks the shop's functions by the bytes they cause.
#[test]
fn a_dependencys_append_names_the_owners_function_and_loop() {
    if !privileged("a_dependencys_append_names_the_owners_function_and_loop") {
        return;
    }
    let dir = scratch_dir("app_code", "recorded");
    let rec = dir.join("run.gcprobe");
    let r = run_json("plain", &["--record", rec.to_str().unwrap()]);
    let scope: Vec<&str> = r["app"]["scope"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(scope, ["package main", "example.com/shop (main module)"]);

    let c = &culprits(&r)[0];
    assert_eq!(function_of(c), "example.com/acme/textutil.AppendRow", "{c:#}");
    assert_eq!(function_of(&c["app_frame"]), "main.renderRows", "{c:#}");
    assert_eq!(c["app_frame"]["line"].as_u64(), Some(marker("gcprobe:app-call")), "{c:#}");
    assert_eq!(c["app_loop"]["line"].as_u64(), Some(marker("gcprobe:app-loop")), "{c:#}");
    assert_eq!(str_of(&c["app_loop"], "kind"), "slice");
    assert_eq!(str_of(&c["app_loop"], "over"), "rows");
    assert!(str_of(c, "summary").contains("Your code calls it from main.renderRows at main.go:"), "{}", c["summary"]);

    // Every callsite names the shop's function behind it.
    let textutil_row = r["callsites"].as_array().unwrap().iter().find(|c| function_of(c) == "example.com/acme/textutil.AppendRow").unwrap();
    assert_eq!(function_of(&textutil_row["app_frame"]), "main.renderRows");

    let apps = r["app_callsites"].as_array().unwrap();
    let top = &apps[0];
    assert_eq!((function_of(top), top["rank"].as_u64()), ("main.renderRows", Some(1)), "{apps:#?}");
    assert_eq!(top["line"].as_u64(), Some(marker("gcprobe:app-call")));
    assert_eq!(str_of(top, "via"), "example.com/acme/textutil.AppendRow");
    // Every slice the program grows, it grows for renderRows: the same
    // bytes as the growslice rows, counted from the same stacks.
    let grown: u64 = r["callsites"].as_array().unwrap().iter().filter(|c| str_of(c, "probe") == "growslice").map(|c| c["bytes"].as_u64().unwrap()).sum();
    let top_grown = top["growslice_bytes"].as_u64().unwrap();
    assert!(top_grown as f64 >= 0.99 * grown as f64 && top_grown <= grown, "renderRows grew {top_grown} of {grown} growslice bytes");
    let load = apps.iter().find(|a| function_of(a) == "main.loadRows").expect("loadRows allocates its rows");
    assert_eq!(load["line"].as_u64(), Some(marker("gcprobe:load")));
    assert_eq!(load["growslice_bytes"].as_u64(), Some(0));
    // main only calls the others: it causes almost nothing itself, but everything is under it.
    if let Some(m) = apps.iter().find(|a| function_of(a) == "main.main") {
        assert!(m["share_of_bytes"].as_f64().unwrap() < 0.01 && m["inclusive_share"].as_f64().unwrap() > 0.99, "{m:#}");
    }

    // A recording tells the same, its loops included.
    let out = gcprobe(&["report", rec.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["app_callsites"], r["app_callsites"]);
    assert_eq!(again["culprits"][0]["app_loop"], c["app_loop"]);
    assert_eq!(again["culprits"][0]["summary"], c["summary"]);

    // Told the dependency is theirs too, the same recording ranks it.
    let out = gcprobe(&["report", rec.to_str().unwrap(), "--format", "json", "--app-prefix", "example.com/acme"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_owned_dependency(&theirs);
    let _ = std::fs::remove_dir_all(dir);
}

/// With --app-prefix the dependency is the owner's: its append is their
/// code, with nothing further to name.
#[test]
fn app_prefix_makes_a_dependency_the_owners() {
    if !privileged("app_prefix_makes_a_dependency_the_owners") {
        return;
    }
    let r = run_json("prefix", &["--app-prefix", "example.com/acme/"]);
    assert_owned_dependency(&r);
}

fn assert_owned_dependency(r: &serde_json::Value) {
    let scope: Vec<&str> = r["app"]["scope"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(scope, ["package main", "example.com/shop (main module)", "example.com/acme (--app-prefix)"]);
    let c = &culprits(r)[0];
    assert_eq!(function_of(c), "example.com/acme/textutil.AppendRow");
    assert!(c["app_frame"].is_null() && c["app_loop"].is_null(), "{c:#}");
    let apps = r["app_callsites"].as_array().unwrap();
    assert_eq!(function_of(&apps[0]), "example.com/acme/textutil.AppendRow", "{apps:#?}");
    // renderRows now calls code of the owner's for its bytes.
    let render = apps.iter().find(|a| function_of(a) == "main.renderRows");
    assert!(render.is_none_or(|a| a["share_of_bytes"].as_f64().unwrap() < 0.01), "{render:#?}");
}

#[test]
fn a_bad_app_prefix_is_one_line_and_exit_2() {
    let out = gcprobe(&["report", "/nonexistent", "--app-prefix", "has space"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert!(err.contains("--app-prefix \"has space\" is not a Go import path prefix"), "{err}");
}
