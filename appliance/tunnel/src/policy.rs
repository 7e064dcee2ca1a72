//! Roles: what each remote peer may reach through the tunnel.
//!
//! The one place that turns `tunnel.service` / `tunnel.forward` and roles into decisions.
//! The in-process filter ([`Policy::check`]) runs in both data planes; in TUN mode the
//! nftables ruleset (`firewall.rs`) is generated from the same [`Policy`].
//!
//! What a role allows, always towards the gateway's own tunnel address: ICMP echo requests
//! and replies (ping, both ways),
//! and TCP to the ports of the services and forwards that list the role. Anything else a
//! peer sends is denied.

use gatehouse_config::{Role, Service, Tunnel};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a packet from a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// Not a well-formed IPv4/IPv6 packet, or a fragment we cannot classify.
    Malformed,
    /// Addressed to something other than the gateway's tunnel address.
    Destination,
    /// A protocol or port that the peer's role does not include.
    Port,
}

/// The compiled role rules.
#[derive(Debug, Clone)]
pub struct Policy {
    gateway_v4: Ipv4Addr,
    gateway_v6: Option<Ipv6Addr>,
    /// (tunnel port, target, roles): services first, then forwards.
    entries: Vec<Entry>,
}

/// One reachable TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub port: u16,
    pub target: std::net::SocketAddr,
    pub roles: Vec<Role>,
    /// True for the gateway's own services, false for LAN forwards.
    pub local: bool,
}

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_ICMPV6: u8 = 58;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

impl Policy {
    pub fn from_config(t: &Tunnel) -> Policy {
        let gateway_v4 = match t.address.addr() {
            IpAddr::V4(a) => a,
            // Config validation guarantees IPv4 here.
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let gateway_v6 = t.address6.and_then(|c| match c.addr() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        });
        let entry = |s: &Service, local: bool| Entry {
            name: s.name.clone(),
            port: s.port,
            target: s.target,
            roles: s.roles.clone(),
            local,
        };
        let entries = t
            .services
            .iter()
            .map(|s| entry(s, true))
            .chain(t.forwards.iter().map(|s| entry(s, false)))
            .collect();
        Policy {
            gateway_v4,
            gateway_v6,
            entries,
        }
    }

    pub fn gateway_v4(&self) -> Ipv4Addr {
        self.gateway_v4
    }

    pub fn gateway_v6(&self) -> Option<Ipv6Addr> {
        self.gateway_v6
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry listening on `port`, if any.
    pub fn entry(&self, port: u16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.port == port)
    }

