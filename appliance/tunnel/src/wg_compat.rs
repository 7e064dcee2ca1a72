//! `gatehouse wg IFNAME`: a WireGuard userspace implementation that `wg` and wg-quick drive
//! the way they drive wireguard-go (`WG_QUICK_USERSPACE_IMPLEMENTATION=...`).
//!
//! The contract, as wireguard-go keeps it: create the TUN device IFNAME; serve the UAPI
//! on /var/run/wireguard/IFNAME.sock; with no key and no peers until `wg` sets them; go
//! to the background unless `-f` / `WG_PROCESS_FOREGROUND=1`, the parent exiting 0 once
//! the interface is ready (or with the child's error); exit when the interface is
//! deleted or the socket file removed (wg-quick down) or on SIGTERM/SIGINT.
//! No roles here: this is plain WireGuard; `gatehouse tunnel` is the box's service.

use crate::control::DeviceControl;
use crate::dataplane::{DataPlane, SharedSocket, TunnelSide};
use crate::device::{Device, SystemClock};
use crate::tun::TunDevice;
use crate::uapi;
use crate::udp::UdpEndpoint;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where `wg` looks for userspace implementations' sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// Runs the implementation; `stop_requested` is polled (SIGTERM/SIGINT).
pub fn run(ifname: &str, foreground: bool, stop_requested: &dyn Fn() -> bool) -> io::Result<()> {
    if !foreground {
        return daemonize(ifname);
    }
    let tun = Arc::new(TunDevice::open(ifname)?);
    let device = Arc::new(Device::new(Arc::new(SystemClock), None));
    let ep = UdpEndpoint::bind(0)?;
    device.set_listen_port(ep.local_port()?);
    let socket = Arc::new(SharedSocket::new(ep));
    let dataplane = DataPlane::start(device.clone(), socket.clone(), TunnelSide::Tun(tun))?;
    let path = socket_path(ifname);
    let server = uapi::listen(&path, Arc::new(DeviceControl::new(device, socket)))?;
    tracing::info!(interface = ifname, socket = %path.display(), "UAPI listening");
    let link = Path::new("/sys/class/net").join(ifname);
    while !stop_requested() && path.exists() && link.exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::info!(interface = ifname, "shutting down");
    drop(server);
    dataplane.stop();
    Ok(())
}

/// Starts `gatehouse wg -f IFNAME` detached and waits until its socket answers.
fn daemonize(ifname: &str) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["wg", "-f", ifname])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // As wireguard-go: the background process keeps the terminal's stderr only when
        // LOG_LEVEL asks for logs. Holding it otherwise would keep the caller's pipe open
        // (wg-quick run from a script would never see end of file).
        .stderr(if std::env::var_os("LOG_LEVEL").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .spawn()?;
    let path = socket_path(ifname);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "the background process for {ifname} exited with {status}"
            )));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::other(format!(
        "{ifname}: the background process did not open {} within 10 s",
        path.display()
    )))
}
