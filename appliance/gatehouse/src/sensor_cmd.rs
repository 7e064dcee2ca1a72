//! `gatehouse sensor ...`: the LoRa sensor registry from the box's shell. Arguments and
//! printing only: the registry is `gatehouse_store::sensors`, the provisioning block
//! `gatehouse_hub::lora::provisioning` (the same as the admin API's answer).
//!
//! `sensor add` prints the new node's provisioning on stdout as the `[[sensor]]` TOML
//! block the node simulator and the firmware's board config read (its key shown this
//! once); append several to one file for several nodes. The radio channel comes from the
//! `[lora]` section of the config.

use anyhow::{Context, Result};
use clap::Subcommand;
use gatehouse_config::Config;
use gatehouse_hub::lora::provisioning::SensorProvisioning;
use gatehouse_store::sensors::{parse_heartbeat, NewSensor, SensorKind, SensorRecord};
use gatehouse_store::Store;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

#[derive(Subcommand)]
pub enum SensorCommand {
    /// Add a sensor node: makes its address and AES-128 key and prints its provisioning
    /// (TOML, for the node simulator or the board config; the key is shown only now).
    Add {
        /// A short name (letters, digits, '-', '_', '.'): the events' source.
        name: String,
        /// door (contact), pir (motion), smoke or temp (temperature / humidity).
        #[arg(long, value_parser = parse_kind)]
        kind: SensorKind,
        /// How often the node sends a heartbeat: seconds (300, 300s), minutes (5m) or
        /// hours (1h). Silent for 3 of them, it is reported missing.
        #[arg(long, default_value = "5m", value_parser = parse_interval)]
        heartbeat: u32,
    },
    /// List sensors: name, kind, address, state, last heard, battery, signal.
    List,
    /// Refuse a sensor's frames (and stop supervising it), keeping it registered.
    Disable { name: String },
    /// Accept a disabled sensor's frames again.
    Enable { name: String },
    /// Remove a sensor for good (its events stay).
    Remove { name: String },
}

fn parse_kind(s: &str) -> Result<SensorKind, String> {
    s.parse()
        .map_err(|e: gatehouse_store::StoreError| e.to_string())
}

fn parse_interval(s: &str) -> Result<u32, String> {
    parse_heartbeat(s).map_err(|e| e.to_string())
}

fn open(config: &Config) -> Result<Store> {
    Store::open(&config.general.data_dir).context("cannot open the database")
}

pub fn run(config: &Config, cmd: &SensorCommand) -> Result<()> {
    let store = open(config)?;
    match cmd {
        SensorCommand::Add {
            name,
            kind,
            heartbeat,
        } => {
            let creds = store.add_sensor(
                &NewSensor {
                    name: name.clone(),
                    kind: *kind,
                    heartbeat_s: *heartbeat,
                },
                OffsetDateTime::now_utc(),
            )?;
            let p = SensorProvisioning::new(name, *kind, *heartbeat, &creds, &config.lora);
            eprintln!(
                "sensor {name:?} added (id {}); its provisioning follows. The key is shown \
                 only now: keep it for the node.",
                creds.id
            );
            print!("{}", p.to_toml());
            Ok(())
        }
        SensorCommand::List => {
            let offset = UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
                .unwrap_or(UtcOffset::UTC);
            print!("{}", list(&store.list_sensors()?, offset));
            Ok(())
        }
        SensorCommand::Disable { name } => {
            let s = store.sensor_by_name(name)?;
            store.set_sensor_enabled(s.id, false)?;
            eprintln!("sensor {name:?} disabled: its frames are refused");
            Ok(())
        }
        SensorCommand::Enable { name } => {
            let s = store.sensor_by_name(name)?;
            store.set_sensor_enabled(s.id, true)?;
            eprintln!("sensor {name:?} enabled");
            Ok(())
        }
        SensorCommand::Remove { name } => {
            let s = store.sensor_by_name(name)?;
            store.remove_sensor(s.id)?;
            eprintln!("sensor {name:?} removed");
            Ok(())
        }
    }
}

/// The table `sensor list` prints.
fn list(sensors: &[SensorRecord], offset: UtcOffset) -> String {
    let mut out = format!(
        "{:<4} {:<20} {:<6} {:<9} {:<8} {:<10} {:<25} {:>8} {:>5}\n",
        "ID", "NAME", "KIND", "DEV_ADDR", "STATE", "HEARTBEAT", "LAST SEEN", "BATTERY", "RSSI"
    );
    for s in sensors {
        let state = match (s.enabled, s.missing()) {
            (false, _) => "disabled",
            (true, true) => "missing",
            (true, false) => "enabled",
        };
        let seen = s.last_seen.map_or_else(
            || "never".to_owned(),
            |t| {
                t.to_offset(offset)
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| t.unix_timestamp().to_string())
            },
        );
        let battery = s
            .battery_mv
            .map_or_else(|| "-".to_owned(), |mv| format!("{mv} mV"));
        let rssi = s
            .last_rssi
            .map_or_else(|| "-".to_owned(), |r| r.to_string());
        out.push_str(&format!(
            "{:<4} {:<20} {:<6} {:08x}  {:<8} {:<10} {:<25} {:>8} {:>5}\n",
            s.id,
            s.name,
            s.kind,
            s.dev_addr,
            state,
            format!("{}s", s.heartbeat_s),
            seen,
            battery,
            rssi
        ));
    }
    out
}
