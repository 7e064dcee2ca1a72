//! What a new sensor node is set up with: its address and key (made by the store, shown
//! once) and the radio channel of the site's forwarder (`[lora]` in the config), as the
//! TOML block the node simulator (`lora-sim`) and the firmware's board config read, and
//! as JSON for the admin API. `gatehouse sensor add` prints the TOML; `POST
//! /api/v1/sensors` answers both.
//!
//! ```toml
//! [[sensor]]
//! name = "front-door"
//! kind = "door"
//! dev_addr = "1a2b3c4d"
//! key = "000102030405060708090a0b0c0d0e0f"
//! frequency_hz = 868100000
//! spreading_factor = 7
//! bandwidth_hz = 125000
//! heartbeat_s = 300
//! ```
//! (`dev_addr`: 8 hex digits; `key`: 32 hex digits, AES-128.) Several blocks in one file
//! describe several nodes.

use gatehouse_store::sensors::{NewSensorCredentials, SensorKind};
use serde::Serialize;

/// A node's provisioning.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SensorProvisioning {
    pub name: String,
    pub kind: SensorKind,
    /// 8 lowercase hex digits.
    pub dev_addr: String,
    /// 32 lowercase hex digits.
    pub key: String,
    pub frequency_hz: u32,
    pub spreading_factor: u8,
    pub bandwidth_hz: u32,
    pub heartbeat_s: u32,
}

impl std::fmt::Debug for SensorProvisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorProvisioning")
            .field("name", &self.name)
            .field("dev_addr", &self.dev_addr)
            .finish_non_exhaustive()
    }
}

impl SensorProvisioning {
    /// The provisioning of a sensor just added (`creds`), on the channel of `lora`.
    pub fn new(
        name: &str,
        kind: SensorKind,
        heartbeat_s: u32,
        creds: &NewSensorCredentials,
        lora: &gatehouse_config::Lora,
    ) -> SensorProvisioning {
        SensorProvisioning {
            name: name.to_owned(),
            kind,
            dev_addr: format!("{:08x}", creds.dev_addr),
            key: creds.key.to_hex(),
            frequency_hz: lora.frequency_hz,
            spreading_factor: lora.spreading_factor,
            bandwidth_hz: lora.bandwidth_hz,
            heartbeat_s,
        }
    }

    /// The `[[sensor]]` TOML block (sensor names are `[A-Za-z0-9._-]`: no quoting needed
    /// beyond the quotes).
    pub fn to_toml(&self) -> String {
        format!(
            "[[sensor]]\nname = \"{}\"\nkind = \"{}\"\ndev_addr = \"{}\"\nkey = \"{}\"\n\
             frequency_hz = {}\nspreading_factor = {}\nbandwidth_hz = {}\nheartbeat_s = {}\n",
            self.name,
            self.kind,
            self.dev_addr,
            self.key,
            self.frequency_hz,
            self.spreading_factor,
            self.bandwidth_hz,
            self.heartbeat_s
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_toml_block_names_everything_the_node_needs() {
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::Store::open(dir.path()).unwrap();
        let creds = store
            .add_sensor(
                &gatehouse_store::sensors::NewSensor {
                    name: "front-door".into(),
                    kind: SensorKind::Door,
                    heartbeat_s: 300,
                },
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let p = SensorProvisioning::new(
            "front-door",
            SensorKind::Door,
            300,
            &creds,
            &gatehouse_config::Lora::default(),
        );
        let toml = p.to_toml();
        assert!(toml.starts_with("[[sensor]]\nname = \"front-door\"\nkind = \"door\"\n"));
        assert!(toml.contains(&format!("dev_addr = \"{:08x}\"\n", creds.dev_addr)));
        assert!(toml.contains(&format!("key = \"{}\"\n", creds.key.to_hex())));
        assert!(toml.contains("frequency_hz = 868100000\nspreading_factor = 7\nbandwidth_hz = 125000\nheartbeat_s = 300\n"));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["kind"], "door");
        assert_eq!(json["key"], creds.key.to_hex());
        assert!(!format!("{p:?}").contains(&creds.key.to_hex()));
    }
}
