//! What `gatehouse peer ...` does: edits the peer store and tells a running
//! `gatehouse tunnel` to apply it (SIGHUP to the pid in its pid file), so changes are live.
//!
//! The hub (console) and the CLI run these, as users other than the tunnel's on the box:
//! they never open the gateway's private key file. Client configs take the gateway's
//! public key from the store's `# PublicKey`. The tunnel makes the store on its first
//! start; before that, and while the store still holds a legacy `PrivateKey` (moved out by
//! the tunnel's next start), changes are refused with an error saying to start the tunnel.

#![allow(unsafe_code)] // kill(2) to signal the running tunnel; no memory is involved.

use crate::client_config::ClientConfig;
use crate::keys::Key;
use crate::peer_store::{
    parse_expiry, validate_name, PeerStore, StoreError, StoreLock, StoredPeer,
};
use crate::service::pid_file;
use crate::uapi::{self, DeviceInfo};
use gatehouse_config::{Cidr, Config, Role};
use std::net::IpAddr;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("no peer named {0:?}; `gatehouse peer list` shows the names")]
    NoSuchPeer(String),
    #[error("a peer named {0:?} exists already; choose another name or remove it first")]
    NameTaken(String),
    #[error("that public key belongs to peer {0:?} already")]
    KeyTaken(String),
    #[error("no free address left in {0}; widen tunnel.address or remove peers")]
    Full(Cidr),
}

/// Loads the store for a change: a missing store and one that still holds the gateway's
/// private key are refused (only the tunnel may create the one or move the key out of
/// the other).
fn load_for_change(path: &std::path::Path) -> Result<PeerStore, AdminError> {
    let store = PeerStore::load(path).map_err(|e| match e {
        StoreError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            AdminError::Store(StoreError::NotMadeYet {
                path: path.to_owned(),
            })
        }
        other => AdminError::Store(other),
    })?;
    if store.has_private_key() {
        return Err(StoreError::HoldsPrivateKey {
            path: path.to_owned(),
        }
        .into());
    }
    Ok(store)
}

/// Whether a change reached a running tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Sent SIGHUP to this pid; or, when that is not permitted (the tunnel runs as
    /// another user, as on the box), the tunnel with this pid notices the saved store
    /// itself within [`crate::service::STORE_POLL`].
    Live(u32),
    /// No tunnel running; the change applies when it starts.
    Stored,
}

/// What `peer add` was asked for.
#[derive(Debug, Clone)]
pub struct NewPeer {
    pub name: String,
    pub role: Role,
    pub expires: Option<String>,
    pub public_key: Option<String>,
}

/// What `peer add` produced.
#[derive(Debug)]
pub struct Added {
    pub client: ClientConfig,
    pub addresses: Vec<IpAddr>,
    pub applied: Applied,
}

/// Adds a peer: allocates its addresses, generates its keys unless a public key is given,
/// saves the store and applies it live.
pub fn add_peer(config: &Config, new: &NewPeer) -> Result<Added, AdminError> {
    validate_name(&new.name).map_err(AdminError::Invalid)?;
    let expires = match &new.expires {
        Some(s) => {
            Some(parse_expiry(s).map_err(|e| AdminError::Invalid(format!("--expires: {e}")))?)
        }
        None => None,
    };
    let (private_key, public_key) = match &new.public_key {
        Some(k) => {
            let k = Key::from_base64(k)
                .map_err(|e| AdminError::Invalid(format!("--public-key: {e}")))?;
            (None, k)
        }
        None => {
            let k = Key::generate_private();
            (Some(k), k.public())
        }
    };
    let t = &config.tunnel;
    let _only_writer = StoreLock::acquire(&t.peers_file)?;
    let mut store = load_for_change(&t.peers_file)?;
    if store.find(&new.name).is_some() {
        return Err(AdminError::NameTaken(new.name.clone()));
    }
    if let Some(p) = store.peers.iter().find(|p| p.public_key == public_key) {
        return Err(AdminError::KeyTaken(
            p.name.clone().unwrap_or_else(|| p.public_key.to_base64()),
        ));
    }
    if public_key == store.public_key {
        return Err(AdminError::Invalid(
            "--public-key: that is the gateway's own key".into(),
        ));
    }
    let mut addresses = vec![store
        .next_free_address(t.address, t.address.addr())
        .ok_or(AdminError::Full(t.address))?];
    if let Some(a6) = t.address6 {
        addresses.push(
            store
                .next_free_address(a6, a6.addr())
                .ok_or(AdminError::Full(a6))?,
        );
    }
    let peer = StoredPeer {
        public_key,
        preshared_key: Some(Key::generate_preshared()),
        allowed_ips: addresses.iter().map(|a| Cidr::host(*a)).collect(),
        endpoint: None,
        persistent_keepalive: None,
        name: Some(new.name.clone()),
        role: new.role,
        expires,
        disabled: false,
    };
    let client = ClientConfig::for_peer(t, store.public_key, &peer, private_key);
    store.peers.push(peer);
    store.save(&t.peers_file)?;
    Ok(Added {
        client,
        addresses,
        applied: notify(config),
    })
}

