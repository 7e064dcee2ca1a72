//! `gatehouse gate|person|level|card|log ...`: the access-control CLI on the box. Arguments
//! and printing only; every change is a `gatehouse_store::Store` call (the same operations
//! the admin API offers).
//!
//! Promises:
//! - A raw card id (ACC_ID) is parsed here into the bytes a reader sends, handed to the
//!   store as HMAC input, and never printed, logged or echoed in an error message.
//! - A change the user asked for is saved whole or not at all: where one command needs two
//!   store calls (a new zone for a gate, a level and its gates), a failure of the second
//!   undoes the first.
//! - Dates and times are read and shown in the site's time (`hub.timezone_offset`), the
//!   wall clock schedules and holidays use.
//! - Every error a user can cause comes back as one line naming what was wrong; `main`
//!   prints it and exits 1.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use gatehouse_access::model::{
    Direction, HolidayRule, Level, Schedule, Validity, Window, MINUTES_PER_DAY,
};
use gatehouse_config::Config;
use gatehouse_store::log::MAX_QUERY_LIMIT;
use gatehouse_store::{
    CardRecord, LogFilter, LogRow, NewCard, NewGate, SiteKey, Store, StoreError,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time, UtcOffset};

/// How often `log tail --follow` looks for new rows.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The HTTP transport's path (issue 3: `POST /api/v1/access/check`).
const CHECK_PATH: &str = "/api/v1/access/check";

// ---- arguments ---------------------------------------------------------------------

#[derive(Subcommand)]
pub enum GateCommand {
    /// Add a gate and print its id, its secret (shown once) and its connection settings.
    Add {
        /// The gate's name: 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        /// The zone the gate belongs to; created (without anti-passback) if missing.
        #[arg(long, default_value = "main")]
        zone: String,
        /// Whether passing the gate enters or leaves its zone (for anti-passback).
        #[arg(long, value_enum, default_value_t = DirectionArg::In)]
        direction: DirectionArg,
        /// How long the relay holds the door open on a grant, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        relay_ms: u32,
        /// Only accept the gate from this address or CIDR prefix (repeat or comma-separate;
        /// default: from anywhere).
        #[arg(long = "allow-ip", value_name = "CIDR", value_delimiter = ',')]
        allow_ip: Vec<String>,
    },
    /// List gates: id, name, zone, direction, relay time, state, MQTT user, allowed IPs.
    List,
}

#[derive(Subcommand)]
pub enum PersonCommand {
    /// Add a person (cards and access levels are then given to them by name).
    Add {
        /// The person's name as shown in lists and the log (unique).
        name: String,
        #[command(flatten)]
        validity: ValidityArgs,
    },
    /// List people: id, name, state, validity, access levels.
    List,
}

#[derive(Subcommand)]
pub enum LevelCommand {
    /// Add an access level: a set of gates open on a weekly schedule.
    Add {
        /// The level's name (unique).
        name: String,
        /// The gates the level opens, by name, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_name = "G1,G2")]
        gates: Vec<String>,
        /// When the gates open, in local time: "always", or clauses separated by ';', each
        /// days then times, like "mon-fri 08:00-18:00; sat 09:00-12:00". Days: mon tue wed
        /// thu fri sat sun, ranges (mon-fri, fri-mon) or lists (mon,wed), or "daily". Times:
        /// HH:MM-HH:MM, end exclusive, up to 24:00, comma-separated; an overnight shift is
        /// two windows ("mon 22:00-24:00; tue 00:00-06:00").
        #[arg(long, value_name = "SPEC")]
        schedule: String,
        /// On site holidays: closed all day, or ignore the holiday and use the weekday's
        /// windows.
        #[arg(long, value_enum, default_value_t = HolidaysArg::Closed)]
        holidays: HolidaysArg,
    },
    /// Give a person an access level.
    Grant {
        /// The level's name.
        level: String,
        /// The person's name.
        #[arg(long)]
        person: String,
    },
    /// List levels: id, name, gates, schedule.
    List,
}

#[derive(Subcommand)]
pub enum CardCommand {
    /// Enrol a card for a person (only a keyed hash of its id is stored, never the id).
    Add {
        /// The card's id as printed on it or read by the reader: decimal digits (e.g.
        /// 0004123456, taken as a big-endian number of at least 4 bytes) or hex bytes as the
        /// reader sends them, with 0x or colons (e.g. 0x04A1B2C3D4E5F6, 04:A1:B2:C3). It is
        /// never stored or printed back.
        #[arg(value_name = "ACC_ID")]
        acc_id: String,
        /// The card's owner, by name.
        #[arg(long)]
        person: String,
        /// A master card: opens every enabled gate at any time (still subject to its own
        /// and its owner's validity and enabled state).
        #[arg(long)]
        master: bool,
        /// Last day the card works (YYYY-MM-DD, through the end of that day, site time) or an
        /// RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        valid_until: Option<String>,
        /// Free text to tell cards apart ("blue fob"); must not contain the card id.
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
    },
    /// List cards: id, owner, state, master, validity, label (never the card's raw id,
    /// which is not stored).
    List {
        /// Only this person's cards.
        #[arg(long)]
        person: Option<String>,
    },
    /// Stop a card from opening anything, keeping it enrolled.
    Disable(CardRef),
    /// Let a disabled card work again.
    Enable(CardRef),
    /// Remove a card for good (its log rows stay).
    Remove(CardRef),
}

