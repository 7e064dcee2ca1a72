//! Who is calling and what they may do: login, logout, sessions, CSRF, the login throttle,
//! the account lockout, and the role table.
//!
//! Promises:
//! - A session token is 32 random bytes from the OS, sent as 64 hex digits; the database
//!   holds only its SHA-256. A session ends [`SESSION_IDLE`] after its last use or
//!   [`SESSION_MAX`] after login, whichever comes first.
//! - Browsers get the token in an `HttpOnly; SameSite=Strict` cookie ([`COOKIE`]); a request
//!   authenticated by that cookie with a state-changing method must also carry
//!   [`CSRF_HEADER`] equal to the session's CSRF value (given at login and by
//!   `GET /api/v1/auth/me`). A bearer token is never sent by a browser on its own, so
//!   bearer clients need no CSRF value.
//! - Login attempts are throttled per client address ([`LoginThrottle`]: a burst of
//!   [`LOGIN_BURST`], then one per [`LOGIN_REFILL`]) and per account ([`LockoutPolicy`]:
//!   [`MAX_FAILURES`] failures in a row lock it for [`LOCKOUT`]); a success resets the
//!   count. Unknown names cost the same password work as known ones.
//! - What each role may do is decided in one place, [`permits`].
//! - Both throttles take the time as an argument, so tests do not sleep.
//! - The session cookie is `Secure` when the request came over the console's TLS
//!   listener ([`Transport`]), never on plain HTTP.
//! - The first admin enrols with the one-time token printed on the box
//!   ([`enrol`]): only while no admin exists, throttled like logins, and the admin is
//!   created and the token used up in one store transaction.

use super::password;
use super::{reply, AdminApi, ApiError, Fields};
use crate::provisioning::hex;
use crate::tls::Transport;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use gatehouse_store::admin::{AdminRecord, AdminRole};
use gatehouse_store::admin::{EnrolOutcome, EnrolToken};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A session ends this long after its last use.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// A session ends this long after login, however busy.
pub const SESSION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "gh_session";
/// The header carrying the CSRF value on cookie-authenticated changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Login attempts one address may make at once.
pub const LOGIN_BURST: u32 = 5;
/// Then one more attempt per this much time.
pub const LOGIN_REFILL: Duration = Duration::from_secs(10);
/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account refuses logins.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Session token length in bytes (256 bits: unguessable, OWASP Session Management).
pub const TOKEN_LEN: usize = 32;
/// Addresses the throttle remembers before it forgets those that are back to a full burst.
const THROTTLE_MAX_ENTRIES: usize = 10_000;

// ---- roles -------------------------------------------------------------------------

/// Something a caller may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ReadPeople,
    ChangePeople,
    ReadCards,
    ChangeCards,
    ReadLevels,
    ChangeLevels,
    ReadGates,
    ChangeGates,
    ReadZones,
    ChangeZones,
    ReadLog,
    ReadAdmins,
    ChangeAdmins,
    /// The events list, their detail and delivery log, and the live feed.
    ReadEvents,
    AckEvents,
    /// Alert rules, receivers and silences.
    ReadAlerts,
    ChangeAlerts,
    /// Event sources (NVRs and their API keys).
    ReadSources,
    ChangeSources,
    /// The dashboard: gates, tunnel peers, services, sensors, event counts.
    ReadStatus,
    /// The tunnel's peers (WireGuard).
    ReadPeers,
    ChangePeers,
    /// Open a door remotely.
    OpenDoors,
    /// The LoRa sensor registry.
    ReadSensors,
    /// Add, disable, enable or remove LoRa sensors.
    ChangeSensors,
}

impl Action {
    pub const ALL: [Action; 25] = [
        Action::ReadPeople,
        Action::ChangePeople,
        Action::ReadCards,
        Action::ChangeCards,
        Action::ReadLevels,
        Action::ChangeLevels,
        Action::ReadGates,
        Action::ChangeGates,
        Action::ReadZones,
        Action::ChangeZones,
        Action::ReadLog,
        Action::ReadAdmins,
        Action::ChangeAdmins,
        Action::ReadEvents,
        Action::AckEvents,
        Action::ReadAlerts,
        Action::ChangeAlerts,
        Action::ReadSources,
        Action::ChangeSources,
        Action::ReadStatus,
        Action::ReadPeers,
        Action::ChangePeers,
        Action::OpenDoors,
        Action::ReadSensors,
        Action::ChangeSensors,
    ];

