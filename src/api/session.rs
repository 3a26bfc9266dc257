//! `corral.v1.Sessions`: ZooKeeper sessions built on leases. A session id is a lease id; its
//! ephemeral znodes are attached to the lease, so a close or an expiry deletes them (and
//! updates their parents) in one apply.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::error::{mvcc_status, propose_status};
use super::lease::serve_keep_alives;
use super::znode::zk_status;
use super::Ctx;
use crate::command::{Command, CommandResult};
use crate::mvcc::MvccError;
use crate::pb::corral::v1::sessions_server::Sessions;
use crate::pb::corral::v1::{
    CloseSessionRequest, CloseSessionResponse, KeepAliveRequest, KeepAliveResponse,
    OpenSessionRequest, OpenSessionResponse,
};

/// Session timeout bounds, milliseconds (ZooKeeper's defaults: 2 and 20 ticks of 2 s).
#[derive(Debug, Clone, Copy)]
pub struct SessionBounds {
    pub min_ms: i64,
    pub max_ms: i64,
}

impl Default for SessionBounds {
    fn default() -> Self {
        SessionBounds {
            min_ms: 4_000,
            max_ms: 40_000,
        }
    }
}

pub struct SessionService {
    ctx: Ctx,
    bounds: SessionBounds,
    /// A session's lease never gets less than the lease minimum (it must outlive an election).
    min_lease_ttl: i64,
}

impl SessionService {
    pub fn new(ctx: Ctx, bounds: SessionBounds, election_timeout_ms: u64) -> Self {
        SessionService {
            ctx,
            bounds,
            min_lease_ttl: crate::lease::min_ttl(election_timeout_ms),
        }
    }

    /// The negotiated timeout for a requested one, and the lease TTL (whole seconds) behind it.
    pub fn negotiate(&self, requested_ms: i64) -> (i64, i64) {
        let ms = requested_ms.clamp(
            self.bounds.min_ms,
            self.bounds.max_ms.max(self.bounds.min_ms),
        );
        let ttl = ((ms + 999) / 1000).max(self.min_lease_ttl);
        (ttl * 1000, ttl)
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<KeepAliveResponse, Status>> + Send>>;

fn session_expired(id: i64) -> Status {
    zk_status(
        "SessionExpired",
        &crate::znode::ZkError::SessionExpired(id).to_string(),
    )
}

#[tonic::async_trait]
impl Sessions for SessionService {
    async fn open_session(
        &self,
        req: Request<OpenSessionRequest>,
    ) -> Result<Response<OpenSessionResponse>, Status> {
        let (timeout_ms, ttl) = self.negotiate(req.get_ref().timeout_ms);
        for _ in 0..3 {
            let id = loop {
                let id = rand::random::<i64>() & i64::MAX;
                if id != 0 {
                    break id;
                }
            };
            match self
                .ctx
                .handle
                .propose(Command::LeaseGrant { id, ttl })
                .await
                .map_err(propose_status)?
            {
                CommandResult::Error(MvccError::LeaseExists) => continue,
                CommandResult::Error(e) => return Err(mvcc_status(e)),
                _ => {
                    self.ctx.handle.metrics().sessions_opened.inc();
                    return Ok(Response::new(OpenSessionResponse {
                        session_id: id,
                        timeout_ms,
                    }));
                }
            }
        }
        Err(Status::unavailable(
            "corral: could not allocate a session id",
        ))
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        req: Request<Streaming<KeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Ok(Response::new(serve_keep_alives(
            self.ctx.clone(),
            self.ctx.handle.metrics().sessions_connected.hold(),
            req.into_inner(),
            |r: &KeepAliveRequest| r.session_id,
            |_, session_id, ttl| KeepAliveResponse {
                session_id,
                timeout_ms: ttl.map_or(0, |ttl| ttl * 1000),
            },
        )))
    }

    async fn close_session(
        &self,
        req: Request<CloseSessionRequest>,
    ) -> Result<Response<CloseSessionResponse>, Status> {
        let id = req.get_ref().session_id;
        match self
            .ctx
            .handle
            .propose(Command::LeaseRevoke { id })
            .await
            .map_err(propose_status)?
        {
            CommandResult::Error(MvccError::LeaseNotFound) => Err(session_expired(id)),
            CommandResult::Error(e) => Err(mvcc_status(e)),
            _ => {
                self.ctx.handle.metrics().sessions_closed.inc();
                Ok(Response::new(CloseSessionResponse {}))
            }
        }
    }
}
