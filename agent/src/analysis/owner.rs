//! Whose code a frame is: the owner's (the main package, the main module's
//! packages, `--app-prefix`) or a library's (the standard library and every
//! dependency), and the owner's functions ranked by the bytes they cause.
//!
//! On a real service most allocations sit in the standard library (`os`,
//! `reflect`, `bytes.Buffer`, `encoding/json`); what its owner can change is
//! the first frame of their own code above them.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    analysis::{appendloop::LoopReport, facts::Facts, rows::AppCallsite},
    tracee::frame::Frame,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("--app-prefix {0:?} is not a Go import path prefix (e.g. github.com/acme): it must be non-empty, without spaces, quotes or a leading dot or slash")]
    BadPrefix(String),
}

/// An import path prefix given with `--app-prefix`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPrefix(String);

impl std::str::FromStr for AppPrefix {
    type Err = OwnerError;

    fn from_str(s: &str) -> Result<Self, OwnerError> {
        let p = s.trim().trim_end_matches('/');
        let bad = |c: char| c.is_whitespace() || c.is_control() || "\"'`;()[]*".contains(c);
        if p.is_empty() || p.starts_with(['.', '/']) || p.contains("//") || p.chars().any(bad) {
            return Err(OwnerError::BadPrefix(s.into()));
        }
        Ok(AppPrefix(p.into()))
    }
}

/// How the main module's path was learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MainFrom {
    /// The `mod` line of `.go.buildinfo`.
    #[default]
    Module,
    /// The repository root of the main package's path (`path` line): GOPATH
    /// builds, such as Debian's packages, record no module.
    PackagePath,
}

/// Which import paths are the owner's. Kept in a recording's metadata, so
/// a report made anywhere draws the same line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppScope {
    /// The main module (`.go.buildinfo`'s `mod` line), or, for a binary
    /// built without modules, the main package's repository.
    main_module: Option<String>,
    /// Where `main_module` came from.
    #[serde(default)]
    main_from: MainFrom,
    /// Dependencies whose module path lies under the main module's
    /// (nested modules): their packages are not the owner's.
    nested_deps: Vec<String>,
    /// `--app-prefix`.
    prefixes: Vec<String>,
}

impl AppScope {
    /// From a binary's build information: its main module, and its
    /// dependencies (only those nested under the main module matter).
    pub fn of_build(main_module: Option<&str>, main_path: Option<&str>, deps: &[String]) -> Self {
        // `go build file.go` records no module: only package main is known.
        let named = |p: &&str| !p.is_empty() && *p != "command-line-arguments";
        let (main_module, main_from) = match (main_module.filter(named), main_path.filter(named)) {
            (Some(m), _) => (Some(m.to_owned()), MainFrom::Module),
            (None, Some(p)) => (Some(repository_root(p).to_owned()), MainFrom::PackagePath),
            (None, None) => (None, MainFrom::Module),
        };
        let nested_deps = main_module.as_deref().map_or_else(Vec::new, |m| deps.iter().filter(|d| under(d, m)).cloned().collect());
        AppScope { main_module, main_from, nested_deps, prefixes: Vec::new() }
    }

    /// The same, with more prefixes counted as the owner's.
    pub fn with_prefixes(mut self, extra: &[AppPrefix]) -> Self {
        for p in extra {
            if !self.prefixes.contains(&p.0) {
                self.prefixes.push(p.0.clone());
            }
        }
        self
    }

    /// Whether `function` (a Go symbol name) is the owner's code.
    pub fn owns(&self, function: &str) -> bool {
        let pkg = package_of(function);
        if pkg == "main" || self.prefixes.iter().any(|p| under(pkg, p)) {
            return true;
        }
        self.main_module.as_deref().is_some_and(|m| under(pkg, m)) && !self.nested_deps.iter().any(|d| under(pkg, d))
    }

    /// What counts as the owner's, as the report states it.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec!["package main".to_owned()];
        out.extend(self.main_module.iter().map(|m| match self.main_from {
            MainFrom::Module => format!("{m} (main module)"),
            MainFrom::PackagePath => format!("{m} (main package's repository: the binary records no module)"),
        }));
        out.extend(self.prefixes.iter().map(|p| format!("{p} (--app-prefix)")));
        out
    }

    /// The first of `frames` in the owner's code.
    pub fn first_owned<'f>(&self, frames: &'f [Frame]) -> Option<&'f Frame> {
        frames.iter().find(|f| self.owns(&f.function))
    }
}

