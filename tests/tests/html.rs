//! `--format html` opened in a real browser: a recording of appendloop
//! reported as JSON and as a page; headless Chromium runs the page's scripts
//! and the DOM it leaves must hold what the JSON says.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use gcprobe_tests::{assert_appendloop_culprit, fixture, fixtures, gcprobe, privileged, scratch_dir, stderr_text, Target};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The screenshot's size.
const WINDOW: (u32, u32) = (1400, 2000);
/// The flame graph's frame for the culprit line is as wide as the callsite's
/// share of bytes, within this (a share: 0.005 = half a point). The two differ by
/// allocations whose stacks pass the line without being counted at it, and by
/// frames inferno drops for being under 0.1% wide.
const SHARE_TOLERANCE: f64 = 0.005;
/// A blank or failed render has a handful of colours; this page has text,
/// a flame graph and three charts.
const MIN_COLOURS: usize = 256;

/// Debian's Chromium (`cargo xtask setup` installs it). Without it the test
/// skips, except in CI, where a skip would hide a failure.
fn chromium(test: &str) -> Option<PathBuf> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM.into());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs {CHROMIUM} (Debian's chromium, installed by `cargo xtask setup`), and CI=true forbids skipping it");
    }
    eprintln!("skipping {test}: no {CHROMIUM}");
    None
}

/// Headless Chromium on `page` with a fresh profile and nothing that
/// reaches the network; `extra` says what to write.
fn headless(chromium: &Path, dir: &Path, page: &Path, extra: &[String]) -> std::process::Output {
    let profile = tempdir(dir, "profile");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium failed: {}\n{}", out.status, stderr_text(&out));
    out
}

fn tempdir(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A recording of appendloop growing its slice, in exact mode.
fn record(dir: &Path) -> PathBuf {
    let t = Target::start(&fixture("appendloop"), &["-mode", "grow"], &[]);
    let file = dir.join("appendloop.gcprobe");
    let out = gcprobe(&["record", "--pid", &t.pid().to_string(), "--mode", "exact", "--duration", "4s", "--quiet", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "gcprobe record failed: {}\n{}", out.status, stderr_text(&out));
    file
}

fn report(file: &Path, format: &str, output: &Path) {
    let out = gcprobe(&["report", file.to_str().unwrap(), "--format", format, "-o", output.to_str().unwrap()]);
    assert!(out.status.success(), "gcprobe report --format {format} failed: {}\n{}", out.status, stderr_text(&out));
}

/// `page`'s DOM after Chromium ran its scripts, once the page is checked
/// to load nothing from outside itself.
fn rendered(chromium: &Path, dir: &Path, page: &Path) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    assert_eq!(external_references(&html), Vec::<String>::new(), "the page loads resources from outside itself");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.contains("default-src 'none'"), "the page's policy forbids fetches");
    let dom = String::from_utf8(headless(chromium, dir, page, &["--dump-dom".into()]).stdout).unwrap();
    // inferno's script ran: fluid drawing removed the width it was written with.
    let written = "<svg version=\"1.1\" width=\"";
    assert!(html.contains(written) && !dom.contains(written), "the flame graph's script did not run");
    dom
}

/// The culprit's line in appendloop, and where its flame graph frame's title starts in `dom`.
fn culprit_frame(dom: &str) -> (u32, usize) {
    let line = fixtures::marker_line("appendloop", "gcprobe:culprit");
    let frame = format!("<title>main.(*Index).Names main.go:{line} (");
    (line, dom.find(&frame).unwrap_or_else(|| panic!("no frame {frame:?} in the flame graph")))
}

/// The value of attribute `name` in the first tag of `html` that holds `anchor`.
fn attr<'a>(html: &'a str, anchor: &str, name: &str) -> &'a str {
    let at = html.find(anchor).unwrap_or_else(|| panic!("no {anchor:?} in the page"));
    let tag_end = at + html[at..].find('>').unwrap();
    let tag_start = html[..=at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_end];
    let key = format!(" {name}=\"");
    let v = tag.find(&key).unwrap_or_else(|| panic!("no {name} in {tag}")) + key.len();
    &tag[v..v + tag[v..].find('"').unwrap()]
}

