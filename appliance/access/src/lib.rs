//! Access decisions. [`model`] is the access data as the database holds it;
//! [`decision_snapshot`] is the compact, read-only form of it the engine decides from
//! (loaded from the store, refreshed when the database changes); [`engine`] decides, with
//! the time passed in and no I/O, so every rule is testable from a table.

pub mod decision_snapshot;
pub mod engine;
pub mod model;
pub mod text;

pub use decision_snapshot::{DecisionSnapshot, DecisionSnapshotBuilder};
pub use engine::{AccessDecision, AccessEngine, Presence};
pub use model::ModelError;
