//! `v3electionpb.Election`: etcd's leader election, server side, with etcd's key layout
//! (`<name>/<lease id in hex>`, leader = earliest create revision) so that `etcdctl elect`
//! and this service take part in the same elections.
//!
//! Fencing: a `LeaderKey.rev` (the create revision of the leader's key) is the leadership's
//! token; it grows with every new leader.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::lock::{check_name, claim, owner_key};
use super::recipe::{self, CleanupGuard, Seen, Waiter};
use super::Ctx;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::watch::WatchHub;

pub struct ElectionService {
    ctx: Ctx,
    hub: WatchHub,
}

impl ElectionService {
    pub fn new(ctx: Ctx, hub: WatchHub) -> Self {
        ElectionService { ctx, hub }
    }
}

fn not_leader() -> Status {
    Status::failed_precondition("election: not leader")
}

fn still_owner(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: vec![],
    }
}

fn leader_key(leader: Option<LeaderKey>) -> Result<LeaderKey, Status> {
    match leader {
        Some(l) if !l.key.is_empty() && l.rev > 0 => Ok(l),
        _ => Err(Status::invalid_argument(
            "corral: a leader key (key and rev) is required",
        )),
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = req.into_inner();
        check_name(&req.name, "election")?;
        if req.lease == 0 {
            return Err(Status::invalid_argument(
                "corral: a campaign needs a lease (leadership ends with it)",
            ));
        }
        let (prefix, key) = owner_key(&req.name, req.lease);
        let (rev, created) = claim(&self.ctx, &key, req.lease, req.value.clone()).await?;
        let guard = created.then(|| CleanupGuard::new(&self.ctx, key.clone()));
        if !created {
            // Campaigning again with the same lease: keep the place in line, update the value.
            self.proclaim_value(&key, rev, req.value.clone()).await?;
        }
        recipe::wait_turn(&self.ctx, &self.hub, &prefix, rev).await?;
        match recipe::get(&self.ctx, &key)? {
            Some(kv) if kv.create_revision == rev => {}
            _ => return Err(Status::not_found("etcdserver: requested lease not found")),
        }
        if let Some(g) = guard {
            g.disarm();
        }
        Ok(Response::new(CampaignResponse {
            header: self.ctx.header(rev),
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease: req.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = req.into_inner();
        let leader = leader_key(req.leader)?;
        let rev = self
            .proclaim_value(&leader.key, leader.rev, req.value)
            .await?;
        Ok(Response::new(ProclaimResponse {
            header: self.ctx.header(rev),
        }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let name = req.into_inner().name;
        check_name(&name, "election")?;
        self.ctx
            .handle
            .read_barrier()
            .await
            .map_err(super::error::propose_status)?;
        let (prefix, _) = owner_key(&name, 0);
        match recipe::first_created(&self.ctx, &prefix)? {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: self.ctx.header(self.ctx.handle.store().revision()),
                kv: Some(kv),
            })),
            None => Err(Status::not_found("election: no leader")),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let name = req.into_inner().name;
        check_name(&name, "election")?;
        let (prefix, _) = owner_key(&name, 0);
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        let mut waiter = Waiter::subscribe(&self.hub);
        tokio::spawn(async move {
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                let current = match recipe::first_created(&ctx, &prefix) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(kv) = current {
                    let id = (kv.key.clone(), kv.mod_revision);
                    if last.as_ref() != Some(&id) {
                        last = Some(id);
                        let resp = LeaderResponse {
                            header: ctx.header(kv.mod_revision),
                            kv: Some(kv),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                // Wake on any change under the election prefix, in order.
                loop {
                    match waiter.next(|_, kv| kv.key.starts_with(&prefix)).await {
                        Ok(Seen::Events(false)) => continue,
                        Ok(_) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = leader_key(req.into_inner().leader)?;
        let resp = recipe::txn(
            &self.ctx,
            TxnRequest {
                compare: vec![still_owner(&leader.key, leader.rev)],
                success: vec![RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: leader.key.clone(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            },
        )
        .await?;
        if !resp.succeeded {
            return Err(not_leader());
        }
        Ok(Response::new(ResignResponse {
            header: resp.header,
        }))
    }
}

impl ElectionService {
    /// Sets the value of `key` if it is still the one created at `rev`.
    async fn proclaim_value(&self, key: &[u8], rev: i64, value: Vec<u8>) -> Result<i64, Status> {
        let resp = recipe::txn(
            &self.ctx,
            TxnRequest {
                compare: vec![still_owner(key, rev)],
                success: vec![RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: key.to_vec(),
                        value,
                        ignore_lease: true,
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            },
        )
        .await?;
        if !resp.succeeded {
            return Err(not_leader());
        }
        Ok(resp.header.map_or(0, |h| h.revision))
    }
}
