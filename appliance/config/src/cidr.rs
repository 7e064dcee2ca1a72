//! An IP address with a prefix length (`10.77.0.1/24`, `fd77::1/64`): the gateway's tunnel
//! address, allowed-IPs entries and routes all use it.

use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address and a prefix length no longer than the address (32 or 128 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    #[error("expected an address with prefix length like 10.0.0.1/24 or fd00::1/64, found {0:?}")]
    Syntax(String),
    #[error("prefix length {prefix} is longer than the {max} bits of the address")]
    PrefixTooLong { prefix: u8, max: u8 },
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        Ok(Cidr { addr, prefix })
    }

    /// An IPv4 subnet; a prefix over 32 is taken as 32.
    pub fn v4(octets: [u8; 4], prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::from(octets),
            prefix: prefix.min(32),
        }
    }

    /// A single host: /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The same prefix with host bits cleared.
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: mask(self.addr, self.prefix),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == mask(self.addr, self.prefix)
    }

    /// True when the host bits are all zero (and the prefix leaves host bits at all).
    pub fn is_network_address(&self) -> bool {
        self.prefix < max_prefix(self.addr) && mask(self.addr, self.prefix) == self.addr
    }

    /// The `n`th address of the subnet (0 is the network address), if the subnet has it.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        let host_bits = u32::from(max_prefix(self.addr) - self.prefix);
        if host_bits < 128 && n >> host_bits != 0 {
            return None;
        }
        Some(match mask(self.addr, self.prefix) {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) | u32::try_from(n).ok()?).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) | n).into()),
        })
    }

    /// How many addresses the subnet has, saturating at `u128::MAX`.
    pub fn size(&self) -> u128 {
        let host_bits = u32::from(max_prefix(self.addr) - self.prefix);
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.to_owned()))?;
        let addr: IpAddr = a.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Syntax(s.to_owned()));
        }
        let prefix: u8 = p.parse().map_err(|_| CidrError::Syntax(s.to_owned()))?;
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let c: Cidr = "10.77.0.1/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.77.0.1/24");
        assert_eq!(c.network().to_string(), "10.77.0.0/24");
        assert!(c.contains("10.77.0.200".parse().unwrap()));
        assert!(!c.contains("10.77.1.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c6: Cidr = "fd77::1/64".parse().unwrap();
        assert!(c6.contains("fd77::ffff".parse().unwrap()));
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().size(), 1 << 32);
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "x/3",
            "::/129",
            "1.2.3.4/+1",
            "1.2.3.4/0001",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nth_host() {
        let c: Cidr = "10.77.0.1/24".parse().unwrap();
        assert_eq!(c.nth(2), Some("10.77.0.2".parse().unwrap()));
        assert_eq!(c.nth(255), Some("10.77.0.255".parse().unwrap()));
        assert_eq!(c.nth(256), None);
        let c6: Cidr = "fd77::1/120".parse().unwrap();
        assert_eq!(c6.nth(5), Some("fd77::5".parse().unwrap()));
        assert_eq!(c6.nth(256), None);
    }
}
