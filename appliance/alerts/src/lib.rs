//! Events and alerts without I/O.
//!
//! - [`model`]: events (ULID ids, kinds, severities, lifecycle), rules, silences,
//!   receivers and notifications: the types the store persists and the hub moves.
//! - [`ingest`]: the event webhook's JSON body -> [`NewEvent`], with errors
//!   ([`IngestError`]) that tell the sender what to fix.
//! - [`frigate`]: Frigate's MQTT messages (`<prefix>/events`, `<prefix>/reviews`) ->
//!   [`NewEvent`], or a deliberate "ignored".
//! - [`rules`]: what a matcher matches, when a rule applies (site-local time, holidays),
//!   when a silence is in force, and what makes rules, matchers and silences valid.
//! - [`plan`]: the [`Planner`]: which rules match an event now, which receivers get it,
//!   whether a silence holds it.
//! - [`retry`]: the [`RetryPolicy`]: exponential backoff with full jitter, then
//!   dead-letter.
//! - [`render`]: notification bodies (Slack-compatible and plain JSON, e-mail subject and
//!   text, ntfy push), each carrying the event id and idempotency key.
//! - [`text`]: durations as people type them (`30s`, `5m`, `2h`), for the CLI and the
//!   admin API.
//!
//! Everything here takes time as an argument; the hub (appliance/hub/src/events) does
//! the I/O and the store (appliance/store/src/events.rs) the SQL.

pub mod frigate;
pub mod ingest;
pub mod model;
pub mod plan;
pub mod render;
pub mod retry;
pub mod rules;
pub mod text;

pub use frigate::{parse_frigate, FrigateOutcome, FrigateTopic};
pub use ingest::{parse_webhook, IngestError};
pub use model::*;
pub use plan::{Plan, PlannedDelivery, Planner, RuleMatch};
pub use retry::RetryPolicy;
