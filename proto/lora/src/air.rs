//! The simulated air: LoRa radios as UDP sockets on loopback, and one [`Air`] that plays
//! the radio channel between them (std only, feature `air`).
//!
//! The forwarder's `SimRadio` (appliance/lora) and the node simulator (lora-node/sim) both
//! use [`AirClient`], so every simulated radio follows the same rules, which are:
//!
//! - A transmission occupies `[start_us, start_us + airtime_us)` on one frequency and
//!   spreading factor. The air never lets a transmission start in the past: it starts at
//!   the time the radio asked for, or when the air read the request if that is later.
//! - Every registered radio listening on the same frequency and spreading factor, other
//!   than the transmitter, receives it once it has ended ([`RxPacket::end_us`]), unless:
//!   - another transmission on the same frequency and spreading factor overlapped it:
//!     both are lost at every receiver (a collision; no capture effect, all radios are
//!     equally far apart) — counted in [`AirStats::collided`];
//!   - the receiver was itself transmitting at any time during it (a LoRa radio is half
//!     duplex) — counted in [`AirStats::deaf`];
//!   - the air's seeded random loss drops it (each receiver independently, with
//!     probability [`AirConfig::loss`]) — counted in [`AirStats::lost`].
//! - RSSI and SNR are fixed per transmitter (derived from its address: between -60 and
//!   -110 dBm, SNR following RSSI) plus up to ±2 dB of seeded jitter, so a node's signal
//!   looks stable and plausible.
//! - Time is the air's monotonic clock in microseconds since it started. Every datagram
//!   from the air carries the air's `now_us`, so clients share one clock:
//!   [`AirClient::now_us`] is the air's time (within the loopback latency, microseconds).
//!
//! # Datagrams
//!
//! Binary, big-endian, at most [`MAX_DATAGRAM`] bytes. Byte 0 is [`VERSION`], byte 1 the
//! type:
//!
//! | type | direction | body after the two bytes |
//! |---|---|---|
//! | 0x01 register | radio -> air | freq_hz u32, sf u8 (the channel it listens on; again to change it) |
//! | 0x02 transmit | radio -> air | start_us u64 (0 = now), airtime_us u32, freq_hz u32, sf u8, frame bytes (0..=255) |
//! | 0x03 leave | radio -> air | (none) |
//! | 0x81 welcome | air -> radio | now_us u64 (answer to register) |
//! | 0x82 deliver | air -> radio | now_us u64, end_us u64, freq_hz u32, sf u8, rssi i16 (dBm), snr i16 (centi-dB), frame bytes |
//!
//! A datagram the air cannot parse is counted in [`AirStats::malformed`] and ignored.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

/// The datagram format's version (byte 0 of every datagram).
pub const VERSION: u8 = 1;
/// Largest frame a transmission may carry (the SX1262's payload limit, datasheet 6.1.4:
/// payload length is one byte).
pub const MAX_FRAME: usize = 255;
/// Largest datagram of the format (a delivery of a [`MAX_FRAME`]-byte frame).
pub const MAX_DATAGRAM: usize = DELIVER_HEADER + MAX_FRAME;

const T_REGISTER: u8 = 0x01;
const T_TRANSMIT: u8 = 0x02;
const T_LEAVE: u8 = 0x03;
const T_WELCOME: u8 = 0x81;
const T_DELIVER: u8 = 0x82;
/// version, type, now_us, end_us, freq_hz, sf, rssi, snr.
const DELIVER_HEADER: usize = 2 + 8 + 8 + 4 + 1 + 2 + 2;
/// version, type, start_us, airtime_us, freq_hz, sf.
const TRANSMIT_HEADER: usize = 2 + 8 + 4 + 4 + 1;
/// How often the air's thread looks at its stop flag when idle.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How long [`AirClient::connect`] waits for each welcome, and how many times it asks.
const WELCOME_WAIT: Duration = Duration::from_millis(500);
const WELCOME_TRIES: u32 = 6;

/// How the air behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirConfig {
    /// Fraction (0.0..=1.0) of receptions dropped at random, each receiver independently.
    pub loss: f64,
    /// Seed of the loss and jitter generator: the same seed and the same traffic give the
    /// same losses.
    pub seed: u64,
    /// Where the air listens (port 0: a free port, see [`AirHandle::addr`]).
    pub bind: SocketAddr,
}

