//! `gatehouse tunnel`: the box's WireGuard service, configured from the gatehouse config
//! and the peer store.
//!
//! The peer store file is the truth. Start and [`TunnelService::reload`] (SIGHUP, or
//! `gatehouse peer ...` through the pid file, or [`TunnelService::reload_if_changed`]
//! noticing that another process saved the store: on the box the hub runs as another
//! user and cannot signal the tunnel) make the device's peers exactly the store's enabled
//! peers, keeping sessions of unchanged peers. Changes made over the UAPI socket
//! (`wg set`) are applied live and written back to the store, so they survive restarts.
//!
//! The gateway's private key is in its own file ([`crate::gateway_key`]), which only this
//! service reads and writes: start makes it when missing, moves the key of a legacy store
//! (one with a `PrivateKey` line) into it, and keeps the store's `# PublicKey` equal to the
//! key's public half; `wg set <if> private-key` writes it.

use crate::control::DeviceControl;
use crate::dataplane::{DataPlane, SharedSocket, TunnelSide};
use crate::device::{Device, PeerConfig, SystemClock};
use crate::firewall;
use crate::gateway_key::{self, KeyFileError};
use crate::keys::Key;
use crate::netstack::NetStack;
use crate::peer_store::{PeerStore, StoreError, StoreLock, StoredPeer, STORE_MODE};
use crate::policy::Policy;
use crate::tun::TunDevice;
use crate::uapi::{self, UapiServer};
use crate::udp::UdpEndpoint;
use gatehouse_config::{Cidr, Config, Firewall, Role, TunnelMode};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// A legacy store's `PrivateKey` and the key file disagree.
    #[error(
        "the peer store {store} still holds a gateway PrivateKey that differs from the key in \
         {key_file} (tunnel.private_key_file); the tunnel cannot tell which is the gateway's. \
         Delete the one that is wrong: the PrivateKey line of {store} (to keep {key_file}), or \
         {key_file} (to keep the store's key, which the tunnel then moves there); then start \
         the tunnel again"
    )]
    KeyConflict { store: PathBuf, key_file: PathBuf },
    #[error(
        "the gateway's key file {key_file} is missing, but the peer list {store} gives its \
         {peers} peer(s) the gateway public key {public_key}; a new key would lock them all \
         out. Restore {key_file} from a backup (mode 0600); or, to give the gateway a new \
         key on purpose, write one with `wg genkey > {key_file}` and `chmod 600 {key_file}`, \
         start the tunnel, and give every peer a new config (`gatehouse peer remove` and \
         `peer add`)"
    )]
    KeyFileLost {
        store: PathBuf,
        key_file: PathBuf,
        peers: usize,
        public_key: Key,
    },
    #[error(
        "cannot bind UDP port {port} (tunnel.listen_port): {source}; is another WireGuard running?"
    )]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("TUN device: {0}")]
    Tun(#[source] std::io::Error),
    #[error("firewall: {0}")]
    Firewall(#[source] std::io::Error),
    #[error("UAPI socket {path}: {source}")]
    Uapi {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a tunnel thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot write pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The running service.
pub struct TunnelService {
    config: Config,
    device: Arc<Device>,
    dataplane: Option<DataPlane>,
    stack: Option<NetStack>,
    uapi: Option<UapiServer>,
    /// Serialises writes of the peer store within this process, and holds the stamp of
    /// the store's version the device was last made from (or that we wrote).
    store_lock: Arc<Mutex<Synced>>,
    /// Posts peer and handshake events to the hub (see [`crate::events`]).
    events: Option<crate::events::EventReporter>,
}

/// Where `gatehouse tunnel` writes its pid (0640), so `gatehouse peer ...` can signal a
/// reload: `<interface>.pid` beside the peer store, in the directory the tunnel may write
/// (on the box the data directory is the hub's; by default both are `data_dir`).
pub fn pid_file(config: &Config) -> PathBuf {
    crate::peer_store::parent_dir(&config.tunnel.peers_file)
        .join(format!("{}.pid", config.tunnel.interface))
}

impl TunnelService {
    pub fn start(config: &Config) -> Result<TunnelService, TunnelError> {
        let t = &config.tunnel;
        let (private_key, store, stamp) = prepare_locked(config, None)?;
        let policy = Policy::from_config(t);
        let device = Arc::new(Device::new(Arc::new(SystemClock), Some(policy.clone())));
        device.set_private_key(Some(private_key));
        device.replace_peers(peer_configs(&store));
        let ep = UdpEndpoint::bind(t.listen_port).map_err(|source| TunnelError::Bind {
            port: t.listen_port,
            source,
        })?;
        device.set_listen_port(t.listen_port);
        let socket = Arc::new(SharedSocket::new(ep));

        let (side, stack) = match t.mode {
            TunnelMode::Tun => {
                let tun = TunDevice::open(&t.interface).map_err(TunnelError::Tun)?;
                let mut addrs = vec![t.address.to_string()];
                addrs.extend(t.address6.map(|a| a.to_string()));
                tun.configure(t.mtu, &addrs).map_err(TunnelError::Tun)?;
                if !t.forwards.is_empty() {
                    enable_forwarding();
                }
                (TunnelSide::Tun(Arc::new(tun)), None)
            }
            TunnelMode::Userspace => {
                let stack = NetStack::start(&policy, t.mtu, device.clone(), socket.clone())
                    .map_err(TunnelError::Thread)?;
                (TunnelSide::Stack(stack.handle()), Some(stack))
            }
        };
        let service_firewall = t.mode == TunnelMode::Tun && t.firewall == Firewall::Nftables;
        if service_firewall {
            firewall::allow_loopback_targets(&t.interface, &Policy::from_config(t))
                .map_err(TunnelError::Firewall)?;
            apply_firewall(config, &store).map_err(TunnelError::Firewall)?;
        }
        let dataplane =
            DataPlane::start(device.clone(), socket.clone(), side).map_err(TunnelError::Thread)?;

        let store_lock = Arc::new(Mutex::new(Synced::new(stamp, &store)));
        let control = {
            let (config, lock) = (config.clone(), store_lock.clone());
            DeviceControl::new(device.clone(), socket).on_change(move |d| {
                let mut synced = lock.lock().unwrap_or_else(|e| e.into_inner());
                match write_back(&config, d, &synced) {
                    Ok((store, stamp, foreign)) => {
                        synced.on_device = d.peers().iter().map(|p| p.config.public_key).collect();
                        // Peers another process saved meanwhile are in the store but not
                        // on the device yet: leave the old stamp, so the loop's next
                        // poll applies the store.
                        if !foreign {
                            synced.stamp = stamp;
                        }
                        if service_firewall {
                            if let Err(e) = apply_firewall(&config, &store) {
                                tracing::error!(error = %e, "firewall update failed");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot save UAPI change to the peer store")
                    }
                }
            })
        };
        let path = config.uapi_socket();
        let uapi = uapi::listen(&path, Arc::new(control))
            .map_err(|source| TunnelError::Uapi { path, source })?;

        let events = start_events(config, &device);

        // Readable by the group, so the hub's user can tell the tunnel runs.
        let pid = pid_file(config);
        std::fs::write(&pid, format!("{}\n", std::process::id()))
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&pid, std::fs::Permissions::from_mode(0o640))
            })
            .map_err(|source| TunnelError::PidFile { path: pid, source })?;

        Ok(TunnelService {
            config: config.clone(),
            device,
            dataplane: Some(dataplane),
            stack,
            uapi: Some(uapi),
            store_lock,
            events,
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Re-reads the key file and the peer store (moving a legacy store's key out, as
    /// start does) and applies them; returns the number of active peers.
    pub fn reload(&self) -> Result<usize, TunnelError> {
        let mut synced = self.store_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (private_key, store, stamp) = prepare_locked(&self.config, self.device.private_key())?;
        *synced = Synced::new(stamp, &store);
        if self.device.private_key() != Some(private_key) {
            self.device.set_private_key(Some(private_key));
        }
        let peers = peer_configs(&store);
        let n = peers.len();
        self.device.replace_peers(peers);
        let t = &self.config.tunnel;
        if t.mode == TunnelMode::Tun && t.firewall == Firewall::Nftables {
            apply_firewall(&self.config, &store).map_err(TunnelError::Firewall)?;
        }
        Ok(n)
    }

    /// Reloads when the store file is not the version the device was last made from
    /// (someone else saved it); `None` when it is. Cheap: one stat. The tunnel's loop
    /// calls it every [`STORE_POLL`].
    pub fn reload_if_changed(&self) -> Option<Result<usize, TunnelError>> {
        let now = StoreStamp::of(&self.config.tunnel.peers_file);
        let seen = self
            .store_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stamp;
        if now == seen {
            return None;
        }
        let result = self.reload();
        if result.is_err() {
            // Tried once per version: the next try is when the file changes again.
            self.store_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stamp = now;
        }
        Some(result)
    }

    pub fn stop(mut self) {
        if let Some(e) = self.events.take() {
            e.stop();
        }
        drop(self.uapi.take());
        if let Some(d) = self.dataplane.take() {
            d.stop();
        }
        if let Some(s) = self.stack.take() {
            s.stop();
        }
        let t = &self.config.tunnel;
        if t.mode == TunnelMode::Tun && t.firewall == Firewall::Nftables {
            if let Err(e) = firewall::remove() {
                tracing::warn!(error = %e, "cannot remove firewall table");
            }
        }
        let _ = std::fs::remove_file(pid_file(&self.config));
    }
}

/// The gateway's private key and its peer store, made ready for the tunnel: the key file
/// is made when missing (with `running`, the key of a running tunnel, or else a new
/// one); a legacy store's `PrivateKey` is moved to the key file (refused when the key
/// file holds another key); the store is made when missing, and its `# PublicKey` set to
/// the key's public half. Runs under the store's lock. Tunnel process only: it reads
/// the private key.
pub fn prepare_gateway(
    config: &Config,
    running: Option<Key>,
) -> Result<(Key, PeerStore), TunnelError> {
    prepare_locked(config, running).map(|(key, store, _)| (key, store))
}

/// How often the tunnel's loop looks whether another process saved the store.
pub const STORE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// What the device was last made from or written back to: that store version and the
/// peers the device then had. It tells a peer another process added to the store since
/// (never on the device: kept by a write-back) from one `wg set` removed (on the device
/// then: dropped).
#[derive(Debug)]
struct Synced {
    stamp: Option<StoreStamp>,
    on_device: std::collections::HashSet<Key>,
}

impl Synced {
    /// After the device was made from `store` (the peers [`peer_configs`] gives it).
    fn new(stamp: Option<StoreStamp>, store: &PeerStore) -> Synced {
        Synced {
            stamp,
            on_device: store
                .peers
                .iter()
                .filter(|p| !p.disabled)
                .map(|p| p.public_key)
                .collect(),
        }
    }
}

/// One version of the store file: a save (by anyone) puts a new file in place, a new
/// inode; an edit in place changes the modification time or the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoreStamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

impl StoreStamp {
    fn of(path: &Path) -> Option<StoreStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(StoreStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            len: m.len(),
        })
    }
}

/// [`prepare_gateway`], also returning the stamp of the store it left, taken under the
/// store's lock.
fn prepare_locked(
    config: &Config,
    running: Option<Key>,
) -> Result<(Key, PeerStore, Option<StoreStamp>), TunnelError> {
    let store_path = &config.tunnel.peers_file;
    let _only_writer = StoreLock::acquire(store_path)?;
    let (key, store) = prepare_under_lock(config, running)?;
    Ok((key, store, StoreStamp::of(store_path)))
}

fn prepare_under_lock(
    config: &Config,
    running: Option<Key>,
) -> Result<(Key, PeerStore), TunnelError> {
    let t = &config.tunnel;
    let (store_path, key_path) = (&t.peers_file, &t.private_key_file);
    let existing = match std::fs::symlink_metadata(store_path) {
        Ok(_) => Some(PeerStore::load(store_path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(TunnelError::Store(StoreError::Read {
                path: store_path.clone(),
                source,
            }))
        }
    };
    let key_file = || match running {
        Some(key) if !key_path.exists() => {
            if gateway_key::create(key_path, key)? {
                tracing::warn!(path = %key_path.display(), "the gateway's key file was gone; wrote it again from the running tunnel");
                Ok(key)
            } else {
                gateway_key::load(key_path)
            }
        }
        _ => gateway_key::load_or_create(key_path).map(|(k, _)| k),
    };
    let Some(mut store) = existing else {
        let key = key_file()?;
        let store = PeerStore::create(store_path, key.public(), t.listen_port)?;
        if store.public_key != key.public() {
            // Someone else's store appeared meanwhile; bring it in line.
            return refresh_public_key(store_path, store, key);
        }
        return Ok((key, store));
    };
    let Some(legacy) = store.take_private_key() else {
        if running.is_none()
            && !store.peers.is_empty()
            && std::fs::symlink_metadata(key_path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err(TunnelError::KeyFileLost {
                store: store_path.clone(),
                key_file: key_path.clone(),
                peers: store.peers.len(),
                public_key: store.public_key,
            });
        }
        let key = key_file()?;
        return refresh_public_key(store_path, store, key);
    };
    // A store from before the key file: move its key there, unless another key is there
    // (compared by public key: the same key clamped or not is the same gateway).
    if !gateway_key::create(key_path, legacy)?
        && gateway_key::load(key_path)?.public() != legacy.public()
    {
        return Err(TunnelError::KeyConflict {
            store: store_path.clone(),
            key_file: key_path.clone(),
        });
    }
    store.public_key = legacy.public();
    store.save(store_path)?;
    tracing::info!(
        store = %store_path.display(),
        key_file = %key_path.display(),
        "moved the gateway's private key out of the peer store into its own file"
    );
    Ok((legacy, store))
}

/// Saves `store` with `key`'s public half as `# PublicKey` if it has another, and makes
/// sure the store's mode lets the hub's user edit it.
fn refresh_public_key(
    path: &Path,
    mut store: PeerStore,
    key: Key,
) -> Result<(Key, PeerStore), TunnelError> {
    if store.public_key != key.public() {
        tracing::warn!(
            store = %path.display(),
            public_key = %key.public(),
            "the peer store named another gateway public key than the key file's; updated \
             it (client configs made with the old one no longer connect)"
        );
        store.public_key = key.public();
        store.save(path)?;
    } else {
        ensure_store_mode(path);
    }
    Ok((key, store))
}

/// A store written by an older version is 0600; the hub's user could not edit it.
fn ensure_store_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.permissions().mode() & 0o777 != STORE_MODE {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(STORE_MODE))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the peer store 0660; the hub may not be able to edit peers");
        }
    }
}

/// Starts reporting the tunnel's events to the hub of `config`, if its address is known.
fn start_events(config: &Config, device: &Arc<Device>) -> Option<crate::events::EventReporter> {
    use crate::events::{EventReporter, HubTarget, ReporterSettings};
    let Some(target) = HubTarget::from_config(config) else {
        tracing::info!("hub.http_listen has port 0: the tunnel cannot post its events to the hub");
        return None;
    };
    let device = device.clone();
    match EventReporter::start(target, ReporterSettings::default(), move || {
        crate::events::sample(&device)
    }) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tunnel's event reporter; no tunnel events");
            None
        }
    }
}

