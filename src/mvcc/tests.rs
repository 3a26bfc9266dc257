//! Unit tests of etcd's MVCC semantics on an in-memory backend.

use std::collections::BTreeMap;

use super::*;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// A store that commits each request as its own batch, the way the state machine would.
struct Store {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    rev: i64,
    compacted: i64,
    events: Vec<Event>,
}

impl Store {
    fn new() -> Self {
        Store {
            map: BTreeMap::new(),
            rev: INITIAL_REVISION,
            compacted: 0,
            events: Vec::new(),
        }
    }

    fn write<T>(&mut self, f: impl FnOnce(&mut Writer<'_, BTreeMap<Vec<u8>, Vec<u8>>>) -> T) -> T {
        let mut w = Writer::new(&self.map, self.rev, self.compacted);
        let out = f(&mut w);
        let parts = w.into_parts();
        for (k, v) in parts.writes {
            match v {
                Some(v) => self.map.insert(k, v),
                None => self.map.remove(&k),
            };
        }
        self.rev = parts.revision;
        self.compacted = parts.compacted;
        self.events.extend(parts.events);
        out
    }

    fn put(&mut self, k: &str, v: &str) -> PutResponse {
        self.write(|w| w.put(&put_req(k, v))).unwrap()
    }

    fn range(&self, req: RangeRequest) -> Result<RangeResponse, MvccError> {
        validate::check_range(&req)?;
        range(&self.map, &req, self.rev, self.compacted)
    }

    fn get(&self, k: &str) -> Option<KeyValue> {
        get(&self.map, k.as_bytes(), self.rev).unwrap()
    }

    fn keys(&self, req: RangeRequest) -> Vec<String> {
        self.range(req)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    }

    fn grant_lease(&mut self, id: i64) {
        self.write(|w| w.view_mut().insert(keys::lease_key(id), vec![1]));
    }
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(k, v))),
    }
}

fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    }
}

fn op_range(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range_req(k, ""))),
    }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: k.into(),
        target_union: Some(u),
        range_end: vec![],
    }
}

