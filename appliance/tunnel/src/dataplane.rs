//! The threads that move packets between the UDP socket, the [`Device`] and the tunnel
//! side (a TUN device or the in-process stack of `netstack.rs`).
//!
//! - `udp-rx`: batches of datagrams -> `Device::handle_datagram` -> TUN writes or the
//!   stack's queue; replies (handshake responses, cookies) leave in one `sendmmsg`. With
//!   TUN offloads, the decrypted TCP segments of a batch are coalesced (`offload.rs`) so
//!   that a run of them costs one write.
//! - `tun-rx` (TUN mode): batches of frames from the TUN device -> cut into packets
//!   (offloads) -> encrypt -> `sendmmsg`, runs to one peer as one `UDP_SEGMENT` send.
//! - `timers`: `Device::tick` every 250 ms (rekeys, retries, keepalives).
//!
//! Every thread checks the stop flag at least every 200 ms; [`DataPlane::stop`] joins them.

use crate::device::{Device, DropLog, PacketIo, BUFFER_SIZE};
use crate::netstack::StackHandle;
use crate::offload::{self, Coalescer};
use crate::tun::TunDevice;
use crate::udp::{poll_readable, RecvBatch, SendBatch, UdpEndpoint, BATCH};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(250);
/// Drops are logged at most this often (they are counted always).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The UDP socket, replaceable at run time (`wg set IF listen-port N`).
#[derive(Debug)]
pub struct SharedSocket(RwLock<Arc<UdpEndpoint>>);

impl SharedSocket {
    pub fn new(ep: UdpEndpoint) -> SharedSocket {
        SharedSocket(RwLock::new(Arc::new(ep)))
    }

    pub fn get(&self) -> Arc<UdpEndpoint> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Binds `port` and swaps the new socket in; the old one closes when its last user
    /// lets go. Returns the bound port.
    pub fn rebind(&self, port: u16) -> io::Result<u16> {
        let ep = UdpEndpoint::bind(port)?;
        let bound = ep.local_port()?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ep);
        Ok(bound)
    }
}

/// Where decrypted packets go.
#[derive(Clone)]
pub enum TunnelSide {
    Tun(Arc<TunDevice>),
    Stack(StackHandle),
}

/// The running threads.
pub struct DataPlane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DataPlane {
    pub fn start(
        device: Arc<Device>,
        socket: Arc<SharedSocket>,
        side: TunnelSide,
    ) -> io::Result<DataPlane> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (device, socket, side, stop) =
                (device.clone(), socket.clone(), side.clone(), stop.clone());
            threads.push(spawn("udp-rx", move || {
                udp_rx(&device, &socket, &side, &stop)
            })?);
        }
        if let TunnelSide::Tun(tun) = &side {
            let (device, socket, tun, stop) =
                (device.clone(), socket.clone(), tun.clone(), stop.clone());
            threads.push(spawn("tun-rx", move || {
                tun_rx(&device, &socket, &tun, &stop)
            })?);
        }
        {
            let (device, socket, stop) = (device.clone(), socket.clone(), stop.clone());
            threads.push(spawn("timers", move || timers(&device, &socket, &stop))?);
        }
        Ok(DataPlane { stop, threads })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Collects sends for one `sendmmsg` and hands decrypted packets to the tunnel side.
struct BatchIo<'a> {
    sends: SendBatch,
    side: Option<&'a TunnelSide>,
    /// TUN with offloads: packets wait here until the end of the batch ([`BatchIo::flush`]).
    coalescer: Coalescer,
}

