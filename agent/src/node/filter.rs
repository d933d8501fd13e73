//! Which Go processes node mode watches: `--include` and `--exclude`
//! patterns on the executable's path or on the process's labels.
//!
//! A rule is `FIELD=GLOB` (`exe`, `namespace`, `pod`, `container`, `unit`)
//! or a bare GLOB, which is `exe=GLOB`. A process is watched when it
//! matches some include (or none is given) and no exclude. A label the
//! process does not have matches nothing: `--exclude namespace=kube-*`
//! leaves processes outside Kubernetes watched.
use std::str::FromStr;

use globset::{Glob, GlobMatcher};

use crate::tracee::labels::Labels;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Exe,
    Namespace,
    Pod,
    Container,
    Unit,
}

impl Field {
    const ALL: [(&'static str, Field); 5] = [("exe", Field::Exe), ("namespace", Field::Namespace), ("pod", Field::Pod), ("container", Field::Container), ("unit", Field::Unit)];

    fn of<'a>(self, exe: &'a str, labels: Option<&'a Labels>) -> Option<&'a str> {
        match self {
            Field::Exe => Some(exe),
            Field::Namespace => labels?.names().namespace(),
            Field::Pod => labels?.names().pod(),
            Field::Container => labels?.names().container(),
            Field::Unit => labels?.cgroup().unit(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{rule:?}: unknown field {field:?} (exe, namespace, pod, container or unit)")]
    Field { rule: String, field: String },
    #[error("{rule:?}: bad pattern")]
    Glob {
        rule: String,
        #[source]
        source: globset::Error,
    },
}

/// One `--include` or `--exclude` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    field: Field,
    glob: GlobMatcher,
}

impl FromStr for Rule {
    type Err = FilterError;

    fn from_str(rule: &str) -> Result<Self, FilterError> {
        // A path may hold '=' only after a field name does: "exe=" first.
        let (field, pattern) = match rule.split_once('=') {
            Some((f, p)) if !f.contains('/') && !f.contains('*') => {
                let field = Field::ALL.iter().find(|(n, _)| *n == f).map(|&(_, v)| v).ok_or_else(|| FilterError::Field { rule: rule.into(), field: f.into() })?;
                (field, p)
            }
            _ => (Field::Exe, rule),
        };
        // '*' crosses '/' as a shell user expects of "/usr/*": literal_separator off.
        let glob = Glob::new(pattern).map_err(|source| FilterError::Glob { rule: rule.into(), source })?.compile_matcher();
        Ok(Rule { field, glob })
    }
}

impl Rule {
    fn matches(&self, exe: &str, labels: Option<&Labels>) -> bool {
        self.field.of(exe, labels).is_some_and(|v| self.glob.is_match(v))
    }

    /// Whether the rule needs the process's labels.
    fn needs_labels(&self) -> bool {
        self.field != Field::Exe
    }
}

/// The include and exclude rules together.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Vec<Rule>,
    exclude: Vec<Rule>,
}

impl Filter {
    pub fn new(include: Vec<Rule>, exclude: Vec<Rule>) -> Self {
        Self { include, exclude }
    }

    pub fn needs_labels(&self) -> bool {
        self.include.iter().chain(&self.exclude).any(Rule::needs_labels)
    }

    /// Whether node mode watches a process running `exe` with `labels`.
    pub fn admits(&self, exe: &str, labels: Option<&Labels>) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.matches(exe, labels))) && !self.exclude.iter().any(|r| r.matches(exe, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> Vec<Rule> {
        r.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn bare_patterns_are_executable_paths_and_excludes_win() {
        let f = Filter::new(rules(&["/usr/bin/*", "/opt/**/api"]), rules(&["*/prometheus"]));
        assert!(f.admits("/usr/bin/caddy", None));
        assert!(f.admits("/opt/acme/v2/api", None));
        assert!(!f.admits("/usr/bin/prometheus", None));
        assert!(!f.admits("/home/me/api", None));
        assert!(Filter::default().admits("/anything", None));
        assert!(!f.needs_labels());
    }

    #[test]
    fn label_rules_match_nothing_when_the_label_is_missing() {
        let f = Filter::new(Vec::new(), rules(&["namespace=kube-*"]));
        assert!(f.needs_labels());
        // No labels read: nothing to exclude on.
        assert!(f.admits("/usr/bin/caddy", None));
        let only = Filter::new(rules(&["unit=caddy.service"]), Vec::new());
        assert!(!only.admits("/usr/bin/caddy", None));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert_eq!("colour=red".parse::<Rule>().unwrap_err().to_string(), "\"colour=red\": unknown field \"colour\" (exe, namespace, pod, container or unit)");
        assert!("exe=[".parse::<Rule>().unwrap_err().to_string().starts_with("\"exe=[\": bad pattern"));
        // A path with '=' in it is a path.
        assert!("/srv/a=b/*".parse::<Rule>().unwrap().matches("/srv/a=b/api", None));
    }
}
