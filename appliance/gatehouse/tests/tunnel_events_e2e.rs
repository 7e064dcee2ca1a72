//! The tunnel's events end to end: `gatehouse up` (tunnel and hub in one process tree) in
//! a network namespace of its own, a remote admin as wireguard-go in another. The hub
//! writes the `tunnel` source's key at start; once the admin's handshake completes, the
//! tunnel posts `tunnel.peer_connected` to the hub's webhook with that key and the event
//! is in the hub's database. Needs root (namespaces), like tunnel_e2e.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_alerts::model::{Event, SourceKind};
use gatehouse_store::{EventFilter, Store};
use std::path::Path;
use std::time::Duration;
use support::*;

fn events_of(data: &Path, kind: &str) -> Vec<Event> {
    let store = Store::open(data).unwrap();
    store
        .list_events(&EventFilter {
            kind: Some(kind.to_owned()),
            limit: 100,
            ..EventFilter::default()
        })
        .unwrap()
}

#[test]
fn a_peer_connecting_reaches_the_hub_as_a_tunnel_event() {
    let (mut lab, g) = Lab::with_gateway("userspace");
    let data = lab.dir.path().join("data");
    let conf = lab.gatehouse(&g.config, &["peer", "add", "ada", "--role", "admin"]);
    let c1 = lab.add_client(1);
    let ifname = lab.ifname("a");
    lab.wireguard_go_client(&c1, &ifname, &conf);
    lab.wait_ping(&c1, "10.77.0.1");
    let connected = wait_for(
        "tunnel.peer_connected in the hub's database",
        Duration::from_secs(30),
        || {
            let e = events_of(&data, "tunnel.peer_connected");
            (!e.is_empty()).then_some(e)
        },
    );
    assert_eq!(connected.len(), 1, "{connected:?}");
    let e = &connected[0].new;
    assert_eq!(
        (e.source.as_str(), e.source_kind),
        ("tunnel", SourceKind::Tunnel)
    );
    assert_eq!(e.device.as_deref(), Some("ada"));
    assert!(
        e.message.as_deref().unwrap().contains("from 10.99.0.11:"),
        "{e:?}"
    );
    // The hub's own start is there too, from the same process tree.
    assert_eq!(events_of(&data, "system.started").len(), 1);
}
