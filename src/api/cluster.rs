//! `etcdserverpb.Cluster`: the member list and membership changes (through the leader, by
//! openraft's joint consensus; see `raft::membership`).

use tonic::{Request, Response, Status};

use super::Ctx;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::raft::membership::{MembershipReply, MembershipRequest};
use crate::raft::types::{Member as RaftMember, NodeId};
use crate::storage::state::member_attr_name;

pub struct ClusterService {
    ctx: Ctx,
}

impl ClusterService {
    pub fn new(ctx: Ctx) -> Self {
        ClusterService { ctx }
    }

    /// Every member as etcd shows it: identity from the Raft membership, client URLs from what
    /// each member published.
    pub fn member_list(ctx: &Ctx) -> Vec<Member> {
        Self::to_pb(ctx, ctx.handle.members())
    }

    fn to_pb(ctx: &Ctx, members: Vec<(NodeId, RaftMember, bool)>) -> Vec<Member> {
        let store = ctx.handle.store();
        members
            .into_iter()
            .map(|(id, m, is_learner)| {
                let published: Option<Vec<String>> = store
                    .read_meta(&member_attr_name(id))
                    .ok()
                    .flatten()
                    .and_then(|b| bincode::deserialize(&b).ok());
                Member {
                    id,
                    name: m.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: published.unwrap_or(m.client_urls),
                    is_learner,
                }
            })
            .collect()
    }

    async fn change(&self, req: MembershipRequest) -> Result<MembershipReply, Status> {
        self.ctx
            .membership
            .execute(req)
            .await
            .map_err(|r| r.into_status())
    }

    fn header(&self) -> Option<crate::pb::etcdserverpb::ResponseHeader> {
        self.ctx.header(self.ctx.handle.store().revision())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = req.into_inner();
        let reply = self
            .change(MembershipRequest::Add {
                peer_urls: req.peer_ur_ls,
                learner: req.is_learner,
            })
            .await?;
        let members = Self::to_pb(&self.ctx, reply.members);
        let member = members
            .iter()
            .find(|m| Some(m.id) == reply.added)
            .cloned()
            .ok_or_else(|| Status::internal("etcdserver: added member missing from the reply"))?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let reply = self
            .change(MembershipRequest::Remove {
                id: req.get_ref().id,
            })
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: Self::to_pb(&self.ctx, reply.members),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = req.into_inner();
        let reply = self
            .change(MembershipRequest::Update {
                id: req.id,
                peer_urls: req.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: Self::to_pb(&self.ctx, reply.members),
        }))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.get_ref().linearizable {
            self.ctx
                .handle
                .read_barrier()
                .await
                .map_err(super::error::propose_status)?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: Self::member_list(&self.ctx),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let reply = self
            .change(MembershipRequest::Promote {
                id: req.get_ref().id,
            })
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: Self::to_pb(&self.ctx, reply.members),
        }))
    }
}