    /// Whether a peer of `role` may send `packet` (a decrypted IP packet) into the gateway.
    pub fn check(&self, role: Role, packet: &[u8]) -> Result<(), Denial> {
        let (proto, l4) = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                if packet.len() < 20 {
                    return Err(Denial::Malformed);
                }
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                let frag = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
                if ihl < 20 || packet.len() < ihl || frag != 0 {
                    return Err(Denial::Malformed);
                }
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                if dst != self.gateway_v4 {
                    return Err(Denial::Destination);
                }
                (packet[9], &packet[ihl..])
            }
            Some(6) => {
                if packet.len() < 40 {
                    return Err(Denial::Malformed);
                }
                let mut d = [0u8; 16];
                d.copy_from_slice(&packet[24..40]);
                let dst = Ipv6Addr::from(d);
                if Some(dst) != self.gateway_v6 {
                    return Err(Denial::Destination);
                }
                (packet[6], &packet[40..])
            }
            _ => return Err(Denial::Malformed),
        };
        match proto {
            PROTO_ICMP if matches!(l4.first(), Some(&(ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY))) => {
                Ok(())
            }
            PROTO_ICMPV6
                if matches!(l4.first(), Some(&(ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY))) =>
            {
                Ok(())
            }
            PROTO_TCP => {
                if l4.len() < 4 {
                    return Err(Denial::Malformed);
                }
                let port = u16::from_be_bytes([l4[2], l4[3]]);
                match self.entry(port) {
                    Some(e) if e.roles.contains(&role) => Ok(()),
                    _ => Err(Denial::Port),
                }
            }
            _ => Err(Denial::Port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Config;
    use std::path::Path;

    fn policy() -> Policy {
        let c = Config::parse(
            "[tunnel]\naddress='10.77.0.1/24'\naddress6='fd77::1/64'\n\
             [[tunnel.service]]\nname='console'\nport=80\ntarget='127.0.0.1:8080'\n\
             [[tunnel.forward]]\nname='nvr'\nport=554\ntarget='192.168.1.20:554'\n",
            Path::new("t.toml"),
        )
        .unwrap();
        Policy::from_config(&c.tunnel)
    }

    /// IPv4 header (20 bytes) + the start of a TCP header with `port`.
    fn tcp4(dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0, 10, 77, 0, 2,
        ];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x30, 0x39]);
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn admin_reaches_console_and_forward_installer_only_console() {
        let p = policy();
        let gw = [10, 77, 0, 1];
        assert_eq!(p.check(Role::Admin, &tcp4(gw, 80)), Ok(()));
        assert_eq!(p.check(Role::Admin, &tcp4(gw, 554)), Ok(()));
        assert_eq!(p.check(Role::Installer, &tcp4(gw, 80)), Ok(()));
        assert_eq!(p.check(Role::Installer, &tcp4(gw, 554)), Err(Denial::Port));
        assert_eq!(p.check(Role::Admin, &tcp4(gw, 22)), Err(Denial::Port));
        assert_eq!(
            p.check(Role::Admin, &tcp4([10, 77, 0, 3], 80)),
            Err(Denial::Destination)
        );
    }

    #[test]
    fn ping_allowed_other_protocols_not() {
        let p = policy();
        let mut icmp = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1,
        ];
        icmp.extend_from_slice(&[ICMP_ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(p.check(Role::Installer, &icmp), Ok(()));
        icmp[20] = ICMP_ECHO_REPLY; // the answer to the gateway's own ping
        assert_eq!(p.check(Role::Installer, &icmp), Ok(()));
        icmp[20] = 13; // timestamp request
        assert_eq!(p.check(Role::Installer, &icmp), Err(Denial::Port));
        icmp[20] = ICMP_ECHO_REQUEST;
        icmp[9] = 17; // UDP
        assert_eq!(p.check(Role::Admin, &icmp), Err(Denial::Port));
    }

    #[test]
    fn ipv6_tcp_to_gateway() {
        let p = policy();
        let mut pkt = vec![0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64];
        pkt.extend_from_slice(&"fd77::2".parse::<Ipv6Addr>().unwrap().octets());
        pkt.extend_from_slice(&"fd77::1".parse::<Ipv6Addr>().unwrap().octets());
        pkt.extend_from_slice(&[0x30, 0x39, 0, 80]);
        pkt.extend_from_slice(&[0; 16]);
        assert_eq!(p.check(Role::Installer, &pkt), Ok(()));
        pkt[42..44].copy_from_slice(&554u16.to_be_bytes());
        assert_eq!(p.check(Role::Installer, &pkt), Err(Denial::Port));
    }

    #[test]
    fn malformed_and_fragments_denied() {
        let p = policy();
        assert_eq!(p.check(Role::Admin, &[]), Err(Denial::Malformed));
        assert_eq!(p.check(Role::Admin, &[0x45, 0, 0]), Err(Denial::Malformed));
        let mut frag = tcp4([10, 77, 0, 1], 80);
        frag[7] = 8; // fragment offset 64 bytes
        assert_eq!(p.check(Role::Admin, &frag), Err(Denial::Malformed));
        let mut short_tcp = tcp4([10, 77, 0, 1], 80);
        short_tcp.truncate(22);
        assert_eq!(p.check(Role::Admin, &short_tcp), Err(Denial::Malformed));
        let mut bad_ihl = tcp4([10, 77, 0, 1], 80);
        bad_ihl[0] = 0x4f;
        assert_eq!(p.check(Role::Admin, &bad_ihl), Err(Denial::Malformed));
    }
}
