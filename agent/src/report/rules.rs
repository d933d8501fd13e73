//! `--fail-on` rules: a metric of the report, an operator and a threshold
//! (`stw.p99 > 5ms`). A rule that holds fails the CI run.
//!
//! Parsing is strict: a typo must be an error, never a rule that silently
//! never holds. For the same reason a metric the session could not measure
//! (percentiles of no pauses) is reported as such and does not hold, while
//! a real zero (no GC cycles) is a value like any other.
//!
//! The leak gates (`maps.likely_leaks`, `heap.live_growth`, `heap.live_max`)
//! read the same leak analysis the report's warnings come from.
use std::{fmt, str::FromStr};

use serde::Serialize;

use crate::{analysis::culprits, report::Report};

/// What a metric measures decides the units its threshold takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Compared in nanoseconds; the threshold needs a unit.
    Duration,
    /// A plain number.
    Count,
    /// Per second: a plain number, `/s` optional.
    Rate,
    /// Bytes per second; the threshold needs a byte unit.
    ByteRate,
    /// Bytes; the threshold needs a byte unit, without `/s`.
    Bytes,
    /// A fraction of 1, written as a percentage.
    Share,
}

/// A figure of a report that rules judge and `gcprobe diff` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    StwP50,
    StwP99,
    StwMax,
    StwTotal,
    StwCount,
    GcCycles,
    AssistCount,
    GcCyclesPerS,
    AllocPerS,
    AllocBytesPerS,
    GrowsliceShare,
    MapsLikelyLeaks,
    HeapLiveGrowth,
    HeapLiveMedian,
    HeapLiveMax,
}

impl Metric {
    /// Every metric is ≥ 0 but a growth rate: a shrinking heap's is negative.
    const fn signed(self) -> bool {
        matches!(self, Metric::HeapLiveGrowth)
    }
}

const METRICS: &[(&str, Metric, Kind)] = &[
    ("stw.p50", Metric::StwP50, Kind::Duration),
    ("stw.p99", Metric::StwP99, Kind::Duration),
    ("stw.max", Metric::StwMax, Kind::Duration),
    ("stw.total", Metric::StwTotal, Kind::Duration),
    ("stw.count", Metric::StwCount, Kind::Count),
    ("gc.cycles", Metric::GcCycles, Kind::Count),
    ("assist.count", Metric::AssistCount, Kind::Count),
    ("gc.cycles_per_s", Metric::GcCyclesPerS, Kind::Rate),
    ("alloc.per_s", Metric::AllocPerS, Kind::Rate),
    ("alloc.bytes_per_s", Metric::AllocBytesPerS, Kind::ByteRate),
    ("growslice.share", Metric::GrowsliceShare, Kind::Share),
    ("maps.likely_leaks", Metric::MapsLikelyLeaks, Kind::Count),
    ("heap.live_growth", Metric::HeapLiveGrowth, Kind::ByteRate),
    ("heap.live_median", Metric::HeapLiveMedian, Kind::Bytes),
    ("heap.live_max", Metric::HeapLiveMax, Kind::Bytes),
];

/// The metric names a rule may use, in the order help texts list them.
pub fn metrics() -> impl Iterator<Item = &'static str> {
    METRICS.iter().map(|m| m.0)
}

fn by_name(name: &str) -> Option<(&'static str, Metric, Kind)> {
    METRICS.iter().find(|m| m.0 == name).copied()
}

impl Metric {
    /// Every metric, in the order help texts list them.
    pub fn all() -> impl Iterator<Item = Metric> {
        METRICS.iter().map(|m| m.1)
    }

    /// The metric called `name`, or an error that suggests the one meant.
    pub fn named(name: &str) -> Result<Metric, RuleError> {
        by_name(name).map(|m| m.1).ok_or_else(|| RuleError::UnknownMetric { name: name.into(), suggestion: closest(name) })
    }

    pub fn name(self) -> &'static str {
        self.entry().0
    }

    fn kind(self) -> Kind {
        self.entry().2
    }

    fn entry(self) -> (&'static str, Metric, Kind) {
        *METRICS.iter().find(|m| m.1 == self).expect("every metric is in METRICS")
    }

    /// The metric's value in `report`, in its base unit (nanoseconds,
    /// bytes, bytes per second, a fraction of 1 for shares, else the plain
    /// number), or why the session could not measure it.
    pub fn value(self, report: &Report) -> Result<f64, String> {
        match measure(self, report) {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err("not a finite value".into()),
            Err(why) => Err(why),
        }
    }

    /// The base unit of [`Metric::value`], as JSON names it.
    pub fn unit(self) -> &'static str {
        match self.kind() {
            Kind::Duration => "ns",
            Kind::Count => "count",
            Kind::Rate => "per_s",
            Kind::ByteRate => "bytes_per_s",
            Kind::Bytes => "bytes",
            Kind::Share => "fraction",
        }
    }

    /// `v` for people, in the metric's unit: `3.21ms`, `19.5 KiB/s`, `36%`.
    pub fn show(self, v: f64) -> String {
        show(self.kind(), v)
    }

    /// A change `d` of the metric, signed: `+28.8us`; a share's in
    /// percentage points (`-94.25 pts`), not in percent of a percentage.
    pub fn show_change(self, d: f64) -> String {
        let sign = if d < 0.0 { '-' } else { '+' };
        match self.kind() {
            Kind::Share => format!("{sign}{} pts", number(d.abs() * 100.0)),
            kind => format!("{sign}{}", show(kind, d.abs())),
        }
    }
}

/// Errors only ever name metrics from METRICS, so the lookup cannot miss;
/// Count's wording is the harmless fallback.
fn kind_of(metric: &str) -> Kind {
    by_name(metric).map_or(Kind::Count, |m| m.2)
}

