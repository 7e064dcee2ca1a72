//! Segmentation and coalescing for a TUN device with offloads (`IFF_VNET_HDR` and
//! `TUNSETOFFLOAD`), the way wireguard-go does it on Linux.
//!
//! With offloads on, the kernel hands the TUN reader TCP "super-packets" of up to 64 KiB
//! (one `virtio_net_hdr` in front says how to cut them) and accepts the same from the
//! writer. That saves the kernel's TCP stack and us one system call per MTU-sized packet:
//!
//! - [`segment`]: one frame read from the TUN device -> the MTU-sized IP packets that go
//!   into the tunnel, each with complete IP and TCP checksums (WireGuard carries plain
//!   IP packets; the peer may be any implementation).
//! - [`Coalescer`]: decrypted packets -> frames to write to the TUN device: consecutive
//!   in-order TCP segments of one flow become one super-packet, everything else is
//!   written as it came. Order within a flow is kept.
//!
//! Nothing here allocates per packet: buffers are reused across batches.

/// Size of `struct virtio_net_hdr` (no `num_buffers`), which precedes every frame.
pub const VNET_HDR_LEN: usize = 10;
/// Largest frame the TUN device reads or writes: the header plus a 64 KiB IP packet.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_535;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`, in the host's byte order (what TUN uses by default).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Why a frame from the TUN device could not be cut into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Too short, or headers that contradict the virtio header.
    Malformed,
    /// A GSO type we did not enable (UDP, ...).
    Unsupported,
}

/// The ones'-complement sum of `data` added to `initial` (not folded, not complemented),
/// in network byte order.
pub fn checksum_add(initial: u64, data: &[u8]) -> u64 {
    // Sum native-endian 32-bit words (byte order does not matter to a ones'-complement
    // sum but for a final byte swap, RFC 1071 section 2(B)); no carries are lost in a
    // 64-bit accumulator for anything up to 2^32 words.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    let native = checksum_fold(acc);
    initial + u64::from(u16::from_be(native))
}

/// Folds a sum from [`checksum_add`] to 16 bits (not complemented).
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The sum of the TCP/UDP pseudo-header of an IPv4 or IPv6 `packet` (its addresses),
/// for protocol `proto` and transport length `len`.
fn pseudo_header_sum(packet: &[u8], proto: u8, len: usize) -> u64 {
    let addrs = if packet[0] >> 4 == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    checksum_add(0, addrs) + u64::from(proto) + len as u64
}