/// Every `data-n` in the pause histogram's bars, added up.
fn histogram_count(dom: &str) -> u64 {
    let start = dom.find("id=\"pause-histogram\"").expect("the pause histogram");
    let chart = &dom[start..start + dom[start..].find("</svg>").unwrap()];
    chart.match_indices("class=\"bar\" data-n=\"").map(|(i, m)| chart[i + m.len()..].split('"').next().unwrap().parse::<u64>().unwrap()).sum()
}

/// Every place the page would load something from (`src=`, `href=`,
/// `srcset=`, `action=`, CSS `url(` and `@import`) that does not point
/// inside the page itself (`#id`): none may name the network, or a file.
fn external_references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for needle in ["src=", "href=", "srcset=", "action=", "url(", "@import"] {
        for (i, m) in html.match_indices(needle) {
            let value = html[i + m.len()..].trim_start_matches(['"', '\'', ' ']);
            if !value.starts_with('#') {
                found.push(html[i..(i + 80).min(html.len())].to_owned());
            }
        }
    }
    found
}

/// The screenshot's size and how many distinct colours it has.
fn png_colours(path: &Path) -> ((u32, u32), usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).expect("the screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).map(|c| &c[..3.min(px)]).collect();
    ((info.width, info.height), colours.len())
}