/// Which card: its number from `card list`, or the raw id read from it.
#[derive(Args)]
pub struct CardRef {
    /// The card's number as shown by `gatehouse card list`.
    #[arg(required_unless_present = "acc_id", conflicts_with = "acc_id")]
    id: Option<i64>,
    /// Find the card by its raw id instead (same forms as `card add`).
    #[arg(long, value_name = "ACC_ID")]
    acc_id: Option<String>,
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Print the newest access decisions: time (RFC 3339, site time), gate, card, person,
    /// decision, reason, source (online: by the hub; offline: by the gate from its
    /// allow-list).
    Tail {
        /// How many rows.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        n: u32,
        /// Keep printing new decisions as they are logged, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Args)]
pub struct ValidityArgs {
    /// First day the person may pass (YYYY-MM-DD, from the start of that day, site time) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    valid_from: Option<String>,
    /// Last day the person may pass (YYYY-MM-DD, through the end of that day, site time) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    valid_until: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DirectionArg {
    In,
    Out,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum HolidaysArg {
    /// Closed all day.
    Closed,
    /// The weekday's windows apply.
    Ignore,
}

// ---- commands ----------------------------------------------------------------------

fn open(config: &Config) -> Result<Store> {
    Store::open(&config.general.data_dir).context("cannot open the access database")
}

/// The site's fixed UTC offset, the wall clock of dates given and shown here.
fn site_offset(config: &Config) -> Result<UtcOffset> {
    UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
        .map_err(|e| anyhow!("hub.timezone_offset: {e}"))
}

fn site_key(config: &Config) -> Result<SiteKey> {
    SiteKey::load_or_create(&config.general.data_dir).context("cannot load the site key")
}

pub fn gate(config: &Config, cmd: &GateCommand) -> Result<()> {
    let store = open(config)?;
    match cmd {
        GateCommand::Add {
            name,
            zone,
            direction,
            relay_ms,
            allow_ip,
        } => gate_add(config, &store, name, zone, *direction, *relay_ms, allow_ip),
        GateCommand::List => gate_list(&store, site_offset(config)?),
    }
}

fn gate_add(
    config: &Config,
    store: &Store,
    name: &str,
    zone: &str,
    direction: DirectionArg,
    relay_ms: u32,
    allow_ip: &[String],
) -> Result<()> {
    // Refuse a taken name before possibly creating the zone.
    match store.gate_by_name(name) {
        Ok(_) => bail!(StoreError::NameTaken {
            entity: gatehouse_store::Entity::Gate,
            name: name.to_owned(),
        }),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let (zone_id, zone_created) = match store.zone_by_name(zone) {
        Ok(z) => (z.id, false),
        Err(StoreError::NotFound { .. }) => (store.add_zone(zone, false)?, true),
        Err(e) => return Err(e.into()),
    };
    let new = NewGate {
        name: name.to_owned(),
        zone: zone_id,
        direction: match direction {
            DirectionArg::In => Direction::In,
            DirectionArg::Out => Direction::Out,
        },
        relay_ms,
        allowed_ips: (!allow_ip.is_empty()).then(|| allow_ip.to_vec()),
        mqtt_username: None,
    };
    let creds = match store.add_gate(&new) {
        Ok(c) => c,
        Err(e) => {
            if zone_created {
                if let Err(undo) = store.remove_zone(zone_id) {
                    return Err(anyhow!(
                        "{e}; and the zone {zone:?} created for it could not be removed again: {undo}"
                    ));
                }
            }
            return Err(e.into());
        }
    };
    let secret = hex(creds.secret.expose());
    if zone_created {
        eprintln!("created zone {zone:?}");
    }
    println!("gate {name:?} added");
    println!("  gate id:      {}", creds.id);
    println!("  secret:       {secret}");
    println!("                (shown only this once; write it into the gate now)");
    println!("  HTTP check:   POST {}", check_url(config.hub.http_listen));
    println!("                Authorization: Bearer {secret}");
    println!(
        "                body {{\"gate_id\": {}, \"acc_id\": \"<card id in hex>\"}}",
        creds.id
    );
    match config.hub.gate_tcp_listen {
        Some(addr) => println!(
            "  raw TCP:      {} (key: the secret above)",
            host_port(addr)
        ),
        None => println!("  raw TCP:      off (hub.gate_tcp_listen is empty)"),
    }
    let mqtt = &config.hub.mqtt;
    let broker = match mqtt.mode {
        gatehouse_config::MqttMode::Off => None,
        gatehouse_config::MqttMode::Embedded if mqtt.listen.port() == 0 => {
            Some("the port the hub logs at start (hub.mqtt.listen has port 0)".to_owned())
        }
        gatehouse_config::MqttMode::Embedded => Some(host_port(mqtt.listen)),
        gatehouse_config::MqttMode::External => Some(mqtt.broker.clone()),
    };
    match broker {
        None => println!("  MQTT:         off (hub.mqtt.mode = \"off\")"),
        Some(broker) => {
            println!("  MQTT broker:  {broker}");
            println!("  MQTT user:    {}", creds.mqtt_username);
            println!(
                "  MQTT password: {} (derived from the secret)",
                gatehouse_hub::mqtt::gate_password(creds.secret.expose())
            );
            println!(
                "  MQTT topics:  publish {}, subscribe {}/{}",
                mqtt.request_topic, mqtt.response_prefix, creds.id
            );
        }
    }
    Ok(())
}

/// The check URL gates use; an unspecified listen address (0.0.0.0, ::) is shown as a
/// placeholder for the box's LAN address.
fn check_url(listen: SocketAddr) -> String {
    format!("http://{}{CHECK_PATH}", host_port(listen))
}

/// `host:port` as a gate should dial it; an unspecified listen address is shown as a
/// placeholder for the box's LAN address.
fn host_port(listen: SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "<this box's address>".to_owned()
    } else {
        match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("{host}:{}", listen.port())
}

fn gate_list(store: &Store, tz: UtcOffset) -> Result<()> {
    let zones: HashMap<i64, String> = store
        .list_zones()?
        .into_iter()
        .map(|z| (z.id, z.name))
        .collect();
    println!(
        "{:>4} {:<20} {:<12} {:<4} {:>8} {:<9} {:<24} {:<20} LAST SEEN",
        "ID", "NAME", "ZONE", "DIR", "RELAY", "STATE", "MQTT USER", "ALLOWED IPS"
    );
    for g in store.list_gates()? {
        println!(
            "{:>4} {:<20} {:<12} {:<4} {:>8} {:<9} {:<24} {:<20} {}",
            g.gate.id,
            g.gate.name,
            zones
                .get(&g.gate.zone)
                .cloned()
                .unwrap_or_else(|| format!("#{}", g.gate.zone)),
            match g.gate.direction {
                Direction::In => "in",
                Direction::Out => "out",
            },
            format!("{} ms", g.gate.relay_ms),
            enabled_str(g.gate.enabled),
            g.mqtt_username,
            g.allowed_ips.map_or("any".to_owned(), |ips| ips.join(",")),
            g.last_seen.map_or("never".to_owned(), |t| rfc3339(t, tz)),
        );
    }
    Ok(())
}

pub fn person(config: &Config, cmd: &PersonCommand) -> Result<()> {
    let store = open(config)?;
    let tz = site_offset(config)?;
    match cmd {
        PersonCommand::Add { name, validity } => {
            let validity = validity.parse(tz)?;
            let id = store.add_person(name, validity)?;
            println!(
                "person {name:?} added (id {id}, {})",
                validity_str(&validity, tz)
            );
        }
        PersonCommand::List => {
            let levels = level_names(&store)?;
            println!(
                "{:>4} {:<24} {:<9} {:<36} LEVELS",
                "ID", "NAME", "STATE", "VALID"
            );
            for p in store.list_people()? {
                let lv: Vec<String> = p.levels.iter().map(|l| name_of(&levels, *l)).collect();
                println!(
                    "{:>4} {:<24} {:<9} {:<36} {}",
                    p.id,
                    p.name,
                    enabled_str(p.enabled),
                    validity_str(&p.validity, tz),
                    if lv.is_empty() {
                        "-".to_owned()
                    } else {
                        lv.join(",")
                    }
                );
            }
        }
    }
    Ok(())
}

pub fn level(config: &Config, cmd: &LevelCommand) -> Result<()> {
    let store = open(config)?;
    match cmd {
        LevelCommand::Add {
            name,
            gates,
            schedule,
            holidays,
        } => {
            let rule = match holidays {
                HolidaysArg::Closed => HolidayRule::Closed,
                HolidaysArg::Ignore => HolidayRule::Ignore,
            };
            let schedule =
                parse_schedule(schedule, rule).map_err(|e| anyhow!("--schedule: {e}"))?;
            // Resolve every gate first, so an unknown one leaves nothing behind.
            let mut gate_ids = Vec::with_capacity(gates.len());
            for g in gates {
                let g = g.trim();
                if g.is_empty() {
                    bail!("--gates: empty gate name (expected names separated by commas)");
                }
                gate_ids.push(store.gate_by_name(g)?.gate.id);
            }
            let id = store.add_level(name, &schedule)?;
            for gate in &gate_ids {
                if let Err(e) = store.add_level_gate(id, *gate) {
                    return Err(match store.remove_level(id) {
                        Ok(()) => e.into(),
                        Err(undo) => anyhow!(
                            "{e}; and the half-made level {name:?} could not be removed: {undo}"
                        ),
                    });
                }
            }
            println!(
                "level {name:?} added (id {id}): gates {}; open {}; holidays {}",
                gates.join(","),
                format_schedule(&schedule),
                holiday_str(&schedule.holidays)
            );
        }
        LevelCommand::Grant { level, person } => {
            let l = store.level_by_name(level)?;
            let p = store.person_by_name(person)?;
            if store.grant_level(p.id, l.id)? {
                println!("{person:?} now has level {level:?}");
            } else {
                println!("{person:?} already had level {level:?}");
            }
        }
        LevelCommand::List => {
            let gates: HashMap<i64, String> = store
                .list_gates()?
                .into_iter()
                .map(|g| (g.gate.id, g.gate.name))
                .collect();
            println!(
                "{:>4} {:<20} {:<30} {:<8} SCHEDULE",
                "ID", "NAME", "GATES", "HOLIDAYS"
            );
            for Level {
                id,
                name,
                gates: level_gates,
                schedule,
            } in store.list_levels()?
            {
                let g: Vec<String> = level_gates.iter().map(|g| name_of(&gates, *g)).collect();
                println!(
                    "{:>4} {:<20} {:<30} {:<8} {}",
                    id,
                    name,
                    if g.is_empty() {
                        "-".to_owned()
                    } else {
                        g.join(",")
                    },
                    holiday_str(&schedule.holidays),
                    format_schedule(&schedule)
                );
            }
        }
    }
    Ok(())
}

pub fn card(config: &Config, cmd: &CardCommand) -> Result<()> {
    let store = open(config)?;
    let tz = site_offset(config)?;
    match cmd {
        CardCommand::Add {
            acc_id,
            person,
            master,
            valid_until,
            label,
        } => {
            let raw = parse_acc_id(acc_id).map_err(|e| anyhow!("ACC_ID: {e}"))?;
            if let Some(label) = label {
                check_label_against_typed(label, acc_id)?;
            }
            let until = valid_until
                .as_deref()
                .map(|s| {
                    parse_bound(s, Bound::Until, tz).map_err(|e| anyhow!("--valid-until: {e}"))
                })
                .transpose()?;
            let owner = store.person_by_name(person)?;
            let key = site_key(config)?;
            let id = store.add_card(
                &key,
                &raw,
                &NewCard {
                    person: owner.id,
                    master: *master,
                    validity: Validity { from: None, until },
                    label: label.clone(),
                },
            )?;
            println!(
                "card #{id} enrolled for {person:?}{}",
                if *master { " (master)" } else { "" }
            );
        }
        CardCommand::List { person } => {
            let people: HashMap<i64, String> = store
                .list_people()?
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect();
            let filter = match person {
                Some(name) => Some(store.person_by_name(name)?.id),
                None => None,
            };
            let cards = store.list_cards(filter)?;
            println!(
                "{:>5} {:<24} {:<9} {:<6} {:<36} LABEL",
                "ID", "PERSON", "STATE", "MASTER", "VALID"
            );
            for CardRecord {
                id,
                person,
                enabled,
                master,
                validity,
                label,
                ..
            } in cards
            {
                println!(
                    "{:>5} {:<24} {:<9} {:<6} {:<36} {}",
                    id,
                    name_of(&people, person),
                    enabled_str(enabled),
                    if master { "yes" } else { "no" },
                    validity_str(&validity, tz),
                    label.as_deref().unwrap_or("-"),
                );
            }
        }
        CardCommand::Disable(r) => {
            let id = resolve_card(config, &store, r)?;
            store.set_card_enabled(id, false)?;
            println!("card #{id} disabled");
        }
        CardCommand::Enable(r) => {
            let id = resolve_card(config, &store, r)?;
            store.set_card_enabled(id, true)?;
            println!("card #{id} enabled");
        }
        CardCommand::Remove(r) => {
            let id = resolve_card(config, &store, r)?;
            store.remove_card(id)?;
            println!("card #{id} removed");
        }
    }
    Ok(())
}

fn resolve_card(config: &Config, store: &Store, r: &CardRef) -> Result<i64> {
    match (&r.id, &r.acc_id) {
        (Some(id), _) => Ok(*id),
        (None, Some(acc)) => {
            let raw = parse_acc_id(acc).map_err(|e| anyhow!("--acc-id: {e}"))?;
            let key = site_key(config)?;
            match store.find_card_by_acc_id(&key, &raw)? {
                Some(c) => Ok(c.id),
                None => bail!("no card is enrolled with that card id"),
            }
        }
        (None, None) => bail!("name the card: its number from `gatehouse card list`, or --acc-id"),
    }
}

pub fn log(config: &Config, cmd: &LogCommand) -> Result<()> {
    let store = open(config)?;
    let LogCommand::Tail { n, follow } = cmd;
    let mut names = Names::load(&store, site_offset(config)?)?;
    let rows = store.log_tail((*n).min(MAX_QUERY_LIMIT))?;
    // Follow from the newest row, also when none is printed (-n 0).
    let mut last = match rows.last() {
        Some(r) => Some(r.id),
        None => store.log_tail(1)?.last().map(|r| r.id),
    };
    if last.is_none() {
        if *follow {
            eprintln!("the access log is empty; waiting for decisions (Ctrl-C to stop)");
        } else {
            eprintln!("the access log is empty");
            return Ok(());
        }
    }
    println!(
        "{:<24} {:<20} {:<6} {:<24} {:<8} {:<18} SOURCE",
        "TIME", "GATE", "CARD", "PERSON", "DECISION", "REASON"
    );
    for r in &rows {
        print_row(&mut names, &store, r)?;
    }
    if !*follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let new = store.log_query(&LogFilter {
            after_id: last,
            gate: None,
            reason: None,
            limit: MAX_QUERY_LIMIT,
        })?;
        for r in &new {
            print_row(&mut names, &store, r)?;
        }
        if let Some(r) = new.last() {
            last = Some(r.id);
        }
    }
}

/// Gate and person names for log rows; reloaded when a row names one not seen yet.
struct Names {
    gates: HashMap<i64, String>,
    people: HashMap<i64, String>,
    /// The site's offset, for the times.
    tz: UtcOffset,
}

impl Names {
    fn load(store: &Store, tz: UtcOffset) -> Result<Names> {
        Ok(Names {
            tz,
            gates: store
                .list_gates()?
                .into_iter()
                .map(|g| (g.gate.id, g.gate.name))
                .collect(),
            people: store
                .list_people()?
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect(),
        })
    }
}

fn print_row(names: &mut Names, store: &Store, r: &LogRow) -> Result<()> {
    let unknown_gate = !names.gates.contains_key(&r.gate);
    let unknown_person = r.person.is_some_and(|p| !names.people.contains_key(&p));
    if unknown_gate || unknown_person {
        *names = Names::load(store, names.tz)?;
    }
    let (decision, reason) = match r.reason() {
        Some(reason) if reason.is_allowed() => ("granted", reason.as_str().to_owned()),
        Some(reason) => ("denied", reason.as_str().to_owned()),
        None => ("?", format!("code {}", r.reason_code)),
    };
    println!(
        "{:<24} {:<20} {:<6} {:<24} {:<8} {:<18} {}",
        rfc3339(r.at, names.tz),
        name_of(&names.gates, r.gate),
        r.card.map_or("-".to_owned(), |c| format!("#{c}")),
        r.person
            .map_or("-".to_owned(), |p| name_of(&names.people, p)),
        decision,
        reason,
        r.source.as_str(),
    );
    Ok(())
}

// ---- helpers -----------------------------------------------------------------------

fn level_names(store: &Store) -> Result<HashMap<i64, String>> {
    Ok(store
        .list_levels()?
        .into_iter()
        .map(|l| (l.id, l.name))
        .collect())
}

/// A name from an id map, or `#id` for one since removed.
fn name_of(map: &HashMap<i64, String>, id: i64) -> String {
    map.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
}

fn enabled_str(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

fn holiday_str(rule: &HolidayRule) -> String {
    match rule {
        HolidayRule::Closed => "closed".to_owned(),
        HolidayRule::Ignore => "ignore".to_owned(),
        HolidayRule::Windows(w) => format_windows(w),
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// RFC 3339 in the site's offset; a time RFC 3339 cannot hold (year past 9999) is shown as
/// its Unix time.
fn rfc3339(t: OffsetDateTime, tz: UtcOffset) -> String {
    t.checked_to_offset(tz)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

// ---- validity ----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Inclusive start: a date means the start of that day.
    From,
    /// Exclusive end: a date means the end of that day (the next midnight).
    Until,
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A validity bound: `YYYY-MM-DD` (whole days in the site's offset `tz`) or an RFC 3339
/// time.
fn parse_bound(s: &str, bound: Bound, tz: UtcOffset) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    let wrong = || {
        format!(
            "expected a date like 2026-12-31 ({} that day, site time) or an RFC 3339 time like \
             2026-12-31T18:00:00Z, found {s:?}",
            match bound {
                Bound::From => "from the start of",
                Bound::Until => "through the end of",
            }
        )
    };
    if let Ok(date) = Date::parse(s, DATE) {
        let day = match bound {
            Bound::From => Some(date),
            Bound::Until => date.next_day(),
        };
        return day
            .map(|d| d.midnight().assume_offset(tz))
            .ok_or_else(wrong);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
        .ok_or_else(wrong)
}

impl ValidityArgs {
    fn parse(&self, tz: UtcOffset) -> Result<Validity> {
        let from = self
            .valid_from
            .as_deref()
            .map(|s| parse_bound(s, Bound::From, tz).map_err(|e| anyhow!("--valid-from: {e}")))
            .transpose()?;
        let until = self
            .valid_until
            .as_deref()
            .map(|s| parse_bound(s, Bound::Until, tz).map_err(|e| anyhow!("--valid-until: {e}")))
            .transpose()?;
        if let (Some(f), Some(u)) = (from, until) {
            if f >= u {
                bail!("--valid-from is not before --valid-until");
            }
        }
        Ok(Validity { from, until })
    }
}

/// `always`, `from DATE`, `through DATE`, or both; whole days are shown as dates.
fn validity_str(v: &Validity, tz: UtcOffset) -> String {
    let from = v.from.map(|t| {
        let local = t.checked_to_offset(tz).unwrap_or(t);
        if local.time() == Time::MIDNIGHT {
            local.date().to_string()
        } else {
            rfc3339(t, tz)
        }
    });
    let until = v.until.map(|t| {
        let local = t.checked_to_offset(tz).unwrap_or(t);
        match local.date().previous_day() {
            Some(d) if local.time() == Time::MIDNIGHT => format!("through {d}"),
            _ => format!("until {}", rfc3339(t, tz)),
        }
    });
    match (from, until) {
        (None, None) => "always".to_owned(),
        (Some(f), None) => format!("from {f}"),
        (None, Some(u)) => u,
        (Some(f), Some(u)) => format!("from {f} {u}"),
    }
}

// ---- card ids ----------------------------------------------------------------------

const ACC_ID_FORMS: &str = "expected decimal digits as printed on the card (e.g. 0004123456) \
     or hex bytes as the reader sends them, with 0x or colons (e.g. 0x04A1B2C3D4E5F6 or \
     04:A1:B2:C3)";

/// Shortest byte string a decimal card number becomes (a 32-bit number: the common
/// 10-digit printed card numbers and 4-byte UIDs).
const MIN_DECIMAL_BYTES: usize = 4;

/// The bytes of a raw card id as typed (see `card add --help`). Errors never repeat the
/// input: it is the secret being enrolled.
pub fn parse_acc_id(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("the card id is empty; {ACC_ID_FORMS}"));
    }
    let bytes = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let digits: String = h.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        decode_hex(&digits)?
    } else if s.contains(':') {
        let mut out = Vec::new();
        for pair in s.split(':') {
            if pair.len() != 2 {
                return Err(format!(
                    "colon-separated hex must have two digits per byte; {ACC_ID_FORMS}"
                ));
            }
            out.extend(decode_hex(pair)?);
        }
        out
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| {
            "the decimal card id is larger than 64 bits; give it in hex with 0x".to_owned()
        })?;
        let be = n.to_be_bytes();
        let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        let keep = (be.len() - first).max(MIN_DECIMAL_BYTES);
        be.get(be.len() - keep..).unwrap_or(&be).to_vec()
    } else if s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the card id looks like hex: write it with 0x (e.g. 0x04A1B2C3) so it is not \
             mistaken for a decimal number; {ACC_ID_FORMS}"
        ));
    } else {
        return Err(format!("the card id is not a number; {ACC_ID_FORMS}"));
    };
    gatehouse_gate_proto::CardId::new(&bytes).map_err(|_| {
        format!(
            "the card id is {} bytes; a card id is 1 to {} bytes",
            bytes.len(),
            gatehouse_gate_proto::CardId::MAX_LEN
        )
    })?;
    Ok(bytes)
}

fn decode_hex(digits: &str) -> Result<Vec<u8>, String> {
    if digits.is_empty() {
        return Err(format!("no hex digits after 0x; {ACC_ID_FORMS}"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of hex digits: give two per byte, with leading zeros; {ACC_ID_FORMS}"
        ));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("not a hex digit in the card id; {ACC_ID_FORMS}")),
        }
    };
    digits
        .as_bytes()
        .chunks(2)
        .map(|p| match p {
            [h, l] => Ok(nibble(*h)? << 4 | nibble(*l)?),
            _ => Err(format!("odd number of hex digits; {ACC_ID_FORMS}")),
        })
        .collect()
}

