//! `gatehouse tunnel`: the box's WireGuard service, configured from the gatehouse config
//! and the peer store.
//!
//! The peer store file is the truth. Start and [`TunnelService::reload`] (SIGHUP, or
//! `gatehouse peer ...` through the pid file) make the device's peers exactly the store's
//! enabled peers, keeping sessions of unchanged peers. Changes made over the UAPI socket
//! (`wg set`) are applied live and written back to the store, so they survive restarts.

use crate::control::DeviceControl;
use crate::dataplane::{DataPlane, SharedSocket, TunnelSide};
use crate::device::{Device, PeerConfig, SystemClock};
use crate::firewall;
use crate::netstack::NetStack;
use crate::peer_store::{PeerStore, StoreError, StoredPeer};
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
    /// Serialises writes of the peer store within this process.
    store_lock: Arc<Mutex<()>>,
    /// Posts peer and handshake events to the hub (see [`crate::events`]).
    events: Option<crate::events::EventReporter>,
}

/// Where `gatehouse tunnel` writes its pid, so `gatehouse peer ...` can signal a reload.
pub fn pid_file(config: &Config) -> PathBuf {
    config
        .general
        .data_dir
        .join(format!("{}.pid", config.tunnel.interface))
}

impl TunnelService {
    pub fn start(config: &Config) -> Result<TunnelService, TunnelError> {
        let t = &config.tunnel;
        let store = PeerStore::load_or_create(&t.peers_file, t.listen_port)?;
        let policy = Policy::from_config(t);
        let device = Arc::new(Device::new(Arc::new(SystemClock), Some(policy.clone())));
        device.set_private_key(Some(store.private_key));
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

        let store_lock = Arc::new(Mutex::new(()));
        let control = {
            let (config, lock) = (config.clone(), store_lock.clone());
            DeviceControl::new(device.clone(), socket).on_change(move |d| {
                let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                match write_back(&config, d) {
                    Ok(store) => {
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

        let pid = pid_file(config);
        std::fs::write(&pid, format!("{}\n", std::process::id()))
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

    /// Re-reads the peer store and applies it; returns the number of active peers.
    pub fn reload(&self) -> Result<usize, TunnelError> {
        let _g = self.store_lock.lock().unwrap_or_else(|e| e.into_inner());
        let store = PeerStore::load(&self.config.tunnel.peers_file)?;
        if self.device.private_key() != Some(store.private_key) {
            self.device.set_private_key(Some(store.private_key));
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
fn write_back(config: &Config, device: &Device) -> Result<PeerStore, StoreError> {
    let path = &config.tunnel.peers_file;
    let _only_writer = crate::peer_store::StoreLock::acquire(path)?;
    let mut store = PeerStore::load(path)?;
    if let Some(k) = device.private_key() {
        store.private_key = k;
    }
    store.listen_port = Some(device.listen_port());
    let live: Vec<PeerConfig> = device.peers().into_iter().map(|p| p.config).collect();
    store
        .peers
        .retain(|s| s.disabled || live.iter().any(|c| c.public_key == s.public_key));
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
    Ok(store)
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
