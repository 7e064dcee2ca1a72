//! nftables rules for TUN mode, generated from the [`Policy`] and the peers' roles, and
//! applied atomically: one `nft -f` transaction deletes and recreates `table inet
//! gatehouse`, so there is never a moment with half a ruleset.
//!
//! What the rules say, for traffic entering from the tunnel interface:
//! - tunnel ports of services and forwards are destination-NATed to their targets, exactly
//!   like the userspace stack relays them. A loopback target (a service bound to
//!   127.0.0.1) needs `route_localnet` on the tunnel interface, which [`allow_loopback_targets`]
//!   sets; for IPv6 a loopback target becomes a redirect to the tunnel address's port;
//! - a peer's source address must be in its role's set for the entry's port;
//! - ICMP echo to the gateway is allowed; anything else is counted (`counter denied`)
//!   and dropped. Nothing from the LAN may open connections into the tunnel.

use crate::policy::Policy;
use gatehouse_config::{Cidr, Role};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::{Command, Stdio};

pub const TABLE: &str = "gatehouse";

/// The ruleset for interface `ifname`, with each role's peer addresses.
pub fn ruleset(
    ifname: &str,
    tunnel_net: Cidr,
    policy: &Policy,
    members: &[(Role, Cidr)],
) -> String {
    let mut r = String::new();
    // Creating then deleting makes the delete valid on first use; all one transaction.
    let _ = writeln!(
        r,
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    for role in Role::ALL {
        for (fam, v4) in [("4", true), ("6", false)] {
            let elems: Vec<String> = members
                .iter()
                .filter(|(r, c)| *r == role && c.addr().is_ipv4() == v4)
                .map(|(_, c)| c.network().to_string())
                .collect();
            let ty = if v4 { "ipv4_addr" } else { "ipv6_addr" };
            let _ = write!(r, "  set {role}{fam} {{ type {ty}; flags interval; ");
            if !elems.is_empty() {
                let _ = write!(r, "elements = {{ {} }} ", elems.join(", "));
            }
            let _ = writeln!(r, "}}");
        }
    }
    let _ = writeln!(r, "  counter denied {{}}");
    let gw4 = policy.gateway_v4();
    let _ = writeln!(
        r,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
    );
    for e in policy.entries() {
        let target = if e.target.is_ipv4() {
            format!("dnat ip to {}", e.target)
        } else {
            format!("dnat ip6 to {}", e.target)
        };
        let _ = writeln!(
            r,
            "    iifname \"{ifname}\" ip daddr {gw4} tcp dport {} {target}",
            e.port
        );
        if let Some(gw6) = policy.gateway_v6() {
            if e.target.ip().is_loopback() {
                let _ = writeln!(
                    r,
                    "    iifname \"{ifname}\" ip6 daddr {gw6} tcp dport {} redirect to :{}",
                    e.port,
                    e.target.port()
                );
            }
        }
    }
    let _ = writeln!(r, "  }}");
    let _ = writeln!(
        r,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {} oifname != \"{ifname}\" ct status dnat masquerade\n  }}",
        tunnel_net.network()
    );
    let allow = |r: &mut String, chain_rule: &str| {
        for role in Role::ALL {
            let ports: Vec<String> = policy
                .entries()
                .iter()
                .filter(|e| e.roles.contains(&role))
                .map(|e| e.port.to_string())
                .collect();
            if ports.is_empty() {
                continue;
            }
            let ports = ports.join(", ");
            let _ = writeln!(
                r,
                "    iifname \"{ifname}\" ip saddr @{role}4 {chain_rule}meta l4proto tcp ct status dnat ct original proto-dst {{ {ports} }} accept"
            );
            let _ = writeln!(
                r,
                "    iifname \"{ifname}\" ip6 saddr @{role}6 {chain_rule}meta l4proto tcp ct status dnat ct original proto-dst {{ {ports} }} accept"
            );
        }
    };
    let _ = writeln!(
        r,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname != \"{ifname}\" accept\n    ct state established,related accept\n    \
         icmp type echo-request accept\n    icmpv6 type echo-request accept"
    );
    allow(&mut r, "");
    let _ = writeln!(r, "    counter name denied drop\n  }}");
    let _ = writeln!(
        r,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         ct state established,related accept"
    );
    allow(&mut r, "");
    let _ = writeln!(
        r,
        "    iifname \"{ifname}\" counter name denied drop\n    oifname \"{ifname}\" counter name denied drop\n  }}\n}}"
    );
    r
}

/// Applies `rules` in one `nft -f -` transaction.
/// Lets the kernel route packets arriving on `ifname` to 127.0.0.0/8 (`route_localnet`),
/// which the DNAT to a loopback-bound service needs. Only the rules above decide what
/// reaches loopback: the tunnel's input chain drops everything not NATed for a role.
pub fn allow_loopback_targets(ifname: &str, policy: &Policy) -> io::Result<()> {
    if !policy
        .entries()
        .iter()
        .any(|e| e.target.is_ipv4() && e.target.ip().is_loopback())
    {
        return Ok(());
    }
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/route_localnet");
    std::fs::write(&path, "1").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot enable {path} for the services on 127.0.0.1: {e}"),
        )
    })
}

