//! `gatehouse source|receiver|rule|silence|event ...`: the events-and-alerts CLI on the
//! box. Arguments and printing only; every change is a `gatehouse_store::Store` call (the
//! same operations the admin API offers), what a new source is told comes from
//! `gatehouse_hub::admin::alerts_api::SourceSetup` (as in the API's answer), and a
//! receiver test is the API's (`test_notification`, sent with `gatehouse_notify`).
//!
//! Promises:
//! - No secret is printed but a source's API key, once, when it is made or rotated. SMTP
//!   passwords and ntfy tokens are read from files (never from the command line, where
//!   `ps` would show them) and listed only as "set"; webhook and ntfy URLs are listed by
//!   scheme and host (their paths often hold a secret).
//! - Sources, receivers and rules are named by name (or id); silences by id; events by
//!   id (the ULID) or `seq`.
//! - Durations are typed as `30s`, `5m`, `2h`, `1d` ([`gatehouse_alerts::text`]); times as
//!   dates (site days) or RFC 3339; schedules as for access levels.
//! - Every error a user can cause is one line naming the flag; `main` prints it and exits
//!   1. `event check` exits 1 when the outbox and the delivery log do not reconcile.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use gatehouse_access::model::HolidayRule;
use gatehouse_access::text::{format_schedule, format_windows, parse_bound, parse_schedule, Bound};
use gatehouse_alerts::model::{
    Event, EventId, Matcher, Receiver, ReceiverConfig, Rule, Severity, SmtpSecurity, SourceKind,
    WebhookFormat,
};
use gatehouse_alerts::render::kind_name;
use gatehouse_alerts::text::{format_duration, parse_duration};
use gatehouse_config::Config;
use gatehouse_hub::admin::alerts_api::{
    check_mqtt_prefix, event_view, redact_url, refuse_internal, silence_state, test_notification,
    test_sender, SourceSetup,
};
use gatehouse_hub::provisioning::Listening;
use gatehouse_store::events::{
    AckOutcome, DeliveryLogFilter, EventFilter, EventSource, NewRule, NewSilence, MAX_PAGE,
};
use gatehouse_store::{SiteKey, Store, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

// ---- arguments ---------------------------------------------------------------------

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Register a source of events (an NVR, a sensor gateway) and print its API key (shown
    /// once) with how to send events: the webhook and, for an NVR speaking Frigate's MQTT,
    /// the broker and topics.
    Add {
        /// The source's name: 1 to 64 letters, digits, '.', '_' or '-' (its events carry it).
        name: String,
        /// What it is.
        #[arg(long, value_enum, default_value_t = SourceKindArg::Nvr)]
        kind: SourceKindArg,
        /// The NVR's MQTT topic prefix (Frigate's mqtt.topic_prefix, "frigate" by default):
        /// the hub reads <PREFIX>/events and <PREFIX>/reviews. One prefix per NVR.
        #[arg(long, value_name = "PREFIX")]
        mqtt_prefix: Option<String>,
        /// The NVR's web address, for snapshot and clip links.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
    /// List sources: id, name, kind, state, MQTT prefix, base URL, created (never keys).
    List,
    /// Refuse a source's events (its key stays, so it can be enabled again).
    Disable { name: String },
    /// Accept a disabled source's events again.
    Enable { name: String },
    /// Remove a source: its key and MQTT prefix stop working; its events stay.
    Remove { name: String },
    /// Give a source a new API key (printed once); the old one stops working at once.
    RotateKey { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SourceKindArg {
    Nvr,
    Sensor,
}

#[derive(Subcommand)]
pub enum ReceiverCommand {
    /// Add a receiver: one of --webhook URL, --email (with --smtp, --security, --from,
    /// --to) or --ntfy URL.
    Add {
        /// The receiver's name (unique); rules send to it by name.
        name: String,
        /// A webhook: POST each notification to this URL.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// The webhook's body: Slack-compatible (also Mattermost, Rocket.Chat) or the
        /// notification as plain JSON.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// E-mail over SMTP.
        #[arg(long)]
        email: bool,
        /// The SMTP server.
        #[arg(long, value_name = "HOST:PORT")]
        smtp: Option<String>,
        /// tls: implicit TLS (port 465); starttls: upgrade required (587); none: only for
        /// a relay on loopback or a trusted LAN.
        #[arg(long, value_enum)]
        security: Option<SecurityArg>,
        /// The sender address.
        #[arg(long, value_name = "ADDRESS")]
        from: Option<String>,
        /// The recipients (repeat or comma-separate).
        #[arg(long, value_name = "ADDRESS", value_delimiter = ',')]
        to: Vec<String>,
        /// The SMTP login (with --password-file).
        #[arg(long)]
        username: Option<String>,
        /// The SMTP password: the first line of this file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// An ntfy-style push: the server and topic, like https://ntfy.sh/site-alerts.
        #[arg(long, value_name = "URL")]
        ntfy: Option<String>,
        /// The ntfy access token: the first line of this file.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// List receivers: id, name, type, state, where they send (secrets shown as "set").
    List,
    /// Stop sending to a receiver (its pending deliveries wait).
    Disable { name: String },
    /// Send to a disabled receiver again.
    Enable { name: String },
    /// Remove a receiver (refused while rules send to it or deliveries to it wait).
    Remove { name: String },
    /// Send one test notification to a receiver now (not through the outbox) and print
    /// what happened.
    Test { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Slack,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SecurityArg {
    Tls,
    Starttls,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Severity {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum HolidaysArg {
    /// The rule does not apply on site holidays.
    Closed,
    /// Holidays are ordinary weekdays for the rule.
    Ignore,
}

/// Which events a rule or silence matches.
#[derive(clap::Args)]
pub struct MatcherArgs {
    /// An event kind (repeat for more; end with * for a prefix: review.*).
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// A source name (repeat for more; * suffix for a prefix).
    #[arg(long = "source", value_name = "SOURCE")]
    sources: Vec<String>,
    /// A zone (repeat for more; * suffix for a prefix).
    #[arg(long = "zone", value_name = "ZONE")]
    zones: Vec<String>,
    /// Only events at least this severe.
    #[arg(long, value_enum)]
    min_severity: Option<SeverityArg>,
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Add a rule: events it matches go to its receivers.
    Add {
        /// The rule's name (unique).
        name: String,
        #[command(flatten)]
        matcher: MatcherArgs,
        /// A receiver, by name (repeat or comma-separate).
        #[arg(long, value_name = "RECEIVER", value_delimiter = ',')]
        to: Vec<String>,
        /// Group events with the same source, kind and zone within this window of the
        /// first (only the first is notified), like 5m; 0 = no grouping.
        #[arg(long, value_name = "DURATION")]
        group: Option<String>,
        /// Notify critical events again at this interval until acknowledged, like 10m.
        #[arg(long, value_name = "DURATION")]
        repeat: Option<String>,
        /// When the rule applies, in site time, as for access levels: "mon-fri
        /// 08:00-18:00; sat 09:00-12:00". Default: always.
        #[arg(long, value_name = "SPEC")]
        active: Option<String>,
        /// With --active: whether the rule applies on site holidays.
        #[arg(long, value_enum)]
        holidays: Option<HolidaysArg>,
    },
    /// List rules: id, name, state, what they match, receivers, grouping, repeat, schedule.
    List,
    /// Stop a rule from sending anything.
    Disable { name: String },
    /// Let a disabled rule send again.
    Enable { name: String },
    /// Remove a rule (the deliveries it caused stay in the log).
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum SilenceCommand {
    /// Silence matching events for a while: they are stored, not notified.
    Add {
        #[command(flatten)]
        matcher: MatcherArgs,
        /// How long from the start, like 2h.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// When it ends: a date (through the end of that day, site time) or an RFC 3339
        /// time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// When it starts (default: now): a date or an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        starts: Option<String>,
        /// Why (required).
        #[arg(long)]
        comment: Option<String>,
        /// Who sets it (default: $SUDO_USER, else $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// List silences not yet ended (with --all, the ended ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire { id: i64 },
}

#[derive(Subcommand)]
pub enum EventCommand {
    /// List events, newest first (with --after, oldest first from there).
    List {
        /// Received at or after: a date (site day) or an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Received before: a date (through its end) or an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only this kind (end with * for a prefix).
        #[arg(long)]
        kind: Option<String>,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Only events at least this severe.
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
        /// Only acknowledged events.
        #[arg(long, conflicts_with = "unacked")]
        acked: bool,
        /// Only events not yet acknowledged.
        #[arg(long)]
        unacked: bool,
        /// Text in the message, camera, zone or device.
        #[arg(short = 'q', long = "text", value_name = "TEXT")]
        text: Option<String>,
        /// Events after this seq number, oldest first.
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
        /// Events before this seq number.
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (as the admin API shows events), one array.
        #[arg(long)]
        json: bool,
    },
    /// Show an event with its deliveries and their attempts.
    Show {
        /// The event's id (26 characters) or seq number.
        id: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an event (stops its reminders); the first acknowledgement stands.
    Ack {
        /// The event's id (26 characters) or seq number.
        id: String,
        /// Why, or what was done.
        #[arg(long)]
        comment: Option<String>,
        /// Who acknowledges (default: $SUDO_USER, else $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Check that the delivery outbox and the delivery log agree; exit 1 if they do not.
    Check,
}

// ---- helpers -----------------------------------------------------------------------

fn open(config: &Config) -> Result<Store> {
    Store::open(&config.general.data_dir).context("cannot open the database")
}

fn site_key(config: &Config) -> Result<SiteKey> {
    SiteKey::load_or_create(&config.general.data_dir).context("cannot load the site key")
}

fn site_offset(config: &Config) -> Result<UtcOffset> {
    UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
        .map_err(|e| anyhow!("hub.timezone_offset: {e}"))
}

fn show(t: OffsetDateTime, tz: UtcOffset) -> String {
    t.checked_to_offset(tz)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", t.unix_timestamp()))
}

fn enabled_str(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

fn dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// The first line of a secret file, without its line ending.
fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end().to_owned();
    if line.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(line)
}

/// Who is at the shell: `$SUDO_USER`, else `$USER`.
fn shell_user(flag: &str) -> Result<String> {
    ["SUDO_USER", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .ok_or_else(|| anyhow!("who is this? give {flag} NAME ($SUDO_USER and $USER are unset)"))
}

fn duration_arg(flag: &str, s: &str) -> Result<std::time::Duration> {
    parse_duration(s).map_err(|e| anyhow!("{flag}: {e}"))
}

fn time_arg(flag: &str, s: &str, bound: Bound, tz: UtcOffset) -> Result<OffsetDateTime> {
    parse_bound(s, bound, tz).map_err(|e| anyhow!("{flag}: {e}"))
}

impl MatcherArgs {
    fn matcher(&self) -> Result<Matcher> {
        let m = Matcher {
            kinds: self.kinds.clone(),
            sources: self.sources.clone(),
            zones: self.zones.clone(),
            min_severity: self.min_severity.map_or(Severity::Info, Severity::from),
        };
        m.validate().map_err(|e| match e {
            gatehouse_alerts::model::ModelError::Invalid { field, why } => {
                let flag = match field {
                    "kinds" => "--kind",
                    "sources" => "--source",
                    "zones" => "--zone",
                    other => other,
                };
                anyhow!("{flag}: {why}")
            }
            other => anyhow!("{other}"),
        })?;
        Ok(m)
    }
}

/// "kinds=a,b sources=x >=warning", or "everything".
fn matcher_str(m: &Matcher) -> String {
    let mut parts = Vec::new();
    for (what, list) in [
        ("kind", &m.kinds),
        ("source", &m.sources),
        ("zone", &m.zones),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what}={}", list.join(",")));
        }
    }
    if m.min_severity > Severity::Info {
        parts.push(format!(">={}", m.min_severity));
    }
    if parts.is_empty() {
        "everything".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A source by name, else by id.
fn find_source(store: &Store, name: &str) -> Result<EventSource> {
    match store.event_source_by_name(name) {
        Ok(s) => Ok(s),
        Err(StoreError::NotFound { .. }) => match name.parse::<i64>() {
            Ok(id) => store
                .event_source(id)
                .map_err(|_| not_found("source", name)),
            Err(_) => Err(not_found("source", name)),
        },
        Err(e) => Err(e.into()),
    }
}

fn find_receiver(store: &Store, name: &str) -> Result<Receiver> {
    match store.receiver_by_name(name) {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound { .. }) => match name.parse::<i64>() {
            Ok(id) => store.receiver(id).map_err(|_| not_found("receiver", name)),
            Err(_) => Err(not_found("receiver", name)),
        },
        Err(e) => Err(e.into()),
    }
}

fn find_rule(store: &Store, name: &str) -> Result<Rule> {
    match store.rule_by_name(name) {
        Ok(r) => Ok(r),
        Err(StoreError::NotFound { .. }) => match name.parse::<i64>() {
            Ok(id) => store.rule(id).map_err(|_| not_found("rule", name)),
            Err(_) => Err(not_found("rule", name)),
        },
        Err(e) => Err(e.into()),
    }
}

fn not_found(what: &str, name: &str) -> anyhow::Error {
    anyhow!("no {what} is named {name:?} (see `gatehouse {what} list`)")
}

/// An event by id (ULID) or seq number.
fn find_event(store: &Store, id: &str) -> Result<Event> {
    if let Ok(id) = id.parse::<EventId>() {
        return store.event(id).map_err(|e| match e {
            StoreError::NotFound { .. } => anyhow!("no event has the id {id}"),
            e => e.into(),
        });
    }
    let Ok(seq) = id.parse::<i64>() else {
        bail!(
            "{id:?} is not an event id (26 characters) or seq number, as `gatehouse event list` shows them"
        );
    };
    store
        .list_events(&EventFilter {
            after_seq: Some(seq - 1),
            before_seq: Some(seq + 1),
            limit: 1,
            ..EventFilter::default()
        })?
        .pop()
        .ok_or_else(|| anyhow!("no event has the seq number {seq}"))
}

// ---- sources -----------------------------------------------------------------------

pub fn source(config: &Config, cmd: &SourceCommand) -> Result<()> {
    let store = open(config)?;
    let tz = site_offset(config)?;
    match cmd {
        SourceCommand::Add {
            name,
            kind,
            mqtt_prefix,
            base_url,
        } => {
            let kind = match kind {
                SourceKindArg::Nvr => SourceKind::Nvr,
                SourceKindArg::Sensor => SourceKind::Sensor,
            };
            if mqtt_prefix.is_some() && kind != SourceKind::Nvr {
                bail!("--mqtt-prefix is for NVRs speaking Frigate's MQTT: use --kind nvr or leave it out");
            }
            if let Some(p) = mqtt_prefix {
                check_mqtt_prefix(config, &store, p)
                    .map_err(|why| anyhow!("--mqtt-prefix: {why}"))?;
            }
            let site_key = site_key(config)?;
            let (source, key) = store.add_event_source(
                name,
                kind,
                mqtt_prefix.as_deref(),
                base_url.as_deref(),
                OffsetDateTime::now_utc(),
            )?;
            println!(
                "source {:?} added (id {}, kind {})",
                source.name, source.id, source.kind
            );
            print_setup(&SourceSetup::new(
                config,
                &Listening::default(),
                &store,
                &site_key,
                &source,
                &key,
            )?);
        }
        SourceCommand::List => {
            println!(
                "{:>4} {:<24} {:<7} {:<9} {:<16} {:<32} CREATED",
                "ID", "NAME", "KIND", "STATE", "MQTT PREFIX", "BASE URL"
            );
            for s in store.list_event_sources()? {
                println!(
                    "{:>4} {:<24} {:<7} {:<9} {:<16} {:<32} {}",
                    s.id,
                    s.name,
                    s.kind.as_str(),
                    enabled_str(s.enabled),
                    dash(s.mqtt_prefix.as_deref()),
                    dash(s.base_url.as_deref()),
                    show(s.created_at, tz),
                );
            }
        }
        SourceCommand::Disable { name } => {
            let s = find_source(&store, name)?;
            store.set_event_source_enabled(s.id, false)?;
            println!("source {:?} disabled: its events are refused", s.name);
        }
        SourceCommand::Enable { name } => {
            let s = find_source(&store, name)?;
            store.set_event_source_enabled(s.id, true)?;
            println!("source {:?} enabled", s.name);
        }
        SourceCommand::Remove { name } => {
            let s = find_source(&store, name)?;
            refuse_internal(&s, "removed").map_err(|why| anyhow!(why))?;
            store.remove_event_source(s.id)?;
            println!(
                "source {:?} removed: its key and MQTT prefix no longer work (its events stay)",
                s.name
            );
        }
        SourceCommand::RotateKey { name } => {
            let s = find_source(&store, name)?;
            refuse_internal(&s, "given a new key").map_err(|why| anyhow!(why))?;
            let site_key = site_key(config)?;
            let key = store.rotate_event_source_key(s.id)?;
            println!(
                "source {:?} has a new API key; the old one no longer works",
                s.name
            );
            print_setup(&SourceSetup::new(
                config,
                &Listening::default(),
                &store,
                &site_key,
                &s,
                &key,
            )?);
        }
    }
    Ok(())
}

fn print_setup(p: &SourceSetup) {
    println!("  API key:         {}", p.api_key);
    println!("                   (shown only this once; the box keeps only its hash)");
    println!("  webhook:         POST {}", p.webhook.url);
    println!("                   {}", p.webhook.header);
    println!("  try it:          {}", p.webhook.curl);
    if let Some(m) = &p.mqtt {
        match &m.broker {
            Some(b) => println!("  MQTT broker:     {b}"),
            None => println!("  MQTT broker:     off (hub.mqtt.mode = \"off\")"),
        }
        println!("  MQTT user:       {}", m.username);
        println!(
            "  MQTT password:   {} (derived from the API key)",
            m.password
        );
        println!(
            "  MQTT topics:     {} (Frigate's mqtt.topic_prefix: {:?})",
            m.topics.join(", "),
            m.topic_prefix
        );
    }
}

// ---- receivers ---------------------------------------------------------------------

pub fn receiver(config: &Config, cmd: &ReceiverCommand) -> Result<()> {
    let store = open(config)?;
    match cmd {
        ReceiverCommand::Add {
            name,
            webhook,
            format,
            email,
            smtp,
            security,
            from,
            to,
            username,
            password_file,
            ntfy,
            token_file,
        } => {
            let chosen = [webhook.is_some(), *email, ntfy.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if chosen != 1 {
                bail!("give exactly one of --webhook URL, --email or --ntfy URL");
            }
            let email_flags = smtp.is_some()
                || security.is_some()
                || from.is_some()
                || !to.is_empty()
                || username.is_some()
                || password_file.is_some();
            if !*email && email_flags {
                bail!("--smtp, --security, --from, --to, --username and --password-file are for --email");
            }
            if webhook.is_none() && format.is_some() {
                bail!("--format is for --webhook");
            }
            if ntfy.is_none() && token_file.is_some() {
                bail!("--token-file is for --ntfy");
            }
            let config = if let Some(url) = webhook {
                ReceiverConfig::Webhook {
                    url: url.clone(),
                    format: match format {
                        None | Some(FormatArg::Slack) => WebhookFormat::Slack,
                        Some(FormatArg::Json) => WebhookFormat::Json,
                    },
                }
            } else if let Some(url) = ntfy {
                ReceiverConfig::Ntfy {
                    url: url.clone(),
                    token: token_file
                        .as_deref()
                        .map(|p| read_secret(p, "token"))
                        .transpose()?,
                }
            } else {
                let smtp = smtp
                    .as_deref()
                    .ok_or_else(|| anyhow!("--email needs --smtp HOST:PORT"))?;
                let (host, port) = smtp
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .filter(|(h, p)| !h.is_empty() && *p != 0)
                    .ok_or_else(|| {
                        anyhow!("--smtp: {smtp:?} is not HOST:PORT (like smtp.example.com:587)")
                    })?;
                let security = match security.ok_or_else(|| {
                    anyhow!("--email needs --security tls|starttls|none (tls for port 465, starttls for 587)")
                })? {
                    SecurityArg::Tls => SmtpSecurity::Tls,
                    SecurityArg::Starttls => SmtpSecurity::Starttls,
                    SecurityArg::None => SmtpSecurity::None,
                };
                let from = from
                    .clone()
                    .ok_or_else(|| anyhow!("--email needs --from ADDRESS"))?;
                let to: Vec<String> = to
                    .iter()
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect();
                if to.is_empty() {
                    bail!("--email needs --to ADDRESS (repeat or comma-separate for more)");
                }
                if username.is_some() != password_file.is_some() {
                    bail!("give --username and --password-file together, or neither");
                }
                ReceiverConfig::Email {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port,
                    security,
                    username: username.clone(),
                    password: password_file
                        .as_deref()
                        .map(|p| read_secret(p, "password"))
                        .transpose()?,
                    from,
                    to,
                }
            };
            let id = store.add_receiver(name, &config).map_err(flag_err)?;
            let r = store.receiver(id)?;
            println!(
                "receiver {:?} added (id {id}, {})",
                r.name,
                receiver_target(&r.config)
            );
            println!("  try it: gatehouse receiver test {}", shell_word(&r.name));
        }
        ReceiverCommand::List => {
            println!(
                "{:>4} {:<24} {:<8} {:<9} TARGET",
                "ID", "NAME", "TYPE", "STATE"
            );
            for r in store.list_receivers()? {
                println!(
                    "{:>4} {:<24} {:<8} {:<9} {}",
                    r.id,
                    r.name,
                    r.config.kind(),
                    enabled_str(r.enabled),
                    receiver_target(&r.config)
                );
            }
        }
        ReceiverCommand::Disable { name } => {
            let r = find_receiver(&store, name)?;
            store.set_receiver_enabled(r.id, false)?;
            println!("receiver {:?} disabled: nothing more is sent to it", r.name);
        }
        ReceiverCommand::Enable { name } => {
            let r = find_receiver(&store, name)?;
            store.set_receiver_enabled(r.id, true)?;
            println!("receiver {:?} enabled", r.name);
        }
        ReceiverCommand::Remove { name } => {
            let r = find_receiver(&store, name)?;
            store.remove_receiver(r.id, OffsetDateTime::now_utc())?;
            println!("receiver {:?} removed", r.name);
        }
        ReceiverCommand::Test { name } => {
            let r = find_receiver(&store, name)?;
            drop(store);
            receiver_test(config, &r)?;
        }
    }
    Ok(())
}

/// A word the shell takes as is, quoted if needed.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The store's refusals of receiver settings, named by the flag that set them.
fn flag_err(e: StoreError) -> anyhow::Error {
    let flag = match &e {
        StoreError::Invalid { field, .. } => match *field {
            "webhook URL" => Some("--webhook"),
            "ntfy URL" => Some("--ntfy"),
            "ntfy token" => Some("--token-file"),
            "SMTP host" | "SMTP port" => Some("--smtp"),
            "e-mail from" => Some("--from"),
            "e-mail to" => Some("--to"),
            _ => None,
        },
        _ => None,
    };
    match flag {
        Some(f) => anyhow!("{f}: {e}"),
        None => e.into(),
    }
}

/// Where a receiver sends, without secrets.
fn receiver_target(c: &ReceiverConfig) -> String {
    match c {
        ReceiverConfig::Console => "the console's live feed".to_owned(),
        ReceiverConfig::Webhook { url, format } => format!(
            "{} ({})",
            redact_url(url),
            match format {
                WebhookFormat::Slack => "slack",
                WebhookFormat::Json => "json",
            }
        ),
        ReceiverConfig::Email {
            host,
            port,
            security,
            username,
            password,
            from,
            to,
        } => format!(
            "smtp {host}:{port} {}{}, {from} -> {}",
            match security {
                SmtpSecurity::Tls => "tls",
                SmtpSecurity::Starttls => "starttls",
                SmtpSecurity::None => "no tls",
            },
            match (username, password) {
                (Some(u), Some(_)) => format!(", user {u} (password set)"),
                _ => String::new(),
            },
            to.join(",")
        ),
        ReceiverConfig::Ntfy { url, token } => format!(
            "{}{}",
            redact_url(url),
            if token.is_some() { " (token set)" } else { "" }
        ),
    }
}

fn receiver_test(config: &Config, r: &Receiver) -> Result<()> {
    if matches!(r.config, ReceiverConfig::Console) {
        bail!("the console receiver is not sent to: its notifications appear in the console's live feed");
    }
    let by = shell_user("--by").unwrap_or_else(|_| "the CLI".to_owned());
    let mut random = [0u8; 16];
    getrandom_fill(&mut random)?;
    let n = test_notification(
        &r.name,
        &by,
        OffsetDateTime::now_utc(),
        u128::from_le_bytes(random),
    );
    let sender = test_sender(config).map_err(|e| anyhow!("cannot start the sender: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(sender.send(&r.config, &n));
    match outcome {
        Ok(sent) => {
            println!(
                "test notification delivered to {:?} in {} ms{} (event id {})",
                r.name,
                sent.latency.as_millis(),
                sent.status.map_or(String::new(), |s| format!(", HTTP {s}")),
                n.event.id
            );
            Ok(())
        }
        Err(e) => bail!("test notification to {:?} failed: {e}", r.name),
    }
}

/// Random bytes from the OS (the test event's id).
fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("no randomness from /dev/urandom")
}

// ---- rules -------------------------------------------------------------------------

pub fn rule(config: &Config, cmd: &RuleCommand) -> Result<()> {
    let store = open(config)?;
    match cmd {
        RuleCommand::Add {
            name,
            matcher,
            to,
            group,
            repeat,
            active,
            holidays,
        } => {
            let matcher = matcher.matcher()?;
            let holiday_rule = match holidays {
                None | Some(HolidaysArg::Closed) => HolidayRule::Closed,
                Some(HolidaysArg::Ignore) => HolidayRule::Ignore,
            };
            if holidays.is_some() && active.is_none() {
                bail!("--holidays goes with --active");
            }
            let active = active
                .as_deref()
                .map(|s| parse_schedule(s, holiday_rule).map_err(|e| anyhow!("--active: {e}")))
                .transpose()?;
            let group_window = group
                .as_deref()
                .map(|g| duration_arg("--group", g))
                .transpose()?
                .unwrap_or_default();
            let repeat_every = repeat
                .as_deref()
                .map(|r| duration_arg("--repeat", r))
                .transpose()?;
            if repeat_every.is_some_and(|d| d.is_zero()) {
                bail!("--repeat: must be at least 1s; leave it out to notify once");
            }
            let names: Vec<&str> = to
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .collect();
            if names.is_empty() {
                bail!("--to RECEIVER is required (repeat or comma-separate for more; see `gatehouse receiver list`)");
            }
            let mut receivers = Vec::with_capacity(names.len());
            for n in &names {
                receivers.push(find_receiver(&store, n)?.id);
            }
            let new = NewRule {
                name: name.clone(),
                matcher,
                active,
                receivers,
                group_window,
                repeat_every,
            };
            Rule {
                id: 0,
                name: new.name.clone(),
                enabled: true,
                matcher: new.matcher.clone(),
                active: new.active.clone(),
                receivers: new.receivers.clone(),
                group_window: new.group_window,
                repeat_every: new.repeat_every,
            }
            .validate()
            .map_err(|e| match e {
                gatehouse_alerts::model::ModelError::Invalid { field, why } => {
                    let flag = match field {
                        "group_window" => "--group",
                        "repeat_every" => "--repeat",
                        "active" => "--active",
                        "name" => "NAME",
                        other => other,
                    };
                    anyhow!("{flag}: {why}")
                }
                other => anyhow!("{other}"),
            })?;
            let id = store.add_rule(&new)?;
            let r = store.rule(id)?;
            println!(
                "rule {:?} added (id {id}): {}",
                r.name,
                rule_summary(&r, &names)
            );
        }
        RuleCommand::List => {
            let receivers: HashMap<i64, String> = store
                .list_receivers()?
                .into_iter()
                .map(|r| (r.id, r.name))
                .collect();
            println!(
                "{:>4} {:<24} {:<9} {:<32} {:<20} {:<6} {:<6} ACTIVE",
                "ID", "NAME", "STATE", "MATCHES", "TO", "GROUP", "REPEAT"
            );
            for r in store.list_rules()? {
                let to: Vec<String> = r
                    .receivers
                    .iter()
                    .map(|id| {
                        receivers
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("#{id}"))
                    })
                    .collect();
                println!(
                    "{:>4} {:<24} {:<9} {:<32} {:<20} {:<6} {:<6} {}",
                    r.id,
                    r.name,
                    enabled_str(r.enabled),
                    matcher_str(&r.matcher),
                    to.join(","),
                    format_duration(r.group_window),
                    r.repeat_every.map_or("-".to_owned(), format_duration),
                    active_str(&r),
                );
            }
        }
        RuleCommand::Disable { name } => {
            let r = find_rule(&store, name)?;
            store.set_rule_enabled(r.id, false)?;
            println!("rule {:?} disabled", r.name);
        }
        RuleCommand::Enable { name } => {
            let r = find_rule(&store, name)?;
            store.set_rule_enabled(r.id, true)?;
            println!("rule {:?} enabled", r.name);
        }
        RuleCommand::Remove { name } => {
            let r = find_rule(&store, name)?;
            store.remove_rule(r.id)?;
            println!("rule {:?} removed", r.name);
        }
    }
    Ok(())
}

fn active_str(r: &Rule) -> String {
    match &r.active {
        None => "always".to_owned(),
        Some(s) => format!(
            "{} (holidays {})",
            format_schedule(s),
            match &s.holidays {
                HolidayRule::Closed => "closed".to_owned(),
                HolidayRule::Ignore => "ignore".to_owned(),
                HolidayRule::Windows(w) => format_windows(w),
            }
        ),
    }
}

fn rule_summary(r: &Rule, to: &[&str]) -> String {
    format!(
        "{} -> {}; group {}; repeat {}; active {}",
        matcher_str(&r.matcher),
        to.join(","),
        format_duration(r.group_window),
        r.repeat_every.map_or("never".to_owned(), format_duration),
        active_str(r)
    )
}

// ---- silences ----------------------------------------------------------------------

pub fn silence(config: &Config, cmd: &SilenceCommand) -> Result<()> {
    let store = open(config)?;
    let tz = site_offset(config)?;
    let now = OffsetDateTime::now_utc();
    match cmd {
        SilenceCommand::Add {
            matcher,
            duration,
            until,
            starts,
            comment,
            author,
        } => {
            let matcher = matcher.matcher()?;
            let comment = comment
                .clone()
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| anyhow!("--comment is required: say why the alerts are silenced"))?;
            let author = match author {
                Some(a) => a.clone(),
                None => shell_user("--author")?,
            };
            let starts_at = starts
                .as_deref()
                .map(|s| time_arg("--starts", s, Bound::From, tz))
                .transpose()?
                .unwrap_or(now);
            let ends_at = match (duration, until) {
                (Some(_), Some(_)) => bail!("give --for or --until, not both"),
                (Some(d), None) => starts_at + duration_arg("--for", d)?,
                (None, Some(u)) => time_arg("--until", u, Bound::Until, tz)?,
                (None, None) => bail!("give --for DURATION (like 2h) or --until TIME"),
            };
            if ends_at <= starts_at {
                bail!(
                    "the silence would end ({}) before it starts ({}); check --for/--until and --starts",
                    show(ends_at, tz),
                    show(starts_at, tz)
                );
            }
            let new = NewSilence {
                matcher,
                starts_at,
                ends_at,
                author,
                comment,
            };
            let id = store.add_silence(&new, now)?;
            let s = store.silence(id)?;
            println!(
                "silence {id} added: {} from {} until {} (by {})",
                matcher_str(&s.matcher),
                show(s.starts_at, tz),
                show(s.ends_at, tz),
                s.author
            );
        }
        SilenceCommand::List { all } => {
            println!(
                "{:>4} {:<8} {:<25} {:<25} {:<16} {:<32} COMMENT",
                "ID", "STATE", "STARTS", "ENDS", "AUTHOR", "MATCHES"
            );
            for s in store.list_silences(None)? {
                let state = silence_state(&s, now);
                if state == "expired" && !*all {
                    continue;
                }
                println!(
                    "{:>4} {:<8} {:<25} {:<25} {:<16} {:<32} {}",
                    s.id,
                    state,
                    show(s.starts_at, tz),
                    show(s.ends_at, tz),
                    s.author,
                    matcher_str(&s.matcher),
                    s.comment
                );
            }
        }
        SilenceCommand::Expire { id } => {
            let expired = store.expire_silence(*id, now).map_err(|e| match e {
                StoreError::NotFound { .. } => {
                    anyhow!("no silence has the id {id} (see `gatehouse silence list --all`)")
                }
                e => e.into(),
            })?;
            if expired {
                println!("silence {id} expired");
            } else {
                println!("silence {id} had already ended");
            }
        }
    }
    Ok(())
}

// ---- events ------------------------------------------------------------------------

pub fn event(config: &Config, cmd: &EventCommand) -> Result<()> {
    let store = open(config)?;
    let tz = site_offset(config)?;
    match cmd {
        EventCommand::List {
            since,
            until,
            kind,
            source,
            severity,
            acked,
            unacked,
            text,
            after,
            before,
            limit,
            json,
        } => {
            if *limit == 0 || *limit > MAX_PAGE {
                bail!("--limit must be 1 to {MAX_PAGE}");
            }
            let filter = EventFilter {
                after_seq: *after,
                before_seq: *before,
                since: since
                    .as_deref()
                    .map(|s| time_arg("--since", s, Bound::From, tz))
                    .transpose()?,
                until: until
                    .as_deref()
                    .map(|s| time_arg("--until", s, Bound::Until, tz))
                    .transpose()?,
                kind: kind.clone(),
                source: source.clone(),
                severity_min: severity.map(Severity::from),
                acked: if *acked {
                    Some(true)
                } else if *unacked {
                    Some(false)
                } else {
                    None
                },
                text: text.clone().filter(|t| !t.is_empty()),
                limit: *limit,
            };
            let events = store.list_events(&filter)?;
            if *json {
                let list: Vec<serde_json::Value> =
                    events.iter().map(|e| event_view(e, tz)).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:>6} {:<26} {:<25} {:<8} {:<16} {:<20} {:<16} {:<10} MESSAGE",
                "SEQ", "ID", "RECEIVED", "SEVERITY", "SOURCE", "KIND", "WHERE", "ACK"
            );
            for e in &events {
                let n = &e.new;
                println!(
                    "{:>6} {:<26} {:<25} {:<8} {:<16} {:<20} {:<16} {:<10} {}",
                    e.seq,
                    e.id.to_string(),
                    show(e.received_at, tz),
                    n.severity.as_str(),
                    n.source,
                    n.kind,
                    dash(
                        n.zone
                            .as_deref()
                            .or(n.camera.as_deref())
                            .or(n.device.as_deref())
                    ),
                    e.ack.as_ref().map_or("-", |a| a.by.as_str()),
                    one_line(n.message.as_deref().unwrap_or("")),
                );
            }
        }
        EventCommand::Show { id, json } => {
            let e = find_event(&store, id)?;
            let d = store.event_detail(e.id)?;
            let log = store.delivery_log(&DeliveryLogFilter {
                event: Some(e.id),
                after_id: Some(0),
                limit: MAX_PAGE,
                ..DeliveryLogFilter::default()
            })?;
            if *json {
                let mut v = event_view(&d.event, tz);
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("silenced_by".into(), serde_json::json!(d.silenced_by));
                    m.insert(
                        "deliveries".into(),
                        serde_json::json!(d
                            .deliveries
                            .iter()
                            .map(|x| serde_json::json!({
                                "id": x.id,
                                "receiver": x.receiver_name,
                                "kind": kind_name(x.kind),
                                "status": x.status.as_str(),
                                "attempts": x.attempts,
                                "last_error": x.last_error,
                            }))
                            .collect::<Vec<_>>()),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print_event(&d.event, d.silenced_by, tz);
            println!("deliveries:");
            if d.deliveries.is_empty() {
                println!("  none");
            }
            for x in &d.deliveries {
                println!(
                    "  #{:<6} {:<20} {:<9} {:<9} attempts {:<3} {}{}",
                    x.id,
                    x.receiver_name,
                    kind_label(x.kind),
                    x.status.as_str(),
                    x.attempts,
                    x.delivered_at
                        .map_or(String::new(), |t| format!("delivered {}", show(t, tz))),
                    x.last_error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" last error: {}", one_line(e))),
                );
            }
            if !log.is_empty() {
                println!("attempts:");
                for l in &log {
                    println!(
                        "  #{:<6} try {:<3} {:<25} {:>6} ms {:<9} {}{}",
                        l.delivery,
                        l.attempt,
                        show(l.started_at, tz),
                        l.latency.as_millis(),
                        l.outcome.as_str(),
                        l.http_status
                            .map_or(String::new(), |s| format!("HTTP {s} ")),
                        l.error.as_deref().map_or(String::new(), one_line),
                    );
                }
            }
        }
        EventCommand::Ack { id, comment, by } => {
            let e = find_event(&store, id)?;
            let by = match by {
                Some(b) => b.clone(),
                None => shell_user("--by")?,
            };
            match store.ack_event(e.id, &by, comment.as_deref(), OffsetDateTime::now_utc())? {
                AckOutcome::Acked(a) => {
                    println!(
                        "event {} acknowledged by {} at {}",
                        e.id,
                        a.by,
                        show(a.at, tz)
                    )
                }
                AckOutcome::AlreadyAcked(a) => println!(
                    "event {} was already acknowledged by {} at {}{}",
                    e.id,
                    a.by,
                    show(a.at, tz),
                    a.comment
                        .map_or(String::new(), |c| format!(" ({})", one_line(&c)))
                ),
            }
        }
        EventCommand::Check => {
            let r = store.reconcile()?;
            println!("{r}");
            if !r.is_consistent() {
                bail!("the delivery outbox and the delivery log do not reconcile (see above)");
            }
        }
    }
    Ok(())
}

fn kind_label(k: gatehouse_alerts::model::NotificationKind) -> String {
    match k {
        gatehouse_alerts::model::NotificationKind::Repeat(n) => format!("repeat {n}"),
        other => kind_name(other).to_owned(),
    }
}

/// Text on one line: control characters (newlines too) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn print_event(e: &Event, silenced_by: Option<i64>, tz: UtcOffset) {
    let n = &e.new;
    let field = |label: &str, v: Option<&str>| {
        if let Some(v) = v {
            println!("{label:<14}{}", one_line(v));
        }
    };
    println!("{:<14}{}", "event", e.id);
    println!("{:<14}{}", "seq", e.seq);
    println!("{:<14}{} ({})", "source", n.source, n.source_kind);
    println!("{:<14}{}", "kind", n.kind);
    println!("{:<14}{}", "severity", n.severity);
    println!("{:<14}{}", "time", show(n.time, tz));
    println!("{:<14}{}", "received", show(e.received_at, tz));
    println!("{:<14}{}", "lifecycle", n.lifecycle.as_str());
    if let Some(t) = e.ended_at {
        println!("{:<14}{}", "ended", show(t, tz));
    }
    field("camera", n.camera.as_deref());
    field("zone", n.zone.as_deref());
    field("device", n.device.as_deref());
    field("message", n.message.as_deref());
    field("snapshot", n.snapshot_url.as_deref());
    field("clip", n.clip_url.as_deref());
    field("external id", n.external_id.as_deref());
    if let Some(g) = e.grouped_into {
        println!("{:<14}{g} (no notification of its own)", "grouped into");
    }
    if let Some(s) = silenced_by {
        println!("{:<14}silence {s} (stored, not notified)", "silenced by");
    }
    match &e.ack {
        Some(a) => println!(
            "{:<14}by {} at {}{}",
            "acknowledged",
            a.by,
            show(a.at, tz),
            a.comment
                .as_deref()
                .map_or(String::new(), |c| format!(": {}", one_line(c)))
        ),
        None => println!("{:<14}no", "acknowledged"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn matchers_print_what_they_match() {
        assert_eq!(matcher_str(&Matcher::default()), "everything");
        let m = Matcher {
            kinds: vec!["intrusion".into(), "review.*".into()],
            sources: vec![],
            zones: vec!["yard".into()],
            min_severity: Severity::Warning,
        };
        assert_eq!(
            matcher_str(&m),
            "kind=intrusion,review.* zone=yard >=warning"
        );
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("ops-slack"), "ops-slack");
        assert_eq!(shell_word("night shift"), "'night shift'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
