//! The LoRa sensor registry in the admin API (what `gatehouse sensor` does).
//!
//! Routes ("ref" is the sensor's id number or name):
//! - `GET /api/v1/sensors` (role action `ReadSensors`: admin, installer, operator): every
//!   sensor, by id: `{"id", "name", "kind", "dev_addr" (8 hex digits), "enabled",
//!   "created", "heartbeat_s", "last_seen", "missing", "missing_since", "battery_mv",
//!   "flags", "reboots", "rssi", "snr", "down_rssi", "down_snr", "readings" (quantity ->
//!   value), "fcnt_up", "fcnt_down", "uplinks"}`. Never the key.
//! - `POST /api/v1/sensors {"name", "kind": "door"|"pir"|"smoke"|"temp", "heartbeat"?}`
//!   (`ChangeSensors`: admin, installer): adds a sensor with a fresh random address and
//!   AES-128 key; 201 with the sensor and, this once, `provisioning` (the node's
//!   address, key and radio channel, [`SensorProvisioning`], plus `toml`: the same as the
//!   `[[sensor]]` block `gatehouse sensor add` prints). `heartbeat` is seconds (a number)
//!   or text (`"300s"`, `"5m"`, `"1h"`); default 5 minutes.
//! - `POST /api/v1/sensors/{ref}/disable` and `.../enable` (`ChangeSensors`): a disabled
//!   sensor's frames are refused and it is not supervised. Answer: the sensor.
//! - `DELETE /api/v1/sensors/{ref}` (`ChangeSensors`): removes it (its events stay).
//!   Answer `{"id", "removed": true}`.
//!
//! [`status_block`] is the `sensors` part of `GET /api/v1/status`.

use super::api::{created, ok, opt_ts, ts, Ref};
use super::auth::{Action, Caller};
use super::{AdminApi, ApiError, Fields};
use crate::lora::provisioning::SensorProvisioning;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use gatehouse_store::sensors::{
    parse_heartbeat, NewSensor, SensorKind, SensorRecord, DEFAULT_HEARTBEAT_S,
};
use gatehouse_store::{Store, StoreError};
use serde_json::{json, Map, Value};
use time::UtcOffset;

/// A sensor as the API shows it (never its key).
pub fn sensor_view(s: &SensorRecord, tz: UtcOffset) -> Value {
    let readings: Map<String, Value> = s
        .readings
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "id": s.id,
        "name": s.name,
        "kind": s.kind.as_str(),
        "dev_addr": format!("{:08x}", s.dev_addr),
        "enabled": s.enabled,
        "created": ts(s.created, tz),
        "heartbeat_s": s.heartbeat_s,
        "last_seen": opt_ts(s.last_seen, tz),
        "missing": s.missing(),
        "missing_since": opt_ts(s.missing_since, tz),
        "battery_mv": s.battery_mv,
        "flags": s.flags,
        "reboots": s.reboots,
        "rssi": s.last_rssi,
        "snr": s.last_snr,
        "down_rssi": s.down_rssi,
        "down_snr": s.down_snr,
        "readings": readings,
        "fcnt_up": s.fcnt_up_last,
        "fcnt_down": s.fcnt_down,
        "uplinks": s.uplinks,
    })
}

fn sensor_by_ref(s: &Store, r: &Ref) -> Result<SensorRecord, StoreError> {
    match r {
        Ref::Id(id) => s.sensor(*id),
        Ref::Name(n) => s.sensor_by_name(n),
    }
}

