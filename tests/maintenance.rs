//! Maintenance: backups (Snapshot → `corral snapshot restore` → a new cluster with the same
//! data and HashKV), HashKV agreement and errors, Defragment, and the space quota alarm
//! (writes refused with etcd's error until space is freed and the alarm cleared). All through
//! `etcd-client`, the `corral` binary and, for `snapshot save`, etcdctl.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use common::{eventually, http_get, serve_ops, Cluster};
use corral::config::ServeArgs;
use corral::node::{Listeners, Node};
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, DeleteOptions, GetOptions,
    PutOptions, Txn, TxnOp,
};
use tokio::net::TcpListener;

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The gRPC status inside an etcd-client error.
fn status(e: &etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Runs the `corral` binary to completion; returns (exit code, stdout, stderr).
async fn corral(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env_remove("CORRAL_ENDPOINTS")
        .output()
        .await
        .expect("run corral");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Streams a snapshot from `client`; checks the framing and returns (bytes, revision).
async fn stream_snapshot(client: &Client) -> (Vec<u8>, i64) {
    let mut stream = client
        .maintenance_client()
        .snapshot()
        .await
        .expect("snapshot");
    let mut bytes = Vec::new();
    let mut revision = None;
    let mut remaining = Vec::new();
    while let Some(resp) = stream.message().await.expect("snapshot chunk") {
        if revision.is_none() {
            revision = resp.header().map(|h| h.revision());
        }
        assert!(resp.blob().len() <= 32 * 1024, "chunks are etcd's 32 KiB");
        bytes.extend_from_slice(resp.blob());
        remaining.push(resp.remaining_bytes());
    }
    assert!(remaining.len() > 1, "more than one chunk: {remaining:?}");
    assert!(remaining.windows(2).all(|w| w[0] > w[1]), "{remaining:?}");
    assert_eq!(remaining.last(), Some(&0));
    assert_eq!(remaining[0] as usize, bytes.len() - 32 * 1024);
    // etcdctl's check: data padded to 512-byte sectors, then a 32-byte sha256.
    assert_eq!(bytes.len() % 512, 32);
    (bytes, revision.expect("the first chunk carries a header"))
}

/// A single-member cluster started in-process on a restored data dir.
struct Restored {
    node: Node,
    endpoint: String,
    /// r0's peer URL, for members that join later.
    peer_url: String,
}

/// Restores `file` with the CLI into `data_dir`, then starts member `r0` on it.
async fn restore_and_start(file: &Path, data_dir: &Path) -> Restored {
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (c, p) = (client.local_addr().unwrap(), peer.local_addr().unwrap());
    let cluster_flags = [
        "--name=r0".to_string(),
        format!("--data-dir={}", data_dir.display()),
        format!("--initial-cluster=r0=http://{p}"),
        format!("--initial-advertise-peer-urls=http://{p}"),
        "--initial-cluster-token=restored".to_string(),
    ];
    let mut restore = vec!["snapshot", "restore", file.to_str().unwrap()];
    restore.extend(cluster_flags.iter().map(String::as_str));
    let (code, out, err) = corral(&restore).await;
    assert_eq!(code, 0, "restore failed: {out}{err}");
    assert!(out.starts_with("Restored "), "{out}");
    // A second restore into the same directory is refused and changes nothing.
    let (code, _, err) = corral(&restore).await;
    assert_eq!(code, 1);
    assert!(err.contains("exists and is not empty"), "{err}");

    let mut serve = vec![
        "corral".to_string(),
        format!("--listen-client-urls=http://{c}"),
        format!("--advertise-client-urls=http://{c}"),
        format!("--listen-peer-urls=http://{p}"),
        "--listen-metrics-urls=".to_string(),
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
    ];
    serve.extend(cluster_flags);
    let cfg = Args::try_parse_from(serve)
        .expect("args")
        .serve
        .validate()
        .expect("valid config");
    let node = Node::start(
        cfg,
        Listeners {
            client: vec![client],
            peer,
            metrics: None,
        },
    )
    .await
    .expect("restored member starts");
    eventually(
        "the restored member leads its cluster",
        Duration::from_secs(20),
        || async { (node.handle.leader() == Some(node.id())).then_some(()) },
    )
    .await;
    Restored {
        node,
        endpoint: format!("http://{c}"),
        peer_url: format!("http://{p}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_into_a_new_cluster_with_the_same_data_and_hash() {
    let cluster = Cluster::start(3).await;
    let mut kv = cluster.client(0).await;
    // Enough data for many 32 KiB chunks, a deletion, a compaction and a leased key.
    for i in 0..200 {
        kv.put(format!("k{i:03}"), vec![b'v'; 1024], None)
            .await
            .expect("put");
    }
    kv.put("gone", "x", None).await.expect("put");
    kv.delete("gone", None).await.expect("delete");
    let compact_at = kv.put("k000", "v2", None).await.expect("put");
    let compact_at = compact_at.header().unwrap().revision();
    kv.compact(compact_at - 1, None).await.expect("compact");
    let lease = kv.lease_grant(600, None).await.expect("grant").id();
    kv.put("leased", "y", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    let rev = kv
        .get("k000", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    // A follower's backup: every member holds the same data.
    let follower = (0..3)
        .find(|&i| cluster.leader_seen_by(i) != Some(i))
        .unwrap();
    cluster.wait_revision(follower, rev).await;
    let (bytes, snap_rev) = stream_snapshot(&cluster.client(follower).await).await;
    assert_eq!(snap_rev, rev);

    let dir = tempfile::tempdir().unwrap();
    let streamed = dir.path().join("streamed.db");
    std::fs::write(&streamed, &bytes).unwrap();
    // `corral snapshot save` writes the same kind of file and reports what it holds.
    let saved = dir.path().join("saved.db");
    let ep = cluster.endpoint(follower);
    let (code, out, err) = corral(&[
        "snapshot",
        "save",
        saved.to_str().unwrap(),
        "--endpoints",
        &ep,
        "-w",
        "json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["revision"], rev);
    let saved_len = std::fs::metadata(&saved).unwrap().len();
    assert_eq!(report["size"], saved_len);

    let original = cluster.hash_kv(follower, rev).await;
    assert_eq!(original.1, rev);
    assert_eq!(original.2, compact_at - 1);
    // The file's status reports the same HashKV.
    let (code, out, err) =
        corral(&["snapshot", "status", saved.to_str().unwrap(), "-w", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(st["hash"], original.0);
    assert_eq!(st["revision"], rev);
    assert_eq!(report["hash"], original.0);

    // A damaged file is refused before anything is written.
    let mut damaged = bytes.clone();
    damaged[100] ^= 0xff;
    let bad = dir.path().join("damaged.db");
    std::fs::write(&bad, &damaged).unwrap();
    let target = dir.path().join("never");
    let (code, _, err) = corral(&[
        "snapshot",
        "restore",
        bad.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!target.exists());

    let restored = restore_and_start(&streamed, &dir.path().join("r0")).await;
    let mut c = Client::connect([restored.endpoint.clone()], None)
        .await
        .expect("connect");
    let h = c.maintenance_client().hash_kv(rev).await.expect("hash_kv");
    assert_eq!((h.hash(), h.hash_revision(), h.compact_version()), original);
    let st = c.maintenance_client().status().await.expect("status");
    assert!(st.errors().is_empty(), "{:?}", st.errors());

    // The data, history and leases came along; the members did not.
    let got = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 200);
    assert_eq!(got.kvs()[0].value(), b"v2");
    assert_eq!(got.header().unwrap().revision(), rev);
    assert!(c.get("gone", None).await.unwrap().kvs().is_empty());
    let leased = c.get("leased", None).await.unwrap();
    assert_eq!(leased.kvs()[0].lease(), lease);
    assert!(c.lease_time_to_live(lease, None).await.unwrap().ttl() > 0);
    let past = c
        .get(
            "k000",
            Some(GetOptions::new().with_revision(compact_at - 1)),
        )
        .await
        .unwrap();
    assert_eq!(past.kvs()[0].value(), vec![b'v'; 1024].as_slice());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "r0");

    // Revisions continue from the backup's.
    let put = c.put("after", "restore", None).await.expect("put");
    assert_eq!(put.header().unwrap().revision(), rev + 1);

    // A member that joins later gets the restored data too (by snapshot: the log the new
    // cluster wrote does not hold it).
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (lc, lp) = (client.local_addr().unwrap(), peer.local_addr().unwrap());
    let data = dir.path().join("r1");
    let cfg = Args::try_parse_from([
        "corral".to_string(),
        "--name=r1".to_string(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://{lc}"),
        format!("--advertise-client-urls=http://{lc}"),
        format!("--listen-peer-urls=http://{lp}"),
        format!("--initial-advertise-peer-urls=http://{lp}"),
        format!("--initial-cluster=r0={}", restored.peer_url),
        "--initial-cluster-token=restored".to_string(),
        "--auto-learner".to_string(),
        "--listen-metrics-urls=".to_string(),
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
    ])
    .expect("args")
    .serve
    .validate()
    .expect("valid config");
    let learner = Node::start(
        cfg,
        Listeners {
            client: vec![client],
            peer,
            metrics: None,
        },
    )
    .await
    .expect("learner starts");
    let mut l = Client::connect([format!("http://{lc}")], None)
        .await
        .expect("connect");
    eventually(
        "the learner has the restored data and the later write",
        Duration::from_secs(30),
        || {
            let mut l = l.clone();
            async move {
                let opts = GetOptions::new().with_serializable();
                let got = l.get("after", Some(opts)).await.ok()?;
                (got.kvs().len() == 1).then_some(())
            }
        },
    )
    .await;
    let opts = GetOptions::new().with_prefix().with_serializable();
    assert_eq!(l.get("k", Some(opts)).await.unwrap().kvs().len(), 200);
    let h = l.maintenance_client().hash_kv(rev).await.expect("hash_kv");
    assert_eq!((h.hash(), h.hash_revision(), h.compact_version()), original);

    learner.stop().await;
    restored.node.stop().await;
    cluster.shutdown().await;
}

/// Restores `file` into `n` founding members (the same file into each, as
/// docs/operations.md says) and starts them as one new cluster; returns their endpoints, once
/// every member knows the same leader.
async fn restore_cluster(file: &Path, dir: &Path, n: usize) -> (Vec<Node>, Vec<String>) {
    let mut bound = Vec::new();
    for _ in 0..n {
        let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        bound.push((client, peer));
    }
    let initial: Vec<String> = bound
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("r{i}=http://{}", p.local_addr().unwrap()))
        .collect();
    let initial = initial.join(",");
    let mut starting = Vec::new();
    let mut endpoints = Vec::new();
    for (i, (client, peer)) in bound.into_iter().enumerate() {
        let (c, p) = (client.local_addr().unwrap(), peer.local_addr().unwrap());
        let cluster_flags = [
            format!("--name=r{i}"),
            format!("--data-dir={}", dir.join(format!("r{i}")).display()),
            format!("--initial-cluster={initial}"),
            format!("--initial-advertise-peer-urls=http://{p}"),
            "--initial-cluster-token=restored-3".to_string(),
        ];
        let mut restore = vec!["snapshot", "restore", file.to_str().unwrap()];
        restore.extend(cluster_flags.iter().map(String::as_str));
        let (code, out, err) = corral(&restore).await;
        assert_eq!(code, 0, "restore of r{i} failed: {out}{err}");
        let mut serve = vec![
            "corral".to_string(),
            format!("--listen-client-urls=http://{c}"),
            format!("--advertise-client-urls=http://{c}"),
            format!("--listen-peer-urls=http://{p}"),
            "--listen-metrics-urls=".to_string(),
            "--heartbeat-interval=50".to_string(),
            "--election-timeout=500".to_string(),
        ];
        serve.extend(cluster_flags);
        let cfg = Args::try_parse_from(serve)
            .expect("args")
            .serve
            .validate()
            .expect("valid config");
        let listeners = Listeners {
            client: vec![client],
            peer,
            metrics: None,
        };
        // Every founder starts before any is waited on: they need each other to elect.
        starting.push(tokio::spawn(Node::start(cfg, listeners)));
        endpoints.push(format!("http://{c}"));
    }
    let mut nodes = Vec::new();
    for task in starting {
        nodes.push(task.await.expect("join").expect("restored member starts"));
    }
    eventually(
        "the restored members agree on a leader",
        Duration::from_secs(30),
        || {
            let leaders: Vec<_> = nodes.iter().map(|n| n.handle.leader()).collect();
            async move {
                let first = leaders[0]?;
                leaders.iter().all(|l| *l == Some(first)).then_some(())
            }
        },
    )
    .await;
    (nodes, endpoints)
}

/// A backup streamed while writes and a compaction run is one consistent revision: restored
/// into three founding members, each has the original's HashKV at that revision (once
/// compacted as far as the original, if the backup was cut before the compaction applied),
/// and the restored cluster replicates new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_writes_and_compaction_restores_into_three_members() {
    let cluster = Cluster::start(3).await;
    let mut kv = cluster.client(0).await;
    for i in 0..300 {
        kv.put(format!("k{:03}", i % 150), vec![b'v'; 512], None)
            .await
            .expect("put");
    }

    // Writes through another member for as long as the backup streams.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut w = cluster.client(1).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.put(format!("k{:03}", n % 150), format!("w{n}"), None)
                    .await
                    .expect("put during the backup");
                n += 1;
            }
            n
        })
    };

    let follower = (0..3)
        .find(|&i| cluster.leader_seen_by(i) != Some(i))
        .unwrap();
    let backup = cluster.client(follower).await;
    let mut stream = backup
        .maintenance_client()
        .snapshot()
        .await
        .expect("snapshot");
    let first = stream
        .message()
        .await
        .expect("first chunk")
        .expect("a first chunk");
    let rev = first.header().expect("header").revision();
    // Compact below the backup's revision while it streams.
    let compact_at = rev - 50;
    kv.compact(compact_at, None).await.expect("compact");
    let mut bytes = first.blob().to_vec();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        bytes.extend_from_slice(chunk.blob());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 0, "the writer ran during the backup");

    let original = cluster.hash_kv(follower, rev).await;
    assert_eq!(original.2, compact_at);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    std::fs::write(&file, &bytes).unwrap();
    let (nodes, endpoints) = restore_cluster(&file, dir.path(), 3).await;
    let mut restored = Client::connect(endpoints.clone(), None)
        .await
        .expect("connect");
    let compacted = restored
        .maintenance_client()
        .hash_kv(rev)
        .await
        .expect("hash_kv")
        .compact_version();
    // The backup holds the store either side of the compaction; both are consistent.
    assert!(compacted <= compact_at, "{compacted}");
    if compacted < compact_at {
        restored.compact(compact_at, None).await.expect("compact");
    }
    for ep in &endpoints {
        let mut m = Client::connect([ep.clone()], None)
            .await
            .expect("connect")
            .maintenance_client();
        let h = eventually(
            &format!("{ep} compacted to {compact_at}"),
            Duration::from_secs(20),
            || {
                let mut m = m.clone();
                async move {
                    let h = m.hash_kv(rev).await.ok()?;
                    (h.compact_version() == compact_at).then_some(h)
                }
            },
        )
        .await;
        assert_eq!(
            (h.hash(), h.hash_revision(), h.compact_version()),
            original,
            "restored member {ep}"
        );
        m.status().await.expect("status");
    }

    // The three restored founders are one cluster: a write lands on every one of them.
    let put = restored.put("after", "restore", None).await.expect("put");
    assert_eq!(put.header().unwrap().revision(), rev + 1);
    for ep in &endpoints {
        let mut c = Client::connect([ep.clone()], None).await.expect("connect");
        eventually(
            &format!("{ep} has the write made after the restore"),
            Duration::from_secs(20),
            || {
                let mut c = c.clone();
                async move {
                    let opts = GetOptions::new().with_serializable();
                    let got = c.get("after", Some(opts)).await.ok()?;
                    (got.kvs().len() == 1).then_some(())
                }
            },
        )
        .await;
        let members = c.member_list().await.expect("member list");
        assert_eq!(members.members().len(), 3);
    }

    for node in nodes {
        node.stop().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_agrees_on_every_member_and_refuses_bad_revisions() {
    let cluster = Cluster::start(3).await;
    let mut kv = cluster.client(0).await;
    for i in 0..20 {
        kv.put(format!("key{i}"), format!("value{i}"), None)
            .await
            .unwrap();
    }
    kv.delete("key1", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let mid = kv
        .put("mid", "m", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(5, None).await.unwrap();
    let last = kv
        .put("last", "l", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    for rev in [mid, last] {
        let first = cluster.hash_kv(0, rev).await;
        assert_eq!(first.1, rev);
        assert_eq!(first.2, 5);
        for i in 1..3 {
            assert_eq!(cluster.hash_kv(i, rev).await, first, "member {i} at {rev}");
        }
    }
    assert_ne!(
        cluster.hash_kv(0, mid).await.0,
        cluster.hash_kv(0, last).await.0
    );
    // 0 means the current revision.
    let mut m = cluster.client(1).await.maintenance_client();
    cluster.wait_revision(1, last).await;
    let now = m.hash_kv(0).await.unwrap();
    assert_eq!(now.hash_revision(), last);
    assert_eq!(now.hash(), cluster.hash_kv(1, last).await.0);

    let future = m.hash_kv(last + 100).await.unwrap_err();
    assert_eq!(
        status(&future),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_string()
        )
    );
    let compacted = m.hash_kv(3).await.unwrap_err();
    assert_eq!(
        status(&compacted),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string()
        )
    );

    // Hash and Defragment answer too.
    m.hash().await.expect("hash");
    m.defragment().await.expect("defragment");
    assert_eq!(
        kv.get("last", None).await.unwrap().kvs()[0].value(),
        b"l",
        "data is intact after defragment"
    );
    cluster.shutdown().await;
}

/// Every NOSPACE alarm any member of the cluster reports.
async fn nospace_alarms(client: &Client) -> Vec<u64> {
    client
        .maintenance_client()
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list")
        .alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| a.member_id())
        .collect()
}

async fn disarm(client: &Client, members: &[u64]) {
    for &id in members {
        let mut opts = AlarmOptions::new();
        opts.with_member(id);
        client
            .maintenance_client()
            .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
            .await
            .expect("deactivate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_alarm_blocks_writes_until_space_is_freed_and_it_is_cleared() {
    const QUOTA: i64 = 256 * 1024;
    let cluster = Cluster::start_with(3, &["--quota-backend-bytes=262144"]).await;
    let mut kv = cluster.client(1).await;
    let st = kv.maintenance_client().status().await.unwrap();
    assert_eq!(st.db_size_quota(), QUOTA);

    // Write until the alarm is raised and a put fails with etcd's error.
    let value = vec![b'x'; 8 * 1024];
    let mut written = 0;
    let err = loop {
        match kv
            .put(format!("big{written:04}"), value.clone(), None)
            .await
        {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 2000, "the quota never took effect");
    };
    assert_eq!(
        status(&err),
        (tonic::Code::ResourceExhausted, NOSPACE.to_string())
    );
    assert!(
        written * 8 * 1024 >= QUOTA as usize / 2,
        "refused too early: {written}"
    );
    let alarmed = nospace_alarms(&kv).await;
    assert!(!alarmed.is_empty());
    // Every member knows, and says so in its status and, as etcd's does, on /health.
    for i in 0..3 {
        let ops = serve_ops(cluster.node(i)).await;
        eventually(
            "/health reports the alarm",
            Duration::from_secs(10),
            || async {
                let (code, body) = http_get(ops, "/health").await;
                (code == 503 && body.contains("ALARM NOSPACE")).then_some(())
            },
        )
        .await;
        let c = cluster.client(i).await;
        eventually(
            "every member lists the alarm",
            Duration::from_secs(10),
            || {
                let c = c.clone();
                async move { (!nospace_alarms(&c).await.is_empty()).then_some(()) }
            },
        )
        .await;
        let st = c.maintenance_client().status().await.unwrap();
        assert!(
            st.errors().iter().any(|e| e.contains("alarm:NOSPACE")),
            "{:?}",
            st.errors()
        );
        assert!(st.raft_used_db_size() > QUOTA, "{}", st.raft_used_db_size());
        // Refused on every member, followers too.
        let e = c.clone().put("more", "x", None).await.unwrap_err();
        assert_eq!(
            status(&e),
            (tonic::Code::ResourceExhausted, NOSPACE.to_string())
        );
    }
    let txn_put = Txn::new()
        .when([Compare::version("big0000", CompareOp::Greater, 0)])
        .and_then([TxnOp::get("big0000", None)])
        .or_else([TxnOp::put("other", "x", None)]);
    let e = kv.txn(txn_put).await.unwrap_err();
    assert_eq!(
        status(&e),
        (tonic::Code::ResourceExhausted, NOSPACE.to_string())
    );
    let e = kv.lease_grant(60, None).await.unwrap_err();
    assert_eq!(
        status(&e),
        (tonic::Code::ResourceExhausted, NOSPACE.to_string())
    );

    // Reads, deletes (a txn of deletes too) and compaction still work.
    let got = kv.get("big0000", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), value.as_slice());
    let txn_del = Txn::new().and_then([TxnOp::delete("big0000", None)]);
    assert!(kv.txn(txn_del).await.unwrap().succeeded());

    // Clearing while still over the quota: the alarm comes back.
    disarm(&kv, &alarmed).await;
    eventually("the alarm is raised again", Duration::from_secs(10), || {
        let kv = kv.clone();
        async move { (!nospace_alarms(&kv).await.is_empty()).then_some(()) }
    })
    .await;

    let del = kv
        .delete("big", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(del.deleted(), written as i64 - 1);
    let rev = del.header().unwrap().revision();
    kv.compact(rev, None)
        .await
        .expect("compact under the alarm");
    for i in 0..3 {
        cluster.wait_revision(i, rev).await;
        let mut m = cluster.client(i).await.maintenance_client();
        eventually("space is freed", Duration::from_secs(10), || {
            let mut m = m.clone();
            async move { (m.status().await.ok()?.raft_used_db_size() < QUOTA / 4).then_some(()) }
        })
        .await;
        m.defragment().await.expect("defragment");
    }

    let alarmed = nospace_alarms(&kv).await;
    disarm(&kv, &alarmed).await;
    for i in 0..3 {
        let c = cluster.client(i).await;
        eventually(
            "the alarm is cleared everywhere",
            Duration::from_secs(10),
            || {
                let c = c.clone();
                async move { nospace_alarms(&c).await.is_empty().then_some(()) }
            },
        )
        .await;
    }
    kv.put("after", "cleared", None)
        .await
        .expect("puts work again");
    let ops = serve_ops(cluster.node(1)).await;
    let (code, body) = http_get(ops, "/health").await;
    assert_eq!(code, 200, "healthy again: {body}");
    kv.lease_grant(60, None)
        .await
        .expect("lease grants work again");
    let st = kv.maintenance_client().status().await.unwrap();
    assert!(st.errors().is_empty(), "{:?}", st.errors());
    cluster.shutdown().await;
}

fn etcdctl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CORRAL_ETCDCTL") {
        return Some(PathBuf::from(p));
    }
    let tools = std::env::var_os("CORRAL_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/corral-test-tools"))
        });
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(tools.map(|t| t.join("bin")))
        .map(|d| d.join("etcdctl"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_writes_a_restorable_file() {
    let etcdctl = etcdctl()
        .expect("`etcdctl` is not installed: run scripts/install-test-tools.sh (`make test` does)");
    let cluster = Cluster::start(1).await;
    let mut kv = cluster.client(0).await;
    for i in 0..50 {
        kv.put(format!("e{i}"), vec![b'e'; 2048], None)
            .await
            .unwrap();
    }
    let rev = kv
        .get("e0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcdctl.db");
    let (ok, text) = run_etcdctl(
        &etcdctl,
        &cluster.endpoint(0),
        &["snapshot", "save", file.to_str().unwrap()],
    )
    .await;
    assert!(ok, "etcdctl snapshot save failed: {text}");
    assert!(text.contains("Snapshot saved at"), "{text}");
    let (code, out, err) =
        corral(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(st["revision"], rev);
    assert_eq!(st["hash"], cluster.hash_kv(0, rev).await.0);

    let restored = restore_and_start(&file, &dir.path().join("from-etcdctl")).await;
    let mut c = Client::connect([restored.endpoint.clone()], None)
        .await
        .unwrap();
    let got = c
        .get("e", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(got.count(), 50);
    restored.node.stop().await;
    cluster.shutdown().await;
}

/// Runs etcdctl (API v3) against `endpoint`; returns (success, stdout + stderr).
async fn run_etcdctl(etcdctl: &Path, endpoint: &str, args: &[&str]) -> (bool, String) {
    // host:port, as etcdctl users write it: etcdctl 3.4 sends an `http://` endpoint as the
    // HTTP/2 :authority of its per-endpoint calls (defrag, endpoint status), which hyper
    // rejects as malformed.
    let endpoint = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let out = tokio::process::Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=20s")
        .args(args)
        .output()
        .await
        .expect("run etcdctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lists_and_disarms_the_quota_alarm() {
    let etcdctl = etcdctl()
        .expect("`etcdctl` is not installed: run scripts/install-test-tools.sh (`make test` does)");
    let cluster = Cluster::start_with(1, &["--quota-backend-bytes=65536"]).await;
    let ep = cluster.endpoint(0);
    let mut kv = cluster.client(0).await;
    let mut n = 0;
    while kv
        .put(format!("f{n:04}"), vec![b'f'; 4096], None)
        .await
        .is_ok()
    {
        n += 1;
        assert!(n < 5000, "the quota never took effect");
    }
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["put", "one", "more"]).await;
    assert!(!ok);
    assert!(text.contains(NOSPACE), "{text}");
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["alarm", "list"]).await;
    assert!(ok, "{text}");
    let id = cluster.member_id(0);
    assert!(
        text.contains(&format!("memberID:{id} alarm:NOSPACE")),
        "{text}"
    );

    let del = kv
        .delete("f", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    kv.compact(del.header().unwrap().revision(), None)
        .await
        .unwrap();
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["defrag"]).await;
    assert!(ok, "{text}");
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["alarm", "disarm"]).await;
    assert!(ok, "{text}");
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["alarm", "list"]).await;
    assert!(ok && text.trim().is_empty(), "{text}");
    let (ok, text) = run_etcdctl(&etcdctl, &ep, &["put", "one", "more"]).await;
    assert!(ok, "{text}");
    cluster.shutdown().await;
}
