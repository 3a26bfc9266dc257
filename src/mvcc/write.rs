//! Writes: Put, DeleteRange, Txn and Compact, applied to an [`Overlay`] of one apply batch.

use std::cmp::Ordering;

use super::keys::{self, Record};
use super::read::{self, for_each_live, get, resolve_revision};
use super::{Backend, KeySpan, MvccError, Overlay};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};

/// Applies write requests for one apply batch. Each request either takes effect completely or
/// (on error) not at all; all requests of the batch are committed by the caller in one atomic
/// storage batch built from [`Writer::into_parts`].
pub struct Writer<'a, B: Backend> {
    view: Overlay<'a, B>,
    /// Store revision after the requests applied so far.
    rev: i64,
    /// Compaction floor: reads below it fail.
    compacted: i64,
    /// What watchers will be told, in revision order.
    events: Vec<Event>,
}

/// What the apply batch produced, for the caller to commit.
pub struct WriterOutput {
    pub writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub events: Vec<Event>,
    pub revision: i64,
    pub compacted: i64,
}

/// The revision a request is writing and how many changes it has made so far.
struct Scope {
    rev: i64,
    sub: i64,
}

impl<'a, B: Backend> Writer<'a, B> {
    pub fn new(base: &'a B, revision: i64, compacted: i64) -> Self {
        Writer {
            view: Overlay::new(base),
            rev: revision,
            compacted,
            events: Vec::new(),
        }
    }

