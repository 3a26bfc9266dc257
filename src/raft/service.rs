//! The peer service, served on the peer port only: Raft RPCs from other members, forwarded
//! proposals and read-index requests. It must never face clients — it would let them bypass
//! every check the client API makes.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tonic::{Request, Response, Status};

use super::handle::RaftHandle;
use super::membership::{Membership, MembershipRequest};
use super::network::{decode, encode, ForwardRefusal, LeaseAsk};
use super::types::{Proposal, ProposalResult, Raft, TypeConfig};
use crate::pb::corral::peer::v1::peer_server::Peer;
use crate::pb::corral::peer::v1::{
    LeaseAnswer, LeaseQuery, RaftMessage, ReadIndexRequest, ReadIndexResponse,
};

pub struct PeerService {
    raft: Raft,
    handle: RaftHandle,
    membership: Membership,
    /// Bound on a read-index quorum check, so a partitioned leader answers instead of hanging.
    read_index_timeout: Duration,
}

impl PeerService {
    pub fn new(handle: RaftHandle, membership: Membership, read_index_timeout: Duration) -> Self {
        PeerService {
            raft: handle.raft().clone(),
            handle,
            membership,
            read_index_timeout,
        }
    }
}

fn codec_status(e: super::network::PeerError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(req.get_ref()).map_err(codec_status)?;
        let result = self.raft.append_entries(rpc).await;
        Ok(Response::new(encode(&result).map_err(codec_status)?))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req.get_ref()).map_err(codec_status)?;
        let result = self.raft.vote(rpc).await;
        Ok(Response::new(encode(&result).map_err(codec_status)?))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode(req.get_ref()).map_err(codec_status)?;
        let (done, vote) = (rpc.done, rpc.vote);
        let result = self.raft.install_snapshot(rpc).await;
        // The last chunk, answered with the sender's vote: accepted and installed (a stale
        // leader's is answered with this member's newer vote instead).
        if done && result.as_ref().is_ok_and(|r| r.vote == vote) {
            self.handle.metrics().snapshots_received.inc();
        }
        Ok(Response::new(encode(&result).map_err(codec_status)?))
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let proposal: Proposal = decode(req.get_ref()).map_err(codec_status)?;
        let result: Result<ProposalResult, ForwardRefusal> =
            // Held while this member transfers its leadership (see `RaftHandle`).
            match self.handle.write_as_leader(proposal).await {
                Ok(resp) => Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ForwardRefusal::NotLeader(f.leader_id))
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(Status::internal(e.to_string()))
                }
                Err(RaftError::Fatal(_)) => Err(ForwardRefusal::Stopped),
            };
        Ok(Response::new(encode(&result).map_err(codec_status)?))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let not_leader = |leader: Option<u64>| ReadIndexResponse {
            index: 0,
            not_leader: true,
            leader_id: leader.unwrap_or(0),
        };
        let resp =
            match tokio::time::timeout(self.read_index_timeout, self.handle.leader_read_index())
                .await
            {
                Err(_) => not_leader(None),
                Ok(Ok(index)) => ReadIndexResponse {
                    index,
                    not_leader: false,
                    leader_id: 0,
                },
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    not_leader(f.leader_id)
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))))
                | Ok(Err(RaftError::Fatal(_))) => not_leader(None),
            };
        Ok(Response::new(resp))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<LeaseQuery>,
    ) -> Result<Response<LeaseAnswer>, Status> {
        let id = req.get_ref().id;
        Ok(Response::new(
            self.handle.lease_as_leader(LeaseAsk::KeepAlive, id).await,
        ))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseQuery>,
    ) -> Result<Response<LeaseAnswer>, Status> {
        let id = req.get_ref().id;
        Ok(Response::new(
            self.handle.lease_as_leader(LeaseAsk::TimeToLive, id).await,
        ))
    }

    async fn membership(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let request: MembershipRequest = decode(req.get_ref()).map_err(codec_status)?;
        let result = self.membership.serve_peer(request).await;
        Ok(Response::new(encode(&result).map_err(codec_status)?))
    }
}
