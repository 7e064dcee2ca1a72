//! systemd's service notifications (sd_notify(3)) without libsystemd: `READY=1` once a
//! service serves, `WATCHDOG=1` while it proves it is alive, `STOPPING=1` when it stops.
//!
//! The protocol (systemd's sd_notify(3) and its "notify socket" description): one datagram
//! of newline-separated `KEY=VALUE` lines to the `AF_UNIX` datagram socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`).
//! `$WATCHDOG_USEC` is the unit's `WatchdogSec`; systemd kills the service when no
//! `WATCHDOG=1` arrived for that long, so we ping every half of it (the interval
//! sd_watchdog_enabled(3) recommends). `$WATCHDOG_PID`, when set, names the process the
//! watchdog applies to.
//!
//! The pings do not come from a timer: each service proves it is alive where its work
//! happens, and [`proved`] pings only while every service of the process has proved it
//! within the last 1.5 intervals (in `gatehouse up` the tunnel and the hub both must):
//! - hub: a task on the hub's tokio runtime fetches `GET /healthz` from the hub's own
//!   plain-HTTP listener. Alive = the runtime schedules tasks and the HTTP server accepts,
//!   routes and answers.
//! - tunnel: the tunnel's main loop (the one that takes SIGHUP/SIGTERM) asks the UAPI
//!   socket `get=1`, as `wg show` does. Alive = the UAPI thread answers and the device's
//!   peer table (which the packet threads lock) can be read.
//! - lora: a task on the forwarder's single-threaded runtime, which every part of the
//!   forwarder shares. Alive = that runtime still schedules: a radio call or a task that
//!   blocks it stops the pings.
//!
//! The first proof from every service sends `READY=1`. [`init_from_env`] takes the three
//! variables out of the environment (as sd_notify's `unset_environment` does), so that
//! children (the hub's mosquitto) do not notify in our name.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where and how often to notify, from the environment systemd gives a `Type=notify` unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyEnv {
    /// `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    pub socket: String,
    /// `$WATCHDOG_USEC`, when the watchdog applies to this process.
    pub watchdog: Option<Duration>,
}

impl NotifyEnv {
    /// Reads the variables through `var`; `pid` is this process's id. `None` when there
    /// is no notify socket.
    pub fn parse(var: impl Fn(&str) -> Option<String>, pid: u32) -> Option<NotifyEnv> {
        let socket = var("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        let for_us = var("WATCHDOG_PID").is_none_or(|p| p.trim().parse() == Ok(pid));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Some(NotifyEnv { socket, watchdog })
    }

    /// The notify socket's address.
    pub fn address(&self) -> std::io::Result<SocketAddr> {
        match self.socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(&self.socket),
        }
    }
}

/// An open notify socket.
struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    fn open(env: &NotifyEnv) -> std::io::Result<Notifier> {
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr: env.address()?,
            watchdog: env.watchdog,
        })
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }
}

/// What the process has told systemd and what each service last proved.
#[derive(Debug, Default)]
pub struct Liveness {
    services: Vec<(&'static str, Option<Instant>)>,
    ready: bool,
    stopping: bool,
}

/// What to send after a proof.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Watchdog,
}

impl Liveness {
    /// `name` must prove itself before the process is ready or pings the watchdog.
    pub fn register(&mut self, name: &'static str) {
        if !self.services.iter().any(|(n, _)| *n == name) {
            self.services.push((name, None));
        }
    }

    /// `name` proved it is alive at `now`; `fresh` is how old another service's proof may
    /// be (`None`: there is no watchdog). Returns what to tell systemd: `Ready` once every
    /// service proved itself, `Watchdog` afterwards while every proof is fresh, nothing
    /// for an unregistered name, without a watchdog or after stopping.
    pub fn proved(&mut self, name: &str, now: Instant, fresh: Option<Duration>) -> Option<Notice> {
        let entry = self.services.iter_mut().find(|(n, _)| *n == name)?;
        entry.1 = Some(now);
        if self.stopping {
            return None;
        }
        if !self.ready {
            // Readiness needs every service once, not a fresh proof from each.
            if self.services.iter().all(|(_, t)| t.is_some()) {
                self.ready = true;
                return Some(Notice::Ready);
            }
            return None;
        }
        let fresh = fresh?;
        let all_fresh = self
            .services
            .iter()
            .all(|(_, t)| t.is_some_and(|t| now.saturating_duration_since(t) <= fresh));
        all_fresh.then_some(Notice::Watchdog)
    }

