//! The userspace data plane: decrypted packets go into a smoltcp interface that owns the
//! gateway's tunnel address, instead of a kernel TUN device. No privileges needed.
//!
//! Every TCP port of the [`Policy`] (the gateway's services and the LAN forwards) has a
//! listening socket; each accepted connection is relayed to the entry's target with an
//! ordinary TCP connection from this process. The role filter has already run in the
//! device, so only peers whose role allows a port can open it. ICMP echo to the tunnel
//! address is answered by smoltcp itself.

use crate::dataplane::SharedSocket;
use crate::device::{Device, PacketIo, BUFFER_SIZE};
use crate::policy::Policy;
use crate::udp::SendBatch;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
/// TCP buffer per direction and connection; large enough for a fast bulk transfer.
const TCP_BUFFER: usize = 512 * 1024;
/// Queued incoming packets beyond this are dropped (the peer's TCP retransmits).
const MAX_QUEUE: usize = 4096;

/// What the UDP thread uses to hand packets to the stack.
#[derive(Clone)]
pub struct StackHandle {
    tx: Sender<Vec<u8>>,
    waker: Arc<Waker>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl StackHandle {
    /// Queues one decrypted packet for the stack.
    pub fn push(&self, packet: &[u8]) {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUE {
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(packet.to_vec());
    }

    /// Wakes the stack after a batch of pushes.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// The running stack thread.
pub struct NetStack {
    stop: Arc<AtomicBool>,
    handle: StackHandle,
    thread: Option<JoinHandle<()>>,
}

impl NetStack {
    /// Starts the stack for `policy`'s address and ports; its outgoing packets are
    /// encrypted by `device` and sent on `socket`.
    pub fn start(
        policy: &Policy,
        mtu: u16,
        device: Arc<Device>,
        socket: Arc<SharedSocket>,
    ) -> io::Result<NetStack> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handle = StackHandle {
            tx,
            waker,
            queued: queued.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut stack = Stack::new(policy, mtu, rx, queued, poll, device, socket);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netstack".into())
            .spawn(move || stack.run(&stop2))?;
        Ok(NetStack {
            stop,
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> StackHandle {
        self.handle.clone()
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// smoltcp's view of the tunnel: packets in from the device, packets out to encrypt.
struct Pipe {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = vec![0u8; len];
        let r = f(&mut p);
        self.0.push(p);
        r
    }
}

impl phy::Device for Pipe {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

/// One relayed connection.
struct Relay {
    socket: SocketHandle,
    stream: TcpStream,
    connected: bool,
    /// The stream hit EOF; FIN sent into the tunnel.
    stream_eof: bool,
    /// The peer closed its sending side; the stream's write half is shut.
    peer_eof: bool,
}

struct Stack {
    iface: Interface,
    pipe: Pipe,
    sockets: SocketSet<'static>,
    listeners: Vec<(u16, SocketAddr, SocketHandle)>,
    relays: Vec<Relay>,
    rx: Receiver<Vec<u8>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    poll: Poll,
    device: Arc<Device>,
    socket: Arc<SharedSocket>,
    addrs: Vec<IpAddr>,
    next_token: usize,
    start: Instant,
}

fn new_listener(sockets: &mut SocketSet<'static>, port: u16) -> SocketHandle {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
    );
    // Port is non-zero (config validation), so listen cannot fail.
    let _ = s.listen(port);
    s.set_nagle_enabled(false);
    sockets.add(s)
}

struct EncryptIo<'a> {
    sends: &'a mut SendBatch,
}

impl PacketIo for EncryptIo<'_> {
    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        self.sends.push(to, d);
    }
    fn deliver(&mut self, _: &[u8]) {}
}

impl Stack {
    fn new(
        policy: &Policy,
        mtu: u16,
        rx: Receiver<Vec<u8>>,
        queued: Arc<std::sync::atomic::AtomicUsize>,
        poll: Poll,
        device: Arc<Device>,
        socket: Arc<SharedSocket>,
    ) -> Stack {
        let mut pipe = Pipe {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu: usize::from(mtu),
        };
        let mut cfg = IfaceConfig::new(HardwareAddress::Ip);
        cfg.random_seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        let start = Instant::now();
        let mut iface = Interface::new(cfg, &mut pipe, SmolInstant::from_millis(0));
        let mut addrs = vec![IpAddr::V4(policy.gateway_v4())];
        if let Some(v6) = policy.gateway_v6() {
            addrs.push(IpAddr::V6(v6));
        }
        iface.update_ip_addrs(|list| {
            for a in &addrs {
                let cidr = match a {
                    IpAddr::V4(v4) => IpCidr::new(IpAddress::Ipv4(*v4), 32),
                    IpAddr::V6(v6) => IpCidr::new(IpAddress::Ipv6(*v6), 128),
                };
                let _ = list.push(cidr);
            }
        });
        let mut sockets = SocketSet::new(Vec::new());
        let listeners = policy
            .entries()
            .iter()
            .map(|e| (e.port, e.target, new_listener(&mut sockets, e.port)))
            .collect();
        Stack {
            iface,
            pipe,
            sockets,
            listeners,
            relays: Vec::new(),
            rx,
            queued,
            poll,
            device,
            socket,
            addrs,
            next_token: 1,
            start,
        }
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; BUFFER_SIZE];
        let mut sends = SendBatch::default();
        tracing::debug!(addrs = ?self.addrs, "userspace stack up");
        while !stop.load(Ordering::Relaxed) {
            while let Ok(p) = self.rx.try_recv() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.pipe.rx.push_back(p);
            }
            let now = self.now();
            self.iface.poll(now, &mut self.pipe, &mut self.sockets);
            self.accept();
            self.relay();
            self.iface
                .poll(self.now(), &mut self.pipe, &mut self.sockets);
            for p in self.pipe.tx.drain(..) {
                self.device
                    .handle_packet(&p, &mut buf, &mut EncryptIo { sends: &mut sends });
            }
            if !sends.is_empty() {
                self.socket.get().send_batch(&mut sends);
            }
            if !self.pipe.rx.is_empty() {
                continue;
            }
            let delay = self
                .iface
                .poll_delay(self.now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200));
            if let Err(e) = self.poll.poll(&mut events, Some(delay)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(error = %e, "stack poll failed");
                }
            }
        }
    }