/// Enables or disables a peer (a disabled peer stays in the store, commented out of the
/// device).
pub fn set_disabled(config: &Config, name: &str, disabled: bool) -> Result<Applied, AdminError> {
    let path = &config.tunnel.peers_file;
    let _only_writer = StoreLock::acquire(path)?;
    let mut store = load_for_change(path)?;
    let p = store
        .find_mut(name)
        .ok_or_else(|| AdminError::NoSuchPeer(name.to_owned()))?;
    p.disabled = disabled;
    store.save(path)?;
    Ok(notify(config))
}

/// Removes a peer for good; its sessions end at once.
pub fn remove_peer(config: &Config, name: &str) -> Result<Applied, AdminError> {
    let path = &config.tunnel.peers_file;
    let _only_writer = StoreLock::acquire(path)?;
    let mut store = load_for_change(path)?;
    let key = store
        .find(name)
        .map(|p| p.public_key)
        .ok_or_else(|| AdminError::NoSuchPeer(name.to_owned()))?;
    store.peers.retain(|p| p.public_key != key);
    store.save(path)?;
    Ok(notify(config))
}

/// One line of `peer list`.
#[derive(Debug, Clone)]
pub struct PeerRow {
    pub name: String,
    pub role: Role,
    pub addresses: Vec<Cidr>,
    pub endpoint: Option<String>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub expires: Option<time::OffsetDateTime>,
    pub state: &'static str,
}

/// The store's peers with live figures from the running tunnel's UAPI, when it answers.
pub fn list_peers(config: &Config) -> Result<Vec<PeerRow>, AdminError> {
    let store = PeerStore::load(&config.tunnel.peers_file)?;
    let live: Option<DeviceInfo> = uapi::query(&config.uapi_socket()).ok();
    let now = time::OffsetDateTime::now_utc();
    Ok(store
        .peers
        .iter()
        .map(|p| {
            let info = live
                .as_ref()
                .and_then(|d| d.peers.iter().find(|i| i.public_key == p.public_key));
            PeerRow {
                name: p.name.clone().unwrap_or_else(|| p.public_key.to_base64()),
                role: p.role,
                addresses: p.allowed_ips.clone(),
                endpoint: info
                    .and_then(|i| i.endpoint.map(|e| e.to_string()))
                    .or_else(|| p.endpoint.clone()),
                last_handshake: info.and_then(|i| i.last_handshake),
                rx_bytes: info.map_or(0, |i| i.rx_bytes),
                tx_bytes: info.map_or(0, |i| i.tx_bytes),
                expires: p.expires,
                state: if p.disabled {
                    "disabled"
                } else if p.is_expired(now) {
                    "expired"
                } else {
                    "active"
                },
            }
        })
        .collect())
}

