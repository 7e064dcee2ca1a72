//! The UAPI side of a running device: answers `wg show` / `wg showconf` from the live
//! [`Device`] and applies `wg set` / `wg setconf` to it, rebinding the UDP socket when the
//! listen port changes. `gatehouse wg` uses it as is; `gatehouse tunnel` adds a hook that
//! writes every change back to the peer store.

use crate::dataplane::SharedSocket;
use crate::device::{Device, PeerConfig};
use crate::uapi::{DeviceInfo, DeviceUpdate, PeerInfo, UapiError, UapiHandler};
use std::sync::{Arc, Mutex};

type ChangeHook = Box<dyn Fn(&Device) + Send + Sync>;

/// A [`UapiHandler`] over a live device.
pub struct DeviceControl {
    device: Arc<Device>,
    socket: Arc<SharedSocket>,
    /// Serialises `set` requests so each applies as one unit.
    applying: Mutex<()>,
    on_change: Option<ChangeHook>,
}

impl DeviceControl {
    pub fn new(device: Arc<Device>, socket: Arc<SharedSocket>) -> DeviceControl {
        DeviceControl {
            device,
            socket,
            applying: Mutex::new(()),
            on_change: None,
        }
    }

    /// Runs `hook` after every successful `set`.
    pub fn on_change(mut self, hook: impl Fn(&Device) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Box::new(hook));
        self
    }
}

impl UapiHandler for DeviceControl {
    fn get(&self) -> DeviceInfo {
        let d = &self.device;
        DeviceInfo {
            private_key: d.private_key(),
            listen_port: d.listen_port(),
            fwmark: d.fwmark(),
            peers: d
                .peers()
                .into_iter()
                .map(|p| PeerInfo {
                    public_key: p.config.public_key,
                    preshared_key: p.config.preshared_key,
                    endpoint: p.endpoint,
                    last_handshake: p.last_handshake,
                    tx_bytes: p.tx_bytes,
                    rx_bytes: p.rx_bytes,
                    persistent_keepalive: p.config.persistent_keepalive.unwrap_or(0),
                    allowed_ips: p.config.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let d = &self.device;
        if let Some(port) = update.listen_port {
            if port != d.listen_port() || port == 0 {
                let bound = self
                    .socket
                    .rebind(port)
                    .map_err(|e| UapiError::from_io(&e))?;
                d.set_listen_port(bound);
            }
        }
        if let Some(key) = update.private_key {
            d.set_private_key((!key.is_zero()).then_some(key));
        }
        if let Some(mark) = update.fwmark {
            d.set_fwmark(mark);
        }
        if update.replace_peers {
            for k in d.peer_keys() {
                d.remove_peer(&k);
            }
        }
        for p in update.peers {
            if p.remove {
                d.remove_peer(&p.public_key);
                continue;
            }
            let existing = d.peer_config(&p.public_key);
            if p.update_only && existing.is_none() {
                continue;
            }
            let mut c = existing.unwrap_or_else(|| PeerConfig::new(p.public_key));
            if let Some(psk) = p.preshared_key {
                c.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            if let Some(ep) = p.endpoint {
                c.endpoint = Some(ep);
            }
            if let Some(k) = p.persistent_keepalive {
                c.persistent_keepalive = (k > 0).then_some(k);
            }
            if p.replace_allowed_ips {
                c.allowed_ips.clear();
            }
            for ip in p.allowed_ips {
                if !c.allowed_ips.contains(&ip) {
                    c.allowed_ips.push(ip);
                }
            }
            c.allowed_ips
                .retain(|ip| !p.remove_allowed_ips.contains(ip));
            d.upsert_peer(c);
        }
        if let Some(hook) = &self.on_change {
            hook(d);
        }
        Ok(())
    }
}
