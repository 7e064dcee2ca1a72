//! The admin API's resource routes: people, cards, levels, gates, zones, the access log
//! and admins. Each handler authenticates ([`Caller`]), checks the role table
//! ([`Caller::may`]), reads its body field by field ([`Fields`]) and makes the same
//! `gatehouse_store::Store` calls the CLI makes.
//!
//! Promises:
//! - A change is checked whole before anything is written; where one request needs two
//!   store calls (a gate in a new zone, a level and its gates) a failure of the second
//!   undoes the first.
//! - After a change to what gates are decided from, the access service reloads before the
//!   reply, so the next gate request sees it.
//! - Cards are shown by number, owner, state and label: never by their hash or raw id.
//! - Times are shown in RFC 3339 in the site's offset; dates typed are site days.
//!
//! Bodies, by route (`?` optional; "ref" is an id number or a name):
//! - `POST /people`: `name`, `valid_from?`, `valid_until?` (date or RFC 3339).
//!   `PATCH /people/{id}`: any of `name`, `enabled`, `valid_from`, `valid_until` (`null`
//!   clears a bound).
//! - `POST /cards`: `acc_id` (as the CLI takes it: `"0004123456"`, `"0x04A1B2C3"`,
//!   `"04:a1:b2:c3"`), `person` (ref), `master?`, `valid_until?`, `label?`.
//!   `PATCH /cards/{id}`: any of `enabled`, `master`, `valid_until`.
//! - `POST /levels`: `name`, `gates` (refs), `schedule` (the CLI's text form, or the model's
//!   JSON `{"weekly": [...7 lists of {"start","end"} minutes], "holidays": ...}`),
//!   `holidays?` (`closed` | `ignore`, with the text form). `POST /levels/{id}/grant`:
//!   `person` (ref).
//! - `POST /gates`: `name`, `zone?` (ref; a new name creates the zone; default `main`),
//!   `direction?` (`in` | `out`), `relay_ms?` (default 3000), `allowed_ips?` (list).
//! - `POST /zones`: `name`, `anti_passback?`.
//! - `GET /access/log?gate=&person=&since=&until=&limit=&after=`.
//! - `POST /admins`: `name`, `role` (`admin` | `operator` | `installer`), `password`.

use super::auth::{Action, Caller};
use super::password;
use super::{reply, AdminApi, ApiError, Fields, Patch};
use crate::provisioning::GateProvisioning;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gatehouse_access::model::{Direction, HolidayRule, Level, Person, Schedule, Validity};
use gatehouse_access::text::{
    check_label_against_typed, format_schedule, parse_acc_id, parse_bound, parse_schedule, Bound,
};
use gatehouse_store::admin::{AdminRecord, AdminRole};
use gatehouse_store::{
    CardRecord, GateRecord, LogFilter, LogRow, NewCard, NewGate, Store, StoreError,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Default and largest page of `GET /api/v1/access/log`.
pub const LOG_DEFAULT_LIMIT: u32 = 100;
pub const LOG_MAX_LIMIT: u32 = 1000;

/// A new gate's relay time when none is given (the CLI's default).
pub const DEFAULT_RELAY_MS: u32 = 3000;

/// A new gate's zone when none is given (the CLI's default).
pub const DEFAULT_ZONE: &str = "main";

// ---- helpers -----------------------------------------------------------------------

pub(super) fn ts(t: OffsetDateTime, tz: UtcOffset) -> String {
    let t = t.checked_to_offset(tz).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub(super) fn opt_ts(t: Option<OffsetDateTime>, tz: UtcOffset) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t, tz)))
}

pub(super) fn path_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the {what} id in the path must be a positive number"
        ))
    })
}

/// An id number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ref {
    Id(i64),
    Name(String),
}

