//! `corral.v1.Znodes`: the ZooKeeper-style namespace over gRPC, and its watch stream.
//!
//! Writes become one `Command::Znode` proposal each (a multi is one too); reads wait for a
//! read barrier, so they are linearizable on any member. Watches ride on the same applied
//! event stream as etcd watches: every znode change is a KV event, turned here into
//! ZooKeeper's event types. A watch starts at a revision, so events between a read and the
//! watch's registration can't be lost, and a reconnecting client passing its last zxid + 1
//! gets everything it missed.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

use super::error::{mvcc_status, propose_status};
use super::Ctx;
use crate::command::{Command, CommandResult};
use crate::mvcc::read::for_each_live;
use crate::mvcc::{self, KeySpan, MvccError};
use crate::pb::corral::v1::op::Op as OpKind;
use crate::pb::corral::v1::op_result::Result as OpOutcome;
use crate::pb::corral::v1::watch_request::Request as WatchReq;
use crate::pb::corral::v1::znodes_server::Znodes;
use crate::pb::corral::v1::*;
use crate::pb::mvccpb::event::EventType as KvEventType;
use crate::pb::mvccpb::Event;
use crate::watch::{history_chunk, HistoryGap, Published, WatchHub};
use crate::znode::{self, children_prefix, path_of, prefix_end, Record, ZkError};

pub struct ZnodeService {
    ctx: Ctx,
    hub: WatchHub,
}

impl ZnodeService {
    pub fn new(ctx: Ctx, hub: WatchHub) -> Self {
        ZnodeService { ctx, hub }
    }
}

/// A ZooKeeper condition as a gRPC status, with the name in an ErrorInfo reason.
pub fn zk_status(name: &str, message: &str) -> Status {
    let code = match name {
        "NoNode" | "SessionExpired" => Code::NotFound,
        "NodeExists" => Code::AlreadyExists,
        "BadVersion" | "NotEmpty" | "NoChildrenForEphemerals" => Code::FailedPrecondition,
        "BadArguments" => Code::InvalidArgument,
        _ => Code::Aborted,
    };
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(name, "corral.v1", std::collections::HashMap::new()),
    )
}