impl<'a> BatchIo<'a> {
    fn new(side: Option<&'a TunnelSide>) -> BatchIo<'a> {
        BatchIo {
            sends: SendBatch::default(),
            side,
            coalescer: Coalescer::new(),
        }
    }

    /// Writes what the coalescer holds to the TUN device.
    fn flush(&mut self) {
        if let Some(TunnelSide::Tun(tun)) = self.side {
            if !self.coalescer.is_empty() {
                self.coalescer.flush(|frame| {
                    if let Err(e) = tun.write_frame(frame) {
                        tracing::debug!(error = %e, "TUN write failed");
                    }
                });
            }
        }
    }
}

impl PacketIo for BatchIo<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sends.push(to, datagram);
    }

    fn deliver(&mut self, packet: &[u8]) {
        match self.side {
            Some(TunnelSide::Tun(tun)) if tun.vnet_hdr() => {
                if self.coalescer.is_full() {
                    self.flush();
                }
                self.coalescer.push(packet);
            }
            Some(TunnelSide::Tun(tun)) => {
                if let Err(e) = tun.write_packet(packet) {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
            Some(TunnelSide::Stack(stack)) => stack.push(packet),
            None => {}
        }
    }
}

fn udp_rx(device: &Device, socket: &SharedSocket, side: &TunnelSide, stop: &AtomicBool) {
    let mut batch = RecvBatch::default();
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut io = BatchIo::new(Some(side));
    while !stop.load(Ordering::Relaxed) {
        let ep = socket.get();
        match ep.wait_readable(POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "UDP poll failed");
                std::thread::sleep(POLL);
                continue;
            }
        }
        loop {
            match ep.recv_batch(&mut batch) {
                Ok(0) => break,
                Ok(_) => {
                    for (from, d) in batch.iter() {
                        device.handle_datagram(from, d, &mut buf, &mut io);
                    }
                    io.flush();
                    if !io.sends.is_empty() {
                        ep.send_batch(&mut io.sends);
                    }
                    if let TunnelSide::Stack(s) = side {
                        s.wake();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "UDP receive failed");
                    break;
                }
            }
        }
    }
}

/// Encrypted bytes queued by `tun-rx` before they are sent even if more frames wait.
const SEND_FLUSH_BYTES: usize = 256 * 1024;

fn tun_rx(device: &Device, socket: &SharedSocket, tun: &TunDevice, stop: &AtomicBool) {
    let mut frame = vec![0u8; offload::MAX_FRAME];
    let mut scratch = vec![0u8; offload::MAX_FRAME];
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut io = BatchIo::new(None);
    let vnet = tun.vnet_hdr();
    if let Err(e) = set_nonblocking(tun.fd()) {
        tracing::error!(error = %e, "cannot make the TUN device non-blocking");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match poll_readable(tun.fd(), POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "TUN poll failed");
                std::thread::sleep(POLL);
                continue;
            }
        }
        loop {
            let mut n = 0;
            let mut failed = None;
            while n < BATCH && io.sends.bytes() < SEND_FLUSH_BYTES {
                match tun.read_frame(&mut frame) {
                    Ok(len) if vnet => {
                        let r = offload::segment(&mut frame[..len], &mut scratch, |p| {
                            device.handle_packet(p, &mut buf, &mut io)
                        });
                        if let Err(e) = r {
                            tracing::debug!(error = ?e, "TUN frame dropped");
                        }
                        n += 1;
                    }
                    Ok(len) => {
                        device.handle_packet(&frame[..len], &mut buf, &mut io);
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let more = n == BATCH || io.sends.bytes() >= SEND_FLUSH_BYTES;
            if !io.sends.is_empty() {
                socket.get().send_batch(&mut io.sends);
            }
            if let Some(e) = failed {
                // EBADFD/EIO: the interface was deleted (`ip link del`, wg-quick down);
                // the fd stays readable with the error forever, so stop reading instead of
                // spinning. The owner notices the missing link and shuts down.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBADFD | libc::EIO | libc::ENODEV)
                ) {
                    tracing::info!(error = %e, "TUN device gone; no more reads");
                    return;
                }
                tracing::warn!(error = %e, "TUN read failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            if !more {
                break;
            }
        }
    }
}

fn timers(device: &Device, socket: &SharedSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut io = BatchIo::new(None);
    let mut drops = DropLog::new(DROP_LOG_EVERY, &device.counters);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        device.tick(&mut buf, &mut io);
        drops.poll(&device.counters);
        if !io.sends.is_empty() {
            socket.get().send_batch(&mut io.sends);
        }
    }
}

#[allow(unsafe_code)]
fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with flag arguments only.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            -1
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