    /// Turns listeners that received a connection into relays, and listens again.
    fn accept(&mut self) {
        for i in 0..self.listeners.len() {
            let (port, target, handle) = self.listeners[i];
            let s = self.sockets.get_mut::<tcp::Socket>(handle);
            if s.is_listening() {
                continue;
            }
            let fresh = new_listener(&mut self.sockets, port);
            self.listeners[i].2 = fresh;
            let token = Token(self.next_token);
            self.next_token += 1;
            match TcpStream::connect(target) {
                Ok(mut stream) => {
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(error = %e, "cannot watch relay connection");
                        self.sockets.get_mut::<tcp::Socket>(handle).abort();
                        continue;
                    }
                    tracing::debug!(port, %target, "relaying tunnel connection");
                    self.relays.push(Relay {
                        socket: handle,
                        stream,
                        connected: false,
                        stream_eof: false,
                        peer_eof: false,
                    });
                }
                Err(e) => {
                    tracing::warn!(port, %target, error = %e, "cannot reach forward target");
                    self.sockets.get_mut::<tcp::Socket>(handle).abort();
                }
            }
        }
    }

    /// Moves bytes both ways on every relay and retires finished ones.
    fn relay(&mut self) {
        let mut done = Vec::new();
        for (i, r) in self.relays.iter_mut().enumerate() {
            let s = self.sockets.get_mut::<tcp::Socket>(r.socket);
            if !r.connected {
                if !matches!(r.stream.take_error(), Ok(None)) {
                    s.abort();
                    done.push(i);
                    continue;
                }
                match r.stream.peer_addr() {
                    Ok(_) => r.connected = true,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        if !s.is_open() {
                            done.push(i);
                        }
                        continue;
                    }
                    Err(_) => {
                        s.abort();
                        done.push(i);
                        continue;
                    }
                }
            }
            // Tunnel -> target.
            let mut failed = false;
            while s.can_recv() {
                let res = s.recv(|b| match r.stream.write(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match res {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(_)) | Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if !r.peer_eof && !s.may_recv() && !s.can_recv() && s.state() != tcp::State::SynReceived
            {
                r.peer_eof = true;
                let _ = r.stream.shutdown(Shutdown::Write);
            }
            // Target -> tunnel.
            while !r.stream_eof && s.can_send() {
                let res = s.send(|b| match r.stream.read(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match res {
                    Ok(Ok(0)) => {
                        r.stream_eof = true;
                        s.close();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(_)) | Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                s.abort();
            }
            if failed || s.state() == tcp::State::Closed || s.state() == tcp::State::TimeWait {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let mut r = self.relays.swap_remove(i);
            let _ = self.poll.registry().deregister(&mut r.stream);
            self.sockets.remove(r.socket);
        }
    }
}
