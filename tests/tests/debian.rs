//! Debian's real Go programs: go1.19.8, cgo-linked, stripped of DWARF and
//! .symtab (only .gopclntab and .go.buildinfo remain). Root.
use std::{net::TcpStream, path::PathBuf, process::Command, time::{Duration, Instant}};

use gcprobe_tests::*;

/// What Go itself says built `exe`.
fn go_version_of(exe: &str) -> String {
    let out = Command::new(xtask::tools::go_bin(pins::GO_DEBIAN)).args(["version", exe]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned()
}

fn functions_in<'a>(r: &'a serde_json::Value, prefix: &str) -> Vec<&'a str> {
    r["callsites"].as_array().unwrap().iter().filter(|c| str_of(c, "function").starts_with(prefix) && c["line"].as_u64().is_some()).map(|c| str_of(c, "function")).collect()
}

/// Debian's prometheus, scraping itself every second, with its data in a
/// temporary directory (removed when dropped).
struct Prometheus {
    t: Target,
    dir: PathBuf,
}

impl Prometheus {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("gcprobe-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n")).unwrap();
        let t = Target::spawn(
            &PathBuf::from("/usr/bin/prometheus"),
            &[&format!("--config.file={}", cfg.display()), &format!("--web.listen-address=127.0.0.1:{port}"), &format!("--storage.tsdb.path={}", dir.join("data").display())],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { t, dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.t.child.kill();
        let _ = self.t.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node mode finds Debian's stripped go1.19 prometheus as it starts, and
/// its metrics and report agree with each other and name its own code.
#[test]
fn node_mode_follows_debians_prometheus_from_its_start() {
    if !privileged("node_mode_follows_debians_prometheus_from_its_start") {
        return;
    }
    let node = Node::start(&["-q", "--mode", "exact", "--include", "/usr/bin/prometheus"]);
    let p = Prometheus::start();
    let pid = p.t.pid();
    assert!(node.wait_for(pid, Duration::from_secs(1)), "not watched within 1 s of its start");
    let report = || serde_json::from_str::<serde_json::Value>(&node.get(&format!("/report?pid={pid}&format=json"))).unwrap();
    // Until it has collected at least once (scraping itself, it allocates a little every second).
    let deadline = Instant::now() + Duration::from_secs(40);
    let r = loop {
        let r = report();
        if r["gc"]["cycles"].as_u64().unwrap() >= 1 && Instant::now() > deadline - Duration::from_secs(35) {
            break r;
        }
        assert!(Instant::now() < deadline, "no GC cycle in 40 s: {:#}", r["gc"]);
        std::thread::sleep(Duration::from_millis(500));
    };
    let text = node.get("/metrics");
    let after = report();
    promtool_check(&text);
    let at = format!("pid=\"{pid}\"");
    assert!(text.lines().any(|l| l.starts_with("gcprobe_target_info{") && l.contains(&at) && l.contains(&format!("go_version=\"{}\"", go_version_of("/usr/bin/prometheus")))), "{text}");
    let own = functions_in(&r, "github.com/prometheus/");
    assert!(own.len() >= 3, "callsites in prometheus' own packages: {own:?}");
    // The same pauses counted once: the histogram, scraped between two
    // reports, holds at least the first's pauses and at most the second's.
    let counted: f64 = text.lines().filter(|l| l.starts_with("gcprobe_gc_stw_seconds_count{") && l.contains(&at)).map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum();
    let (before, later) = (r["gc"]["stw"]["count"].as_f64().unwrap(), after["gc"]["stw"]["count"].as_f64().unwrap());
    assert!(before <= counted && counted <= later, "histogram {counted}, reports {before} and {later}");
}

#[test]
fn prometheus_scraping_itself() {
    if !privileged("prometheus_scraping_itself") {
        return;
    }
    let p = Prometheus::start();
    let r = attach_json(p.t.pid(), "5s");
    drop(p);

    assert_eq!(r["target"]["go_version"].as_str().unwrap(), go_version_of("/usr/bin/prometheus"));
    assert!(r["target"]["go_version"].as_str().unwrap().starts_with("go1.19"));
    for p in r["probes"].as_array().unwrap().iter().filter(|p| ["mallocgc", "growslice", "stopTheWorld", "startTheWorld"].contains(&str_of(p, "name"))) {
        assert_eq!(p["attached"], true, "{p}");
    }
    let own = functions_in(&r, "github.com/prometheus/");
    assert!(own.len() >= 3, "callsites in prometheus' own packages: {own:?}\n{:#}", r["callsites"]);
    assert!(r["warnings"].as_array().unwrap().iter().all(|w| !w.as_str().unwrap().contains("could not be symbolized")), "{}", r["warnings"]);
    assert_eq!(r["events"]["lost"], 0);
}

/// Debian's caddy serving a directory listing of `files` files, under load
/// from `clients` threads until dropped.
struct Caddy {
    t: Target,
    dir: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<u64>>,
}

impl Caddy {
    fn start(files: usize, clients: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("gcprobe-caddy-{}", std::process::id()));
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..files {
            std::fs::write(root.join(format!("report-{i:04}.txt")), format!("{i}\n")).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        // Caddy keeps its state under HOME / XDG dirs: the test's own.
        let home = dir.to_str().unwrap().to_owned();
        let t = Target::spawn_with(
            &PathBuf::from("/usr/bin/caddy"),
            &["file-server", "--browse", "--root", root.to_str().unwrap(), "--listen", &listen],
            &[("HOME", &home), ("XDG_DATA_HOME", &home), ("XDG_CONFIG_HOME", &home)],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "caddy did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    use std::io::{Read as _, Write as _};
                    let mut pages = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                        let mut body = Vec::new();
                        if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").is_ok() && s.read_to_end(&mut body).is_ok() && body.starts_with(b"HTTP/1.0 200") {
                            pages += 1;
                        }
                    }
                    pages
                })
            })
            .collect();
        Self { t, dir, stop, clients }
    }

    /// Listings served; stops the load.
    fn pages(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.clients.drain(..).map(|c| c.join().unwrap()).sum()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.pages();
        let _ = self.t.child.kill();
        let _ = self.t.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Caddy's top allocations are the standard library's (os.(*File).readdir,
/// reflect, text/template): the report ranks caddy's own functions by the
/// bytes they cause and names the one behind each top callsite. Debian's
/// build records no module: caddy's code is known by its main package's path.
#[test]
fn caddy_directory_listing_is_traced_to_caddys_own_functions() {
    if !privileged("caddy_directory_listing_is_traced_to_caddys_own_functions") {
        return;
    }
    let mut c = Caddy::start(300, 2);
    // Exact: every allocation, so the ranking below is the program's, not a burst's draw.
    let r = attach_json(c.t.pid(), "6s");
    let pages = c.pages();
    drop(c);
    assert!(pages > 20, "{pages} listings served");
    const CADDY: &str = "github.com/caddyserver/caddy/v2";
    assert_eq!(r["app"]["scope"][1], format!("{CADDY} (main package's repository: the binary records no module)"));
    let apps = r["app_callsites"].as_array().unwrap();
    assert!(!apps.is_empty(), "{:#}", r["app"]);
    for a in apps {
        let f = str_of(a, "function");
        assert!(f.starts_with(&format!("{CADDY}/")) || f.starts_with(&format!("{CADDY}.")) || f.starts_with("main."), "{f} is not caddy's");
    }
    // Each byte is caused by one function of caddy's at most.
    let caused: f64 = apps.iter().map(|a| a["share_of_bytes"].as_f64().unwrap()).sum::<f64>() + r["app"]["unowned_share"].as_f64().unwrap();
    assert!(caused <= 1.0 + 1e-9, "{caused}");
    // The listing's code leads.
    let fileserver = format!("{CADDY}/modules/caddyhttp/fileserver.");
    assert!(apps.iter().take(3).any(|a| str_of(a, "function").starts_with(&fileserver)), "{apps:#?}");
    // The heaviest of the top callsites in library code names caddy's function behind it.
    let top: Vec<&serde_json::Value> = r["callsites"].as_array().unwrap().iter().take(3).collect();
    let lib = top.iter().find(|c| !str_of(c, "function").starts_with(CADDY)).unwrap_or_else(|| panic!("{top:#?}"));
    assert!(str_of(&lib["app_frame"], "function").starts_with(CADDY), "{lib:#}");
}

#[test]
fn restic_backup_until_it_exits() {
    if !privileged("restic_backup_until_it_exits") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gcprobe-restic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let repo = dir.join("repo");
    let env = [("RESTIC_PASSWORD", "gcprobe-test")];
    let st = Command::new("restic").args(["init", "-q", "--repo"]).arg(&repo).envs(env).status().unwrap();
    assert!(st.success());
    let src = "/usr/lib/go-1.19/src";
    let mut backup = Command::new("restic")
        .args(["backup", "-q", "--repo"])
        .arg(&repo)
        .args([&format!("{src}/runtime"), &format!("{src}/net"), &format!("{src}/crypto")])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // No --duration: the session ends when restic does.
    let out = gcprobe(&["attach", "--pid", &backup.id().to_string(), "--format", "json", "--quiet"]);
    let st = backup.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(st.success());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["window"]["ended_by"], "target-exited");
    assert_eq!(r["target"]["go_version"].as_str().unwrap(), go_version_of("/usr/bin/restic"));
    let own = functions_in(&r, "github.com/restic/restic/");
    assert!(!own.is_empty(), "{:#}", r["callsites"]);
    let reasons: Vec<&String> = r["gc"]["stw"]["by_reason"].as_object().unwrap().keys().collect();
    assert!(reasons.iter().any(|k| *k == "GC sweep termination") && reasons.iter().any(|k| *k == "GC mark termination"), "{reasons:?}");
}
