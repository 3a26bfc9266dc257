//! `/metrics`: scraped over HTTP from real members while real clients drive them. Each member
//! of an in-process cluster gets its own ops server (the harness runs without metrics
//! listeners), which also shows the values are per member; a single member started with a
//! metrics listener checks the port `corral serve` opens.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::{eventually, http_get, http_get_with_head, serve_ops, Cluster};
use corral::config::ServeArgs;
use corral::metrics::GRPC_CODES;
use corral::node::{Listeners, Node};
use corral::pb::corral::v1::sessions_client::SessionsClient;
use corral::pb::corral::v1::{CloseSessionRequest, KeepAliveRequest, OpenSessionRequest};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

type Labels = Vec<(String, String)>;

/// One scrape, parsed. Parsing also checks the format: every sample belongs to a family
/// declared by a `# TYPE` line before it.
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    types: BTreeMap<String, String>,
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label value opens with a quote");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (
                    name,
                    parse_labels(labels.strip_suffix('}').expect("labels close")),
                ),
                None => (series, BTreeMap::new()),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                types.contains_key(family),
                "sample {name} has no TYPE line before it"
            );
            samples.push((name.to_string(), labels, value));
        }
        Scrape { samples, types }
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Like [`Scrape::get`], 0 when absent (counters not yet incremented are not exported).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Sum over every sample `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn must(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("{name} is exported"))
    }

    /// Every histogram series is well formed: buckets cumulative, `+Inf` equal to `_count`.
    fn check_histograms(&self) {
        for (name, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket = format!("{name}_bucket");
            // Labels without `le` → (le, cumulative count) per bucket.
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for (n, l, v) in &self.samples {
                if *n != bucket {
                    continue;
                }
                let le = l["le"].clone();
                let key: Labels = l
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("numeric le")
                };
                series.entry(key).or_default().push((le, *v));
            }
            for (key, buckets) in series {
                assert!(
                    buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{name} {key:?}: buckets ascend and are cumulative: {buckets:?}"
                );
                let labels: Vec<(&str, &str)> =
                    key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let count = self.get(&format!("{name}_count"), &labels);
                assert_eq!(
                    buckets.last().map(|b| b.1),
                    count,
                    "{name} {key:?}: +Inf bucket equals _count"
                );
            }
        }
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = http_get_with_head(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics answers: {body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "Prometheus text content type: {head}"
    );
    let s = Scrape::parse(&body);
    s.check_histograms();
    s
}

/// Polls member `addr`'s metrics until `ok` holds of a scrape.
async fn scrape_until(addr: SocketAddr, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(what, WAIT, || async {
        let s = scrape(addr).await;
        ok(&s).then_some(s)
    })
    .await
}

const KV_PUT: [(&str, &str); 2] = [("grpc_service", "etcdserverpb.KV"), ("grpc_method", "Put")];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_a_three_member_cluster() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_leader().await;
    let mut ops = Vec::new();
    for i in 0..3 {
        ops.push(serve_ops(cluster.node(i)).await);
    }
    let addr = |i: usize| ops[i];

    // Raft: one leader, known to all, in one term. Polled as a whole: on a busy machine a
    // second election can follow the first, and the members briefly disagree meanwhile.
    let all: Vec<SocketAddr> = ops.clone();
    let before = eventually("one leader, known to all, in one term", WAIT, || {
        let all = all.clone();
        async move {
            let mut scrapes = Vec::new();
            for a in all {
                scrapes.push(scrape(a).await);
            }
            let leaders: f64 = scrapes
                .iter()
                .map(|s| s.must("corral_raft_is_leader"))
                .sum();
            let term = scrapes[0].must("corral_raft_term");
            let agreed = leaders == 1.0
                && scrapes.iter().all(|s| {
                    s.must("corral_raft_has_leader") == 1.0 && s.must("corral_raft_term") == term
                });
            agreed.then_some(scrapes)
        }
    })
    .await;
    let leader = before
        .iter()
        .position(|s| s.must("corral_raft_is_leader") == 1.0)
        .expect("one member leads");
    assert_eq!(
        cluster.wait_leader().await,
        leader,
        "the cluster and the metrics agree on the leader"
    );
    let term = before[0].must("corral_raft_term");
    assert!(term >= 1.0);
    for s in &before {
        assert_eq!(s.must("corral_raft_term"), term, "one term");
        assert!(s.must("corral_raft_leader_changes_seen_total") >= 1.0);
        assert!(s.must("corral_db_size_bytes") > 0.0);
        assert!(s.must("corral_db_size_in_use_bytes") > 0.0);
        if cfg!(target_os = "linux") {
            assert!(s.must("process_resident_memory_bytes") > 0.0);
        }
    }

    // Unary calls through a follower: counted there, per method and code, and nowhere else.
    let f = (leader + 1) % 3;
    let mut c = cluster.client(f).await;
    let base = scrape(addr(f)).await;
    const PUTS: usize = 20;
    let mut revision = 0;
    for i in 0..PUTS {
        let r = c.put(format!("k{i}"), "v", None).await.expect("put");
        revision = r.header().expect("header").revision();
    }
    let err = c
        .get(
            "k0",
            Some(etcd_client::GetOptions::new().with_revision(revision + 1000)),
        )
        .await
        .expect_err("a future revision is refused");
    let etcd_client::Error::GRpcStatus(status) = err else {
        panic!("a gRPC status: {err:?}");
    };
    let code = GRPC_CODES[status.code() as usize];
    assert_eq!(code, "OutOfRange");
    let s = scrape(addr(f)).await;
    let ok = [KV_PUT[0], KV_PUT[1], ("grpc_code", "OK")];
    let delta =
        |name: &str, labels: &[(&str, &str)]| s.value(name, labels) - base.value(name, labels);
    assert_eq!(delta("corral_grpc_server_handled_total", &ok), PUTS as f64);
    assert_eq!(
        delta("corral_grpc_server_handling_seconds_count", &ok),
        PUTS as f64
    );
    assert_eq!(
        delta("corral_grpc_server_started_total", &KV_PUT),
        PUTS as f64
    );
    assert_eq!(s.value("corral_grpc_server_in_flight", &KV_PUT), 0.0);

    // Each of those puts (one after the other) waited for a durable flush of the leader's
    // log; group commit may merge one with an internal entry, never most of them.
    let flushes = "corral_disk_wal_fsync_duration_seconds_count";
    let at_leader = scrape(addr(leader)).await;
    assert!(
        at_leader.must(flushes) - before[leader].must(flushes) >= (PUTS / 2) as f64,
        "the leader's log flushed for the puts: {} then {}",
        before[leader].must(flushes),
        at_leader.must(flushes)
    );
    assert!(at_leader.must("corral_disk_wal_fsync_duration_seconds_sum") > 0.0);
    let sum = s.value("corral_grpc_server_handling_seconds_sum", &ok);
    assert!(sum > 0.0 && sum < 60.0, "handling time sum {sum}");
    let range_err = [
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "Range"),
        ("grpc_code", code),
    ];
    assert_eq!(delta("corral_grpc_server_handled_total", &range_err), 1.0);
    assert!(
        delta("corral_proposals_committed_total", &[]) >= PUTS as f64,
        "the follower's proposals are counted where they were proposed"
    );
    assert_eq!(s.must("corral_mvcc_revision"), revision as f64);
    for other in (0..3).filter(|&i| i != f) {
        let o = scrape(addr(other)).await;
        assert_eq!(
            o.value("corral_grpc_server_handled_total", &ok),
            0.0,
            "member {other} served no Put: metrics are per member"
        );
    }
    scrape_until(addr(f), "nothing pending, applied caught up", |s| {
        s.must("corral_proposals_pending") == 0.0 && s.must("corral_raft_apply_lag") == 0.0
    })
    .await;
    let s = scrape(addr(f)).await;
    assert!(s.must("corral_raft_commit_index") >= s.must("corral_raft_applied_index"));
    assert!(s.must("corral_raft_applied_index") > 0.0);

    // Watches: two watchers on one stream, then one, then the stream goes away.
    let mut w = c.watch("w/a", None).await.expect("watch");
    let first = w.message().await.expect("created").expect("created");
    assert!(first.created());
    w.watch("w/b", None).await.expect("second watcher");
    let second = w.message().await.expect("created").expect("created");
    assert!(second.created());
    let watch = [
        ("grpc_service", "etcdserverpb.Watch"),
        ("grpc_method", "Watch"),
    ];
    let s = scrape_until(addr(f), "two watchers on one stream", |s| {
        s.must("corral_watchers") == 2.0
    })
    .await;
    assert_eq!(s.must("corral_watch_streams"), 1.0);
    assert_eq!(s.value("corral_grpc_server_in_flight", &watch), 1.0);
    w.cancel(first.watch_id()).await.expect("cancel");
    scrape_until(addr(f), "one watcher after a cancel", |s| {
        s.must("corral_watchers") == 1.0 && s.must("corral_watch_streams") == 1.0
    })
    .await;
    drop(w);
    let s = scrape_until(addr(f), "no watchers once the stream is gone", |s| {
        s.must("corral_watchers") == 0.0
            && s.must("corral_watch_streams") == 0.0
            && s.value("corral_grpc_server_in_flight", &watch) == 0.0
    })
    .await;
    assert_eq!(
        s.sum("corral_grpc_server_handled_total", &watch),
        1.0,
        "the stream is one call, counted when it ended"
    );

    // Leases: in every member's table; keep-alive streams counted where they are open.
    let l1 = c.lease_grant(30, None).await.expect("grant").id();
    let l2 = c.lease_grant(30, None).await.expect("grant").id();
    for i in 0..3 {
        scrape_until(addr(i), "two leases everywhere", |s| {
            s.must("corral_leases") == 2.0
        })
        .await;
    }
    let (mut keeper, mut replies) = c.lease_keep_alive(l1).await.expect("keep-alive");
    keeper.keep_alive().await.expect("ping");
    let reply = replies.message().await.expect("reply").expect("reply");
    assert!(reply.ttl() > 0);
    scrape_until(addr(f), "one keep-alive stream", |s| {
        s.must("corral_lease_keepalive_streams") == 1.0
    })
    .await;
    drop((keeper, replies));
    scrape_until(addr(f), "keep-alive stream closed", |s| {
        s.must("corral_lease_keepalive_streams") == 0.0
    })
    .await;
    c.lease_revoke(l2).await.expect("revoke");
    for i in 0..3 {
        scrape_until(addr(i), "one lease left everywhere", |s| {
            s.must("corral_leases") == 1.0
        })
        .await;
    }

    // Znode sessions: opened, connected while their keep-alive stream is open, closed.
    let mut sessions = SessionsClient::connect(cluster.endpoint(f))
        .await
        .expect("connect");
    let open = sessions
        .open_session(OpenSessionRequest { timeout_ms: 10_000 })
        .await
        .expect("open session")
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut pongs = sessions
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keep-alive")
        .into_inner();
    tx.send(KeepAliveRequest {
        session_id: open.session_id,
    })
    .await
    .expect("ping");
    let pong = pongs.next().await.expect("pong").expect("pong");
    assert!(pong.timeout_ms > 0);
    let s = scrape_until(addr(f), "a connected session", |s| {
        s.must("corral_znode_sessions_connected") == 1.0
    })
    .await;
    assert_eq!(s.must("corral_znode_sessions_opened_total"), 1.0);
    assert_eq!(s.must("corral_leases"), 2.0, "a session is a lease");
    drop((tx, pongs));
    scrape_until(addr(f), "session stream closed", |s| {
        s.must("corral_znode_sessions_connected") == 0.0
    })
    .await;
    sessions
        .close_session(CloseSessionRequest {
            session_id: open.session_id,
        })
        .await
        .expect("close session");
    let s = scrape(addr(f)).await;
    assert_eq!(s.must("corral_znode_sessions_closed_total"), 1.0);
    assert_eq!(s.must("corral_leases"), 1.0);

    // A new leader: the survivors count the change and move to a later term.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let seen: Vec<f64> = {
        let mut v = Vec::new();
        for &i in &survivors {
            v.push(
                scrape(addr(i))
                    .await
                    .must("corral_raft_leader_changes_seen_total"),
            );
        }
        v
    };
    cluster.stop(leader).await;
    cluster.wait_leader_among(&survivors).await;
    for (&i, seen) in survivors.iter().zip(seen) {
        let s = scrape_until(addr(i), "the leader change is counted", |s| {
            s.must("corral_raft_leader_changes_seen_total") > seen
                && s.must("corral_raft_has_leader") == 1.0
        })
        .await;
        assert!(s.must("corral_raft_term") > term);
    }

    // The quorum lost: the last member is neither healthy nor ready, but alive (a liveness
    // probe must not restart what is left of a cluster; that cannot bring the quorum back).
    let last = survivors[1];
    cluster.stop(survivors[0]).await;
    // It may still think it leads (openraft's leader does not step down by itself): the
    // probes' quorum read finds out either way.
    let body = eventually("the last member is unhealthy", WAIT, || async {
        let (status, body) = http_get(addr(last), "/health").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body.contains("no leader") || body.contains("no quorum"),
        "{body}"
    );
    let (status, body) = http_get(addr(last), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = http_get(addr(last), "/livez").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    cluster.shutdown().await;
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A member started the way `corral serve` starts one, with its metrics listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_of_a_member() {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (c, p, m) = (
        client.local_addr().unwrap(),
        peer.local_addr().unwrap(),
        metrics.local_addr().unwrap(),
    );
    let args = Args::try_parse_from([
        "corral".to_string(),
        "--name=solo".to_string(),
        format!("--data-dir={}", dir.path().join("solo").display()),
        format!("--listen-client-urls=http://{c}"),
        format!("--advertise-client-urls=http://{c}"),
        format!("--listen-peer-urls=http://{p}"),
        format!("--initial-advertise-peer-urls=http://{p}"),
        format!("--initial-cluster=solo=http://{p}"),
        format!("--listen-metrics-urls=http://{m}"),
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
    ])
    .expect("args");
    let cfg = args.serve.validate().expect("valid config");
    let node = Node::start(
        cfg,
        Listeners {
            client: vec![client],
            peer,
            metrics: Some(metrics),
        },
    )
    .await
    .expect("member starts");
    assert_eq!(node.metrics_addr, Some(m));

    eventually("the member is ready", WAIT, || async {
        let (status, _) = http_get(m, "/readyz").await;
        (status == 200).then_some(())
    })
    .await;
    let (status, body) = http_get(m, "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let (status, body) = http_get(m, "/livez").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _) = http_get(m, "/nope").await;
    assert_eq!(status, 404);

    let mut kv = etcd_client::Client::connect([format!("http://{c}")], None)
        .await
        .expect("client");
    for i in 0..5 {
        kv.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let s = scrape(m).await;
    let ok = [KV_PUT[0], KV_PUT[1], ("grpc_code", "OK")];
    assert_eq!(s.value("corral_grpc_server_handled_total", &ok), 5.0);
    assert_eq!(
        s.value("corral_grpc_server_handling_seconds_count", &ok),
        5.0
    );
    assert_eq!(s.must("corral_raft_is_leader"), 1.0);
    assert_eq!(s.must("corral_raft_leader_changes_seen_total"), 1.0);
    assert!(s.must("corral_proposals_committed_total") >= 5.0);
    assert_eq!(s.must("corral_proposals_failed_total"), 0.0);
    assert_eq!(s.types["corral_grpc_server_handling_seconds"], "histogram");
    assert_eq!(s.types["corral_raft_leader_changes_seen_total"], "counter");

    node.stop().await;
}
