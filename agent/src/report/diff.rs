//! `gcprobe diff BEFORE AFTER`: two reports compared, to prove a fix
//! (`gcprobe.diff/v1`).
//!
//! Session figures are the `--fail-on` metrics ([`Metric`]), measured the
//! same way. Callsite rows and culprits are matched on their exact key
//! (probe, function, file, line; culprits without the probe): a fix that
//! moves a line lists it as gone and new, never as a guess. A row one side
//! lacks is 0 there when that side measured allocations at all (a report's
//! callsite table is never cut), else unavailable, with the reason.
use std::{collections::BTreeMap, fmt::Write as _, str::FromStr};

use serde::Serialize;

use super::{
    rules::{Metric, RuleError},
    Callsite, Culprit, Report,
};
use crate::analysis::rows::RowProbe;

pub const SCHEMA: &str = "gcprobe.diff/v1";

/// How `gcprobe diff` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people, the biggest changes first.
    Text,
    /// The comparison as JSON (gcprobe.diff/v1).
    Json,
    /// One self-contained page: the figures, a differential flame graph (two recordings), pauses and heap.
    Html,
}

/// What a side was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A file written by `gcprobe record` or `run --record`, replayed.
    Recording,
    /// A report written with `--format json`.
    JsonReport,
}

/// One side of the comparison, as loaded.
pub struct Side {
    /// The file, as given.
    pub name: String,
    pub source: Source,
    pub report: Report,
}

/// A figure before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// after − before; None when a side has no value.
    pub change: Option<f64>,
    /// The change over `before`, in percent; None also when `before` is 0.
    pub change_pct: Option<f64>,
    /// Why a side has no value, as `before: no pauses seen`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

impl Change {
    fn new(before: Result<f64, String>, after: Result<f64, String>) -> Self {
        let mut unavailable = Vec::new();
        if let Err(why) = &before {
            unavailable.push(format!("before: {why}"));
        }
        if let Err(why) = &after {
            unavailable.push(format!("after: {why}"));
        }
        let (before, after) = (before.ok(), after.ok());
        let change = before.zip(after).map(|(b, a)| a - b);
        let change_pct = before.zip(change).filter(|&(b, _)| b != 0.0).map(|(b, c)| c / b * 100.0);
        Change { before, after, change, change_pct, unavailable }
    }
}

/// Which sides a row or culprit is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Both,
    /// Only before: fixed, or moved to another line.
    Gone,
    /// Only after.
    New,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricChange {
    pub metric: &'static str,
    /// What `before`, `after` and `change` count: ns, count, per_s, bytes_per_s, bytes or fraction.
    pub unit: &'static str,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallsiteChange {
    pub probe: RowProbe,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub presence: Presence,
    pub bytes_per_s: Change,
    pub allocs_per_s: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CulpritChange {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The culprit's kind on the side that has it (after's when both do).
    pub kind: String,
    /// Its rank on each side (1 is the worst).
    pub rank_before: Option<u32>,
    pub rank_after: Option<u32>,
    pub share_of_bytes: Change,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    pub file: String,
    pub source: Source,
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub mode: crate::plan::Mode,
    pub duration_s: f64,
}

/// The comparison, as data.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub schema: &'static str,
    pub before: SideInfo,
    pub after: SideInfo,
    /// Every `--fail-on` metric, in the order `--help` lists them.
    pub metrics: Vec<MetricChange>,
    /// Every callsite row of either side, the biggest change in bytes/s first.
    pub callsites: Vec<CallsiteChange>,
    pub culprits_gone: Vec<CulpritChange>,
    pub culprits_new: Vec<CulpritChange>,
    pub culprits_kept: Vec<CulpritChange>,
    /// What makes the two less comparable than they look.
    pub warnings: Vec<String>,
    /// The `--fail-on` rules' verdicts.
    pub rules: Vec<ChangeVerdict>,
}

type RowKey<'a> = (RowProbe, &'a str, Option<&'a str>, Option<u32>);
type CulpritKey<'a> = (&'a str, Option<&'a str>, Option<u32>);

fn row_key(c: &Callsite) -> RowKey<'_> {
    (c.probe, &c.function, c.file.as_deref(), c.line)
}

