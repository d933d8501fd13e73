//! What every error has in common: how it reads on one line, and the
//! exit status it ends gcprobe with (the README's table, in one place).

/// gcprobe's exit statuses. 2 is clap's own usage error; `gcprobe run`
/// exits with the program's status when that is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Any other failure, an unreadable or foreign recording included.
    Failure = 1,
    Usage = 2,
    /// Not root, or without CAP_BPF and CAP_PERFMON.
    Privileges = 3,
    NoSuchPid = 4,
    /// The target exited before gcprobe could attach.
    TargetExited = 5,
    /// Not a Go binary, or a Go older than 1.19.
    NotGo = 6,
    /// A required runtime symbol is missing.
    MissingSymbol = 7,
    /// A `--fail-on` rule held.
    RuleHeld = 10,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// An error and its causes on one line, for messages that must not span lines.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_the_documented_ones() {
        let codes = [Exit::Ok, Exit::Failure, Exit::Usage, Exit::Privileges, Exit::NoSuchPid, Exit::TargetExited, Exit::NotGo, Exit::MissingSymbol, Exit::RuleHeld].map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 10]);
    }
}
