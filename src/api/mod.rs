//! The client-facing gRPC services, one per file. They validate, convert and route requests;
//! the semantics live in `mvcc` and the replication in `raft`.

pub mod barrier;
pub mod cluster;
pub mod election;
pub mod error;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod recipe;
pub mod session;
pub mod watch;
pub mod znode;

use std::sync::Arc;

use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{ResponseHeader, TxnResponse};
use crate::raft::handle::RaftHandle;

/// The API version corral implements; etcd clients read it from `Status`.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// What every service needs.
pub struct ApiContext {
    pub handle: RaftHandle,
    pub cluster_id: u64,
    pub member_id: u64,
    /// Membership changes and leader transfer (Cluster and Maintenance services).
    pub membership: crate::raft::membership::Membership,
}

pub type Ctx = Arc<ApiContext>;

impl ApiContext {
    /// A full response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.handle.term(),
        })
    }

    /// Completes the header MVCC left with only a revision (current revision if none).
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = match header {
            Some(h) => h.revision,
            None => self.handle.store().revision(),
        };
        *header = self.header(revision);
    }

    /// Fills the headers of a txn response and of every response nested in it.
    pub fn fill_txn(&self, resp: &mut TxnResponse) {
        self.fill(&mut resp.header);
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        for op in &mut resp.responses {
            match &mut op.response {
                Some(Response::ResponseRange(r)) => r.header = self.header(revision),
                Some(Response::ResponsePut(r)) => r.header = self.header(revision),
                Some(Response::ResponseDeleteRange(r)) => r.header = self.header(revision),
                Some(Response::ResponseTxn(t)) => {
                    t.header = self.header(revision);
                    self.fill_txn(t);
                }
                None => {}
            }
        }
    }
}