impl Ref {
    pub(super) fn from_value(field: &str, v: Value, what: &str) -> Result<Ref, ApiError> {
        match v {
            Value::Number(n) => n.as_i64().map(Ref::Id),
            Value::String(s) => Some(Ref::Name(s)),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{field}` must be the {what}'s id (a number) or name (text)"
            ))
        })
    }

    /// From a query parameter: digits are an id, anything else a name.
    pub(super) fn from_param(s: &str) -> Ref {
        s.parse().map_or_else(|_| Ref::Name(s.to_owned()), Ref::Id)
    }
}

fn req_ref(f: &mut Fields, field: &str, what: &str) -> Result<Ref, ApiError> {
    match f.take(field) {
        Some(v) => Ref::from_value(field, v, what),
        None => Err(ApiError::bad_request(format!(
            "`{field}` is required (the {what}'s id or name)"
        ))),
    }
}

pub(super) fn person_id(s: &Store, r: &Ref) -> Result<i64, StoreError> {
    match r {
        Ref::Id(id) => s.person(*id).map(|p| p.id),
        Ref::Name(n) => s.person_by_name(n).map(|p| p.id),
    }
}

pub(super) fn gate_id(s: &Store, r: &Ref) -> Result<i64, StoreError> {
    match r {
        Ref::Id(id) => s.gate(*id).map(|g| g.gate.id),
        Ref::Name(n) => s.gate_by_name(n).map(|g| g.gate.id),
    }
}

/// A validity bound field: a date (site day) or an RFC 3339 time.
fn bound(field: &str, s: &str, b: Bound, tz: UtcOffset) -> Result<OffsetDateTime, ApiError> {
    parse_bound(s, b, tz).map_err(|e| ApiError::bad_request(format!("`{field}`: {e}")))
}

/// A PATCH validity bound, parsed.
fn patch_bound(
    field: &str,
    p: Patch<String>,
    b: Bound,
    tz: UtcOffset,
) -> Result<Patch<OffsetDateTime>, ApiError> {
    Ok(match p {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(s) => Patch::Set(bound(field, &s, b, tz)?),
    })
}

/// The bound after applying a PATCH to `old`.
fn apply(p: Patch<OffsetDateTime>, old: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match p {
        Patch::Keep => old,
        Patch::Clear => None,
        Patch::Set(t) => Some(t),
    }
}

fn check_validity(v: &Validity) -> Result<(), ApiError> {
    match (v.from, v.until) {
        (Some(f), Some(u)) if f >= u => Err(ApiError::bad_request(
            "`valid_from` must be before `valid_until`",
        )),
        _ => Ok(()),
    }
}

const DATE_WHAT: &str = "a date like 2026-12-31 or an RFC 3339 time";

pub(super) fn created(body: Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::CREATED, &body))
}

pub(super) fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, &body))
}

// ---- views -------------------------------------------------------------------------

fn person_view(p: &Person, tz: UtcOffset) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "enabled": p.enabled,
        "valid_from": opt_ts(p.validity.from, tz),
        "valid_until": opt_ts(p.validity.until, tz),
        "levels": p.levels,
    })
}

pub(super) fn card_view(c: &CardRecord, people: &HashMap<i64, String>, tz: UtcOffset) -> Value {
    json!({
        "id": c.id,
        "person": c.person,
        "person_name": people.get(&c.person),
        "enabled": c.enabled,
        "master": c.master,
        "valid_from": opt_ts(c.validity.from, tz),
        "valid_until": opt_ts(c.validity.until, tz),
        "label": c.label,
    })
}

pub(super) fn holidays_str(rule: &HolidayRule) -> String {
    match rule {
        HolidayRule::Closed => "closed".to_owned(),
        HolidayRule::Ignore => "ignore".to_owned(),
        HolidayRule::Windows(w) => gatehouse_access::text::format_windows(w),
    }
}

fn level_view(l: &Level) -> Value {
    json!({
        "id": l.id,
        "name": l.name,
        "gates": l.gates,
        "schedule": format_schedule(&l.schedule),
        "holidays": holidays_str(&l.schedule.holidays),
        "model": l.schedule,
    })
}

fn gate_view(g: &GateRecord, zones: &HashMap<i64, String>, tz: UtcOffset) -> Value {
    json!({
        "id": g.gate.id,
        "name": g.gate.name,
        "zone": g.gate.zone,
        "zone_name": zones.get(&g.gate.zone),
        "direction": match g.gate.direction { Direction::In => "in", Direction::Out => "out" },
        "enabled": g.gate.enabled,
        "relay_ms": g.gate.relay_ms,
        "allowed_ips": g.allowed_ips,
        "mqtt_username": g.mqtt_username,
        "last_seen": opt_ts(g.last_seen, tz),
    })
}

fn admin_view(a: &AdminRecord, tz: UtcOffset) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "role": a.role.as_str(),
        "enabled": a.enabled,
        "created": ts(a.created, tz),
        "locked_until": opt_ts(a.locked_until, tz),
    })
}

pub(super) fn log_view(
    r: &LogRow,
    gates: &HashMap<i64, String>,
    people: &HashMap<i64, String>,
    tz: UtcOffset,
) -> Value {
    let reason = r.reason();
    json!({
        "id": r.id,
        "at": ts(r.at, tz),
        "gate": r.gate,
        "gate_name": gates.get(&r.gate),
        "card": r.card,
        "person": r.person,
        "person_name": r.person.and_then(|p| people.get(&p)),
        "allowed": reason.map(|x| x.is_allowed()),
        "reason": reason.map_or_else(|| format!("code {}", r.reason_code), |x| x.as_str().to_owned()),
        "source": r.source.as_str(),
        "gate_seq": r.gate_seq,
    })
}

pub(super) fn names<T>(items: Vec<T>, f: impl Fn(T) -> (i64, String)) -> HashMap<i64, String> {
    items.into_iter().map(f).collect()
}

pub(super) fn people_names(s: &Store) -> Result<HashMap<i64, String>, StoreError> {
    Ok(names(s.list_people()?, |p| (p.id, p.name)))
}

// ---- people ------------------------------------------------------------------------

/// `GET /api/v1/people`.
pub async fn list_people(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadPeople)?;
    let tz = api.tz();
    let people = api.store(|s, _| Ok(s.list_people()?)).await?;
    ok(json!(people
        .iter()
        .map(|p| person_view(p, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/people`.
pub async fn add_person(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeople)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text")?;
    let from: Option<String> = f.opt("valid_from", DATE_WHAT)?;
    let until: Option<String> = f.opt("valid_until", DATE_WHAT)?;
    f.finish(&["name", "valid_from", "valid_until"])?;
    let validity = Validity {
        from: from
            .map(|s| bound("valid_from", &s, Bound::From, tz))
            .transpose()?,
        until: until
            .map(|s| bound("valid_until", &s, Bound::Until, tz))
            .transpose()?,
    };
    check_validity(&validity)?;
    let person = api
        .store(move |s, _| {
            let id = s.add_person(&name, validity)?;
            Ok(s.person(id)?)
        })
        .await?;
    api.changed().await;
    created(person_view(&person, tz))
}

/// `PATCH /api/v1/people/{id}`.
pub async fn patch_person(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeople)?;
    let id = path_id(&id, "person")?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: Option<String> = f.opt("name", "text")?;
    let enabled: Option<bool> = f.opt("enabled", "true or false")?;
    let from: Patch<String> = f.patch("valid_from", DATE_WHAT)?;
    let until: Patch<String> = f.patch("valid_until", DATE_WHAT)?;
    f.finish(&["name", "enabled", "valid_from", "valid_until"])?;
    let from = patch_bound("valid_from", from, Bound::From, tz)?;
    let until = patch_bound("valid_until", until, Bound::Until, tz)?;
    let person = api
        .store(move |s, _| {
            let old = s.person(id)?;
            let validity = Validity {
                from: apply(from, old.validity.from),
                until: apply(until, old.validity.until),
            };
            check_validity(&validity)?;
            // The call most likely to be refused (a taken name) goes first.
            if let Some(n) = name.filter(|n| *n != old.name) {
                s.rename_person(id, &n)?;
            }
            if validity != old.validity {
                s.set_person_validity(id, validity)?;
            }
            if let Some(e) = enabled.filter(|e| *e != old.enabled) {
                s.set_person_enabled(id, e)?;
            }
            Ok(s.person(id)?)
        })
        .await?;
    api.changed().await;
    ok(person_view(&person, tz))
}

/// `DELETE /api/v1/people/{id}`: the person, their cards and grants (log rows stay).
pub async fn remove_person(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeople)?;
    let id = path_id(&id, "person")?;
    api.store(move |s, _| Ok(s.remove_person(id)?)).await?;
    api.changed().await;
    ok(json!({ "id": id, "removed": true }))
}

