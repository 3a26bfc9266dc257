//! `corral.v1.Barrier`: ZooKeeper's simple barrier and double barrier over the znode tree.
//!
//! Simple barrier: a znode `/corral/barrier/<name>`; waiters wait for its deletion.
//! Double barrier: participants are ephemeral znodes `p-<session>` under
//! `/corral/double-barrier/<name>`; the participant that brings the count to N creates
//! `ready`, which the others wait for (no herd on every join). Leaving deletes the
//! participant and waits until none is left; the last one out removes `ready` so the barrier
//! can be used again. A crashed participant's session expires and its znode goes with it.

use tonic::{Request, Response, Status};

use super::recipe::{self, CleanupGuard, Seen, Waiter};
use super::znode::{read_children, run_op, zk_name, zk_status};
use super::Ctx;
use crate::pb::corral::v1::barrier_server::Barrier;
use crate::pb::corral::v1::op::Op as OpKind;
use crate::pb::corral::v1::{
    BarrierRequest, BarrierResponse, CreateMode, CreateRequest, DeleteRequest,
    DoubleBarrierRequest, DoubleBarrierResponse,
};
use crate::watch::WatchHub;
use crate::znode::{self, children_prefix};

pub struct BarrierService {
    ctx: Ctx,
    hub: WatchHub,
}

impl BarrierService {
    pub fn new(ctx: Ctx, hub: WatchHub) -> Self {
        BarrierService { ctx, hub }
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty()
        || name.contains('/')
        || name.chars().any(char::is_control)
        || name == "."
        || name == ".."
    {
        return Err(zk_status(
            "BadArguments",
            &format!("BadArguments: barrier name {name:?} must be non-empty, without '/' or control characters"),
        ));
    }
    Ok(())
}

fn simple_path(name: &str) -> String {
    format!("/corral/barrier/{name}")
}

fn double_path(name: &str) -> String {
    format!("/corral/double-barrier/{name}")
}

fn participant(base: &str, session: i64) -> String {
    format!("{base}/p-{session:016x}")
}

/// Participants currently in a double barrier.
fn participants(ctx: &Ctx, base: &str) -> Result<usize, Status> {
    let store = ctx.handle.store();
    let view = store.read_view();
    let kids =
        read_children(&view.backend, base, view.revision).map_err(super::error::mvcc_status)?;
    Ok(kids.iter().filter(|(n, _)| n.starts_with("p-")).count())
}

fn exists(ctx: &Ctx, path: &str) -> Result<bool, Status> {
    Ok(recipe::get(ctx, &znode::key(path))?.is_some())
}

/// Creates a znode, treating "already exists" as success.
async fn ensure(ctx: &Ctx, req: CreateRequest) -> Result<(), Status> {
    match run_op(ctx, OpKind::Create(req)).await {
        Ok(_) => Ok(()),
        Err(s) if zk_name(&s).as_deref() == Some("NodeExists") => Ok(()),
        Err(s) => Err(s),
    }
}

/// Deletes a znode, treating "no such node" as success.
async fn remove(ctx: &Ctx, path: &str) -> Result<(), Status> {
    let req = DeleteRequest {
        path: path.to_string(),
        version: -1,
        recursive: false,
    };
    match run_op(ctx, OpKind::Delete(req)).await {
        Ok(_) => Ok(()),
        Err(s) if zk_name(&s).as_deref() == Some("NoNode") => Ok(()),
        Err(s) => Err(s),
    }
}

#[tonic::async_trait]
impl Barrier for BarrierService {
    async fn set(&self, req: Request<BarrierRequest>) -> Result<Response<BarrierResponse>, Status> {
        let name = req.into_inner().name;
        check_name(&name)?;
        ensure(
            &self.ctx,
            CreateRequest {
                path: simple_path(&name),
                make_parents: true,
                ..Default::default()
            },
        )
        .await?;
        Ok(Response::new(BarrierResponse {
            zxid: self.ctx.handle.store().revision(),
        }))
    }