fn expects(metric: &str) -> &'static str {
    match kind_of(metric) {
        Kind::Duration => "a duration unit: 5ms, 500us, 1s (ns, us, µs, ms, s)",
        Kind::Count => "a plain number without a unit, e.g. 10",
        Kind::Rate => "a plain number per second, e.g. 10 or 10/s",
        Kind::ByteRate => "a byte unit: 100MB/s, 64MiB/s, 1GB (B, KB, KiB, MB, MiB, GB, GiB, optional /s)",
        Kind::Bytes => "a byte unit without /s: 512MiB, 1GB (B, KB, KiB, MB, MiB, GB, GiB)",
        Kind::Share => "a percentage, e.g. 30%",
    }
}

fn example(metric: &str) -> String {
    let threshold = match kind_of(metric) {
        Kind::Duration => "5ms",
        Kind::Count => "10",
        Kind::Rate => "10/s",
        Kind::ByteRate => "100MB/s",
        Kind::Bytes => "512MiB",
        Kind::Share => "30%",
    };
    format!("{metric} > {threshold}")
}

fn did_you_mean(suggestion: &Option<&str>) -> String {
    suggestion.map(|s| format!("; did you mean {s}?")).unwrap_or_default()
}

fn known() -> String {
    metrics().collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("empty rule: write METRIC OP THRESHOLD, e.g. stw.p99 > 5ms")]
    Empty,
    #[error("no metric before the operator: write METRIC OP THRESHOLD, e.g. stw.p99 > 5ms")]
    MissingMetric,
    #[error("unknown metric {name:?}{} (known: {})", did_you_mean(.suggestion), known())]
    UnknownMetric { name: String, suggestion: Option<&'static str> },
    #[error("{metric} needs an operator (>, >=, < or <=) and a threshold, e.g. {}", example(.metric))]
    MissingOperator { metric: &'static str },
    #[error("unsupported operator {op:?} after {metric}: use >, >=, < or <=")]
    BadOperator { metric: &'static str, op: String },
    #[error("no threshold after the operator, e.g. {}", example(.metric))]
    MissingThreshold { metric: &'static str },
    #[error("threshold {text:?} is not a number, e.g. {}", example(.metric))]
    BadNumber { metric: &'static str, text: String },
    #[error("{metric} needs {}", expects(.metric))]
    MissingUnit { metric: &'static str },
    #[error("{unit:?} is not a unit {metric} takes: it needs {}", expects(.metric))]
    BadUnit { metric: &'static str, unit: String },
    #[error("unexpected {text:?} after the threshold")]
    TrailingGarbage { text: String },
    #[error("threshold {text} is negative: {metric} never is")]
    NegativeThreshold { metric: &'static str, text: String },
    #[error("threshold {text} is too large")]
    NonFiniteThreshold { text: String },
    #[error("threshold {text}% is above 100%: {metric} can never exceed it")]
    ShareAbove100 { metric: &'static str, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// One `--fail-on` rule, parsed with `str::parse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    metric: Metric,
    name: &'static str,
    kind: Kind,
    op: Op,
    /// In the metric's base unit: nanoseconds, bytes per second, a fraction
    /// of 1 for shares, else the plain number.
    threshold: f64,
    text: String,
}

impl Rule {
    /// The rule as the user wrote it (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The metric's name, e.g. `stw.p99`.
    pub fn metric(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const OP_CHARS: &str = "<>=!";

/// Where a metric name stops: at a space or anything that reads as an
/// operator, so `stw.p99>5ms` and `stw.p99≥5ms` split like their spaced forms.
fn ends_name(c: char) -> bool {
    c.is_whitespace() || OP_CHARS.contains(c) || (!c.is_ascii() && !c.is_alphanumeric())
}

/// Length of the operator token at the start of `s`: a run of `<>=!`, or one
/// other symbol (`≥`, `~`) so that it is named in the error; 0 when `s`
/// starts like a threshold or a word.
fn operator_len(s: &str) -> usize {
    let run = s.find(|c: char| !OP_CHARS.contains(c)).unwrap_or(s.len());
    if run > 0 {
        return run;
    }
    match s.chars().next() {
        Some(c) if !c.is_alphanumeric() && !c.is_whitespace() && !".+-".contains(c) => c.len_utf8(),
        _ => 0,
    }
}

fn first_word(s: &str) -> &str {
    &s[..s.find(char::is_whitespace).unwrap_or(s.len())]
}

/// Bytes in one `unit`; None for anything else.
fn byte_scale(unit: &str) -> Option<f64> {
    const KIB: f64 = 1024.0;
    Some(match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "KiB" => KIB,
        "MB" => 1e6,
        "MiB" => KIB * KIB,
        "GB" => 1e9,
        "GiB" => KIB * KIB * KIB,
        _ => return None,
    })
}

/// `value` written with `unit` in the metric's base unit; None when the
/// metric does not take that unit.
fn to_base(kind: Kind, value: f64, unit: &str) -> Option<f64> {
    let scale = match kind {
        Kind::Duration => match unit {
            "ns" => 1.0,
            // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU look alike.
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            _ => return None,
        },
        Kind::Count => match unit {
            "" => 1.0,
            _ => return None,
        },
        Kind::Rate => match unit {
            "" | "/s" => 1.0,
            _ => return None,
        },
        Kind::ByteRate => byte_scale(unit.strip_suffix("/s").unwrap_or(unit))?,
        Kind::Bytes => byte_scale(unit)?,
        // Divided, not multiplied by 0.01, so 36% is the same f64 as 0.36.
        Kind::Share => return (unit == "%").then_some(value / 100.0),
    };
    Some(value * scale)
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Rule, RuleError> {
        let text = s.trim();
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        let name_end = text.find(ends_name).unwrap_or(text.len());
        let name = &text[..name_end];
        if name.is_empty() {
            return Err(RuleError::MissingMetric);
        }
        let (metric_name, metric, kind) = Metric::named(name)?.entry();

        let rest = text[name_end..].trim_start();
        let op_len = operator_len(rest);
        if op_len == 0 {
            return Err(RuleError::MissingOperator { metric: metric_name });
        }
        let op = match &rest[..op_len] {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            other => return Err(RuleError::BadOperator { metric: metric_name, op: other.into() }),
        };

        let rest = rest[op_len..].trim_start();
        if rest.is_empty() {
            return Err(RuleError::MissingThreshold { metric: metric_name });
        }
        // Digits, point, sign and exponent; `inf` and `NaN` are not numbers here.
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || ".+-eE".contains(c))).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let value: f64 = match num.parse() {
            Ok(v) => v,
            Err(_) => return Err(RuleError::BadNumber { metric: metric_name, text: first_word(rest).into() }),
        };
        let after = after.trim_start();
        let unit = first_word(after);
        let trailing = after[unit.len()..].trim();
        let Some(threshold) = to_base(kind, value, unit) else {
            return Err(if unit.is_empty() { RuleError::MissingUnit { metric: metric_name } } else { RuleError::BadUnit { metric: metric_name, unit: unit.into() } });
        };
        if !trailing.is_empty() {
            return Err(RuleError::TrailingGarbage { text: trailing.into() });
        }
        if !threshold.is_finite() {
            return Err(RuleError::NonFiniteThreshold { text: format!("{num}{unit}") });
        }
        // A metric that is never negative makes a rule on a negative threshold a constant.
        if value < 0.0 && !metric.signed() {
            return Err(RuleError::NegativeThreshold { metric: metric_name, text: format!("{num}{unit}") });
        }
        if kind == Kind::Share && threshold > 1.0 {
            return Err(RuleError::ShareAbove100 { metric: metric_name, text: num.into() });
        }
        Ok(Rule { metric, name: metric_name, kind, op, threshold, text: text.into() })
    }
}

/// The metric a mistyped name most likely meant: the one whose last part it
/// is (`p99`), else the nearest by edit distance, if near enough.
fn closest(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    let mut tails = metrics().filter(|m| m.rsplit_once('.').is_some_and(|(_, tail)| tail == name));
    if let (Some(m), None) = (tails.next(), tails.next()) {
        return Some(m);
    }
    let len = name.chars().count();
    metrics().map(|m| (edit_distance(&name, m), m)).filter(|&(d, _)| d <= 3 && d < len).min_by_key(|&(d, _)| d).map(|(_, m)| m)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One rule checked against a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The rule as written.
    pub rule: String,
    /// The metric's value in its base unit (nanoseconds for durations,
    /// bytes per second, a fraction of 1 for shares, else the plain number);
    /// None when the session could not measure it.
    pub value: Option<f64>,
    /// For people: `stw.p99 = 3.21ms`, or `stw.p99: no pauses seen`.
    pub shown: String,
    /// The comparison is true: the run should fail. Never for an unmeasured value.
    pub held: bool,
}

pub fn evaluate(rules: &[Rule], report: &Report) -> Vec<Verdict> {
    rules.iter().map(|r| r.evaluate(report)).collect()
}

impl Rule {
    fn evaluate(&self, report: &Report) -> Verdict {
        let (value, shown) = match self.metric.value(report) {
            Ok(v) => (Some(v), format!("{} = {}", self.name, show(self.kind, v))),
            Err(why) => (None, format!("{}: {why}", self.name)),
        };
        Verdict { rule: self.text.clone(), held: value.is_some_and(|v| self.op.holds(v, self.threshold)), value, shown }
    }
}

/// The metric's value in its base unit, or why there is none.
fn measure(metric: Metric, r: &Report) -> Result<f64, String> {
    let stw = &r.gc.stw;
    // The report's *_us and total_ms come from whole nanoseconds: rounding
    // undoes the float division, so `>= 5ms` holds at exactly 5 ms.
    let pause = |us: f64| if stw.count == 0 { Err("no pauses seen".into()) } else { Ok((us * 1e3).round()) };
    match metric {
        Metric::StwP50 => pause(stw.p50_us),
        Metric::StwP99 => pause(stw.p99_us),
        Metric::StwMax => pause(stw.max_us),
        Metric::StwTotal => Ok((stw.total_ms * 1e6).round()),
        Metric::StwCount => Ok(stw.count as f64),
        Metric::GcCycles => Ok(r.gc.cycles as f64),
        // An optional probe: without it, zero assists would be a guess.
        Metric::AssistCount if r.probes.iter().any(|p| p.name == "gcAssistAlloc" && p.attached) => Ok(r.events.assist as f64),
        Metric::AssistCount => Err("gcAssistAlloc was not probed".into()),
        Metric::GcCyclesPerS if r.window.duration_s > 0.0 => Ok(r.gc.cycles as f64 / r.window.duration_s),
        Metric::GcCyclesPerS => Err("no time observed".into()),
        Metric::AllocPerS => alloc_rates(r).map(|(n, _)| n).map_err(Into::into),
        Metric::AllocBytesPerS => alloc_rates(r).map(|(_, b)| b).map_err(Into::into),
        Metric::GrowsliceShare if r.callsites.iter().any(|c| c.bytes > 0) => Ok(culprits::growslice_share(&r.callsites)),
        Metric::GrowsliceShare => Err("no allocated bytes seen".into()),
        Metric::MapsLikelyLeaks => r.likely_leaks.map(|n| n as f64).ok_or_else(|| r.likely_leaks_unavailable.clone().unwrap_or_else(|| "no map was watched".into())),
        // GROWTH_MIN_CYCLES is the 3.
        Metric::HeapLiveGrowth => culprits::live_growth(&r.gc.heap_live).ok_or_else(|| r.gc.heap_unavailable.clone().unwrap_or_else(|| "fewer than 3 GC cycles with a live heap".into())),
        Metric::HeapLiveMedian => r.gc.heap_medians.marked.map(|b| b as f64).ok_or_else(|| no_marked_heap(r)),
        // Of the cycles `heap_live` keeps: every one up to 4,096, evenly thinned past that.
        Metric::HeapLiveMax => culprits::live_max(&r.gc.heap_live).map(|b| b as f64).ok_or_else(|| no_marked_heap(r)),
    }
}

/// Why no cycle's marked heap is in the report.
fn no_marked_heap(r: &Report) -> String {
    match &r.gc.heap_unavailable {
        Some(why) => why.clone(),
        None if r.gc.cycles == 0 => "no GC cycle completed".into(),
        None => "no cycle's marked heap was read".into(),
    }
}

/// Allocations and bytes per second, as the callsite table has them: every
/// row's rates divide its counts by one time (paced by the runtime's heap in
/// sampled mode), which the report does not carry but its rows give back.
/// Events past the stack-table limit have no row and are not counted.
fn alloc_rates(r: &Report) -> Result<(f64, f64), &'static str> {
    let sum = |f: fn(&crate::report::Callsite) -> f64| r.callsites.iter().map(f).sum::<f64>();
    let (allocs, bytes, bytes_per_s) = (sum(|c| c.allocs as f64), sum(|c| c.bytes as f64), sum(|c| c.bytes_per_s));
    let (count, per_s) = (sum(|c| c.count as f64), sum(|c| c.per_s));
    if allocs == 0.0 {
        // No allocation at all is a real zero, unless no burst ever looked.
        let looked = r.window.duration_s > 0.0 && (r.sampling.mode == crate::plan::Mode::Exact || r.sampling.bursts > 0);
        return if looked { Ok((0.0, 0.0)) } else { Err("allocations were not observed") };
    }
    let rate_time = if bytes_per_s > 0.0 {
        bytes / bytes_per_s
    } else if per_s > 0.0 {
        count / per_s
    } else {
        return Err("allocation rates unavailable");
    };
    Ok((allocs / rate_time, bytes_per_s))
}

fn show(kind: Kind, v: f64) -> String {
    match kind {
        Kind::Duration => {
            let (v, unit) = if v >= 1e9 {
                (v / 1e9, "s")
            } else if v >= 1e6 {
                (v / 1e6, "ms")
            } else if v >= 1e3 {
                (v / 1e3, "us")
            } else {
                (v, "ns")
            };
            format!("{}{unit}", number(v))
        }
        Kind::Count => format!("{v:.0}"),
        Kind::Rate => format!("{}/s", number(v)),
        Kind::ByteRate => format!("{}{}/s", if v < 0.0 { "-" } else { "" }, crate::units::bytes(v.abs().round() as u64)),
        Kind::Bytes => crate::units::bytes(v.round() as u64),
        Kind::Share => format!("{}%", number(v * 100.0)),
    }
}

/// Two decimals at most, without trailing zeros; tiny values in exponent form
/// so that they do not read as 0.
fn number(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::*;

    fn parse(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> RuleError {
        match s.parse::<Rule>() {
            Ok(r) => panic!("{s:?} parsed as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_every_metric() {
        let cases = [
            ("stw.p50 > 1ms", Metric::StwP50, 1e6),
            ("stw.p99 > 5ms", Metric::StwP99, 5e6),
            ("stw.max > 20ms", Metric::StwMax, 20e6),
            ("stw.total > 1s", Metric::StwTotal, 1e9),
            ("stw.count > 100", Metric::StwCount, 100.0),
            ("gc.cycles > 7", Metric::GcCycles, 7.0),
            ("assist.count > 1000", Metric::AssistCount, 1000.0),
            ("gc.cycles_per_s > 10", Metric::GcCyclesPerS, 10.0),
            ("alloc.per_s > 1e6", Metric::AllocPerS, 1e6),
            ("alloc.bytes_per_s > 100MB/s", Metric::AllocBytesPerS, 100e6),
            ("growslice.share > 30%", Metric::GrowsliceShare, 0.3),
            ("maps.likely_leaks > 0", Metric::MapsLikelyLeaks, 0.0),
            ("heap.live_growth > 1MB/s", Metric::HeapLiveGrowth, 1e6),
            ("heap.live_median > 64MiB", Metric::HeapLiveMedian, 64.0 * 1048576.0),
            ("heap.live_max > 512MiB", Metric::HeapLiveMax, 536870912.0),
        ];
        assert_eq!(cases.len(), METRICS.len());
        for (s, metric, threshold) in cases {
            let r = parse(s);
            assert_eq!((r.metric, r.op, r.threshold), (metric, Op::Gt, threshold), "{s}");
            assert_eq!(r.text(), s);
            assert_eq!(r.metric(), s.split(' ').next().unwrap());
        }
    }

    #[test]
    fn parses_operators_and_spacing() {
        for (s, op) in [("stw.p99>5ms", Op::Gt), ("stw.p99 >= 5ms", Op::Ge), ("stw.p99<5 ms", Op::Lt), ("  stw.p99   <=5ms ", Op::Le), ("stw.p99\t>\t5ms", Op::Gt)] {
            let r = parse(s);
            assert_eq!((r.op, r.threshold), (op, 5e6), "{s}");
            assert_eq!(r.text(), s.trim());
        }
        assert_eq!(parse("stw.p99 > +5ms").threshold, 5e6);
        assert_eq!(parse("stw.p99 > 0ms").threshold, 0.0);
        assert_eq!(parse("stw.p99 > 2.5e-1s").threshold, 0.25e9);
    }

    #[test]
    fn parses_every_unit() {
        let durations = [("7ns", 7.0), ("1.5us", 1500.0), ("2µs", 2000.0), ("2μs", 2000.0), ("0.5ms", 500_000.0), ("3s", 3e9)];
        for (t, ns) in durations {
            assert_eq!(parse(&format!("stw.max > {t}")).threshold, ns, "{t}");
        }
        let bytes = [("1B", 1.0), ("2KB", 2e3), ("2KiB", 2048.0), ("3MB/s", 3e6), ("1MiB/s", 1048576.0), ("1GB", 1e9), ("2 GiB/s", 2147483648.0)];
        for (t, b) in bytes {
            assert_eq!(parse(&format!("alloc.bytes_per_s > {t}")).threshold, b, "{t}");
        }
        assert_eq!(parse("gc.cycles_per_s > 10/s").threshold, 10.0);
        assert_eq!(parse("alloc.per_s >= 2.5 /s").threshold, 2.5);
        assert_eq!(parse("growslice.share > 12.5 %").threshold, 0.125);
        assert_eq!(parse("growslice.share <= 100%").threshold, 1.0);
        for (t, b) in bytes {
            assert_eq!(parse(&format!("heap.live_growth > {t}")).threshold, b, "{t}");
        }
        let plain = [("1B", 1.0), ("2KB", 2e3), ("2KiB", 2048.0), ("3MB", 3e6), ("1MiB", 1048576.0), ("1.5GB", 1.5e9), ("2 GiB", 2147483648.0)];
        for (t, b) in plain {
            assert_eq!(parse(&format!("heap.live_max > {t}")).threshold, b, "{t}");
        }
        // A shrinking heap grows at a negative rate: a gate on it is meaningful.
        assert_eq!(parse("heap.live_growth < -1MiB/s").threshold, -1048576.0);
        assert_eq!(parse("maps.likely_leaks >= 1").threshold, 1.0);
    }

    #[test]
    fn rejects_each_error_class() {
        let m = "stw.p99";
        let cases = [
            ("", RuleError::Empty),
            ("   ", RuleError::Empty),
            ("> 5ms", RuleError::MissingMetric),
            ("stw.p9 > 5ms", RuleError::UnknownMetric { name: "stw.p9".into(), suggestion: Some("stw.p99") }),
            ("STW.P99 > 5ms", RuleError::UnknownMetric { name: "STW.P99".into(), suggestion: Some("stw.p99") }),
            ("p99 > 5ms", RuleError::UnknownMetric { name: "p99".into(), suggestion: Some("stw.p99") }),
            ("gc.cycles_per_sec > 10", RuleError::UnknownMetric { name: "gc.cycles_per_sec".into(), suggestion: Some("gc.cycles_per_s") }),
            ("count > 1", RuleError::UnknownMetric { name: "count".into(), suggestion: None }),
            ("heap.live > 1GB", RuleError::UnknownMetric { name: "heap.live".into(), suggestion: None }),
            ("stw.p99", RuleError::MissingOperator { metric: m }),
            ("stw.p99 5ms", RuleError::MissingOperator { metric: m }),
            ("stw.p99 = 5ms", RuleError::BadOperator { metric: m, op: "=".into() }),
            ("stw.p99 == 5ms", RuleError::BadOperator { metric: m, op: "==".into() }),
            ("stw.p99 => 5ms", RuleError::BadOperator { metric: m, op: "=>".into() }),
            ("stw.p99 >> 5ms", RuleError::BadOperator { metric: m, op: ">>".into() }),
            ("stw.p99 != 5ms", RuleError::BadOperator { metric: m, op: "!=".into() }),
            ("stw.p99 ≥ 5ms", RuleError::BadOperator { metric: m, op: "≥".into() }),
            ("stw.p99≥5ms", RuleError::BadOperator { metric: m, op: "≥".into() }),
            ("stw.p99 >", RuleError::MissingThreshold { metric: m }),
            ("stw.p99 > ms", RuleError::BadNumber { metric: m, text: "ms".into() }),
            ("stw.p99 > NaNms", RuleError::BadNumber { metric: m, text: "NaNms".into() }),
            ("stw.p99 > inf", RuleError::BadNumber { metric: m, text: "inf".into() }),
            ("stw.p99 > 1.2.3ms", RuleError::BadNumber { metric: m, text: "1.2.3ms".into() }),
            ("stw.p99 > 5", RuleError::MissingUnit { metric: m }),
            ("stw.p99 > 5msx", RuleError::BadUnit { metric: m, unit: "msx".into() }),
            ("stw.p99 > 5MS", RuleError::BadUnit { metric: m, unit: "MS".into() }),
            ("stw.p99 > 5%", RuleError::BadUnit { metric: m, unit: "%".into() }),
            ("stw.count > 5ms", RuleError::BadUnit { metric: "stw.count", unit: "ms".into() }),
            ("stw.count > 5/s", RuleError::BadUnit { metric: "stw.count", unit: "/s".into() }),
            ("gc.cycles_per_s > 10/min", RuleError::BadUnit { metric: "gc.cycles_per_s", unit: "/min".into() }),
            ("alloc.bytes_per_s > 100", RuleError::MissingUnit { metric: "alloc.bytes_per_s" }),
            ("alloc.bytes_per_s > 100/s", RuleError::BadUnit { metric: "alloc.bytes_per_s", unit: "/s".into() }),
            ("alloc.bytes_per_s > 100mb/s", RuleError::BadUnit { metric: "alloc.bytes_per_s", unit: "mb/s".into() }),
            ("growslice.share > 30", RuleError::MissingUnit { metric: "growslice.share" }),
            ("growslice.share > 0.3", RuleError::MissingUnit { metric: "growslice.share" }),
            ("stw.p99 > 5 ms ms", RuleError::TrailingGarbage { text: "ms".into() }),
            ("stw.p99 > 5ms and stw.max > 9ms", RuleError::TrailingGarbage { text: "and stw.max > 9ms".into() }),
            ("stw.p99 > -5ms", RuleError::NegativeThreshold { metric: m, text: "-5ms".into() }),
            ("gc.cycles >= -1", RuleError::NegativeThreshold { metric: "gc.cycles", text: "-1".into() }),
            ("stw.p99 > 1e999ms", RuleError::NonFiniteThreshold { text: "1e999ms".into() }),
            ("alloc.bytes_per_s > 1e300GiB", RuleError::NonFiniteThreshold { text: "1e300GiB".into() }),
            ("growslice.share > 130%", RuleError::ShareAbove100 { metric: "growslice.share", text: "130".into() }),
            ("maps.likely_leaks > 0%", RuleError::BadUnit { metric: "maps.likely_leaks", unit: "%".into() }),
            ("maps.likely_leaks > -1", RuleError::NegativeThreshold { metric: "maps.likely_leaks", text: "-1".into() }),
            ("maps.likely_leak > 0", RuleError::UnknownMetric { name: "maps.likely_leak".into(), suggestion: Some("maps.likely_leaks") }),
            ("likely_leaks > 0", RuleError::UnknownMetric { name: "likely_leaks".into(), suggestion: Some("maps.likely_leaks") }),
            ("heap.live_growth > 1", RuleError::MissingUnit { metric: "heap.live_growth" }),
            ("heap.live_growth > 1MB/min", RuleError::BadUnit { metric: "heap.live_growth", unit: "MB/min".into() }),
            ("heap.live_max > 512", RuleError::MissingUnit { metric: "heap.live_max" }),
            ("heap.live_max > 512MiB/s", RuleError::BadUnit { metric: "heap.live_max", unit: "MiB/s".into() }),
            ("heap.live_max > 512mib", RuleError::BadUnit { metric: "heap.live_max", unit: "mib".into() }),
            ("heap.live_max > -1MB", RuleError::NegativeThreshold { metric: "heap.live_max", text: "-1MB".into() }),
            ("heap.live_max > 1e300GiB", RuleError::NonFiniteThreshold { text: "1e300GiB".into() }),
            ("heap.livemax > 1GB", RuleError::UnknownMetric { name: "heap.livemax".into(), suggestion: Some("heap.live_max") }),
        ];
        for (s, want) in cases {
            assert_eq!(err(s), want, "{s:?}");
        }
    }

    #[test]
    fn error_messages_help() {
        assert_eq!(
            err("stw.p9 > 5ms").to_string(),
            "unknown metric \"stw.p9\"; did you mean stw.p99? (known: stw.p50, stw.p99, stw.max, stw.total, stw.count, gc.cycles, assist.count, gc.cycles_per_s, alloc.per_s, alloc.bytes_per_s, growslice.share, maps.likely_leaks, heap.live_growth, heap.live_median, heap.live_max)"
        );
        assert_eq!(err("heap.live_max > 512").to_string(), "heap.live_max needs a byte unit without /s: 512MiB, 1GB (B, KB, KiB, MB, MiB, GB, GiB)");
        assert_eq!(err("heap.live_max > 1GB/s").to_string(), "\"GB/s\" is not a unit heap.live_max takes: it needs a byte unit without /s: 512MiB, 1GB (B, KB, KiB, MB, MiB, GB, GiB)");
        assert_eq!(err("heap.live_max >").to_string(), "no threshold after the operator, e.g. heap.live_max > 512MiB");
        assert_eq!(err("heap.live_growth > 5").to_string(), "heap.live_growth needs a byte unit: 100MB/s, 64MiB/s, 1GB (B, KB, KiB, MB, MiB, GB, GiB, optional /s)");
        assert_eq!(err("stw.p99 > 5").to_string(), "stw.p99 needs a duration unit: 5ms, 500us, 1s (ns, us, µs, ms, s)");
        assert_eq!(err("growslice.share > 30").to_string(), "growslice.share needs a percentage, e.g. 30%");
        assert_eq!(err("stw.count > 3ms").to_string(), "\"ms\" is not a unit stw.count takes: it needs a plain number without a unit, e.g. 10");
        assert_eq!(err("stw.p99").to_string(), "stw.p99 needs an operator (>, >=, < or <=) and a threshold, e.g. stw.p99 > 5ms");
        assert_eq!(err("alloc.bytes_per_s >").to_string(), "no threshold after the operator, e.g. alloc.bytes_per_s > 100MB/s");
        assert_eq!(err("stw.p99 == 5ms").to_string(), "unsupported operator \"==\" after stw.p99: use >, >=, < or <=");
        assert_eq!(err("growslice.share > 130%").to_string(), "threshold 130% is above 100%: growslice.share can never exceed it");
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            "", ">", ">=", "<", "=", "!", "stw.p99 >", "stw.p99 > 5 ms ms", "stw.p99 > 5msx", "growslice.share > 30", "growslice.share > 130%", "stw.p99 > .", "stw.p99 > -",
            "stw.p99 > e", "stw.p99 > 1e", "stw.p99 > --5ms", "stw.p99 > 5e+ms", ".", "stw.", "é > 5ms", "stw.p99 > 5мс", "stw.p99 ＞ 5ms", "🦀 > 🦀", "stw.p99\u{0}>5ms",
            "stw.p99 > 5ms\n", "\u{200b}stw.p99 > 5ms", "stw.p99 >\u{a0}5ms", "growslice.share > 100.0000001%", "alloc.bytes_per_s > 1/s/s",
        ];
        let cut = ["stw.p99 ≥ 5µs", "alloc.bytes_per_s <= 1.5 GiB/s", "growslice.share>=30%", "heap.live_growth < -1.5 MiB/s", "heap.live_max>=2GiB"];
        let prefixes = cut.iter().flat_map(|s| s.char_indices().map(move |(i, _)| &s[..i]));
        for s in odd.into_iter().chain(prefixes) {
            if let Err(e) = s.parse::<Rule>() {
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.contains('\n'), "{s:?}: {msg:?}");
            }
        }
        // Non-breaking space is whitespace to Rust: the rule is fine.
        assert_eq!(parse("stw.p99 >\u{a0}5ms").threshold, 5e6);
    }

    fn report() -> Report {
        crate::report::empty_report()
    }

    /// A callsite row as report::build makes it: rates over `rate_time`,
    /// shares of `total_bytes`.
    fn row(probe: &str, count: u64, allocs: u64, bytes: u64, rate_time: f64, total_bytes: u64) -> Callsite {
        let probe = if probe == "growslice" { crate::analysis::rows::RowProbe::Growslice } else { crate::analysis::rows::RowProbe::Mallocgc };
        Callsite {
            probe,
            function: format!("main.{probe}er"),
            file: None,
            line: None,
            frames: vec![],
            count,
            allocs,
            bytes,
            per_s: count as f64 / rate_time,
            bytes_per_s: bytes as f64 / rate_time,
            share_of_bytes: bytes as f64 / total_bytes as f64,
            share_of_allocs: 0.0,
            bytes_per_s_ci95: None,
            runtime_sampled_bytes_per_s: None,
            mean_new_len: None,
            app_frame: None,
            evidence: None,
        }
    }

    /// A 10 s window whose allocation rates divide by 5 s (sampled mode
    /// paces them differently from the window).
    fn busy() -> Report {
        let mut r = report();
        r.gc.cycles = 25;
        r.gc.stw = Stw { count: 50, total_ms: 40.5, p50_us: 310.0, p99_us: 3210.0, max_us: 7400.0, by_reason: BTreeMap::new(), ..Stw::default() };
        r.events.assist = 123;
        r.probes.push(ProbeReport { name: "gcAssistAlloc".into(), symbol: "runtime.gcAssistAlloc".into(), address: 0x1000, attached: true, note: None });
        r.callsites = vec![row("mallocgc", 1000, 1000, 64_000, 5.0, 100_000), row("growslice", 50, 60, 36_000, 5.0, 100_000)];
        r
    }

    fn verdicts(rules: &[&str], r: &Report) -> Vec<(Option<f64>, String, bool)> {
        let rules: Vec<Rule> = rules.iter().map(|s| parse(s)).collect();
        evaluate(&rules, r).into_iter().map(|v| (v.value, v.shown, v.held)).collect()
    }

    #[test]
    fn evaluates_against_a_report() {
        let mut r = busy();
        r.gc.heap_medians.marked = Some(3 << 20);
        r.gc.heap_live = [1u64 << 20, 5 << 20, 3 << 20].map(|m| HeapSample { t_s: 1.0, bytes: 2 * m, goal: None, marked: Some(m) }).to_vec();
        let got = verdicts(&["heap.live_median > 3MiB", "heap.live_max >= 5MiB"], &r);
        assert_eq!(got, [(Some(3145728.0), "heap.live_median = 3.0 MiB".to_owned(), false), (Some(5242880.0), "heap.live_max = 5.0 MiB".to_owned(), true)]);
        let rules = [
            "stw.p50 > 300us",
            "stw.p99 > 5ms",
            "stw.max > 5ms",
            "stw.total >= 40.5ms",
            "stw.count < 50",
            "gc.cycles <= 25",
            "assist.count > 100",
            "gc.cycles_per_s > 2.5",
            "gc.cycles_per_s >= 2.5/s",
            "alloc.per_s > 212",
            "alloc.bytes_per_s <= 20KB/s",
            "alloc.bytes_per_s < 19KiB/s",
            "growslice.share > 30%",
            "growslice.share >= 36%",
        ];
        let want = [
            (Some(310e3), "stw.p50 = 310us", true),
            (Some(3.21e6), "stw.p99 = 3.21ms", false),
            (Some(7.4e6), "stw.max = 7.4ms", true),
            (Some(40.5e6), "stw.total = 40.5ms", true),
            (Some(50.0), "stw.count = 50", false),
            (Some(25.0), "gc.cycles = 25", true),
            (Some(123.0), "assist.count = 123", true),
            (Some(2.5), "gc.cycles_per_s = 2.5/s", false),
            (Some(2.5), "gc.cycles_per_s = 2.5/s", true),
            (Some(212.0), "alloc.per_s = 212/s", false),
            (Some(20_000.0), "alloc.bytes_per_s = 19.5 KiB/s", true),
            (Some(20_000.0), "alloc.bytes_per_s = 19.5 KiB/s", false),
            (Some(0.36), "growslice.share = 36%", true),
            (Some(0.36), "growslice.share = 36%", true),
        ];
        let got = verdicts(&rules, &busy());
        let want: Vec<_> = want.into_iter().map(|(v, s, h)| (v, s.to_owned(), h)).collect();
        assert_eq!(got, want);
        let v = &evaluate(&[parse("  stw.max>5ms ")], &busy())[0];
        assert_eq!(v.rule, "stw.max>5ms");
    }

    #[test]
    fn unmeasured_metrics_never_hold() {
        let mut r = report();
        // No pause, no allocation, no assist probe: nothing to compare, not a pass by zero.
        let always = ["stw.p50 >= 0ns", "stw.p99 < 5ms", "stw.max <= 1s", "growslice.share >= 0%", "assist.count >= 0", "heap.live_max >= 0B"];
        let got = verdicts(&always, &r);
        let shown: Vec<_> = got.iter().map(|(v, s, h)| (*v, s.as_str(), *h)).collect();
        assert_eq!(
            shown,
            [
                (None, "stw.p50: no pauses seen", false),
                (None, "stw.p99: no pauses seen", false),
                (None, "stw.max: no pauses seen", false),
                (None, "growslice.share: no allocated bytes seen", false),
                (None, "assist.count: gcAssistAlloc was not probed", false),
                (None, "heap.live_max: no GC cycle completed", false),
            ]
        );
        r.gc.cycles = 3;
        r.gc.heap_unavailable = Some("runtime.gcController was not found".into());
        assert_eq!(verdicts(&["heap.live_median < 1GB"], &r), [(None, "heap.live_median: runtime.gcController was not found".to_owned(), false)]);
        r.gc.cycles = 0;
        r.gc.heap_unavailable = None;
        // Real zeros: a session without GC or allocations measured them.
        let zeros = ["gc.cycles < 1", "stw.count <= 0", "stw.total < 1ns", "gc.cycles_per_s < 1", "alloc.per_s < 1", "alloc.bytes_per_s < 1B/s"];
        for (rule, (v, shown, held)) in zeros.iter().zip(verdicts(&zeros, &r)) {
            assert_eq!((v, held), (Some(0.0), true), "{rule}: {shown}");
        }
        // A sampled session that never ran a burst saw no allocation, and a
        // window of no time has no rate.
        r.sampling.mode = crate::plan::Mode::Sampled;
        assert_eq!(verdicts(&["alloc.per_s < 1"], &r), [(None, "alloc.per_s: allocations were not observed".to_owned(), false)]);
        r.window.duration_s = 0.0;
        assert_eq!(verdicts(&["gc.cycles_per_s < 1"], &r), [(None, "gc.cycles_per_s: no time observed".to_owned(), false)]);
    }

    /// Cycles `t_s` seconds in, each marking `marked` bytes (None: not read).
    fn heap(cycles: &[(f64, Option<u64>)]) -> Vec<HeapSample> {
        cycles.iter().map(|&(t_s, marked)| HeapSample { t_s, bytes: 8 << 20, goal: Some(16 << 20), marked }).collect()
    }

    #[test]
    fn leak_gates_evaluate_against_a_report() {
        let mut r = report();
        r.likely_leaks = Some(2);
        // +1 MiB a second, with a cycle whose marked bytes were not read (the last may still be marking).
        r.gc.heap_live = heap(&[(0.0, Some(4 << 20)), (1.0, Some(5 << 20)), (2.0, Some(6 << 20)), (3.0, Some(7 << 20)), (3.5, None)]);
        let rules = ["maps.likely_leaks > 0", "maps.likely_leaks > 2", "heap.live_growth > 1000KB/s", "heap.live_growth >= 1MiB/s", "heap.live_growth > 1.1MB/s", "heap.live_max > 7MiB", "heap.live_max >= 7MiB"];
        let want = [
            (Some(2.0), "maps.likely_leaks = 2", true),
            (Some(2.0), "maps.likely_leaks = 2", false),
            (Some(1048576.0), "heap.live_growth = 1.0 MiB/s", true),
            (Some(1048576.0), "heap.live_growth = 1.0 MiB/s", true),
            (Some(1048576.0), "heap.live_growth = 1.0 MiB/s", false),
            (Some(7340032.0), "heap.live_max = 7.0 MiB", false),
            (Some(7340032.0), "heap.live_max = 7.0 MiB", true),
        ];
        let want: Vec<_> = want.into_iter().map(|(v, s, h)| (v, s.to_owned(), h)).collect();
        assert_eq!(verdicts(&rules, &r), want);

        // A shrinking heap is a negative rate: `>` does not hold, a gate on shrinking does.
        r.gc.heap_live = heap(&[(0.0, Some(9000)), (2.0, Some(5000)), (4.0, Some(1000))]);
        let got = verdicts(&["heap.live_growth > 0B/s", "heap.live_growth < -1KB/s", "heap.live_max <= 9000B"], &r);
        assert_eq!(
            got,
            [(Some(-2000.0), "heap.live_growth = -2.0 KiB/s".to_owned(), false), (Some(-2000.0), "heap.live_growth = -2.0 KiB/s".to_owned(), true), (Some(9000.0), "heap.live_max = 8.8 KiB".to_owned(), true)]
        );
        // A level heap: a real zero.
        r.gc.heap_live = heap(&[(0.0, Some(9000)), (1.0, Some(9000)), (2.0, Some(9000))]);
        assert_eq!(verdicts(&["heap.live_growth <= 0B/s"], &r), [(Some(0.0), "heap.live_growth = 0 B/s".to_owned(), true)]);
    }

    #[test]
    fn leak_gates_unmeasured_never_hold() {
        let mut r = report();
        r.likely_leaks = None;
        r.likely_leaks_unavailable = Some("no allocation burst ran, so no map was watched".into());
        // Two cycles with marked bytes (and a third without) are no trend.
        r.gc.heap_live = heap(&[(0.0, Some(1000)), (1.0, None), (2.0, Some(3000))]);
        let rules = ["maps.likely_leaks >= 0", "heap.live_growth >= 0B/s", "heap.live_max >= 0B"];
        let got = verdicts(&rules, &r);
        let want = [
            (None, "maps.likely_leaks: no allocation burst ran, so no map was watched", false),
            (None, "heap.live_growth: fewer than 3 GC cycles with a live heap", false),
            (Some(3000.0), "heap.live_max = 2.9 KiB", true),
        ];
        assert_eq!(got, want.map(|(v, s, h)| (v, s.to_owned(), h)));
        // No marked bytes at all, and the reason the heap could not be read.
        r.gc.heap_live = heap(&[(0.0, None), (1.0, None), (2.0, None), (3.0, None)]);
        assert_eq!(verdicts(&["heap.live_max >= 0B"], &r), [(None, "heap.live_max: no GC cycle completed".to_owned(), false)]);
        r.gc.cycles = 4;
        assert_eq!(verdicts(&["heap.live_max >= 0B"], &r), [(None, "heap.live_max: no cycle's marked heap was read".to_owned(), false)]);
        r.gc.heap_live.clear();
        r.gc.heap_unavailable = Some("runtime.gcController not found".into());
        let got = verdicts(&["heap.live_growth > 1MB/s", "heap.live_max > 1MB"], &r);
        let want = [(None, "heap.live_growth: runtime.gcController not found", false), (None, "heap.live_max: runtime.gcController not found", false)];
        assert_eq!(got, want.map(|(v, s, h)| (v, s.to_owned(), h)));
        // Zero leaks found by watched maps is a value.
        r.likely_leaks = Some(0);
        r.likely_leaks_unavailable = None;
        assert_eq!(verdicts(&["maps.likely_leaks > 0"], &r), [(Some(0.0), "maps.likely_leaks = 0".to_owned(), false)]);
    }

    #[test]
    fn shows_values_in_readable_units() {
        assert_eq!(show(Kind::Duration, 850.0), "850ns");
        assert_eq!(show(Kind::Duration, 1500.0), "1.5us");
        assert_eq!(show(Kind::Duration, 2.25e9), "2.25s");
        assert_eq!(show(Kind::Rate, 0.004), "4.0e-3/s");
        assert_eq!(show(Kind::Share, 0.0), "0%");
        assert_eq!(show(Kind::ByteRate, 3.0 * 1048576.0), "3.0 MiB/s");
        assert_eq!(show(Kind::ByteRate, -1536.0), "-1.5 KiB/s");
        assert_eq!(show(Kind::Bytes, 600.0 * 1048576.0), "600.0 MiB");
    }
}