// ---- cards -------------------------------------------------------------------------

const ACC_ID_WHAT: &str = "text: the card id as printed (e.g. \"0004123456\") or as the \
     reader sends it (e.g. \"0x04A1B2C3\" or \"04:a1:b2:c3\")";

/// The raw card id field as typed. Never repeated in an error.
fn acc_id_text(f: &mut Fields) -> Result<String, ApiError> {
    match f.take("acc_id") {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(ApiError::bad_request(format!(
            "`acc_id` must be {ACC_ID_WHAT}"
        ))),
        None => Err(ApiError::bad_request(format!(
            "`acc_id` is required ({ACC_ID_WHAT})"
        ))),
    }
}

/// `GET /api/v1/cards?person=`.
pub async fn list_cards(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadCards)?;
    let tz = api.tz();
    let person = only_params(q, &["person"])?
        .remove("person")
        .map(|p| Ref::from_param(&p));
    let (cards, people) = api
        .store(move |s, _| {
            let filter = person.as_ref().map(|p| person_id(s, p)).transpose()?;
            Ok((s.list_cards(filter)?, people_names(s)?))
        })
        .await?;
    ok(json!(cards
        .iter()
        .map(|c| card_view(c, &people, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/cards`.
pub async fn add_card(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeCards)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let typed = acc_id_text(&mut f)?;
    let person = req_ref(&mut f, "person", "person")?;
    let master: Option<bool> = f.opt("master", "true or false")?;
    let until: Option<String> = f.opt("valid_until", DATE_WHAT)?;
    let label: Option<String> = f.opt("label", "text")?;
    f.finish(&["acc_id", "person", "master", "valid_until", "label"])?;
    let raw = parse_acc_id(&typed).map_err(|e| ApiError::bad_request(format!("`acc_id`: {e}")))?;
    if let Some(l) = &label {
        check_label_against_typed(l, &typed)
            .map_err(|e| ApiError::bad_request(format!("`label`: {e}")))?;
    }
    drop(typed);
    let until = until
        .map(|s| bound("valid_until", &s, Bound::Until, tz))
        .transpose()?;
    let (card, people) = api
        .store(move |s, api| {
            let owner = person_id(s, &person)?;
            let id = s.add_card(
                api.site_key(),
                &raw,
                &NewCard {
                    person: owner,
                    master: master.unwrap_or(false),
                    validity: Validity { from: None, until },
                    label,
                },
            )?;
            Ok((s.card(id)?, people_names(s)?))
        })
        .await?;
    api.changed().await;
    created(card_view(&card, &people, tz))
}

/// `PATCH /api/v1/cards/{id}`.
pub async fn patch_card(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeCards)?;
    let id = path_id(&id, "card")?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let enabled: Option<bool> = f.opt("enabled", "true or false")?;
    let master: Option<bool> = f.opt("master", "true or false")?;
    let until: Patch<String> = f.patch("valid_until", DATE_WHAT)?;
    f.finish(&["enabled", "master", "valid_until"])?;
    let until = patch_bound("valid_until", until, Bound::Until, tz)?;
    let (card, people) = api
        .store(move |s, _| {
            let old = s.card(id)?;
            let validity = Validity {
                from: old.validity.from,
                until: apply(until, old.validity.until),
            };
            check_validity(&validity)?;
            if validity != old.validity {
                s.set_card_validity(id, validity)?;
            }
            if let Some(m) = master.filter(|m| *m != old.master) {
                s.set_card_master(id, m)?;
            }
            if let Some(e) = enabled.filter(|e| *e != old.enabled) {
                s.set_card_enabled(id, e)?;
            }
            Ok((s.card(id)?, people_names(s)?))
        })
        .await?;
    api.changed().await;
    ok(card_view(&card, &people, tz))
}

/// `DELETE /api/v1/cards/{id}` (its log rows stay).
pub async fn remove_card(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeCards)?;
    let id = path_id(&id, "card")?;
    api.store(move |s, _| Ok(s.remove_card(id)?)).await?;
    api.changed().await;
    ok(json!({ "id": id, "removed": true }))
}

// ---- levels ------------------------------------------------------------------------

/// `GET /api/v1/levels`.
pub async fn list_levels(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadLevels)?;
    let levels = api.store(|s, _| Ok(s.list_levels()?)).await?;
    ok(json!(levels.iter().map(level_view).collect::<Vec<_>>()))
}

const SCHEDULE_WHAT: &str = "a text schedule like \"mon-fri 08:00-18:00; sat 09:00-12:00\" \
     (or \"always\"), or the JSON model {\"weekly\": [7 lists of {\"start\", \"end\"} minutes], \
     \"holidays\": \"closed\"}";

fn schedule_field(f: &mut Fields) -> Result<Schedule, ApiError> {
    let holidays: Option<String> = f.opt("holidays", "\"closed\" or \"ignore\"")?;
    match f.take("schedule") {
        Some(Value::String(spec)) => {
            let rule = match holidays.as_deref() {
                None | Some("closed") => HolidayRule::Closed,
                Some("ignore") => HolidayRule::Ignore,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`holidays` must be \"closed\" or \"ignore\"",
                    ))
                }
            };
            parse_schedule(&spec, rule)
                .map_err(|e| ApiError::bad_request(format!("`schedule`: {e}")))
        }
        Some(v @ Value::Object(_)) => {
            if holidays.is_some() {
                return Err(ApiError::bad_request(
                    "`holidays` goes inside the JSON schedule model, not beside it",
                ));
            }
            let s: Schedule = serde_json::from_value(v).map_err(|e| {
                ApiError::bad_request(format!(
                    "`schedule` is not a valid schedule model ({e}); expected {SCHEDULE_WHAT}"
                ))
            })?;
            s.validate(None)
                .map_err(|e| ApiError::bad_request(format!("`schedule`: {e}")))?;
            Ok(s)
        }
        Some(_) => Err(ApiError::bad_request(format!(
            "`schedule` must be {SCHEDULE_WHAT}"
        ))),
        None => Err(ApiError::bad_request(format!(
            "`schedule` is required ({SCHEDULE_WHAT})"
        ))),
    }
}

/// `POST /api/v1/levels`.
pub async fn add_level(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeLevels)?;
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text")?;
    let gates = match f.take("gates") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .map(|v| Ref::from_value("gates", v, "gate"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) | None => {
            return Err(ApiError::bad_request(
                "`gates` is required: a non-empty list of gate ids or names",
            ))
        }
    };
    let schedule = schedule_field(&mut f)?;
    f.finish(&["name", "gates", "schedule", "holidays"])?;
    let level = api
        .store(move |s, _| {
            // Resolve every gate first, so an unknown one leaves nothing behind.
            let ids = gates
                .iter()
                .map(|g| gate_id(s, g))
                .collect::<Result<Vec<_>, _>>()?;
            let id = s.add_level(&name, &schedule)?;
            for g in &ids {
                if let Err(e) = s.add_level_gate(id, *g) {
                    if let Err(undo) = s.remove_level(id) {
                        return Err(ApiError::internal(format!(
                            "{e}; and the half-made level {name:?} could not be removed: {undo}"
                        )));
                    }
                    return Err(e.into());
                }
            }
            Ok(s.level(id)?)
        })
        .await?;
    api.changed().await;
    created(level_view(&level))
}

/// `POST /api/v1/levels/{id}/grant {"person"}`.
pub async fn grant_level(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeLevels)?;
    let level = path_id(&id, "level")?;
    let mut f = Fields::read(body).await?;
    let person = req_ref(&mut f, "person", "person")?;
    f.finish(&["person"])?;
    let (person, granted) = api
        .store(move |s, _| {
            s.level(level)?;
            let p = person_id(s, &person)?;
            Ok((p, s.grant_level(p, level)?))
        })
        .await?;
    api.changed().await;
    ok(json!({
        "level": level,
        "person": person,
        "granted": granted,
        "already_had": !granted,
    }))
}

// ---- gates and zones ---------------------------------------------------------------

fn zone_names(s: &Store) -> Result<HashMap<i64, String>, StoreError> {
    Ok(names(s.list_zones()?, |z| (z.id, z.name)))
}

/// `GET /api/v1/gates`.
pub async fn list_gates(State(api): State<AdminApi>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadGates)?;
    let tz = api.tz();
    let (gates, zones) = api
        .store(|s, _| Ok((s.list_gates()?, zone_names(s)?)))
        .await?;
    ok(json!(gates
        .iter()
        .map(|g| gate_view(g, &zones, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/gates`: the gate, and under `provisioning` everything it is set up with
/// ([`GateProvisioning`]: its secret and keys, shown this once, and the transports'
/// addresses).
pub async fn add_gate(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeGates)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text: 1 to 64 letters, digits, '.', '_' or '-'")?;
    let zone = match f.take("zone") {
        Some(v) => Ref::from_value("zone", v, "zone")?,
        None => Ref::Name(DEFAULT_ZONE.to_owned()),
    };
    let direction = match f
        .opt::<String>("direction", "\"in\" or \"out\"")?
        .as_deref()
    {
        None | Some("in") => Direction::In,
        Some("out") => Direction::Out,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`direction` must be \"in\" or \"out\"",
            ))
        }
    };
    let relay_ms: Option<u32> = f.opt("relay_ms", "a number of milliseconds")?;
    let allowed_ips: Option<Vec<String>> =
        f.opt("allowed_ips", "a list of addresses or CIDR prefixes")?;
    f.finish(&["name", "zone", "direction", "relay_ms", "allowed_ips"])?;
    let may_add_zone = caller.may(Action::ChangeZones);
    let (gate, creds, zones, zone_created) = api
        .store(move |s, _| {
            // Refuse a taken name before possibly creating the zone.
            match s.gate_by_name(&name) {
                Ok(_) => {
                    return Err(StoreError::NameTaken {
                        entity: gatehouse_store::Entity::Gate,
                        name,
                    }
                    .into())
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let (zone_id, zone_created) = match &zone {
                Ref::Id(id) => (s.zone(*id)?.id, false),
                Ref::Name(n) => match s.zone_by_name(n) {
                    Ok(z) => (z.id, false),
                    Err(StoreError::NotFound { .. }) => {
                        may_add_zone?;
                        (s.add_zone(n, false)?, true)
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let new = NewGate {
                name,
                zone: zone_id,
                direction,
                relay_ms: relay_ms.unwrap_or(DEFAULT_RELAY_MS),
                allowed_ips,
                mqtt_username: None,
            };
            let creds = match s.add_gate(&new) {
                Ok(c) => c,
                Err(e) => {
                    if zone_created {
                        if let Err(undo) = s.remove_zone(zone_id) {
                            return Err(ApiError::internal(format!(
                                "{e}; and the zone created for the gate could not be removed: {undo}"
                            )));
                        }
                    }
                    return Err(e.into());
                }
            };
            Ok((s.gate(creds.id)?, creds, zone_names(s)?, zone_created))
        })
        .await?;
    api.changed().await;
    let provisioning = GateProvisioning::for_new_gate(
        api.config(),
        api.site_key(),
        &gate.gate.name,
        &creds,
        api.listening(),
    );
    let mut view = gate_view(&gate, &zones, tz);
    if let Value::Object(m) = &mut view {
        m.insert("zone_created".into(), json!(zone_created));
        m.insert("provisioning".into(), json!(provisioning));
    }
    created(view)
}

/// `GET /api/v1/zones`.
pub async fn list_zones(State(api): State<AdminApi>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadZones)?;
    let zones = api.store(|s, _| Ok(s.list_zones()?)).await?;
    ok(json!(zones))
}

/// `POST /api/v1/zones`.
pub async fn add_zone(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeZones)?;
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text")?;
    let apb: Option<bool> = f.opt("anti_passback", "true or false")?;
    f.finish(&["name", "anti_passback"])?;
    let zone = api
        .store(move |s, _| {
            let id = s.add_zone(&name, apb.unwrap_or(false))?;
            Ok(s.zone(id)?)
        })
        .await?;
    api.changed().await;
    created(json!(zone))
}

// ---- access log --------------------------------------------------------------------

pub(super) fn only_params(
    q: HashMap<String, String>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    if let Some(k) = q.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{k}`; expected {}",
            known.join(", ")
        )));
    }
    Ok(q)
}

pub(super) fn num_param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    k: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    q.get(k)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("`{k}` must be {what}")))
        })
        .transpose()
}

/// The access log's query filters, as `GET /access/log` and its CSV export take them:
/// `gate` and `person` (ids or names), `since` and `until` (dates or RFC 3339 times),
/// `after` (a row id) and `limit`.
#[derive(Debug, Clone)]
pub(super) struct LogQuery {
    pub(super) after: Option<i64>,
    pub(super) gate: Option<Ref>,
    pub(super) person: Option<Ref>,
    pub(super) since: Option<OffsetDateTime>,
    pub(super) until: Option<OffsetDateTime>,
    pub(super) limit: u32,
}

impl LogQuery {
    /// Reads the query parameters; `limit` is 1 to `max_limit`, `default_limit` if absent.
    pub(super) fn parse(
        q: HashMap<String, String>,
        tz: UtcOffset,
        default_limit: u32,
        max_limit: u32,
    ) -> Result<LogQuery, ApiError> {
        let q = only_params(q, &["gate", "person", "since", "until", "limit", "after"])?;
        let limit = num_param::<u32>(&q, "limit", &format!("a number from 1 to {max_limit}"))?
            .unwrap_or(default_limit);
        if !(1..=max_limit).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "`limit` must be a number from 1 to {max_limit}"
            )));
        }
        Ok(LogQuery {
            after: num_param::<i64>(&q, "after", "a log row id")?,
            since: q
                .get("since")
                .map(|s| bound("since", s, Bound::From, tz))
                .transpose()?,
            until: q
                .get("until")
                .map(|s| bound("until", s, Bound::Until, tz))
                .transpose()?,
            gate: q.get("gate").map(|g| Ref::from_param(g)),
            person: q.get("person").map(|p| Ref::from_param(p)),
            limit,
        })
    }

    /// The store's filter for rows after `after` (the gate and person resolved).
    pub(super) fn filter(
        &self,
        s: &Store,
        after: Option<i64>,
        limit: u32,
    ) -> Result<LogFilter, StoreError> {
        Ok(LogFilter {
            after_id: after,
            gate: self.gate.as_ref().map(|g| gate_id(s, g)).transpose()?,
            person: self.person.as_ref().map(|p| person_id(s, p)).transpose()?,
            reason: None,
            since: self.since,
            until: self.until,
            limit,
        })
    }
}

/// `GET /api/v1/access/log?gate=&person=&since=&until=&limit=&after=`: matching decisions,
/// oldest first, with ids above `after`. `gate` and `person` are ids or names; `since`
/// and `until` dates or RFC 3339 times. The reply's `next_after` is the `after` of the
/// next page.
pub async fn access_log(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadLog)?;
    let tz = api.tz();
    let query = LogQuery::parse(q, tz, LOG_DEFAULT_LIMIT, LOG_MAX_LIMIT)?;
    let (after, limit) = (query.after, query.limit);
    let (rows, next_after, more, gates, people) = api
        .store(move |s, _| {
            let rows = s.log_query(&query.filter(s, after, limit)?)?;
            let more = rows.len() >= limit as usize;
            let cursor = rows.last().map(|r| r.id).or(after);
            let gates = names(s.list_gates()?, |g| (g.gate.id, g.gate.name));
            Ok((rows, cursor, more, gates, people_names(s)?))
        })
        .await?;
    ok(json!({
        "rows": rows.iter().map(|r| log_view(r, &gates, &people, tz)).collect::<Vec<_>>(),
        "next_after": next_after,
        "more": more,
    }))
}

// ---- admins ------------------------------------------------------------------------

/// `GET /api/v1/admins`.
pub async fn list_admins(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadAdmins)?;
    let tz = api.tz();
    let admins = api.store(|s, _| Ok(s.list_admins()?)).await?;
    ok(json!(admins
        .iter()
        .map(|a| admin_view(a, tz))
        .collect::<Vec<_>>()))
}

const ROLE_WHAT: &str = "\"admin\", \"operator\" or \"installer\"";

/// `POST /api/v1/admins`.
pub async fn add_admin(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAdmins)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text")?;
    let role: String = f.req("role", ROLE_WHAT)?;
    let password: String = f.req("password", "text")?;
    f.finish(&["name", "role", "password"])?;
    let role = AdminRole::parse(&role)
        .ok_or_else(|| ApiError::bad_request(format!("`role` must be {ROLE_WHAT}")))?;
    password::check_policy(&password)
        .map_err(|e| ApiError::bad_request(format!("`password`: {e}")))?;
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad_request(format!("`password`: {e}")))?;
    let now = api.now();
    let admin = api
        .store(move |s, _| {
            let id = s.add_admin(&name, role, &hash, now)?;
            s.admin(id)?
                .ok_or_else(|| ApiError::internal("the new admin vanished"))
        })
        .await?;
    tracing::info!(admin = %admin.name, role = %admin.role, by = %caller.admin.name, "admin added");
    created(admin_view(&admin, tz))
}
