//! The store's one error type. Messages are written for the admin reading CLI output or
//! an API reply: they name the thing and what is wrong with it, never a secret or a raw
//! card id.

use std::fmt;
use std::path::PathBuf;

/// A kind of stored thing, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entity {
    Zone,
    Gate,
    Person,
    Card,
    Level,
    Holiday,
    EventSource,
    Event,
    Receiver,
    Rule,
    Silence,
    Delivery,
    Sensor,
}

impl Entity {
    /// The table holding this kind of thing (schema.rs).
    pub(crate) fn table(self) -> &'static str {
        match self {
            Entity::Zone => "zones",
            Entity::Gate => "gates",
            Entity::Person => "people",
            Entity::Card => "cards",
            Entity::Level => "levels",
            Entity::Holiday => "holidays",
            Entity::EventSource => "event_sources",
            Entity::Event => "events",
            Entity::Receiver => "receivers",
            Entity::Rule => "rules",
            Entity::Silence => "silences",
            Entity::Delivery => "deliveries",
            Entity::Sensor => "sensors",
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Zone => "zone",
            Entity::Gate => "gate",
            Entity::Person => "person",
            Entity::Card => "card",
            Entity::Level => "level",
            Entity::Holiday => "holiday",
            Entity::EventSource => "event source",
            Entity::Event => "event",
            Entity::Receiver => "receiver",
            Entity::Rule => "rule",
            Entity::Silence => "silence",
            Entity::Delivery => "delivery",
            Entity::Sensor => "sensor",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the database is at schema version {found} but this gatehouse only knows up to \
         {supported}; it was written by a newer release (refusing to touch it)"
    )]
    TooNew { found: i64, supported: i64 },

    #[error("{entity} name {name:?} is already taken")]
    NameTaken { entity: Entity, name: String },

    #[error("no such {entity}: {key}")]
    NotFound { entity: Entity, key: String },

    #[error("this card is already enrolled (card #{existing})")]
    CardExists { existing: i64 },

    #[error("{entity} {key} is still used by {by}")]
    InUse {
        entity: Entity,
        key: String,
        by: String,
    },

    /// The thing exists but is in a state that does not allow the change (a delivery
    /// that is no longer pending, a second console receiver, an MQTT prefix in use).
    #[error("{entity} {key}: {why}")]
    Conflict {
        entity: Entity,
        key: String,
        why: String,
    },

    #[error("{what} already exists")]
    AlreadyExists { what: String },

    #[error("bad schedule: {0}")]
    BadSchedule(String),

    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    #[error("site key: {0}")]
    SiteKey(String),

    #[error("database setup: {0}")]
    Config(String),

    #[error("stored data is unreadable: {0}")]
    Corrupt(String),

    #[error("the access log writer has shut down")]
    LogClosed,

    #[error("the access log batch failed to commit: {0}")]
    LogCommit(String),
}

impl StoreError {
    pub(crate) fn not_found(entity: Entity, key: impl fmt::Display) -> Self {
        StoreError::NotFound {
            entity,
            key: key.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Whether `e` is a UNIQUE (or PRIMARY KEY) constraint violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}
