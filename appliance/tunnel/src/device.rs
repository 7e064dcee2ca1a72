//! The WireGuard device: a set of peers, each a boringtun [`Tunn`], joined by allowed-IPs
//! routing, the role filter and counters. No I/O happens here: datagrams and packets come
//! in as byte slices, and what must be written goes out through [`PacketIo`]. The data
//! planes (`dataplane.rs`) own the sockets, the TUN device or the smoltcp stack.
//!
//! Promises:
//! - an incoming datagram is either authenticated by the peer's session or dropped and
//!   counted; nothing it contains can panic the device;
//! - a decrypted packet reaches the tunnel side only if its source address is one of the
//!   sending peer's allowed IPs (cryptokey routing, WireGuard paper section 2) and the
//!   peer's role allows its destination ([`Policy`]);
//! - a disabled peer is absent; an expired peer's packets are dropped both ways;
//! - a peer's endpoint follows the address of its last authenticated datagram (roaming).

use crate::allowed_ips::AllowedIps;
use crate::keys::Key;
use crate::policy::{Denial, Policy};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use gatehouse_config::{Cidr, Role};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

/// Handshake initiations answered per second before the device asks for cookies (the
/// WireGuard paper, section 5.3, "under load"). boringtun's device uses 100; ours counts
/// each handshake message twice (once at the device, once inside its `Tunn`), hence 200.
const HANDSHAKE_RATE_LIMIT: u64 = 200;

/// Large enough for any datagram or packet the device is handed, plus WireGuard's
/// 32 bytes of overhead, and at least a handshake initiation (148 bytes).
pub const BUFFER_SIZE: usize = 65_536 + 64;

/// The wall clock, for expiry and last-handshake times. Tests move a fake one.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Where the device writes: datagrams to the network, decrypted packets to the tunnel side.
pub trait PacketIo {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]);
    fn deliver(&mut self, packet: &[u8]);
}

/// How a peer is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub allowed_ips: Vec<Cidr>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 or None: off.
    pub persistent_keepalive: Option<u16>,
    pub name: Option<String>,
    pub role: Role,
    pub expires: Option<SystemTime>,
}

impl PeerConfig {
    pub fn new(public_key: Key) -> PeerConfig {
        PeerConfig {
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            name: None,
            role: Role::Installer,
            expires: None,
        }
    }

    fn keepalive(&self) -> Option<u16> {
        self.persistent_keepalive.filter(|k| *k > 0)
    }
}

/// Everything dropped, by reason. Read with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    pub malformed: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub auth_failed: AtomicU64,
    pub replayed: AtomicU64,
    pub spoofed_source: AtomicU64,
    pub role_denied: AtomicU64,
    pub inactive_peer: AtomicU64,
    pub no_route: AtomicU64,
    pub no_endpoint: AtomicU64,
    pub no_private_key: AtomicU64,
    pub cookie_replies: AtomicU64,
    /// Handshake initiations the device could not answer (bad MAC, unknown or expired
    /// peer, undecryptable, no key): what the tunnel's events count. Each is also one of
    /// the drops above, so it is not in [`Counters::snapshot`].
    pub handshake_failures: AtomicU64,
}

macro_rules! counter_names {
    ($($f:ident),*) => {
        impl Counters {
            /// (name, value) of every counter, for logs and the status API.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($f), self.$f.load(Ordering::Relaxed))),*]
            }
        }
    };
}
counter_names!(
    malformed,
    unknown_peer,
    auth_failed,
    replayed,
    spoofed_source,
    role_denied,
    inactive_peer,
    no_route,
    no_endpoint,
    no_private_key,
    cookie_replies
);

/// Logs drops at a bounded rate: at most one line per `every`, naming what the counters
/// gained since the last line, so a flood of garbage costs one log line, not one per datagram.
pub struct DropLog {
    every: Duration,
    last_at: std::time::Instant,
    last: Vec<(&'static str, u64)>,
}

impl DropLog {
    pub fn new(every: Duration, counters: &Counters) -> DropLog {
        DropLog {
            every,
            last_at: std::time::Instant::now(),
            last: counters.snapshot(),
        }
    }

    /// What changed since the last report, if a report is due and anything changed.
    pub fn due(&mut self, counters: &Counters) -> Option<String> {
        if self.last_at.elapsed() < self.every {
            return None;
        }
        self.last_at = std::time::Instant::now();
        let now = counters.snapshot();
        let gained: Vec<String> = now
            .iter()
            .zip(&self.last)
            .filter(|((_, n), (_, o))| n > o)
            .map(|((name, n), (_, o))| format!("{name}={}", n - o))
            .collect();
        self.last = now;
        (!gained.is_empty()).then(|| gained.join(" "))
    }

