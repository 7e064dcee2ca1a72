//! boringtun's timers driven through our [`Device`] with a mock clock (the `fake-clock`
//! feature makes boringtun read `mock_instant`'s thread-local clock): rekey, keepalives,
//! handshake retries, session expiry, roaming, peer expiry and allowed-IPs routing.
//!
//! Time moves one second per step and the device's `tick` runs at every step, as the
//! data plane's timer thread does (boringtun's timers have one-second resolution).

use gatehouse_config::Role;
use gatehouse_tunnel::device::{Clock, Device, PeerConfig, BUFFER_SIZE};
use gatehouse_tunnel::testing::{cidr, ipv4, ipv6, pair, pump, Capture, Pair};
use gatehouse_tunnel::Key;
use mock_instant::MockClock;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The wall clock moves with boringtun's mock clock.
struct MockWall;

impl Clock for MockWall {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + MockClock::time()
    }
}

const HANDSHAKE_INIT: u8 = 1;
const DATA: u8 = 4;
/// A data message carrying no packet: 16 bytes of header and a 16-byte tag.
const KEEPALIVE_LEN: usize = 32;

fn setup() -> (Pair, Capture, Capture, Vec<u8>) {
    MockClock::set_time(Duration::from_secs(1000));
    (
        pair(Arc::new(MockWall), None),
        Capture::default(),
        Capture::default(),
        vec![0u8; BUFFER_SIZE],
    )
}

fn secs() -> u64 {
    MockClock::time().as_secs()
}

fn ping() -> Vec<u8> {
    ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0])
}

fn handshake(p: &Pair, g: &mut Capture, c: &mut Capture, buf: &mut [u8]) {
    p.client.handle_packet(&ping(), buf, c);
    pump(p, g, c, p.client_addr);
    assert_eq!(g.delivered.pop_front(), Some(ping()));
}

/// One second passes; both devices' timers run.
fn step(p: &Pair, g: &mut Capture, c: &mut Capture, buf: &mut [u8]) {
    MockClock::advance(Duration::from_secs(1));
    p.gw.tick(buf, g);
    p.client.tick(buf, c);
}

fn kinds(sent: &std::collections::VecDeque<(SocketAddr, Vec<u8>)>) -> Vec<(u8, usize)> {
    sent.iter().map(|(_, d)| (d[0], d.len())).collect()
}

#[test]
fn initiator_rekeys_after_rekey_after_time_without_losing_data() {
    let (p, mut g, mut c, mut buf) = setup();
    handshake(&p, &mut g, &mut c, &mut buf);
    let start = secs();
    let mut rekeys = Vec::new();
    let mut sent = 0;
    for _ in 0..150 {
        step(&p, &mut g, &mut c, &mut buf);
        p.client.handle_packet(&ping(), &mut buf, &mut c);
        sent += 1;
        if kinds(&c.sent).iter().any(|(k, _)| *k == HANDSHAKE_INIT) {
            rekeys.push(secs() - start);
        }
        assert!(
            !kinds(&g.sent).iter().any(|(k, _)| *k == HANDSHAKE_INIT),
            "the responder never initiates a rekey"
        );
        pump(&p, &mut g, &mut c, p.client_addr);
    }
    assert_eq!(rekeys.len(), 1, "one rekey in 150 s, at {rekeys:?}");
    assert!(
        (120..=122).contains(&rekeys[0]),
        "rekey after REKEY_AFTER_TIME (120 s), was at {} s",
        rekeys[0]
    );
    assert_eq!(g.delivered.len(), sent, "every packet crossed the rekey");
    let age = p.gw.peers()[0].last_handshake.unwrap();
    let age = MockWall.now().duration_since(age).unwrap();
    assert!(age <= Duration::from_secs(31), "handshake {age:?} ago");
}

#[test]
fn persistent_keepalive_every_interval_while_idle() {
    let (p, mut g, mut c, mut buf) = setup();
    p.client
        .update_peer(&p.gw_key.public(), |c| c.persistent_keepalive = Some(25));
    handshake(&p, &mut g, &mut c, &mut buf);
    let start = secs();
    let rx_before = p.gw.peers()[0].rx_bytes;
    let mut at = Vec::new();
    for _ in 0..110 {
        step(&p, &mut g, &mut c, &mut buf);
        for (k, len) in kinds(&c.sent) {
            assert_eq!(
                (k, len),
                (DATA, KEEPALIVE_LEN),
                "only keepalives while idle"
            );
            at.push(secs() - start);
        }
        pump(&p, &mut g, &mut c, p.client_addr);
    }
    assert!(at.len() >= 4, "keepalives at {at:?}");
    for w in at.windows(2) {
        assert!((25..=26).contains(&(w[1] - w[0])), "25 s apart: {at:?}");
    }
    assert!(g.delivered.is_empty(), "keepalives carry no packet");
    assert_eq!(
        p.gw.peers()[0].rx_bytes - rx_before,
        (at.len() * KEEPALIVE_LEN) as u64,
        "each keepalive counted as received"
    );
}

