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
//! Times are unix milliseconds in the database (schema.rs, migration 2) and
//! [`OffsetDateTime`] here.

use crate::error::{is_unique_violation, StoreError};
use crate::store::{from_unix_ms, to_unix_ms, write_tx, Result, Store};
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
    /// Watches: reads gates, zones, people and the access log; changes nothing.
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
}