impl Default for AirConfig {
    fn default() -> Self {
        AirConfig {
            loss: 0.0,
            seed: 1,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// What the air did, counted per (transmission, receiver) pair except `transmissions`
/// and `malformed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AirStats {
    /// Transmissions that went on the air.
    pub transmissions: u64,
    /// Receptions delivered.
    pub delivered: u64,
    /// Receptions lost to an overlapping transmission on the same channel.
    pub collided: u64,
    /// Receptions dropped by the random loss.
    pub lost: u64,
    /// Receptions missed because the receiver was transmitting.
    pub deaf: u64,
    /// Datagrams the air could not parse.
    pub malformed: u64,
}

/// A frame a radio received.
#[derive(Debug, Clone, PartialEq)]
pub struct RxPacket {
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// Signal-to-noise ratio, dB (quarter-dB steps, like the SX1262 reports it).
    pub snr: f32,
    /// The air time at which the transmission ended (the end of reception), µs.
    pub end_us: u64,
    /// The channel it came on.
    pub freq_hz: u32,
    pub sf: u8,
}

/// Why the air could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum AirError {
    /// `loss` outside 0.0..=1.0.
    Loss(f64),
    /// Binding or configuring the socket failed.
    Io(io::Error),
}

impl std::fmt::Display for AirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AirError::Loss(l) => write!(f, "air loss {l} is not a fraction from 0.0 to 1.0"),
            AirError::Io(e) => write!(f, "cannot open the air's UDP socket: {e}"),
        }
    }
}

impl std::error::Error for AirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AirError::Io(e) => Some(e),
            AirError::Loss(_) => None,
        }
    }
}

/// The air.
#[derive(Debug)]
pub struct Air;

impl Air {
    /// Binds `config.bind` and runs the air on its own thread until the handle is dropped.
    pub fn start(config: AirConfig) -> Result<AirHandle, AirError> {
        if !(0.0..=1.0).contains(&config.loss) {
            return Err(AirError::Loss(config.loss));
        }
        let socket = UdpSocket::bind(config.bind).map_err(AirError::Io)?;
        let addr = socket.local_addr().map_err(AirError::Io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(AirStats::default()));
        let mut state = AirState {
            socket,
            epoch: Instant::now(),
            rng: SplitMix64(config.seed),
            loss: config.loss,
            radios: HashMap::new(),
            txs: Vec::new(),
            next_id: 0,
            stats: Arc::clone(&stats),
        };
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("lora-air".into())
            .spawn(move || state.run(&thread_stop))
            .map_err(AirError::Io)?;
        Ok(AirHandle {
            addr,
            stats,
            stop,
            thread: Some(thread),
        })
    }
}

