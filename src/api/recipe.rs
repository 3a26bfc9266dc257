//! What the recipe services (lock, election, barrier) share: writes through Raft, reads of the
//! applied state, and waiting for one key to change without a herd — every waiter hears the
//! applied events, but only the change it waits for (its predecessor's deletion) makes it
//! read the store again.

use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::Status;

use super::error::{mvcc_status, propose_status};
use super::Ctx;
use crate::command::{Command, CommandResult};
use crate::mvcc::read::for_each_live;
use crate::mvcc::{self, KeySpan};
use crate::pb::etcdserverpb::{DeleteRangeRequest, TxnRequest, TxnResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::KeyValue;
use crate::watch::{Published, WatchHub};

/// Proposes a txn and returns its response.
pub async fn txn(ctx: &Ctx, req: TxnRequest) -> Result<TxnResponse, Status> {
    match ctx
        .handle
        .propose(Command::Txn(req))
        .await
        .map_err(propose_status)?
    {
        CommandResult::Txn(mut resp) => {
            ctx.fill_txn(&mut resp);
            Ok(resp)
        }
        CommandResult::Error(e) => Err(mvcc_status(e)),
        _ => Err(Status::internal("corral: unexpected apply result")),
    }
}

/// Deletes one key; returns how many were deleted (0 or 1) and the revision after.
pub async fn delete(ctx: &Ctx, key: Vec<u8>) -> Result<(i64, i64), Status> {
    let req = DeleteRangeRequest {
        key,
        ..Default::default()
    };
    match ctx
        .handle
        .propose(Command::DeleteRange(req))
        .await
        .map_err(propose_status)?
    {
        CommandResult::DeleteRange(r) => Ok((r.deleted, r.header.map_or(0, |h| h.revision))),
        CommandResult::Error(e) => Err(mvcc_status(e)),
        _ => Err(Status::internal("corral: unexpected apply result")),
    }
}

/// A key as this member has applied it.
pub fn get(ctx: &Ctx, key: &[u8]) -> Result<Option<KeyValue>, Status> {
    let store = ctx.handle.store();
    let view = store.read_view();
    mvcc::get(&view.backend, key, view.revision).map_err(mvcc_status)
}

/// Every key under `prefix`, as applied here.
pub fn under(ctx: &Ctx, prefix: &[u8]) -> Result<Vec<KeyValue>, Status> {
    let end = crate::mvcc::keys::prefix_end(prefix);
    let store = ctx.handle.store();
    let view = store.read_view();
    let mut out = Vec::new();
    for_each_live(
        &view.backend,
        &KeySpan::Range {
            start: prefix,
            end: Some(&end),
        },
        view.revision,
        |kv| {
            out.push(kv);
            true
        },
    )
    .map_err(mvcc_status)?;
    Ok(out)
}

/// The key under `prefix` created last before revision `rev`: the one to wait for.
pub fn predecessor(ctx: &Ctx, prefix: &[u8], rev: i64) -> Result<Option<KeyValue>, Status> {
    Ok(under(ctx, prefix)?
        .into_iter()
        .filter(|kv| kv.create_revision < rev)
        .max_by_key(|kv| kv.create_revision))
}

/// The key under `prefix` created first: the owner (lock holder, election leader).
pub fn first_created(ctx: &Ctx, prefix: &[u8]) -> Result<Option<KeyValue>, Status> {
    Ok(under(ctx, prefix)?
        .into_iter()
        .min_by_key(|kv| kv.create_revision))
}

/// Waits on applied events. `subscribe` before checking the store, then `next` until the
/// change of interest: nothing applied after the check can slip by.
pub struct Waiter {
    rx: broadcast::Receiver<Arc<Published>>,
}

/// What the waiter saw.
pub enum Seen {
    /// Events were applied; `true` if one of them matched.
    Events(bool),
    /// Events may have been missed (fell behind, snapshot): re-read the store.
    Unknown,
}

impl Waiter {
    pub fn subscribe(hub: &WatchHub) -> Waiter {
        Waiter {
            rx: hub.subscribe(),
        }
    }

    /// The next applied batch, reporting whether any event in it satisfies `matches`.
    pub async fn next(
        &mut self,
        matches: impl Fn(EventType, &KeyValue) -> bool,
    ) -> Result<Seen, Status> {
        match self.rx.recv().await {
            Ok(p) => match &*p {
                Published::Events { events, .. } => Ok(Seen::Events(events.iter().any(|e| {
                    let t = EventType::try_from(e.r#type).unwrap_or(EventType::Put);
                    e.kv.as_ref().is_some_and(|kv| matches(t, kv))
                }))),
                Published::Resync => Ok(Seen::Unknown),
            },
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(Seen::Unknown),
            Err(broadcast::error::RecvError::Closed) => {
                Err(Status::unavailable("etcdserver: server stopped"))
            }
        }
    }
}

/// Returns once `key` no longer exists.
pub async fn wait_deleted(ctx: &Ctx, hub: &WatchHub, key: &[u8]) -> Result<(), Status> {
    let mut waiter = Waiter::subscribe(hub);
    if get(ctx, key)?.is_none() {
        return Ok(());
    }
    loop {
        match waiter
            .next(|t, kv| t == EventType::Delete && kv.key == key)
            .await?
        {
            Seen::Events(true) => return Ok(()),
            Seen::Events(false) => {}
            Seen::Unknown => {
                if get(ctx, key)?.is_none() {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits until no key under `prefix` created before `rev` remains, watching only the current
/// predecessor each time (no herd).
pub async fn wait_turn(ctx: &Ctx, hub: &WatchHub, prefix: &[u8], rev: i64) -> Result<(), Status> {
    while let Some(pred) = predecessor(ctx, prefix, rev)? {
        wait_deleted(ctx, hub, &pred.key).await?;
    }
    Ok(())
}

/// What a waiter left behind.
enum Leftover {
    Key(Vec<u8>),
    /// A znode: deleted through the znode layer, so its parent's counters stay right.
    Znode(String),
}

/// Deletes a waiter's key (or znode) if the call ends — deadline, cancel, error — before it
/// succeeds.
pub struct CleanupGuard {
    ctx: Ctx,
    leftover: Option<Leftover>,
}

impl CleanupGuard {
    pub fn new(ctx: &Ctx, key: Vec<u8>) -> Self {
        CleanupGuard {
            ctx: ctx.clone(),
            leftover: Some(Leftover::Key(key)),
        }
    }

    pub fn znode(ctx: &Ctx, path: String) -> Self {
        CleanupGuard {
            ctx: ctx.clone(),
            leftover: Some(Leftover::Znode(path)),
        }
    }

    /// The call succeeded: the key stays.
    pub fn disarm(mut self) {
        self.leftover = None;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let Some(leftover) = self.leftover.take() else {
            return;
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let result = match leftover {
                Leftover::Key(key) => delete(&ctx, key).await.map(|_| ()),
                Leftover::Znode(path) => {
                    let op = crate::pb::corral::v1::op::Op::Delete(
                        crate::pb::corral::v1::DeleteRequest {
                            path,
                            version: -1,
                            recursive: false,
                        },
                    );
                    super::znode::run_op(&ctx, op).await.map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::debug!(%e, "cleaning up an abandoned waiter");
            }
        });
    }
}