    /// snake_case name (`GET /api/v1/auth/me` lists the caller's).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadPeople => "read_people",
            Action::ChangePeople => "change_people",
            Action::ReadCards => "read_cards",
            Action::ChangeCards => "change_cards",
            Action::ReadLevels => "read_levels",
            Action::ChangeLevels => "change_levels",
            Action::ReadGates => "read_gates",
            Action::ChangeGates => "change_gates",
            Action::ReadZones => "read_zones",
            Action::ChangeZones => "change_zones",
            Action::ReadLog => "read_log",
            Action::ReadAdmins => "read_admins",
            Action::ChangeAdmins => "change_admins",
            Action::ReadEvents => "read_events",
            Action::AckEvents => "ack_events",
            Action::ReadAlerts => "read_alerts",
            Action::ChangeAlerts => "change_alerts",
            Action::ReadSources => "read_sources",
            Action::ChangeSources => "change_sources",
            Action::ReadStatus => "read_status",
            Action::ReadPeers => "read_peers",
            Action::ChangePeers => "change_peers",
            Action::OpenDoors => "open_doors",
            Action::ReadSensors => "read_sensors",
            Action::ChangeSensors => "change_sensors",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::ReadPeople => "list people",
            Action::ChangePeople => "add or change people",
            Action::ReadCards => "list cards",
            Action::ChangeCards => "enrol or change cards",
            Action::ReadLevels => "list access levels",
            Action::ChangeLevels => "add, change or grant access levels",
            Action::ReadGates => "list gates",
            Action::ChangeGates => "add or change gates",
            Action::ReadZones => "list zones",
            Action::ChangeZones => "add or change zones",
            Action::ReadLog => "read the access log",
            Action::ReadAdmins => "list admins",
            Action::ChangeAdmins => "add or change admins",
            Action::ReadEvents => "read events",
            Action::AckEvents => "acknowledge events",
            Action::ReadAlerts => "list alert rules, receivers and silences",
            Action::ChangeAlerts => "change alert rules, receivers or silences",
            Action::ReadSources => "list event sources",
            Action::ChangeSources => "add or change event sources",
            Action::ReadStatus => "see the status dashboard",
            Action::ReadPeers => "list VPN peers",
            Action::ChangePeers => "add, disable or remove VPN peers",
            Action::OpenDoors => "open doors remotely",
            Action::ReadSensors => "list sensors",
            Action::ChangeSensors => "add, disable or remove sensors",
        }
    }
}

/// The role table: whether `role` may take `action`.
pub fn permits(role: AdminRole, action: Action) -> bool {
    use Action::*;
    match role {
        AdminRole::Admin => true,
        AdminRole::Operator => matches!(
            action,
            ReadGates
                | ReadZones
                | ReadLog
                | ReadEvents
                | AckEvents
                | ReadAlerts
                | ReadStatus
                | OpenDoors
                | ReadSensors
        ),
        AdminRole::Installer => matches!(
            action,
            ReadGates
                | ChangeGates
                | ReadZones
                | ChangeZones
                | ReadSources
                | ChangeSources
                | ReadStatus
                | ReadPeers
                | ChangePeers
                | ReadSensors
                | ChangeSensors
        ),
    }
}

// ---- login throttle ----------------------------------------------------------------