#[test]
fn the_html_report_renders_in_chromium_with_the_reports_figures() {
    if !privileged("the_html_report_renders_in_chromium_with_the_reports_figures") {
        return;
    }
    let Some(chromium) = chromium("the_html_report_renders_in_chromium_with_the_reports_figures") else { return };
    let dir = scratch_dir("html", "report");
    let rec = record(&dir);
    let (json_path, page) = (dir.join("report.json"), dir.join("report.html"));
    report(&rec, "json", &json_path);
    report(&rec, "html", &page);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_appendloop_culprit(&r);
    let dom = rendered(&chromium, &dir, &page);

    // The culprit's frame, as wide as its share of bytes.
    let (line, at) = culprit_frame(&dom);
    let width: f64 = attr(&dom[at..], "<rect", "fg:w").parse().unwrap();
    let total: f64 = attr(&dom, "<svg id=\"frames\"", "total_samples").parse().unwrap();
    let share = r["culprits"][0]["share_of_bytes"].as_f64().unwrap();
    eprintln!("flame graph: {width} of {total} bytes = {:.4}; report: {share:.4}", width / total);
    assert!((width / total - share).abs() <= SHARE_TOLERANCE, "frame share {} vs report {share}", width / total);

    let stw = r["gc"]["stw"]["count"].as_u64().unwrap();
    assert!(stw > 0, "appendloop collects: {:#}", r["gc"]);
    assert_eq!(histogram_count(&dom), stw, "pauses in the histogram's bars");
    assert_eq!(attr(&dom, "id=\"stw-count\"", "data-count"), stw.to_string());

    let heap = r["gc"]["heap_live"].as_array().unwrap().len();
    assert!(heap > 0, "{:#}", r["gc"]);
    assert_eq!(dom.matches("class=\"heap-point\"").count(), heap, "points in the heap series");

    let card = &dom[dom.find("id=\"culprit-1\"").expect("a culprit card")..];
    let card = &card[..card.find("</article>").unwrap()];
    assert!(card.contains(&format!("main.go:{line}")) && card.contains("main.(*Index).Names") && card.contains("make([]string, 0, len(ix.byName))"), "{card}");

    let shot = dir.join("report.png");
    headless(&chromium, &dir, &page, &[format!("--screenshot={}", shot.display()), format!("--window-size={},{}", WINDOW.0, WINDOW.1)]);
    let (size, colours) = png_colours(&shot);
    eprintln!("screenshot {size:?}, {colours} colours");
    assert_eq!(size, WINDOW);
    assert!(colours > MIN_COLOURS, "{colours} colours: a blank page?");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gcprobe run --mode exact --record` of appendloop in `mode` for 3 s.
fn run_recorded(dir: &Path, mode: &str) -> PathBuf {
    let rec = dir.join(format!("{mode}.gcprobe"));
    let exe = fixture("appendloop");
    let out = gcprobe(&["run", "--mode", "exact", "--quiet", "--record", rec.to_str().unwrap(), "--format", "json", "-o", "/dev/null", "--", exe.to_str().unwrap(), "-mode", mode, "-for", "3s"]);
    assert!(out.status.success(), "run -mode {mode}: {}\n{}", out.status, stderr_text(&out));
    rec
}

/// `gcprobe diff --format html` of the culprit and its fix: the page's
/// differential flame graph is as wide as BEFORE and shows the culprit's
/// tower fallen (blue, its whole share gone), beside the figures the JSON
/// diff gives.
#[test]
fn the_diff_page_shows_the_fixed_culprit_fallen_in_chromium() {
    if !privileged("the_diff_page_shows_the_fixed_culprit_fallen_in_chromium") {
        return;
    }
    let Some(chromium) = chromium("the_diff_page_shows_the_fixed_culprit_fallen_in_chromium") else { return };
    let dir = scratch_dir("html", "diff");
    let (before, after) = (run_recorded(&dir, "grow"), run_recorded(&dir, "prealloc"));
    let (page, json) = (dir.join("diff.html"), dir.join("diff.json"));
    for (format, out) in [("html", &page), ("json", &json)] {
        let o = gcprobe(&["diff", before.to_str().unwrap(), after.to_str().unwrap(), "--format", format, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "diff --format {format}: {}", stderr_text(&o));
    }
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let dom = rendered(&chromium, &dir, &page);

    // The culprit's frame: its width is its share of BEFORE's bytes, its
    // change all of it, its colour blue (fell).
    let (_, at) = culprit_frame(&dom);
    let title = &dom[at..at + dom[at..].find("</title>").unwrap()];
    let (share, delta) = title.rsplit_once(", ").unwrap().1.trim_end_matches(')').split_once("%; ").unwrap();
    let (share, delta): (f64, f64) = (share.parse().unwrap(), delta.trim_end_matches('%').parse().unwrap());
    let gone = d["culprits_gone"].as_array().unwrap();
    assert_eq!(gone.len(), 1, "{:#}", d["culprits_gone"]);
    let before_share = gone[0]["share_of_bytes"]["before"].as_f64().unwrap() * 100.0;
    eprintln!("culprit frame: {share}% of before, change {delta}%; diff: {before_share:.2}% of before's bytes");
    assert!((share - before_share).abs() <= SHARE_TOLERANCE * 100.0, "{title}");
    assert!((delta + share).abs() <= SHARE_TOLERANCE * 100.0, "the frame fell by all of its share: {title}");
    assert_eq!(attr(&dom[at..], "<rect", "fill"), "rgb(100,100,255)", "a frame that fell this much is deep blue");

    // The figures table is the JSON diff's.
    for m in ["gc.cycles_per_s", "alloc.bytes_per_s"] {
        let row = &dom[dom.find(&format!("data-metric=\"{m}\"")).unwrap_or_else(|| panic!("no row {m}"))..];
        let fell = d["metrics"].as_array().unwrap().iter().find(|x| x["metric"] == m).unwrap()["change"].as_f64().unwrap() < 0.0;
        assert!(fell, "{m} fell after the fix");
        let tr_start = dom[..dom.len() - row.len()].rfind("<tr").unwrap();
        assert!(dom[tr_start..].starts_with("<tr class=\"fell\""), "{m}'s row is marked as fallen");
    }
    assert!(dom.contains("class=\"culprit-gone\""), "the culprit is listed as gone");
    let shot = dir.join("diff.png");
    headless(&chromium, &dir, &page, &[format!("--screenshot={}", shot.display()), format!("--window-size={},{}", WINDOW.0, WINDOW.1)]);
    let (size, colours) = png_colours(&shot);
    assert_eq!(size, WINDOW);
    assert!(colours > MIN_COLOURS, "{colours} colours: a blank page?");
    let _ = std::fs::remove_dir_all(&dir);
}