/// The device configuration of the store's enabled peers.
pub fn peer_configs(store: &PeerStore) -> Vec<PeerConfig> {
    store
        .peers
        .iter()
        .filter(|p| !p.disabled)
        .map(|p| PeerConfig {
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint.as_deref().and_then(resolve),
            persistent_keepalive: p.persistent_keepalive,
            name: p.name.clone(),
            role: p.role,
            expires: p.expires.map(SystemTime::from),
        })
        .collect()
}

fn resolve(endpoint: &str) -> Option<SocketAddr> {
    match endpoint.to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "cannot resolve peer endpoint; waiting for the peer to connect");
            None
        }
    }
}

/// Writes the device's peers back into the store, keeping disabled peers and each peer's
/// gatehouse fields; peers new to the store (added with `wg set`) get the installer role.
/// When another process saved the store after the device was last synced (`synced`),
/// the peers it added (never on the device) are kept, and the third value is true: the
/// store then holds more than the device, and the caller must have it applied.
fn write_back(
    config: &Config,
    device: &Device,
    synced: &Synced,
) -> Result<(PeerStore, Option<StoreStamp>, bool), TunnelError> {
    let path = &config.tunnel.peers_file;
    let _only_writer = StoreLock::acquire(path)?;
    let foreign = StoreStamp::of(path) != synced.stamp;
    let mut store = PeerStore::load(path)?;
    if store.has_private_key() {
        // Put back by hand while we run; a reload (SIGHUP) or restart moves it out.
        return Err(StoreError::HoldsPrivateKey { path: path.clone() }.into());
    }
    // `wg set <if> private-key`: the key file follows (a removed key leaves it as is).
    if let Some(k) = device.private_key() {
        if store.public_key != k.public() {
            gateway_key::save(&config.tunnel.private_key_file, k)?;
            store.public_key = k.public();
            tracing::info!(public_key = %store.public_key, "the gateway's key was changed over the UAPI; saved");
        }
    }
    store.listen_port = Some(device.listen_port());
    let live: Vec<PeerConfig> = device.peers().into_iter().map(|p| p.config).collect();
    store.peers.retain(|s| {
        s.disabled
            || live.iter().any(|c| c.public_key == s.public_key)
            || (foreign && !synced.on_device.contains(&s.public_key))
    });
    for c in live {
        let existing = store
            .peers
            .iter_mut()
            .find(|s| s.public_key == c.public_key);
        let entry = match existing {
            Some(e) => e,
            None => {
                store.peers.push(StoredPeer {
                    public_key: c.public_key,
                    preshared_key: None,
                    allowed_ips: Vec::new(),
                    endpoint: None,
                    persistent_keepalive: None,
                    name: None,
                    role: Role::Installer,
                    expires: None,
                    disabled: false,
                });
                let last = store.peers.len() - 1;
                &mut store.peers[last]
            }
        };
        entry.preshared_key = c.preshared_key;
        entry.allowed_ips = c.allowed_ips;
        entry.persistent_keepalive = c.persistent_keepalive;
        if let Some(ep) = c.endpoint {
            entry.endpoint = Some(ep.to_string());
        }
    }
    store.save(path)?;
    Ok((store, StoreStamp::of(path), foreign))
}