/// Sends SIGHUP to the running tunnel named by the pid file, if it is alive.
pub fn notify(config: &Config) -> Applied {
    let Ok(text) = std::fs::read_to_string(pid_file(config)) else {
        return Applied::Stored;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Applied::Stored;
    };
    // A stale pid file may name an unrelated process now: SIGHUP would end it.
    let is_gatehouse = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .is_some_and(|a0| a0.ends_with(b"gatehouse"))
    });
    if pid <= 0 || !is_gatehouse {
        return Applied::Stored;
    }
    // SAFETY: kill(2) takes plain integers; a stale pid at worst gets ESRCH.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        Applied::Live(pid as u32)
    } else {
        Applied::Stored
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use crate::service::prepare_gateway;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    fn config_in(dir: &std::path::Path) -> Config {
        let mut config = Config::default();
        config.general.data_dir = dir.join("data");
        config.tunnel.peers_file = dir.join("wg0.conf");
        config.tunnel.private_key_file = dir.join("wg0.key");
        config.tunnel.uapi_dir = dir.join("run");
        config
    }

    fn new_peer(name: &str) -> NewPeer {
        NewPeer {
            name: name.into(),
            role: Role::Admin,
            expires: None,
            public_key: None,
        }
    }

    /// Writers in parallel (threads here; the console, the CLI and the tunnel are separate
    /// processes on the box, which the lock file covers the same way): every change lands.
    #[test]
    fn parallel_writers_lose_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        prepare_gateway(&config, None).unwrap();
        let config = std::sync::Arc::new(config);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let config = config.clone();
                std::thread::spawn(move || {
                    add_peer(
                        &config,
                        &NewPeer {
                            name: format!("peer-{i}"),
                            role: Role::Installer,
                            expires: None,
                            public_key: None,
                        },
                    )
                    .unwrap()
                })
            })
            .collect();
        let added: Vec<Added> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(added.iter().all(|a| a.applied == Applied::Stored));
        let store = PeerStore::load(&config.tunnel.peers_file).unwrap();
        let mut names: Vec<String> = store.peers.iter().filter_map(|p| p.name.clone()).collect();
        names.sort();
        let want: Vec<String> = (0..8).map(|i| format!("peer-{i}")).collect();
        assert_eq!(names, want);
        // Each got its own address.
        let mut addrs: Vec<_> = added.iter().map(|a| a.addresses[0]).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 8);
        // Removals in parallel too.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let config = config.clone();
                std::thread::spawn(move || remove_peer(&config, &format!("peer-{i}")).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(PeerStore::load(&config.tunnel.peers_file)
            .unwrap()
            .peers
            .is_empty());
    }

    /// The hub and the CLI run the admin functions as users that cannot read the key
    /// file. Root ignores modes, so this proves it by taking the file away: with the
    /// tunnel's files made and the key file gone, every change still works and the client
    /// config carries the gateway's public key, from the store.
    #[test]
    fn changes_never_open_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let (key, _) = prepare_gateway(&config, None).unwrap();
        fs::remove_file(&config.tunnel.private_key_file).unwrap();
        let added = add_peer(&config, &new_peer("ada")).unwrap();
        assert_eq!(added.client.server_public_key, key.public());
        assert!(added
            .client
            .to_text()
            .contains(&format!("PublicKey = {}", key.public())));
        set_disabled(&config, "ada", true).unwrap();
        set_disabled(&config, "ada", false).unwrap();
        assert_eq!(list_peers(&config).unwrap().len(), 1);
        remove_peer(&config, "ada").unwrap();
        assert!(!config.tunnel.private_key_file.exists(), "not made again");
        let text = fs::read_to_string(&config.tunnel.peers_file).unwrap();
        assert!(!text.contains("PrivateKey"), "{text}");
        assert!(
            text.contains(&format!("# PublicKey = {}", key.public())),
            "{text}"
        );
        assert_eq!(
            fs::metadata(&config.tunnel.peers_file)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o660
        );
    }

    /// Before the tunnel first ran there is no gateway key, so no client config: refused,
    /// saying to start the tunnel, and nothing is made.
    #[test]
    fn no_store_yet_says_to_start_the_tunnel() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        for e in [
            add_peer(&config, &new_peer("ada")).unwrap_err(),
            remove_peer(&config, "ada").unwrap_err(),
            set_disabled(&config, "ada", true).unwrap_err(),
        ] {
            assert!(
                matches!(e, AdminError::Store(StoreError::NotMadeYet { .. })),
                "{e}"
            );
            let e = e.to_string();
            assert!(
                e.contains("wg0.conf") && e.contains("start `gatehouse tunnel`"),
                "{e}"
            );
        }
        assert!(!config.tunnel.peers_file.exists());
        assert!(!config.tunnel.private_key_file.exists());
    }

    /// A store that still holds the gateway's PrivateKey: the admin paths neither copy
    /// the key anywhere nor drop it; they refuse and leave the file as it is.
    #[test]
    fn a_legacy_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let private = Key::generate_private();
        let legacy = format!(
            "[Interface]\nPrivateKey = {private}\nListenPort = 51820\n\n\
             [Peer]\n# Name = bob\nPublicKey = {}\nAllowedIPs = 10.77.0.2/32\n",
            Key::generate_private().public()
        );
        fs::write(&config.tunnel.peers_file, &legacy).unwrap();
        for e in [
            add_peer(&config, &new_peer("ada")).unwrap_err(),
            remove_peer(&config, "bob").unwrap_err(),
            set_disabled(&config, "bob", true).unwrap_err(),
        ] {
            let shown = e.to_string();
            assert!(
                matches!(e, AdminError::Store(StoreError::HoldsPrivateKey { .. })),
                "{shown}"
            );
            assert!(shown.contains("start `gatehouse tunnel` once"), "{shown}");
            assert!(!shown.contains(&private.to_base64()[..20]), "{shown}");
        }
        assert_eq!(
            fs::read_to_string(&config.tunnel.peers_file).unwrap(),
            legacy
        );
        assert!(!config.tunnel.private_key_file.exists());
        // Listing changes nothing, so it works.
        assert_eq!(list_peers(&config).unwrap()[0].name, "bob");
    }
}