pub fn apply(rules: &str) -> io::Result<()> {
    nft(&["-f", "-"], rules)
}

/// Checks `rules` without applying them (`nft -c`).
pub fn check(rules: &str) -> io::Result<()> {
    nft(&["-c", "-f", "-"], rules)
}

/// Removes the table (on shutdown).
pub fn remove() -> io::Result<()> {
    nft(
        &["-f", "-"],
        &format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"),
    )
}

fn nft(args: &[&str], input: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot run nft (install nftables, or set tunnel.firewall = \"none\"): {e}"
                ),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft rejected the generated ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Config;
    use std::path::Path;

    fn policy() -> (Config, Policy) {
        let c = Config::parse(
            "[tunnel]\naddress='10.77.0.1/24'\naddress6='fd77::1/64'\n\
             [[tunnel.service]]\nname='console'\nport=80\ntarget='127.0.0.1:8080'\n\
             [[tunnel.forward]]\nname='nvr'\nport=554\ntarget='192.168.1.20:554'\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let p = Policy::from_config(&c.tunnel);
        (c, p)
    }

    #[test]
    fn ruleset_names_roles_and_ports() {
        let (c, p) = policy();
        let members = vec![
            (Role::Admin, "10.77.0.2/32".parse().unwrap()),
            (Role::Installer, "10.77.0.3/32".parse().unwrap()),
            (Role::Admin, "fd77::2/128".parse().unwrap()),
        ];
        let r = ruleset("wg0", c.tunnel.address, &p, &members);
        assert!(
            r.contains(
                "set admin4 { type ipv4_addr; flags interval; elements = { 10.77.0.2/32 } }"
            ),
            "{r}"
        );
        assert!(
            r.contains(
                "set installer4 { type ipv4_addr; flags interval; elements = { 10.77.0.3/32 } }"
            ),
            "{r}"
        );
        assert!(
            r.contains("set installer6 { type ipv6_addr; flags interval; }"),
            "{r}"
        );
        assert!(r.contains("tcp dport 80 dnat ip to 127.0.0.1:8080"), "{r}");
        assert!(
            r.contains("tcp dport 554 dnat ip to 192.168.1.20:554"),
            "{r}"
        );
        assert!(r.contains("ip saddr @admin4 meta l4proto tcp ct status dnat ct original proto-dst { 80, 554 } accept"), "{r}");
        assert!(r.contains("ip saddr @installer4 meta l4proto tcp ct status dnat ct original proto-dst { 80 } accept"), "{r}");
        assert!(
            !r.contains(
                "@installer4 meta l4proto tcp ct status dnat ct original proto-dst { 80, 554 }"
            ),
            "{r}"
        );
    }

    /// `nft -c` parses and type-checks the ruleset without touching the kernel's rules.
    #[test]
    fn nft_accepts_generated_ruleset() {
        let (c, p) = policy();
        let members = vec![(Role::Admin, "10.77.0.2/32".parse().unwrap())];
        check(&ruleset("wg0", c.tunnel.address, &p, &members)).unwrap();
        let empty = Policy::from_config(&Config::default().tunnel);
        check(&ruleset("wg0", c.tunnel.address, &empty, &[])).unwrap();
    }
}
