//! Raft: type config, peer network, peer service and the handle the services use.
pub mod types;
