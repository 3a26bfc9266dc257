//! Commands replicated through Raft, and their results.
//!
//! A command is the part of a client request that changes state; everything stateless (request
//! validation) happened before it was proposed. Applying a command is deterministic, so every
//! member reaches the same state and the same result.

use serde::{Deserialize, Serialize};

use crate::mvcc::MvccError;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// A member announces the URLs clients reach it on (etcd's "publish" step), so that every
    /// member can list every other member's client URLs.
    PublishMember {
        id: u64,
        client_urls: Vec<String>,
    },
    /// Creates lease `id` with `ttl` seconds (both chosen before proposing).
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease on a client's request, deleting its keys.
    LeaseRevoke {
        id: i64,
    },
    /// Revokes leases the leader's clock found expired; ids already gone are skipped.
    LeaseExpire {
        ids: Vec<i64>,
    },
    /// Znode operations applied all-or-nothing at one zxid; `now_ms` is the proposer's clock
    /// for ctime/mtime, so every member stores the same times.
    Znode {
        ops: Vec<crate::pb::corral::v1::Op>,
        now_ms: i64,
    },
    /// Containers and TTL znodes the leader found due; re-checked at apply.
    ZnodeReap {
        paths: Vec<String>,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    /// A command with nothing to report succeeded.
    Done,
    /// The outcome of a znode batch (it may have failed as a whole: see `succeeded`).
    Znode(crate::pb::corral::v1::MultiResponse),
    /// The command was refused and changed nothing.
    Error(MvccError),
}
