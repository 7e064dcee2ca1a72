//! The alert configuration: receivers (where notifications go), rules (which events go
//! to which receivers, grouped and repeated how), silences (when matching events are
//! stored but not notified), and [`Store::load_alert_config`], the consistent read the
//! hub's planner is built from.
//!
//! Promises:
//! - Everything is checked before it is saved, and the error names the field and the
//!   problem: receiver URLs are http(s), e-mail addresses plausible and `to` non-empty;
//!   rules send to at least one existing receiver; schedules pass
//!   [`gatehouse_access::model::Schedule::validate`]; silences end after they start.
//! - There is exactly one console receiver, from migration 4 on: it cannot be added
//!   twice, turned into another kind, or removed (disable it instead).
//! - Removing a receiver is refused while deliveries to it are pending or a rule sends to
//!   it ([`StoreError::InUse`]); otherwise it becomes a tombstone: hidden from
//!   [`Store::receiver`] and [`Store::list_receivers`], its name free again, its past
//!   deliveries and log rows still naming it.
//! - Every change bumps [`Store::alert_config_revision`] (schema triggers), so the hub
//!   reloads only when something changed.
//!
//! E-mail passwords are stored as given (SMTP needs them); API answers must leave them out.

use super::sources::check_http_url;
use super::{whole_secs, write_tx};
use crate::error::{is_unique_violation, Entity, StoreError};
use crate::store::{check_name, from_unix_ms, to_unix_ms, validate_schedule, Result, Store};
use gatehouse_access::model::Schedule;
use gatehouse_alerts::model::{
    limits, Matcher, Receiver, ReceiverConfig, ReceiverId, Rule, RuleId, Silence, SilenceId,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::time::Duration;
use time::{Date, OffsetDateTime};

/// Longest grouping window a rule may have: beyond a day, grouping hides more than it
/// tidies.
pub const MAX_GROUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Longest author name of a silence or acknowledgement.
pub(super) const MAX_AUTHOR_LEN: usize = 64;

/// What [`Store::add_rule`] and [`Store::update_rule`] need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    /// Unique among rules.
    pub name: String,
    /// Which events the rule takes.
    pub matcher: Matcher,
    /// When the rule applies (site-local time); `None` = always.
    pub active: Option<Schedule>,
    /// At least one; each must exist.
    pub receivers: Vec<ReceiverId>,
    /// Whole seconds, at most [`MAX_GROUP_WINDOW`]; zero = no grouping.
    pub group_window: Duration,
    /// Whole seconds, more than zero; `None` = notify once.
    pub repeat_every: Option<Duration>,
}

/// What [`Store::add_silence`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSilence {
    /// Which events it holds.
    pub matcher: Matcher,
    /// In force from (inclusive).
    pub starts_at: OffsetDateTime,
    /// After `starts_at`.
    pub ends_at: OffsetDateTime,
    /// Who set it (an admin name).
    pub author: String,
    /// Why (may be empty).
    pub comment: String,
}

/// Everything the hub's planner decides from, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// The enabled rules. A rule's `receivers` may name a disabled receiver, which is not
    /// in `receivers` below: skip it.
    pub rules: Vec<Rule>,
    /// The enabled receivers.
    pub receivers: Vec<Receiver>,
    /// Silences not yet ended at the time asked for (some may start later; silences
    /// expired before they started are left out).
    pub silences: Vec<Silence>,
    /// Site holidays (local dates), for the rules' schedules.
    pub holidays: Vec<Date>,
}

// ---- checks ------------------------------------------------------------------------

/// A plausible e-mail address, bare (`ops@example.com`) or with a display name
/// (`Ops <ops@example.com>`): one `@` with something on both sides, no spaces or control
/// characters in the address. The SMTP server has the last word.
fn check_email(field: &'static str, text: &str) -> Result<()> {
    let addr = match (text.rfind('<'), text.ends_with('>')) {
        (Some(i), true) => &text[i + 1..text.len() - 1],
        _ => text,
    };
    let bad = || StoreError::invalid(field, format!("{text:?} is not an e-mail address"));
    if text.len() > 254 || text.chars().any(char::is_control) {
        return Err(bad());
    }
    let (local, domain) = addr.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || addr
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>'))
    {
        return Err(bad());
    }
    Ok(())
}

