//! `gcprobe run`: start a program held at its first instruction, so the
//! probes are in place before it runs any code.
//!
//! The child asks to be traced (PTRACE_TRACEME) and execs; the kernel stops
//! it with SIGTRAP as execve returns, before the new image's first
//! instruction (ptrace(2), "execve(2) under ptrace"). By then the executable
//! is mapped, so its load bias is known and uprobes attach into the mapping.
//! Then we detach and it runs. Nothing is written to its memory.
use std::{
    io,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Child, Command, ExitStatus},
};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} did not stop at exec (wait status {status:#x})")]
    NoStop { program: String, status: i32 },
    #[error("waiting for {program}")]
    Wait {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// A child stopped at its first instruction until [`Held::release`].
pub struct Held {
    child: Child,
    program: String,
    released: bool,
}

impl Held {
    pub fn spawn(program: &str, args: &[String]) -> Result<Self, LaunchError> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: prctl, capget/capset and ptrace(PTRACE_TRACEME) are
        // async-signal-safe and touch nothing of the parent's state.
        unsafe {
            cmd.pre_exec(|| {
                // The program runs with none of gcprobe's capabilities.
                super::caps::clear_for_exec()?;
                if libc::ptrace(libc::PTRACE_TRACEME, 0, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>()) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn { program: program.into(), source })?;
        let mut held = Self { child, program: program.into(), released: false };
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(held.pid() as libc::pid_t, &mut status, 0) };
        if r < 0 {
            return Err(LaunchError::Wait { program: program.into(), source: io::Error::last_os_error() });
        }
        if !(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP) {
            held.released = true;
            return Err(LaunchError::NoStop { program: program.into(), status });
        }
        Ok(held)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the program run.
    pub fn release(&mut self) {
        if !self.released {
            // SAFETY: detaching from our own stopped tracee; 0 = no signal.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid() as libc::pid_t, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>()) };
            self.released = true;
        }
    }

    /// Sends `sig` to the program (forwarding ours).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }

    /// Waits for the program to exit.
    pub fn wait(mut self) -> Result<ExitStatus, LaunchError> {
        self.release();
        let program = self.program.clone();
        self.child.wait().map_err(|source| LaunchError::Wait { program, source })
    }
}

impl Drop for Held {
    /// A program never released (gcprobe failed before it ran) is killed:
    /// it has not run a single instruction, and must not run unobserved
    /// after gcprobe said it could not observe it.
    fn drop(&mut self) {
        if !self.released {
            let _ = self.child.kill();
            self.release();
            let _ = self.child.wait();
        }
    }
}

/// How the program `gcprobe run` started ended: in the JSON report
/// (`window.program_exit`) and on stderr, because gcprobe's own exit status
/// no longer carries it (see error::run_status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramExit {
    /// Its exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl ProgramExit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_status(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => u8::try_from(c).unwrap_or(1),
            (None, Some(s)) => u8::try_from(128 + s).unwrap_or(255),
            (None, None) => 1,
        }
    }
}

impl From<ExitStatus> for ProgramExit {
    fn from(status: ExitStatus) -> Self {
        Self { code: status.code(), signal: status.signal() }
    }
}

impl std::fmt::Display for ProgramExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exited with status {c}"),
            (None, Some(s)) => write!(f, "was killed by signal {s} ({})", signal_name(s)),
            (None, None) => f.write_str("ended without a status"),
        }
    }
}

/// The usual name of a signal, as `kill -l` spells it.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_exit_reads_as_a_shell_would_say_it() {
        let code = ProgramExit::from(ExitStatus::from_raw(7 << 8));
        assert_eq!((code, code.shell_status(), code.success()), (ProgramExit { code: Some(7), signal: None }, 7, false));
        assert_eq!(code.to_string(), "exited with status 7");
        let killed = ProgramExit::from(ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!((killed.code, killed.signal, killed.shell_status()), (None, Some(9), 137));
        assert_eq!(killed.to_string(), "was killed by signal 9 (SIGKILL)");
        assert!(ProgramExit::from(ExitStatus::from_raw(0)).success());
    }
}
