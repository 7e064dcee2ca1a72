//! The WireGuard UDP socket, with batched receive and send (`recvmmsg`/`sendmmsg`), so
//! that a burst of datagrams costs one system call instead of one each; and, where the
//! kernel has them, UDP segmentation offload (a run of equal-sized datagrams to one peer
//! leaves as one `UDP_SEGMENT` send) and receive offload (`UDP_GRO`: such runs arrive as
//! one buffer), so that the kernel's UDP and IP layers see one packet per run.
//!
//! The socket is dual-stack (`[::]:port`, IPv4 peers appear as v4-mapped addresses and
//! are shown canonical); where IPv6 is unavailable it falls back to `0.0.0.0:port`.

#![allow(unsafe_code)] // recvmmsg/sendmmsg/poll: each call site states its invariant.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Datagrams (or runs of datagrams, with offloads) handled per system call.
pub const BATCH: usize = 32;
/// Largest datagram we accept: a 9000-byte MTU packet plus WireGuard overhead, rounded up.
pub const MAX_DATAGRAM: usize = 9216 + 64;
/// Largest receive: a run of datagrams coalesced by `UDP_GRO`.
const MAX_RECV: usize = 65_536;
/// Largest run sent with `UDP_SEGMENT`: the UDP payload limit, and the kernel's segment
/// limit (`UDP_MAX_SEGMENTS`, 64 on older kernels).
const MAX_GSO_BYTES: usize = 65_000;
const MAX_GSO_SEGMENTS: usize = 64;

const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Room for one cmsg carrying a c_int (CMSG_SPACE(4) is 24 on 64-bit Linux).
const CMSG_BUF: usize = 32;

/// A bound WireGuard UDP socket.
#[derive(Debug)]
pub struct UdpEndpoint {
    sock: UdpSocket,
    v6: bool,
    /// `UDP_SEGMENT` sends work; cleared after the first refusal.
    gso: std::sync::atomic::AtomicBool,
}

impl UdpEndpoint {
    /// Binds `port` on all addresses (0: a free port).
    pub fn bind(port: u16) -> io::Result<UdpEndpoint> {
        let (sock, v6) = match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
            Ok(s) => (s, true),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => (
                UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?,
                false,
            ),
        };
        set_buffer_sizes(sock.as_raw_fd());
        enable_gro(sock.as_raw_fd());
        Ok(UdpEndpoint {
            sock,
            v6,
            gso: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.sock.local_addr()?.port())
    }