fn check_receiver_config(config: &ReceiverConfig) -> Result<()> {
    match config {
        ReceiverConfig::Console => Ok(()),
        ReceiverConfig::Webhook { url, .. } => check_http_url("webhook URL", url),
        ReceiverConfig::Ntfy { url, token } => {
            check_http_url("ntfy URL", url)?;
            if token.as_deref().is_some_and(|t| {
                t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control())
            }) {
                return Err(StoreError::invalid(
                    "ntfy token",
                    "must not be empty or contain spaces",
                ));
            }
            Ok(())
        }
        ReceiverConfig::Email {
            host,
            port,
            username,
            password,
            from,
            to,
            ..
        } => {
            if host.is_empty()
                || host.len() > 253
                || host.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(StoreError::invalid(
                    "SMTP host",
                    format!("{host:?} is not a host name or address"),
                ));
            }
            if *port == 0 {
                return Err(StoreError::invalid("SMTP port", "must not be 0"));
            }
            if username.is_some() != password.is_some() {
                return Err(StoreError::invalid(
                    "SMTP credentials",
                    "give both a username and a password, or neither",
                ));
            }
            check_email("e-mail from", from)?;
            if to.is_empty() {
                return Err(StoreError::invalid(
                    "e-mail to",
                    "needs at least one address",
                ));
            }
            for addr in to {
                check_email("e-mail to", addr)?;
            }
            Ok(())
        }
    }
}