/// A running air; stops (and joins its thread) when dropped.
#[derive(Debug)]
pub struct AirHandle {
    addr: SocketAddr,
    stats: Arc<Mutex<AirStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AirHandle {
    /// The address radios connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the air did so far.
    pub fn stats(&self) -> AirStats {
        match self.stats.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Stops the air and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AirHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A small, seeded generator (SplitMix64, Steele, Lea & Flood 2014): reproducible losses
/// without a dependency.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Channel {
    freq_hz: u32,
    sf: u8,
}

#[derive(Debug)]
struct Tx {
    from: SocketAddr,
    channel: Channel,
    start: u64,
    end: u64,
    bytes: Vec<u8>,
    /// Not yet delivered (its end is in the future).
    pending: bool,
}

impl Tx {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

struct AirState {
    socket: UdpSocket,
    epoch: Instant,
    rng: SplitMix64,
    loss: f64,
    /// Registered radios and the channel each listens on.
    radios: HashMap<SocketAddr, Channel>,
    /// Pending transmissions and the finished ones that may still overlap a pending one.
    txs: Vec<Tx>,
    next_id: u64,
    stats: Arc<Mutex<AirStats>>,
}

impl AirState {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn count(&self, f: impl FnOnce(&mut AirStats)) {
        match self.stats.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        while !stop.load(Ordering::Relaxed) {
            let now = self.now_us();
            self.deliver_due(now);
            let wait = self
                .txs
                .iter()
                .filter(|t| t.pending)
                .map(|t| t.end.saturating_sub(now))
                .min()
                .map_or(IDLE_POLL, |us| Duration::from_micros(us).min(IDLE_POLL))
                .max(Duration::from_micros(50));
            if self.socket.set_read_timeout(Some(wait)).is_err() {
                // Cannot happen with a non-zero duration; back off rather than spin.
                std::thread::sleep(wait);
                continue;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.on_datagram(&buf[..n], from),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(_) => std::thread::sleep(IDLE_POLL),
            }
        }
    }

    fn on_datagram(&mut self, d: &[u8], from: SocketAddr) {
        let now = self.now_us();
        match (d.first(), d.get(1)) {
            (Some(&VERSION), Some(&T_REGISTER)) if d.len() == 7 => {
                let channel = Channel {
                    freq_hz: be_u32(&d[2..6]),
                    sf: d[6],
                };
                self.radios.insert(from, channel);
                let mut out = [0u8; 10];
                out[0] = VERSION;
                out[1] = T_WELCOME;
                out[2..10].copy_from_slice(&self.now_us().to_be_bytes());
                let _ = self.socket.send_to(&out, from);
            }
            (Some(&VERSION), Some(&T_TRANSMIT))
                if d.len() >= TRANSMIT_HEADER && d.len() - TRANSMIT_HEADER <= MAX_FRAME =>
            {
                let start = be_u64(&d[2..10]).max(now);
                let airtime = u64::from(be_u32(&d[10..14]));
                let channel = Channel {
                    freq_hz: be_u32(&d[14..18]),
                    sf: d[18],
                };
                self.next_id += 1;
                self.txs.push(Tx {
                    from,
                    channel,
                    start,
                    end: start.saturating_add(airtime),
                    bytes: d[TRANSMIT_HEADER..].to_vec(),
                    pending: true,
                });
                self.count(|s| s.transmissions += 1);
            }
            (Some(&VERSION), Some(&T_LEAVE)) if d.len() == 2 => {
                self.radios.remove(&from);
            }
            _ => self.count(|s| s.malformed += 1),
        }
    }

    /// Delivers (or drops) every pending transmission that has ended by `now`, earliest
    /// first, then forgets the finished ones no pending transmission can overlap.
    fn deliver_due(&mut self, now: u64) {
        loop {
            let due = self
                .txs
                .iter()
                .enumerate()
                .filter(|(_, t)| t.pending && t.end <= now)
                .min_by_key(|(_, t)| t.end)
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            self.txs[i].pending = false;
            self.deliver(i, now);
        }
        // A future transmission starts at or after `now`; a finished one ended at or
        // before it. So only pending ones can be overlapped by what comes next, and a
        // finished one matters only while it overlaps a pending one.
        let earliest_pending = self
            .txs
            .iter()
            .filter(|t| t.pending)
            .map(|t| t.start)
            .min()
            .unwrap_or(u64::MAX);
        self.txs.retain(|t| t.pending || t.end > earliest_pending);
    }

    fn deliver(&mut self, i: usize, now: u64) {
        let tx = &self.txs[i];
        let (start, end, channel, from) = (tx.start, tx.end, tx.channel, tx.from);
        let collided = self
            .txs
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.channel == channel && o.overlaps(start, end));
        let mut receivers: Vec<SocketAddr> = self
            .radios
            .iter()
            .filter(|(addr, c)| **addr != from && **c == channel)
            .map(|(addr, _)| *addr)
            .collect();
        // A stable order, so the seeded losses do not depend on the hash map's order.
        receivers.sort();
        let (base_rssi, base_snr) = signal_of(from);
        for rx in receivers {
            let transmitting = self
                .txs
                .iter()
                .any(|o| o.from == rx && o.overlaps(start, end));
            if transmitting {
                self.count(|s| s.deaf += 1);
                continue;
            }
            if collided {
                self.count(|s| s.collided += 1);
                continue;
            }
            if self.rng.next_f64() < self.loss {
                self.count(|s| s.lost += 1);
                continue;
            }
            let jitter = (self.rng.next_u64() % 17) as i16 - 8; // quarter dB, ±2 dB
            let rssi = base_rssi + jitter / 4;
            let snr_q = base_snr * 4 + jitter;
            let tx = &self.txs[i];
            let mut out = Vec::with_capacity(DELIVER_HEADER + tx.bytes.len());
            out.extend_from_slice(&[VERSION, T_DELIVER]);
            out.extend_from_slice(&now.to_be_bytes());
            out.extend_from_slice(&end.to_be_bytes());
            out.extend_from_slice(&channel.freq_hz.to_be_bytes());
            out.push(channel.sf);
            out.extend_from_slice(&rssi.to_be_bytes());
            out.extend_from_slice(&(snr_q * 25).to_be_bytes());
            out.extend_from_slice(&tx.bytes);
            if self.socket.send_to(&out, rx).is_ok() {
                self.count(|s| s.delivered += 1);
            } else {
                self.count(|s| s.lost += 1);
            }
        }
    }
}

/// The fixed signal of a transmitter: RSSI from -60 to -110 dBm picked by its address,
/// SNR (whole dB) following it (about 10 dB at -60 dBm down to -7 dB at -110 dBm).
fn signal_of(from: SocketAddr) -> (i16, i16) {
    // FNV-1a over the address text: stable across runs, no hasher state.
    let mut h: u32 = 0x811C_9DC5;
    for b in from.to_string().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let rssi = -60 - (h % 51) as i16;
    let snr = ((rssi + 90) / 3).clamp(-7, 10);
    (rssi, snr)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

/// One simulated radio: registered with an air, listening on one channel.
#[derive(Debug)]
pub struct AirClient {
    socket: UdpSocket,
    air: SocketAddr,
    channel: Channel,
    epoch: Instant,
    /// The air's time minus ours, in µs (negative when the air started after us).
    offset: AtomicI64,
}

impl AirClient {
    /// Binds a loopback UDP socket, registers with the air at `air` to listen on
    /// `freq_hz`/`sf`, and learns the air's clock. Fails when the air does not answer.
    pub fn connect(air: SocketAddr, freq_hz: u32, sf: u8) -> io::Result<AirClient> {
        let bind: SocketAddr = if air.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        let client = AirClient {
            socket,
            air,
            channel: Channel { freq_hz, sf },
            epoch: Instant::now(),
            offset: AtomicI64::new(0),
        };
        client.register()?;
        Ok(client)
    }

    /// Registers (again) on the current channel and waits for the welcome.
    fn register(&self) -> io::Result<()> {
        let mut req = [0u8; 7];
        req[0] = VERSION;
        req[1] = T_REGISTER;
        req[2..6].copy_from_slice(&self.channel.freq_hz.to_be_bytes());
        req[6] = self.channel.sf;
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..WELCOME_TRIES {
            let sent_at = self.local_us();
            self.socket.send_to(&req, self.air)?;
            let deadline = Instant::now() + WELCOME_WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                let n = match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.air => n,
                    Ok(_) => continue,
                    Err(e) if is_timeout(&e) => break,
                    Err(e) => return Err(e),
                };
                let d = &buf[..n];
                if n == 10 && d[0] == VERSION && d[1] == T_WELCOME {
                    let air_now = to_i64(be_u64(&d[2..10]));
                    let received_at = to_i64(self.local_us());
                    // The air read its clock about halfway through the round trip.
                    let mid = to_i64(sent_at) + (received_at - to_i64(sent_at)) / 2;
                    self.offset.store(air_now - mid, Ordering::Relaxed);
                    return Ok(());
                }
                // A delivery that raced the welcome: dropped (we were not listening yet).
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the LoRa air at {} did not answer; start it (gatehouse lora air --listen {})",
                self.air, self.air
            ),
        ))
    }