fn culprit_key(c: &Culprit) -> CulpritKey<'_> {
    (&c.function, c.file.as_deref(), c.line)
}

/// Each key with its entry on either side, in the order first seen (before's first).
fn pair_up<'a, T, K: Ord + Copy>(before: &'a [T], after: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<(K, Option<&'a T>, Option<&'a T>)> {
    let mut order: Vec<K> = Vec::new();
    let mut sides: BTreeMap<K, (Option<&T>, Option<&T>)> = BTreeMap::new();
    for (i, list) in [before, after].into_iter().enumerate() {
        for item in list {
            let k = key(item);
            let slot = sides.entry(k).or_insert_with(|| {
                order.push(k);
                (None, None)
            });
            // Keys are unique within a report; should one repeat, its first row stands.
            let side = if i == 0 { &mut slot.0 } else { &mut slot.1 };
            side.get_or_insert(item);
        }
    }
    order.into_iter().map(|k| (k, sides[&k].0, sides[&k].1)).collect()
}

/// Allocations per second at a row: its rate time is count / per_s.
fn allocs_per_s(c: &Callsite) -> f64 {
    if c.count == 0 {
        0.0
    } else {
        c.allocs as f64 * c.per_s / c.count as f64
    }
}

/// A row's figure on one side: its own, 0 when the side measured
/// allocations and had none there, else why there is no figure.
fn row_figure(row: Option<&Callsite>, side: &Report, f: fn(&Callsite) -> f64) -> Result<f64, String> {
    match row {
        Some(c) => Ok(f(c)),
        None => Metric::AllocBytesPerS.value(side).map(|_| 0.0),
    }
}

fn callsites(before: &Report, after: &Report) -> Vec<CallsiteChange> {
    let mut rows: Vec<CallsiteChange> = pair_up(&before.callsites, &after.callsites, row_key)
        .into_iter()
        .map(|((probe, function, file, line), b, a)| CallsiteChange {
            probe,
            function: function.to_owned(),
            file: file.map(str::to_owned),
            line,
            presence: presence(b.is_some(), a.is_some()),
            bytes_per_s: Change::new(row_figure(b, before, |c| c.bytes_per_s), row_figure(a, after, |c| c.bytes_per_s)),
            allocs_per_s: Change::new(row_figure(b, before, allocs_per_s), row_figure(a, after, allocs_per_s)),
        })
        .collect();
    // Biggest change first; a row without one after those, by the figure it has.
    let weight = |c: &CallsiteChange| c.bytes_per_s.change.map_or((0, 0.0), |d| (1, d.abs()));
    let known = |c: &CallsiteChange| c.bytes_per_s.before.or(c.bytes_per_s.after).unwrap_or(0.0);
    rows.sort_by(|x, y| weight(y).partial_cmp(&weight(x)).unwrap_or(std::cmp::Ordering::Equal).then(known(y).total_cmp(&known(x))));
    rows
}

fn presence(before: bool, after: bool) -> Presence {
    match (before, after) {
        (true, false) => Presence::Gone,
        (false, true) => Presence::New,
        _ => Presence::Both,
    }
}

/// Culprits gone, new and kept. A culprit not named on a side is none
/// there: its share of bytes is then that of its row, when it has one.
fn culprits(before: &Report, after: &Report) -> [Vec<CulpritChange>; 3] {
    let [mut gone, mut new, mut kept] = <[Vec<CulpritChange>; 3]>::default();
    for ((function, file, line), b, a) in pair_up(&before.culprits, &after.culprits, culprit_key) {
        let share = |c: Option<&Culprit>, r: &Report| match c {
            Some(c) => Ok(c.share_of_bytes),
            None => {
                let row = r.callsites.iter().find(|s| s.probe == RowProbe::Growslice && (s.function.as_str(), s.file.as_deref(), s.line) == (function, file, line));
                row_figure(row, r, |c| c.share_of_bytes)
            }
        };
        let change = CulpritChange {
            function: function.to_owned(),
            file: file.map(str::to_owned),
            line,
            kind: a.or(b).map(|c| c.kind.clone()).unwrap_or_default(),
            rank_before: b.map(|c| c.rank),
            rank_after: a.map(|c| c.rank),
            share_of_bytes: Change::new(share(b, before), share(a, after)),
        };
        match presence(b.is_some(), a.is_some()) {
            Presence::Gone => gone.push(change),
            Presence::New => new.push(change),
            Presence::Both => kept.push(change),
        }
    }
    [gone, new, kept]
}