#[test]
fn passive_keepalive_answers_one_way_traffic() {
    let (p, mut g, mut c, mut buf) = setup();
    handshake(&p, &mut g, &mut c, &mut buf);
    // The gateway last sent at `start` (its handshake response).
    let start = secs();
    // One more packet a second later (on a mock clock the handshake and the first
    // packet share an instant, which boringtun does not count as "received after sent").
    step(&p, &mut g, &mut c, &mut buf);
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    pump(&p, &mut g, &mut c, p.client_addr);
    let mut gw_keepalives = Vec::new();
    for _ in 0..15 {
        step(&p, &mut g, &mut c, &mut buf);
        for (k, len) in kinds(&g.sent) {
            assert_eq!((k, len), (DATA, KEEPALIVE_LEN));
            gw_keepalives.push(secs() - start);
        }
        pump(&p, &mut g, &mut c, p.client_addr);
    }
    // The gateway received a packet and sent nothing back: KEEPALIVE_TIMEOUT (10 s) after
    // it last sent, it sends one empty packet, once.
    assert_eq!(gw_keepalives.len(), 1, "at {gw_keepalives:?}");
    assert!((10..=11).contains(&gw_keepalives[0]));
}

#[test]
fn handshake_retried_every_rekey_timeout_then_abandoned() {
    let (p, mut g, mut c, mut buf) = setup();
    let start = secs();
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    let mut inits = vec![0];
    c.sent.clear(); // the gateway is unreachable
    for _ in 0..120 {
        step(&p, &mut g, &mut c, &mut buf);
        for (k, _) in kinds(&c.sent) {
            assert_eq!(k, HANDSHAKE_INIT);
            inits.push(secs() - start);
        }
        c.sent.clear();
    }
    for w in inits.windows(2) {
        assert!(
            (5..=6).contains(&(w[1] - w[0])),
            "retries REKEY_TIMEOUT (5 s) apart: {inits:?}"
        );
    }
    let last = *inits.last().unwrap();
    assert!(
        (85..=90).contains(&last),
        "gives up after REKEY_ATTEMPT_TIME (90 s): {inits:?}"
    );
    // The packet queued during the failed attempt was discarded; a new one starts afresh.
    let fresh = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 1]);
    p.client.handle_packet(&fresh, &mut buf, &mut c);
    pump(&p, &mut g, &mut c, p.client_addr);
    assert_eq!(Vec::from(g.delivered.clone()), vec![fresh]);
}

#[test]
fn session_keys_rejected_after_reject_after_time() {
    let (p, mut g, mut c, mut buf) = setup();
    handshake(&p, &mut g, &mut c, &mut buf);
    // A datagram sealed now but delivered late (held back by an attacker).
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    let (_, held) = c.sent.pop_front().unwrap();
    assert_eq!(held[0], DATA);
    for _ in 0..181 {
        step(&p, &mut g, &mut c, &mut buf);
        c.sent.clear();
        g.sent.clear();
    }
    let failed = p.gw.counters.auth_failed.load(Ordering::Relaxed);
    p.gw.handle_datagram(p.client_addr, &held, &mut buf, &mut g);
    assert!(
        g.delivered.is_empty(),
        "an expired session's packet is refused"
    );
    assert_eq!(
        p.gw.counters.auth_failed.load(Ordering::Relaxed),
        failed + 1
    );
    // Neither side has a session now: new traffic starts with a new handshake.
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    assert_eq!(kinds(&c.sent)[0].0, HANDSHAKE_INIT);
    pump(&p, &mut g, &mut c, p.client_addr);
    assert_eq!(g.delivered.len(), 1);
}

#[test]
fn timers_follow_a_roaming_peer() {
    let (p, mut g, mut c, mut buf) = setup();
    handshake(&p, &mut g, &mut c, &mut buf);
    // The client's NAT mapping changes: its next datagram arrives from a new address.
    let roamed: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    step(&p, &mut g, &mut c, &mut buf);
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    pump(&p, &mut g, &mut c, roamed);
    assert_eq!(p.gw.peers()[0].endpoint, Some(roamed));
    // The gateway's passive keepalive goes to the new address (pump asserts it).
    let mut keepalives = 0;
    for _ in 0..12 {
        step(&p, &mut g, &mut c, &mut buf);
        keepalives += g.sent.iter().filter(|(to, _)| *to == roamed).count();
        pump(&p, &mut g, &mut c, roamed);
    }
    assert_eq!(keepalives, 1);
}