    /// Listens on another channel from now on.
    pub fn set_channel(&mut self, freq_hz: u32, sf: u8) -> io::Result<()> {
        self.channel = Channel { freq_hz, sf };
        self.register()
    }

    fn local_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The air's time now, µs.
    pub fn now_us(&self) -> u64 {
        let t = to_i64(self.local_us()).saturating_add(self.offset.load(Ordering::Relaxed));
        u64::try_from(t.max(0)).unwrap_or(0)
    }

    /// The socket address this radio has on loopback.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Transmits `bytes` now on the channel this radio listens on; returns the start time
    /// asked for.
    pub fn send(&self, bytes: &[u8], airtime_us: u32) -> io::Result<u64> {
        let now = self.now_us();
        self.send_at(
            now,
            self.channel.freq_hz,
            self.channel.sf,
            bytes,
            airtime_us,
        )?;
        Ok(now)
    }

    /// Transmits `bytes` at air time `start_us` (now if that has passed) on `freq_hz`/`sf`.
    pub fn send_at(
        &self,
        start_us: u64,
        freq_hz: u32,
        sf: u8,
        bytes: &[u8],
        airtime_us: u32,
    ) -> io::Result<()> {
        if bytes.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {} bytes is longer than {MAX_FRAME}",
                    bytes.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(TRANSMIT_HEADER + bytes.len());
        out.extend_from_slice(&[VERSION, T_TRANSMIT]);
        out.extend_from_slice(&start_us.to_be_bytes());
        out.extend_from_slice(&airtime_us.to_be_bytes());
        out.extend_from_slice(&freq_hz.to_be_bytes());
        out.push(sf);
        out.extend_from_slice(bytes);
        self.socket.send_to(&out, self.air)?;
        Ok(())
    }