    /// True the first time only.
    pub fn stop(&mut self) -> bool {
        !std::mem::replace(&mut self.stopping, true)
    }
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
static LIVENESS: Mutex<Liveness> = Mutex::new(Liveness {
    services: Vec::new(),
    ready: false,
    stopping: false,
});

/// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` and removes them from the
/// environment. Call first in `main`, before any thread starts.
pub fn init_from_env() {
    let env = NotifyEnv::parse(|k| std::env::var(k).ok(), std::process::id());
    for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        std::env::remove_var(k);
    }
    let notifier = env.and_then(|env| match Notifier::open(&env) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("gatehouse: cannot use NOTIFY_SOCKET {}: {e}", env.socket);
            None
        }
    });
    let _ = NOTIFIER.set(notifier);
}

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER.get().and_then(Option::as_ref)
}

fn liveness() -> std::sync::MutexGuard<'static, Liveness> {
    LIVENESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `name` is one of this process's services: it must prove itself (see the module docs).
pub fn register(name: &'static str) {
    liveness().register(name);
}

/// The watchdog's ping interval (half of `WatchdogSec`), if the watchdog is on.
fn ping_interval() -> Option<Duration> {
    notifier().and_then(|n| n.watchdog).map(|w| w / 2)
}

/// How long a service should wait before its next proof; `None` when nobody listens (no
/// notify socket, or ready was sent and there is no watchdog). Before readiness: soon.
pub fn next_proof() -> Option<Duration> {
    notifier()?;
    let l = liveness();
    if l.stopping {
        return None;
    }
    if !l.ready {
        return Some(Duration::from_millis(100));
    }
    ping_interval()
}

/// How long one proof may take before it counts as failed.
pub fn proof_timeout() -> Duration {
    ping_interval()
        .map_or(Duration::from_secs(2), |i| i / 2)
        .clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// `name` proved it is alive now: sends `READY=1` or `WATCHDOG=1` as due.
pub fn proved(name: &str) {
    let Some(n) = notifier() else { return };
    // A proof may lag its interval by up to one proof timeout.
    let fresh = ping_interval().map(|i| i + i / 2);
    let notice = liveness().proved(name, Instant::now(), fresh);
    match notice {
        Some(Notice::Ready) => {
            tracing::info!("ready (told systemd)");
            n.send("READY=1\nSTATUS=serving");
        }
        Some(Notice::Watchdog) => n.send("WATCHDOG=1"),
        None => {}
    }
}

/// The process is stopping: sends `STOPPING=1` (once) and no more pings.
pub fn stopping() {
    let Some(n) = notifier() else { return };
    if liveness().stop() {
        n.send("STOPPING=1");
    }
}

// --- the services' proofs ---------------------------------------------------------------

/// The hub's proofs, run as a task on the hub's runtime until the process stops: `GET
/// /healthz` from `http` (the hub's plain-HTTP listener; an unspecified address is asked
/// on loopback).
pub async fn prove_hub(http: std::net::SocketAddr) {
    let mut addr = http;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    while let Some(wait) = next_proof() {
        tokio::time::sleep(wait).await;
        match tokio::time::timeout(proof_timeout(), healthz(addr)).await {
            Ok(Ok(())) => proved("hub"),
            Ok(Err(e)) => tracing::warn!(error = %e, %addr, "hub liveness: /healthz failed"),
            Err(_) => tracing::warn!(%addr, "hub liveness: /healthz did not answer in time"),
        }
    }
}

async fn healthz(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    s.take(4096).read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    if reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok\n") {
        Ok(())
    } else {
        let first = reply.lines().next().unwrap_or("").to_owned();
        Err(std::io::Error::other(format!("answered {first:?}")))
    }
}

/// One proof of the tunnel: `get=1` on its UAPI socket `uapi` must answer `errno=0`.
pub fn prove_tunnel(uapi: &std::path::Path) {
    match uapi_get(uapi) {
        Ok(()) => proved("tunnel"),
        Err(e) => {
            tracing::warn!(error = %e, path = %uapi.display(), "tunnel liveness: UAPI get failed")
        }
    }
}

