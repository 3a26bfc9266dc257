//! `etcdserverpb.Maintenance`: Status and the alarm list. Backup, defragmentation, hashing and
//! leader transfer come with the operations milestone.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::error::not_yet;
use super::{Ctx, ETCD_API_VERSION};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

pub struct MaintenanceService {
    ctx: Ctx,
}

impl MaintenanceService {
    pub fn new(ctx: Ctx) -> Self {
        MaintenanceService { ctx }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(req.get_ref().action) {
            // No alarm can be raised yet (the space quota comes later), so the list is empty.
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: self.ctx.header(self.ctx.handle.store().revision()),
                alarms: Vec::new(),
            })),
            Ok(_) => Err(not_yet("raising or clearing alarms")),
            Err(_) => Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let handle = &self.ctx.handle;
        let metrics = handle.raft().metrics().borrow().clone();
        let store = handle.store();
        let db_size = i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX);
        let is_learner = handle
            .members()
            .iter()
            .any(|(id, _, learner)| *id == handle.id() && *learner);
        let mut errors = Vec::new();
        if metrics.current_leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        Ok(Response::new(StatusResponse {
            header: self.ctx.header(store.revision()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: db_size,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
