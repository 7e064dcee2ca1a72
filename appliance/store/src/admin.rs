//! Console and API administrators: accounts with a role and a password hash, their login
//! sessions, and the failed-login count and lockout time that slow down password guessing.
//!
//! Promises:
//! - A password is stored only as the argon2id PHC string the caller computed; anything
//!   else is refused ([`StoreError::Invalid`]), so a clear-text password cannot be saved by
//!   mistake.
//! - A session is stored only as SHA-256 of its token ([`session_token_hash`]); the token
//!   never reaches the database, so a copy of the file does not let anyone log in.
//! - Removing or disabling an admin, or changing its password, ends all of its sessions in
//!   the same transaction.
//! - [`Store::admin_session`] refuses (and deletes) a session past its absolute expiry,
//!   idle for longer than the caller's limit, or of a disabled admin; it writes
//!   `last_seen` at most once per [`SESSION_TOUCH_INTERVAL`], so authenticated reads do not
//!   each become a write.
//! - Admins are looked up by id or name; a call on an id that does not exist returns
//!   `Ok(false)` / `Ok(None)` and changes nothing.
//!
//! - The first admin's enrolment token ([`EnrolToken`]) is stored only as its SHA-256, in
//!   the `settings` table with its creation time; it is good for [`ENROL_TOKEN_VALIDITY`],
//!   only while no admin account exists at all, and only once:
//!   [`Store::enrol_first_admin`] checks it, adds the admin and deletes it in one
//!   transaction, so two concurrent uses enrol one admin.
//!
//! Times are unix milliseconds in the database (schema.rs, migration 2) and
//! [`OffsetDateTime`] here.

use crate::error::{is_unique_violation, StoreError};
use crate::store::{from_unix_ms, to_unix_ms, write_tx, Result, Store};
use rand_core::{OsRng, RngCore};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;
use time::OffsetDateTime;

/// An admin's row id.
pub type AdminId = i64;

/// Longest accepted admin (login) name.
pub const MAX_ADMIN_NAME_LEN: usize = 64;

/// Least time between two writes of a session's `last_seen`: idle expiry is therefore
/// exact to this much.
pub const SESSION_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// The PHC prefix every stored password hash has (argon2id, RFC 9106).
const PHC_PREFIX: &str = "$argon2id$";

/// What an admin may do; the hub's role table says which action each role may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminRole {
    /// Everything, including managing admins.
    Admin,
    /// Watches: gates, zones, the access log and events; acknowledges events and opens
    /// doors; no people or cards.
    Operator,
    /// Sets up the site: gates and zones; no people, cards or log.
    Installer,
}

impl AdminRole {
    pub const ALL: [AdminRole; 3] = [AdminRole::Admin, AdminRole::Operator, AdminRole::Installer];

