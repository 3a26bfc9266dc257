//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use prost::Message;
use tonic::{Request, Response, Status};

use super::error::{mvcc_status, propose_status};
use super::Ctx;
use crate::command::{Command, CommandResult};
use crate::mvcc::{self, validate, KeySpan, MvccError, Writer, MAX_REQUEST_BYTES};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::znode::ZNODE_PREFIX;

pub struct KvService {
    ctx: Ctx,
}

impl KvService {
    pub fn new(ctx: Ctx) -> Self {
        KvService { ctx }
    }

    async fn propose(&self, command: Command) -> Result<CommandResult, Status> {
        match self
            .ctx
            .handle
            .propose(command)
            .await
            .map_err(propose_status)?
        {
            CommandResult::Error(e) => Err(mvcc_status(e)),
            other => Ok(other),
        }
    }
}

fn check_size(m: &impl Message) -> Result<(), Status> {
    if m.encoded_len() > MAX_REQUEST_BYTES {
        return Err(mvcc_status(MvccError::RequestTooLarge));
    }
    Ok(())
}

fn unexpected(result: CommandResult) -> Status {
    tracing::error!(?result, "state machine returned a result of the wrong kind");
    Status::internal("etcdserver: unexpected apply result")
}

/// Refuses etcd-API writes into the znode namespace: its invariants (parent counters,
/// ephemeral owners) are kept by the znode layer alone.
fn guard_reserved(key: &[u8], range_end: &[u8]) -> Result<(), Status> {
    let reserved = KeySpan::Range {
        start: ZNODE_PREFIX,
        end: Some(&znode_end()),
    };
    if KeySpan::new(key, range_end).overlaps(&reserved) {
        return Err(mvcc_status(MvccError::ReservedKey));
    }
    Ok(())
}

fn znode_end() -> Vec<u8> {
    crate::znode::prefix_end(ZNODE_PREFIX)
}

fn guard_txn(t: &TxnRequest) -> Result<(), Status> {
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestPut(p)) => guard_reserved(&p.key, &[])?,
            Some(Op::RequestDeleteRange(d)) => guard_reserved(&d.key, &d.range_end)?,
            Some(Op::RequestTxn(inner)) => guard_txn(inner)?,
            Some(Op::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

/// True when every range in the txn (nested ones too) asked for a serializable read.
fn all_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(inner)) => all_serializable(inner),
            _ => true,
        })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_range(&req).map_err(mvcc_status)?;
        if !req.serializable {
            self.ctx
                .handle
                .read_barrier()
                .await
                .map_err(propose_status)?;
        }
        let store = self.ctx.handle.store();
        let view = store.read_view();
        let mut resp =
            mvcc::range(&view.backend, &req, view.revision, view.compacted).map_err(mvcc_status)?;
        drop(view);
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        validate::check_put(&req).map_err(mvcc_status)?;
        check_size(&req)?;
        guard_reserved(&req.key, &[])?;
        match self.propose(Command::Put(req)).await? {
            CommandResult::Put(mut resp) => {
                self.ctx.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_delete(&req).map_err(mvcc_status)?;
        check_size(&req)?;
        guard_reserved(&req.key, &req.range_end)?;
        match self.propose(Command::DeleteRange(req)).await? {
            CommandResult::DeleteRange(mut resp) => {
                self.ctx.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        validate::check_txn(&req).map_err(mvcc_status)?;
        check_size(&req)?;
        guard_txn(&req)?;
        let mut resp = if validate::txn_is_read_only(&req) {
            // A txn that cannot write is a read: no Raft round, just a read barrier unless
            // every read in it is serializable.
            if !all_serializable(&req) {
                self.ctx
                    .handle
                    .read_barrier()
                    .await
                    .map_err(propose_status)?;
            }
            let store = self.ctx.handle.store();
            let view = store.read_view();
            let mut writer = Writer::new(&view.backend, view.revision, view.compacted);
            writer.txn(&req).map_err(mvcc_status)?
        } else {
            match self.propose(Command::Txn(req)).await? {
                CommandResult::Txn(resp) => resp,
                other => return Err(unexpected(other)),
            }
        };
        self.ctx.fill_txn(&mut resp);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        // Compaction is applied (physically too) before the response, so `physical` needs no
        // extra wait.
        match self.propose(Command::Compact(req)).await? {
            CommandResult::Compact(mut resp) => {
                self.ctx.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }
}
