//! `gatehouse gate|person|level|card|log ...`: the access-control CLI on the box. Arguments
//! and printing only; every change is a `gatehouse_store::Store` call (the same operations
//! the admin API offers), and what a new gate is set up with comes from
//! `gatehouse_hub::provisioning` (as in the admin API's answer).
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
use gatehouse_access::model::{Direction, HolidayRule, Level, Validity};
use gatehouse_access::text::{
    check_label_against_typed, format_schedule, format_windows, parse_acc_id, parse_bound,
    parse_schedule, Bound,
};
use gatehouse_config::Config;
use gatehouse_hub::provisioning::{GateProvisioning, Listening};
use gatehouse_store::gate_events::{GateEventFilter, MAX_EVENTS_LIMIT};
use gatehouse_store::log::MAX_QUERY_LIMIT;
use gatehouse_store::{
    CardRecord, LogFilter, LogRow, NewCard, NewGate, SiteKey, Store, StoreError,
};
use std::collections::HashMap;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, Time, UtcOffset};

/// How often `log tail --follow` looks for new rows.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

// ---- arguments ---------------------------------------------------------------------

#[derive(Subcommand)]
pub enum GateCommand {
    /// Add a gate and print its id, its secret (shown once), its allow-list keys, its
    /// connection settings and its record for a gate-sim gates file.
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
    /// Print the newest door and tamper events the gates reported: time (the gate's clock,
    /// site time), gate, event (opened, closed, held_open, forced_open, exit_button,
    /// tamper_on, tamper_off), the gate's sequence number, when the hub received it.
    Events {
        /// Only this gate's events, by name.
        #[arg(long, value_name = "NAME")]
        gate: Option<String>,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
    },
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
        GateCommand::Events { gate, limit } => {
            gate_events(&store, gate.as_deref(), *limit, site_offset(config)?)
        }
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
    if zone_created {
        eprintln!("created zone {zone:?}");
    }
    let p = GateProvisioning::for_new_gate(
        config,
        &site_key(config)?,
        name,
        &creds,
        &Listening::default(),
    );
    println!("gate {name:?} added");
    println!("  gate id:         {}", p.gate_id);
    println!("  secret:          {}", p.secret);
    println!("                   (shown only this once; write it into the gate now)");
    println!(
        "  card_key:        {} (the site's, every gate has it)",
        p.card_key
    );
    println!("  allow_list_key:  {} (this gate's own)", p.allow_list_key);
    println!("  HTTP check:      POST {}", p.http_url);
    println!("                   Authorization: Bearer {}", p.secret);
    println!(
        "                   body {{\"gate_id\": {}, \"acc_id\": \"<card id in hex>\"}}",
        p.gate_id
    );
    println!(
        "  HTTP frames:     POST {} (one sealed binary frame, as on raw TCP)",
        p.frames_url
    );
    match &p.tcp_addr {
        Some(addr) => println!("  raw TCP:         {addr} (key: the secret above)"),
        None => println!("  raw TCP:         off (hub.gate_tcp_listen is empty)"),
    }
    match (&p.mqtt_broker, &p.mqtt_password) {
        (Some(broker), Some(password)) => {
            println!("  MQTT broker:     {broker}");
            println!("  MQTT user:       {}", p.mqtt_username);
            println!("  MQTT password:   {password} (derived from the secret)");
            println!(
                "  MQTT topics:     publish {}, subscribe {}",
                p.request_topic.as_deref().unwrap_or_default(),
                p.response_topic.as_deref().unwrap_or_default()
            );
        }
        _ => println!("  MQTT:            off (hub.mqtt.mode = \"off\")"),
    }
    println!("  gates file (gate-sim):");
    for line in p.gates_file_record().lines() {
        println!("    {line}");
    }
    Ok(())
}

fn gate_events(store: &Store, gate: Option<&str>, limit: u32, tz: UtcOffset) -> Result<()> {
    if limit == 0 || limit > MAX_EVENTS_LIMIT {
        bail!("--limit must be 1 to {MAX_EVENTS_LIMIT}");
    }
    let gate = gate.map(|n| store.gate_by_name(n)).transpose()?;
    let names: HashMap<i64, String> = store
        .list_gates()?
        .into_iter()
        .map(|g| (g.gate.id, g.gate.name))
        .collect();
    let rows = store.gate_events(&GateEventFilter {
        gate: gate.map(|g| g.gate.id),
        limit,
    })?;
    println!(
        "{:<25} {:<20} {:<12} {:>10} RECEIVED",
        "TIME", "GATE", "EVENT", "SEQ"
    );
    for r in rows {
        println!(
            "{:<25} {:<20} {:<12} {:>10} {}",
            rfc3339(r.at, tz),
            names
                .get(&r.gate)
                .cloned()
                .unwrap_or_else(|| format!("#{}", r.gate)),
            r.kind,
            r.gate_seq,
            rfc3339(r.received, tz),
        );
    }
    Ok(())
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
                check_label_against_typed(label, acc_id).map_err(|e| anyhow!("--label {e}"))?;
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
            limit: MAX_QUERY_LIMIT,
            ..LogFilter::default()
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

/// RFC 3339 in the site's offset; a time RFC 3339 cannot hold (year past 9999) is shown as
/// its Unix time.
fn rfc3339(t: OffsetDateTime, tz: UtcOffset) -> String {
    t.checked_to_offset(tz)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

// ---- validity ----------------------------------------------------------------------

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