    /// Logs what [`DropLog::due`] returns.
    pub fn poll(&mut self, counters: &Counters) {
        if let Some(gained) = self.due(counters) {
            tracing::warn!(
                dropped = %gained,
                "dropped datagrams/packets in the last {} s",
                self.every.as_secs()
            );
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One remote peer.
pub struct Peer {
    config: Mutex<PeerConfig>,
    index: u32,
    tunn: Mutex<Tunn>,
    endpoint: RwLock<Option<SocketAddr>>,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
}

/// A peer as `wg show` and `peer list` see it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub config: PeerConfig,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Peer {
    fn config(&self) -> MutexGuard<'_, PeerConfig> {
        lock(&self.config)
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_endpoint(&self, addr: SocketAddr) {
        if self.endpoint() != Some(addr) {
            *self.endpoint.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        }
    }

    fn is_active(&self, now: SystemTime) -> bool {
        self.config().expires.is_none_or(|e| now < e)
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Identity {
    key: Key,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

#[derive(Default)]
struct State {
    identity: Option<Identity>,
    listen_port: u16,
    fwmark: u32,
    peers: HashMap<Key, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    routes: AllowedIps<Arc<Peer>>,
    next_index: u32,
}

impl State {
    fn alloc_index(&mut self) -> u32 {
        // Peer indices are 24 bits: boringtun puts the session number in the low 8.
        loop {
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if !self.by_index.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    fn new_tunn(&self, config: &PeerConfig, index: u32) -> Tunn {
        let (secret, limiter) = match &self.identity {
            Some(id) => (id.secret.clone(), Some(id.rate_limiter.clone())),
            // Without our key no handshake can complete; datagrams are dropped before
            // they reach this Tunn (counted as no_private_key).
            None => (x25519::StaticSecret::from([0u8; 32]), None),
        };
        Tunn::new(
            secret,
            config.public_key.as_public(),
            config.preshared_key.map(|k| k.0),
            config.keepalive(),
            index,
            limiter,
        )
    }

    fn rebuild_routes(&mut self) {
        self.routes.clear();
        for peer in self.peers.values() {
            for cidr in &peer.config().allowed_ips {
                self.routes.insert(*cidr, peer.clone());
            }
        }
    }
}

/// The device. Shared between the data-plane threads, the timer and the UAPI server.
pub struct Device {
    state: RwLock<State>,
    policy: RwLock<Option<Arc<Policy>>>,
    clock: Arc<dyn Clock>,
    pub counters: Counters,
    last_limiter_reset: Mutex<Option<std::time::Instant>>,
}

impl Device {
    /// A device with no key and no peers. `policy`: the role filter (None: a plain
    /// WireGuard device that delivers whatever its peers' allowed IPs permit).
    pub fn new(clock: Arc<dyn Clock>, policy: Option<Policy>) -> Device {
        let state = State {
            next_index: rand_index(),
            ..State::default()
        };
        Device {
            state: RwLock::new(state),
            policy: RwLock::new(policy.map(Arc::new)),
            clock,
            counters: Counters::default(),
            last_limiter_reset: Mutex::new(None),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_policy(&self, policy: Option<Policy>) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy.map(Arc::new);
    }

    pub fn private_key(&self) -> Option<Key> {
        self.read().identity.as_ref().map(|i| i.key)
    }

    pub fn public_key(&self) -> Option<Key> {
        self.read()
            .identity
            .as_ref()
            .map(|i| Key(i.public.to_bytes()))
    }

    /// Sets (or with None removes) the device's private key. Sessions restart; a peer
    /// whose public key equals ours is removed, as WireGuard does.
    pub fn set_private_key(&self, key: Option<Key>) {
        let mut st = self.write();
        if st.identity.as_ref().map(|i| i.key) == key {
            return;
        }
        st.identity = key.filter(|k| !k.is_zero()).map(|mut key| {
            // Curve25519 clamping, so `wg show` reports what is really used (as wireguard-go).
            key.0[0] &= 248;
            key.0[31] = (key.0[31] & 127) | 64;
            let secret = key.secret();
            let public = x25519::PublicKey::from(&secret);
            Identity {
                key,
                rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
                secret,
                public,
            }
        });
        if let Some(own) = st.identity.as_ref().map(|i| Key(i.public.to_bytes())) {
            if let Some(p) = st.peers.remove(&own) {
                st.by_index.remove(&p.index);
                st.rebuild_routes();
            }
        }
        let peers: Vec<Arc<Peer>> = st.peers.values().cloned().collect();
        for p in peers {
            let fresh = st.new_tunn(&p.config(), p.index);
            *lock(&p.tunn) = fresh;
        }
    }

    pub fn listen_port(&self) -> u16 {
        self.read().listen_port
    }

    /// Records the port the data plane is bound to (binding is the data plane's job).
    pub fn set_listen_port(&self, port: u16) {
        self.write().listen_port = port;
    }

    pub fn fwmark(&self) -> u32 {
        self.read().fwmark
    }

    pub fn set_fwmark(&self, mark: u32) {
        self.write().fwmark = mark;
    }

    /// Adds a peer, or updates it in place. The session survives unless the preshared key
    /// or keepalive changed (boringtun takes those only at creation).
    pub fn upsert_peer(&self, config: PeerConfig) {
        let mut st = self.write();
        if st
            .identity
            .as_ref()
            .is_some_and(|i| i.public.to_bytes() == config.public_key.0)
        {
            return;
        }
        Self::upsert_locked(&mut st, config);
        st.rebuild_routes();
    }

    fn upsert_locked(st: &mut State, config: PeerConfig) {
        if let Some(peer) = st.peers.get(&config.public_key).cloned() {
            let rebuild = {
                let old = peer.config();
                old.preshared_key != config.preshared_key || old.keepalive() != config.keepalive()
            };
            if rebuild {
                let fresh = st.new_tunn(&config, peer.index);
                *lock(&peer.tunn) = fresh;
            }
            if let Some(ep) = config.endpoint {
                peer.set_endpoint(ep);
            }
            *peer.config() = config;
            return;
        }
        let index = st.alloc_index();
        let peer = Arc::new(Peer {
            tunn: Mutex::new(st.new_tunn(&config, index)),
            endpoint: RwLock::new(config.endpoint),
            config: Mutex::new(config.clone()),
            index,
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
        });
        st.by_index.insert(index, peer.clone());
        st.peers.insert(config.public_key, peer);
    }

    /// Removes a peer; its sessions end at once.
    pub fn remove_peer(&self, key: &Key) -> bool {
        let mut st = self.write();
        let Some(peer) = st.peers.remove(key) else {
            return false;
        };
        st.by_index.remove(&peer.index);
        st.rebuild_routes();
        true
    }

    /// Makes the peer set exactly `configs`: peers not listed are removed, listed ones
    /// added or updated in place (keeping their sessions). Used by reloads.
    pub fn replace_peers(&self, configs: Vec<PeerConfig>) {
        let mut st = self.write();
        let own = st.identity.as_ref().map(|i| Key(i.public.to_bytes()));
        let keep: std::collections::HashSet<Key> = configs.iter().map(|c| c.public_key).collect();
        let gone: Vec<Key> = st
            .peers
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(p) = st.peers.remove(&k) {
                st.by_index.remove(&p.index);
            }
        }
        for c in configs {
            if Some(c.public_key) != own {
                Self::upsert_locked(&mut st, c);
            }
        }
        st.rebuild_routes();
    }

    /// Changes one peer's configuration with `f`, if the peer exists.
    pub fn update_peer(&self, key: &Key, f: impl FnOnce(&mut PeerConfig)) -> bool {
        let Some(mut config) = self.read().peers.get(key).map(|p| p.config().clone()) else {
            return false;
        };
        f(&mut config);
        self.upsert_peer(config);
        true
    }

    /// The configuration of one peer.
    pub fn peer_config(&self, key: &Key) -> Option<PeerConfig> {
        self.read().peers.get(key).map(|p| p.config().clone())
    }

    pub fn peer_keys(&self) -> Vec<Key> {
        self.read().peers.keys().copied().collect()
    }

    /// Every peer with its live state, sorted by public key.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = self.clock.now();
        let st = self.read();
        let mut out: Vec<PeerStatus> = st
            .peers
            .values()
            .map(|p| {
                let since = lock(&p.tunn).stats().0;
                PeerStatus {
                    config: p.config().clone(),
                    endpoint: p.endpoint(),
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                    rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by_key(|p| p.config.public_key);
        out
    }

    /// Handles one UDP datagram received from `from`.
    pub fn handle_datagram(
        &self,
        from: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
        io: &mut dyn PacketIo,
    ) {
        // A handshake initiation (WireGuard paper, section 5.4.2: type 1, 148 bytes).
        let init = datagram.len() == 148 && datagram.first() == Some(&1);
        let failed = |init: bool| {
            if init {
                bump(&self.counters.handshake_failures);
            }
        };
        let st = self.read();
        let Some(id) = &st.identity else {
            bump(&self.counters.no_private_key);
            failed(init);
            return;
        };
        let parsed = match id
            .rate_limiter
            .verify_packet(Some(from.ip()), datagram, buf)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                bump(&self.counters.cookie_replies);
                io.send(from, cookie);
                return;
            }
            Err(_) => {
                bump(&self.counters.malformed);
                failed(init);
                return;
            }
        };
        let peer = match &parsed {
            Packet::HandshakeInit(p) => parse_handshake_anon(&id.secret, &id.public, p)
                .ok()
                .and_then(|hh| st.peers.get(&Key(hh.peer_static_public))),
            Packet::HandshakeResponse(p) => st.by_index.get(&(p.receiver_idx >> 8)),
            Packet::PacketCookieReply(p) => st.by_index.get(&(p.receiver_idx >> 8)),
            Packet::PacketData(p) => st.by_index.get(&(p.receiver_idx >> 8)),
        };
        let Some(peer) = peer else {
            bump(&self.counters.unknown_peer);
            failed(init);
            return;
        };
        if !peer.is_active(self.clock.now()) {
            bump(&self.counters.inactive_peer);
            failed(init);
            return;
        }
        let mut tunn = lock(&peer.tunn);
        let delivered = match tunn.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::Done => None,
            TunnResult::Err(e) => {
                self.count_error(&e);
                failed(init);
                return;
            }
            TunnResult::WriteToNetwork(reply) => {
                io.send(from, reply);
                // Packets queued while the handshake was pending go out now.
                while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], buf) {
                    peer.tx_bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
                    io.send(from, p);
                }
                None
            }
            TunnResult::WriteToTunnelV4(p, src) => Some((p, IpAddr::V4(src))),
            TunnResult::WriteToTunnelV6(p, src) => Some((p, IpAddr::V6(src))),
        };
        drop(tunn);
        peer.rx_bytes
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        peer.set_endpoint(from);
        let Some((packet, src)) = delivered else {
            return;
        };
        if !st.routes.find(src).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            bump(&self.counters.spoofed_source);
            return;
        }
        if let Some(policy) = self.policy() {
            let role = peer.config().role;
            if let Err(d) = policy.check(role, packet) {
                match d {
                    Denial::Malformed => bump(&self.counters.malformed),
                    _ => bump(&self.counters.role_denied),
                }
                return;
            }
        }
        io.deliver(packet);
    }

    fn count_error(&self, e: &WireGuardError) {
        let c = &self.counters;
        match e {
            WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => bump(&c.replayed),
            WireGuardError::InvalidMac
            | WireGuardError::InvalidAeadTag
            | WireGuardError::WrongKey
            | WireGuardError::WrongTai64nTimestamp
            | WireGuardError::InvalidTai64nTimestamp
            | WireGuardError::NoCurrentSession
            | WireGuardError::WrongIndex
            | WireGuardError::UnexpectedPacket => bump(&c.auth_failed),
            _ => bump(&c.malformed),
        }
    }

    /// Handles one IP packet from the tunnel side, sending it to the peer that owns its
    /// destination address.
    pub fn handle_packet(&self, packet: &[u8], buf: &mut [u8], io: &mut dyn PacketIo) {
        let Some(dst) = Tunn::dst_address(packet) else {
            bump(&self.counters.malformed);
            return;
        };
        let st = self.read();
        let Some(peer) = st.routes.find(dst) else {
            bump(&self.counters.no_route);
            return;
        };
        if !peer.is_active(self.clock.now()) {
            bump(&self.counters.inactive_peer);
            return;
        }
        let Some(endpoint) = peer.endpoint() else {
            bump(&self.counters.no_endpoint);
            return;
        };
        let mut tunn = lock(&peer.tunn);
        match tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(d) => {
                peer.tx_bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                io.send(endpoint, d);
            }
            TunnResult::Err(e) => self.count_error(&e),
            _ => {}
        }
    }

    /// Drives every peer's timers (handshake retries, rekeys, keepalives, expiry of old
    /// sessions). Call about every 250 ms; boringtun's timers have one-second resolution.
    pub fn tick(&self, buf: &mut [u8], io: &mut dyn PacketIo) {
        let now = self.clock.now();
        let st = self.read();
        if let Some(id) = &st.identity {
            let mut last = lock(&self.last_limiter_reset);
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                id.rate_limiter.reset_count();
                *last = Some(std::time::Instant::now());
            }
        }
        for peer in st.peers.values() {
            if !peer.is_active(now) {
                continue;
            }
            let mut tunn = lock(&peer.tunn);
            if let TunnResult::WriteToNetwork(d) = tunn.update_timers(buf) {
                if let Some(ep) = peer.endpoint() {
                    peer.tx_bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    io.send(ep, d);
                } else {
                    bump(&self.counters.no_endpoint);
                }
            }
        }
    }
}

fn rand_index() -> u32 {
    rand_core::RngCore::next_u32(&mut rand_core::OsRng) & 0x00ff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    #[test]
    fn handshake_and_data_both_ways() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert_eq!(
            g.delivered.pop_front().unwrap(),
            ping,
            "queued packet arrives after handshake"
        );
        let reply = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &[0, 0, 0, 0]);
        p.gw.handle_packet(&reply, &mut buf, &mut g);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert_eq!(c.delivered.pop_front().unwrap(), reply);
        let st = &p.gw.peers()[0];
        assert_eq!(st.endpoint, Some(p.client_addr));
        assert!(st.last_handshake.is_some());
        assert!(st.rx_bytes > 0 && st.tx_bytes > 0);
    }