/// Return addresses above the owner's nearest frame searched for its loop:
/// a helper of theirs called in a loop of theirs, not the request loop of
/// a library further out.
const OWNER_LOOP_PCS: usize = 3;

/// Return addresses of a growslice stack a recording keeps loop answers
/// for, one by one, so a report made from it can find the owner's loop
/// whatever `--app-prefix` it is given (within this depth).
pub const RECORDED_LOOP_PCS: usize = 8;

/// The innermost loop around the call that returns to `pc`, in the
/// function holding it.
pub fn loop_at(facts: &mut dyn Facts, pc: u64) -> Option<LoopReport> {
    let frames = facts.frames(pc);
    let name = frames.iter().find(|f| !f.is_runtime()).or(frames.last())?.function.clone();
    facts.append_loop(&name, &[pc])
}

/// The owner's loop that drives the allocations of `stack` (return
/// addresses, innermost first), when a library allocates for them: the
/// loop around the call out of their nearest frame, or out of the callers
/// of theirs just above it.
pub fn owner_loop(facts: &mut dyn Facts, scope: &AppScope, stack: &[u64]) -> Option<LoopReport> {
    let owned = |facts: &mut dyn Facts, pc: u64| facts.frames(pc).iter().any(|f| scope.owns(&f.function));
    let k = stack.iter().position(|&pc| owned(facts, pc))?;
    for &pc in stack[k..].iter().take(OWNER_LOOP_PCS) {
        if !owned(facts, pc) {
            return None;
        }
        if let Some(l) = loop_at(facts, pc) {
            return Some(l);
        }
    }
    None
}

/// The repository of a package path: `host/owner/repo` (and a `/vN`
/// major-version suffix) on the code hosts that lay repositories out so,
/// else the path before `/cmd/`, else the path itself.
fn repository_root(path: &str) -> &str {
    const HOSTS: &[&str] = &["github.com", "gitlab.com", "bitbucket.org", "codeberg.org", "git.sr.ht"];
    let parts: Vec<&str> = path.split('/').collect();
    if HOSTS.contains(&parts[0]) && parts.len() >= 3 {
        let major = parts.get(3).is_some_and(|p| p.strip_prefix('v').is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2)));
        let n = if major { 4 } else { 3 };
        let end = parts[..n].iter().map(|p| p.len()).sum::<usize>() + n - 1;
        return &path[..end];
    }
    path.find("/cmd/").map_or(path, |i| &path[..i])
}

/// `pkg` is `prefix` or a package below it (`a/b` is under `a`, `ab` is not).
fn under(pkg: &str, prefix: &str) -> bool {
    pkg.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The import path of a Go function symbol: `github.com/a/b.(*T).M` is in
/// `github.com/a/b`, `main.main.func1` in `main`. The package ends at the
/// first dot after the last slash; type arguments (`F[...]`) may hold
/// slashes of their own, so they are cut first.
pub fn package_of(function: &str) -> &str {
    let name = function.split('[').next().unwrap_or(function);
    let base = name.rfind('/').map_or(0, |i| i + 1);
    name[base..].find('.').map_or(name, |d| &name[..base + d])
}

/// The owner's functions and what the allocations under them add up to.
#[derive(Default)]
pub struct AppTally {
    by_fn: HashMap<String, Acc>,
    total: u64,
    /// Bytes of stacks with no frame of the owner's code (as far as they
    /// were walked): runtime and library work of its own, or stacks cut short.
    unowned: u64,
}

#[derive(Default)]
struct Acc {
    /// Where it is the owner's frame nearest the allocation.
    caused: u64,
    allocs: u64,
    growslice: u64,
    /// Anywhere on the stack.
    inclusive: u64,
    heaviest: u64,
    file: Option<String>,
    line: Option<u32>,
    via: Option<String>,
}

/// One stack's allocations, as the callsite rows see it.
pub struct StackAllocs<'a> {
    /// Symbolized, innermost first.
    pub frames: &'a [Frame],
    /// Its callsite: the first frame outside the runtime.
    pub callsite: usize,
    /// The bytes came from growing a slice.
    pub via_grow: bool,
    pub allocs: u64,
    pub bytes: u64,
}

