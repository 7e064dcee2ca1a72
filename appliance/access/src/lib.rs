//! Access decisions. [`model`] is what the engine decides from (loaded from the store,
//! refreshed when the database changes); [`engine`] decides, with the time passed in and
//! no I/O, so every rule is testable from a table.

pub mod engine;
pub mod model;
pub mod text;

pub use engine::{AccessDecision, AccessEngine, Presence};
pub use model::ModelError;