/// Per-address login throttle: a token bucket of [`LOGIN_BURST`] attempts refilled one per
/// [`LOGIN_REFILL`], kept in its GCRA form (one "theoretical arrival time" per address,
/// ITU-T I.371), so no timer runs and time is an argument. IPv6 clients are grouped by
/// /64, the block one subscriber usually holds.
#[derive(Debug)]
pub struct LoginThrottle {
    burst: u32,
    refill_ms: i64,
    /// Per address: when its bucket will be full again (unix ms).
    full_at: HashMap<IpAddr, i64>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(LOGIN_BURST, LOGIN_REFILL)
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl LoginThrottle {
    pub fn new(burst: u32, refill: Duration) -> LoginThrottle {
        LoginThrottle {
            burst: burst.max(1),
            refill_ms: i64::try_from(refill.as_millis()).unwrap_or(i64::MAX).max(1),
            full_at: HashMap::new(),
        }
    }

    /// Takes one attempt for `ip` at `now`; `Err(wait)` when none is left, `wait` being
    /// how long until the next one.
    pub fn attempt(&mut self, ip: IpAddr, now: OffsetDateTime) -> Result<(), Duration> {
        let now = unix_ms(now);
        if self.full_at.len() >= THROTTLE_MAX_ENTRIES {
            self.full_at.retain(|_, full| *full > now);
        }
        let key = client_key(ip);
        let full_at = self.full_at.get(&key).copied().unwrap_or(now).max(now);
        // The bucket holds `burst` attempts; each one taken pushes "full again" one
        // refill further. Refuse when that would be more than a burst ahead.
        let next = full_at.saturating_add(self.refill_ms);
        let limit = now.saturating_add(self.refill_ms.saturating_mul(i64::from(self.burst)));
        if next > limit {
            let wait = next - limit;
            return Err(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
        }
        self.full_at.insert(key, next);
        Ok(())
    }
}

// ---- lockout -----------------------------------------------------------------------

/// Per-account lockout: after `max_failures` failed logins in a row, refuse logins for
/// `lock_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: MAX_FAILURES,
            lock_for: LOCKOUT,
        }
    }
}

impl LockoutPolicy {
    /// How long the account stays locked, if it is locked at `now`.
    pub fn locked(&self, until: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<Duration> {
        let until = until?;
        (until > now).then(|| Duration::try_from(until - now).unwrap_or(self.lock_for))
    }

    /// After the `failures`-th failure in a row at `now`: the time to lock the account
    /// until, or `None` to keep counting.
    pub fn after_failure(&self, failures: u32, now: OffsetDateTime) -> Option<OffsetDateTime> {
        (failures >= self.max_failures).then(|| now + self.lock_for)
    }
}

fn lockout_message(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    format!(
        "this account is locked after {MAX_FAILURES} failed logins in a row; try again in \
         {minutes} minute{}, or have an admin set a new password (`gatehouse admin passwd NAME`)",
        if minutes == 1 { "" } else { "s" }
    )
}

// ---- tokens ------------------------------------------------------------------------

fn parse_token(s: &str) -> Option<[u8; TOKEN_LEN]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * TOKEN_LEN {
        return None;
    }
    let mut out = [0u8; TOKEN_LEN];
    for (pair, o) in s.chunks_exact(2).zip(out.iter_mut()) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

fn new_token() -> Result<[u8; TOKEN_LEN], ApiError> {
    let mut t = [0u8; TOKEN_LEN];
    OsRng
        .try_fill_bytes(&mut t)
        .map_err(|e| ApiError::internal(format!("no randomness from the OS: {e}")))?;
    Ok(t)
}

/// The session's CSRF value: derived from the token under its own label, so it reveals
/// nothing about the token (or its stored hash) and needs no storage.
pub fn csrf_value(token: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"gatehouse admin csrf v1\0");
    h.update(token);
    hex(&h.finalize())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// How the request presented its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Bearer,
    Cookie,
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The session token the request carries: the bearer token if there is one, else the
/// cookie. `Err` when the one given is malformed.
fn presented(headers: &HeaderMap) -> Result<Option<([u8; TOKEN_LEN], Via)>, ()> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ())?;
        let (scheme, token) = v.split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(());
        }
        return parse_token(token).map(|t| Some((t, Via::Bearer))).ok_or(());
    }
    match cookie_token(headers) {
        Some(c) => parse_token(c).map(|t| Some((t, Via::Cookie))).ok_or(()),
        None => Ok(None),
    }
}