    async fn wait(
        &self,
        req: Request<BarrierRequest>,
    ) -> Result<Response<BarrierResponse>, Status> {
        let name = req.into_inner().name;
        check_name(&name)?;
        self.ctx
            .handle
            .read_barrier()
            .await
            .map_err(super::error::propose_status)?;
        recipe::wait_deleted(&self.ctx, &self.hub, &znode::key(&simple_path(&name))).await?;
        Ok(Response::new(BarrierResponse {
            zxid: self.ctx.handle.store().revision(),
        }))
    }

    async fn remove(
        &self,
        req: Request<BarrierRequest>,
    ) -> Result<Response<BarrierResponse>, Status> {
        let name = req.into_inner().name;
        check_name(&name)?;
        let req = DeleteRequest {
            path: simple_path(&name),
            version: -1,
            recursive: false,
        };
        run_op(&self.ctx, OpKind::Delete(req)).await?;
        Ok(Response::new(BarrierResponse {
            zxid: self.ctx.handle.store().revision(),
        }))
    }

    async fn enter(
        &self,
        req: Request<DoubleBarrierRequest>,
    ) -> Result<Response<DoubleBarrierResponse>, Status> {
        let req = req.into_inner();
        check_name(&req.name)?;
        if req.count < 1 {
            return Err(zk_status(
                "BadArguments",
                "BadArguments: count must be at least 1",
            ));
        }
        let base = double_path(&req.name);
        let me = participant(&base, req.session_id);
        let ready = format!("{base}/ready");
        ensure(
            &self.ctx,
            CreateRequest {
                path: base.clone(),
                make_parents: true,
                ..Default::default()
            },
        )
        .await?;
        ensure(
            &self.ctx,
            CreateRequest {
                path: me.clone(),
                mode: CreateMode::Ephemeral as i32,
                session_id: req.session_id,
                ..Default::default()
            },
        )
        .await?;
        // Until everyone is in, a caller that gives up leaves the barrier again.
        let guard = CleanupGuard::znode(&self.ctx, me.clone());
        let ready_key = znode::key(&ready);
        let mut waiter = Waiter::subscribe(&self.hub);
        loop {
            let present = participants(&self.ctx, &base)?;
            if exists(&self.ctx, &ready)? {
                guard.disarm();
                return Ok(Response::new(DoubleBarrierResponse {
                    zxid: self.ctx.handle.store().revision(),
                    participants: i32::try_from(present).unwrap_or(i32::MAX),
                }));
            }
            if present >= usize::try_from(req.count).unwrap_or(usize::MAX) {
                ensure(
                    &self.ctx,
                    CreateRequest {
                        path: ready.clone(),
                        ..Default::default()
                    },
                )
                .await?;
                continue;
            }
            // Wait for `ready` (or anything unknown); our own join was counted above.
            let prefix = children_prefix(&base);
            loop {
                match waiter
                    .next(|_, kv| kv.key == ready_key || kv.key.starts_with(&prefix))
                    .await?
                {
                    Seen::Events(true) | Seen::Unknown => break,
                    Seen::Events(false) => {}
                }
            }
        }
    }

    async fn leave(
        &self,
        req: Request<DoubleBarrierRequest>,
    ) -> Result<Response<DoubleBarrierResponse>, Status> {
        let req = req.into_inner();
        check_name(&req.name)?;
        let base = double_path(&req.name);
        remove(&self.ctx, &participant(&base, req.session_id)).await?;
        let prefix = children_prefix(&base);
        let mut waiter = Waiter::subscribe(&self.hub);
        loop {
            if participants(&self.ctx, &base)? == 0 {
                // Last one out (or anyone after): reset for the next round.
                remove(&self.ctx, &format!("{base}/ready")).await?;
                return Ok(Response::new(DoubleBarrierResponse {
                    zxid: self.ctx.handle.store().revision(),
                    participants: 0,
                }));
            }
            loop {
                match waiter.next(|_, kv| kv.key.starts_with(&prefix)).await? {
                    Seen::Events(true) | Seen::Unknown => break,
                    Seen::Events(false) => {}
                }
            }
        }
    }
}