/// `GET /api/v1/sensors`.
pub async fn list_sensors(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadSensors)?;
    let tz = api.tz();
    let sensors = api.store(|s, _| Ok(s.list_sensors()?)).await?;
    ok(json!(sensors
        .iter()
        .map(|s| sensor_view(s, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/sensors`.
pub async fn add_sensor(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSensors)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text: 1 to 64 letters, digits, '.', '_' or '-'")?;
    let kind: String = f.req("kind", "\"door\", \"pir\", \"smoke\" or \"temp\"")?;
    let heartbeat_s = match f.take("heartbeat") {
        None => DEFAULT_HEARTBEAT_S,
        Some(Value::Number(n)) => {
            let s = n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("`heartbeat` must be a whole number of seconds")
                })?;
            gatehouse_store::sensors::check_heartbeat_s(s)?;
            s
        }
        Some(Value::String(t)) => parse_heartbeat(&t)?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`heartbeat` must be seconds (a number) or text like \"300s\", \"5m\", \"1h\"",
            ))
        }
    };
    f.finish(&["name", "kind", "heartbeat"])?;
    let kind: SensorKind = kind
        .parse()
        .map_err(|e: StoreError| ApiError::bad_request(format!("`kind`: {e}")))?;
    let at = api.now();
    let lora = api.config().lora.clone();
    let (sensor, provisioning) = api
        .store(move |s, _| {
            let creds = s.add_sensor(
                &NewSensor {
                    name: name.clone(),
                    kind,
                    heartbeat_s,
                },
                at,
            )?;
            let p = SensorProvisioning::new(&name, kind, heartbeat_s, &creds, &lora);
            Ok((s.sensor(creds.id)?, p))
        })
        .await?;
    tracing::info!(sensor = %sensor.name, admin = %caller.admin.name, "sensor added");
    let mut p = serde_json::to_value(&provisioning).map_err(ApiError::internal)?;
    p["toml"] = json!(provisioning.to_toml());
    let mut view = sensor_view(&sensor, tz);
    view["provisioning"] = p;
    created(view)
}

async fn set_enabled(
    api: AdminApi,
    caller: Caller,
    sensor: String,
    enabled: bool,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSensors)?;
    let tz = api.tz();
    let r = Ref::from_param(&sensor);
    let s = api
        .store(move |s, _| {
            let id = sensor_by_ref(s, &r)?.id;
            s.set_sensor_enabled(id, enabled)?;
            Ok(s.sensor(id)?)
        })
        .await?;
    ok(sensor_view(&s, tz))
}

/// `POST /api/v1/sensors/{ref}/disable`.
pub async fn disable_sensor(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(sensor): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(api, caller, sensor, false).await
}

/// `POST /api/v1/sensors/{ref}/enable`.
pub async fn enable_sensor(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(sensor): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(api, caller, sensor, true).await
}

/// `DELETE /api/v1/sensors/{ref}`.
pub async fn remove_sensor(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(sensor): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSensors)?;
    let r = Ref::from_param(&sensor);
    let id = api
        .store(move |s, _| {
            let id = sensor_by_ref(s, &r)?.id;
            s.remove_sensor(id)?;
            Ok(id)
        })
        .await?;
    tracing::info!(sensor = id, admin = %caller.admin.name, "sensor removed");
    ok(json!({ "id": id, "removed": true }))
}

/// The `sensors` block of `GET /api/v1/status`: `{"available": true, "total",
/// "enabled", "missing", "low_battery", "items": [{"id", "name", "kind", "enabled",
/// "last_seen", "battery_mv", "missing"}]}`, or `{"available": false, "detail"}` when
/// the registry cannot be read.
pub async fn status_block(api: &AdminApi) -> Value {
    let tz = api.tz();
    let low_mv = crate::lora::LOW_BATTERY_MV;
    match api.store(|s, _| Ok(s.list_sensors()?)).await {
        Ok(sensors) => {
            let low = |s: &SensorRecord| {
                s.battery_mv.is_some_and(|mv| mv < low_mv)
                    || s.flags
                        .is_some_and(|f| f & gatehouse_lora_proto::Heartbeat::FLAG_LOW_BATTERY != 0)
            };
            json!({
                "available": true,
                "total": sensors.len(),
                "enabled": sensors.iter().filter(|s| s.enabled).count(),
                "missing": sensors.iter().filter(|s| s.missing()).count(),
                "low_battery": sensors.iter().filter(|s| low(s)).count(),
                "items": sensors.iter().map(|s| json!({
                    "id": s.id,
                    "name": s.name,
                    "kind": s.kind.as_str(),
                    "enabled": s.enabled,
                    "last_seen": opt_ts(s.last_seen, tz),
                    "battery_mv": s.battery_mv,
                    "low_battery": low(s),
                    "missing": s.missing(),
                })).collect::<Vec<_>>(),
            })
        }
        Err(e) => json!({
            "available": false,
            "detail": format!("the sensor registry cannot be read: {}", e.message()),
        }),
    }
}