fn log_in_again(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!("{why}; log in again (POST /api/v1/auth/login)"),
    )
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub admin: AdminRecord,
    pub expires: OffsetDateTime,
    token: [u8; TOKEN_LEN],
}

impl Caller {
    /// `Ok` if the caller's role permits `action`, else the 403 to answer.
    pub fn may(&self, action: Action) -> Result<(), ApiError> {
        if permits(self.admin.role, action) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the {} role may not {}; ask an admin",
                    self.admin.role,
                    action.describe()
                ),
            ))
        }
    }
}

impl FromRequestParts<AdminApi> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &AdminApi) -> Result<Caller, ApiError> {
        let (token, via) = match presented(&parts.headers) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(log_in_again(
                    "this needs a session: send `Authorization: Bearer <token>` or the gh_session cookie",
                ))
            }
            Err(()) => return Err(log_in_again("the session token is malformed")),
        };
        let now = api.now();
        let session = api
            .store(move |s, _| Ok(s.admin_session(&token, now, SESSION_IDLE)?))
            .await?;
        let Some(session) = session else {
            return Err(log_in_again("the session has expired or was ended"));
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if via == Via::Cookie && !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct_eq(sent.as_bytes(), csrf_value(&token).as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token header: send the `csrf` value from the login \
                     reply (or GET /api/v1/auth/me) with every change made with the session cookie",
                ));
            }
        }
        Ok(Caller {
            admin: session.admin,
            expires: session.expires,
            token,
        })
    }
}

// ---- handlers ----------------------------------------------------------------------

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn session_cookie(
    transport: Transport,
    value: &str,
    max_age: Duration,
) -> Result<HeaderValue, ApiError> {
    let secure = match transport {
        Transport::Tls => "; Secure",
        Transport::Plain => "",
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age.as_secs()
    ))
    .map_err(ApiError::internal)
}

fn admin_view(a: &AdminRecord) -> serde_json::Value {
    serde_json::json!({ "id": a.id, "name": a.name, "role": a.role.as_str() })
}

/// Takes one attempt from the login throttle for `ip`, or answers 429.
fn throttle(api: &AdminApi, ip: IpAddr, now: OffsetDateTime) -> Result<(), ApiError> {
    let throttled = super::lock(&api.inner.throttle).attempt(ip, now);
    if let Err(wait) = throttled {
        let secs = u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many login attempts from this address; wait {secs} s and try again"),
        )
        .with_retry_after(secs));
    }
    Ok(())
}

/// A new session for `admin`: stored, and answered with its token, CSRF value and cookie
/// (the login reply).
async fn start_session(
    api: &AdminApi,
    admin: &AdminRecord,
    transport: Transport,
    now: OffsetDateTime,
) -> Result<Response, ApiError> {
    let token = new_token()?;
    let expires = now + SESSION_MAX;
    let id = admin.id;
    api.store(move |s, _| {
        s.record_admin_login_success(id)?;
        // Sessions nobody ended are dropped here, at the rate of logins.
        s.purge_admin_sessions(now, SESSION_IDLE)?;
        s.create_admin_session(&token, id, now, expires)?;
        Ok(())
    })
    .await?;
    let token_hex = hex(&token);
    let mut r = reply(
        StatusCode::OK,
        &serde_json::json!({
            "token": token_hex,
            "expires_at": rfc3339(expires),
            "idle_timeout_s": SESSION_IDLE.as_secs(),
            "csrf": csrf_value(&token),
            "admin": admin_view(admin),
        }),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(transport, &token_hex, SESSION_MAX)?,
    );
    Ok(r)
}

