//! `etcdserverpb.Maintenance`: Status, alarms (the space quota), backups (Snapshot),
//! HashKV / Hash, Defragment and leader transfer.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::{mvcc_status, not_yet, propose_status};
use super::{Ctx, ETCD_API_VERSION};
use crate::command::{Command, CommandResult};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use crate::storage::backup::{self, Chunks};
use crate::storage::state::StateStore;

pub struct MaintenanceService {
    ctx: Ctx,
}

impl MaintenanceService {
    pub fn new(ctx: Ctx) -> Self {
        MaintenanceService { ctx }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// Chunks of a backup buffered ahead of a slow receiver.
const SNAPSHOT_BUFFER: usize = 8;

/// Runs `f` (a scan of the store) off the async workers.
async fn on_store<T: Send + 'static>(
    store: &Arc<StateStore>,
    f: impl FnOnce(&StateStore) -> T + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| {
            tracing::error!(%e, "a store scan panicked or was cancelled");
            Status::internal("etcdserver: internal error")
        })
}

fn storage_status(what: &str, e: std::io::Error) -> Status {
    tracing::error!(%e, "{what}");
    Status::internal(format!("etcdserver: {what} failed"))
}

/// etcd's text for an alarm in `StatusResponse.errors` (the alarm's protobuf text form).
fn alarm_text(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
    format!("memberID:{} alarm:{}", a.member_id, name)
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        let Ok(action) = AlarmAction::try_from(req.action) else {
            return Err(Status::invalid_argument("etcdserver: unknown alarm action"));
        };
        if AlarmType::try_from(req.alarm).is_err() {
            return Err(Status::invalid_argument("etcdserver: unknown alarm type"));
        }
        let handle = &self.ctx.handle;
        let alarms = match action {
            // etcd filters the list by type only (NONE: every alarm).
            AlarmAction::Get => handle
                .store()
                .alarms()
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .collect(),
            AlarmAction::Activate | AlarmAction::Deactivate => {
                let cmd = Command::Alarm {
                    activate: action == AlarmAction::Activate,
                    member_id: req.member_id,
                    alarm: req.alarm,
                };
                match handle.propose(cmd).await.map_err(propose_status)? {
                    CommandResult::Alarms(a) => a,
                    CommandResult::Error(e) => return Err(mvcc_status(e)),
                    other => {
                        tracing::error!(?other, "alarm command returned another kind of result");
                        return Err(Status::internal("etcdserver: unexpected apply result"));
                    }
                }
            }
        };
        Ok(Response::new(AlarmResponse {
            header: self.ctx.header(handle.store().revision()),
            alarms,
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let handle = &self.ctx.handle;
        let metrics = handle.raft().metrics().borrow().clone();
        let store = handle.store();
        let db_size = i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX);
        // Measured now, as the quota counts it: what compaction and deletes freed shows at once.
        let in_use = on_store(store, StateStore::measure_in_use)
            .await?
            .map_err(|e| storage_status("measuring the store", e))?;
        let is_learner = handle
            .members()
            .iter()
            .any(|(id, _, learner)| *id == handle.id() && *learner);
        let mut errors = Vec::new();
        if metrics.current_leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        errors.extend(store.alarms().iter().map(alarm_text));
        Ok(Response::new(StatusResponse {
            header: self.ctx.header(store.revision()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
            db_size_quota: i64::try_from(store.quota_bytes()).unwrap_or(i64::MAX),
            is_learner,
            ..Default::default()
        }))
    }

    /// sled has no defragmentation to trigger: it rewrites and reclaims its log-structured
    /// segments in the background as they fill with dead pages. What etcd's defragment
    /// guarantees afterwards (everything written is on disk, the quota counts only live
    /// data) holds after a flush, so that is what this does, and it reports success.
    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.ctx.handle.store();
        store
            .flush()
            .await
            .map_err(|e| storage_status("flushing the store", e))?;
        Ok(Response::new(DefragmentResponse {
            header: self.ctx.header(store.revision()),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, revision) = on_store(self.ctx.handle.store(), StateStore::hash_all)
            .await?
            .map_err(|e| storage_status("hashing the store", e))?;
        Ok(Response::new(HashResponse {
            header: self.ctx.header(revision),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = req.get_ref().revision;
        let store = self.ctx.handle.store();
        let h = on_store(store, move |s| s.hash_kv(revision))
            .await?
            .map_err(mvcc_status)?;
        Ok(Response::new(HashKvResponse {
            header: self.ctx.header(store.revision()),
            hash: h.hash,
            compact_revision: h.compacted,
            hash_revision: h.revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a backup of this member's store (see `storage::backup`) in 32 KiB chunks,
    /// ending with its sha256. Applies wait only while the records are copied in memory.
    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let dump = on_store(self.ctx.handle.store(), StateStore::dump_with_revision)
            .await?
            .map_err(|e| storage_status("copying the store", e))?;
        let total = backup::encoded_len(&dump);
        let mut header = self.ctx.header(dump.revision);
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_BUFFER);
        tokio::spawn(async move {
            let mut sent = 0u64;
            for blob in Chunks::new(dump, backup::CHUNK) {
                sent += blob.len() as u64;
                let resp = SnapshotResponse {
                    header: header.take(),
                    remaining_bytes: total.saturating_sub(sent),
                    blob,
                    version: ETCD_API_VERSION.to_string(),
                };
                if tx.send(Ok(resp)).await.is_err() {
                    // The client went away.
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.get_ref().target_id;
        self.ctx
            .membership
            .execute(crate::raft::membership::MembershipRequest::MoveLeader { target })
            .await
            .map_err(|r| r.into_status())?;
        Ok(Response::new(MoveLeaderResponse {
            header: self.ctx.header(self.ctx.handle.store().revision()),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
