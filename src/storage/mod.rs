//! Storage: the only module that names sled.
//!
//! Each member keeps under its data dir `raft-log`, append-only segment files holding the log
//! entries and the vote (synced before openraft is told they are durable, see [`log_store`]),
//! and `state`, the sled database of the state machine.
pub mod backup;
pub mod log_store;
pub mod state;