/// `POST /api/v1/auth/login {"name", "password"}`.
pub async fn login(
    State(api): State<AdminApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    transport: Transport,
    body: Body,
) -> Result<Response, ApiError> {
    let now = api.now();
    throttle(&api, peer.ip(), now)?;
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "the admin's name")?;
    let password: String = f.req("password", "the admin's password")?;
    f.finish(&["name", "password"])?;

    let policy = LockoutPolicy::default();
    let lookup = name.clone();
    let creds = api
        .store(move |s, _| Ok(s.admin_credentials(&lookup)?))
        .await?;
    if let Some(c) = &creds {
        if let Some(wait) = policy.locked(c.admin.locked_until, now) {
            return Err(ApiError::new(StatusCode::LOCKED, lockout_message(wait))
                .with_retry_after(wait.as_secs()));
        }
    }
    let ok =
        password::verify_blocking(password, creds.as_ref().map(|c| c.password_hash.clone())).await;
    let wrong = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong name or password; check both and log in again",
        )
    };
    let Some(creds) = creds else {
        return Err(wrong());
    };
    let id = creds.admin.id;
    if !ok {
        let locked = api
            .store(move |s, _| {
                let n = s.record_admin_login_failure(id)?.unwrap_or(0);
                let until = policy.after_failure(n, now);
                if let Some(until) = until {
                    s.lock_admin(id, until)?;
                }
                Ok(until)
            })
            .await?;
        tracing::info!(admin = %creds.admin.name, peer = %peer.ip(), locked = locked.is_some(), "admin login failed");
        return Err(match locked {
            Some(_) => ApiError::new(StatusCode::LOCKED, lockout_message(policy.lock_for))
                .with_retry_after(policy.lock_for.as_secs()),
            None => wrong(),
        });
    }
    if !creds.admin.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this admin account is disabled; ask an admin to enable it (`gatehouse admin enable NAME`)",
        ));
    }
    let r = start_session(&api, &creds.admin, transport, now).await?;
    tracing::info!(admin = %creds.admin.name, peer = %peer.ip(), "admin logged in");
    Ok(r)
}

/// `GET /api/v1/auth/enrol`: `{"needed": true}` while no admin account exists (the console
/// then offers enrolment with the token printed on the box). No session needed.
pub async fn enrol_status(State(api): State<AdminApi>) -> Result<Response, ApiError> {
    let needed = !api.store(|s, _| Ok(s.has_admin()?)).await?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "needed": needed }),
    ))
}

fn already_enrolled() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "the first admin is enrolled already; log in instead (POST /api/v1/auth/login)",
    )
}

fn bad_enrol_token(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "{why}; ask for a new one with `gatehouse admin enrol-token` on the box and try again"
        ),
    )
}

/// `POST /api/v1/auth/enrol {"token", "name", "password"}`: creates the first admin (role
/// admin) with the one-time enrolment token, which it uses up, and starts a session as
/// login does (same reply). 410 once an admin exists, 401 for a wrong or expired token,
/// 400 for a name or password the rules refuse; throttled with the logins.
pub async fn enrol(
    State(api): State<AdminApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    transport: Transport,
    body: Body,
) -> Result<Response, ApiError> {
    let now = api.now();
    throttle(&api, peer.ip(), now)?;
    let mut f = Fields::read(body).await?;
    let token: String = f.req(
        "token",
        "the enrolment token shown on the box, XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX",
    )?;
    let name: String = f.req("name", "the new admin's login name")?;
    let password: String = f.req("password", "the new admin's password")?;
    f.finish(&["token", "name", "password"])?;
    if api.store(|s, _| Ok(s.has_admin()?)).await? {
        return Err(already_enrolled());
    }
    let Some(token) = EnrolToken::parse(&token) else {
        return Err(bad_enrol_token(
            "that is not an enrolment token (28 letters A-Z and digits 2-7)",
        ));
    };
    password::check_policy(&password)
        .map_err(|e| ApiError::bad_request(format!("`password`: {e}")))?;
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad_request(format!("`password`: {e}")))?;
    let admin = api
        .store(move |s, _| {
            let id = match s.enrol_first_admin(&token, &name, &hash, now)? {
                EnrolOutcome::Enrolled(id) => id,
                EnrolOutcome::AdminExists => return Err(already_enrolled()),
                EnrolOutcome::WrongToken => {
                    return Err(bad_enrol_token(
                        "wrong enrolment token (or it was replaced by a newer one)",
                    ))
                }
                EnrolOutcome::Expired => {
                    return Err(bad_enrol_token("the enrolment token has expired"))
                }
            };
            s.admin(id)?
                .ok_or_else(|| ApiError::internal("the enrolled admin vanished"))
        })
        .await?;
    tracing::info!(admin = %admin.name, peer = %peer.ip(), "first admin enrolled");
    start_session(&api, &admin, transport, now).await
}

