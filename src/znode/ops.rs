//! Znode operations as deterministic state-machine logic.
//!
//! A batch of operations (one call, or a multi) is first *staged*: each operation reads
//! through the staged changes of the ones before it, so a multi sees its own writes. If every
//! operation succeeds, the staged records become one MVCC txn — one revision, the zxid — with
//! ephemeral znodes put under their session's lease. If one fails, nothing is written and
//! every operation gets a result saying why (ZooKeeper's multi contract).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    children_prefix, key, parent, path_of, prefix_end, validate_path, NodeKind, Record, ZkError,
    MAX_DATA,
};
use crate::mvcc::keys::lease_key;
use crate::mvcc::read::for_each_live;
use crate::mvcc::{self, Backend, KeySpan, MvccError, Writer};
use crate::pb::corral::v1::op::Op as OpKind;
use crate::pb::corral::v1::op_result::Result as OpOutcome;
use crate::pb::corral::v1::{
    CheckRequest, CreateMode, CreateRequest, CreateResponse, DeleteRequest, DeleteResponse,
    MultiResponse, Op, OpError, OpResult, SetDataRequest, SetDataResponse, Stat,
};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

/// Why a staged operation failed: a ZooKeeper condition (the batch is refused), or storage
/// trouble (the member stops applying).
enum Fail {
    Zk(ZkError),
    Storage(MvccError),
}

impl From<MvccError> for Fail {
    fn from(e: MvccError) -> Self {
        Fail::Storage(e)
    }
}

impl From<ZkError> for Fail {
    fn from(e: ZkError) -> Self {
        Fail::Zk(e)
    }
}

/// Staged changes of one batch over the committed store.
struct Stage<'v, B: Backend> {
    view: &'v B,
    /// Revision the batch reads at.
    rev: i64,
    /// Revision the batch's writes will get.
    zxid: i64,
    now_ms: i64,
    staged: BTreeMap<String, Option<Record>>,
}

impl<'v, B: Backend> Stage<'v, B> {
    fn new(view: &'v B, rev: i64, now_ms: i64) -> Self {
        Stage {
            view,
            rev,
            zxid: rev + 1,
            now_ms,
            staged: BTreeMap::new(),
        }
    }

    fn stored(&self, path: &str) -> Result<Option<Record>, MvccError> {
        match mvcc::get(self.view, &key(path), self.rev)? {
            Some(kv) => Record::decode(&kv.value)
                .map(Some)
                .ok_or_else(|| MvccError::Corrupt(format!("znode record of {path}"))),
            None => Ok(None),
        }
    }

    fn get(&self, path: &str) -> Result<Option<Record>, MvccError> {
        if let Some(s) = self.staged.get(path) {
            return Ok(s.clone());
        }
        match self.stored(path)? {
            // The root always exists; it is stored the first time it changes.
            None if path == "/" => Ok(Some(Record::default())),
            other => Ok(other),
        }
    }

