//! Events and alerts without I/O.
//!
//! - [`model`]: events (ULID ids, kinds, severities, lifecycle), rules, silences,
//!   receivers and notifications: the types the store persists and the hub moves.
//!
//! Everything here takes time as an argument; the hub (appliance/hub/src/events) does
//! the I/O and the store (appliance/store/src/events.rs) the SQL.

pub mod model;

pub use model::*;
