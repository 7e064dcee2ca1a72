//! Allowed-IPs routing: which peer owns a destination address, by longest prefix match,
//! for IPv4 and IPv6 (the WireGuard paper, section 2, "cryptokey routing").
//!
//! One table per prefix length: a lookup walks from the longest populated length to the
//! shortest, so it costs at most 33 (v4) or 129 (v6) hash probes and usually a handful.

use gatehouse_config::Cidr;
use std::collections::HashMap;
use std::net::IpAddr;

/// A map from prefixes to values with longest-prefix-match lookup.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Vec<HashMap<u32, T>>,
    v6: Vec<HashMap<u128, T>>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: (0..=32).map(|_| HashMap::new()).collect(),
            v6: (0..=128).map(|_| HashMap::new()).collect(),
        }
    }
}

fn key_v4(a: u32, prefix: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn key_v6(a: u128, prefix: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl<T> AllowedIps<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `cidr`, returning the value it replaces (an allowed IP moves to the newest
    /// peer that claims it, as in WireGuard).
    pub fn insert(&mut self, cidr: Cidr, value: T) -> Option<T> {
        let p = cidr.prefix();
        match cidr.addr() {
            IpAddr::V4(a) => self.v4[usize::from(p)].insert(key_v4(a.into(), p), value),
            IpAddr::V6(a) => self.v6[usize::from(p)].insert(key_v6(a.into(), p), value),
        }
    }

    pub fn remove(&mut self, cidr: Cidr) -> Option<T> {
        let p = cidr.prefix();
        match cidr.addr() {
            IpAddr::V4(a) => self.v4[usize::from(p)].remove(&key_v4(a.into(), p)),
            IpAddr::V6(a) => self.v6[usize::from(p)].remove(&key_v6(a.into(), p)),
        }
    }

    /// Removes every entry whose value matches `pred`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for m in &mut self.v4 {
            m.retain(|_, v| keep(v));
        }
        for m in &mut self.v6 {
            m.retain(|_, v| keep(v));
        }
    }

    /// The value of the longest prefix containing `ip`.
    pub fn find(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                (0..=32u8)
                    .rev()
                    .filter(|p| !self.v4[usize::from(*p)].is_empty())
                    .find_map(|p| self.v4[usize::from(p)].get(&key_v4(a, p)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                (0..=128u8)
                    .rev()
                    .filter(|p| !self.v6[usize::from(*p)].is_empty())
                    .find_map(|p| self.v6[usize::from(p)].get(&key_v6(a, p)))
            }
        }
    }

    pub fn clear(&mut self) {
        self.v4.iter_mut().for_each(HashMap::clear);
        self.v6.iter_mut().for_each(HashMap::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_v4() {
        let mut t = AllowedIps::new();
        t.insert(c("0.0.0.0/0"), "default");
        t.insert(c("10.0.0.0/8"), "ten");
        t.insert(c("10.1.0.0/16"), "ten-one");
        t.insert(c("10.1.2.3/32"), "host");
        assert_eq!(t.find(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(t.find(ip("10.1.2.4")), Some(&"ten-one"));
        assert_eq!(t.find(ip("10.2.0.1")), Some(&"ten"));
        assert_eq!(t.find(ip("192.168.1.1")), Some(&"default"));
        assert_eq!(t.find(ip("::1")), None);
    }

    #[test]
    fn longest_prefix_wins_v6() {
        let mut t = AllowedIps::new();
        t.insert(c("fd00::/8"), 1);
        t.insert(c("fd77::/64"), 2);
        t.insert(c("fd77::5/128"), 3);
        assert_eq!(t.find(ip("fd77::5")), Some(&3));
        assert_eq!(t.find(ip("fd77::6")), Some(&2));
        assert_eq!(t.find(ip("fd12::1")), Some(&1));
        assert_eq!(t.find(ip("2001:db8::1")), None);
        assert_eq!(t.find(ip("10.0.0.1")), None);
    }

    #[test]
    fn host_bits_ignored_on_insert_and_reinsert_moves() {
        let mut t = AllowedIps::new();
        t.insert(c("10.0.0.77/24"), "a");
        assert_eq!(t.find(ip("10.0.0.1")), Some(&"a"));
        assert_eq!(t.insert(c("10.0.0.0/24"), "b"), Some("a"));
        assert_eq!(t.find(ip("10.0.0.1")), Some(&"b"));
        t.retain(|v| *v != "b");
        assert_eq!(t.find(ip("10.0.0.1")), None);
    }

    #[test]
    fn remove_exact_prefix_only() {
        let mut t = AllowedIps::new();
        t.insert(c("10.0.0.0/24"), 1);
        t.insert(c("10.0.0.0/25"), 2);
        assert_eq!(t.remove(c("10.0.0.0/25")), Some(2));
        assert_eq!(t.find(ip("10.0.0.1")), Some(&1));
        t.clear();
        assert_eq!(t.find(ip("10.0.0.1")), None);
    }
}
