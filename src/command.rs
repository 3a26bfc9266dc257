//! Commands replicated through Raft, and their results.
//!
//! A command is the part of a client request that changes state; everything stateless (request
//! validation) happened before it was proposed. Applying a command is deterministic, so every
//! member reaches the same state and the same result.

use serde::{Deserialize, Serialize};

use crate::mvcc::MvccError;
use crate::pb::corral::v1::op;
use crate::pb::etcdserverpb::request_op::Request as TxnOp;
use crate::pb::etcdserverpb::{
    AlarmMember, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, TxnRequest, TxnResponse,
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
    ///
    /// `term` is the term the proposer led in. It applies only from an entry of that term: a
    /// leader deposed without knowing it still runs its expiry clock on stale deadlines (the
    /// keep-alives now reach its successor), and its proposal, refused locally, must not be
    /// forwarded to the new leader and applied there.
    LeaseExpire {
        ids: Vec<i64>,
        term: u64,
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
    /// Raises (`activate`) or clears an alarm (etcd's `AlarmType`) of `member_id`; clearing
    /// with `member_id` 0 clears that alarm of every member.
    Alarm {
        activate: bool,
        member_id: u64,
        alarm: i32,
    },
}

impl Command {
    /// Whether the command can make the store grow, so that a NOSPACE alarm refuses it
    /// (etcd's quota: puts, txns with a put in either branch, lease grants). Deletes,
    /// compaction and revocations free space and always go through.
    pub fn needs_space(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(t) => txn_puts(t),
            Command::Znode { ops, .. } => ops
                .iter()
                .any(|o| matches!(o.op, Some(op::Op::Create(_)) | Some(op::Op::SetData(_)))),
            Command::DeleteRange(_)
            | Command::Compact(_)
            | Command::PublishMember { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseExpire { .. }
            | Command::ZnodeReap { .. }
            | Command::Alarm { .. } => false,
        }
    }
}

/// Whether a txn holds a put in either branch, nested txns included.
fn txn_puts(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|o| match &o.request {
            Some(TxnOp::RequestPut(_)) => true,
            Some(TxnOp::RequestTxn(inner)) => txn_puts(inner),
            Some(TxnOp::RequestRange(_)) | Some(TxnOp::RequestDeleteRange(_)) | None => false,
        })
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
    /// The alarms an alarm command raised or cleared.
    Alarms(Vec<AlarmMember>),
}
