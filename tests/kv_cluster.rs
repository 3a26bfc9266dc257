//! etcd's KV semantics through a real etcd client against a 3-member cluster, on the leader
//! and on followers alike.

mod common;

use common::Cluster;
use etcd_client::{
    CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn keys(resp: &etcd_client::GetResponse) -> Vec<String> {
    resp.kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_semantics_on_leader_and_followers() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    tracing::info!(
        leader,
        ?followers,
        "phase: every member serves writes and linearizable reads"
    );
    for i in [leader, followers[0], followers[1]] {
        let mut c = cluster.client(i).await;
        let p = format!("m{i}/");
        let put = c.put(format!("{p}a"), "1", None).await.unwrap();
        let h = put.header().unwrap();
        assert_eq!(h.cluster_id(), cluster.cluster_id());
        assert_eq!(h.member_id(), cluster.member_id(i));
        assert!(h.raft_term() >= 1);
        let rev = h.revision();
        // Read-your-writes on every other member, linearizably, right away.
        for j in 0..3 {
            let mut other = cluster.client(j).await;
            let got = other.get(format!("{p}a"), None).await.unwrap();
            assert_eq!(
                got.kvs()[0].value(),
                b"1",
                "member {j} sees the write through {i}"
            );
            assert!(got.header().unwrap().revision() >= rev);
        }
        // prev_kv, version, create/mod revision
        let put = c
            .put(
                format!("{p}a"),
                "2",
                Some(PutOptions::new().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(put.prev_key().unwrap().value(), b"1");
        let kv = c.get(format!("{p}a"), None).await.unwrap().kvs()[0].clone();
        assert_eq!((kv.version(), kv.create_revision()), (2, rev));
        assert_eq!(kv.mod_revision(), put.header().unwrap().revision());
        // ignore_value keeps the value
        c.put(
            format!("{p}a"),
            "",
            Some(PutOptions::new().with_ignore_value()),
        )
        .await
        .unwrap();
        let kv = c.get(format!("{p}a"), None).await.unwrap().kvs()[0].clone();
        assert_eq!((kv.value(), kv.version()), (&b"2"[..], 3));
        // A past revision still reads the old value.
        let old = c
            .get(format!("{p}a"), Some(GetOptions::new().with_revision(rev)))
            .await
            .unwrap();
        assert_eq!(old.kvs()[0].value(), b"1");
    }

    tracing::info!("phase: range forms through a follower");
    let mut c = cluster.client(followers[0]).await;
    for (k, v) in [("r/a", "3"), ("r/b", "1"), ("r/c", "2"), ("s", "0")] {
        c.put(k, v, None).await.unwrap();
    }
    let prefix = c
        .get("r/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(&prefix), vec!["r/a", "r/b", "r/c"]);
    assert_eq!(prefix.count(), 3);
    let from = c
        .get("r/b", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(&from), vec!["r/b", "r/c", "s"]);
    let span = c
        .get("r/a", Some(GetOptions::new().with_range("r/c")))
        .await
        .unwrap();
    assert_eq!(keys(&span), vec!["r/a", "r/b"]);
    let limited = c
        .get("r/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(
        (limited.kvs().len(), limited.more(), limited.count()),
        (2, true, 3)
    );
    let counted = c
        .get(
            "r/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!((counted.kvs().len(), counted.count()), (0, 3));
    let keys_only = c
        .get("r/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    let by_value = c
        .get(
            "r/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&by_value), vec!["r/a", "r/c", "r/b"]);
    let ra_rev = c.get("r/a", None).await.unwrap().kvs()[0].mod_revision();
    let newer = c
        .get(
            "r/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_mod_revision(ra_rev + 1),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&newer), vec!["r/b", "r/c"]);
    let serializable = cluster
        .client(followers[1])
        .await
        .get(
            "r/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await;
    assert!(serializable.is_ok());

    tracing::info!("phase: delete and txn through the other follower");
    let mut c = cluster.client(followers[1]).await;
    let del = c
        .delete(
            "r/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 3);
    assert_eq!(del.prev_kvs().len(), 3);
    assert!(c.get("r/a", None).await.unwrap().kvs().is_empty());
    let txn = Txn::new()
        .when([Compare::value("s", CompareOp::Equal, "0")])
        .and_then([
            TxnOp::put("t/1", "x", None),
            TxnOp::put("t/2", "y", None),
            TxnOp::get("t/1", None),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::version("t/1", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("t/nested-saw-missing", "1", None)]),
            ),
        ])
        .or_else([TxnOp::put("t/failed", "1", None)]);
    let resp = c.txn(txn).await.unwrap();
    assert!(resp.succeeded());
    let rev = resp.header().unwrap().revision();
    match &resp.op_responses()[2] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"x"),
        other => panic!("{other:?}"),
    }
    // Nested compares are decided against the state before the txn: t/1 was missing.
    let nested = c.get("t/nested-saw-missing", None).await.unwrap();
    assert_eq!(
        nested.kvs()[0].mod_revision(),
        rev,
        "all txn writes share one revision"
    );
    let resp = c
        .txn(
            Txn::new()
                .when([Compare::mod_revision("t/1", CompareOp::Greater, rev)])
                .and_then([TxnOp::delete("t/1", None)])
                .or_else([TxnOp::put("t/failed", "1", None)]),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded());
    assert_eq!(c.get("t/failed", None).await.unwrap().count(), 1);

    tracing::info!("phase: compaction");
    let mut c = cluster.client(leader).await;
    let now = c.get("s", None).await.unwrap().header().unwrap().revision();
    c.compact(now - 1, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    for i in 0..3 {
        cluster.wait_revision(i, now).await;
        let mut ci = cluster.client(i).await;
        let err = status(
            ci.get("s", Some(GetOptions::new().with_revision(now - 2)))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code(), Code::OutOfRange);
        assert_eq!(
            err.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        assert!(ci
            .get("s", Some(GetOptions::new().with_revision(now - 1)))
            .await
            .is_ok());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_etcd_errors_and_changes_nothing() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;
    c.put("keep", "1", None).await.unwrap();
    let before = c
        .get("keep", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    let expect = |r: Result<(), etcd_client::Error>, code: Code, msg: &str| {
        let s = status(r.unwrap_err());
        assert_eq!((s.code(), s.message()), (code, msg));
    };
    expect(
        c.put("", "v", None).await.map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    expect(
        c.get("", None).await.map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let big = vec![b'x'; 1536 * 1024 + 1];
    expect(
        c.put("big", big, None).await.map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    let many: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    expect(
        c.txn(Txn::new().and_then(many)).await.map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    expect(
        c.txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    expect(
        c.get("keep", Some(GetOptions::new().with_revision(before + 1000)))
            .await
            .map(|_| ()),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    expect(
        c.put("x", "v", Some(PutOptions::new().with_lease(12345)))
            .await
            .map(|_| ()),
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    expect(
        c.put("absent", "", Some(PutOptions::new().with_ignore_value()))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    // Compaction errors.
    c.compact(before, None).await.unwrap();
    expect(
        c.get("keep", Some(GetOptions::new().with_revision(before - 1)))
            .await
            .map(|_| ()),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    expect(
        c.compact(before, None).await.map(|_| ()),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    expect(
        c.compact(before + 1000, None).await.map(|_| ()),
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // Unknown members in membership calls.
    expect(
        c.member_remove(0xdead_beef).await.map(|_| ()),
        Code::NotFound,
        "etcdserver: member not found",
    );
    // Nothing above changed the store.
    let after = c.get("keep", None).await.unwrap();
    assert_eq!(after.header().unwrap().revision(), before);
    for k in ["", "big", "k0", "d", "x", "absent"] {
        if !k.is_empty() {
            assert_eq!(
                c.get(k, None).await.unwrap().count(),
                0,
                "{k} was not written"
            );
        }
    }
    // The members are all still serving.
    for i in 0..3 {
        assert!(cluster.client(i).await.get("keep", None).await.is_ok());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_list_and_status_are_real() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let c = cluster.client((leader + 1) % 3).await;
    // Client URLs are published through Raft shortly after start.
    let members = common::eventually(
        "every member published",
        std::time::Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move {
                let list = c.member_list().await.ok()?;
                let members = list.members().to_vec();
                members
                    .iter()
                    .all(|m| !m.client_urls().is_empty())
                    .then_some(members)
            }
        },
    )
    .await;
    assert_eq!(members.len(), 3);
    for i in 0..3 {
        let m = members
            .iter()
            .find(|m| m.id() == cluster.member_id(i))
            .unwrap();
        assert_eq!(m.name(), format!("m{i}"));
        assert_eq!(m.client_urls(), [cluster.endpoint(i)]);
        assert!(!m.is_learner());
    }
    for i in 0..3 {
        let status = cluster.client(i).await.status().await.unwrap();
        assert_eq!(status.leader(), cluster.member_id(leader));
        assert_eq!(status.header().unwrap().member_id(), cluster.member_id(i));
        assert!(status.raft_term() >= 1);
        assert!(status.raft_index() >= 1);
        assert!(status.db_size() > 0);
    }
    cluster.shutdown().await;
}