    /// Paths of the current children of `path`, sorted.
    fn children(&self, path: &str) -> Result<Vec<String>, MvccError> {
        let prefix = children_prefix(path);
        let end = prefix_end(&prefix);
        let mut out = BTreeSet::new();
        for_each_live(
            self.view,
            &KeySpan::Range {
                start: &prefix,
                end: Some(&end),
            },
            self.rev,
            |kv| {
                if let Some(p) = path_of(&kv.key) {
                    out.insert(p.to_string());
                }
                true
            },
        )?;
        for (p, v) in &self.staged {
            if parent(p) == Some(path) {
                if v.is_some() {
                    out.insert(p.clone());
                } else {
                    out.remove(p);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn lease_exists(&self, id: i64) -> Result<bool, MvccError> {
        Ok(self.view.get(&lease_key(id))?.is_some())
    }

    fn check_version(path: &str, rec: &Record, version: i32) -> Result<(), ZkError> {
        if version != -1 && rec.version != version {
            return Err(ZkError::BadVersion(format!(
                "{path} has version {}, expected {version}",
                rec.version
            )));
        }
        Ok(())
    }

    fn create(&mut self, req: &CreateRequest) -> Result<CreateResponse, Fail> {
        let mode = CreateMode::try_from(req.mode)
            .map_err(|_| ZkError::BadArguments(format!("unknown create mode {}", req.mode)))?;
        let sequential = matches!(
            mode,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        );
        let ephemeral = matches!(
            mode,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        );
        let with_ttl = matches!(
            mode,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        );
        // A sequential create may name a directory ("/queue/") for bare counter names.
        let checked = if sequential {
            format!("{}0", req.path)
        } else {
            req.path.clone()
        };
        validate_path(&checked)?;
        if req.path == "/" {
            return Err(ZkError::NodeExists("/".into()).into());
        }
        if req.data.len() > MAX_DATA {
            return Err(ZkError::BadArguments(format!(
                "data of {} bytes exceeds 1 MiB",
                req.data.len()
            ))
            .into());
        }
        if with_ttl && req.ttl_ms <= 0 {
            return Err(ZkError::BadArguments("a TTL mode needs ttl_ms > 0".into()).into());
        }
        if !with_ttl && req.ttl_ms != 0 {
            return Err(ZkError::BadArguments("ttl_ms is only for the TTL modes".into()).into());
        }
        let parent_path = parent(&checked).unwrap_or("/").to_string();
        if self.get(&parent_path)?.is_none() {
            if !req.make_parents {
                return Err(ZkError::NoNode(parent_path).into());
            }
            self.create_parents(&parent_path)?;
        }
        let pr = self
            .get(&parent_path)?
            .ok_or_else(|| ZkError::NoNode(parent_path.clone()))?;
        if pr.ephemeral_owner != 0 {
            return Err(ZkError::NoChildrenForEphemerals(parent_path).into());
        }
        let path = if sequential {
            format!("{}{:010}", req.path, pr.cversion)
        } else {
            req.path.clone()
        };
        if self.get(&path)?.is_some() {
            return Err(ZkError::NodeExists(path).into());
        }
        if ephemeral && (req.session_id == 0 || !self.lease_exists(req.session_id)?) {
            return Err(ZkError::SessionExpired(req.session_id).into());
        }
        let kind = match mode {
            CreateMode::Ephemeral | CreateMode::EphemeralSequential => NodeKind::Ephemeral,
            CreateMode::Container => NodeKind::Container,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl => {
                NodeKind::Ttl(req.ttl_ms)
            }
            CreateMode::Persistent | CreateMode::PersistentSequential => NodeKind::Persistent,
        };
        let rec = Record {
            data: req.data.clone(),
            czxid: self.zxid,
            mzxid: self.zxid,
            pzxid: self.zxid,
            ctime: self.now_ms,
            mtime: self.now_ms,
            ephemeral_owner: if ephemeral { req.session_id } else { 0 },
            kind,
            ..Default::default()
        };
        self.child_added(&parent_path, pr);
        let stat = rec.stat();
        self.staged.insert(path.clone(), Some(rec));
        Ok(CreateResponse {
            path,
            stat: Some(stat),
            zxid: self.zxid,
        })
    }

    fn child_added(&mut self, parent_path: &str, mut pr: Record) {
        pr.cversion += 1;
        pr.num_children += 1;
        pr.pzxid = self.zxid;
        self.staged.insert(parent_path.to_string(), Some(pr));
    }

    fn child_removed(&mut self, parent_path: &str) -> Result<(), Fail> {
        if let Some(mut pr) = self.get(parent_path)? {
            pr.cversion += 1;
            pr.num_children -= 1;
            pr.pzxid = self.zxid;
            self.staged.insert(parent_path.to_string(), Some(pr));
        }
        Ok(())
    }

    /// `mkdir -p`: creates every missing ancestor of `path` (and `path`) as persistent.
    fn create_parents(&mut self, path: &str) -> Result<(), Fail> {
        if self.get(path)?.is_some() {
            return Ok(());
        }
        if let Some(p) = parent(path) {
            self.create_parents(p)?;
        }
        self.create(&CreateRequest {
            path: path.to_string(),
            ..Default::default()
        })?;
        Ok(())
    }

    fn delete(&mut self, req: &DeleteRequest) -> Result<DeleteResponse, Fail> {
        validate_path(&req.path)?;
        if req.path == "/" {
            return Err(ZkError::BadArguments("the root cannot be deleted".into()).into());
        }
        let rec = self
            .get(&req.path)?
            .ok_or_else(|| ZkError::NoNode(req.path.clone()))?;
        Self::check_version(&req.path, &rec, req.version)?;
        let children = self.children(&req.path)?;
        if !children.is_empty() && !req.recursive {
            return Err(ZkError::NotEmpty(req.path.clone()).into());
        }
        // Descendants first (deepest last in `doomed`, removed regardless of order).
        let mut doomed = vec![req.path.clone()];
        let mut i = 0;
        while i < doomed.len() {
            let kids = self.children(&doomed[i])?;
            doomed.extend(kids);
            i += 1;
        }
        for p in &doomed {
            self.staged.insert(p.clone(), None);
        }
        if let Some(p) = parent(&req.path) {
            self.child_removed(p)?;
        }
        Ok(DeleteResponse {
            zxid: self.zxid,
            deleted: doomed.len() as i64,
        })
    }

    fn set_data(&mut self, req: &SetDataRequest) -> Result<SetDataResponse, Fail> {
        validate_path(&req.path)?;
        if req.data.len() > MAX_DATA {
            return Err(ZkError::BadArguments(format!(
                "data of {} bytes exceeds 1 MiB",
                req.data.len()
            ))
            .into());
        }
        let mut rec = self
            .get(&req.path)?
            .ok_or_else(|| ZkError::NoNode(req.path.clone()))?;
        Self::check_version(&req.path, &rec, req.version)?;
        if rec.ephemeral_owner != 0 && !self.lease_exists(rec.ephemeral_owner)? {
            return Err(ZkError::SessionExpired(rec.ephemeral_owner).into());
        }
        rec.data = req.data.clone();
        rec.version += 1;
        rec.mzxid = self.zxid;
        rec.mtime = self.now_ms;
        let stat = rec.stat();
        self.staged.insert(req.path.clone(), Some(rec));
        Ok(SetDataResponse {
            stat: Some(stat),
            zxid: self.zxid,
        })
    }

    fn check(&mut self, req: &CheckRequest) -> Result<Stat, Fail> {
        validate_path(&req.path)?;
        let rec = self
            .get(&req.path)?
            .ok_or_else(|| ZkError::NoNode(req.path.clone()))?;
        Self::check_version(&req.path, &rec, req.version)?;
        Ok(rec.stat())
    }

    /// The staged changes as KV operations (ephemerals under their session's lease).
    fn into_ops(self) -> Result<Vec<RequestOp>, MvccError> {
        let mut ops = Vec::new();
        for (path, rec) in &self.staged {
            let request = match rec {
                Some(rec) => Request::RequestPut(PutRequest {
                    key: key(path),
                    value: rec.encode(),
                    lease: rec.ephemeral_owner,
                    ..Default::default()
                }),
                // Created and deleted within the batch: nothing to write.
                None if self.stored(path)?.is_none() => continue,
                None => Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key(path),
                    ..Default::default()
                }),
            };
            ops.push(RequestOp {
                request: Some(request),
            });
        }
        Ok(ops)
    }
}

fn op_error(code: &str, message: String) -> OpResult {
    OpResult {
        result: Some(OpOutcome::Error(OpError {
            code: code.to_string(),
            message,
        })),
    }
}

/// Applies a batch of znode operations all-or-nothing at the next revision.
pub fn apply<B: Backend>(
    w: &mut Writer<'_, B>,
    ops: &[Op],
    now_ms: i64,
) -> Result<MultiResponse, MvccError> {
    let rev = w.revision();
    let (results, kv_ops) = {
        let mut stage = Stage::new(w.view(), rev, now_ms);
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let outcome = match &op.op {
                Some(OpKind::Create(r)) => stage.create(r).map(OpOutcome::Create),
                Some(OpKind::Delete(r)) => stage.delete(r).map(OpOutcome::Delete),
                Some(OpKind::SetData(r)) => stage.set_data(r).map(OpOutcome::SetData),
                Some(OpKind::Check(r)) => stage.check(r).map(OpOutcome::Check),
                None => Err(Fail::Zk(ZkError::BadArguments("empty operation".into()))),
            };
            match outcome {
                Ok(o) => results.push(OpResult { result: Some(o) }),
                Err(Fail::Storage(e)) => return Err(e),
                Err(Fail::Zk(e)) => {
                    let results = (0..ops.len())
                        .map(|j| match j.cmp(&i) {
                            std::cmp::Ordering::Less => op_error("Ok", "rolled back".into()),
                            std::cmp::Ordering::Equal => op_error(e.name(), e.to_string()),
                            std::cmp::Ordering::Greater => {
                                op_error("RuntimeInconsistency", "not attempted".into())
                            }
                        })
                        .collect();
                    return Ok(MultiResponse {
                        succeeded: false,
                        results,
                        zxid: rev,
                    });
                }
            }
        }
        (results, stage.into_ops()?)
    };
    let zxid = if kv_ops.is_empty() {
        rev
    } else {
        match w.txn(&TxnRequest {
            success: kv_ops,
            ..Default::default()
        }) {
            Ok(_) => w.revision(),
            // Only a session that vanished between staging and writing can get here.
            Err(MvccError::LeaseNotFound) => {
                let e = ZkError::SessionExpired(0);
                return Ok(MultiResponse {
                    succeeded: false,
                    results: ops
                        .iter()
                        .map(|_| op_error(e.name(), e.to_string()))
                        .collect(),
                    zxid: rev,
                });
            }
            Err(e) => return Err(e),
        }
    };
    Ok(MultiResponse {
        succeeded: true,
        results,
        zxid,
    })
}

/// KV operations that delete the ephemeral znodes at `paths` (a session ended) and update
/// their parents, for the caller to run in one txn together with the session's other keys.
pub fn session_cleanup_ops<B: Backend>(
    view: &B,
    rev: i64,
    paths: &[String],
) -> Result<Vec<RequestOp>, MvccError> {
    let mut stage = Stage::new(view, rev, 0);
    for path in paths {
        if stage.get(path)?.is_some() {
            stage.staged.insert(path.clone(), None);
            if let Some(p) = parent(path) {
                match stage.child_removed(p) {
                    Ok(()) => {}
                    Err(Fail::Storage(e)) => return Err(e),
                    Err(Fail::Zk(_)) => {}
                }
            }
        }
    }
    stage.into_ops()
}

/// Deletes the containers and TTL znodes among `paths` that are (still) due at `now_ms`: a
/// container that has had children and has none left; a TTL znode without children not
/// modified for its TTL. Re-checked here, at apply, so a znode that changed since the leader
/// picked it survives.
pub fn reap<B: Backend>(
    w: &mut Writer<'_, B>,
    paths: &[String],
    now_ms: i64,
) -> Result<usize, MvccError> {
    let rev = w.revision();
    let (count, ops) = {
        let mut stage = Stage::new(w.view(), rev, now_ms);
        let mut count = 0;
        for path in paths {
            let Some(rec) = stage.get(path)? else {
                continue;
            };
            if path == "/" || !is_due(&rec, now_ms) || !stage.children(path)?.is_empty() {
                continue;
            }
            stage.staged.insert(path.clone(), None);
            if let Some(p) = parent(path) {
                match stage.child_removed(p) {
                    Ok(()) => {}
                    Err(Fail::Storage(e)) => return Err(e),
                    Err(Fail::Zk(_)) => {}
                }
            }
            count += 1;
        }
        (count, stage.into_ops()?)
    };
    if !ops.is_empty() {
        w.txn(&TxnRequest {
            success: ops,
            ..Default::default()
        })?;
    }
    Ok(count)
}

/// Whether a childless znode is due for deletion by the leader.
pub fn is_due(rec: &Record, now_ms: i64) -> bool {
    rec.num_children == 0
        && match rec.kind {
            NodeKind::Container => rec.cversion > 0,
            NodeKind::Ttl(ttl) => now_ms.saturating_sub(rec.mtime) >= ttl,
            NodeKind::Persistent | NodeKind::Ephemeral => false,
        }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pb::corral::v1::op::Op as K;

    type Map = BTreeMap<Vec<u8>, Vec<u8>>;

    struct Tree {
        map: Map,
        rev: i64,
    }

    impl Tree {
        fn new() -> Tree {
            Tree {
                map: Map::new(),
                rev: 1,
            }
        }

        fn run(&mut self, ops: Vec<K>) -> MultiResponse {
            let ops: Vec<Op> = ops.into_iter().map(|op| Op { op: Some(op) }).collect();
            let mut w = Writer::new(&self.map, self.rev, 0);
            let resp = apply(&mut w, &ops, 1000 + self.rev).unwrap();
            let out = w.into_parts();
            for (k, v) in out.writes {
                match v {
                    Some(v) => self.map.insert(k, v),
                    None => self.map.remove(&k),
                };
            }
            self.rev = out.revision;
            resp
        }

        fn create(&mut self, path: &str, mode: CreateMode) -> Result<CreateResponse, OpError> {
            let r = self.run(vec![K::Create(CreateRequest {
                path: path.into(),
                data: b"d".to_vec(),
                mode: mode as i32,
                session_id: 7,
                ttl_ms: if matches!(mode, CreateMode::PersistentWithTtl) {
                    100
                } else {
                    0
                },
                ..Default::default()
            })]);
            match r.results.into_iter().next().unwrap().result.unwrap() {
                OpOutcome::Create(c) => Ok(c),
                OpOutcome::Error(e) => Err(e),
                other => panic!("{other:?}"),
            }
        }

        fn stat(&self, path: &str) -> Option<Stat> {
            let stage = Stage::new(&self.map, self.rev, 0);
            stage.get(path).unwrap().map(|r| r.stat())
        }
    }

    #[test]
    fn create_updates_parent_counters_in_the_same_zxid() {
        let mut t = Tree::new();
        let a = t.create("/a", CreateMode::Persistent).unwrap();
        assert_eq!(a.zxid, 2);
        let s = a.stat.unwrap();
        assert_eq!(
            (s.czxid, s.mzxid, s.pzxid, s.version, s.data_length),
            (2, 2, 2, 0, 1)
        );
        let root = t.stat("/").unwrap();
        assert_eq!((root.cversion, root.num_children, root.pzxid), (1, 1, 2));
        t.create("/a/b", CreateMode::Persistent).unwrap();
        let a = t.stat("/a").unwrap();
        assert_eq!((a.cversion, a.num_children, a.pzxid, a.mzxid), (1, 1, 3, 2));
        assert_eq!(
            t.create("/a", CreateMode::Persistent).unwrap_err().code,
            "NodeExists"
        );
        assert_eq!(
            t.create("/x/y", CreateMode::Persistent).unwrap_err().code,
            "NoNode"
        );
        assert_eq!(
            t.create("/a/", CreateMode::Persistent).unwrap_err().code,
            "BadArguments"
        );
    }

    #[test]
    fn sequential_names_use_the_parents_cversion() {
        let mut t = Tree::new();
        t.create("/q", CreateMode::Persistent).unwrap();
        let a = t.create("/q/n-", CreateMode::PersistentSequential).unwrap();
        let b = t.create("/q/n-", CreateMode::PersistentSequential).unwrap();
        t.create("/q/other", CreateMode::Persistent).unwrap();
        let c = t.create("/q/", CreateMode::PersistentSequential).unwrap();
        assert_eq!(a.path, "/q/n-0000000000");
        assert_eq!(b.path, "/q/n-0000000001");
        assert_eq!(c.path, "/q/0000000003");
    }

    #[test]
    fn ephemerals_need_a_session_and_have_no_children() {
        let mut t = Tree::new();
        assert_eq!(
            t.create("/e", CreateMode::Ephemeral).unwrap_err().code,
            "SessionExpired"
        );
        t.map.insert(lease_key(7), 10i64.to_be_bytes().to_vec());
        let e = t.create("/e", CreateMode::Ephemeral).unwrap();
        assert_eq!(e.stat.unwrap().ephemeral_owner, 7);
        assert_eq!(
            t.create("/e/c", CreateMode::Persistent).unwrap_err().code,
            "NoChildrenForEphemerals"
        );
        assert!(
            t.map
                .contains_key(&crate::mvcc::keys::attach_key(7, &key("/e"))),
            "attached to the session's lease"
        );
    }

    #[test]
    fn set_delete_versions_and_recursive_delete() {
        let mut t = Tree::new();
        t.create("/a", CreateMode::Persistent).unwrap();
        t.create("/a/b", CreateMode::Persistent).unwrap();
        t.create("/a/b/c", CreateMode::Persistent).unwrap();
        let set = |t: &mut Tree, v: i32| {
            t.run(vec![K::SetData(SetDataRequest {
                path: "/a".into(),
                data: b"new".to_vec(),
                version: v,
            })])
        };
        let bad = set(&mut t, 5);
        assert!(!bad.succeeded);
        let ok = set(&mut t, 0);
        assert!(ok.succeeded);
        let s = t.stat("/a").unwrap();
        assert_eq!(
            (s.version, s.mzxid, s.data_length, s.cversion),
            (1, ok.zxid, 3, 1)
        );
        let del = |t: &mut Tree, path: &str, recursive: bool| {
            let r = t.run(vec![K::Delete(DeleteRequest {
                path: path.into(),
                version: -1,
                recursive,
            })]);
            match r.results[0].result.clone().unwrap() {
                OpOutcome::Delete(d) => Ok(d),
                OpOutcome::Error(e) => Err(e.code),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(del(&mut t, "/a", false).unwrap_err(), "NotEmpty");
        assert_eq!(del(&mut t, "/", false).unwrap_err(), "BadArguments");
        let d = del(&mut t, "/a", true).unwrap();
        assert_eq!(d.deleted, 3);
        assert!(t.stat("/a").is_none() && t.stat("/a/b/c").is_none());
        let root = t.stat("/").unwrap();
        assert_eq!(
            (root.num_children, root.cversion, root.pzxid),
            (0, 2, d.zxid)
        );
    }

    #[test]
    fn multi_is_all_or_nothing_with_per_op_results() {
        let mut t = Tree::new();
        let rev = t.rev;
        let r = t.run(vec![
            K::Create(CreateRequest {
                path: "/m1".into(),
                ..Default::default()
            }),
            K::Create(CreateRequest {
                path: "/m1/x".into(),
                ..Default::default()
            }),
            K::Check(CheckRequest {
                path: "/nope".into(),
                version: -1,
            }),
            K::Create(CreateRequest {
                path: "/m2".into(),
                ..Default::default()
            }),
        ]);
        assert!(!r.succeeded);
        let codes: Vec<String> = r
            .results
            .iter()
            .map(|x| match x.result.clone().unwrap() {
                OpOutcome::Error(e) => e.code,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(codes, vec!["Ok", "Ok", "NoNode", "RuntimeInconsistency"]);
        assert_eq!(t.rev, rev, "nothing written");
        assert!(t.stat("/m1").is_none());
        // The same multi without the failing check applies at one zxid, seeing its own writes.
        let r = t.run(vec![
            K::Create(CreateRequest {
                path: "/m1".into(),
                ..Default::default()
            }),
            K::Create(CreateRequest {
                path: "/m1/x".into(),
                ..Default::default()
            }),
            K::Check(CheckRequest {
                path: "/m1/x".into(),
                version: 0,
            }),
        ]);
        assert!(r.succeeded);
        assert_eq!(t.stat("/m1/x").unwrap().czxid, r.zxid);
        assert_eq!(t.stat("/m1").unwrap().czxid, r.zxid);
        assert_eq!(t.rev, rev + 1);
    }

    #[test]
    fn make_parents_and_reaping_containers_and_ttl_nodes() {
        let mut t = Tree::new();
        let r = t.run(vec![K::Create(CreateRequest {
            path: "/p/q/r".into(),
            make_parents: true,
            ..Default::default()
        })]);
        assert!(r.succeeded);
        assert_eq!(t.stat("/p/q").unwrap().num_children, 1);
        t.create("/c", CreateMode::Container).unwrap();
        t.create("/t", CreateMode::PersistentWithTtl).unwrap();
        let due = |t: &Tree, p: &str, now| {
            let stage = Stage::new(&t.map, t.rev, 0);
            is_due(&stage.get(p).unwrap().unwrap(), now)
        };
        assert!(
            !due(&t, "/c", 0),
            "a container that never had children stays"
        );
        t.create("/c/x", CreateMode::Persistent).unwrap();
        t.run(vec![K::Delete(DeleteRequest {
            path: "/c/x".into(),
            version: -1,
            recursive: false,
        })]);
        assert!(due(&t, "/c", 0));
        let mtime = t.stat("/t").unwrap().mtime;
        assert!(!due(&t, "/t", mtime + 99));
        assert!(due(&t, "/t", mtime + 100));
        let mut w = Writer::new(&t.map, t.rev, 0);
        let n = reap(
            &mut w,
            &["/c".into(), "/t".into(), "/p".into()],
            mtime + 100,
        )
        .unwrap();
        assert_eq!(n, 2);
    }
}
