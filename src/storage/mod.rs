//! sled storage: the only module that names sled.
//!
//! Each member has two sled databases under its data dir: `raft-log` (log entries and vote,
//! flushed before openraft is told they are durable) and `state` (the state machine). Keeping
//! them apart means a log flush carries only log bytes. Every flush a guarantee rests on goes
//! through [`durable`], because sled's own flush does not reach stable storage.
pub mod backup;
pub mod durable;
pub mod log_store;
pub mod state;
