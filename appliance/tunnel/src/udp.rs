//! The WireGuard UDP socket, with batched receive and send (`recvmmsg`/`sendmmsg`), so
//! that a burst of datagrams costs one system call instead of one each.
//!
//! The socket is dual-stack (`[::]:port`, IPv4 peers appear as v4-mapped addresses and
//! are shown canonical); where IPv6 is unavailable it falls back to `0.0.0.0:port`.

#![allow(unsafe_code)] // recvmmsg/sendmmsg/poll: each call site states its invariant.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Datagrams handled per system call.
pub const BATCH: usize = 32;
/// Largest datagram we accept: a 9000-byte MTU packet plus WireGuard overhead, rounded up.
pub const MAX_DATAGRAM: usize = 9216 + 64;

/// A bound WireGuard UDP socket.
#[derive(Debug)]
pub struct UdpEndpoint {
    sock: UdpSocket,
    v6: bool,
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
        Ok(UdpEndpoint { sock, v6 })
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

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        // SAFETY: every iovec points into `batch.bufs`, every msg_name into `batch.addrs`,
        // all of which live as long as `batch` and are not moved during the call; vlen is
        // the length of `batch.hdrs`.
        let n = unsafe {
            for i in 0..BATCH {
                batch.iov[i] = libc::iovec {
                    iov_base: batch.bufs[i].as_mut_ptr().cast(),
                    iov_len: MAX_DATAGRAM,
                };
                let h = &mut batch.hdrs[i].msg_hdr;
                h.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut batch.iov[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
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
        Ok(batch.count)
    }

    /// Sends every datagram queued in `batch` (as few calls as possible) and empties it.
    /// Datagrams the kernel refuses are dropped, as UDP would.
    pub fn send_batch(&self, batch: &mut SendBatch) {
        let total = batch.lens.len();
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
            let mut offset: usize = batch.lens[..start].iter().sum();
            for (slot, i) in (start..end).enumerate() {
                let len = batch.lens[i];
                iov[slot] = libc::iovec {
                    iov_base: batch.data[offset..].as_mut_ptr().cast(),
                    iov_len: len,
                };
                offset += len;
                let namelen = write_sockaddr(self.wire_addr(batch.addrs[i]), &mut names[slot]);
                let h = &mut hdrs[slot].msg_hdr;
                h.msg_name = (&mut names[slot] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = namelen;
                h.msg_iov = &mut iov[slot];
                h.msg_iovlen = 1;
            }
            let want = end - start;
            // SAFETY: hdrs[..want] point into `iov`, `names` and `batch.data`, all alive
            // and unmoved for the call.
            let n = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    0,
                )
            };
            // On error or a short count, skip the datagram that failed and go on.
            start += if n <= 0 { 1 } else { n as usize };
        }
        batch.clear();
    }
}

/// Buffers for [`UdpEndpoint::recv_batch`].
pub struct RecvBatch {
    bufs: Vec<Box<[u8; MAX_DATAGRAM]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// The raw pointers inside are re-pointed at our own buffers before every call.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| Box::new([0u8; MAX_DATAGRAM])).collect(),
            // SAFETY: all-zero is a valid value of these plain C structs.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive with their (canonical) source addresses.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count).filter_map(move |i| {
            let len = (self.hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            let from = read_sockaddr(&self.addrs[i])?;
            Some((from, &self.bufs[i][..len]))
        })
    }
}

/// Datagrams waiting to be sent, packed in one buffer.
#[derive(Debug, Default)]
pub struct SendBatch {
    data: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.data.extend_from_slice(datagram);
        self.lens.push(datagram.len());
        self.addrs.push(to);
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.lens.clear();
        self.addrs.clear();
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