    fn wire_addr(&self, to: SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(a) if self.v6 => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            other => other,
        }
    }

    /// Sends one datagram; errors (unreachable peer, full buffer) are returned, not fatal.
    pub fn send_to(&self, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        self.sock.send_to(data, self.wire_addr(to)).map(|_| ())
    }

    /// Waits up to `timeout` for the socket to become readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_readable(self.sock.as_raw_fd(), timeout)
    }

    /// Receives up to [`BATCH`] datagrams (or coalesced runs) without blocking; returns
    /// how many.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        // SAFETY: every iovec points into `batch.bufs`, every msg_name into `batch.addrs`,
        // every msg_control into `batch.cmsgs`, all of which live as long as `batch` and
        // are not moved during the call; vlen is the length of `batch.hdrs`.
        let n = unsafe {
            for i in 0..BATCH {
                batch.iov[i] = libc::iovec {
                    iov_base: batch.bufs[i].as_mut_ptr().cast(),
                    iov_len: MAX_RECV,
                };
                let h = &mut batch.hdrs[i].msg_hdr;
                h.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut batch.iov[i];
                h.msg_iovlen = 1;
                h.msg_control = batch.cmsgs[i].0.as_mut_ptr().cast();
                h.msg_controllen = CMSG_BUF as _;
                h.msg_flags = 0;
            }
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                batch.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        batch.count = n as usize;
        for i in 0..batch.count {
            // SAFETY: the kernel filled msg_control/msg_controllen of this header.
            batch.seg[i] = unsafe { gro_segment_size(&batch.hdrs[i].msg_hdr) };
        }
        Ok(batch.count)
    }

    /// Sends every datagram queued in `batch` (as few calls as possible) and empties it.
    /// Datagrams the kernel refuses are dropped, as UDP would.
    pub fn send_batch(&self, batch: &mut SendBatch) {
        let total = batch.runs.len();
        let gso = self.gso.load(std::sync::atomic::Ordering::Relaxed);
        if !gso {
            self.send_each(batch, 0..total);
            batch.clear();
            return;
        }
        let mut start = 0;
        while start < total {
            let end = total.min(start + BATCH);
            let mut iov: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: zeroed mmsghdr/sockaddr_storage are valid "empty" values.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
            let mut cmsgs = [CmsgBuf([0; CMSG_BUF]); BATCH];
            for (slot, i) in (start..end).enumerate() {
                let run = batch.runs[i];
                iov[slot] = libc::iovec {
                    iov_base: batch.data[run.offset..].as_mut_ptr().cast(),
                    iov_len: run.len,
                };
                let namelen = write_sockaddr(self.wire_addr(run.to), &mut names[slot]);
                let h = &mut hdrs[slot].msg_hdr;
                h.msg_name = (&mut names[slot] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = namelen;
                h.msg_iov = &mut iov[slot];
                h.msg_iovlen = 1;
                if run.len > run.seg {
                    // SAFETY: the buffer is CMSG_BUF bytes, enough for one c_int cmsg,
                    // and aligned (CmsgBuf is 8-aligned).
                    unsafe { put_segment_cmsg(h, &mut cmsgs[slot], run.seg) };
                }
            }
            let want = end - start;
            // SAFETY: hdrs[..want] point into `iov`, `names`, `cmsgs` and `batch.data`,
            // all alive and unmoved for the call.
            let n = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                // The first message failed. A run the kernel will not segment (no
                // UDP_SEGMENT, no checksum offload on the route: EIO/EINVAL/...) goes out
                // datagram by datagram from now on; anything else is dropped, as UDP would.
                let run = batch.runs[start];
                let e = io::Error::last_os_error();
                if run.len > run.seg
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    )
                {
                    tracing::debug!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                    self.gso.store(false, std::sync::atomic::Ordering::Relaxed);
                    self.send_each(batch, start..total);
                    break;
                }
                start += 1;
            } else {
                start += n as usize;
            }
        }
        batch.clear();
    }

    /// Sends runs `range` of `batch` one datagram per call, without offload.
    fn send_each(&self, batch: &SendBatch, range: std::ops::Range<usize>) {
        for run in &batch.runs[range] {
            let data = &batch.data[run.offset..run.offset + run.len];
            for d in data.chunks(run.seg) {
                let _ = self.send_to(run.to, d);
            }
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF]);

/// Attaches a `UDP_SEGMENT` cmsg with segment size `seg` to `h`.
///
/// # Safety
/// `buf` must outlive every use of `h`.
unsafe fn put_segment_cmsg(h: &mut libc::msghdr, buf: &mut CmsgBuf, seg: usize) {
    h.msg_control = buf.0.as_mut_ptr().cast();
    h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
    let c = libc::CMSG_FIRSTHDR(h);
    (*c).cmsg_level = libc::SOL_UDP;
    (*c).cmsg_type = UDP_SEGMENT;
    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
}

/// The `UDP_GRO` segment size the kernel attached to a received message, or 0.
///
/// # Safety
/// `h` must be a header filled by `recvmsg`/`recvmmsg`, its control buffer still alive.
unsafe fn gro_segment_size(h: &libc::msghdr) -> usize {
    if h.msg_control.is_null() || h.msg_controllen == 0 {
        return 0;
    }
    let mut c = libc::CMSG_FIRSTHDR(h);
    while !c.is_null() {
        if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
            let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
            return usize::try_from(v).unwrap_or(0);
        }
        c = libc::CMSG_NXTHDR(h, c);
    }
    0
}