    pub fn revision(&self) -> i64 {
        self.rev
    }

    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The batch's view of the store, its own writes included.
    pub fn view(&self) -> &Overlay<'a, B> {
        &self.view
    }

    /// Raw access for the lease and znode layers, which keep their own key spaces in the same
    /// batch.
    pub fn view_mut(&mut self) -> &mut Overlay<'a, B> {
        &mut self.view
    }

    pub fn into_parts(self) -> WriterOutput {
        WriterOutput {
            writes: self.view.into_writes(),
            events: self.events,
            revision: self.rev,
            compacted: self.compacted,
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.rev,
            ..Default::default()
        })
    }

    /// Runs one request atomically: on error its writes and events are undone.
    pub fn atomically<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        self.view.savepoint();
        let (rev, compacted, events) = (self.rev, self.compacted, self.events.len());
        let out = f(self);
        if out.is_err() {
            self.view.rollback();
            self.rev = rev;
            self.compacted = compacted;
            self.events.truncate(events);
        }
        self.view.savepoint();
        out
    }

    fn begin(&self) -> Scope {
        Scope {
            rev: self.rev + 1,
            sub: 0,
        }
    }

    fn finish(&mut self, scope: Scope) {
        if scope.sub > 0 {
            self.rev = scope.rev;
        }
    }

    /// The revision reads inside `scope` see: its own writes once it has made any.
    fn read_rev(&self, scope: &Scope) -> i64 {
        if scope.sub > 0 {
            scope.rev
        } else {
            self.rev
        }
    }

    fn lease_exists(&self, lease: i64) -> Result<bool, MvccError> {
        Ok(self.view.get(&keys::lease_key(lease))?.is_some())
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        self.atomically(|w| {
            w.check_put(req)?;
            let mut scope = w.begin();
            let mut resp = w.do_put(&mut scope, req)?;
            w.finish(scope);
            resp.header = w.header();
            Ok(resp)
        })
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        self.atomically(|w| {
            let mut scope = w.begin();
            let mut resp = w.do_delete(&mut scope, req)?;
            w.finish(scope);
            resp.header = w.header();
            Ok(resp)
        })
    }

    /// Deletes `keys` (those that exist) in one revision — a lease revocation or session
    /// expiry. Returns how many existed.
    pub fn delete_keys(&mut self, keys: &[Vec<u8>]) -> Result<i64, MvccError> {
        self.atomically(|w| {
            let mut scope = w.begin();
            let mut deleted = 0;
            for key in keys {
                let resp = w.do_delete(
                    &mut scope,
                    &DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    },
                )?;
                deleted += resp.deleted;
            }
            w.finish(scope);
            Ok(deleted)
        })
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.atomically(|w| {
            // etcd's order: decide every (nested) branch against the state before the txn,
            // check the ops on that path, and only then write.
            let mut path = Vec::new();
            w.compare_path(req, &mut path)?;
            w.check_path(req, &path, &mut 0)?;
            let mut scope = w.begin();
            let mut resp = w.exec_txn(&mut scope, req, &path, &mut 0)?;
            w.finish(scope);
            resp.header = w.header();
            Ok(resp)
        })
    }

    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        self.atomically(|w| {
            if req.revision <= w.compacted {
                return Err(MvccError::Compacted);
            }
            if req.revision > w.rev {
                return Err(MvccError::FutureRevision);
            }
            w.compacted = req.revision;
            w.purge_below(req.revision)?;
            Ok(CompactionResponse { header: w.header() })
        })
    }

    fn check_put(&self, req: &PutRequest) -> Result<(), MvccError> {
        if req.ignore_value || req.ignore_lease {
            get(&self.view, &req.key, self.rev)?.ok_or(MvccError::KeyNotFound)?;
        }
        if req.lease != 0 && !req.ignore_lease && !self.lease_exists(req.lease)? {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    fn do_put(&mut self, scope: &mut Scope, req: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = get(&self.view, &req.key, self.read_rev(scope))?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.lease_exists(lease)? {
            return Err(MvccError::LeaseNotFound);
        }
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (scope.rev, 1),
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: scope.rev,
            version,
            value,
            lease,
        };
        self.write_version(
            scope,
            &kv.key,
            Record::Live {
                create_revision,
                version,
                lease,
                value: kv.value.clone(),
            },
        );
        let prev_lease = prev.as_ref().map_or(0, |p| p.lease);
        if prev_lease != 0 && prev_lease != lease {
            self.view.remove(keys::attach_key(prev_lease, &kv.key));
        }
        if lease != 0 && prev_lease != lease {
            self.view
                .insert(keys::attach_key(lease, &kv.key), Vec::new());
        }
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn do_delete(
        &mut self,
        scope: &mut Scope,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let span = KeySpan::new(&req.key, &req.range_end);
        let mut doomed = Vec::new();
        for_each_live(&self.view, &span, self.read_rev(scope), |kv| {
            doomed.push(kv);
            true
        })?;
        for prev in &doomed {
            self.write_version(scope, &prev.key, Record::Tombstone);
            if prev.lease != 0 {
                self.view.remove(keys::attach_key(prev.lease, &prev.key));
            }
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: scope.rev,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn write_version(&mut self, scope: &mut Scope, key: &[u8], record: Record) {
        self.view
            .insert(keys::version_key(key, scope.rev), record.encode());
        self.view
            .insert(keys::history_key(scope.rev, scope.sub), key.to_vec());
        scope.sub += 1;
    }

    /// Evaluates the compares of `t` and of every nested txn on the branch taken, depth first.
    fn compare_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(Request::RequestTxn(inner)) = &op.request {
                self.compare_path(inner, path)?;
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare) -> Result<bool, MvccError> {
        let span = KeySpan::new(&c.key, &c.range_end);
        let mut kvs = Vec::new();
        for_each_live(&self.view, &span, self.rev, |kv| {
            kvs.push(kv);
            true
        })?;
        if kvs.is_empty() {
            // A missing key compares as a zero KeyValue, except that no value matches it.
            if c.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn check_path(&self, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), MvccError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    resolve_revision(r.revision, self.rev, self.compacted)?;
                }
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestTxn(inner)) => self.check_path(inner, path, at)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        scope: &mut Scope,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let rev = self.read_rev(scope);
                    Response::ResponseRange(read::range(&self.view, r, rev, self.compacted)?)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.do_put(scope, p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.do_delete(scope, d)?)
                }
                Some(Request::RequestTxn(inner)) => {
                    Response::ResponseTxn(self.exec_txn(scope, inner, path, at)?)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    /// Physically drops what compaction at `floor` made unreachable: every version older than
    /// the newest one at or below `floor`, that one too if it is a tombstone, and history below
    /// `floor`.
    fn purge_below(&mut self, floor: i64) -> Result<(), MvccError> {
        let stop = keys::range_stop(None);
        let mut cur = vec![keys::KV_SPACE];
        while let Some((sm_key, _)) = self.view.first_in(&cur, &stop)? {
            let (key, _) = keys::decode_version_key(&sm_key)?;
            cur = keys::after_versions(&key);
            let Some((keep_rev, keep)) = read::version_at(&self.view, &key, floor)? else {
                continue;
            };
            let keep_key = keys::version_key(&key, keep_rev);
            let mut from = keys::version_prefix(&key);
            while let Some((old, _)) = self.view.first_in(&from, &keep_key)? {
                from = old.clone();
                from.push(0);
                self.view.remove(old);
            }
            if keep == Record::Tombstone {
                self.view.remove(keep_key);
            }
        }
        let hist_stop = keys::history_key(floor, 0);
        let mut from = vec![keys::HISTORY_SPACE];
        while let Some((old, _)) = self.view.first_in(&from, &hist_stop)? {
            from = old.clone();
            from.push(0);
            self.view.remove(old);
        }
        Ok(())
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match (CompareTarget::try_from(c.target), &c.target_union) {
        (Ok(CompareTarget::Value), u) => {
            let want: &[u8] = match u {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        (Ok(target), u) => {
            // A union of another kind reads as zero, like a missing oneof in etcd.
            let want = match (target, u) {
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => *v,
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => *v,
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => *v,
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
                _ => 0,
            };
            let have = match target {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                CompareTarget::Lease => kv.lease,
                CompareTarget::Value => 0,
            };
            have.cmp(&want)
        }
        (Err(_), _) => return false,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Err(_) => false,
    }
}