    #[test]
    fn roaming_follows_authenticated_source() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        let roamed: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, roamed);
        assert_eq!(p.gw.peers()[0].endpoint, Some(roamed));
        // A forged datagram from elsewhere does not move the endpoint.
        let forged: SocketAddr = "203.0.113.66:1".parse().unwrap();
        let mut junk = vec![4u8, 0, 0, 0];
        junk.extend_from_slice(&[0u8; 60]);
        p.gw.handle_datagram(forged, &junk, &mut buf, &mut g);
        assert_eq!(p.gw.peers()[0].endpoint, Some(roamed));
    }

    #[test]
    fn spoofed_source_dropped_and_counted() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        // The client claims 10.0.0.9, which is not among its allowed IPs at the gateway.
        let spoof = ipv4([10, 0, 0, 9], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&spoof, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert!(g.delivered.is_empty());
        assert_eq!(p.gw.counters.spoofed_source.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn garbage_never_panics_and_is_counted() {
        let p = pair(clock(), None);
        let mut g = Capture::default();
        let mut buf = vec![0u8; BUFFER_SIZE];
        let from = p.client_addr;
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![1],
            vec![1, 0, 0, 0],
            vec![1; 148],
            vec![2; 92],
            vec![3; 64],
            vec![4; 32],
            vec![4, 0, 0, 0, 1, 0, 0, 0],
            vec![9; 1500],
            vec![0xff; 65_535],
        ];
        for d in &cases {
            p.gw.handle_datagram(from, d, &mut buf, &mut g);
        }
        assert!(g.delivered.is_empty() && g.sent.is_empty());
        let dropped: u64 = p.gw.counters.snapshot().iter().map(|(_, v)| v).sum();
        assert_eq!(dropped, cases.len() as u64);
        // Truncations of a real handshake initiation.
        let mut c = Capture::default();
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        let (_, init) = c.sent.pop_front().unwrap();
        for n in 0..init.len() {
            p.gw.handle_datagram(from, &init[..n], &mut buf, &mut g);
        }
        assert!(g.sent.is_empty());
    }

    #[test]
    fn replayed_data_dropped() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        g.delivered.clear();
        p.client.handle_packet(&ping, &mut buf, &mut c);
        let (_, data) = c.sent.pop_front().unwrap();
        p.gw.handle_datagram(p.client_addr, &data, &mut buf, &mut g);
        p.gw.handle_datagram(p.client_addr, &data, &mut buf, &mut g);
        assert_eq!(g.delivered.len(), 1);
        assert_eq!(p.gw.counters.replayed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn removed_peer_cut_off() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert!(p.gw.remove_peer(&p.client_key.public()));
        g.delivered.clear();
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert!(g.delivered.is_empty());
        assert_eq!(p.gw.counters.unknown_peer.load(Ordering::Relaxed), 1);
        let back = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &[0; 4]);
        p.gw.handle_packet(&back, &mut buf, &mut g);
        assert_eq!(p.gw.counters.no_route.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn expired_peer_refused_both_ways() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = Arc::new(FixedClock(Mutex::new(t0)));
        let p = pair(clock.clone(), None);
        p.gw.update_peer(&p.client_key.public(), |c| {
            c.expires = Some(t0 + Duration::from_secs(60))
        });
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert_eq!(g.delivered.len(), 1, "works before expiry");
        *clock.0.lock().unwrap() = t0 + Duration::from_secs(61);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        assert_eq!(g.delivered.len(), 1, "nothing after expiry");
        let back = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &[0; 4]);
        p.gw.handle_packet(&back, &mut buf, &mut g);
        assert!(g.sent.is_empty());
        assert_eq!(p.gw.counters.inactive_peer.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn role_filter_applies_to_decrypted_packets() {
        use gatehouse_config::Config;
        let cfg = Config::parse(
            "[tunnel]\naddress='10.0.0.1/24'\n\
             [[tunnel.service]]\nname='console'\nport=80\ntarget='127.0.0.1:8080'\n\
             [[tunnel.forward]]\nname='nvr'\nport=554\ntarget='192.168.1.20:554'\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let p = pair(clock(), Some(Policy::from_config(&cfg.tunnel)));
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let tcp = |port: u16| {
            let mut t = vec![0x30, 0x39];
            t.extend_from_slice(&port.to_be_bytes());
            t.extend_from_slice(&[0; 16]);
            ipv4([10, 0, 0, 2], [10, 0, 0, 1], 6, &t)
        };
        for port in [80, 554] {
            p.client.handle_packet(&tcp(port), &mut buf, &mut c);
            pump(&p, &mut g, &mut c, p.client_addr);
        }
        assert_eq!(g.delivered.len(), 2, "admin reaches console and forward");
        p.gw.update_peer(&p.client_key.public(), |c| c.role = Role::Installer);
        for port in [80, 554] {
            p.client.handle_packet(&tcp(port), &mut buf, &mut c);
            pump(&p, &mut g, &mut c, p.client_addr);
        }
        assert_eq!(g.delivered.len(), 3, "installer reaches only the console");
        assert_eq!(p.gw.counters.role_denied.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reload_keeps_sessions_of_unchanged_peers() {
        let p = pair(clock(), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        let mut cfg = p.gw.peers()[0].config.clone();
        cfg.name = Some("renamed".into());
        p.gw.replace_peers(vec![cfg]);
        // The data packet goes through without a new handshake.
        p.client.handle_packet(&ping, &mut buf, &mut c);
        assert_eq!(c.sent.len(), 1);
        let (_, d) = c.sent.pop_front().unwrap();
        assert_eq!(d[0], 4, "a data message, not a new handshake");
        p.gw.handle_datagram(p.client_addr, &d, &mut buf, &mut g);
        assert_eq!(g.delivered.len(), 2);
        assert_eq!(p.gw.peers()[0].config.name.as_deref(), Some("renamed"));
    }

    #[test]
    fn drop_log_reports_gains_once_per_interval() {
        let c = Counters::default();
        let mut log = DropLog::new(Duration::ZERO, &c);
        assert_eq!(log.due(&c), None, "nothing dropped, nothing said");
        bump(&c.malformed);
        bump(&c.malformed);
        bump(&c.replayed);
        assert_eq!(log.due(&c).as_deref(), Some("malformed=2 replayed=1"));
        assert_eq!(log.due(&c), None, "only what is new");
        let mut slow = DropLog::new(Duration::from_secs(3600), &c);
        bump(&c.role_denied);
        assert_eq!(slow.due(&c), None, "not before the interval");
    }

    #[test]
    fn key_change_and_own_key_peer() {
        let p = pair(clock(), None);
        // A peer with our own public key is refused.
        p.gw.upsert_peer(PeerConfig::new(p.gw_key.public()));
        assert_eq!(p.gw.peers().len(), 1);
        p.gw.set_private_key(None);
        assert!(p.gw.public_key().is_none());
        let mut g = Capture::default();
        let mut buf = vec![0u8; BUFFER_SIZE];
        p.gw.handle_datagram(p.client_addr, &[1; 148], &mut buf, &mut g);
        assert_eq!(p.gw.counters.no_private_key.load(Ordering::Relaxed), 1);
    }
}
