//! corral: a coordination service.
pub mod command;
pub mod mvcc;
pub mod pb;
pub mod raft;
pub mod storage;
