//! `etcdserverpb.Cluster`: the member list. Membership changes come with the operations
//! milestone.

use tonic::{Request, Response, Status};

use super::error::not_yet;
use super::Ctx;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::storage::state::member_attr_name;

pub struct ClusterService {
    ctx: Ctx,
}

impl ClusterService {
    pub fn new(ctx: Ctx) -> Self {
        ClusterService { ctx }
    }

    /// Refuses ids that are not members with etcd's error; membership changes themselves come
    /// with the operations milestone.
    fn known_member(&self, id: u64, rpc: &str) -> Status {
        if self.ctx.handle.members().iter().any(|(m, _, _)| *m == id) {
            not_yet(rpc)
        } else {
            Status::not_found("etcdserver: member not found")
        }
    }

    /// Every member as etcd shows it: identity from the Raft membership, client URLs from what
    /// each member published.
    pub fn member_list(ctx: &Ctx) -> Vec<Member> {
        let store = ctx.handle.store();
        ctx.handle
            .members()
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
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(self.known_member(req.get_ref().id, "MemberRemove"))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(self.known_member(req.get_ref().id, "MemberUpdate"))
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
            header: self.ctx.header(self.ctx.handle.store().revision()),
            members: Self::member_list(&self.ctx),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(self.known_member(req.get_ref().id, "MemberPromote"))
    }
}