#[test]
fn revisions_start_at_one_and_each_write_takes_the_next() {
    let mut s = Store::new();
    assert_eq!(s.rev, 1);
    let r = s.put("a", "1");
    assert_eq!(r.header.unwrap().revision, 2);
    s.put("a", "2");
    s.put("b", "1");
    assert_eq!(s.rev, 4);
    let a = s.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    assert_eq!(a.value, b"2");
    // Deleting nothing changes nothing, not even the revision.
    let d = s
        .write(|w| {
            w.delete_range(&DeleteRangeRequest {
                key: "zz".into(),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(d.deleted, 0);
    assert_eq!(s.rev, 4);
}

#[test]
fn delete_leaves_tombstone_and_recreate_starts_new_generation() {
    let mut s = Store::new();
    s.put("a", "1"); // rev 2
    s.put("a", "2"); // rev 3
    let d = s
        .write(|w| {
            w.delete_range(&DeleteRangeRequest {
                key: "a".into(),
                prev_kv: true,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs[0].value, b"2");
    assert_eq!(d.header.unwrap().revision, 4);
    assert!(s.get("a").is_none());
    // Past reads still see the old versions.
    let old = get(&s.map, b"a", 3).unwrap().unwrap();
    assert_eq!((old.version, old.value.as_slice()), (2, &b"2"[..]));
    s.put("a", "3"); // rev 5
    let a = s.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    let ev: Vec<_> = s
        .events
        .iter()
        .map(|e| (e.r#type, e.kv.as_ref().unwrap().mod_revision))
        .collect();
    assert_eq!(
        ev,
        vec![
            (EventType::Put as i32, 2),
            (EventType::Put as i32, 3),
            (EventType::Delete as i32, 4),
            (EventType::Put as i32, 5)
        ]
    );
}

#[test]
fn put_prev_kv_ignore_value_and_ignore_lease() {
    let mut s = Store::new();
    s.grant_lease(7);
    let r = s
        .write(|w| {
            w.put(&PutRequest {
                key: "k".into(),
                value: "v1".into(),
                lease: 7,
                ..Default::default()
            })
        })
        .unwrap();
    assert!(r.prev_kv.is_none());
    let r = s
        .write(|w| {
            w.put(&PutRequest {
                key: "k".into(),
                ignore_value: true,
                ignore_lease: true,
                prev_kv: true,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"v1");
    let k = s.get("k").unwrap();
    assert_eq!((k.value.as_slice(), k.lease, k.version), (&b"v1"[..], 7, 2));
    // ignore_value on a missing key
    let err = s
        .write(|w| {
            w.put(&PutRequest {
                key: "nope".into(),
                ignore_value: true,
                ..Default::default()
            })
        })
        .unwrap_err();
    assert_eq!(err, MvccError::KeyNotFound);
    assert_eq!(err.to_string(), "etcdserver: key not found");
    // unknown lease: refused, nothing changed
    let before = (s.rev, s.map.clone());
    let err = s
        .write(|w| {
            w.put(&PutRequest {
                key: "x".into(),
                lease: 99,
                ..Default::default()
            })
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    assert_eq!((s.rev, s.map.clone()), before);
    // request validation
    assert_eq!(
        validate::check_put(&put_req("", "v")),
        Err(MvccError::EmptyKey)
    );
    let both = PutRequest {
        key: "k".into(),
        value: "v".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        validate::check_put(&both).unwrap_err().to_string(),
        "etcdserver: value is provided"
    );
    let both = PutRequest {
        key: "k".into(),
        lease: 1,
        ignore_lease: true,
        ..Default::default()
    };
    assert_eq!(
        validate::check_put(&both).unwrap_err().to_string(),
        "etcdserver: lease is provided"
    );
}

#[test]
fn lease_attachments_follow_the_key() {
    let mut s = Store::new();
    s.grant_lease(1);
    s.grant_lease(2);
    s.write(|w| {
        w.put(&PutRequest {
            key: "k".into(),
            lease: 1,
            ..Default::default()
        })
    })
    .unwrap();
    assert!(s.map.contains_key(&keys::attach_key(1, b"k")));
    s.write(|w| {
        w.put(&PutRequest {
            key: "k".into(),
            lease: 2,
            ..Default::default()
        })
    })
    .unwrap();
    assert!(!s.map.contains_key(&keys::attach_key(1, b"k")));
    assert!(s.map.contains_key(&keys::attach_key(2, b"k")));
    s.write(|w| w.delete_keys(&[b"k".to_vec()])).unwrap();
    assert!(!s.map.contains_key(&keys::attach_key(2, b"k")));
}

fn abc_store() -> Store {
    let mut s = Store::new();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("c/1", "x"), ("d", "0")] {
        s.put(k, v);
    }
    s.put("b", "9"); // b: version 2, mod 7
    s
}

#[test]
fn range_forms_single_span_prefix_and_from_key() {
    let s = abc_store();
    assert_eq!(s.keys(range_req("b", "")), vec!["b"]);
    assert_eq!(s.keys(range_req("b", "d")), vec!["b", "c", "c/1"]);
    // prefix "c" is [c, d)
    assert_eq!(s.keys(range_req("c", "d")), vec!["c", "c/1"]);
    // from-key: range_end "\0"
    assert_eq!(s.keys(range_req("c", "\0")), vec!["c", "c/1", "d"]);
    assert_eq!(s.keys(range_req("\0", "\0")).len(), 5);
    // empty when end <= start
    assert!(s.keys(range_req("d", "a")).is_empty());
    assert_eq!(s.range(range_req("", "")).unwrap_err(), MvccError::EmptyKey);
}

#[test]
fn range_limit_more_count_keys_only_count_only() {
    let s = abc_store();
    let r = s
        .range(RangeRequest {
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 5);
    let r = s
        .range(RangeRequest {
            limit: 5,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert!(!r.more);
    let r = s
        .range(RangeRequest {
            keys_only: true,
            ..range_req("a", "")
        })
        .unwrap();
    assert!(r.kvs[0].value.is_empty());
    assert_eq!(r.kvs[0].key, b"a");
    let r = s
        .range(RangeRequest {
            count_only: true,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 5);
}

#[test]
fn range_sort_orders_and_targets() {
    let s = abc_store();
    let sorted = |order: SortOrder, target: SortTarget| {
        s.keys(RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..range_req("a", "\0")
        })
    };
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Key),
        vec!["d", "c/1", "c", "b", "a"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Value),
        vec!["d", "c", "a", "b", "c/1"]
    );
    // A target without an order sorts ascending, as etcd does.
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Value),
        vec!["d", "c", "a", "b", "c/1"]
    );
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Mod)[0], "b");
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Version)[0], "b");
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Create),
        vec!["a", "b", "c", "c/1", "d"]
    );
    // limit applies after sorting
    let r = s
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            limit: 1,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(r.kvs[0].key, b"d");
    assert!(r.more);
    let bad = RangeRequest {
        sort_order: 9,
        ..range_req("a", "")
    };
    assert_eq!(
        s.range(bad).unwrap_err().to_string(),
        "etcdserver: invalid sort option"
    );
}

#[test]
fn range_revision_filters() {
    let s = abc_store(); // a:2 b:3->7 c:4 c/1:5 d:6
    let f = |req: RangeRequest| s.keys(RangeRequest { ..req });
    assert_eq!(
        f(RangeRequest {
            min_mod_revision: 6,
            ..range_req("a", "\0")
        }),
        vec!["b", "d"]
    );
    assert_eq!(
        f(RangeRequest {
            max_mod_revision: 3,
            ..range_req("a", "\0")
        }),
        vec!["a"]
    );
    assert_eq!(
        f(RangeRequest {
            min_create_revision: 4,
            ..range_req("a", "\0")
        }),
        vec!["c", "c/1", "d"]
    );
    assert_eq!(
        f(RangeRequest {
            max_create_revision: 3,
            ..range_req("a", "\0")
        }),
        vec!["a", "b"]
    );
    let r = s
        .range(RangeRequest {
            min_mod_revision: 6,
            limit: 1,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more), (1, true));
}

#[test]
fn range_at_past_future_and_compacted_revisions() {
    let s = abc_store();
    let r = s
        .range(RangeRequest {
            revision: 3,
            ..range_req("a", "\0")
        })
        .unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(r.kvs[1].value, b"1");
    assert_eq!(
        r.header.unwrap().revision,
        7,
        "header carries the current revision"
    );
    let err = s
        .range(RangeRequest {
            revision: 8,
            ..range_req("a", "")
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
}

#[test]
fn compaction_keeps_latest_versions_and_drops_the_rest() {
    let mut s = Store::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    s.put("b", "1"); // 4
    s.write(|w| {
        w.delete_range(&DeleteRangeRequest {
            key: "b".into(),
            ..Default::default()
        })
    })
    .unwrap(); // 5
    s.put("a", "3"); // 6
    let r = s
        .write(|w| {
            w.compact(&CompactionRequest {
                revision: 5,
                physical: true,
            })
        })
        .unwrap();
    assert_eq!(r.header.unwrap().revision, 6);
    assert_eq!(s.compacted, 5);
    // At the compaction revision itself reads still work.
    let at5 = s
        .range(RangeRequest {
            revision: 5,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(at5.kvs.len(), 1);
    assert_eq!(at5.kvs[0].value, b"2");
    let err = s
        .range(RangeRequest {
            revision: 4,
            ..range_req("a", "")
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // Physically: a@2 dropped, a@3 and a@6 kept, b's versions and tombstone gone.
    let versions: Vec<_> = s
        .map
        .keys()
        .filter(|k| k[0] == keys::KV_SPACE)
        .map(|k| keys::decode_version_key(k).unwrap())
        .collect();
    assert_eq!(versions, vec![(b"a".to_vec(), 3), (b"a".to_vec(), 6)]);
    assert!(s
        .map
        .keys()
        .filter(|k| k[0] == keys::HISTORY_SPACE)
        .all(|k| keys::decode_history_key(k).unwrap().0 >= 5));
    // Compacting again at or below the floor, or in the future, is refused.
    let e = s
        .write(|w| {
            w.compact(&CompactionRequest {
                revision: 5,
                physical: false,
            })
        })
        .unwrap_err();
    assert_eq!(e, MvccError::Compacted);
    let e = s
        .write(|w| {
            w.compact(&CompactionRequest {
                revision: 7,
                physical: false,
            })
        })
        .unwrap_err();
    assert_eq!(e, MvccError::FutureRevision);
    assert_eq!(s.get("a").unwrap().version, 3);
}

#[test]
fn txn_compares_every_target_and_result() {
    let mut s = Store::new();
    s.put("k", "m"); // rev 2, version 1
    let check = |s: &mut Store, c: Compare| {
        s.write(|w| {
            w.txn(&TxnRequest {
                compare: vec![c],
                ..Default::default()
            })
        })
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget as T;
    assert!(check(
        &mut s,
        cmp("k", T::Value, Equal, TargetUnion::Value("m".into()))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Value, Greater, TargetUnion::Value("a".into()))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Value, Less, TargetUnion::Value("z".into()))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Value, NotEqual, TargetUnion::Value("x".into()))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Version, Equal, TargetUnion::Version(1))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Create, Equal, TargetUnion::CreateRevision(2))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Mod, Less, TargetUnion::ModRevision(3))
    ));
    assert!(check(
        &mut s,
        cmp("k", T::Lease, Equal, TargetUnion::Lease(0))
    ));
    assert!(!check(
        &mut s,
        cmp("k", T::Version, Greater, TargetUnion::Version(1))
    ));
    // A missing key: version 0 matches, any value compare fails.
    assert!(check(
        &mut s,
        cmp("nope", T::Version, Equal, TargetUnion::Version(0))
    ));
    assert!(check(
        &mut s,
        cmp("nope", T::Create, Equal, TargetUnion::CreateRevision(0))
    ));
    assert!(!check(
        &mut s,
        cmp("nope", T::Value, NotEqual, TargetUnion::Value("x".into()))
    ));
    // A range compare must hold for every key in the range.
    s.put("k2", "m");
    let mut c = cmp("k", T::Value, Equal, TargetUnion::Value("m".into()));
    c.range_end = b"l".to_vec();
    assert!(check(&mut s, c.clone()));
    s.put("k3", "n");
    assert!(!check(&mut s, c));
}

#[test]
fn txn_branches_share_one_revision_and_see_their_own_writes() {
    let mut s = Store::new();
    s.put("x", "1"); // rev 2
    let req = TxnRequest {
        compare: vec![cmp(
            "x",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value("1".into()),
        )],
        success: vec![
            op_put("a", "1"),
            op_put("b", "2"),
            op_range("a"),
            op_del("x", ""),
        ],
        failure: vec![op_put("f", "1")],
    };
    let r = s.write(|w| w.txn(&req)).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    assert_eq!(s.rev, 3);
    let a = s.get("a").unwrap();
    let b = s.get("b").unwrap();
    assert_eq!((a.mod_revision, b.mod_revision), (3, 3));
    assert!(s.get("x").is_none());
    match &r.responses[2].response {
        Some(Response::ResponseRange(rr)) => assert_eq!(rr.kvs[0].value, b"1"),
        other => panic!("{other:?}"),
    }
    // The three changes of revision 3 are numbered 0, 1, 2 in history.
    let subs: Vec<_> = s
        .map
        .keys()
        .filter(|k| k[0] == keys::HISTORY_SPACE)
        .map(|k| keys::decode_history_key(k).unwrap())
        .filter(|(rev, _)| *rev == 3)
        .collect();
    assert_eq!(subs, vec![(3, 0), (3, 1), (3, 2)]);
    // Failure branch runs when the compare fails.
    let r = s.write(|w| w.txn(&req)).unwrap();
    assert!(!r.succeeded);
    assert!(s.get("f").is_some());
    // A txn that only reads does not move the revision.
    let before = s.rev;
    s.write(|w| {
        w.txn(&TxnRequest {
            success: vec![op_range("a")],
            ..Default::default()
        })
    })
    .unwrap();
    assert_eq!(s.rev, before);
}

#[test]
fn nested_txns_decide_branches_up_front() {
    let mut s = Store::new();
    s.put("x", "1");
    let inner = TxnRequest {
        // Evaluated against the state before the outer txn: x is still "1".
        compare: vec![cmp(
            "x",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value("1".into()),
        )],
        success: vec![op_put("inner-ok", "1")],
        failure: vec![op_put("inner-failed", "1")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("x", "2"),
            RequestOp {
                request: Some(Request::RequestTxn(inner)),
            },
        ],
        failure: vec![],
    };
    validate::check_txn(&outer).unwrap();
    let r = s.write(|w| w.txn(&outer)).unwrap();
    assert!(r.succeeded);
    assert!(s.get("inner-ok").is_some());
    assert!(s.get("inner-failed").is_none());
    assert_eq!(
        s.get("inner-ok").unwrap().mod_revision,
        s.get("x").unwrap().mod_revision
    );
}

#[test]
fn txn_failing_check_changes_nothing() {
    let mut s = Store::new();
    s.put("x", "1");
    let before = (s.rev, s.map.clone(), s.events.len());
    let req = TxnRequest {
        success: vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: "b".into(),
                    lease: 5,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.write(|w| w.txn(&req)).unwrap_err(),
        MvccError::LeaseNotFound
    );
    let req = TxnRequest {
        success: vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    revision: 99,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.write(|w| w.txn(&req)).unwrap_err(),
        MvccError::FutureRevision
    );
    assert_eq!((s.rev, s.map.clone(), s.events.len()), before);
}

#[test]
fn txn_validation_limits_and_duplicates() {
    let many: Vec<_> = (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect();
    let err = validate::check_txn(&TxnRequest {
        success: many.clone(),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: too many operations in txn request"
    );
    validate::check_txn(&TxnRequest {
        success: many[..128].to_vec(),
        ..Default::default()
    })
    .unwrap();
    let dup = |ops: Vec<RequestOp>| {
        validate::check_txn(&TxnRequest {
            success: ops,
            ..Default::default()
        })
    };
    assert_eq!(
        dup(vec![op_put("a", "1"), op_put("a", "2")])
            .unwrap_err()
            .to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(
        dup(vec![op_put("a/1", "1"), op_del("a/", "a0")]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_del("a", ""), op_put("a", "1")]),
        Err(MvccError::DuplicateKey)
    );
    // Overlapping deletes are fine; a put outside every delete is fine.
    dup(vec![op_del("a", "c"), op_del("b", "d"), op_put("z", "1")]).unwrap();
    // Nested: the inner put collides with the outer one.
    let nested = TxnRequest {
        success: vec![op_put("a", "1")],
        ..Default::default()
    };
    let err = dup(vec![
        op_put("a", "0"),
        RequestOp {
            request: Some(Request::RequestTxn(nested)),
        },
    ]);
    assert_eq!(err, Err(MvccError::DuplicateKey));
    // Success and failure branches are separate: the same key in both is fine.
    validate::check_txn(&TxnRequest {
        success: vec![op_put("a", "1")],
        failure: vec![op_put("a", "2")],
        ..Default::default()
    })
    .unwrap();
    // Empty keys anywhere are refused.
    let empty_cmp = TxnRequest {
        compare: vec![cmp(
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        ..Default::default()
    };
    assert_eq!(validate::check_txn(&empty_cmp), Err(MvccError::EmptyKey));
    assert_eq!(dup(vec![op_put("", "1")]), Err(MvccError::EmptyKey));
    // A nested txn shares the budget: 100 outer ops leave 28 for the inner one.
    let mut ops: Vec<_> = (0..100).map(|i| op_range(&format!("r{i}"))).collect();
    let inner = TxnRequest {
        success: (0..29).map(|i| op_range(&format!("i{i}"))).collect(),
        ..Default::default()
    };
    ops.push(RequestOp {
        request: Some(Request::RequestTxn(inner)),
    });
    assert_eq!(dup(ops), Err(MvccError::TooManyOps));
    assert!(validate::txn_is_read_only(&TxnRequest {
        success: vec![op_range("a")],
        ..Default::default()
    }));
    assert!(!validate::txn_is_read_only(&TxnRequest {
        failure: vec![op_del("a", "")],
        ..Default::default()
    }));
}

#[test]
fn keys_with_zero_bytes_and_many_versions() {
    let mut s = Store::new();
    for i in 0..50 {
        s.put("a\0b", &i.to_string());
    }
    s.put("a", "x");
    s.put("a\0", "y");
    assert_eq!(s.keys(range_req("a", "b")), vec!["a", "a\0", "a\0b"]);
    assert_eq!(s.get("a\0b").unwrap().version, 50);
    let r = s
        .range(RangeRequest {
            revision: 10,
            ..range_req("a\0b", "")
        })
        .unwrap();
    assert_eq!(r.kvs[0].value, b"8");
}

#[test]
fn history_replays_every_change_with_prev_kv_in_revision_order() {
    let mut s = Store::new();
    s.put("a", "1"); // 2
    s.write(|w| {
        w.txn(&TxnRequest {
            success: vec![op_put("b", "1"), op_put("c", "1")],
            ..Default::default()
        })
    })
    .unwrap(); // 3
    s.put("a", "2"); // 4
    s.write(|w| {
        w.delete_range(&DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
    })
    .unwrap(); // 5
    let (events, next) = read::history(&s.map, 2, 5, 100).unwrap();
    assert_eq!(next, 6);
    assert_eq!(events, s.events, "history equals what apply emitted");
    // A limit never splits a revision: the txn's two events come together.
    let (events, next) = read::history(&s.map, 2, 5, 2).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(next, 4);
    let (events, _) = read::history(&s.map, 4, 5, 100).unwrap();
    assert_eq!(events[1].r#type, EventType::Delete as i32);
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"2");
    assert!(read::history(&s.map, 6, 5, 10).unwrap().0.is_empty());
}
