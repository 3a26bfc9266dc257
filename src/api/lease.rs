//! `etcdserverpb.Lease`: grant, revoke, keep-alive stream, time-to-live, list.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::{mvcc_status, propose_status};
use super::Ctx;
use crate::command::{Command, CommandResult};
use crate::lease::{self, MAX_LEASE_TTL};
use crate::metrics::Held;
use crate::mvcc::MvccError;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::raft::network::LeaseAsk;

pub struct LeaseService {
    ctx: Ctx,
    /// Shortest TTL granted, derived from the election timeout (etcd's rule).
    min_ttl: i64,
}

impl LeaseService {
    pub fn new(ctx: Ctx, election_timeout_ms: u64) -> Self {
        LeaseService {
            ctx,
            min_ttl: lease::min_ttl(election_timeout_ms),
        }
    }

    async fn propose(&self, command: Command) -> Result<(), Status> {
        match self
            .ctx
            .handle
            .propose(command)
            .await
            .map_err(propose_status)?
        {
            CommandResult::Error(e) => Err(mvcc_status(e)),
            _ => Ok(()),
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Serves a keep-alive stream (etcd leases and znode sessions alike): each request renews one
/// lease on the leader's clock — never through Raft — and `answer` shapes the reply from the
/// lease id and its renewed TTL (`None`: no such lease). A failure ends the stream. `open`
/// counts the stream in a gauge until it ends.
pub fn serve_keep_alives<Req, Resp>(
    ctx: Ctx,
    open: Held,
    mut inbound: Streaming<Req>,
    id_of: fn(&Req) -> i64,
    answer: impl Fn(&Ctx, i64, Option<i64>) -> Resp + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<Resp, Status>> + Send>>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _open = open;
        while let Some(Ok(r)) = inbound.next().await {
            let id = id_of(&r);
            let resp = match ctx.handle.lease(LeaseAsk::KeepAlive, id).await {
                Ok(ttl) => Ok(answer(&ctx, id, ttl.map(|(ttl, _)| ttl))),
                Err(e) => Err(propose_status(e)),
            };
            let failed = resp.is_err();
            if tx.send(resp).await.is_err() || failed {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A server-chosen lease id: positive and random, so ids are not reused across restarts.
fn new_lease_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(mvcc_status(MvccError::LeaseTtlTooLarge));
        }
        // etcd raises short (and negative) TTLs to the minimum rather than refusing them.
        let ttl = req.ttl.max(self.min_ttl);
        let mut attempts = 0;
        let id = loop {
            let id = if req.id != 0 { req.id } else { new_lease_id() };
            match self.propose(Command::LeaseGrant { id, ttl }).await {
                Ok(()) => break id,
                // A random id that happens to be taken: draw another.
                Err(s)
                    if req.id == 0
                        && attempts < 3
                        && s.message() == MvccError::LeaseExists.to_string() =>
                {
                    attempts += 1;
                }
                Err(s) => return Err(s),
            }
        };
        Ok(Response::new(LeaseGrantResponse {
            header: self.ctx.header(self.ctx.handle.store().revision()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.propose(Command::LeaseRevoke {
            id: req.get_ref().id,
        })
        .await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.ctx.header(self.ctx.handle.store().revision()),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Ok(Response::new(serve_keep_alives(
            self.ctx.clone(),
            self.ctx.handle.metrics().lease_keepalive_streams.hold(),
            req.into_inner(),
            |r: &LeaseKeepAliveRequest| r.id,
            // etcd answers an unknown (or expired) lease with TTL 0.
            |ctx, id, ttl| LeaseKeepAliveResponse {
                header: ctx.header(ctx.handle.store().revision()),
                id,
                ttl: ttl.unwrap_or(0),
            },
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let handle = &self.ctx.handle;
        let Some((granted_ttl, ttl)) = handle
            .lease(LeaseAsk::TimeToLive, req.id)
            .await
            .map_err(propose_status)?
        else {
            // etcd: an unknown lease has TTL -1.
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header: self.ctx.header(handle.store().revision()),
                id: req.id,
                ttl: -1,
                ..Default::default()
            }));
        };
        let keys = if req.keys {
            handle.read_barrier().await.map_err(propose_status)?;
            let store = handle.store();
            let view = store.read_view();
            lease::attached_keys(&view.backend, req.id).map_err(mvcc_status)?
        } else {
            Vec::new()
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.ctx.header(handle.store().revision()),
            id: req.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let handle = &self.ctx.handle;
        handle.read_barrier().await.map_err(propose_status)?;
        let store = handle.store();
        let leases = {
            let view = store.read_view();
            lease::all(&view.backend).map_err(mvcc_status)?
        };
        Ok(Response::new(LeaseLeasesResponse {
            header: self.ctx.header(store.revision()),
            leases: leases
                .into_iter()
                .map(|(id, _)| LeaseStatus { id })
                .collect(),
        }))
    }
}
