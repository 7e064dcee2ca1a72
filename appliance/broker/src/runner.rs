//! Running mosquitto as a child process: for `make run` (the hub starts its own broker)
//! and for tests.
//!
//! [`Mosquitto::start`] writes the files, starts `mosquitto -c <conf>` and returns once the
//! broker has logged that it is running and its loopback port accepts a connection.
//! Asked for port 0, it picks a free port (bind `127.0.0.1:0`, read, close) and retries
//! with another if mosquitto then finds it taken. mosquitto's stderr is drained by a
//! thread into `tracing` (target `mosquitto`) and a short tail kept for error messages.
//! [`Mosquitto::reload`] sends SIGHUP and waits for mosquitto to log `Reloading config.`;
//! mosquitto re-reads the password and ACL files in that same step of its event loop,
//! so connections made after `reload` returns see the new accounts. Dropping the handle
//! kills and reaps the process.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::os::{self, Signal};
use crate::provision::create_private_dir;
use crate::{BrokerConfig, BrokerError, BrokerFiles, Persistence, Provisioning, Result};

/// Lines of mosquitto's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);
/// Where Debian installs mosquitto, often not on a non-root user's PATH.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// How to run mosquitto.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    /// The binary: a bare name is looked up in PATH, then in the sbin directories.
    pub binary: PathBuf,
    /// How long to wait for the broker to get ready, to acknowledge SIGHUP, or to exit
    /// after SIGTERM.
    pub timeout: Duration,
    /// How many free ports to try when the configured port is 0.
    pub port_attempts: u32,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        MosquittoOptions {
            binary: PathBuf::from("mosquitto"),
            timeout: Duration::from_secs(10),
            port_attempts: 5,
        }
    }
}

/// A running mosquitto, killed and reaped when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    files: BrokerFiles,
    log: Arc<StderrLog>,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl Mosquitto {
    /// Writes `provisioning` and `config` into `files` and starts mosquitto with the
    /// default [`MosquittoOptions`].
    pub fn start(
        files: BrokerFiles,
        provisioning: &Provisioning,
        config: &BrokerConfig,
    ) -> Result<Mosquitto> {
        Self::start_with(files, provisioning, config, &MosquittoOptions::default())
    }

    /// Like [`Mosquitto::start`], with explicit options.
    pub fn start_with(
        files: BrokerFiles,
        provisioning: &Provisioning,
        config: &BrokerConfig,
        options: &MosquittoOptions,
    ) -> Result<Mosquitto> {
        let binary = find_binary(&options.binary)?;
        if let Persistence::Directory(dir) = &config.persistence {
            create_private_dir(dir)?;
        }
        let mut config = config.clone();
        if config.user.is_none() && os::is_root() {
            // Started as root, mosquitto would switch to user `mosquitto`, which cannot
            // read our 0600 files; in development the broker stays root instead.
            config.user = Some("root".to_owned());
        }
        let pick_port = config.port == 0;
        let attempts = if pick_port {
            options.port_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = if pick_port { free_port()? } else { config.port };
            let config = BrokerConfig {
                port,
                ..config.clone()
            };
            provisioning.write(&files, &config)?;
            match Self::launch(&binary, files.clone(), port, options.timeout) {
                Err(BrokerError::Exited { stderr, status })
                    if pick_port
                        && attempt < attempts
                        && stderr.contains("Address already in use") =>
                {
                    tracing::debug!(port, %status, "free port was taken meanwhile; retrying");
                }
                result => return result,
            }
        }
    }

    fn launch(binary: &Path, files: BrokerFiles, port: u16, timeout: Duration) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(files.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // mosquitto must not outlive us, even if we are SIGKILLed.
        let mut child = os::spawn_tied(cmd).map_err(|source| BrokerError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
        let log = Arc::new(StderrLog::default());
        let reader = child.stderr.take().map(|stderr| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || log.drain(stderr))
        });
        // From here on, Drop kills and reaps the child whatever happens.
        let mut broker = Mosquitto {
            child,
            port,
            files,
            log,
            reader,
            timeout,
        };
        tracing::info!(pid = broker.pid(), port, "mosquitto started");
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let address = self.address();
        loop {
            self.fail_if_exited()?;
            if self.log.state().running
                && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::Timeout {
                    action: format!("accept connections on {address}"),
                    after: self.timeout,
                    stderr: self.log.tail(),
                });
            }
            self.log.wait(POLL);
        }
    }

    /// An error if mosquitto has exited, with its complete stderr.
    fn fail_if_exited(&mut self) -> Result<()> {
        let status = self
            .child
            .try_wait()
            .map_err(|e| BrokerError::io(self.files.conf(), e))?;
        match status {
            None => Ok(()),
            Some(status) => {
                self.join_reader();
                Err(BrokerError::Exited {
                    status: status.to_string(),
                    stderr: self.log.tail(),
                })
            }
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// The loopback port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// mosquitto's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The files the broker was started with.
    pub fn files(&self) -> &BrokerFiles {
        &self.files
    }

    /// The last lines mosquitto wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.log.tail()
    }

    /// Sends SIGHUP and waits until mosquitto has re-read its password and ACL files.
    pub fn reload(&mut self) -> Result<()> {
        self.fail_if_exited()?;
        let before = self.log.state().reloads;
        let pid = self.pid();
        os::send(pid, Signal::Hangup).map_err(|source| BrokerError::Signal {
            signal: Signal::Hangup.name(),
            pid,
            source,
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.log.state().reloads > before {
                tracing::info!(pid, "mosquitto reloaded its password and ACL files");
                return Ok(());
            }
            self.fail_if_exited()?;
            if Instant::now() >= deadline {
                return Err(BrokerError::Timeout {
                    action: "acknowledge SIGHUP".to_owned(),
                    after: self.timeout,
                    stderr: self.log.tail(),
                });
            }
            self.log.wait(POLL);
        }
    }

    /// Rewrites the password and ACL files from `provisioning`, then [`reload`]s.
    ///
    /// [`reload`]: Mosquitto::reload
    pub fn reprovision(&mut self, provisioning: &Provisioning) -> Result<()> {
        provisioning.write_credentials(&self.files)?;
        self.reload()
    }

    /// Stops the broker: SIGTERM (mosquitto saves its persistence database), then SIGKILL
    /// if it has not exited within the timeout. Returns its exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let pid = self.pid();
        let io_err = |e| BrokerError::io(format!("/proc/{pid}"), e);
        if let Some(status) = self.child.try_wait().map_err(io_err)? {
            return Ok(status);
        }
        os::send(pid, Signal::Terminate).map_err(|source| BrokerError::Signal {
            signal: Signal::Terminate.name(),
            pid,
            source,
        })?;
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(io_err)? {
                tracing::info!(pid, %status, "mosquitto stopped");
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(pid, "mosquitto ignored SIGTERM; killing it");
        let _ = self.child.kill();
        self.child.wait().map_err(io_err)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.join_reader();
    }
}

/// A free loopback port: bound, read and released. Another process may take it before
/// mosquitto binds it; [`Mosquitto::start_with`] then retries.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BrokerError::io("127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| BrokerError::io("127.0.0.1:0", e))
}