impl AppTally {
    /// Counts a stack's bytes as caused by the owner's frame nearest the
    /// allocation (its own lines and the library code it calls), and as
    /// under every owned function on the stack (a recursive one once).
    pub fn add(&mut self, scope: &AppScope, s: &StackAllocs<'_>) {
        self.total = self.total.saturating_add(s.bytes);
        let mut owned = s.frames.iter().filter(|f| scope.owns(&f.function));
        let Some(nearest) = owned.next() else {
            self.unowned = self.unowned.saturating_add(s.bytes);
            return;
        };
        let a = self.by_fn.entry(nearest.function.clone()).or_default();
        a.caused = a.caused.saturating_add(s.bytes);
        a.allocs = a.allocs.saturating_add(s.allocs);
        if s.via_grow {
            a.growslice = a.growslice.saturating_add(s.bytes);
        }
        if s.bytes >= a.heaviest {
            a.heaviest = s.bytes;
            (a.file, a.line) = (nearest.file.clone(), nearest.line);
            a.via = s.frames.get(s.callsite).filter(|c| !scope.owns(&c.function)).map(|c| c.function.clone());
        }
        let mut seen: Vec<&str> = Vec::new();
        for f in std::iter::once(nearest).chain(owned) {
            if !seen.contains(&f.function.as_str()) {
                seen.push(&f.function);
                let a = self.by_fn.entry(f.function.clone()).or_default();
                a.inclusive = a.inclusive.saturating_add(s.bytes);
            }
        }
    }

    /// Share of the bytes under no owned frame.
    pub fn unowned_share(&self) -> f64 {
        self.unowned as f64 / self.total.max(1) as f64
    }