/// Generates the nftables rules for the store's active peers and applies them.
fn apply_firewall(config: &Config, store: &PeerStore) -> std::io::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let members: Vec<(Role, Cidr)> = store
        .peers
        .iter()
        .filter(|p| p.is_active(now))
        .flat_map(|p| p.allowed_ips.iter().map(move |c| (p.role, *c)))
        .collect();
    let t = &config.tunnel;
    let rules = firewall::ruleset(&t.interface, t.address, &Policy::from_config(t), &members);
    firewall::apply(&rules)
}

fn enable_forwarding() {
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        if let Err(e) = std::fs::write(Path::new(path), "1") {
            tracing::warn!(path, error = %e, "cannot enable forwarding; LAN forwards will not work");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::uapi::{DeviceUpdate, PeerUpdate};
    use std::fs;
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    /// A userspace tunnel on an ephemeral UDP port with everything under `dir` (the UAPI
    /// directory not made yet) and no hub to post events to.
    fn config_in(dir: &Path) -> Config {
        let text = format!(
            "[general]\ndata_dir = \"{data}\"\n\
             [tunnel]\ninterface = \"ghsvc0\"\nmode = \"userspace\"\n\
             firewall = \"none\"\nuapi_dir = \"{run}\"\n\
             [hub]\nhttp_listen = \"127.0.0.1:0\"\n",
            data = dir.join("data").display(),
            run = dir.join("run/wireguard").display(),
        );
        let mut config = Config::parse(&text, Path::new("test.toml")).unwrap();
        // Any free UDP port (the file format wants a fixed one).
        config.tunnel.listen_port = 0;
        config
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn live_key(config: &Config) -> Key {
        uapi::query(&config.uapi_socket())
            .unwrap()
            .private_key
            .unwrap()
    }

    #[test]
    fn first_start_makes_the_key_file_and_a_store_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        assert_eq!(t.private_key_file, dir.path().join("data/ghsvc0.key"));
        let service = TunnelService::start(&config).unwrap();
        let key = gateway_key::load(&t.private_key_file).unwrap();
        assert_eq!(live_key(&config), key);
        assert_eq!(
            fs::read_to_string(&t.private_key_file).unwrap(),
            format!("{}\n", key.to_base64())
        );
        let text = fs::read_to_string(&t.peers_file).unwrap();
        assert!(!text.contains("PrivateKey"), "{text}");
        assert!(!text.contains(&key.to_base64()), "{text}");
        assert!(
            text.contains(&format!("[Interface]\n# PublicKey = {}\n", key.public())),
            "{text}"
        );
        // The modes of the shared files and of the secret one.
        assert_eq!(mode(&t.private_key_file), 0o600);
        assert_eq!(mode(&t.peers_file), 0o660);
        assert_eq!(mode(&dir.path().join("data/ghsvc0.conf.lock")), 0o660);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        let socket = config.uapi_socket();
        assert!(fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket());
        assert_eq!(mode(&socket), 0o660);
        assert_eq!(mode(&dir.path().join("run/wireguard")), 0o750);
        assert_eq!(mode(&pid_file(&config)), 0o640);
        service.stop();
        // A second start keeps the key.
        let service = TunnelService::start(&config).unwrap();
        assert_eq!(live_key(&config), key);
        service.stop();
    }

    #[test]
    fn a_legacy_store_is_migrated_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        let old = Key::generate_private();
        let bob = Key::generate_private().public();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        fs::write(
            &t.peers_file,
            format!(
                "[Interface]\nPrivateKey = {old}\nListenPort = 0\n\n\
                 [Peer]\n# Name = bob\n# Role = admin\nPublicKey = {bob}\nAllowedIPs = 10.77.0.2/32\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&t.peers_file, fs::Permissions::from_mode(0o600)).unwrap();
        let service = TunnelService::start(&config).unwrap();
        assert_eq!(gateway_key::load(&t.private_key_file).unwrap(), old);
        assert_eq!(mode(&t.private_key_file), 0o600);
        let live = uapi::query(&config.uapi_socket()).unwrap();
        assert_eq!(live.private_key.unwrap().public(), old.public());
        assert_eq!(live.peers.len(), 1);
        assert_eq!(live.peers[0].public_key, bob);
        let text = fs::read_to_string(&t.peers_file).unwrap();
        assert!(!text.contains("PrivateKey"), "{text}");
        assert!(!text.contains(&old.to_base64()), "{text}");
        assert!(
            text.contains(&format!("# PublicKey = {}\n", old.public())),
            "{text}"
        );
        assert!(text.contains("# Name = bob\n# Role = admin\n"), "{text}");
        assert_eq!(mode(&t.peers_file), 0o660, "the hub's user can edit it now");
        service.stop();
    }

    /// The key file lost while the tunnel was stopped, peers in the store: a new random
    /// key would quietly lock every peer out, so the tunnel refuses and says what to do;
    /// a key written by hand (a new key on purpose) is taken.
    #[test]
    fn a_lost_key_file_with_peers_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        let service = TunnelService::start(&config).unwrap();
        let old = gateway_key::load(&t.private_key_file).unwrap();
        add(&config, "ada");
        service.stop();
        fs::remove_file(&t.private_key_file).unwrap();
        let e = TunnelService::start(&config).err().unwrap();
        assert!(
            matches!(e, TunnelError::KeyFileLost { peers: 1, .. }),
            "{e}"
        );
        let shown = e.to_string();
        for want in [
            t.private_key_file.display().to_string(),
            t.peers_file.display().to_string(),
            old.public().to_string(),
            "Restore".to_owned(),
            "wg genkey".to_owned(),
        ] {
            assert!(shown.contains(&want), "{want}: {shown}");
        }
        assert!(!t.private_key_file.exists(), "no key was made");
        // A new key on purpose: the store follows it.
        let new = Key::generate_private();
        gateway_key::create(&t.private_key_file, new).unwrap();
        let service = TunnelService::start(&config).unwrap();
        assert_eq!(live_key(&config), new);
        let store = PeerStore::load(&t.peers_file).unwrap();
        assert_eq!(store.public_key, new.public());
        assert_eq!(store.peers.len(), 1);
        service.stop();
        // Without peers nobody is locked out: a missing key file is simply made.
        fs::remove_file(&t.private_key_file).unwrap();
        fs::write(
            &t.peers_file,
            format!(
                "[Interface]\n# PublicKey = {}\nListenPort = 0\n",
                new.public()
            ),
        )
        .unwrap();
        let service = TunnelService::start(&config).unwrap();
        assert_ne!(live_key(&config), new);
        service.stop();
    }

    #[test]
    fn a_conflicting_key_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        let (in_store, in_file) = (Key::generate_private(), Key::generate_private());
        fs::create_dir_all(dir.path().join("data")).unwrap();
        let legacy = format!("[Interface]\nPrivateKey = {in_store}\nListenPort = 0\n");
        fs::write(&t.peers_file, &legacy).unwrap();
        gateway_key::create(&t.private_key_file, in_file).unwrap();
        let e = TunnelService::start(&config).err().unwrap();
        assert!(matches!(e, TunnelError::KeyConflict { .. }), "{e}");
        let shown = e.to_string();
        for want in [
            t.peers_file.display().to_string(),
            t.private_key_file.display().to_string(),
            "Delete the one that is wrong".to_owned(),
        ] {
            assert!(shown.contains(&want), "{want}: {shown}");
        }
        assert!(!shown.contains(&in_store.to_base64()[..20]), "{shown}");
        assert!(!shown.contains(&in_file.to_base64()[..20]), "{shown}");
        // Nothing changed, and nothing was left running.
        assert_eq!(fs::read_to_string(&t.peers_file).unwrap(), legacy);
        assert_eq!(gateway_key::load(&t.private_key_file).unwrap(), in_file);
        assert!(!config.uapi_socket().exists());
        // The same key in both is no conflict.
        gateway_key::save(&t.private_key_file, in_store).unwrap();
        let service = TunnelService::start(&config).unwrap();
        assert_eq!(live_key(&config), in_store);
        service.stop();
    }

    #[test]
    fn a_key_file_others_may_read_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        gateway_key::create(&t.private_key_file, Key::generate_private()).unwrap();
        fs::set_permissions(&t.private_key_file, fs::Permissions::from_mode(0o640)).unwrap();
        let e = TunnelService::start(&config).err().unwrap().to_string();
        assert!(e.contains(&t.private_key_file.display().to_string()), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!t.peers_file.exists(), "refused before anything was made");
    }

    #[test]
    fn wg_set_private_key_writes_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let t = &config.tunnel;
        let service = TunnelService::start(&config).unwrap();
        let new = Key::generate_private();
        let update = DeviceUpdate {
            private_key: Some(new),
            ..DeviceUpdate::default()
        };
        uapi::configure(&config.uapi_socket(), &update).unwrap();
        assert_eq!(live_key(&config), new);
        assert_eq!(gateway_key::load(&t.private_key_file).unwrap(), new);
        assert_eq!(mode(&t.private_key_file), 0o600);
        let store = PeerStore::load(&t.peers_file).unwrap();
        assert_eq!(store.public_key, new.public());
        assert!(!fs::read_to_string(&t.peers_file)
            .unwrap()
            .contains("PrivateKey"));
        // A reload keeps it, and so does a restart; a key file lost while the tunnel runs
        // is written again from the running key, not replaced by a new one.
        service.reload().unwrap();
        assert_eq!(live_key(&config), new);
        fs::remove_file(&t.private_key_file).unwrap();
        service.reload().unwrap();
        assert_eq!(live_key(&config), new);
        assert_eq!(gateway_key::load(&t.private_key_file).unwrap(), new);
        service.stop();
        let service = TunnelService::start(&config).unwrap();
        assert_eq!(live_key(&config), new);
        service.stop();
    }

    /// Another process (the hub, as another user on the box, cannot signal us) saves the
    /// store: the tunnel's poll applies it once; its own write-backs do not count.
    #[test]
    fn a_store_saved_by_another_process_is_reloaded_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let service = TunnelService::start(&config).unwrap();
        assert!(service.reload_if_changed().is_none(), "nothing changed yet");
        let added = crate::admin::add_peer(
            &config,
            &crate::admin::NewPeer {
                name: "ada".into(),
                role: gatehouse_config::Role::Admin,
                expires: None,
                public_key: None,
            },
        )
        .unwrap();
        assert_eq!(service.reload_if_changed().unwrap().unwrap(), 1);
        let peer = added.client.private_key.unwrap().public();
        assert_eq!(service.device().peer_keys(), vec![peer]);
        assert!(service.reload_if_changed().is_none(), "applied once");
        // A change over the UAPI is written back by the tunnel: not a change to reload.
        let update = DeviceUpdate {
            listen_port: Some(0),
            ..DeviceUpdate::default()
        };
        uapi::configure(&config.uapi_socket(), &update).unwrap();
        assert!(service.reload_if_changed().is_none());
        // A store that does not parse is reported once, and the running peers kept.
        fs::write(&config.tunnel.peers_file, "[Interface]\n").unwrap();
        assert!(service.reload_if_changed().unwrap().is_err());
        assert!(service.reload_if_changed().is_none());
        assert_eq!(service.device().peer_keys(), vec![peer]);
        service.stop();
    }

    fn add(config: &Config, name: &str) -> Key {
        let added = crate::admin::add_peer(
            config,
            &crate::admin::NewPeer {
                name: name.into(),
                role: gatehouse_config::Role::Admin,
                expires: None,
                public_key: None,
            },
        )
        .unwrap();
        added.client.private_key.unwrap().public()
    }

    fn stored_keys(config: &Config) -> Vec<Key> {
        let mut keys: Vec<Key> = PeerStore::load(&config.tunnel.peers_file)
            .unwrap()
            .peers
            .iter()
            .map(|p| p.public_key)
            .collect();
        keys.sort();
        keys
    }

    /// The hub saves a new peer, and before the tunnel's next poll someone changes the
    /// device with `wg set` (removing one peer, adding another): the write-back keeps the
    /// hub's peer (it was never on the device), drops the removed one (it was), and the
    /// next poll puts the hub's peer on the device. Before, the write-back wrote the
    /// device's peers over the store and the console's new peer was lost.
    #[test]
    fn a_wg_set_keeps_a_peer_another_process_just_saved() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let service = TunnelService::start(&config).unwrap();
        let old = add(&config, "old");
        assert_eq!(service.reload_if_changed().unwrap().unwrap(), 1);
        let hubs = add(&config, "from-the-hub");
        let shells = Key::generate_private().public();
        let update = DeviceUpdate {
            peers: vec![
                PeerUpdate {
                    remove: true,
                    ..PeerUpdate::new(old)
                },
                PeerUpdate::new(shells),
            ],
            ..DeviceUpdate::default()
        };
        uapi::configure(&config.uapi_socket(), &update).unwrap();
        let mut want = vec![hubs, shells];
        want.sort();
        assert_eq!(stored_keys(&config), want, "the store after the write-back");
        // The device does not have the hub's peer yet: the poll applies the store.
        assert_eq!(service.device().peer_keys(), vec![shells]);
        assert_eq!(service.reload_if_changed().unwrap().unwrap(), 2);
        let mut on_device = service.device().peer_keys();
        on_device.sort();
        assert_eq!(on_device, want);
        assert!(service.reload_if_changed().is_none(), "applied once");
        // Without a save by anyone else, a removal with `wg set` is written back as such.
        let update = DeviceUpdate {
            peers: vec![PeerUpdate {
                remove: true,
                ..PeerUpdate::new(hubs)
            }],
            ..DeviceUpdate::default()
        };
        uapi::configure(&config.uapi_socket(), &update).unwrap();
        assert_eq!(stored_keys(&config), vec![shells]);
        assert!(service.reload_if_changed().is_none());
        service.stop();
    }
}