/// The store refuses labels holding the id's bytes in hex; a decimal id typed here is also
/// refused in the label (any four-digit run of it).
fn check_label_against_typed(label: &str, typed: &str) -> Result<()> {
    let typed = typed.trim();
    if !typed.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    let digits = typed.trim_start_matches('0');
    let leaks = if digits.len() >= 4 {
        digits
            .as_bytes()
            .windows(4)
            .any(|w| std::str::from_utf8(w).is_ok_and(|w| label.contains(w)))
    } else {
        !digits.is_empty() && label.contains(digits)
    };
    if leaks {
        bail!("--label must not contain any part of the card id");
    }
    Ok(())
}

// ---- schedules ---------------------------------------------------------------------

const SCHEDULE_FORM: &str =
    "expected \"always\" or clauses like \"mon-fri 08:00-18:00; sat 09:00-12:00\"";

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
use gatehouse_access::model::DAY_NAMES as DAYS_LONG;

/// Parses a schedule spec (see `level add --help`) into the model's [`Schedule`]. Windows
/// given for the same day are merged where they overlap or touch.
pub fn parse_schedule(spec: &str, holidays: HolidayRule) -> Result<Schedule, String> {
    let spec = spec.trim();
    let mut weekly: [Vec<Window>; 7] = Default::default();
    if spec.eq_ignore_ascii_case("always") {
        for day in &mut weekly {
            day.push(Window {
                start: 0,
                end: MINUTES_PER_DAY,
            });
        }
    } else {
        if spec.is_empty() {
            return Err(format!("empty schedule; {SCHEDULE_FORM}"));
        }
        for clause in spec.split(';').map(str::trim) {
            if clause.is_empty() {
                return Err(format!(
                    "empty clause (two ';' in a row, or one at the end); {SCHEDULE_FORM}"
                ));
            }
            let split = clause
                .find(|c: char| c.is_ascii_digit())
                .ok_or_else(|| {
                    format!("clause {clause:?} has no times; expected days then times, like \"mon-fri 08:00-18:00\"")
                })?;
            let (days_part, times_part) = clause.split_at(split);
            let days = parse_days(days_part.trim(), clause)?;
            let windows = parse_windows(times_part.trim(), clause)?;
            for d in days {
                if let Some(slot) = weekly.get_mut(d) {
                    slot.extend_from_slice(&windows);
                }
            }
        }
        for day in &mut weekly {
            *day = merge(std::mem::take(day));
        }
    }
    let schedule = Schedule { weekly, holidays };
    schedule.validate(None).map_err(|e| e.to_string())?;
    Ok(schedule)
}