    /// The stored (and typed) name: `admin`, `operator`, `installer`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Operator => "operator",
            AdminRole::Installer => "installer",
        }
    }

    /// The role called `s` (exact, lower case).
    pub fn parse(s: &str) -> Option<AdminRole> {
        AdminRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An admin as listed (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRecord {
    pub id: AdminId,
    pub name: String,
    pub role: AdminRole,
    pub enabled: bool,
    pub created: OffsetDateTime,
    /// Consecutive failed logins since the last success or lockout.
    pub failed_logins: u32,
    /// Logins are refused until then.
    pub locked_until: Option<OffsetDateTime>,
}

/// An admin with its password hash, for checking a login. `Debug` leaves the hash out.
#[derive(Clone)]
pub struct AdminCredentials {
    pub admin: AdminRecord,
    /// argon2id PHC string.
    pub password_hash: String,
}

impl fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("admin", &self.admin)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// A live session and its admin (as of this lookup: role changes apply at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub admin: AdminRecord,
    pub created: OffsetDateTime,
    pub last_seen: OffsetDateTime,
    /// Absolute expiry.
    pub expires: OffsetDateTime,
}

/// How long an enrolment token is good for after it was made.
pub const ENROL_TOKEN_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `settings` keys of the enrolment token: hex SHA-256 of its symbols, and unix ms.
const ENROL_HASH_KEY: &str = "enrol_token_sha256";
const ENROL_CREATED_KEY: &str = "enrol_token_created_ms";

/// RFC 4648 base32 alphabet (no 0, 1, 8, 9: nothing to confuse with O, I, B).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Symbols in a token: 7 groups of 4, 5 random bits each (140 bits, at least the 128
/// the design asks for).
const ENROL_TOKEN_SYMBOLS: usize = 28;

/// The one-time token that lets the first admin enrol in the console, shown as
/// `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrolToken([u8; ENROL_TOKEN_SYMBOLS]);

impl EnrolToken {
    /// A fresh token from the OS's randomness.
    pub fn generate() -> Result<EnrolToken> {
        let mut raw = [0u8; ENROL_TOKEN_SYMBOLS];
        OsRng
            .try_fill_bytes(&mut raw)
            .map_err(|e| StoreError::Corrupt(format!("no randomness from the OS: {e}")))?;
        // 256 is a multiple of 32: taking 5 bits of each byte keeps them uniform.
        Ok(EnrolToken(raw.map(|b| BASE32[usize::from(b & 31)])))
    }

    /// The token as typed: case, dashes and spaces do not matter. `None` when it is not
    /// 28 base32 symbols.
    pub fn parse(s: &str) -> Option<EnrolToken> {
        let mut out = [0u8; ENROL_TOKEN_SYMBOLS];
        let mut n = 0;
        for c in s.bytes().filter(|c| !matches!(c, b'-' | b' ' | b'\t')) {
            let c = c.to_ascii_uppercase();
            if !BASE32.contains(&c) {
                return None;
            }
            *out.get_mut(n)? = c;
            n += 1;
        }
        (n == ENROL_TOKEN_SYMBOLS).then_some(EnrolToken(out))
    }

    fn sha256_hex(&self) -> String {
        Sha256::digest(self.0)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for EnrolToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for c in group {
                write!(f, "{}", char::from(*c))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for EnrolToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrolToken(<redacted>)")
    }
}

/// Whether the console's first-admin enrolment is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// An admin account exists: enrolment is closed for good.
    AdminExists,
    /// No admin, and a token good until `expires`.
    TokenLive { expires: OffsetDateTime },
    /// No admin and no live token (none made, or it expired).
    NoToken,
}

/// What [`Store::enrol_first_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolOutcome {
    /// The admin was added (role admin) and the token used up.
    Enrolled(AdminId),
    /// An admin exists already: nothing changed.
    AdminExists,
    /// No token is stored, or it is another one: nothing changed.
    WrongToken,
    /// The token was right but older than [`ENROL_TOKEN_VALIDITY`]: nothing changed.
    Expired,
}