/// `POST /api/v1/auth/logout`: ends the session and clears the cookie.
pub async fn logout(
    State(api): State<AdminApi>,
    transport: Transport,
    caller: Caller,
) -> Result<Response, ApiError> {
    let token = caller.token;
    api.store(move |s, _| Ok(s.delete_admin_session(&token)?))
        .await?;
    let mut r = reply(StatusCode::OK, &serde_json::json!({ "logged_out": true }));
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(transport, "", Duration::ZERO)?,
    );
    Ok(r)
}

/// `GET /api/v1/auth/me`: who the session belongs to, what it may do, and its CSRF value.
pub async fn me(caller: Caller) -> Result<Response, ApiError> {
    let may: Vec<&str> = Action::ALL
        .into_iter()
        .filter(|a| permits(caller.admin.role, *a))
        .map(Action::as_str)
        .collect();
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({
            "admin": admin_view(&caller.admin),
            "expires_at": rfc3339(caller.expires),
            "csrf": csrf_value(&caller.token),
            "may": may,
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    fn at(ms: i64) -> OffsetDateTime {
        T0 + time::Duration::milliseconds(ms)
    }

    #[test]
    fn role_table() {
        use Action::*;
        for a in Action::ALL {
            assert!(permits(AdminRole::Admin, a), "admin {a:?}");
        }
        let operator = [
            ReadGates,
            ReadZones,
            ReadLog,
            ReadEvents,
            AckEvents,
            ReadAlerts,
            ReadStatus,
            OpenDoors,
            ReadSensors,
        ];
        let installer = [
            ReadGates,
            ChangeGates,
            ReadZones,
            ChangeZones,
            ReadSources,
            ChangeSources,
            ReadStatus,
            ReadPeers,
            ChangePeers,
            ReadSensors,
            ChangeSensors,
        ];
        for a in Action::ALL {
            assert_eq!(
                permits(AdminRole::Operator, a),
                operator.contains(&a),
                "operator {a:?}"
            );
            assert_eq!(
                permits(AdminRole::Installer, a),
                installer.contains(&a),
                "installer {a:?}"
            );
        }
        // Spelled out, the rules the console relies on.
        assert!(!permits(AdminRole::Operator, ReadPeople));
        assert!(!permits(AdminRole::Operator, ChangePeople));
        assert!(!permits(AdminRole::Operator, ChangeCards));
        assert!(!permits(AdminRole::Operator, ChangeLevels));
        assert!(!permits(AdminRole::Operator, ChangeGates));
        assert!(!permits(AdminRole::Operator, ChangeAdmins));
        assert!(!permits(AdminRole::Installer, ReadPeople));
        assert!(!permits(AdminRole::Installer, ReadCards));
        assert!(!permits(AdminRole::Installer, ReadLog));
        assert!(!permits(AdminRole::Operator, ReadPeers));
        assert!(!permits(AdminRole::Operator, ChangePeers));
        assert!(!permits(AdminRole::Installer, OpenDoors));
        assert!(!permits(AdminRole::Operator, ChangeSensors));
        assert!(permits(AdminRole::Installer, ChangeSensors));
        for role in [AdminRole::Admin, AdminRole::Operator, AdminRole::Installer] {
            assert!(permits(role, ReadStatus), "{role} ReadStatus");
        }
    }

    #[test]
    fn throttle_allows_a_burst_then_one_per_refill() {
        let mut t = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..LOGIN_BURST {
            t.attempt(ip, at(0)).unwrap();
        }
        assert_eq!(t.attempt(ip, at(0)), Err(Duration::from_secs(10)));
        assert_eq!(t.attempt(ip, at(4_000)), Err(Duration::from_secs(6)));
        // Another address has its own bucket.
        t.attempt("192.0.2.8".parse().unwrap(), at(4_000)).unwrap();
        // One refill later: exactly one more.
        t.attempt(ip, at(10_000)).unwrap();
        assert!(t.attempt(ip, at(10_000)).is_err());
        t.attempt(ip, at(20_000)).unwrap();
        // After a long pause the whole burst is back, and no more.
        for _ in 0..LOGIN_BURST {
            t.attempt(ip, at(3_600_000)).unwrap();
        }
        assert!(t.attempt(ip, at(3_600_000)).is_err());
        // A clock stepping back does not grant attempts.
        assert!(t.attempt(ip, at(0)).is_err());
    }

    #[test]
    fn throttle_groups_ipv6_by_64_and_maps_v4_in_v6() {
        let mut t = LoginThrottle::new(1, Duration::from_secs(10));
        t.attempt("2001:db8:1:2::1".parse().unwrap(), at(0))
            .unwrap();
        assert!(t
            .attempt("2001:db8:1:2:ffff::9".parse().unwrap(), at(0))
            .is_err());
        t.attempt("2001:db8:1:3::1".parse().unwrap(), at(0))
            .unwrap();
        t.attempt("10.0.0.1".parse().unwrap(), at(0)).unwrap();
        assert!(t
            .attempt("::ffff:10.0.0.1".parse().unwrap(), at(0))
            .is_err());
    }

    #[test]
    fn throttle_forgets_full_buckets_when_large() {
        let mut t = LoginThrottle::new(2, Duration::from_secs(10));
        for i in 0..THROTTLE_MAX_ENTRIES as u32 {
            t.attempt(IpAddr::from(i.to_be_bytes()), at(0)).unwrap();
        }
        assert_eq!(t.full_at.len(), THROTTLE_MAX_ENTRIES);
        t.attempt("192.0.2.1".parse().unwrap(), at(60_000)).unwrap();
        assert_eq!(t.full_at.len(), 1);
    }

    #[test]
    fn lockout_after_five_failures_for_fifteen_minutes() {
        let p = LockoutPolicy::default();
        for n in 1..MAX_FAILURES {
            assert_eq!(p.after_failure(n, at(0)), None);
        }
        let until = p.after_failure(MAX_FAILURES, at(0)).unwrap();
        assert_eq!(until, at(15 * 60 * 1000));
        assert_eq!(p.locked(Some(until), at(0)), Some(LOCKOUT));
        assert_eq!(
            p.locked(Some(until), at(14 * 60 * 1000)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p.locked(Some(until), until), None);
        assert_eq!(p.locked(None, at(0)), None);
        let m = lockout_message(Duration::from_secs(14 * 60 + 1));
        assert!(
            m.contains("locked after 5 failed logins") && m.contains("15 minutes"),
            "{m}"
        );
        assert!(lockout_message(Duration::from_secs(5)).contains("1 minute,"));
    }

    #[test]
    fn tokens_cookies_and_csrf() {
        let token = [0xabu8; TOKEN_LEN];
        let hexed = hex(&token);
        assert_eq!(parse_token(&hexed), Some(token));
        assert_eq!(parse_token(&hexed.to_uppercase()), Some(token));
        assert_eq!(parse_token("abcd"), None);
        assert_eq!(parse_token(&"zz".repeat(TOKEN_LEN)), None);

        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), Ok(None));
        h.insert(
            header::COOKIE,
            format!("theme=dark; {COOKIE}={hexed}; x=y")
                .parse()
                .unwrap(),
        );
        assert_eq!(presented(&h), Ok(Some((token, Via::Cookie))));
        // A bearer token wins over the cookie.
        let other = [1u8; TOKEN_LEN];
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", hex(&other)).parse().unwrap(),
        );
        assert_eq!(presented(&h), Ok(Some((other, Via::Bearer))));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented(&h), Err(()));

        let csrf = csrf_value(&token);
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, hexed);
        assert_ne!(
            csrf,
            hex(&gatehouse_store::admin::session_token_hash(&token))
        );
        assert_ne!(csrf, csrf_value(&other));
        assert!(ct_eq(csrf.as_bytes(), csrf_value(&token).as_bytes()));
        assert!(!ct_eq(b"", csrf.as_bytes()));
    }
}