fn parse_day(s: &str, clause: &str) -> Result<usize, String> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == l)
        .or_else(|| DAYS_LONG.iter().position(|d| *d == l))
        .ok_or_else(|| {
            format!(
                "unknown day {s:?} in {clause:?}; expected mon tue wed thu fri sat sun, a range \
                 like mon-fri, a list like mon,wed, or daily"
            )
        })
}

/// Day indexes (0 = Monday) named by `mon-fri`, `sat,sun`, `fri-mon`, `daily`.
fn parse_days(s: &str, clause: &str) -> Result<Vec<usize>, String> {
    if s.is_empty() {
        return Err(format!(
            "clause {clause:?} names no days; expected days then times, like \"mon-fri 08:00-18:00\""
        ));
    }
    let mut days = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.eq_ignore_ascii_case("daily") {
            days.extend(0..7);
        } else if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (parse_day(a.trim(), clause)?, parse_day(b.trim(), clause)?);
            // A range may wrap past Sunday: fri-mon is fri, sat, sun, mon.
            let mut d = a;
            loop {
                days.push(d);
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        } else {
            days.push(parse_day(item, clause)?);
        }
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// Minutes since midnight from `H:MM` or `HH:MM`, `24:00` included.
fn parse_hhmm(s: &str, clause: &str) -> Result<u16, String> {
    let bad = || format!("bad time {s:?} in {clause:?}; expected HH:MM from 00:00 to 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_windows(s: &str, clause: &str) -> Result<Vec<Window>, String> {
    let mut out = Vec::new();
    for w in s.split(',').map(str::trim) {
        let (a, b) = w.split_once('-').ok_or_else(|| {
            format!("bad time window {w:?} in {clause:?}; expected HH:MM-HH:MM, like 08:00-18:00")
        })?;
        let (start, end) = (parse_hhmm(a.trim(), clause)?, parse_hhmm(b.trim(), clause)?);
        if end < start {
            return Err(format!(
                "window {w:?} in {clause:?} ends before it starts; an overnight shift is two \
                 windows, like \"mon 22:00-24:00; tue 00:00-06:00\""
            ));
        }
        if end == start {
            return Err(format!(
                "window {w:?} in {clause:?} is empty (start and end are equal)"
            ));
        }
        out.push(Window { start, end });
    }
    Ok(out)
}

/// Sorts windows and merges those that overlap or touch.
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_unstable_by_key(|w| (w.start, w.end));
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for w in windows {
        match out.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => out.push(w),
        }
    }
    out
}