fn ipv4_header_checksum(packet: &mut [u8], ihl: usize) {
    packet[10] = 0;
    packet[11] = 0;
    let c = !checksum_fold(checksum_add(0, &packet[..ihl]));
    packet[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Writes a complete TCP checksum into `packet` (an IPv4/IPv6 packet, TCP at `l4`).
fn tcp_checksum(packet: &mut [u8], l4: usize) {
    packet[l4 + 16] = 0;
    packet[l4 + 17] = 0;
    let len = packet.len() - l4;
    let sum = pseudo_header_sum(packet, PROTO_TCP, len);
    let c = !checksum_fold(checksum_add(sum, &packet[l4..]));
    packet[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

/// Whether the TCP checksum of `packet` (TCP at `l4`) is right.
fn tcp_checksum_ok(packet: &[u8], l4: usize) -> bool {
    let len = packet.len() - l4;
    let sum = pseudo_header_sum(packet, PROTO_TCP, len);
    checksum_fold(checksum_add(sum, &packet[l4..])) == 0xffff
}

/// IP header length and transport protocol of an IPv4 or IPv6 packet (IPv6 without
/// extension headers); None when malformed.
fn ip_header(packet: &[u8]) -> Option<(usize, u8)> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            (ihl >= 20 && packet.len() >= ihl).then(|| (ihl, packet[9]))
        }
        6 => (packet.len() >= 40).then(|| (40, packet[6])),
        _ => None,
    }
}

/// Cuts one frame read from a TUN device with a virtio header into IP packets and calls
/// `emit` with each. `frame` is the virtio header followed by the packet; it is modified
/// (checksums). `scratch` must hold [`MAX_FRAME`] bytes.
pub fn segment(
    frame: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), SegmentError> {
    let hdr = VnetHdr::parse(frame).ok_or(SegmentError::Malformed)?;
    let packet = &mut frame[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                // The kernel left the transport checksum to us: the field holds the
                // pseudo-header sum; sum from csum_start and store the complement.
                let start = usize::from(hdr.csum_start);
                let at = start + usize::from(hdr.csum_offset);
                if at + 2 > packet.len() {
                    return Err(SegmentError::Malformed);
                }
                let c = !checksum_fold(checksum_add(0, &packet[start..]));
                packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            emit(packet);
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(packet, usize::from(hdr.gso_size), scratch, emit),
        _ => Err(SegmentError::Unsupported),
    }
}

fn segment_tcp(
    packet: &[u8],
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), SegmentError> {
    let (iphl, proto) = ip_header(packet).ok_or(SegmentError::Malformed)?;
    if proto != PROTO_TCP || packet.len() < iphl + 20 || mss == 0 {
        return Err(SegmentError::Malformed);
    }
    let tcphl = usize::from(packet[iphl + 12] >> 4) * 4;
    let hl = iphl + tcphl;
    if tcphl < 20 || packet.len() < hl || scratch.len() < hl + mss {
        return Err(SegmentError::Malformed);
    }
    let v4 = packet[0] >> 4 == 4;
    let payload = &packet[hl..];
    let seq0 = u32::from_be_bytes([
        packet[iphl + 4],
        packet[iphl + 5],
        packet[iphl + 6],
        packet[iphl + 7],
    ]);
    let id0 = u16::from_be_bytes([packet[4], packet[5]]);
    let flags0 = packet[iphl + 13];
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let off = i * mss;
        let chunk = &payload[off.min(payload.len())..(off + mss).min(payload.len())];
        let len = hl + chunk.len();
        let seg = &mut scratch[..len];
        seg[..hl].copy_from_slice(&packet[..hl]);
        seg[hl..].copy_from_slice(chunk);
        if v4 {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ipv4_header_checksum(seg, iphl);
        } else {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add(off as u32);
        seg[iphl + 4..iphl + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[iphl + 13] = flags;
        tcp_checksum(seg, iphl);
        emit(seg);
    }
    Ok(())
}

/// Largest number of segments in one coalesced packet.
const MAX_SEGMENTS: u16 = 64;
/// Coalesced packets (and single packets) held before a flush.
const MAX_GROUPS: usize = 64;

/// One frame being built: the virtio header, then an IP packet.
struct Group {
    buf: Box<[u8]>,
    /// Bytes used in `buf`, header included.
    len: usize,
    /// Coalescable TCP: the flow and where the next segment must start.
    tcp: Option<TcpGroup>,
}

#[derive(Clone, Copy)]
struct TcpGroup {
    iphl: usize,
    tcphl: usize,
    next_seq: u32,
    gso_size: usize,
    segments: u16,
    /// No more segments may join (a short or PSH segment arrived, or an out-of-order one
    /// of the same flow).
    closed: bool,
}

/// Builds the frames written to a TUN device with a virtio header, coalescing TCP.
pub struct Coalescer {
    groups: Vec<Group>,
    used: usize,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// Where a decrypted packet's TCP header is, if it is a TCP segment that may be coalesced.
fn coalescable(packet: &[u8]) -> Option<(usize, usize)> {
    let (iphl, proto) = ip_header(packet)?;
    if proto != PROTO_TCP {
        return None;
    }
    if packet[0] >> 4 == 4 {
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let frag = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff; // MF + offset
        if iphl != 20 || frag != 0 || total != packet.len() {
            return None;
        }
    } else {
        let plen = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        if plen + 40 != packet.len() {
            return None;
        }
    }
    if packet.len() < iphl + 20 {
        return None;
    }
    let tcphl = usize::from(packet[iphl + 12] >> 4) * 4;
    if tcphl < 20 || packet.len() <= iphl + tcphl {
        return None; // no payload: a pure ACK, written as it is
    }
    let flags = packet[iphl + 13];
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    if !tcp_checksum_ok(packet, iphl) {
        // Written as it is; the kernel drops it. Never hide a bad checksum inside a
        // coalesced packet, whose checksum the kernel would not check.
        return None;
    }
    Some((iphl, tcphl))
}

fn seq_of(packet: &[u8], iphl: usize) -> u32 {
    u32::from_be_bytes([
        packet[iphl + 4],
        packet[iphl + 5],
        packet[iphl + 6],
        packet[iphl + 7],
    ])
}

/// Same flow: version, addresses, ports.
fn same_flow(a: &[u8], b: &[u8], iphl: usize) -> bool {
    if a[0] >> 4 != b[0] >> 4 {
        return false;
    }
    let addrs = if a[0] >> 4 == 4 { 12..20 } else { 8..40 };
    a[addrs.clone()] == b[addrs] && a[iphl..iphl + 4] == b[iphl..iphl + 4]
}

/// Whether `p` may be appended to the group whose first packet is `head` (same flow
/// already checked): same IP fields that the kernel would copy to every segment, same
/// ACK number, window and TCP options.
fn joinable(head: &[u8], g: &TcpGroup, p: &[u8], tcphl: usize) -> bool {
    if tcphl != g.tcphl {
        return false;
    }
    let ip_same = if p[0] >> 4 == 4 {
        // TOS, DF/flags, TTL, protocol.
        head[1] == p[1] && head[6] == p[6] && head[8] == p[8]
    } else {
        // Traffic class and flow label, hop limit.
        head[..4] == p[..4] && head[7] == p[7]
    };
    let t = g.iphl;
    // ACK number (8..12), data offset (12), window (14..16), options (20..).
    ip_same
        && head[t + 8..t + 13] == p[t + 8..t + 13]
        && head[t + 14..t + 16] == p[t + 14..t + 16]
        && head[t + 20..t + tcphl] == p[t + 20..t + tcphl]
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer {
            groups: Vec::new(),
            used: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether the next [`Coalescer::push`] might need a flush first (all groups in use).
    pub fn is_full(&self) -> bool {
        self.used >= MAX_GROUPS
    }

    fn take_group(&mut self) -> &mut Group {
        if self.used == self.groups.len() {
            self.groups.push(Group {
                buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
                len: 0,
                tcp: None,
            });
        }
        self.used += 1;
        &mut self.groups[self.used - 1]
    }

    /// Adds one IP packet. Call [`Coalescer::flush`] when [`Coalescer::is_full`] and at
    /// the end of each batch.
    pub fn push(&mut self, packet: &[u8]) {
        if packet.is_empty() || packet.len() > MAX_FRAME - VNET_HDR_LEN {
            return;
        }
        let tcp = coalescable(packet);
        if let Some((iphl, tcphl)) = tcp {
            let payload = packet.len() - iphl - tcphl;
            let seq = seq_of(packet, iphl);
            // The newest open group of this flow, if any.
            for g in self.groups[..self.used].iter_mut().rev() {
                let Some(t) = g.tcp.as_mut() else { continue };
                let head = &g.buf[VNET_HDR_LEN..g.len];
                if t.iphl != iphl || !same_flow(head, packet, iphl) {
                    continue;
                }
                if t.closed {
                    break;
                }
                let fits = g.len + payload <= MAX_FRAME;
                if seq == t.next_seq
                    && payload <= t.gso_size
                    && t.segments < MAX_SEGMENTS
                    && fits
                    && joinable(head, t, packet, tcphl)
                {
                    g.buf[g.len..g.len + payload].copy_from_slice(&packet[iphl + tcphl..]);
                    g.len += payload;
                    t.next_seq = seq.wrapping_add(payload as u32);
                    t.segments += 1;
                    let psh = packet[iphl + 13] & TCP_PSH;
                    if psh != 0 {
                        g.buf[VNET_HDR_LEN + iphl + 13] |= TCP_PSH;
                    }
                    if payload < t.gso_size || psh != 0 {
                        t.closed = true;
                    }
                    return;
                }
                // Out of order or different parameters: this packet starts a new group
                // after it, and nothing later joins the old one.
                t.closed = true;
                break;
            }
            let g = self.take_group();
            g.buf[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
            g.len = VNET_HDR_LEN + packet.len();
            g.tcp = Some(TcpGroup {
                iphl,
                tcphl,
                next_seq: seq.wrapping_add(payload as u32),
                gso_size: payload,
                segments: 1,
                closed: packet[iphl + 13] & TCP_PSH != 0,
            });
            return;
        }
        // Not coalescable. If it is TCP, no earlier group of its flow may grow past it.
        if let Some((iphl, proto)) = ip_header(packet) {
            if proto == PROTO_TCP && packet.len() >= iphl + 4 {
                for g in self.groups[..self.used].iter_mut() {
                    if let Some(t) = g.tcp.as_mut() {
                        let head = &g.buf[VNET_HDR_LEN..g.len];
                        if t.iphl == iphl && same_flow(head, packet, iphl) {
                            t.closed = true;
                        }
                    }
                }
            }
        }
        let g = self.take_group();
        g.buf[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
        g.len = VNET_HDR_LEN + packet.len();
        g.tcp = None;
    }

    /// Finishes every frame and hands it (virtio header + packet) to `write`, in order.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8])) {
        for g in &mut self.groups[..self.used] {
            let mut hdr = VnetHdr::default();
            if let Some(t) = g.tcp.filter(|t| t.segments > 1) {
                let p = &mut g.buf[VNET_HDR_LEN..g.len];
                let len = p.len();
                let v4 = p[0] >> 4 == 4;
                if v4 {
                    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    ipv4_header_checksum(p, t.iphl);
                } else {
                    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                }
                // Checksum offload: the field holds the pseudo-header sum, the kernel
                // (or whoever forwards the packet) completes it.
                let ph = checksum_fold(pseudo_header_sum(p, PROTO_TCP, len - t.iphl));
                p[t.iphl + 16..t.iphl + 18].copy_from_slice(&ph.to_be_bytes());
                hdr = VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: if v4 { GSO_TCPV4 } else { GSO_TCPV6 },
                    hdr_len: (t.iphl + t.tcphl) as u16,
                    gso_size: t.gso_size as u16,
                    csum_start: t.iphl as u16,
                    csum_offset: 16,
                };
            }
            hdr.write(&mut g.buf[..VNET_HDR_LEN]);
            write(&g.buf[..g.len]);
        }
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment with valid checksums.
    fn tcp4(seq: u32, flags: u8, payload: &[u8], id: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 202, 0, 1]);
        p[16..20].copy_from_slice(&[10, 202, 0, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&77u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        ipv4_header_checksum(&mut p, 20);
        tcp_checksum(&mut p, 20);
        p
    }

    fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p[6] = PROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[40..42].copy_from_slice(&40000u16.to_be_bytes());
        p[42..44].copy_from_slice(&5201u16.to_be_bytes());
        p[44..48].copy_from_slice(&seq.to_be_bytes());
        p[48..52].copy_from_slice(&77u32.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = flags;
        p[54..56].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(payload);
        tcp_checksum(&mut p, 40);
        p
    }

    fn payload(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_fold(checksum_add(0, &d)), 0xddf2);
        assert_eq!(checksum_fold(checksum_add(0, &d[..7])), 0xddf2 - 0xf7);
    }

    #[test]
    fn checksum_matches_naive_sum_at_every_length() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            let d = &data[..len];
            let mut naive: u64 = 0;
            for (i, b) in d.iter().enumerate() {
                naive += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
            }
            assert_eq!(
                checksum_fold(checksum_add(5, d)),
                checksum_fold(naive + 5),
                "length {len}"
            );
        }
    }

    /// A TSO frame as the kernel hands it out: one header, a long payload.
    fn tso_frame(packet: &[u8], gso_type: u8, mss: u16, iphl: usize) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: (iphl + 20) as u16,
            gso_size: mss,
            csum_start: iphl as u16,
            csum_offset: 16,
        }
        .write(&mut f);
        f.extend_from_slice(packet);
        f
    }

    #[test]
    fn segment_then_coalesce_round_trip_v4() {
        let data = payload(1380 * 3 + 100, 7);
        let big = tcp4(1000, TCP_ACK | TCP_PSH, &data, 9);
        let mut frame = tso_frame(&big, GSO_TCPV4, 1380, 20);
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut segs = Vec::new();
        segment(&mut frame, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 4);
        for (i, s) in segs.iter().enumerate() {
            let n = if i < 3 { 1380 } else { 100 };
            let psh = if i == 3 { TCP_PSH } else { 0 };
            let expect = tcp4(
                1000 + 1380 * i as u32,
                TCP_ACK | psh,
                &data[1380 * i..1380 * i + n],
                9 + i as u16,
            );
            assert_eq!(s, &expect, "segment {i} equals a hand-built packet");
        }
        let mut c = Coalescer::new();
        for s in &segs {
            c.push(s);
        }
        let mut out = Vec::new();
        c.flush(|f| out.push(f.to_vec()));
        assert_eq!(out.len(), 1, "one super-packet");
        let hdr = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(hdr.gso_size, 1380);
        assert_eq!(hdr.hdr_len, 40);
        assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 16));
        let p = &out[0][VNET_HDR_LEN..];
        assert_eq!(&p[40..], &data[..]);
        assert_eq!(p[33], TCP_ACK | TCP_PSH);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(checksum_fold(checksum_add(0, &p[..20])), 0xffff);
        // Completing the offloaded checksum gives the checksum of the whole segment.
        let mut done = p.to_vec();
        let c = !checksum_fold(checksum_add(0, &done[20..]));
        done[36..38].copy_from_slice(&c.to_be_bytes());
        assert!(tcp_checksum_ok(&done, 20));
    }

    #[test]
    fn segment_then_coalesce_round_trip_v6() {
        let data = payload(1000 * 2 + 1, 3);
        let big = tcp6(5, TCP_ACK, &data);
        let mut frame = tso_frame(&big, GSO_TCPV6, 1000, 40);
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut c = Coalescer::new();
        let mut n = 0;
        segment(&mut frame, &mut scratch, |s| {
            assert!(tcp_checksum_ok(s, 40));
            n += 1;
            c.push(s);
        })
        .unwrap();
        assert_eq!(n, 3);
        let mut out = Vec::new();
        c.flush(|f| out.push(f.to_vec()));
        assert_eq!(out.len(), 1);
        let hdr = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!((hdr.gso_type, hdr.gso_size), (GSO_TCPV6, 1000));
        assert_eq!(&out[0][VNET_HDR_LEN + 60..], &data[..]);
    }

    #[test]
    fn plain_frame_gets_its_checksum_completed() {
        let mut p = tcp4(1, TCP_ACK, &payload(33, 1), 1);
        let good = p.clone();
        // As the kernel hands it out: the field holds the pseudo-header sum only.
        let ph = checksum_fold(pseudo_header_sum(&p, PROTO_TCP, p.len() - 20));
        p[36..38].copy_from_slice(&ph.to_be_bytes());
        let mut frame = vec![0u8; VNET_HDR_LEN];
        VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        }
        .write(&mut frame);
        frame.extend_from_slice(&p);
        let mut out = Vec::new();
        segment(&mut frame, &mut [0u8; 64], |s| out.push(s.to_vec())).unwrap();
        assert_eq!(out, vec![good]);
    }

    #[test]
    fn coalescer_keeps_order_and_leaves_others_alone() {
        let a = |seq: u32, n: usize| tcp4(seq, TCP_ACK, &payload(n, seq as u8), 1);
        let mut other = a(0, 100);
        other[22..24].copy_from_slice(&5202u16.to_be_bytes()); // another flow
        tcp_checksum(&mut other, 20);
        let ping = {
            let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
            p.extend_from_slice(&[10, 202, 0, 1, 10, 202, 0, 2, 8, 0, 0, 0, 0, 0, 0, 0]);
            p
        };
        let mut bad = a(400, 100);
        bad[45] ^= 1; // corrupt payload: checksum wrong
        let mut fin = a(300, 0);
        fin[33] |= TCP_FIN;
        tcp_checksum(&mut fin, 20);
        let input = vec![
            a(0, 100),
            other.clone(),
            a(100, 100),
            ping.clone(),
            a(200, 100),
            a(300, 0), // pure ACK: alone, and closes the flow's group
            a(300, 100),
            a(400, 50), // short: joins, then closes
            a(450, 50),
            a(600, 100), // gap: new group
            bad.clone(),
            fin.clone(),
        ];
        let mut c = Coalescer::new();
        for p in &input {
            c.push(p);
        }
        let mut out = Vec::new();
        c.flush(|f| out.push(f.to_vec()));
        let plain = |f: &Vec<u8>| (VnetHdr::parse(f).unwrap(), f[VNET_HDR_LEN..].to_vec());
        let frames: Vec<_> = out.iter().map(plain).collect();
        let segs: Vec<u16> = frames
            .iter()
            .map(|(h, p)| {
                if h.gso_type == GSO_NONE {
                    1
                } else {
                    (p.len() as u16 - 40).div_ceil(h.gso_size)
                }
            })
            .collect();
        assert_eq!(segs, vec![3, 1, 1, 1, 2, 1, 1, 1, 1]);
        assert_eq!(frames[1].1, other);
        assert_eq!(frames[2].1, ping);
        assert_eq!(frames[3].1, a(300, 0));
        assert_eq!(frames[5].1, a(450, 50));
        assert_eq!(frames[6].1, a(600, 100));
        assert_eq!(frames[7].1, bad);
        assert_eq!(frames[8].1, fin);
        let mut expect = payload(100, 0);
        expect.extend(payload(100, 100));
        expect.extend(payload(100, 200));
        assert_eq!(&frames[0].1[40..], &expect[..]);
        assert_eq!(frames[0].0.gso_size, 100);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut scratch = vec![0u8; MAX_FRAME];
        for len in 0..80 {
            let mut f = vec![0u8; len];
            if len > 1 {
                f[1] = GSO_TCPV4;
            }
            if len > 10 {
                f[10] = 0x45;
            }
            let _ = segment(&mut f, &mut scratch, |_| {});
            let mut c = Coalescer::new();
            c.push(&f);
            c.flush(|_| {});
        }
    }

    /// Decrypted packets come from peers and frames from the kernel: neither may panic
    /// either function, whatever the bytes (mutations of real packets and plain noise).
    #[test]
    fn hostile_input_never_panics() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let real4 = tcp4(77, TCP_ACK, &payload(1380, 1), 1);
        let real6 = tcp6(77, TCP_ACK, &payload(1000, 2));
        let mut scratch = vec![0u8; MAX_FRAME];
        let mut c = Coalescer::new();
        for round in 0..20_000 {
            let base: Vec<u8> = match round % 3 {
                0 => real4.clone(),
                1 => real6.clone(),
                _ => (0..(rand() % 200) as usize).map(|_| rand() as u8).collect(),
            };
            let mut p = base;
            for _ in 0..(rand() % 4) {
                if !p.is_empty() {
                    let at = (rand() as usize) % p.len();
                    p[at] = rand() as u8;
                }
            }
            if rand() % 4 == 0 {
                let keep = (rand() as usize) % (p.len() + 1);
                p.truncate(keep);
            }
            c.push(&p);
            if c.is_full() || round % 7 == 0 {
                c.flush(|_| {});
            }
            // The same bytes behind a random virtio header, as a TUN read.
            let mut frame: Vec<u8> = (0..VNET_HDR_LEN).map(|_| rand() as u8).collect();
            frame.extend_from_slice(&p);
            let _ = segment(&mut frame, &mut scratch, |_| {});
        }
        c.flush(|_| {});
    }
}