/// SHA-256 of a session token: the only form of it the database holds.
pub fn session_token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn check_admin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_ADMIN_NAME_LEN {
        return Err(StoreError::invalid(
            "admin name",
            format!("must be 1 to {MAX_ADMIN_NAME_LEN} characters"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(StoreError::invalid(
            "admin name",
            format!("{name:?} may only contain letters, digits, '.', '_', '-' and '@'"),
        ));
    }
    Ok(())
}

fn check_password_hash(hash: &str) -> Result<()> {
    if !hash.starts_with(PHC_PREFIX) || hash.chars().any(|c| c.is_whitespace()) {
        return Err(StoreError::invalid(
            "password hash",
            "must be an argon2id PHC string ($argon2id$v=19$...), never the password",
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// id, name, role, enabled, created_ms, failed_logins, locked_until_ms.
type AdminRow = (i64, String, String, bool, i64, i64, Option<i64>);

const ADMIN_COLS: &str = "id, name, role, enabled, created_ms, failed_logins, locked_until_ms";

fn admin_record(row: AdminRow) -> Result<AdminRecord> {
    let (id, name, role, enabled, created, failed, locked) = row;
    Ok(AdminRecord {
        id,
        role: AdminRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("admin {id}: role {role:?}")))?,
        name,
        enabled,
        created: from_unix_ms(created)?,
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        locked_until: locked.map(from_unix_ms).transpose()?,
    })
}

fn has_admin(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM admins LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The stored enrolment token: hex SHA-256 and creation time (unix ms).
fn stored_enrol_token(conn: &rusqlite::Connection) -> Result<Option<(String, i64)>> {
    let get = |key: &str| -> Result<Option<String>> {
        Ok(conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    };
    let (Some(hash), Some(created)) = (get(ENROL_HASH_KEY)?, get(ENROL_CREATED_KEY)?) else {
        return Ok(None);
    };
    let created = created
        .parse::<i64>()
        .map_err(|_| StoreError::Corrupt(format!("{ENROL_CREATED_KEY} {created:?}")))?;
    Ok(Some((hash, created)))
}

impl Store {
    // ---- admins --------------------------------------------------------------------

    /// Adds an admin. `password_hash` must be an argon2id PHC string (the hub's
    /// `admin::password::hash_password` makes one). A taken name is
    /// [`StoreError::AlreadyExists`].
    pub fn add_admin(
        &self,
        name: &str,
        role: AdminRole,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<AdminId> {
        check_admin_name(name)?;
        check_password_hash(password_hash)?;
        match self.conn().execute(
            "INSERT INTO admins (name, role, password_hash, enabled, created_ms)
             VALUES (?1, ?2, ?3, 1, ?4)",
            params![name, role.as_str(), password_hash, to_unix_ms(now)?],
        ) {
            Ok(_) => Ok(self.conn().last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                what: format!("an admin named {name:?}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub fn admin(&self, id: AdminId) -> Result<Option<AdminRecord>> {
        let sql = format!("SELECT {ADMIN_COLS} FROM admins WHERE id = ?1");
        let row = self
            .conn()
            .query_row(&sql, [id], |r| AdminRow::try_from(r))
            .optional()?;
        row.map(admin_record).transpose()
    }

    pub fn admin_by_name(&self, name: &str) -> Result<Option<AdminRecord>> {
        let sql = format!("SELECT {ADMIN_COLS} FROM admins WHERE name = ?1");
        let row = self
            .conn()
            .query_row(&sql, [name], |r| AdminRow::try_from(r))
            .optional()?;
        row.map(admin_record).transpose()
    }

    /// The admin called `name` with its password hash, for checking a login.
    pub fn admin_credentials(&self, name: &str) -> Result<Option<AdminCredentials>> {
        let sql = format!("SELECT {ADMIN_COLS}, password_hash FROM admins WHERE name = ?1");
        let row = self
            .conn()
            .query_row(&sql, [name], |r| {
                Ok((AdminRow::try_from(r)?, r.get::<_, String>(7)?))
            })
            .optional()?;
        row.map(|(admin, password_hash)| {
            Ok(AdminCredentials {
                admin: admin_record(admin)?,
                password_hash,
            })
        })
        .transpose()
    }

    pub fn list_admins(&self) -> Result<Vec<AdminRecord>> {
        let sql = format!("SELECT {ADMIN_COLS} FROM admins ORDER BY id");
        let mut st = self.conn().prepare(&sql)?;
        let rows = st
            .query_map([], |r| AdminRow::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(admin_record).collect()
    }

    /// Replaces the password hash, clears failed logins and any lockout, and ends every
    /// session of the admin. `Ok(false)`: no such admin.
    pub fn set_admin_password(&self, id: AdminId, password_hash: &str) -> Result<bool> {
        check_password_hash(password_hash)?;
        let tx = write_tx(self.conn())?;
        let n = tx.execute(
            "UPDATE admins SET password_hash = ?2, failed_logins = 0, locked_until_ms = NULL
             WHERE id = ?1",
            params![id, password_hash],
        )?;
        tx.execute("DELETE FROM admin_sessions WHERE admin_id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Changes the role; live sessions get the new role on their next request.
    pub fn set_admin_role(&self, id: AdminId, role: AdminRole) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE admins SET role = ?2 WHERE id = ?1",
            params![id, role.as_str()],
        )? > 0)
    }

    /// Enables or disables an admin; disabling ends its sessions.
    pub fn set_admin_enabled(&self, id: AdminId, enabled: bool) -> Result<bool> {
        let tx = write_tx(self.conn())?;
        let n = tx.execute(
            "UPDATE admins SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
        )?;
        if !enabled {
            tx.execute("DELETE FROM admin_sessions WHERE admin_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Removes an admin and its sessions.
    pub fn remove_admin(&self, id: AdminId) -> Result<bool> {
        let tx = write_tx(self.conn())?;
        tx.execute("DELETE FROM admin_sessions WHERE admin_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM admins WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    // ---- first-admin enrolment -----------------------------------------------------

    /// Whether any admin account exists (enabled or not).
    pub fn has_admin(&self) -> Result<bool> {
        has_admin(self.conn())
    }

    /// Whether enrolment is open at `now`, and until when.
    pub fn enrolment(&self, now: OffsetDateTime) -> Result<Enrolment> {
        if self.has_admin()? {
            return Ok(Enrolment::AdminExists);
        }
        let Some((_, created)) = stored_enrol_token(self.conn())? else {
            return Ok(Enrolment::NoToken);
        };
        let expires = from_unix_ms(created)? + ENROL_TOKEN_VALIDITY;
        Ok(if now < expires {
            Enrolment::TokenLive { expires }
        } else {
            Enrolment::NoToken
        })
    }

    /// Stores `token` (made at `now`) in place of any earlier one. `Ok(false)`: an admin
    /// exists, so no token is stored (enrolment is closed).
    pub fn replace_enrol_token(&self, token: &EnrolToken, now: OffsetDateTime) -> Result<bool> {
        let tx = write_tx(self.conn())?;
        if has_admin(&tx)? {
            return Ok(false);
        }
        for (key, value) in [
            (ENROL_HASH_KEY, token.sha256_hex()),
            (ENROL_CREATED_KEY, to_unix_ms(now)?.to_string()),
        ] {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Adds the first admin (role admin) if `token` is the stored, unexpired enrolment
    /// token and no admin exists; the token is deleted in the same transaction. Invalid
    /// names or hashes are [`StoreError::Invalid`] (nothing changed, token kept).
    pub fn enrol_first_admin(
        &self,
        token: &EnrolToken,
        name: &str,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<EnrolOutcome> {
        check_admin_name(name)?;
        check_password_hash(password_hash)?;
        let tx = write_tx(self.conn())?;
        if has_admin(&tx)? {
            return Ok(EnrolOutcome::AdminExists);
        }
        let Some((hash, created)) = stored_enrol_token(&tx)? else {
            return Ok(EnrolOutcome::WrongToken);
        };
        let given = token.sha256_hex();
        let same = hash.len() == given.len()
            && std::hint::black_box(
                hash.bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b)),
            ) == 0;
        if !same {
            return Ok(EnrolOutcome::WrongToken);
        }
        if to_unix_ms(now)? >= created.saturating_add(ms(ENROL_TOKEN_VALIDITY)) {
            return Ok(EnrolOutcome::Expired);
        }
        tx.execute(
            "INSERT INTO admins (name, role, password_hash, enabled, created_ms)
             VALUES (?1, ?2, ?3, 1, ?4)",
            params![
                name,
                AdminRole::Admin.as_str(),
                password_hash,
                to_unix_ms(now)?
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM settings WHERE key IN (?1, ?2)",
            params![ENROL_HASH_KEY, ENROL_CREATED_KEY],
        )?;
        tx.commit()?;
        Ok(EnrolOutcome::Enrolled(id))
    }

    // ---- failed logins -------------------------------------------------------------

    /// Counts one more consecutive failed login; returns the new count (`None`: no such
    /// admin). Atomic, so concurrent failures are all counted.
    pub fn record_admin_login_failure(&self, id: AdminId) -> Result<Option<u32>> {
        let n: Option<i64> = self
            .conn()
            .query_row(
                "UPDATE admins SET failed_logins = failed_logins + 1 WHERE id = ?1
                 RETURNING failed_logins",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Refuses the admin's logins until `until` and starts counting failures afresh.
    pub fn lock_admin(&self, id: AdminId, until: OffsetDateTime) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE admins SET locked_until_ms = ?2, failed_logins = 0 WHERE id = ?1",
            params![id, to_unix_ms(until)?],
        )? > 0)
    }

    /// A successful login: clears the failure count and any (expired) lockout.
    pub fn record_admin_login_success(&self, id: AdminId) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE admins SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
            [id],
        )? > 0)
    }

    // ---- sessions ------------------------------------------------------------------

    /// Stores a new session for `admin` under SHA-256 of `token`, valid until `expires`
    /// at the latest.
    pub fn create_admin_session(
        &self,
        token: &[u8],
        admin: AdminId,
        now: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> Result<()> {
        if token.len() < 16 {
            return Err(StoreError::invalid(
                "session token",
                "must be at least 16 random bytes",
            ));
        }
        let now_ms = to_unix_ms(now)?;
        let hash = session_token_hash(token);
        let tx = write_tx(self.conn())?;
        let enabled: Option<bool> = tx
            .query_row("SELECT enabled FROM admins WHERE id = ?1", [admin], |r| {
                r.get(0)
            })
            .optional()?;
        if enabled != Some(true) {
            return Err(StoreError::invalid(
                "session",
                "the admin does not exist or is disabled",
            ));
        }
        tx.execute(
            "INSERT INTO admin_sessions (token_hash, admin_id, created_ms, last_seen_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            params![&hash[..], admin, now_ms, to_unix_ms(expires)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The live session for `token`, or `None` if there is none, it is past its expiry,
    /// it was idle for `idle` or longer, or its admin is disabled (such a session is
    /// deleted). Moves `last_seen` to `now` when it is [`SESSION_TOUCH_INTERVAL`] old.
    pub fn admin_session(
        &self,
        token: &[u8],
        now: OffsetDateTime,
        idle: Duration,
    ) -> Result<Option<AdminSession>> {
        let hash = session_token_hash(token);
        let now_ms = to_unix_ms(now)?;
        let sql = "SELECT s.created_ms, s.last_seen_ms, s.expires_ms,
                          a.id, a.name, a.role, a.enabled, a.created_ms, a.failed_logins,
                          a.locked_until_ms
                   FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
                   WHERE s.token_hash = ?1";
        let row = self
            .conn()
            .query_row(sql, [&hash[..]], |r| {
                let times: (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let admin: AdminRow = (
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                );
                Ok((times, admin))
            })
            .optional()?;
        let Some(((created, last_seen, expires), admin)) = row else {
            return Ok(None);
        };
        let admin = admin_record(admin)?;
        let live = now_ms < expires && now_ms < last_seen.saturating_add(ms(idle)) && admin.enabled;
        if !live {
            self.conn().execute(
                "DELETE FROM admin_sessions WHERE token_hash = ?1",
                [&hash[..]],
            )?;
            return Ok(None);
        }
        let mut seen = last_seen;
        if now_ms.saturating_sub(last_seen) >= ms(SESSION_TOUCH_INTERVAL) {
            self.conn().execute(
                "UPDATE admin_sessions SET last_seen_ms = ?2 WHERE token_hash = ?1",
                params![&hash[..], now_ms],
            )?;
            seen = now_ms;
        }
        Ok(Some(AdminSession {
            admin,
            created: from_unix_ms(created)?,
            last_seen: from_unix_ms(seen)?,
            expires: from_unix_ms(expires)?,
        }))
    }

    /// Ends one session (logout). `Ok(false)`: there was none.
    pub fn delete_admin_session(&self, token: &[u8]) -> Result<bool> {
        let hash = session_token_hash(token);
        Ok(self.conn().execute(
            "DELETE FROM admin_sessions WHERE token_hash = ?1",
            [&hash[..]],
        )? > 0)
    }

    /// Ends every session of `admin`; returns how many there were.
    pub fn delete_admin_sessions(&self, admin: AdminId) -> Result<usize> {
        Ok(self
            .conn()
            .execute("DELETE FROM admin_sessions WHERE admin_id = ?1", [admin])?)
    }

    /// Deletes every session past its expiry or idle for `idle`; returns how many.
    pub fn purge_admin_sessions(&self, now: OffsetDateTime, idle: Duration) -> Result<usize> {
        let now_ms = to_unix_ms(now)?;
        Ok(self.conn().execute(
            "DELETE FROM admin_sessions WHERE expires_ms <= ?1 OR last_seen_ms + ?2 <= ?1",
            params![now_ms, ms(idle)],
        )?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use time::macros::datetime;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    const HASH2: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNob3RoZXJoYXNob3RoZXJoYXNob3RoZXI";
    const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
    const IDLE: Duration = Duration::from_secs(12 * 3600);

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn at(secs: i64) -> OffsetDateTime {
        T0 + time::Duration::seconds(secs)
    }

    #[test]
    fn admins_are_added_listed_and_changed() {
        let (_d, s) = store();
        let id = s.add_admin("alice", AdminRole::Admin, HASH, T0).unwrap();
        let op = s.add_admin("oscar", AdminRole::Operator, HASH, T0).unwrap();
        let a = s.admin(id).unwrap().unwrap();
        assert_eq!(
            (a.name.as_str(), a.role, a.enabled, a.created),
            ("alice", AdminRole::Admin, true, T0)
        );
        assert_eq!(s.admin_by_name("oscar").unwrap().unwrap().id, op);
        assert_eq!(s.admin_by_name("nobody").unwrap(), None);
        let c = s.admin_credentials("alice").unwrap().unwrap();
        assert_eq!(c.password_hash, HASH);
        assert!(!format!("{c:?}").contains(HASH));
        assert_eq!(
            s.list_admins()
                .unwrap()
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["alice", "oscar"]
        );

        match s.add_admin("alice", AdminRole::Operator, HASH, T0) {
            Err(e @ StoreError::AlreadyExists { .. }) => {
                assert_eq!(e.to_string(), "an admin named \"alice\" already exists")
            }
            other => panic!("{other:?}"),
        }
        for bad in ["", "a b", "x\n", &"n".repeat(65)] {
            assert!(matches!(
                s.add_admin(bad, AdminRole::Admin, HASH, T0),
                Err(StoreError::Invalid {
                    field: "admin name",
                    ..
                })
            ));
        }
        // A clear-text password is never stored.
        match s.add_admin("bob", AdminRole::Admin, "correct horse battery", T0) {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "password hash"),
            other => panic!("{other:?}"),
        }
        assert!(s.admin_by_name("bob").unwrap().is_none());

        assert!(s.set_admin_role(op, AdminRole::Installer).unwrap());
        assert_eq!(s.admin(op).unwrap().unwrap().role, AdminRole::Installer);
        assert!(s.set_admin_enabled(op, false).unwrap());
        assert!(!s.admin(op).unwrap().unwrap().enabled);
        assert!(s.set_admin_password(op, HASH2).unwrap());
        assert_eq!(
            s.admin_credentials("oscar").unwrap().unwrap().password_hash,
            HASH2
        );
        assert!(s.remove_admin(op).unwrap());
        assert!(s.admin(op).unwrap().is_none());
        // Unknown ids change nothing.
        assert!(!s.remove_admin(op).unwrap());
        assert!(!s.set_admin_enabled(op, true).unwrap());
        assert!(!s.set_admin_role(op, AdminRole::Admin).unwrap());
        assert!(!s.set_admin_password(op, HASH).unwrap());
        // The access revision does not move for admins.
        assert_eq!(s.revision().unwrap(), 0);
    }

    #[test]
    fn sessions_expire_slide_and_end_with_their_admin() {
        let (_d, s) = store();
        let id = s.add_admin("alice", AdminRole::Admin, HASH, T0).unwrap();
        let token = [7u8; 32];
        let week = at(7 * 86400);
        s.create_admin_session(&token, id, T0, week).unwrap();
        assert!(s.create_admin_session(&[1u8; 8], id, T0, week).is_err());

        let got = s.admin_session(&token, at(1), IDLE).unwrap().unwrap();
        assert_eq!((got.admin.id, got.created, got.expires), (id, T0, week));
        // last_seen moves at most once a minute.
        assert_eq!(got.last_seen, T0);
        let got = s.admin_session(&token, at(59), IDLE).unwrap().unwrap();
        assert_eq!(got.last_seen, T0);
        let got = s.admin_session(&token, at(60), IDLE).unwrap().unwrap();
        assert_eq!(got.last_seen, at(60));
        assert!(s.admin_session(&[8u8; 32], at(61), IDLE).unwrap().is_none());

        // Idle: 12 h after the last recorded use.
        let idle_end = at(60 + 12 * 3600);
        assert!(s
            .admin_session(&token, idle_end - time::Duration::seconds(1), IDLE)
            .unwrap()
            .is_some());
        // That lookup slid last_seen again; sliding keeps it alive up to the absolute end.
        let mut t = idle_end;
        while t < week {
            assert!(s.admin_session(&token, t, IDLE).unwrap().is_some(), "{t}");
            t += time::Duration::hours(11);
        }
        assert!(s.admin_session(&token, week, IDLE).unwrap().is_none());
        // An expired session is gone, not just refused.
        assert!(!s.delete_admin_session(&token).unwrap());

        // Idle expiry.
        s.create_admin_session(&token, id, T0, week).unwrap();
        assert!(s
            .admin_session(&token, at(12 * 3600), IDLE)
            .unwrap()
            .is_none());

        // Logout, and every way an admin's sessions end.
        let end_by = |f: &dyn Fn()| {
            s.create_admin_session(&token, id, T0, week).unwrap();
            f();
            assert!(s.admin_session(&token, at(1), IDLE).unwrap().is_none());
        };
        end_by(&|| assert!(s.delete_admin_session(&token).unwrap()));
        end_by(&|| assert_eq!(s.delete_admin_sessions(id).unwrap(), 1));
        end_by(&|| assert!(s.set_admin_password(id, HASH2).unwrap()));
        end_by(&|| assert!(s.set_admin_enabled(id, false).unwrap()));
        // A disabled admin gets no new session.
        assert!(s.create_admin_session(&token, id, T0, week).is_err());
        assert!(s.set_admin_enabled(id, true).unwrap());
        end_by(&|| assert!(s.remove_admin(id).unwrap()));
    }

    #[test]
    fn purge_drops_only_dead_sessions() {
        let (_d, s) = store();
        let id = s.add_admin("alice", AdminRole::Admin, HASH, T0).unwrap();
        s.create_admin_session(&[1u8; 32], id, T0, at(100)).unwrap();
        s.create_admin_session(&[2u8; 32], id, T0, at(7 * 86400))
            .unwrap();
        s.create_admin_session(&[3u8; 32], id, at(13 * 3600), at(7 * 86400))
            .unwrap();
        assert_eq!(s.purge_admin_sessions(at(12 * 3600), IDLE).unwrap(), 2);
        assert!(s
            .admin_session(&[3u8; 32], at(13 * 3600 + 1), IDLE)
            .unwrap()
            .is_some());
    }

    #[test]
    fn failures_count_until_a_lock_or_a_success() {
        let (_d, s) = store();
        let id = s.add_admin("alice", AdminRole::Admin, HASH, T0).unwrap();
        for n in 1..=4 {
            assert_eq!(s.record_admin_login_failure(id).unwrap(), Some(n));
        }
        assert_eq!(s.admin(id).unwrap().unwrap().failed_logins, 4);
        assert!(s.record_admin_login_success(id).unwrap());
        assert_eq!(s.admin(id).unwrap().unwrap().failed_logins, 0);
        assert_eq!(s.record_admin_login_failure(id).unwrap(), Some(1));
        assert!(s.lock_admin(id, at(900)).unwrap());
        let a = s.admin(id).unwrap().unwrap();
        assert_eq!((a.failed_logins, a.locked_until), (0, Some(at(900))));
        // A new password lifts the lock.
        assert!(s.set_admin_password(id, HASH2).unwrap());
        assert_eq!(s.admin(id).unwrap().unwrap().locked_until, None);
        assert_eq!(s.record_admin_login_failure(999).unwrap(), None);
        assert!(!s.lock_admin(999, at(1)).unwrap());
        assert!(!s.record_admin_login_success(999).unwrap());
    }

    #[test]
    fn enrol_tokens_print_and_parse() {
        let t = EnrolToken::generate().unwrap();
        let shown = t.to_string();
        assert_eq!(shown.len(), 34, "{shown}");
        let groups: Vec<&str> = shown.split('-').collect();
        assert_eq!(groups.len(), 7);
        assert!(groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|c| BASE32.contains(&c))));
        assert_eq!(EnrolToken::parse(&shown), Some(t.clone()));
        assert_eq!(
            EnrolToken::parse(&format!(" {} ", shown.to_lowercase().replace('-', " "))),
            Some(t.clone())
        );
        assert_eq!(EnrolToken::parse(&shown[..33]), None);
        assert_eq!(EnrolToken::parse(&format!("{shown}A")), None);
        assert_eq!(
            EnrolToken::parse(&shown.replacen(&shown[..1], "0", 1)),
            None
        );
        assert!(!format!("{t:?}").contains(&shown[..4]));
        assert_ne!(EnrolToken::generate().unwrap(), t);
    }

    #[test]
    fn enrolment_consumes_the_token_once_and_only_without_admins() {
        let (_d, s) = store();
        let t = EnrolToken::generate().unwrap();
        assert_eq!(s.enrolment(T0).unwrap(), Enrolment::NoToken);
        // No token stored: any token is wrong.
        assert_eq!(
            s.enrol_first_admin(&t, "alice", HASH, T0).unwrap(),
            EnrolOutcome::WrongToken
        );
        assert!(s.replace_enrol_token(&t, T0).unwrap());
        let expires = T0 + ENROL_TOKEN_VALIDITY;
        assert_eq!(
            s.enrolment(at(1)).unwrap(),
            Enrolment::TokenLive { expires }
        );
        assert_eq!(s.enrolment(expires).unwrap(), Enrolment::NoToken);
        // Only the hash is stored.
        let stored = s.setting(ENROL_HASH_KEY).unwrap().unwrap();
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&t.to_string().replace('-', "")));

        let other = EnrolToken::generate().unwrap();
        assert_eq!(
            s.enrol_first_admin(&other, "alice", HASH, at(1)).unwrap(),
            EnrolOutcome::WrongToken
        );
        // Bad input changes nothing and keeps the token.
        assert!(s.enrol_first_admin(&t, "a b", HASH, at(1)).is_err());
        assert!(s.enrol_first_admin(&t, "alice", "secret", at(1)).is_err());
        assert!(!s.has_admin().unwrap());

        let id = match s.enrol_first_admin(&t, "alice", HASH, at(2)).unwrap() {
            EnrolOutcome::Enrolled(id) => id,
            other => panic!("{other:?}"),
        };
        let a = s.admin(id).unwrap().unwrap();
        assert_eq!(
            (a.name.as_str(), a.role, a.enabled),
            ("alice", AdminRole::Admin, true)
        );
        assert_eq!(
            s.admin_credentials("alice").unwrap().unwrap().password_hash,
            HASH
        );
        // Used up: the settings rows are gone, and a second use is refused.
        assert_eq!(s.setting(ENROL_HASH_KEY).unwrap(), None);
        assert_eq!(s.setting(ENROL_CREATED_KEY).unwrap(), None);
        assert_eq!(
            s.enrol_first_admin(&t, "bob", HASH, at(3)).unwrap(),
            EnrolOutcome::AdminExists
        );
        assert_eq!(s.enrolment(at(3)).unwrap(), Enrolment::AdminExists);
        // No new token while an admin exists, even a disabled one.
        assert!(s.set_admin_enabled(id, false).unwrap());
        assert!(!s.replace_enrol_token(&other, at(4)).unwrap());
        assert_eq!(s.setting(ENROL_HASH_KEY).unwrap(), None);
        assert_eq!(s.list_admins().unwrap().len(), 1);
    }

    #[test]
    fn enrol_tokens_expire_and_are_replaced() {
        let (_d, s) = store();
        let old = EnrolToken::generate().unwrap();
        let new = EnrolToken::generate().unwrap();
        assert!(s.replace_enrol_token(&old, T0).unwrap());
        let end = T0 + ENROL_TOKEN_VALIDITY;
        assert_eq!(
            s.enrol_first_admin(&old, "alice", HASH, end).unwrap(),
            EnrolOutcome::Expired
        );
        assert!(!s.has_admin().unwrap());
        // A fresh token replaces the old one, which stops working.
        assert!(s.replace_enrol_token(&new, end).unwrap());
        assert_eq!(
            s.enrol_first_admin(&old, "alice", HASH, end).unwrap(),
            EnrolOutcome::WrongToken
        );
        // Good until one millisecond before its seven days are up.
        let last = end + ENROL_TOKEN_VALIDITY - time::Duration::milliseconds(1);
        assert!(matches!(
            s.enrol_first_admin(&new, "alice", HASH, last).unwrap(),
            EnrolOutcome::Enrolled(_)
        ));
    }

    #[test]
    fn concurrent_enrolments_enrol_one_admin() {
        let dir = tempfile::tempdir().unwrap();
        let t = EnrolToken::generate().unwrap();
        assert!(Store::open(dir.path())
            .unwrap()
            .replace_enrol_token(&t, T0)
            .unwrap());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let outcomes: Vec<EnrolOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (t, barrier, path) = (t.clone(), barrier.clone(), dir.path());
                    scope.spawn(move || {
                        let s = Store::open(path).unwrap();
                        barrier.wait();
                        s.enrol_first_admin(&t, &format!("admin{i}"), HASH, at(1))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let enrolled = outcomes
            .iter()
            .filter(|o| matches!(o, EnrolOutcome::Enrolled(_)))
            .count();
        assert_eq!(enrolled, 1, "{outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, EnrolOutcome::Enrolled(_) | EnrolOutcome::AdminExists)));
        assert_eq!(
            Store::open(dir.path())
                .unwrap()
                .list_admins()
                .unwrap()
                .len(),
            1
        );
    }
}
