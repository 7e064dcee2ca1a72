//! Test support shared by the unit tests and the fake-clock timer tests: two devices that
//! know each other, a capture of what they write, and a pump that carries datagrams
//! between them. Compiled only for tests (`cfg(test)` or the `fake-clock` feature).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::device::{Clock, Device, PacketIo, PeerConfig, BUFFER_SIZE};
use crate::keys::Key;
use crate::policy::Policy;
use gatehouse_config::{Cidr, Role};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Captures what the device writes.
#[derive(Default)]
pub struct Capture {
    pub sent: VecDeque<(SocketAddr, Vec<u8>)>,
    pub delivered: VecDeque<Vec<u8>>,
}

impl PacketIo for Capture {
    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        self.sent.push_back((to, d.to_vec()));
    }
    fn deliver(&mut self, p: &[u8]) {
        self.delivered.push_back(p.to_vec());
    }
}

pub struct FixedClock(pub Mutex<SystemTime>);
impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

/// A minimal IPv4 packet (UDP, no payload check) from `src` to `dst`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = 20 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (len >> 8) as u8,
        len as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A minimal IPv6 packet from `src` to `dst` with `next` as the next header.
pub fn ipv6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// Two devices ("gateway" at 10.0.0.1, "client" at 10.0.0.2) that know each other.
pub struct Pair {
    pub gw: Device,
    pub client: Device,
    pub gw_key: Key,
    pub client_key: Key,
    pub gw_addr: SocketAddr,
    pub client_addr: SocketAddr,
}

pub fn pair(clock: Arc<dyn Clock>, policy: Option<Policy>) -> Pair {
    let gw_key = Key::generate_private();
    let client_key = Key::generate_private();
    let gw = Device::new(clock.clone(), policy);
    let client = Device::new(clock, None);
    gw.set_private_key(Some(gw_key));
    client.set_private_key(Some(client_key));
    let gw_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let client_addr: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let mut c = PeerConfig::new(client_key.public());
    c.allowed_ips = vec![cidr("10.0.0.2/32")];
    c.role = Role::Admin;
    gw.upsert_peer(c);
    let mut g = PeerConfig::new(gw_key.public());
    g.allowed_ips = vec![cidr("10.0.0.0/24")];
    g.endpoint = Some(gw_addr);
    client.upsert_peer(g);
    Pair {
        gw,
        client,
        gw_key,
        client_key,
        gw_addr,
        client_addr,
    }
}

/// Moves every queued datagram between the two devices until both are quiet;
/// returns what each side delivered. `client_from` is the client's source address.
pub fn pump(p: &Pair, gw_io: &mut Capture, client_io: &mut Capture, client_from: SocketAddr) {
    let mut buf = vec![0u8; BUFFER_SIZE];
    for _ in 0..32 {
        let mut moved = false;
        while let Some((to, d)) = client_io.sent.pop_front() {
            assert_eq!(to, p.gw_addr);
            p.gw.handle_datagram(client_from, &d, &mut buf, gw_io);
            moved = true;
        }
        while let Some((to, d)) = gw_io.sent.pop_front() {
            assert_eq!(
                to, client_from,
                "gateway answers where the client last spoke from"
            );
            p.client.handle_datagram(p.gw_addr, &d, &mut buf, client_io);
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("devices kept talking");
}
