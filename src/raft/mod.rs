//! Raft: type config, state machine, peer network and service, and the handle services use.
pub mod handle;
pub mod lease_expiry;
pub mod membership;
pub mod network;
pub mod quota;
pub mod restored;
pub mod service;
pub mod state_machine;
pub mod types;
pub mod znode_reaper;