fn format_windows(windows: &[Window]) -> String {
    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    windows
        .iter()
        .map(|w| format!("{}-{}", hhmm(w.start), hhmm(w.end)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The spec form of a schedule's weekly windows (what [`parse_schedule`] reads back):
/// runs of days with the same windows are joined (`mon-fri`).
pub fn format_schedule(s: &Schedule) -> String {
    let all_day = [Window {
        start: 0,
        end: MINUTES_PER_DAY,
    }];
    if s.weekly.iter().all(|d| d.as_slice() == all_day) {
        return "always".to_owned();
    }
    let mut clauses = Vec::new();
    let mut d = 0;
    while d < 7 {
        let Some(windows) = s.weekly.get(d) else {
            break;
        };
        let mut end = d;
        while s.weekly.get(end + 1).is_some_and(|w| w == windows) {
            end += 1;
        }
        if !windows.is_empty() {
            let days = match (DAYS.get(d), DAYS.get(end)) {
                (Some(a), Some(_)) if d == end => (*a).to_owned(),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => String::new(),
            };
            clauses.push(format!("{days} {}", format_windows(windows)));
        }
        d = end + 1;
    }
    if clauses.is_empty() {
        "never".to_owned()
    } else {
        clauses.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn w(start: u16, end: u16) -> Window {
        Window { start, end }
    }

    #[test]
    fn schedule_specs_parse_into_the_model() {
        let h = |hh: u16, mm: u16| hh * 60 + mm;
        let none: Vec<Window> = vec![];
        let cases: Vec<(&str, [Vec<Window>; 7])> = vec![
            ("always", std::array::from_fn(|_| vec![w(0, 1440)])),
            ("ALWAYS", std::array::from_fn(|_| vec![w(0, 1440)])),
            (
                "mon-fri 08:00-18:00; sat 09:00-12:00",
                [
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(9, 0), h(12, 0))],
                    none.clone(),
                ],
            ),
            (
                "  Mon,Wed 7:30-12:00, 13:00-17:45 ;sun 00:00-24:00 ",
                [
                    vec![w(h(7, 30), h(12, 0)), w(h(13, 0), h(17, 45))],
                    none.clone(),
                    vec![w(h(7, 30), h(12, 0)), w(h(13, 0), h(17, 45))],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    vec![w(0, 1440)],
                ],
            ),
            (
                "fri-mon 22:00-24:00",
                [
                    vec![w(h(22, 0), 1440)],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    vec![w(h(22, 0), 1440)],
                    vec![w(h(22, 0), 1440)],
                    vec![w(h(22, 0), 1440)],
                ],
            ),
            (
                // Overlapping and touching windows of one day merge.
                "mon 08:00-12:00; mon 11:00-13:00, 13:00-14:00; tuesday 01:00-02:00",
                [
                    vec![w(h(8, 0), h(14, 0))],
                    vec![w(h(1, 0), h(2, 0))],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    none.clone(),
                ],
            ),
            (
                "daily 06:00-22:00",
                std::array::from_fn(|_| vec![w(h(6, 0), h(22, 0))]),
            ),
        ];
        for (spec, weekly) in cases {
            let s = parse_schedule(spec, HolidayRule::Closed)
                .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(s.weekly, weekly, "{spec:?}");
            assert_eq!(s.holidays, HolidayRule::Closed);
            // What is printed parses back to the same schedule.
            let again = parse_schedule(&format_schedule(&s), HolidayRule::Closed).unwrap();
            assert_eq!(again, s, "{spec:?} -> {:?}", format_schedule(&s));
        }
        let s =
            parse_schedule("mon-fri 08:00-18:00; sat 09:00-12:00", HolidayRule::Ignore).unwrap();
        assert_eq!(format_schedule(&s), "mon-fri 08:00-18:00; sat 09:00-12:00");
        assert_eq!(s.holidays, HolidayRule::Ignore);
    }

    #[test]
    fn bad_schedule_specs_say_what_and_how() {
        let cases = [
            ("", "empty schedule"),
            ("   ", "empty schedule"),
            ("sometimes", "no times"),
            ("mon-fri", "no times"),
            ("08:00-18:00", "names no days"),
            ("mon-fri 08:00-18:00;", "empty clause"),
            ("mon-fri 08:00-18:00;; sat 09:00-12:00", "empty clause"),
            ("mun 08:00-18:00", "unknown day \"mun\""),
            ("mon-fry 08:00-18:00", "unknown day \"fry\""),
            ("mon 8-18", "bad time \"8\""),
            ("mon 08:00", "expected HH:MM-HH:MM"),
            ("mon 08:00-25:00", "bad time \"25:00\""),
            ("mon 08:60-09:00", "bad time \"08:60\""),
            ("mon 24:30-24:45", "bad time \"24:30\""),
            ("mon 08:0-09:00", "bad time \"08:0\""),
            ("mon 22:00-06:00", "overnight shift is two windows"),
            ("mon 08:00-08:00", "is empty"),
            ("mon 08:00-18:00,", "expected HH:MM-HH:MM"),
        ];
        for (spec, want) in cases {
            match parse_schedule(spec, HolidayRule::Closed) {
                Ok(s) => panic!("{spec:?} parsed as {s:?}"),
                Err(e) => assert!(e.contains(want), "{spec:?}: {e}"),
            }
        }
    }

    #[test]
    fn card_ids_parse_as_decimal_or_hex_and_errors_never_echo_them() {
        let ok: [(&str, &[u8]); 8] = [
            ("0004123456", &[0x00, 0x3e, 0xeb, 0x40]),
            ("1", &[0, 0, 0, 1]),
            ("4294967295", &[0xff, 0xff, 0xff, 0xff]),
            ("4294967296", &[0x01, 0, 0, 0, 0]),
            (
                "0x04A1B2C3D4E5F6",
                &[0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6],
            ),
            ("0Xdeadbeef", &[0xde, 0xad, 0xbe, 0xef]),
            ("04:a1:B2:c3", &[0x04, 0xa1, 0xb2, 0xc3]),
            ("0x04:a1:b2", &[0x04, 0xa1, 0xb2]),
        ];
        for (s, want) in ok {
            assert_eq!(parse_acc_id(s).unwrap(), want, "{s}");
        }
        let long = format!("0x{}", "ab".repeat(33));
        let bad = [
            ("", "empty"),
            ("0x", "no hex digits"),
            ("0xabc", "odd number"),
            ("0x12zz", "not a hex digit"),
            ("deadbeef", "looks like hex"),
            ("4:a1", "two digits per byte"),
            ("12 34", "not a number"),
            ("99999999999999999999999", "larger than 64 bits"),
            (long.as_str(), "33 bytes"),
        ];
        for (s, want) in bad {
            let e = parse_acc_id(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
            if s.len() > 3 {
                assert!(!e.contains(s), "echoes the id: {e}");
            }
        }
    }

    #[test]
    fn validity_bounds_take_whole_days_or_times() {
        let from = parse_bound("2026-03-01", Bound::From, UtcOffset::UTC).unwrap();
        assert_eq!(rfc3339(from, UtcOffset::UTC), "2026-03-01T00:00:00Z");
        let until = parse_bound("2026-03-31", Bound::Until, UtcOffset::UTC).unwrap();
        assert_eq!(rfc3339(until, UtcOffset::UTC), "2026-04-01T00:00:00Z");
        let t = parse_bound("2026-03-31T18:00:00+02:00", Bound::Until, UtcOffset::UTC).unwrap();
        assert_eq!(rfc3339(t, UtcOffset::UTC), "2026-03-31T16:00:00Z");
        let e = parse_bound("soon", Bound::Until, UtcOffset::UTC).unwrap_err();
        assert!(e.contains("2026-12-31") && e.contains("\"soon\""), "{e}");
        let v = Validity {
            from: Some(from),
            until: Some(until),
        };
        assert_eq!(
            validity_str(&v, UtcOffset::UTC),
            "from 2026-03-01 through 2026-03-31"
        );
        assert_eq!(
            validity_str(
                &Validity {
                    from: None,
                    until: Some(t)
                },
                UtcOffset::UTC
            ),
            "until 2026-03-31T16:00:00Z"
        );
        assert_eq!(validity_str(&Validity::default(), UtcOffset::UTC), "always");
        // Dates are the site's days.
        let plus2 = UtcOffset::from_hms(2, 0, 0).unwrap();
        let from = parse_bound("2026-03-01", Bound::From, plus2).unwrap();
        assert_eq!(rfc3339(from, UtcOffset::UTC), "2026-02-28T22:00:00Z");
        assert_eq!(rfc3339(from, plus2), "2026-03-01T00:00:00+02:00");
        let until = parse_bound("2026-03-31", Bound::Until, plus2).unwrap();
        let v = Validity {
            from: Some(from),
            until: Some(until),
        };
        assert_eq!(
            validity_str(&v, plus2),
            "from 2026-03-01 through 2026-03-31"
        );
    }

    #[test]
    fn labels_may_not_hold_the_typed_id() {
        assert!(check_label_against_typed("blue fob", "0004123456").is_ok());
        assert!(check_label_against_typed("fob 4123", "0004123456").is_err());
        assert!(check_label_against_typed("fob 9876", "0004123456").is_ok());
        assert!(check_label_against_typed("spare 3", "0x0303").is_ok());
    }

    #[test]
    fn check_url_names_the_listen_address() {
        assert_eq!(
            check_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080/api/v1/access/check"
        );
        assert_eq!(
            check_url("[::1]:80".parse().unwrap()),
            "http://[::1]:80/api/v1/access/check"
        );
        assert!(check_url("0.0.0.0:8080".parse().unwrap()).contains("<this box's address>:8080"));
    }
}
