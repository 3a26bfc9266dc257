//! `v3lockpb.Lock`: etcd's distributed lock, server side, with etcd's key layout
//! (`<name>/<lease id in hex>`) so that `etcdctl lock` and this service exclude each other.
//!
//! Fencing: the revision in a `LockResponse` header is the create revision of the lock key.
//! Tokens increase with every acquisition of a name; a protected resource remembers the
//! highest token it has seen and refuses requests carrying a lower one, so a holder whose
//! lease expired (and who may not know it yet) can do no harm.

use tonic::{Request, Response, Status};

use super::recipe::{self, CleanupGuard};
use super::Ctx;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResp;
use crate::pb::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::watch::WatchHub;

pub struct LockService {
    ctx: Ctx,
    hub: WatchHub,
}

impl LockService {
    pub fn new(ctx: Ctx, hub: WatchHub) -> Self {
        LockService { ctx, hub }
    }
}

/// `name/` and `name/<lease hex>`, as etcd's concurrency package lays them out.
pub fn owner_key(name: &[u8], lease: i64) -> (Vec<u8>, Vec<u8>) {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    (prefix, key)
}

/// Creates `key` under `lease` with `value` unless it exists; returns its create revision and
/// whether this call created it.
pub async fn claim(
    ctx: &Ctx,
    key: &[u8],
    lease: i64,
    value: Vec<u8>,
) -> Result<(i64, bool), Status> {
    let resp = recipe::txn(
        ctx,
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.to_vec(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: vec![],
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
        },
    )
    .await?;
    if resp.succeeded {
        return Ok((resp.header.map_or(0, |h| h.revision), true));
    }
    let existing = resp.responses.into_iter().find_map(|r| match r.response {
        Some(OpResp::ResponseRange(rr)) => rr.kvs.into_iter().next(),
        _ => None,
    });
    match existing {
        Some(kv) => Ok((kv.create_revision, false)),
        None => Err(Status::aborted(
            "corral: the key vanished while being claimed; retry",
        )),
    }
}

pub fn check_name(name: &[u8], what: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "corral: {what} name must not be empty"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = req.into_inner();
        check_name(&req.name, "lock")?;
        if req.lease == 0 {
            return Err(Status::invalid_argument(
                "corral: a lock needs a lease (it is released when the lease ends)",
            ));
        }
        let (prefix, key) = owner_key(&req.name, req.lease);
        let (rev, created) = claim(&self.ctx, &key, req.lease, Vec::new()).await?;
        // Until the lock is held, a caller that goes away takes its place in line with it.
        let guard = created.then(|| CleanupGuard::new(&self.ctx, key.clone()));
        recipe::wait_turn(&self.ctx, &self.hub, &prefix, rev).await?;
        // The lease may have ended while waiting: then the key is gone and nothing is held.
        match recipe::get(&self.ctx, &key)? {
            Some(kv) if kv.create_revision == rev => {}
            _ => return Err(Status::not_found("etcdserver: requested lease not found")),
        }
        if let Some(g) = guard {
            g.disarm();
        }
        Ok(Response::new(LockResponse {
            header: self.ctx.header(rev),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let key = req.into_inner().key;
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "corral: lock key must not be empty",
            ));
        }
        let (deleted, rev) = recipe::delete(&self.ctx, key).await?;
        if deleted == 0 {
            return Err(Status::not_found(
                "corral: no such lock key (not held, or already released)",
            ));
        }
        Ok(Response::new(UnlockResponse {
            header: self.ctx.header(rev),
        }))
    }
}