    /// Waits up to `timeout` for a frame; `Ok(None)` when none came.
    /// Safe to call from one thread while another transmits.
    pub fn recv_timeout(&self, timeout: Duration) -> io::Result<Option<RxPacket>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            if from != self.air {
                continue;
            }
            if let Some(p) = self.parse_delivery(&buf[..n]) {
                return Ok(Some(p));
            }
        }
    }

    fn parse_delivery(&self, d: &[u8]) -> Option<RxPacket> {
        if d.len() < DELIVER_HEADER || d[0] != VERSION || d[1] != T_DELIVER {
            return None;
        }
        let air_now = to_i64(be_u64(&d[2..10]));
        // The datagram left the air at `air_now`; it arrived a little later here, so this
        // bound never overestimates the offset.
        self.offset
            .fetch_max(air_now - to_i64(self.local_us()), Ordering::Relaxed);
        Some(RxPacket {
            end_us: be_u64(&d[10..18]),
            freq_hz: be_u32(&d[18..22]),
            sf: d[22],
            rssi: be_i16(&d[23..25]),
            snr: f32::from(be_i16(&d[25..27])) / 100.0,
            bytes: d[DELIVER_HEADER..].to_vec(),
        })
    }
}

impl Drop for AirClient {
    fn drop(&mut self) {
        let _ = self.socket.send_to(&[VERSION, T_LEAVE], self.air);
    }
}