/// Buffers for [`UdpEndpoint::recv_batch`].
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<CmsgBuf>,
    /// Per message: the size of each coalesced datagram (0: one datagram).
    seg: Vec<usize>,
    count: usize,
}

// The raw pointers inside are re-pointed at our own buffers before every call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; MAX_RECV].into_boxed_slice())
                .collect(),
            // SAFETY: all-zero is a valid value of these plain C structs.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![CmsgBuf([0; CMSG_BUF]); BATCH],
            seg: vec![0; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive with their (canonical) source addresses; a run
    /// coalesced by the kernel is split back into its datagrams.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count)
            .filter_map(move |i| {
                let len = (self.hdrs[i].msg_len as usize).min(MAX_RECV);
                let from = read_sockaddr(&self.addrs[i])?;
                let seg = match self.seg[i] {
                    0 => len.max(1),
                    s => s,
                };
                Some(self.bufs[i][..len].chunks(seg).map(move |d| (from, d)))
            })
            .flatten()
    }
}

/// A run of datagrams to one address, all `seg` bytes long but the last (which may be
/// shorter), stored at `data[offset..offset + len]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    to: SocketAddr,
    offset: usize,
    len: usize,
    seg: usize,
}

/// Datagrams waiting to be sent, packed in one buffer. Consecutive datagrams to the same
/// address and of the same size are kept as one run, sent with one `UDP_SEGMENT` call.
#[derive(Debug, Default)]
pub struct SendBatch {
    data: Vec<u8>,
    runs: Vec<Run>,
    datagrams: usize,
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        if datagram.is_empty() {
            return;
        }
        let offset = self.data.len();
        self.data.extend_from_slice(datagram);
        self.datagrams += 1;
        let n = datagram.len();
        if let Some(last) = self.runs.last_mut() {
            // Joinable: same peer, the run so far all full-sized, this one no larger.
            if last.to == to
                && last.len % last.seg == 0
                && n <= last.seg
                && last.len + n <= MAX_GSO_BYTES
                && last.len / last.seg < MAX_GSO_SEGMENTS
            {
                last.len += n;
                return;
            }
        }
        self.runs.push(Run {
            to,
            offset,
            len: n,
            seg: n,
        });
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.runs.clear();
        self.datagrams = 0;
    }
}

fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Waits up to `timeout` for `fd` to be readable.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

/// Asks the kernel to coalesce runs of datagrams (UDP_GRO); without it (old kernels)
/// every datagram arrives on its own, which works too.
fn enable_gro(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Larger socket buffers absorb bursts at high rates; failures only cost throughput.
fn set_buffer_sizes(fd: RawFd) {
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpEndpoint::bind(0).unwrap();
        let b = UdpEndpoint::bind(0).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{}", b.local_port().unwrap())
            .parse()
            .unwrap();
        let mut out = SendBatch::default();
        for i in 0..40u8 {
            out.push(to, &vec![i; usize::from(i) + 1]);
        }
        a.send_batch(&mut out);
        assert!(out.is_empty());
        let mut got = Vec::new();
        let mut rb = RecvBatch::default();
        while got.len() < 40 {
            assert!(
                b.wait_readable(Duration::from_secs(2)).unwrap(),
                "datagrams arrive"
            );
            b.recv_batch(&mut rb).unwrap();
            for (from, d) in rb.iter() {
                assert_eq!(from.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
                assert_eq!(from.port(), a.local_port().unwrap());
                got.push(d.to_vec());
            }
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; i + 1]);
        }
    }

    #[test]
    fn second_bind_on_same_port_is_addr_in_use() {
        let a = UdpEndpoint::bind(0).unwrap();
        let e = UdpEndpoint::bind(a.local_port().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
