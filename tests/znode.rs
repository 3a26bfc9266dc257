//! The znode namespace over gRPC against a 3-member cluster: create modes, stats, errors,
//! sequential names, sessions and ephemerals, containers and TTL nodes, watches, multi.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use corral::pb::corral::v1::op::Op as OpKind;
use corral::pb::corral::v1::op_result::Result as OpOutcome;
use corral::pb::corral::v1::sessions_client::SessionsClient;
use corral::pb::corral::v1::watch_request::Request as WatchReq;
use corral::pb::corral::v1::znodes_client::ZnodesClient;
use corral::pb::corral::v1::*;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type Z = ZnodesClient<Channel>;

async fn z(cluster: &Cluster, i: usize) -> Z {
    ZnodesClient::connect(cluster.endpoint(i)).await.unwrap()
}

async fn sessions(cluster: &Cluster, i: usize) -> SessionsClient<Channel> {
    SessionsClient::connect(cluster.endpoint(i)).await.unwrap()
}

fn create(path: &str, data: &str, mode: CreateMode) -> CreateRequest {
    CreateRequest {
        path: path.into(),
        data: data.into(),
        mode: mode as i32,
        ..Default::default()
    }
}

/// The ZooKeeper name in a status's ErrorInfo.
fn zk_name(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

async fn stat(c: &mut Z, path: &str) -> Option<Stat> {
    c.exists(ExistsRequest { path: path.into() })
        .await
        .unwrap()
        .into_inner()
        .stat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_modes_stats_and_errors_through_a_follower() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = z(&cluster, (leader + 1) % 3).await;

    tracing::info!("phase: persistent create and the full stat");
    let a = c
        .create(create("/app", "v0", CreateMode::Persistent))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.path, "/app");
    let s = a.stat.unwrap();
    assert_eq!((s.czxid, s.mzxid, s.pzxid), (a.zxid, a.zxid, a.zxid));
    assert_eq!(
        (s.version, s.cversion, s.aversion, s.ephemeral_owner),
        (0, 0, 0, 0)
    );
    assert_eq!((s.data_length, s.num_children), (2, 0));
    assert!(s.ctime > 0 && s.ctime == s.mtime);
    let got = c
        .get_data(GetDataRequest {
            path: "/app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, b"v0");
    assert_eq!(got.stat.unwrap(), s);
    assert!(got.zxid >= a.zxid);

    tracing::info!("phase: set data moves version, mzxid, mtime; not czxid or cversion");
    let set = c
        .set_data(SetDataRequest {
            path: "/app".into(),
            data: "v1".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let s2 = set.stat.unwrap();
    assert_eq!(
        (s2.version, s2.mzxid, s2.czxid, s2.cversion),
        (1, set.zxid, a.zxid, 0)
    );
    assert!(s2.mtime >= s.mtime);
    let e = c
        .set_data(SetDataRequest {
            path: "/app".into(),
            data: "v2".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), zk_name(&e).as_str()),
        (Code::FailedPrecondition, "BadVersion")
    );
    c.set_data(SetDataRequest {
        path: "/app".into(),
        data: "v2".into(),
        version: -1,
    })
    .await
    .unwrap();

    tracing::info!("phase: children move the parent's cversion, pzxid and numChildren");
    let child = c
        .create(create("/app/c1", "", CreateMode::Persistent))
        .await
        .unwrap()
        .into_inner();
    let p = stat(&mut c, "/app").await.unwrap();
    assert_eq!(
        (p.cversion, p.num_children, p.pzxid, p.version),
        (1, 1, child.zxid, 2)
    );
    assert_eq!(
        p.mzxid,
        s2.mzxid + 0.max(p.mzxid - s2.mzxid),
        "children do not touch mzxid"
    );
    let kids = c
        .get_children(GetChildrenRequest {
            path: "/app".into(),
            with_stats: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kids.children, vec!["c1"]);
    assert_eq!(kids.child_stats[0].czxid, child.zxid);
    let del = c
        .delete(DeleteRequest {
            path: "/app/c1".into(),
            version: -1,
            recursive: false,
        })
        .await
        .unwrap()
        .into_inner();
    let p = stat(&mut c, "/app").await.unwrap();
    assert_eq!((p.cversion, p.num_children, p.pzxid), (2, 0, del.zxid));

    tracing::info!("phase: errors carry the ZooKeeper name");
    let cases: Vec<(CreateRequest, Code, &str)> = vec![
        (
            create("/app", "", CreateMode::Persistent),
            Code::AlreadyExists,
            "NodeExists",
        ),
        (
            create("/nope/x", "", CreateMode::Persistent),
            Code::NotFound,
            "NoNode",
        ),
        (
            create("relative", "", CreateMode::Persistent),
            Code::InvalidArgument,
            "BadArguments",
        ),
        (
            create("/a/", "", CreateMode::Persistent),
            Code::InvalidArgument,
            "BadArguments",
        ),
        (
            create("/a//b", "", CreateMode::Persistent),
            Code::InvalidArgument,
            "BadArguments",
        ),
        (
            create("/a/../b", "", CreateMode::Persistent),
            Code::InvalidArgument,
            "BadArguments",
        ),
        (
            create("/eph", "", CreateMode::Ephemeral),
            Code::NotFound,
            "SessionExpired",
        ),
        (
            create("/ttl", "", CreateMode::PersistentWithTtl),
            Code::InvalidArgument,
            "BadArguments",
        ),
        (
            CreateRequest {
                path: "/big".into(),
                data: vec![0; 1024 * 1024 + 1],
                ..Default::default()
            },
            Code::InvalidArgument,
            "BadArguments",
        ),
    ];
    let before = stat(&mut c, "/").await.unwrap();
    for (req, code, name) in cases {
        let e = c.create(req.clone()).await.unwrap_err();
        assert_eq!(
            (e.code(), zk_name(&e).as_str()),
            (code, name),
            "{}: {}",
            req.path,
            e.message()
        );
        assert!(e.message().starts_with(name), "{}", e.message());
    }
    let e = c
        .get_data(GetDataRequest {
            path: "/missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(zk_name(&e), "NoNode");
    c.create(create("/app/x", "", CreateMode::Persistent))
        .await
        .unwrap();
    let e = c
        .delete(DeleteRequest {
            path: "/app".into(),
            version: -1,
            recursive: false,
        })
        .await
        .unwrap_err();
    assert_eq!(zk_name(&e), "NotEmpty");
    assert_eq!(
        stat(&mut c, "/").await.unwrap(),
        before,
        "failed creates changed nothing"
    );
    let exists = c
        .exists(ExistsRequest {
            path: "/missing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!exists.exists && exists.stat.is_none());

    tracing::info!("phase: recursive delete is atomic; make_parents creates the chain");
    c.create(CreateRequest {
        path: "/app/x/y/z".into(),
        make_parents: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = c
        .delete(DeleteRequest {
            path: "/app".into(),
            version: -1,
            recursive: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 4);
    assert!(stat(&mut c, "/app").await.is_none());

    tracing::info!("phase: the etcd API reads the tree but cannot write it");
    let mut etcd = cluster.client(leader).await;
    c.create(create("/visible", "hello", CreateMode::Persistent))
        .await
        .unwrap();
    let all = etcd
        .get(
            b"\x00zk/".to_vec(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(all.count() >= 1);
    for attempt in [
        etcd.put(b"\x00zk/\x00\x01/evil".to_vec(), "x", None)
            .await
            .map(|_| ()),
        etcd.delete(
            b"\x00".to_vec(),
            Some(etcd_client::DeleteOptions::new().with_from_key()),
        )
        .await
        .map(|_| ()),
    ] {
        match attempt {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                assert_eq!(s.code(), Code::InvalidArgument);
                assert!(s.message().contains("znode namespace"), "{}", s.message());
            }
            other => panic!("write into the znode keys must fail: {other:?}"),
        }
    }
    assert!(stat(&mut c, "/visible").await.is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequential_names_are_unique_and_increasing_under_concurrency() {
    let cluster = Cluster::start(3).await;
    let mut c = z(&cluster, 0).await;
    c.create(create("/q", "", CreateMode::Persistent))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut c = z(&cluster, i % 3).await;
        tasks.push(tokio::spawn(async move {
            c.create(create("/q/item-", "", CreateMode::PersistentSequential))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut made: Vec<(i64, String)> = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        made.push((r.zxid, r.path));
    }
    made.sort();
    let names: Vec<&String> = made.iter().map(|(_, p)| p).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 30, "unique");
    assert_eq!(names, sorted, "in zxid order the names increase");
    assert!(names.iter().all(|p| p.len() == "/q/item-".len() + 10));
    assert_eq!(names[0], "/q/item-0000000000");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemerals_go_with_their_session_on_close_and_on_expiry() {
    let cluster = Cluster::start(3).await;
    let mut c = z(&cluster, 1).await;
    let mut s = sessions(&cluster, 2).await;
    c.create(create("/members", "", CreateMode::Persistent))
        .await
        .unwrap();
    let open = s
        .open_session(OpenSessionRequest { timeout_ms: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.timeout_ms, 4000, "negotiated up to the minimum");
    let e1 = c
        .create(CreateRequest {
            path: "/members/m-".into(),
            mode: CreateMode::EphemeralSequential as i32,
            session_id: open.session_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e1.stat.unwrap().ephemeral_owner, open.session_id);
    let e = c
        .create(CreateRequest {
            path: format!("{}/child", e1.path),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(zk_name(&e), "NoChildrenForEphemerals");

    tracing::info!("phase: close deletes the ephemeral and updates the parent in one go");
    s.close_session(CloseSessionRequest {
        session_id: open.session_id,
    })
    .await
    .unwrap();
    assert!(stat(&mut c, &e1.path).await.is_none());
    let p = stat(&mut c, "/members").await.unwrap();
    assert_eq!((p.num_children, p.cversion), (0, 2));
    let closed_zxid = p.pzxid;
    assert!(closed_zxid > e1.zxid);
    let e = s
        .close_session(CloseSessionRequest {
            session_id: open.session_id,
        })
        .await
        .unwrap_err();
    assert_eq!(zk_name(&e), "SessionExpired");

    tracing::info!("phase: expiry does the same without anyone asking");
    let open = s
        .open_session(OpenSessionRequest { timeout_ms: 4000 })
        .await
        .unwrap()
        .into_inner();
    let e2 = c
        .create(CreateRequest {
            path: "/members/expiring".into(),
            mode: CreateMode::Ephemeral as i32,
            session_id: open.session_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    eventually("the session expires", Duration::from_secs(15), || {
        let mut c = c.clone();
        async move {
            stat(&mut c, "/members/expiring")
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    let p = stat(&mut c, "/members").await.unwrap();
    assert_eq!(p.num_children, 0);
    assert!(p.pzxid > e2.zxid);
    // Never readable again, on any member.
    for i in 0..3 {
        let mut ci = z(&cluster, i).await;
        assert!(stat(&mut ci, "/members/expiring").await.is_none());
        let kids = ci
            .get_children(GetChildrenRequest {
                path: "/members".into(),
                with_stats: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(kids.children.is_empty());
    }
    let e = c
        .create(CreateRequest {
            path: "/members/late".into(),
            mode: CreateMode::Ephemeral as i32,
            session_id: open.session_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(zk_name(&e), "SessionExpired");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_survives_leader_failover() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut s = sessions(&cluster, follower).await;
    let open = s
        .open_session(OpenSessionRequest { timeout_ms: 4000 })
        .await
        .unwrap()
        .into_inner();
    let mut c = z(&cluster, follower).await;
    c.create(CreateRequest {
        path: "/held".into(),
        mode: CreateMode::Ephemeral as i32,
        session_id: open.session_id,
        ..Default::default()
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = s
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let id = open.session_id;
    let pinger = tokio::spawn(async move {
        loop {
            if tx.send(KeepAliveRequest { session_id: id }).await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(10), replies.next()).await {
                Ok(Some(Ok(r))) => assert!(r.timeout_ms > 0, "session alive"),
                other => panic!("keep-alive failed: {other:?}"),
            }
            // A client's ping cadence: a third of the session timeout.
            tokio::time::sleep(Duration::from_millis(1300)).await;
        }
    });
    cluster.stop(leader).await;
    cluster.wait_leader_among(&[follower, other]).await;
    // Reconnect to another member within the timeout: the session and its ephemeral live on.
    let c2 = z(&cluster, other).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while tokio::time::Instant::now() < until {
        let s = eventually("read on the new majority", Duration::from_secs(10), || {
            let mut c2 = c2.clone();
            async move {
                c2.exists(ExistsRequest {
                    path: "/held".into(),
                })
                .await
                .ok()
                .map(|r| r.into_inner())
            }
        })
        .await;
        assert!(s.exists, "the ephemeral outlived the leader change");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pinger.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_and_ttl_nodes_are_reaped_by_the_leader() {
    let cluster = Cluster::start(3).await;
    let mut c = z(&cluster, 0).await;
    c.create(create("/box", "", CreateMode::Container))
        .await
        .unwrap();
    c.create(CreateRequest {
        path: "/tmp".into(),
        mode: CreateMode::PersistentWithTtl as i32,
        ttl_ms: 500,
        ..Default::default()
    })
    .await
    .unwrap();
    c.create(create("/box/item", "", CreateMode::Persistent))
        .await
        .unwrap();
    eventually("the TTL node goes", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move { stat(&mut c, "/tmp").await.is_none().then_some(()) }
    })
    .await;
    assert!(
        stat(&mut c, "/box").await.is_some(),
        "a container with a child stays"
    );
    c.delete(DeleteRequest {
        path: "/box/item".into(),
        version: -1,
        recursive: false,
    })
    .await
    .unwrap();
    eventually(
        "the emptied container goes",
        Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move { stat(&mut c, "/box").await.is_none().then_some(()) }
        },
    )
    .await;
    cluster.shutdown().await;
}

async fn watch_stream(
    cluster: &Cluster,
    i: usize,
) -> (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stream = z(cluster, i)
        .await
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

async fn add(
    tx: &tokio::sync::mpsc::Sender<WatchRequest>,
    id: i64,
    path: &str,
    kind: WatchKind,
    start: i64,
    read: bool,
) {
    tx.send(WatchRequest {
        request: Some(WatchReq::Add(AddWatch {
            watch_id: id,
            path: path.into(),
            kind: kind as i32,
            start_zxid: start,
            read,
        })),
    })
    .await
    .unwrap();
}

async fn next(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(15), s.next())
        .await
        .expect("in time")
        .unwrap()
        .unwrap()
}

fn ev(r: &WatchResponse) -> (i64, EventType, String) {
    let e = r.event.clone().unwrap();
    (r.watch_id, EventType::try_from(e.r#type).unwrap(), e.path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shot_persistent_and_recursive_watches_and_replay_after_reconnect() {
    let cluster = Cluster::start(3).await;
    let mut c = z(&cluster, 0).await;
    c.create(create("/w", "0", CreateMode::Persistent))
        .await
        .unwrap();
    let (tx, mut s) = watch_stream(&cluster, 1).await;

    tracing::info!("phase: a read with a watch, then one-shot semantics");
    add(&tx, 1, "/w", WatchKind::WatchData, 0, true).await;
    let ack = next(&mut s).await;
    assert!(ack.added && ack.exists);
    assert_eq!(ack.data, b"0");
    add(&tx, 2, "/w", WatchKind::WatchChildren, 0, true).await;
    assert!(next(&mut s).await.added);
    add(&tx, 3, "/w", WatchKind::WatchPersistent, 0, false).await;
    assert!(next(&mut s).await.added);
    add(&tx, 4, "/w", WatchKind::WatchPersistentRecursive, 0, false).await;
    assert!(next(&mut s).await.added);
    add(&tx, 5, "/w/new", WatchKind::WatchExists, 0, true).await;
    let ack = next(&mut s).await;
    assert!(ack.added && !ack.exists);

    c.set_data(SetDataRequest {
        path: "/w".into(),
        data: "1".into(),
        version: -1,
    })
    .await
    .unwrap();
    c.set_data(SetDataRequest {
        path: "/w".into(),
        data: "2".into(),
        version: -1,
    })
    .await
    .unwrap();
    c.create(create("/w/new", "", CreateMode::Persistent))
        .await
        .unwrap();
    c.create(create("/w/new/deep", "", CreateMode::Persistent))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(ev(&next(&mut s).await));
    }
    use EventType::*;
    let want = vec![
        (1, NodeDataChanged, "/w".to_string()),
        (3, NodeDataChanged, "/w".into()),
        (4, NodeDataChanged, "/w".into()),
        (3, NodeDataChanged, "/w".into()),
        (4, NodeDataChanged, "/w".into()),
        (2, NodeChildrenChanged, "/w".into()),
        (3, NodeChildrenChanged, "/w".into()),
        (4, NodeCreated, "/w/new".into()),
    ];
    // Within one zxid the order among watchers is by watch id; compare as multisets per zxid.
    let mut g = got.clone();
    let mut w = want.clone();
    g.sort();
    w.sort();
    assert_eq!(g, w, "got {got:?}");
    let deep = ev(&next(&mut s).await);
    let exists_fired = ev(&next(&mut s).await);
    let mut last_two = vec![deep, exists_fired];
    last_two.sort();
    assert_eq!(
        last_two,
        vec![
            (4, NodeCreated, "/w/new/deep".into()),
            (5, NodeCreated, "/w/new".into())
        ]
    );

    tracing::info!("phase: a client that reconnects with its last zxid misses nothing");
    let last_seen = c
        .exists(ExistsRequest { path: "/w".into() })
        .await
        .unwrap()
        .into_inner()
        .zxid;
    drop(tx);
    drop(s);
    c.set_data(SetDataRequest {
        path: "/w".into(),
        data: "offline".into(),
        version: -1,
    })
    .await
    .unwrap();
    c.delete(DeleteRequest {
        path: "/w/new".into(),
        version: -1,
        recursive: true,
    })
    .await
    .unwrap();
    let (tx, mut s) = watch_stream(&cluster, 2).await;
    add(
        &tx,
        9,
        "/w",
        WatchKind::WatchPersistentRecursive,
        last_seen + 1,
        false,
    )
    .await;
    assert!(next(&mut s).await.added);
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(ev(&next(&mut s).await));
    }
    missed.sort();
    assert_eq!(
        missed,
        vec![
            (9, NodeDeleted, "/w/new".into()),
            (9, NodeDeleted, "/w/new/deep".into()),
            (9, NodeDataChanged, "/w".into()),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_is_atomic_with_a_result_per_op() {
    let cluster = Cluster::start(3).await;
    let mut c = z(&cluster, 2).await;
    c.create(create("/m", "", CreateMode::Persistent))
        .await
        .unwrap();
    let op = |o| Op { op: Some(o) };
    let failed = c
        .multi(MultiRequest {
            ops: vec![
                op(OpKind::Create(create("/m/a", "", CreateMode::Persistent))),
                op(OpKind::SetData(SetDataRequest {
                    path: "/m".into(),
                    data: "x".into(),
                    version: 7,
                })),
                op(OpKind::Create(create("/m/b", "", CreateMode::Persistent))),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!failed.succeeded);
    let codes: Vec<String> = failed
        .results
        .iter()
        .map(|r| match r.result.clone().unwrap() {
            OpOutcome::Error(e) => e.code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, vec!["Ok", "BadVersion", "RuntimeInconsistency"]);
    assert!(stat(&mut c, "/m/a").await.is_none(), "nothing applied");
    let ok = c
        .multi(MultiRequest {
            ops: vec![
                op(OpKind::Create(create("/m/a", "", CreateMode::Persistent))),
                op(OpKind::SetData(SetDataRequest {
                    path: "/m".into(),
                    data: "x".into(),
                    version: 0,
                })),
                op(OpKind::Check(CheckRequest {
                    path: "/m/a".into(),
                    version: 0,
                })),
                op(OpKind::Delete(DeleteRequest {
                    path: "/m/a".into(),
                    version: 0,
                    recursive: false,
                })),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.succeeded);
    assert_eq!(ok.results.len(), 4);
    let m = stat(&mut c, "/m").await.unwrap();
    assert_eq!((m.version, m.mzxid, m.cversion), (1, ok.zxid, 2));
    let sync = c
        .sync(SyncRequest { path: "/m".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(sync.zxid >= ok.zxid);
    cluster.shutdown().await;
}
