//! The hub's SQLite database: the one place in Gatehouse that knows the SQL schema.
//!
//! - [`Store`] opens `<data_dir>/gatehouse.db` (0600, WAL, `synchronous=FULL`, foreign
//!   keys), runs the versioned migrations in [`schema`], and offers the access-side CRUD,
//!   the [`Store::snapshot`] the access engine decides from, and reads of the access log.
//! - [`SiteKey`] is the secret that turns raw card ids into the keyed hashes stored here;
//!   the raw id is never written anywhere.
//! - [`AccessLog`] is the group-commit writer: a decision's callback fires only once its
//!   log row is durable.
//! - [`events`]: event sources, receivers, rules, silences, the events themselves and the
//!   alert outbox with its delivery log (migration 4), for the hub's events pipeline.
//! - [`remote_opens`]: admins' remote door opens and whether each reached its gate
//!   (migration 5).
//! - [`sensors`]: the LoRa sensor registry, keys and frame counters (migration 6).

pub mod admin;
pub mod bulk;
pub mod error;
pub mod events;
pub mod gate_events;
pub mod log;
pub mod remote_opens;
pub mod schema;
pub mod sensors;
pub mod site_key;
mod snapshot;
pub mod store;

pub use error::{Entity, StoreError};
pub use events::{
    AckOutcome, AlertConfig, ApiKey, AttemptOutcome, AttemptRecord, DeliveryCount,
    DeliveryLogEntry, DeliveryLogFilter, DeliveryLogOutcome, DeliveryRecord, EventDetail,
    EventFilter, EventSource, IngestItem, IngestOutcome, NewRule, NewSilence, PlannedDelivery,
    QueueDepth, Reconciliation,
};
pub use log::{AccessLog, LogCallback, LogEntry, LogFilter, LogOutcome, LogRow, LogSource};
pub use site_key::{allow_list_entry, SiteKey};
pub use store::{
    CardRecord, GateCredentials, GateRecord, GateSecret, Holiday, NewCard, NewGate,
    NewGateCredentials, Store,
};
