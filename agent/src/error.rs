//! What every error has in common: how it reads on one line, and the
//! exit status it ends gcprobe with (the README's table, in one place).

use crate::tracee::launch::ProgramExit;

/// gcprobe's exit statuses. 2 is clap's own usage error. Each means one
/// thing whatever the command: `gcprobe run` does not pass the program's
/// status through unless asked (`--exit-with-program`, see [`run_status`]),
/// since a program's 3 or 10 would read as gcprobe's.
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
    /// `gcprobe run`: the program exited non-zero or was killed by a signal.
    ProgramFailed = 11,
}

/// The exit statuses as `--help` lists them (the README's table says the same).
pub const EXIT_HELP: &str = "\
Exit status:
   0  done (report written)
   1  any other failure (a full disk, an unreadable recording, an output path that is a symlink...)
   2  bad command line
   3  not root / missing capability
   4  no such PID
   5  the target exited before gcprobe could attach
   6  not a Go binary (or a Go older than 1.19)
   7  a required runtime symbol is missing
  10  a --fail-on rule held (run, report, diff)
  11  run: the program exited non-zero or was killed (its status is on stderr and in the JSON
      report's window.program_exit; --exit-with-program passes it through instead)
A gcprobe error comes first, then the program's failure, then a rule that held.";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// `gcprobe run`'s status once its session ended without an error of
/// gcprobe's own (those exit first with their own status: a session that
/// failed has no report to judge, and the program's status is on stderr).
///
/// Then the program's failure (11) comes before a rule that held (10): the
/// rules judged the figures of a run that did not finish its work, so the
/// failure is what to look at first; both verdicts are on stderr either way.
/// `exit_with_program` gives the program's own status instead of 11 (128 +
/// the signal when killed), for scripts that must see it; 10 and 0 as before.
pub fn run_status(program: Option<ProgramExit>, rule_held: bool, exit_with_program: bool) -> u8 {
    match program.filter(|p| !p.success()) {
        Some(p) if exit_with_program => p.shell_status(),
        Some(_) => Exit::ProgramFailed as u8,
        None if rule_held => Exit::RuleHeld as u8,
        None => Exit::Ok as u8,
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
        let codes = [Exit::Ok, Exit::Failure, Exit::Usage, Exit::Privileges, Exit::NoSuchPid, Exit::TargetExited, Exit::NotGo, Exit::MissingSymbol, Exit::RuleHeld, Exit::ProgramFailed].map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]);
        // --help lists each one, and no other.
        let listed: Vec<u8> = EXIT_HELP.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
        assert_eq!(listed, codes);
    }

    #[test]
    fn run_never_reads_a_programs_status_as_a_verdict_unless_asked() {
        let exited = |c| Some(ProgramExit { code: Some(c), signal: None });
        let killed = Some(ProgramExit { code: None, signal: Some(libc::SIGKILL) });
        // (program, rule held) → default, --exit-with-program
        let cases = [
            (exited(0), false, 0, 0),
            (exited(0), true, 10, 10),
            (exited(3), false, 11, 3),
            (exited(7), false, 11, 7),
            (exited(10), false, 11, 10),
            (exited(3), true, 11, 3),
            (killed, false, 11, 137),
            (killed, true, 11, 137),
            (None, true, 10, 10),
        ];
        for (program, held, default, passed) in cases {
            assert_eq!(run_status(program, held, false), default, "{program:?} held={held}");
            assert_eq!(run_status(program, held, true), passed, "{program:?} held={held} --exit-with-program");
        }
    }
}
