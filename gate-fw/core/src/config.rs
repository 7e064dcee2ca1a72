//! [`GateConfig`]: what a gate is told at installation (its id and keys, as `gatehouse gate
//! add` prints them) and its timings.

use gatehouse_gate_proto::GateKey;

/// A gate's identity, keys and timings. Build it with [`GateConfig::new`] and change the
/// timings you need; every duration is in milliseconds of the monotonic clock.
#[derive(Clone)]
pub struct GateConfig {
    /// The gate's id at the hub (the `gate_id` of every frame).
    pub gate_id: u32,
    /// The gate's own key: seals every frame it sends, verifies every frame it accepts.
    pub key: GateKey,
    /// The site's card key, `SiteKey::card_key()` on the hub (the same for every gate): the
    /// first stage of the allow-list entry hashes ([`HmacEntryScheme`](crate::HmacEntryScheme)).
    pub card_key: [u8; 32],
    /// The gate's allow-list key, `SiteKey::gate_key(gate_id)` on the hub: the second
    /// stage of the allow-list entry hashes ([`HmacEntryScheme`](crate::HmacEntryScheme)).
    pub allow_list_key: [u8; 32],
    /// Relay pulse for an offline grant, the exit button, and a hub grant that says 0.
    pub relay_ms: u16,
    /// How long to wait for the hub's decision before deciding from the allow-list.
    pub request_timeout_ms: u32,
    /// A door open longer than this is reported once as held open.
    pub held_open_ms: u32,
    /// How long after the relay pulse ends the door may still open without being forced
    /// (contact latency, a slow door).
    pub door_grace_ms: u32,
    /// Heartbeat period while the link is up (one is also sent when it comes up).
    pub heartbeat_interval_ms: u32,
    /// Resend an offline batch that was not acknowledged within this time.
    pub offline_ack_timeout_ms: u32,
    /// Ask for allow-list changes this often while the link is up (and at every link-up).
    pub allow_list_refresh_ms: u32,
    /// Reported in the heartbeat flags.
    pub on_mains: bool,
}

impl GateConfig {
    /// Defaults: relay 3 s, request timeout 1.5 s, held open after 30 s, door grace 1 s,
    /// heartbeat every 60 s, offline batch resent after 10 s, allow-list refresh every
    /// 10 min, on mains.
    pub fn new(
        gate_id: u32,
        key: GateKey,
        card_key: [u8; 32],
        allow_list_key: [u8; 32],
    ) -> GateConfig {
        GateConfig {
            gate_id,
            key,
            card_key,
            allow_list_key,
            relay_ms: 3_000,
            request_timeout_ms: 1_500,
            held_open_ms: 30_000,
            door_grace_ms: 1_000,
            heartbeat_interval_ms: 60_000,
            offline_ack_timeout_ms: 10_000,
            allow_list_refresh_ms: 600_000,
            on_mains: true,
        }
    }
}

/// Keys stay out of logs.
impl core::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GateConfig")
            .field("gate_id", &self.gate_id)
            .field("key", &"<redacted>")
            .field("card_key", &"<redacted>")
            .field("allow_list_key", &"<redacted>")
            .field("relay_ms", &self.relay_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("held_open_ms", &self.held_open_ms)
            .field("door_grace_ms", &self.door_grace_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("offline_ack_timeout_ms", &self.offline_ack_timeout_ms)
            .field("allow_list_refresh_ms", &self.allow_list_refresh_ms)
            .field("on_mains", &self.on_mains)
            .finish()
    }
}