fn side_info(s: &Side) -> SideInfo {
    let r = &s.report;
    SideInfo { file: s.name.clone(), source: s.source, pid: r.target.pid, exe: r.target.exe.clone(), go_version: r.target.go_version.clone(), mode: r.sampling.mode, duration_s: r.window.duration_s }
}

fn warnings(before: &Side, after: &Side) -> Vec<String> {
    let (b, a) = (&before.report, &after.report);
    let mut w = Vec::new();
    if b.sampling.mode != a.sampling.mode {
        w.push(format!("before ran in {} mode and after in {} mode: their allocation rates are measured differently", b.sampling.mode.name(), a.sampling.mode.name()));
    }
    if b.target.go_version != a.target.go_version {
        w.push(format!("before ran {} and after {}: the runtime's own behaviour differs too", b.target.go_version, a.target.go_version));
    }
    for (side, r) in [("before", b), ("after", a)] {
        if r.events.lost > 0 {
            w.push(format!("{side} lost {} events: its figures are low", r.events.lost));
        }
    }
    w
}

/// Compares two reports and judges `rules` on them.
pub fn compare(before: &Side, after: &Side, rules: &[ChangeRule]) -> Diff {
    let (b, a) = (&before.report, &after.report);
    let [culprits_gone, culprits_new, culprits_kept] = culprits(b, a);
    Diff {
        schema: SCHEMA,
        before: side_info(before),
        after: side_info(after),
        metrics: Metric::all().map(|m| MetricChange { metric: m.name(), unit: m.unit(), change: Change::new(m.value(b), m.value(a)) }).collect(),
        callsites: callsites(b, a),
        culprits_gone,
        culprits_new,
        culprits_kept,
        warnings: warnings(before, after),
        rules: rules.iter().map(|r| r.judge(b, a)).collect(),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeRuleError {
    #[error("empty rule: write METRIC +N%, e.g. stw.p99 +20%")]
    Empty,
    #[error("no metric before the change: write METRIC +N%, e.g. stw.p99 +20%")]
    MissingMetric,
    #[error(transparent)]
    Metric(#[from] RuleError),
    #[error("{metric} needs a change: +N%, e.g. {metric} +10% (fails when after exceeds before by more than 10%)")]
    MissingChange { metric: &'static str },
    #[error("diff rules are relative: write {metric} +N% (for a limit on one report, use report --fail-on '{metric} > ...')")]
    Absolute { metric: &'static str },
    #[error("a fall is not a gate: write {metric} +N%, which fails when after exceeds before by more than N%")]
    Fall { metric: &'static str },
    #[error("change {text:?} is not a number, e.g. {metric} +10%")]
    BadNumber { metric: &'static str, text: String },
    #[error("the change needs %: {metric} +{text}%")]
    MissingPercent { metric: &'static str, text: String },
    #[error("unexpected {text:?} after the change")]
    TrailingGarbage { text: String },
}

/// A `gcprobe diff --fail-on` rule: `METRIC +N%` fails when after >
/// before × (1 + N/100). Every metric is worse higher, so a rise is what
/// a gate stops; a side that could not measure the metric does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRule {
    metric: Metric,
    /// N of `+N%`, in percent.
    pct: f64,
    text: String,
}

impl std::fmt::Display for ChangeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ChangeRule {
    type Err = ChangeRuleError;

    fn from_str(s: &str) -> Result<Self, ChangeRuleError> {
        let text = s.trim();
        if text.is_empty() {
            return Err(ChangeRuleError::Empty);
        }
        let name_end = text.find(|c: char| c.is_whitespace() || "+-<>=!".contains(c)).unwrap_or(text.len());
        if name_end == 0 {
            return Err(ChangeRuleError::MissingMetric);
        }
        let metric = Metric::named(&text[..name_end])?;
        let name = metric.name();
        let rest = text[name_end..].trim_start();
        let rest = match rest.chars().next() {
            Some('+') => rest[1..].trim_start(),
            Some('-') => return Err(ChangeRuleError::Fall { metric: name }),
            Some('<' | '>' | '=' | '!') => return Err(ChangeRuleError::Absolute { metric: name }),
            _ => return Err(ChangeRuleError::MissingChange { metric: name }),
        };
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let pct: f64 = num.parse().ok().filter(|p: &f64| p.is_finite()).ok_or_else(|| ChangeRuleError::BadNumber { metric: name, text: rest.split_whitespace().next().unwrap_or("").into() })?;
        let Some(trailing) = after.trim_start().strip_prefix('%') else {
            return Err(ChangeRuleError::MissingPercent { metric: name, text: num.into() });
        };
        if !trailing.trim().is_empty() {
            return Err(ChangeRuleError::TrailingGarbage { text: trailing.trim().into() });
        }
        Ok(ChangeRule { metric, pct, text: text.into() })
    }
}

/// One rule judged on a pair of reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeVerdict {
    pub rule: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// For people: `alloc.bytes_per_s: 1.0 MiB/s -> 3.0 MiB/s (+200.0%), allowed +10%`.
    pub shown: String,
    /// After rose past the allowance: the run should fail. Never when a side is unmeasured.
    pub held: bool,
}

impl ChangeRule {
    fn judge(&self, before: &Report, after: &Report) -> ChangeVerdict {
        let m = self.metric;
        let (b, a) = (m.value(before), m.value(after));
        let (held, shown) = match (&b, &a) {
            (Ok(b), Ok(a)) => (*a > b * (1.0 + self.pct / 100.0), format!("{}: {} -> {} ({}), allowed +{}%", m.name(), m.show(*b), m.show(*a), pct_text(Change::new(Ok(*b), Ok(*a)).change_pct), self.pct)),
            (Err(why), _) => (false, format!("{}: unavailable before: {why}", m.name())),
            (_, Err(why)) => (false, format!("{}: unavailable after: {why}", m.name())),
        };
        ChangeVerdict { rule: self.text.clone(), before: b.ok(), after: a.ok(), shown, held }
    }
}

pub fn pct_text(pct: Option<f64>) -> String {
    pct.map_or("from 0".into(), |p| format!("{p:+.1}%"))
}

pub fn change_text(m: Metric, c: &Change) -> String {
    match c.change {
        Some(d) => format!("{} ({})", m.show_change(d), pct_text(c.change_pct)),
        None => c.unavailable.join("; "),
    }
}

pub fn side_text(m: Metric, v: Option<f64>) -> String {
    v.map_or("unavailable".into(), |v| m.show(v))
}

pub fn where_text(function: &str, file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{function} {}:{l}", crate::units::short(f)),
        (Some(f), None) => format!("{function} {}", crate::units::short(f)),
        _ => function.to_owned(),
    }
}

/// Callsite rows the text shows; JSON has them all.
const TEXT_ROWS: usize = 12;

/// The comparison for people: session figures, then callsites by change, then culprits.
pub fn render(d: &Diff) -> String {
    let mut o = String::new();
    for (label, s) in [("before", &d.before), ("after ", &d.after)] {
        let from = match s.source {
            Source::Recording => "recording",
            Source::JsonReport => "JSON report",
        };
        let _ = writeln!(o, "{label} {} ({from}): pid {} {}, {}, {} mode, {:.1}s", s.file, s.pid, crate::units::short(&s.exe), s.go_version, s.mode.name(), s.duration_s);
    }
    for w in &d.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    let _ = writeln!(o, "\n{:<18} {:>12} {:>12}  change", "metric", "before", "after");
    for mc in &d.metrics {
        let m = Metric::named(mc.metric).expect("metrics come from the table");
        let _ = writeln!(o, "{:<18} {:>12} {:>12}  {}", mc.metric, side_text(m, mc.change.before), side_text(m, mc.change.after), change_text(m, &mc.change));
    }
    callsite_rows(&mut o, &d.callsites);
    culprit_lists(&mut o, d);
    super::text::printable(o)
}

/// The first TEXT_ROWS callsites, one line each.
fn callsite_rows(o: &mut String, rows: &[CallsiteChange]) {
    let _ = writeln!(o, "\ncallsites, the biggest change in bytes/s first (- gone, + new; rows match on probe, function, file and line)");
    let _ = writeln!(o, "  {:<9} {:<40} {:>11} {:>11}  {:<24} {:>11} {:>11}", "probe", "callsite", "bytes/s", "(after)", "change", "allocs/s", "(after)");
    let (bytes, allocs) = (Metric::AllocBytesPerS, Metric::AllocPerS);
    for c in rows.iter().take(TEXT_ROWS) {
        let mark = match c.presence {
            Presence::Both => ' ',
            Presence::Gone => '-',
            Presence::New => '+',
        };
        let (b, a) = (&c.bytes_per_s, &c.allocs_per_s);
        let change = b.change.map_or("-".into(), |d| format!("{} ({})", bytes.show_change(d), pct_text(b.change_pct)));
        let why = b.unavailable.iter().chain(&a.unavailable).next().map(|w| format!("  {w}")).unwrap_or_default();
        let place = where_text(&c.function, c.file.as_deref(), c.line);
        let _ = writeln!(o, "{mark} {:<9} {place:<40} {:>11} {:>11}  {change:<24} {:>11} {:>11}{why}", c.probe.name(), side_text(bytes, b.before), side_text(bytes, b.after), side_text(allocs, a.before), side_text(allocs, a.after));
    }
    if rows.len() > TEXT_ROWS {
        let _ = writeln!(o, "  ... {} more rows (--format json lists every one)", rows.len() - TEXT_ROWS);
    }
}

fn culprit_lists(o: &mut String, d: &Diff) {
    for (what, list) in [("gone", &d.culprits_gone), ("new", &d.culprits_new), ("kept", &d.culprits_kept)] {
        let _ = write!(o, "\nculprits {what}:");
        if list.is_empty() {
            o.push_str(" none");
        }
        for c in list {
            let share = &c.share_of_bytes;
            let _ = write!(o, "\n  {} ({}), share of bytes {} -> {}", where_text(&c.function, c.file.as_deref(), c.line), c.kind, side_text(Metric::GrowsliceShare, share.before), side_text(Metric::GrowsliceShare, share.after));
        }
    }
    o.push('\n');
}

/// The diff as `--format` asks; None for HTML, which draws the sides'
/// stacks and pauses too (export::diffpage).
pub fn bytes(d: &Diff, format: Format) -> Option<Vec<u8>> {
    match format {
        Format::Text => Some(render(d).into_bytes()),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(d).expect("diff serializes");
            s.push('\n');
            Some(s.into_bytes())
        }
        Format::Html => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{empty_report, Stw};

    fn rule(s: &str) -> ChangeRule {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> ChangeRuleError {
        s.parse::<ChangeRule>().err().unwrap_or_else(|| panic!("{s:?} parsed"))
    }

    #[test]
    fn parses_change_rules() {
        for (s, metric, pct) in [("stw.p99 +20%", Metric::StwP99, 20.0), ("alloc.bytes_per_s+10%", Metric::AllocBytesPerS, 10.0), ("  heap.live_max + 2.5 % ", Metric::HeapLiveMax, 2.5), ("gc.cycles_per_s +0%", Metric::GcCyclesPerS, 0.0)] {
            let r = rule(s);
            assert_eq!((r.metric, r.pct, r.text.as_str()), (metric, pct, s.trim()), "{s}");
        }
    }

    #[test]
    fn rejects_each_change_rule_error() {
        let m = "stw.p99";
        let cases = [
            ("", ChangeRuleError::Empty),
            ("+20%", ChangeRuleError::MissingMetric),
            ("stw.p9 +20%", ChangeRuleError::Metric(RuleError::UnknownMetric { name: "stw.p9".into(), suggestion: Some("stw.p99") })),
            ("stw.p99", ChangeRuleError::MissingChange { metric: m }),
            ("stw.p99 20%", ChangeRuleError::MissingChange { metric: m }),
            ("stw.p99 -20%", ChangeRuleError::Fall { metric: m }),
            ("stw.p99 > 5ms", ChangeRuleError::Absolute { metric: m }),
            ("stw.p99 +", ChangeRuleError::BadNumber { metric: m, text: "".into() }),
            ("stw.p99 +x%", ChangeRuleError::BadNumber { metric: m, text: "x%".into() }),
            ("stw.p99 +1.2.3%", ChangeRuleError::BadNumber { metric: m, text: "1.2.3%".into() }),
            ("stw.p99 +20", ChangeRuleError::MissingPercent { metric: m, text: "20".into() }),
            ("stw.p99 +20ms", ChangeRuleError::MissingPercent { metric: m, text: "20".into() }),
            ("stw.p99 +20% or so", ChangeRuleError::TrailingGarbage { text: "or so".into() }),
        ];
        for (s, want) in cases {
            assert_eq!(err(s), want, "{s:?}");
            assert!(!err(s).to_string().contains('\n'));
        }
        assert_eq!(err("stw.p99 -20%").to_string(), "a fall is not a gate: write stw.p99 +N%, which fails when after exceeds before by more than N%");
    }

    fn row(probe: RowProbe, function: &str, line: u32, bytes_per_s: f64) -> Callsite {
        Callsite {
            probe,
            function: function.into(),
            file: Some("/src/main.go".into()),
            line: Some(line),
            frames: vec![],
            count: 10,
            allocs: 20,
            bytes: (bytes_per_s * 10.0) as u64,
            per_s: 1.0,
            bytes_per_s,
            share_of_bytes: 0.5,
            share_of_allocs: 0.5,
            bytes_per_s_ci95: None,
            runtime_sampled_bytes_per_s: None,
            mean_new_len: None,
            app_frame: None,
            evidence: None,
        }
    }

    fn side(name: &str, callsites: Vec<Callsite>) -> Side {
        let mut report = empty_report();
        report.callsites = callsites;
        Side { name: name.into(), source: Source::JsonReport, report }
    }

    /// Rows match on their exact key; one that moved lines or changed probe is gone and new.
    #[test]
    fn matches_rows_on_probe_function_file_and_line() {
        use RowProbe::{Growslice as G, Mallocgc as M};
        let before = side("b", vec![row(G, "main.f", 22, 1000.0), row(M, "main.g", 5, 100.0), row(M, "main.h", 9, 50.0)]);
        let after = side("a", vec![row(G, "main.f", 23, 400.0), row(M, "main.g", 5, 300.0), row(G, "main.h", 9, 10.0)]);
        let d = compare(&before, &after, &[]);
        let got: Vec<_> = d.callsites.iter().map(|c| (c.probe, c.function.as_str(), c.line, c.presence, c.bytes_per_s.before, c.bytes_per_s.after)).collect();
        assert_eq!(
            got,
            [
                (G, "main.f", Some(22), Presence::Gone, Some(1000.0), Some(0.0)),
                (G, "main.f", Some(23), Presence::New, Some(0.0), Some(400.0)),
                (M, "main.g", Some(5), Presence::Both, Some(100.0), Some(300.0)),
                (M, "main.h", Some(9), Presence::Gone, Some(50.0), Some(0.0)),
                (G, "main.h", Some(9), Presence::New, Some(0.0), Some(10.0)),
            ]
        );
        let g = &d.callsites[2];
        assert_eq!((g.bytes_per_s.change, g.bytes_per_s.change_pct), (Some(200.0), Some(200.0)));
        // 20 allocations over 10 calls at 1 call/s.
        assert_eq!((g.allocs_per_s.before, g.allocs_per_s.after), (Some(2.0), Some(2.0)));
        assert_eq!(d.callsites[1].bytes_per_s.change_pct, None, "no percentage from 0");
    }

    /// A side that never observed allocations has no row figures: unavailable, not 0.
    #[test]
    fn a_row_missing_where_nothing_was_observed_is_unavailable() {
        let before = side("b", vec![row(RowProbe::Growslice, "main.f", 22, 1000.0)]);
        let mut after = side("a", vec![]);
        after.report.sampling.mode = crate::plan::Mode::Sampled;
        let d = compare(&before, &after, &[rule("alloc.bytes_per_s +10%")]);
        let c = &d.callsites[0].bytes_per_s;
        assert_eq!((c.before, c.after, c.change), (Some(1000.0), None, None));
        assert_eq!(c.unavailable, ["after: allocations were not observed"]);
        assert_eq!(change_text(Metric::AllocBytesPerS, c), "after: allocations were not observed");
        let v = &d.rules[0];
        assert_eq!((v.held, v.shown.as_str()), (false, "alloc.bytes_per_s: unavailable after: allocations were not observed"));
        assert_eq!(d.warnings, ["before ran in exact mode and after in sampled mode: their allocation rates are measured differently"]);
    }

    #[test]
    fn gates_hold_only_past_the_allowed_rise() {
        let with_p99 = |us: f64| {
            let mut s = side("x", vec![]);
            s.report.gc.stw = Stw { count: 3, p99_us: us, ..Stw::default() };
            s
        };
        let r = [rule("stw.p99 +20%")];
        let cases = [(100.0, 119.0, false), (100.0, 120.0, false), (100.0, 121.0, true), (100.0, 50.0, false), (0.0, 1.0, true), (0.0, 0.0, false)];
        for (b, a, held) in cases {
            let d = compare(&with_p99(b), &with_p99(a), &r);
            assert_eq!(d.rules[0].held, held, "{b} -> {a}: {}", d.rules[0].shown);
        }
        let d = compare(&with_p99(100.0), &with_p99(121.0), &r);
        assert_eq!(d.rules[0].shown, "stw.p99: 100us -> 121us (+21.0%), allowed +20%");
        let mut none = with_p99(0.0);
        none.report.gc.stw.count = 0;
        let d = compare(&none, &with_p99(500.0), &r);
        assert_eq!((d.rules[0].held, d.rules[0].shown.as_str()), (false, "stw.p99: unavailable before: no pauses seen"));
        let m = d.metrics.iter().find(|m| m.metric == "stw.p99").unwrap();
        assert_eq!((m.change.before, m.change.after, m.change.unavailable.as_slice()), (None, Some(500e3), &["before: no pauses seen".to_owned()][..]));
    }

    #[test]
    fn culprits_are_gone_new_or_kept() {
        let culprit = |function: &str, line: u32, rank: u32| Culprit {
            rank,
            function: function.into(),
            file: Some("/src/main.go".into()),
            line: Some(line),
            kind: "append-growth".into(),
            share_of_bytes: 0.6,
            share_of_allocs: 0.1,
            evidence: String::new(),
            suggestion: String::new(),
            summary: String::new(),
            loop_: None,
            elem_type: None,
            per_call: None,
            expected_saving: None,
            app_frame: None,
            app_loop: None,
        };
        let mut before = side("b", vec![row(RowProbe::Growslice, "main.f", 22, 1000.0)]);
        before.report.culprits = vec![culprit("main.f", 22, 1), culprit("main.k", 7, 2)];
        let mut after = side("a", vec![row(RowProbe::Mallocgc, "main.f", 22, 10.0)]);
        after.report.culprits = vec![culprit("main.k", 7, 1), culprit("main.n", 3, 2)];
        let d = compare(&before, &after, &[]);
        let names = |l: &[CulpritChange]| l.iter().map(|c| (c.function.clone(), c.rank_before, c.rank_after)).collect::<Vec<_>>();
        assert_eq!(names(&d.culprits_gone), [("main.f".to_owned(), Some(1), None)]);
        assert_eq!(names(&d.culprits_new), [("main.n".to_owned(), None, Some(2))]);
        assert_eq!(names(&d.culprits_kept), [("main.k".to_owned(), Some(2), Some(1))]);
        // Gone: after has no growslice row there, and measured allocations.
        assert_eq!((d.culprits_gone[0].share_of_bytes.before, d.culprits_gone[0].share_of_bytes.after), (Some(0.6), Some(0.0)));
        let text = render(&d);
        assert!(text.contains("culprits gone:\n  main.f main.go:22 (append-growth), share of bytes 60% -> 0%"), "{text}");
    }
}
