//! The Raft type configuration: what a log entry carries and what applying it returns.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult};

/// A member's identity as stored in the Raft membership config; it travels with every
/// membership change so that any member can answer `MemberList` and dial its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name from `--name`; etcd clients show it in `member list`.
    pub name: String,
    /// Where other members reach this member's peer service.
    pub peer_urls: Vec<String>,
    /// Where clients reach this member (advertised, not necessarily the bind address).
    pub client_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.peer_urls.join(","))
    }
}

/// One Raft entry's payload: many client commands batched into one proposal so that one
/// replication round and one fsync carry them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Applied in order; each gets its own result. Shared, not copied: the log store keeps
    /// recent entries for replication and apply to read (see `storage::log_store`), and a
    /// clone of an entry must not copy a batch of up to a thousand values. On the wire and on
    /// disk it is the plain list.
    pub commands: Arc<[Command]>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proposal({} commands)", self.commands.len())
    }
}

/// The result of applying one [`Proposal`]: one result per command, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub results: Vec<CommandResult>,
    /// Log index of the entry, so a member that forwarded the proposal can wait until it has
    /// applied the entry itself before answering (etcd answers after the local apply).
    pub index: u64,
}

openraft::declare_raft_types!(
    /// corral's Raft types: u64 member ids (etcd-style), [`Member`] as node data.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
