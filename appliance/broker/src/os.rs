//! The two POSIX calls std does not offer: sending a chosen signal to a child, and asking
//! whether we run as root.
#![allow(unsafe_code)]

use std::io;

/// Signals the runner sends to mosquitto.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    /// mosquitto re-reads its password and ACL files (mosquitto(8), SIGNALS).
    Hangup,
    /// mosquitto saves its persistence database and exits.
    Terminate,
}

impl Signal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// Sends `signal` to process `pid`. Callers pass the pid of a `std::process::Child` they
/// have not reaped, so the pid cannot have been reused by another process.
pub(crate) fn send(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    let signo = match signal {
        Signal::Hangup => libc::SIGHUP,
        Signal::Terminate => libc::SIGTERM,
    };
    // SAFETY: kill(2) takes two integers and touches no memory of ours; a positive pid
    // addresses exactly one process (never a group), here our own unreaped child.
    let rc = unsafe { libc::kill(pid, signo) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