    /// The owner's functions that cause allocations, the most bytes first,
    /// at most `top`. A function that only calls others of the owner's
    /// (a middleware, main) causes none itself and is left out: its bytes
    /// are those of the functions it calls.
    pub fn rows(self, rate_time: f64, total_bytes: u64, top: usize) -> Vec<AppCallsite> {
        let total = total_bytes.max(1) as f64;
        let mut rows: Vec<AppCallsite> = self
            .by_fn
            .into_iter()
            .filter(|(_, a)| a.caused > 0)
            .map(|(function, a)| AppCallsite {
                rank: 0,
                function,
                file: a.file,
                line: a.line,
                bytes: a.caused,
                allocs: a.allocs,
                bytes_per_s: a.caused as f64 / rate_time.max(1e-9),
                share_of_bytes: a.caused as f64 / total,
                growslice_bytes: a.growslice,
                growslice_share: a.growslice as f64 / total,
                inclusive_bytes: a.inclusive,
                inclusive_share: a.inclusive as f64 / total,
                via: a.via,
            })
            .collect();
        // A total order, so a recording's report reads like the live one.
        rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.inclusive_bytes.cmp(&a.inclusive_bytes)).then_with(|| a.function.cmp(&b.function)));
        rows.truncate(top);
        for (i, r) in rows.iter_mut().enumerate() {
            r.rank = i as u32 + 1;
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame { function: name.into(), file: Some(format!("{name}.go")), line: Some(7), inlined: false }
    }

    #[test]
    fn packages_of_go_symbols() {
        assert_eq!(package_of("main.main"), "main");
        assert_eq!(package_of("main.(*Index).Names"), "main");
        assert_eq!(package_of("main.main.func1"), "main");
        assert_eq!(package_of("os.(*File).readdir"), "os");
        assert_eq!(package_of("github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver.(*FileServer).directoryListing"), "github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver");
        assert_eq!(package_of("encoding/json.(*encodeState).marshal"), "encoding/json");
        assert_eq!(package_of("example.com/x.Map[go.shape.struct { a/b.T }]"), "example.com/x");
        assert_eq!(package_of("gopkg.in/yaml.v3.(*parser).node"), "gopkg.in/yaml");
        assert_eq!(package_of("nodots"), "nodots");
    }

    #[test]
    fn the_main_module_and_prefixes_are_the_owners_and_nested_modules_are_not() {
        let deps = ["golang.org/x/sys".to_owned(), "github.com/acme/svc/tools".to_owned()];
        let s = AppScope::of_build(Some("github.com/acme/svc"), Some("github.com/acme/svc/cmd/svc"), &deps);
        assert!(s.owns("main.main"));
        assert!(s.owns("github.com/acme/svc.Run"));
        assert!(s.owns("github.com/acme/svc/internal/cache.(*LRU).Put"));
        assert!(!s.owns("github.com/acme/svcx.Run"), "a longer name is another module");
        assert!(!s.owns("github.com/acme/svc/tools.Gen"), "a nested module is a dependency");
        assert!(!s.owns("golang.org/x/sys/unix.Syscall"));
        assert!(!s.owns("runtime.mallocgc"));
        assert!(!s.owns("github.com/acme/lib.F"));
        let s = s.with_prefixes(&["github.com/acme/".parse().unwrap()]);
        assert!(s.owns("github.com/acme/lib.F"));
        assert_eq!(s.describe(), ["package main", "github.com/acme/svc (main module)", "github.com/acme (--app-prefix)"]);
        let plain = AppScope::of_build(None, Some("command-line-arguments"), &[]);
        assert!(plain.owns("main.f") && !plain.owns("command-line-arguments.f"));
        assert_eq!(plain.describe(), ["package main"]);
    }

    /// Debian builds its Go packages without modules: only the main
    /// package's path is recorded (`go version -m /usr/bin/caddy`).
    #[test]
    fn without_a_module_the_main_packages_repository_is_the_owners() {
        let caddy = AppScope::of_build(None, Some("github.com/caddyserver/caddy/v2/cmd/caddy"), &[]);
        assert_eq!(caddy.describe()[1], "github.com/caddyserver/caddy/v2 (main package's repository: the binary records no module)");
        assert!(caddy.owns("github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver.(*FileServer).directoryListing"));
        assert!(!caddy.owns("github.com/caddyserver/certmagic.(*Cache).Get"));
        assert_eq!(repository_root("github.com/prometheus/prometheus/cmd/prometheus"), "github.com/prometheus/prometheus");
        assert_eq!(repository_root("github.com/restic/restic/cmd/restic"), "github.com/restic/restic");
        assert_eq!(repository_root("go.etcd.io/etcd/server/v3/cmd/etcd"), "go.etcd.io/etcd/server/v3");
        assert_eq!(repository_root("example.com/tool"), "example.com/tool");
        assert_eq!(repository_root("github.com/a"), "github.com/a");
        assert_eq!(repository_root("github.com/a/b/v1/x"), "github.com/a/b");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", " ", "/abs", ".rel", "a b", "a//b", "x\"y", "f()"] {
            assert_eq!(bad.parse::<AppPrefix>(), Err(OwnerError::BadPrefix(bad.into())), "{bad:?}");
        }
        assert_eq!("github.com/acme/".parse::<AppPrefix>().unwrap().0, "github.com/acme");
    }

    #[test]
    fn the_nearest_function_of_yours_causes_the_bytes_and_callers_count_them_inclusive() {
        let s = AppScope::of_build(Some("example.com/app"), None, &[]);
        let mut t = AppTally::default();
        let grow = [f("runtime.growslice"), f("strconv.AppendInt"), f("example.com/app.format"), f("example.com/app.format"), f("main.main")];
        t.add(&s, &StackAllocs { frames: &grow, callsite: 1, via_grow: true, allocs: 3, bytes: 600 });
        let direct = [f("runtime.mallocgc"), f("main.main")];
        t.add(&s, &StackAllocs { frames: &direct, callsite: 1, via_grow: false, allocs: 1, bytes: 300 });
        let lib = [f("runtime.mallocgc"), f("net/http.(*conn).serve")];
        t.add(&s, &StackAllocs { frames: &lib, callsite: 1, via_grow: false, allocs: 1, bytes: 100 });
        let wrapped = [f("runtime.mallocgc"), f("example.com/app.format"), f("example.com/app.middleware")];
        t.add(&s, &StackAllocs { frames: &wrapped, callsite: 1, via_grow: false, allocs: 2, bytes: 50 });
        assert!((t.unowned_share() - 100.0 / 1050.0).abs() < 1e-12);
        let rows = t.rows(2.0, 1050, 10);
        let names: Vec<_> = rows.iter().map(|r| r.function.as_str()).collect();
        assert_eq!(names, ["example.com/app.format", "main.main"], "middleware causes nothing itself");
        let (fmt, m) = (&rows[0], &rows[1]);
        assert_eq!((fmt.bytes, fmt.allocs, fmt.growslice_bytes, fmt.inclusive_bytes, fmt.rank), (650, 5, 600, 650, 1));
        assert_eq!(fmt.via.as_deref(), Some("strconv.AppendInt"));
        assert_eq!((m.bytes, m.allocs, m.growslice_bytes, m.inclusive_bytes, m.rank), (300, 1, 0, 900, 2));
        assert_eq!(m.via, None, "main.main allocates in its own code");
        assert!((fmt.bytes_per_s - 325.0).abs() < 1e-9 && (fmt.share_of_bytes - 650.0 / 1050.0).abs() < 1e-12);
    }
}