/// Microsecond clocks fit i64 for 292 000 years.
fn to_i64(us: u64) -> i64 {
    i64::try_from(us).unwrap_or(i64::MAX)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u32 = 868_100_000;

    fn air(loss: f64) -> AirHandle {
        Air::start(AirConfig {
            loss,
            seed: 7,
            ..AirConfig::default()
        })
        .unwrap()
    }

    /// Waits until the air counted `n` outcomes for receptions (delivered + collided +
    /// lost + deaf), so assertions see settled numbers without timing thresholds.
    fn settle(air: &AirHandle, n: u64) -> AirStats {
        loop {
            let s = air.stats();
            if s.delivered + s.collided + s.lost + s.deaf >= n {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn delivers_to_others_on_the_channel_after_the_airtime() {
        let air = air(0.0);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let b = AirClient::connect(air.addr(), F, 7).unwrap();
        let other_sf = AirClient::connect(air.addr(), F, 9).unwrap();
        let start = a.send(b"hello", 20_000).unwrap();
        let p = b.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(p.bytes, b"hello");
        assert_eq!((p.freq_hz, p.sf), (F, 7));
        assert!(p.end_us >= start + 20_000, "{} {start}", p.end_us);
        assert!(b.now_us() >= p.end_us);
        // -60 to -110 dBm by the sender's address, then ±2 dB of jitter.
        assert!((-112..=-58).contains(&p.rssi), "{}", p.rssi);
        assert!((-10.0..=13.0).contains(&p.snr), "{}", p.snr);
        // The sender does not hear itself; the other SF hears nothing. One more frame to
        // the SF9 radio shows it is alive and got nothing before.
        a.send_at(0, F, 9, b"nine", 1_000).unwrap();
        let p9 = other_sf
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(p9.bytes, b"nine");
        let s = settle(&air, 2);
        assert_eq!(s.transmissions, 2);
        assert_eq!(s.delivered, 2);
    }

    #[test]
    fn overlapping_transmissions_collide() {
        let air = air(0.0);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let b = AirClient::connect(air.addr(), F, 7).unwrap();
        let c = AirClient::connect(air.addr(), F, 7).unwrap();
        let t = a.now_us() + 100_000;
        a.send_at(t, F, 7, b"one", 50_000).unwrap();
        b.send_at(t + 25_000, F, 7, b"two", 50_000).unwrap();
        // A later, separate frame: the first thing c receives.
        a.send_at(t + 200_000, F, 7, b"three", 10_000).unwrap();
        let p = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(p.bytes, b"three");
        let s = settle(&air, 4);
        // c lost both colliding frames; a and b were each deaf to the other's (they were
        // transmitting), b heard "three".
        assert_eq!(s.collided, 2, "{s:?}");
        assert_eq!(s.deaf, 2, "{s:?}");
        assert_eq!(s.delivered, 2, "{s:?}");
    }

    #[test]
    fn same_time_other_channel_does_not_collide() {
        let air = air(0.0);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let b = AirClient::connect(air.addr(), 868_300_000, 7).unwrap();
        let c = AirClient::connect(air.addr(), F, 7).unwrap();
        let t = a.now_us() + 50_000;
        a.send_at(t, F, 7, b"mine", 50_000).unwrap();
        b.send_at(t, 868_300_000, 7, b"elsewhere", 50_000).unwrap();
        let p = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(p.bytes, b"mine");
    }

    #[test]
    fn transmitter_cannot_receive() {
        let air = air(0.0);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let b = AirClient::connect(air.addr(), F, 7).unwrap();
        let t = a.now_us() + 50_000;
        // a transmits on another channel while b's frame is on a's channel.
        a.send_at(t, 869_525_000, 7, b"busy", 100_000).unwrap();
        b.send_at(t + 20_000, F, 7, b"unheard", 20_000).unwrap();
        b.send_at(t + 300_000, F, 7, b"heard", 20_000).unwrap();
        let p = a.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(p.bytes, b"heard");
        let s = settle(&air, 2);
        assert_eq!((s.deaf, s.delivered), (1, 1), "{s:?}");
    }

    #[test]
    fn loss_fraction_is_roughly_honoured() {
        let air = air(0.1);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let _b = AirClient::connect(air.addr(), F, 7).unwrap();
        // 2000 frames of 1 ms, back to back, never overlapping: in batches of 100 that
        // start well after the air has read them (so none is pushed later into the next
        // one), each batch sent once the air has taken the one before (no socket buffer
        // overflows).
        let mut next = 0u64;
        for batch in 0..20u64 {
            next = next.max(a.now_us() + 200_000);
            for i in 0..100u64 {
                a.send_at(next, F, 7, &(batch * 100 + i).to_be_bytes(), 1_000)
                    .unwrap();
                next += 1_000;
            }
            while air.stats().transmissions < (batch + 1) * 100 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let s = settle(&air, 2000);
        assert_eq!(s.collided + s.deaf, 0, "{s:?}");
        assert!((100..=300).contains(&s.lost), "{s:?}");
        assert_eq!(s.delivered + s.lost, 2000);
    }

    #[test]
    fn clocks_agree_and_bad_input_is_counted() {
        let air = air(0.0);
        let a = AirClient::connect(air.addr(), F, 7).unwrap();
        let b = AirClient::connect(air.addr(), F, 7).unwrap();
        let (ta, tb) = (a.now_us(), b.now_us());
        // Same clock within a loopback round trip (well under a second).
        assert!(ta.abs_diff(tb) < 1_000_000, "{ta} {tb}");
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&[9, 9, 9], air.addr()).unwrap();
        s.send_to(&[VERSION, T_TRANSMIT, 1], air.addr()).unwrap();
        while air.stats().malformed < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Air::start(AirConfig {
            loss: 1.5,
            ..AirConfig::default()
        })
        .is_err());
        assert!(a.send(&[0u8; 256], 1_000).is_err());
    }
}
