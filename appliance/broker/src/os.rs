//! The POSIX calls std does not offer: sending a chosen signal to a child, asking whether
//! we run as root, and tying a child's life to ours (`PR_SET_PDEATHSIG`).
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

/// Spawns `cmd` so that the child gets SIGTERM if this process dies, even by SIGKILL
/// (`PR_SET_PDEATHSIG`), and runs in its own process group (a Ctrl-C at the terminal
/// reaches us, and we stop the broker in order).
///
/// The kernel sends the death signal when the *thread* that forked the child exits, so the
/// fork happens on one spawner thread that lives as long as the process, never on a
/// short-lived thread (tokio retires idle blocking threads, which would end the broker).
pub(crate) fn spawn_tied(mut cmd: std::process::Command) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};

    type Job = (
        std::process::Command,
        Sender<io::Result<std::process::Child>>,
    );
    static SPAWNER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe calls (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("broker-spawner".into())
            .spawn(move || {
                // Runs until the process exits: the sender lives in a static.
                for (mut cmd, back) in rx {
                    let _ = back.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(spawner) = spawner else {
        return Err(io::Error::other("cannot start the broker-spawner thread"));
    };
    let (back, result) = channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, back))
        .map_err(|_| io::Error::other("the broker-spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the broker-spawner thread is gone"))?
}