/// A matcher's patterns: non-empty, at most [`limits::NAME`] bytes plus a trailing `*`,
/// no control characters.
pub(super) fn check_matcher(m: &Matcher) -> Result<()> {
    for (field, list) in [
        ("matcher kinds", &m.kinds),
        ("matcher sources", &m.sources),
        ("matcher zones", &m.zones),
    ] {
        for p in list {
            let bare = p.strip_suffix('*').unwrap_or(p);
            if p.is_empty() || bare.len() > limits::NAME || p.chars().any(char::is_control) {
                return Err(StoreError::invalid(
                    field,
                    format!(
                        "{p:?}: patterns are 1 to {} characters, optionally ending in '*'",
                        limits::NAME
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn matcher_json(m: &Matcher) -> Result<String> {
    serde_json::to_string(m).map_err(|e| StoreError::invalid("matcher", e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, id: i64, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what} {id}: {e}")))
}

/// Checked columns of a rule: matcher JSON, schedule JSON, window and interval seconds.
struct RuleCols {
    matcher: String,
    active: Option<String>,
    group_window_s: i64,
    repeat_every_s: Option<i64>,
    receivers: Vec<ReceiverId>,
}

fn rule_cols(conn: &Connection, rule: &NewRule) -> Result<RuleCols> {
    check_name("rule name", &rule.name)?;
    check_matcher(&rule.matcher)?;
    let active = match &rule.active {
        Some(s) => {
            validate_schedule(s)?;
            Some(serde_json::to_string(s).map_err(|e| StoreError::BadSchedule(e.to_string()))?)
        }
        None => None,
    };
    if rule.group_window > MAX_GROUP_WINDOW {
        return Err(StoreError::invalid(
            "group window",
            format!("at most {} s", MAX_GROUP_WINDOW.as_secs()),
        ));
    }
    let group_window_s = whole_secs("group window", rule.group_window)?;
    let repeat_every_s = match rule.repeat_every {
        Some(d) if d.is_zero() => {
            return Err(StoreError::invalid(
                "repeat interval",
                "must be more than zero (or none)",
            ))
        }
        Some(d) => Some(whole_secs("repeat interval", d)?),
        None => None,
    };
    let mut receivers = rule.receivers.clone();
    receivers.sort_unstable();
    receivers.dedup();
    if receivers.is_empty() {
        return Err(StoreError::invalid(
            "rule receivers",
            "a rule needs at least one receiver",
        ));
    }
    for &r in &receivers {
        let live = conn
            .query_row(
                "SELECT 1 FROM receivers WHERE id = ?1 AND removed_at IS NULL",
                [r],
                |_| Ok(()),
            )
            .optional()?;
        if live.is_none() {
            return Err(StoreError::not_found(Entity::Receiver, r));
        }
    }
    Ok(RuleCols {
        matcher: matcher_json(&rule.matcher)?,
        active,
        group_window_s,
        repeat_every_s,
        receivers,
    })
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

// ---- loading -----------------------------------------------------------------------

type ReceiverRow = (i64, String, bool, String);

fn load_receivers(conn: &Connection, only_enabled: bool) -> Result<Vec<Receiver>> {
    let sql = if only_enabled {
        "SELECT id, name, enabled, config FROM receivers
         WHERE removed_at IS NULL AND enabled = 1 ORDER BY id"
    } else {
        "SELECT id, name, enabled, config FROM receivers WHERE removed_at IS NULL ORDER BY id"
    };
    let mut st = conn.prepare_cached(sql)?;
    let rows = st
        .query_map([], |r| ReceiverRow::try_from(r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(receiver).collect()
}

fn receiver(row: ReceiverRow) -> Result<Receiver> {
    let (id, name, enabled, config) = row;
    Ok(Receiver {
        id,
        name,
        enabled,
        config: parse_json("receiver", id, &config)?,
    })
}

type RuleRow = (i64, String, bool, String, Option<String>, i64, Option<i64>);

/// Rules (all, or only enabled ones, or the one with `id`) with their receivers.
fn load_rules(conn: &Connection, only_enabled: bool, id: Option<RuleId>) -> Result<Vec<Rule>> {
    let mut links: BTreeMap<RuleId, Vec<ReceiverId>> = BTreeMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT rule_id, receiver_id FROM rule_receivers
             WHERE ?1 IS NULL OR rule_id = ?1 ORDER BY rule_id, receiver_id",
        )?;
        let rows = st.query_map([id], |r| <(i64, i64)>::try_from(r))?;
        for row in rows {
            let (rule, receiver) = row?;
            links.entry(rule).or_default().push(receiver);
        }
    }
    let mut st = conn.prepare_cached(
        "SELECT id, name, enabled, matcher, active, group_window_s, repeat_every_s FROM rules
         WHERE (?1 IS NULL OR id = ?1) AND (?2 = 0 OR enabled = 1) ORDER BY id",
    )?;
    let rows = st
        .query_map(params![id, only_enabled], |r| RuleRow::try_from(r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, name, enabled, matcher, active, window, repeat)| {
            Ok(Rule {
                id,
                name,
                enabled,
                matcher: parse_json("rule", id, &matcher)?,
                active: active
                    .map(|a| parse_json::<Schedule>("rule", id, &a))
                    .transpose()?,
                receivers: links.remove(&id).unwrap_or_default(),
                group_window: secs(window),
                repeat_every: repeat.map(secs),
            })
        })
        .collect()
}

type SilenceRow = (i64, String, i64, i64, String, String);

const SILENCE_COLS: &str = "id, matcher, starts_at, ends_at, author, comment";

fn silence(row: SilenceRow) -> Result<Silence> {
    let (id, matcher, starts, ends, author, comment) = row;
    Ok(Silence {
        id,
        matcher: parse_json("silence", id, &matcher)?,
        starts_at: from_unix_ms(starts)?,
        ends_at: from_unix_ms(ends)?,
        author,
        comment,
    })
}

fn load_silences(conn: &Connection, sql_where: &str, at: Option<i64>) -> Result<Vec<Silence>> {
    let sql = format!("SELECT {SILENCE_COLS} FROM silences WHERE {sql_where} ORDER BY id");
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st
        .query_map([at], |r| SilenceRow::try_from(r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(silence).collect()
}

impl Store {
    /// A counter bumped by every change to receivers, rules, silences, holidays and event
    /// sources. Read it before [`Store::load_alert_config`]; if it moved since, load again.
    pub fn alert_config_revision(&self) -> Result<u64> {
        let v: i64 =
            self.conn()
                .query_row("SELECT value FROM alert_revision WHERE id = 1", [], |r| {
                    r.get(0)
                })?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("alert revision {v}")))
    }

    /// Enabled rules and receivers, silences not ended at `now`, and holidays, read in one
    /// transaction.
    pub fn load_alert_config(&self, now: OffsetDateTime) -> Result<AlertConfig> {
        let tx = self.conn().unchecked_transaction()?;
        let config = AlertConfig {
            rules: load_rules(&tx, true, None)?,
            receivers: load_receivers(&tx, true)?,
            silences: load_silences(
                &tx,
                "ends_at > ?1 AND ends_at > starts_at",
                Some(to_unix_ms(now)?),
            )?,
            holidays: self.list_holidays()?.into_iter().map(|h| h.date).collect(),
        };
        tx.commit()?;
        Ok(config)
    }

    // ---- receivers -----------------------------------------------------------------

    /// Adds a receiver (enabled). A taken name is [`StoreError::NameTaken`]; a second
    /// console is [`StoreError::Conflict`].
    pub fn add_receiver(&self, name: &str, config: &ReceiverConfig) -> Result<ReceiverId> {
        check_name("receiver name", name)?;
        check_receiver_config(config)?;
        let json = serde_json::to_string(config)
            .map_err(|e| StoreError::invalid("receiver", e.to_string()))?;
        let tx = write_tx(self.conn())?;
        if matches!(config, ReceiverConfig::Console) {
            if let Some(existing) = self.console_receiver_name(&tx)? {
                return Err(StoreError::Conflict {
                    entity: Entity::Receiver,
                    key: format!("{name:?}"),
                    why: format!("there is already a console receiver ({existing:?})"),
                });
            }
        }
        match tx.execute(
            "INSERT INTO receivers (name, enabled, config) VALUES (?1, 1, ?2)",
            params![name, json],
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::NameTaken {
                    entity: Entity::Receiver,
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    fn console_receiver_name(&self, conn: &Connection) -> Result<Option<String>> {
        Ok(conn
            .query_row(
                "SELECT name FROM receivers WHERE kind = 'console' AND removed_at IS NULL",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A live (not removed) receiver.
    pub fn receiver(&self, id: ReceiverId) -> Result<Receiver> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, name, enabled, config FROM receivers
                 WHERE id = ?1 AND removed_at IS NULL",
                [id],
                |r| ReceiverRow::try_from(r),
            )
            .optional()?;
        row.map(receiver)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Receiver, id))
    }

    /// The live receiver called `name`.
    pub fn receiver_by_name(&self, name: &str) -> Result<Receiver> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, name, enabled, config FROM receivers
                 WHERE name = ?1 AND removed_at IS NULL",
                [name],
                |r| ReceiverRow::try_from(r),
            )
            .optional()?;
        row.map(receiver)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Receiver, format!("{name:?}")))
    }

    /// Live receivers, enabled or not, by id.
    pub fn list_receivers(&self) -> Result<Vec<Receiver>> {
        load_receivers(self.conn(), false)
    }

    /// Replaces a receiver's configuration. The console stays the console, and no other
    /// receiver can become one ([`StoreError::Conflict`]).
    pub fn set_receiver_config(&self, id: ReceiverId, config: &ReceiverConfig) -> Result<()> {
        check_receiver_config(config)?;
        let json = serde_json::to_string(config)
            .map_err(|e| StoreError::invalid("receiver", e.to_string()))?;
        let tx = write_tx(self.conn())?;
        let current = self.receiver(id)?;
        let was_console = matches!(current.config, ReceiverConfig::Console);
        if was_console != matches!(config, ReceiverConfig::Console) {
            return Err(StoreError::Conflict {
                entity: Entity::Receiver,
                key: format!("{:?}", current.name),
                why: "the console receiver cannot change kind, and there is only one".into(),
            });
        }
        tx.execute(
            "UPDATE receivers SET config = ?2 WHERE id = ?1",
            params![id, json],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Enables or disables a receiver. A disabled receiver gets no new deliveries; its
    /// pending ones stay pending (the hub's worker for it stops).
    pub fn set_receiver_enabled(&self, id: ReceiverId, enabled: bool) -> Result<()> {
        if self.conn().execute(
            "UPDATE receivers SET enabled = ?2 WHERE id = ?1 AND removed_at IS NULL",
            params![id, enabled],
        )? == 0
        {
            return Err(StoreError::not_found(Entity::Receiver, id));
        }
        Ok(())
    }

    /// Removes a receiver (see the module docs): refused for the console, while
    /// deliveries to it are pending, or while rules send to it.
    pub fn remove_receiver(&self, id: ReceiverId, now: OffsetDateTime) -> Result<()> {
        let tx = write_tx(self.conn())?;
        let current = self.receiver(id)?;
        if matches!(current.config, ReceiverConfig::Console) {
            return Err(StoreError::Conflict {
                entity: Entity::Receiver,
                key: format!("{:?}", current.name),
                why: "the console receiver cannot be removed; disable it instead".into(),
            });
        }
        let pending: i64 = tx.query_row(
            "SELECT count(*) FROM deliveries WHERE receiver_id = ?1 AND status = 'pending'",
            [id],
            |r| r.get(0),
        )?;
        if pending > 0 {
            return Err(StoreError::InUse {
                entity: Entity::Receiver,
                key: format!("{:?}", current.name),
                by: format!("{pending} pending deliveries (disable it and let them finish)"),
            });
        }
        let rules: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT r.name FROM rules r JOIN rule_receivers rr ON rr.rule_id = r.id
                 WHERE rr.receiver_id = ?1 ORDER BY r.id",
            )?;
            let names = st
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            names
        };
        if !rules.is_empty() {
            return Err(StoreError::InUse {
                entity: Entity::Receiver,
                key: format!("{:?}", current.name),
                by: format!("rule(s) {}", quoted_list(&rules)),
            });
        }
        tx.execute(
            "UPDATE receivers SET removed_at = ?2, enabled = 0 WHERE id = ?1",
            params![id, to_unix_ms(now)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    // ---- rules ---------------------------------------------------------------------

    /// Adds an enabled rule. A taken name is [`StoreError::NameTaken`], an unknown
    /// receiver [`StoreError::NotFound`].
    pub fn add_rule(&self, rule: &NewRule) -> Result<RuleId> {
        let tx = write_tx(self.conn())?;
        let cols = rule_cols(&tx, rule)?;
        match tx.execute(
            "INSERT INTO rules (name, enabled, matcher, active, group_window_s, repeat_every_s)
             VALUES (?1, 1, ?2, ?3, ?4, ?5)",
            params![
                rule.name,
                cols.matcher,
                cols.active,
                cols.group_window_s,
                cols.repeat_every_s
            ],
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::NameTaken {
                    entity: Entity::Rule,
                    name: rule.name.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_rowid();
        link_receivers(&tx, id, &cols.receivers)?;
        tx.commit()?;
        Ok(id)
    }

    /// One rule, enabled or not, with its receivers.
    pub fn rule(&self, id: RuleId) -> Result<Rule> {
        load_rules(self.conn(), false, Some(id))?
            .pop()
            .ok_or_else(|| StoreError::not_found(Entity::Rule, id))
    }

    /// The rule called `name`.
    pub fn rule_by_name(&self, name: &str) -> Result<Rule> {
        let id: Option<RuleId> = self
            .conn()
            .query_row("SELECT id FROM rules WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => self.rule(id),
            None => Err(StoreError::not_found(Entity::Rule, format!("{name:?}"))),
        }
    }

    /// Every rule, enabled or not, by id.
    pub fn list_rules(&self) -> Result<Vec<Rule>> {
        load_rules(self.conn(), false, None)
    }

    /// Replaces everything of a rule but its id and whether it is enabled. Repeats already
    /// scheduled follow the new interval (and stop if it is gone).
    pub fn update_rule(&self, id: RuleId, rule: &NewRule) -> Result<()> {
        let tx = write_tx(self.conn())?;
        let cols = rule_cols(&tx, rule)?;
        match tx.execute(
            "UPDATE rules SET name = ?2, matcher = ?3, active = ?4, group_window_s = ?5,
                              repeat_every_s = ?6
             WHERE id = ?1",
            params![
                id,
                rule.name,
                cols.matcher,
                cols.active,
                cols.group_window_s,
                cols.repeat_every_s
            ],
        ) {
            Ok(0) => return Err(StoreError::not_found(Entity::Rule, id)),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::NameTaken {
                    entity: Entity::Rule,
                    name: rule.name.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        tx.execute("DELETE FROM rule_receivers WHERE rule_id = ?1", [id])?;
        link_receivers(&tx, id, &cols.receivers)?;
        tx.commit()?;
        Ok(())
    }

    /// Enables or disables a rule. A disabled rule plans nothing, and its scheduled
    /// repeats are dropped when next due.
    pub fn set_rule_enabled(&self, id: RuleId, enabled: bool) -> Result<()> {
        if self.conn().execute(
            "UPDATE rules SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
        )? == 0
        {
            return Err(StoreError::not_found(Entity::Rule, id));
        }
        Ok(())
    }

    /// Removes a rule and its scheduled repeats. Deliveries it caused stay, without it.
    pub fn remove_rule(&self, id: RuleId) -> Result<()> {
        if self
            .conn()
            .execute("DELETE FROM rules WHERE id = ?1", [id])?
            == 0
        {
            return Err(StoreError::not_found(Entity::Rule, id));
        }
        Ok(())
    }

    // ---- silences ------------------------------------------------------------------

    /// Adds a silence.
    pub fn add_silence(&self, new: &NewSilence, now: OffsetDateTime) -> Result<SilenceId> {
        check_matcher(&new.matcher)?;
        if new.ends_at <= new.starts_at {
            return Err(StoreError::invalid("silence", "must end after it starts"));
        }
        check_author("silence author", &new.author)?;
        if new.comment.len() > limits::MESSAGE {
            return Err(StoreError::invalid(
                "silence comment",
                format!("longer than {} bytes", limits::MESSAGE),
            ));
        }
        self.conn().execute(
            "INSERT INTO silences (matcher, starts_at, ends_at, author, comment, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                matcher_json(&new.matcher)?,
                to_unix_ms(new.starts_at)?,
                to_unix_ms(new.ends_at)?,
                new.author,
                new.comment,
                to_unix_ms(now)?
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// One silence, ended or not.
    pub fn silence(&self, id: SilenceId) -> Result<Silence> {
        load_silences(self.conn(), "id = ?1", Some(id))?
            .pop()
            .ok_or_else(|| StoreError::not_found(Entity::Silence, id))
    }

    /// Silences by id: all of them, or those in force at a time
    /// (`starts_at <= t < ends_at`).
    pub fn list_silences(&self, active_at: Option<OffsetDateTime>) -> Result<Vec<Silence>> {
        match active_at {
            Some(t) => load_silences(
                self.conn(),
                "starts_at <= ?1 AND ends_at > ?1",
                Some(to_unix_ms(t)?),
            ),
            None => load_silences(self.conn(), "?1 IS NULL", None),
        }
    }

    /// Ends a silence at `now` (one that has not started yet ends before it starts).
    /// `Ok(false)`: it had already ended.
    pub fn expire_silence(&self, id: SilenceId, now: OffsetDateTime) -> Result<bool> {
        let now = to_unix_ms(now)?;
        let tx = write_tx(self.conn())?;
        let ends: Option<i64> = tx
            .query_row("SELECT ends_at FROM silences WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(ends) = ends else {
            return Err(StoreError::not_found(Entity::Silence, id));
        };
        if ends <= now {
            return Ok(false);
        }
        tx.execute(
            "UPDATE silences SET ends_at = max(starts_at, ?2) WHERE id = ?1",
            params![id, now],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

fn link_receivers(conn: &Connection, rule: RuleId, receivers: &[ReceiverId]) -> Result<()> {
    let mut st =
        conn.prepare_cached("INSERT INTO rule_receivers (rule_id, receiver_id) VALUES (?1, ?2)")?;
    for r in receivers {
        st.execute(params![rule, r])?;
    }
    Ok(())
}

/// An admin name as the author of a silence or acknowledgement.
pub(super) fn check_author(field: &'static str, author: &str) -> Result<()> {
    if author.trim().is_empty()
        || author.chars().count() > MAX_AUTHOR_LEN
        || author.chars().any(char::is_control)
    {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_AUTHOR_LEN} printable characters"),
        ));
    }
    Ok(())
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
