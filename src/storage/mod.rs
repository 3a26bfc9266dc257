//! sled storage: the only module that names sled.
pub mod log_store;