fn uapi_get(uapi: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(uapi)?;
    s.set_read_timeout(Some(proof_timeout()))?;
    s.set_write_timeout(Some(proof_timeout()))?;
    s.write_all(b"get=1\n\n")?;
    // The answer ends with an empty line (the cross-platform UAPI protocol).
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    if reply.lines().any(|l| l == "errno=0") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answered {:?}",
            reply.lines().last().unwrap_or("")
        )))
    }
}

/// The LoRa forwarder's proofs, run as a task on its (single-threaded) runtime.
pub async fn prove_lora() {
    while let Some(wait) = next_proof() {
        tokio::time::sleep(wait).await;
        proved("lora");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(vars: &[(&str, &str)], pid: u32) -> Option<NotifyEnv> {
        NotifyEnv::parse(
            |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            pid,
        )
    }

    #[test]
    fn environment() {
        assert_eq!(env(&[], 7), None);
        assert_eq!(env(&[("NOTIFY_SOCKET", "")], 7), None);
        let e = env(
            &[("NOTIFY_SOCKET", "/run/n"), ("WATCHDOG_USEC", "30000000")],
            7,
        )
        .unwrap();
        assert_eq!(e.watchdog, Some(Duration::from_secs(30)));
        assert_eq!(
            e.address().unwrap().as_pathname(),
            Some(std::path::Path::new("/run/n"))
        );
        // The watchdog of another process (WATCHDOG_PID), or a bad value: none for us.
        for (usec, pid) in [("30000000", "8"), ("x", "7"), ("0", "7")] {
            let e = env(
                &[
                    ("NOTIFY_SOCKET", "/run/n"),
                    ("WATCHDOG_USEC", usec),
                    ("WATCHDOG_PID", pid),
                ],
                7,
            )
            .unwrap();
            assert_eq!(e.watchdog, None, "{usec} {pid}");
        }
        let e = env(
            &[
                ("NOTIFY_SOCKET", "@/org/x"),
                ("WATCHDOG_USEC", "1000"),
                ("WATCHDOG_PID", "7"),
            ],
            7,
        )
        .unwrap();
        assert_eq!(e.watchdog, Some(Duration::from_millis(1)));
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            e.address().unwrap().as_abstract_name(),
            Some(&b"/org/x"[..])
        );
    }

    #[test]
    fn abstract_socket_receives() {
        let name = format!("gatehouse-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::open(&NotifyEnv {
            socket: format!("@{name}"),
            watchdog: None,
        })
        .unwrap();
        n.send("READY=1");
        let mut buf = [0; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn ready_needs_every_service_and_pings_need_fresh_proofs() {
        let fresh = Some(Duration::from_secs(15));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut l = Liveness::default();
        l.register("tunnel");
        l.register("hub");
        assert_eq!(l.proved("lora", at(0), fresh), None, "not registered");
        assert_eq!(l.proved("tunnel", at(0), fresh), None, "hub not yet");
        assert_eq!(l.proved("tunnel", at(1), fresh), None);
        assert_eq!(l.proved("hub", at(2), fresh), Some(Notice::Ready));
        assert_eq!(l.proved("tunnel", at(10), fresh), Some(Notice::Watchdog));
        assert_eq!(l.proved("hub", at(12), fresh), Some(Notice::Watchdog));
        // The hub stops proving: the tunnel's proofs ping until the hub's last one is stale.
        assert_eq!(l.proved("tunnel", at(20), fresh), Some(Notice::Watchdog));
        assert_eq!(l.proved("tunnel", at(28), fresh), None);
        assert_eq!(l.proved("tunnel", at(40), fresh), None);
        // It comes back.
        assert_eq!(l.proved("hub", at(41), fresh), Some(Notice::Watchdog));
        assert!(l.stop());
        assert!(!l.stop());
        let mut no_watchdog = Liveness::default();
        no_watchdog.register("hub");
        assert_eq!(no_watchdog.proved("hub", at(0), None), Some(Notice::Ready));
        assert_eq!(no_watchdog.proved("hub", at(1), None), None, "no watchdog");
        assert_eq!(
            l.proved("hub", at(42), fresh),
            None,
            "no pings once stopping"
        );
    }
}