fn zk_error_status(e: &ZkError) -> Status {
    zk_status(e.name(), &e.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_path(path: &str) -> Result<(), Status> {
    znode::validate_path(path).map_err(|e| zk_error_status(&e))
}

/// A record at `rev` (the root exists even before it is first stored).
pub fn read_record<B: mvcc::Backend>(
    b: &B,
    path: &str,
    rev: i64,
) -> Result<Option<Record>, MvccError> {
    match mvcc::get(b, &znode::key(path), rev)? {
        Some(kv) => Record::decode(&kv.value)
            .map(Some)
            .ok_or_else(|| MvccError::Corrupt(format!("znode record of {path}"))),
        None if path == "/" => Ok(Some(Record::default())),
        None => Ok(None),
    }
}

/// Children of `path` at `rev`: (name, record), sorted by name.
pub fn read_children<B: mvcc::Backend>(
    b: &B,
    path: &str,
    rev: i64,
) -> Result<Vec<(String, Record)>, MvccError> {
    let prefix = children_prefix(path);
    let end = prefix_end(&prefix);
    let mut out = Vec::new();
    let mut bad = None;
    for_each_live(
        b,
        &KeySpan::Range {
            start: &prefix,
            end: Some(&end),
        },
        rev,
        |kv| {
            match (path_of(&kv.key), Record::decode(&kv.value)) {
                (Some(p), Some(r)) => out.push((znode::name(p).to_string(), r)),
                _ => bad = Some(MvccError::Corrupt("znode child record".into())),
            }
            true
        },
    )?;
    if let Some(e) = bad {
        return Err(e);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Proposes a batch of znode operations.
pub async fn write(ctx: &Ctx, ops: Vec<Op>) -> Result<MultiResponse, Status> {
    let cmd = Command::Znode {
        ops,
        now_ms: now_ms(),
    };
    match ctx.handle.propose(cmd).await.map_err(propose_status)? {
        CommandResult::Znode(resp) => Ok(resp),
        CommandResult::Error(e) => Err(mvcc_status(e)),
        other => {
            tracing::error!(?other, "znode command returned another kind of result");
            Err(Status::internal("corral: unexpected apply result"))
        }
    }
}

/// Runs one znode operation; a refusal becomes its ZooKeeper status.
pub async fn run_op(ctx: &Ctx, op: OpKind) -> Result<OpOutcome, Status> {
    precheck(&op).map_err(|e| zk_error_status(&e))?;
    let resp = write(ctx, vec![Op { op: Some(op) }]).await?;
    match resp.results.into_iter().next().and_then(|r| r.result) {
        Some(OpOutcome::Error(e)) => Err(zk_status(&e.code, &e.message)),
        Some(outcome) => Ok(outcome),
        None => Err(Status::internal("corral: empty znode result")),
    }
}

/// The ZooKeeper name of a status made by [`zk_status`].
pub fn zk_name(s: &Status) -> Option<String> {
    s.get_details_error_info().map(|i| i.reason)
}

impl ZnodeService {
    async fn write(&self, ops: Vec<Op>) -> Result<MultiResponse, Status> {
        write(&self.ctx, ops).await
    }

    async fn single(&self, op: OpKind) -> Result<OpOutcome, Status> {
        run_op(&self.ctx, op).await
    }

    async fn barrier(&self) -> Result<(), Status> {
        self.ctx.handle.read_barrier().await.map_err(propose_status)
    }
}

/// The stateless part of an operation's checks, done before proposing so that a bad request
/// costs no Raft round. Apply checks again (it must be deterministic on its own).
fn precheck(op: &OpKind) -> Result<(), ZkError> {
    let data_ok = |len: usize| {
        if len > znode::MAX_DATA {
            Err(ZkError::BadArguments(format!(
                "data of {len} bytes exceeds 1 MiB"
            )))
        } else {
            Ok(())
        }
    };
    match op {
        OpKind::Create(r) => {
            let mode = CreateMode::try_from(r.mode)
                .map_err(|_| ZkError::BadArguments(format!("unknown create mode {}", r.mode)))?;
            let sequential = matches!(
                mode,
                CreateMode::PersistentSequential
                    | CreateMode::EphemeralSequential
                    | CreateMode::PersistentSequentialWithTtl
            );
            let with_ttl = matches!(
                mode,
                CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
            );
            if sequential {
                znode::validate_path(&format!("{}0", r.path))?;
            } else {
                znode::validate_path(&r.path)?;
            }
            if with_ttl != (r.ttl_ms > 0) || r.ttl_ms < 0 {
                return Err(ZkError::BadArguments(
                    "ttl_ms must be > 0 for the TTL modes and 0 otherwise".into(),
                ));
            }
            data_ok(r.data.len())
        }
        OpKind::SetData(r) => {
            znode::validate_path(&r.path)?;
            data_ok(r.data.len())
        }
        OpKind::Delete(r) => znode::validate_path(&r.path),
        OpKind::Check(r) => znode::validate_path(&r.path),
    }
}

fn unexpected() -> Status {
    Status::internal("corral: unexpected znode result")
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Znodes for ZnodeService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        match self.single(OpKind::Create(req.into_inner())).await? {
            OpOutcome::Create(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        match self.single(OpKind::Delete(req.into_inner())).await? {
            OpOutcome::Delete(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn set_data(
        &self,
        req: Request<SetDataRequest>,
    ) -> Result<Response<SetDataResponse>, Status> {
        match self.single(OpKind::SetData(req.into_inner())).await? {
            OpOutcome::SetData(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn multi(&self, req: Request<MultiRequest>) -> Result<Response<MultiResponse>, Status> {
        let ops = req.into_inner().ops;
        if ops.is_empty() {
            return Err(zk_status(
                "BadArguments",
                "BadArguments: a multi needs at least one operation",
            ));
        }
        Ok(Response::new(self.write(ops).await?))
    }

    async fn exists(
        &self,
        req: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let path = req.into_inner().path;
        check_path(&path)?;
        self.barrier().await?;
        let store = self.ctx.handle.store();
        let view = store.read_view();
        let rec = read_record(&view.backend, &path, view.revision).map_err(mvcc_status)?;
        Ok(Response::new(ExistsResponse {
            exists: rec.is_some(),
            stat: rec.map(|r| r.stat()),
            zxid: view.revision,
        }))
    }

    async fn get_data(
        &self,
        req: Request<GetDataRequest>,
    ) -> Result<Response<GetDataResponse>, Status> {
        let path = req.into_inner().path;
        check_path(&path)?;
        self.barrier().await?;
        let store = self.ctx.handle.store();
        let view = store.read_view();
        match read_record(&view.backend, &path, view.revision).map_err(mvcc_status)? {
            Some(rec) => Ok(Response::new(GetDataResponse {
                stat: Some(rec.stat()),
                data: rec.data,
                zxid: view.revision,
            })),
            None => Err(zk_error_status(&ZkError::NoNode(path))),
        }
    }

    async fn get_children(
        &self,
        req: Request<GetChildrenRequest>,
    ) -> Result<Response<GetChildrenResponse>, Status> {
        let req = req.into_inner();
        check_path(&req.path)?;
        self.barrier().await?;
        let store = self.ctx.handle.store();
        let view = store.read_view();
        let Some(parent) =
            read_record(&view.backend, &req.path, view.revision).map_err(mvcc_status)?
        else {
            return Err(zk_error_status(&ZkError::NoNode(req.path)));
        };
        let children =
            read_children(&view.backend, &req.path, view.revision).map_err(mvcc_status)?;
        Ok(Response::new(GetChildrenResponse {
            child_stats: if req.with_stats {
                children.iter().map(|(_, r)| r.stat()).collect()
            } else {
                Vec::new()
            },
            children: children.into_iter().map(|(n, _)| n).collect(),
            stat: Some(parent.stat()),
            zxid: view.revision,
        }))
    }

    async fn sync(&self, req: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let path = req.into_inner().path;
        check_path(&path)?;
        self.barrier().await?;
        Ok(Response::new(SyncResponse {
            path,
            zxid: self.ctx.handle.store().revision(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (out, rx) = mpsc::channel(256);
        let session = WatchSession {
            ctx: self.ctx.clone(),
            out,
            watchers: BTreeMap::new(),
            next_id: 1,
        };
        let hub = self.hub.subscribe();
        tokio::spawn(session.run(req.into_inner(), hub));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One ZooKeeper event derived from a KV event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkEvent {
    pub kind: EventType,
    pub path: String,
    pub zxid: i64,
}

/// The ZooKeeper events a KV change in the znode key space stands for.
pub fn zk_events(e: &Event) -> Vec<ZkEvent> {
    let Some(kv) = &e.kv else { return Vec::new() };
    let Some(path) = path_of(&kv.key) else {
        return Vec::new();
    };
    let zxid = kv.mod_revision;
    let ev = |kind, path: &str| ZkEvent {
        kind,
        path: path.to_string(),
        zxid,
    };
    let with_parent = |kind| {
        let mut v = vec![ev(kind, path)];
        if let Some(p) = znode::parent(path) {
            v.push(ev(EventType::NodeChildrenChanged, p));
        }
        v
    };
    if e.r#type == KvEventType::Delete as i32 {
        return with_parent(EventType::NodeDeleted);
    }
    match &e.prev_kv {
        // The root is stored the first time its counters change: not a creation.
        None if path == "/" => Vec::new(),
        None => with_parent(EventType::NodeCreated),
        Some(prev) => {
            let old = Record::decode(&prev.value).map(|r| r.version);
            let new = Record::decode(&kv.value).map(|r| r.version);
            // Only a data version change is a data change; counter updates are not events.
            if old != new {
                vec![ev(EventType::NodeDataChanged, path)]
            } else {
                Vec::new()
            }
        }
    }
}

struct ZWatcher {
    path: String,
    kind: WatchKind,
    /// First revision not yet examined for this watcher.
    next_rev: i64,
}

impl ZWatcher {
    fn fires_on(&self, e: &ZkEvent) -> bool {
        let node_event = matches!(
            e.kind,
            EventType::NodeCreated | EventType::NodeDeleted | EventType::NodeDataChanged
        );
        match self.kind {
            WatchKind::WatchData | WatchKind::WatchExists => node_event && e.path == self.path,
            WatchKind::WatchChildren => {
                e.path == self.path
                    && matches!(
                        e.kind,
                        EventType::NodeChildrenChanged | EventType::NodeDeleted
                    )
            }
            WatchKind::WatchPersistent => {
                e.path == self.path && (node_event || e.kind == EventType::NodeChildrenChanged)
            }
            WatchKind::WatchPersistentRecursive => {
                node_event
                    && (self.path == "/"
                        || e.path == self.path
                        || e.path
                            .strip_prefix(self.path.as_str())
                            .is_some_and(|r| r.starts_with('/')))
            }
        }
    }

    fn one_shot(&self) -> bool {
        matches!(
            self.kind,
            WatchKind::WatchData | WatchKind::WatchExists | WatchKind::WatchChildren
        )
    }
}

struct Gone;

struct WatchSession {
    ctx: Ctx,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, ZWatcher>,
    next_id: i64,
}

fn op_error(e: &ZkError) -> OpError {
    OpError {
        code: e.name().to_string(),
        message: e.to_string(),
    }
}

impl WatchSession {
    async fn run(
        mut self,
        mut inbound: Streaming<WatchRequest>,
        mut hub: broadcast::Receiver<std::sync::Arc<Published>>,
    ) {
        loop {
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    Ok(None) | Err(_) => Err(Gone),
                },
                published = hub.recv() => match published {
                    Ok(p) => match &*p {
                        Published::Events { first, last, events } => self.deliver(*first, *last, events).await,
                        Published::Resync => self.catch_up_all().await,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up_all().await,
                    Err(broadcast::error::RecvError::Closed) => Err(Gone),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(resp)).await.map_err(|_| Gone)
    }

    async fn refuse(&self, watch_id: i64, e: &ZkError) -> Result<(), Gone> {
        self.send(WatchResponse {
            watch_id,
            error: Some(op_error(e)),
            ..Default::default()
        })
        .await
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request {
            Some(WatchReq::Add(add)) => self.add(add).await,
            Some(WatchReq::Remove(r)) => {
                if self.watchers.remove(&r.watch_id).is_some() {
                    self.send(WatchResponse {
                        watch_id: r.watch_id,
                        removed: true,
                        ..Default::default()
                    })
                    .await?;
                } else {
                    let e = ZkError::BadArguments(format!("no watch with id {}", r.watch_id));
                    self.refuse(r.watch_id, &e).await?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn add(&mut self, add: AddWatch) -> Result<(), Gone> {
        let id = if add.watch_id != 0 {
            add.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if let Err(e) = znode::validate_path(&add.path) {
            return self.refuse(id, &e).await;
        }
        if self.watchers.contains_key(&id) {
            return self
                .refuse(
                    id,
                    &ZkError::BadArguments(format!("watch id {id} is in use")),
                )
                .await;
        }
        let Ok(kind) = WatchKind::try_from(add.kind) else {
            return self
                .refuse(
                    id,
                    &ZkError::BadArguments(format!("unknown watch kind {}", add.kind)),
                )
                .await;
        };
        let mut ack = WatchResponse {
            watch_id: id,
            added: true,
            ..Default::default()
        };
        let store = self.ctx.handle.store().clone();
        let start = if add.read {
            if self.ctx.handle.read_barrier().await.is_err() {
                let e = ZkError::BadArguments("no leader to read from; retry".into());
                return self.refuse(id, &e).await;
            }
            let read = {
                let view = store.read_view();
                let rec = read_record(&view.backend, &add.path, view.revision);
                let kids = if kind == WatchKind::WatchChildren {
                    read_children(&view.backend, &add.path, view.revision).map(Some)
                } else {
                    Ok(None)
                };
                (view.revision, rec, kids)
            };
            let (rev, rec, kids) = match read {
                (rev, Ok(rec), Ok(kids)) => (rev, rec, kids),
                _ => return Err(Gone),
            };
            if kind == WatchKind::WatchChildren && rec.is_none() {
                return self.refuse(id, &ZkError::NoNode(add.path.clone())).await;
            }
            ack.exists = rec.is_some();
            ack.stat = rec.as_ref().map(|r| r.stat());
            ack.data = rec.map(|r| r.data).unwrap_or_default();
            ack.children = kids
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            ack.zxid = rev;
            rev + 1
        } else if add.start_zxid > 0 {
            add.start_zxid
        } else {
            store.revision() + 1
        };
        if start <= store.compacted() {
            let e = ZkError::BadArguments(MvccError::Compacted.to_string());
            return self.refuse(id, &e).await;
        }
        self.send(ack).await?;
        self.watchers.insert(
            id,
            ZWatcher {
                path: add.path,
                kind,
                next_rev: start,
            },
        );
        let current = store.revision();
        if start <= current {
            self.replay(id, current).await?;
        }
        Ok(())
    }

    /// Feeds watcher `id` the stored history from its next revision through `to`.
    async fn replay(&mut self, id: i64, to: i64) -> Result<(), Gone> {
        loop {
            let Some(w) = self.watchers.get(&id) else {
                return Ok(());
            };
            let from = w.next_rev;
            if from > to {
                return Ok(());
            }
            let (events, next) = match history_chunk(self.ctx.handle.store(), from, to) {
                Ok(read) => read,
                Err(HistoryGap::Compacted(_)) => {
                    self.watchers.remove(&id);
                    let e = ZkError::BadArguments(MvccError::Compacted.to_string());
                    return self.refuse(id, &e).await;
                }
                // As etcd's watch stream does: a store that cannot be read ends the stream.
                Err(HistoryGap::Storage(e)) => {
                    tracing::error!(error = %e, "reading znode watch history");
                    let failed = Status::internal("reading history failed");
                    let _ = self.out.send(Err(failed)).await;
                    return Err(Gone);
                }
            };
            self.feed(id, &events, next - 1).await?;
        }
    }

    /// Fires watcher `id` on `events` (all with revision <= `last`), then moves it past `last`.
    async fn feed(&mut self, id: i64, events: &[Event], last: i64) -> Result<(), Gone> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let mut fired = Vec::new();
        for e in events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if rev < w.next_rev {
                continue;
            }
            for z in zk_events(e) {
                if w.fires_on(&z) {
                    fired.push(z);
                    if w.one_shot() {
                        break;
                    }
                }
            }
            if w.one_shot() && !fired.is_empty() {
                break;
            }
        }
        let one_shot = w.one_shot();
        if let Some(w) = self.watchers.get_mut(&id) {
            w.next_rev = last + 1;
        }
        for z in fired {
            let done = one_shot;
            if done {
                self.watchers.remove(&id);
            }
            self.send(WatchResponse {
                watch_id: id,
                removed: done,
                zxid: z.zxid,
                event: Some(WatchEvent {
                    r#type: z.kind as i32,
                    path: z.path,
                    zxid: z.zxid,
                }),
                ..Default::default()
            })
            .await?;
            if done {
                break;
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, first: i64, last: i64, events: &[Event]) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            if w.next_rev > last {
                continue;
            }
            if w.next_rev < first {
                self.replay(id, first - 1).await?;
            }
            self.feed(id, events, last).await?;
        }
        Ok(())
    }

    async fn catch_up_all(&mut self) -> Result<(), Gone> {
        let current = self.ctx.handle.store().revision();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.replay(id, current).await?;
        }
        Ok(())
    }
}