#[test]
fn expired_peer_goes_quiet_and_comes_back_when_extended() {
    let (p, mut g, mut c, mut buf) = setup();
    let client = p.client_key.public();
    let expires = MockWall.now() + Duration::from_secs(30);
    p.gw.update_peer(&client, |c| c.expires = Some(expires));
    p.client
        .update_peer(&p.gw_key.public(), |c| c.persistent_keepalive = Some(5));
    handshake(&p, &mut g, &mut c, &mut buf);
    let mut gw_sent_after_expiry = 0;
    for _ in 0..60 {
        step(&p, &mut g, &mut c, &mut buf);
        p.client.handle_packet(&ping(), &mut buf, &mut c);
        if MockWall.now() >= expires {
            gw_sent_after_expiry += g.sent.len();
        }
        pump(&p, &mut g, &mut c, p.client_addr);
    }
    let delivered = g.delivered.len();
    assert!(
        (28..=31).contains(&delivered),
        "packets pass only until expiry: {delivered}"
    );
    assert_eq!(
        gw_sent_after_expiry, 0,
        "the gateway sends nothing to an expired peer"
    );
    assert!(p.gw.counters.inactive_peer.load(Ordering::Relaxed) > 0);
    // Extending the expiry lets the peer in again (a fresh handshake if needed).
    p.gw.update_peer(&client, |c| c.expires = None);
    g.delivered.clear();
    for _ in 0..20 {
        step(&p, &mut g, &mut c, &mut buf);
        p.client.handle_packet(&ping(), &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
    }
    assert!(g.delivered.len() >= 15, "back in: {}", g.delivered.len());
}

#[test]
fn allowed_ips_route_by_longest_prefix_v4_and_v6() {
    let (p, mut g, mut c, mut buf) = setup();
    let a = p.client_key.public();
    p.gw.update_peer(&a, |c| {
        c.allowed_ips = vec![cidr("10.0.0.0/24"), cidr("fd00::/64")];
    });
    p.client.update_peer(&p.gw_key.public(), |c| {
        c.allowed_ips = vec![cidr("0.0.0.0/0"), cidr("::/0")];
    });
    // A second client owns a more specific part of both ranges.
    let b_key = Key::generate_private();
    let b = Device::new(Arc::new(MockWall), None);
    b.set_private_key(Some(b_key));
    let mut gp = PeerConfig::new(p.gw_key.public());
    gp.allowed_ips = vec![cidr("0.0.0.0/0"), cidr("::/0")];
    gp.endpoint = Some(p.gw_addr);
    b.upsert_peer(gp);
    let mut bp = PeerConfig::new(b_key.public());
    bp.allowed_ips = vec![cidr("10.0.0.128/25"), cidr("fd00::80/121")];
    bp.role = Role::Admin;
    p.gw.upsert_peer(bp);
    let b_addr: SocketAddr = "198.51.100.8:40001".parse().unwrap();
    let mut bc = Capture::default();

    // Both clients handshake (each sends one packet from its own range).
    handshake(&p, &mut g, &mut c, &mut buf);
    let from_b = ipv4([10, 0, 0, 130], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
    b.handle_packet(&from_b, &mut buf, &mut bc);
    carry_b(&p.gw, &b, &mut g, &mut bc, b_addr, p.gw_addr, &mut buf);
    assert_eq!(g.delivered.pop_front(), Some(from_b));

    let v6 = |last: u16| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (ipv4([10, 0, 0, 1], [10, 0, 0, 5], 17, &[0; 8]), "a"),
        (ipv4([10, 0, 0, 1], [10, 0, 0, 127], 17, &[0; 8]), "a"),
        (ipv4([10, 0, 0, 1], [10, 0, 0, 128], 17, &[0; 8]), "b"),
        (ipv4([10, 0, 0, 1], [10, 0, 0, 255], 17, &[0; 8]), "b"),
        (ipv6(v6(1), v6(0x7f), 17, &[0; 8]), "a"),
        (ipv6(v6(1), v6(0x80), 17, &[0; 8]), "b"),
        (ipv6(v6(1), v6(0xff), 17, &[0; 8]), "b"),
        (ipv6(v6(1), v6(0x100), 17, &[0; 8]), "a"),
    ];
    for (packet, owner) in &cases {
        p.gw.handle_packet(packet, &mut buf, &mut g);
        let (to, _) = g.sent.back().unwrap();
        let want = if *owner == "a" { p.client_addr } else { b_addr };
        assert_eq!(*to, want, "packet to {owner}");
        // Carry it and check that the right client decrypts it.
        let (to, d) = g.sent.pop_back().unwrap();
        if to == b_addr {
            b.handle_datagram(p.gw_addr, &d, &mut buf, &mut bc);
            assert_eq!(bc.delivered.pop_front().as_ref(), Some(packet));
        } else {
            p.client.handle_datagram(p.gw_addr, &d, &mut buf, &mut c);
            assert_eq!(c.delivered.pop_front().as_ref(), Some(packet));
        }
    }
    // Outside every prefix: no route.
    p.gw.handle_packet(
        &ipv4([10, 0, 0, 1], [10, 0, 1, 1], 17, &[0; 8]),
        &mut buf,
        &mut g,
    );
    assert_eq!(p.gw.counters.no_route.load(Ordering::Relaxed), 1);

    // Source check: b may not send from a's addresses.
    let spoof = ipv4([10, 0, 0, 5], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
    b.handle_packet(&spoof, &mut buf, &mut bc);
    carry_b(&p.gw, &b, &mut g, &mut bc, b_addr, p.gw_addr, &mut buf);
    assert!(g.delivered.is_empty());
    assert_eq!(p.gw.counters.spoofed_source.load(Ordering::Relaxed), 1);

    // A live change moves the range: once b loses 10.0.0.128/25, a gets it back.
    p.gw.update_peer(&b_key.public(), |c| {
        c.allowed_ips = vec![cidr("fd00::80/121")]
    });
    p.gw.handle_packet(
        &ipv4([10, 0, 0, 1], [10, 0, 0, 200], 17, &[0; 8]),
        &mut buf,
        &mut g,
    );
    assert_eq!(g.sent.pop_back().unwrap().0, p.client_addr);
}

/// Carries datagrams between the gateway and a second client until both are quiet.
fn carry_b(
    gw: &Device,
    b: &Device,
    g: &mut Capture,
    bc: &mut Capture,
    b_addr: SocketAddr,
    gw_addr: SocketAddr,
    buf: &mut [u8],
) {
    for _ in 0..8 {
        let mut moved = false;
        while let Some((_, d)) = bc.sent.pop_front() {
            gw.handle_datagram(b_addr, &d, buf, g);
            moved = true;
        }
        while let Some((to, d)) = g.sent.pop_front() {
            assert_eq!(to, b_addr);
            b.handle_datagram(gw_addr, &d, buf, bc);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn cookie_replies_under_load_and_the_handshake_still_completes() {
    const COOKIE_REPLY: u8 = 3;
    let (p, mut g, mut c, mut buf) = setup();
    step(&p, &mut g, &mut c, &mut buf);
    // An attacker replays a captured initiation (its MAC1 is valid) as fast as it can.
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    let (_, captured) = c.sent.pop_front().unwrap();
    assert_eq!(captured[0], HANDSHAKE_INIT);
    let attacker: SocketAddr = "203.0.113.50:1000".parse().unwrap();
    for _ in 0..400 {
        p.gw.handle_datagram(attacker, &captured, &mut buf, &mut g);
    }
    let cookies = p.gw.counters.cookie_replies.load(Ordering::Relaxed);
    assert!(
        cookies > 100,
        "under load the gateway answers with cookies ({cookies})"
    );
    assert!(g
        .sent
        .iter()
        .any(|(to, d)| *to == attacker && d[0] == COOKIE_REPLY));
    let responses = g.sent.iter().filter(|(_, d)| d[0] == 2).count();
    assert!(
        responses <= 1,
        "at most the first replay got a handshake response"
    );
    g.sent.clear();

    // The real client, still under load: its initiation gets a cookie reply...
    MockClock::advance(Duration::from_secs(6));
    p.client.tick(&mut buf, &mut c);
    let (_, init) = c.sent.pop_front().unwrap();
    assert_eq!(init[0], HANDSHAKE_INIT);
    p.gw.handle_datagram(p.client_addr, &init, &mut buf, &mut g);
    let (to, reply) = g.sent.pop_front().unwrap();
    assert_eq!((to, reply[0]), (p.client_addr, COOKIE_REPLY));
    p.client
        .handle_datagram(p.gw_addr, &reply, &mut buf, &mut c);
    // ...and its retry carries the cookie (MAC2, the last 16 bytes) and completes.
    for _ in 0..6 {
        MockClock::advance(Duration::from_secs(1));
        p.client.tick(&mut buf, &mut c);
    }
    let (_, retry) = c.sent.back().unwrap().clone();
    assert_eq!(retry[0], HANDSHAKE_INIT);
    assert_ne!(
        &retry[retry.len() - 16..],
        &[0u8; 16],
        "MAC2 set from the cookie"
    );
    pump(&p, &mut g, &mut c, p.client_addr);
    p.client.handle_packet(&ping(), &mut buf, &mut c);
    pump(&p, &mut g, &mut c, p.client_addr);
    assert!(!g.delivered.is_empty(), "the client got through the load");
}