/// Resolves the binary: a path is taken as is, a bare name is searched in PATH and then
/// in the sbin directories (Debian installs mosquitto in /usr/sbin).
fn find_binary(binary: &Path) -> Result<PathBuf> {
    let missing = || BrokerError::MosquittoMissing {
        binary: binary.to_owned(),
    };
    if binary.components().count() > 1 {
        return if binary.is_file() {
            Ok(binary.to_owned())
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(missing)
}

/// What the stderr thread has seen.
#[derive(Debug, Default)]
struct LogState {
    tail: VecDeque<String>,
    /// mosquitto logged `mosquitto version X running` (listeners open).
    running: bool,
    /// How many times mosquitto logged `Reloading config.`.
    reloads: u64,
}

#[derive(Debug, Default)]
struct StderrLog {
    state: Mutex<LogState>,
    changed: Condvar,
}

impl StderrLog {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` for a new line.
    fn wait(&self, timeout: Duration) {
        let guard = self.state();
        let _ = self.changed.wait_timeout(guard, timeout);
    }

    fn tail(&self) -> String {
        let state = self.state();
        let lines: Vec<&str> = state.tail.iter().map(String::as_str).collect();
        lines.join("\n")
    }

    /// Runs on its own thread until mosquitto closes stderr.
    fn drain(&self, stderr: impl Read) {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            tracing::debug!(target: "mosquitto", "{line}");
            let mut state = self.state();
            if line.contains("mosquitto version") && line.ends_with(" running") {
                state.running = true;
            }
            if line.ends_with("Reloading config.") {
                state.reloads += 1;
            }
            if state.tail.len() == STDERR_TAIL_LINES {
                state.tail.pop_front();
            }
            state.tail.push_back(line);
            drop(state);
            self.changed.notify_all();
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_what_to_install() {
        let err = find_binary(Path::new("no-such-mosquitto-binary")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Debian package `mosquitto`"), "{text}");
        assert!(find_binary(Path::new("/nonexistent/mosquitto")).is_err());
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
