//! Coordination recipes over gRPC: lock (mutual exclusion with fencing tokens, lease expiry,
//! deadline and cancel), election (one leader, Observe in order, failover), barriers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Cluster};
use corral::pb::corral::v1::barrier_client::BarrierClient;
use corral::pb::corral::v1::sessions_client::SessionsClient;
use corral::pb::corral::v1::{
    BarrierRequest, CloseSessionRequest, DoubleBarrierRequest, OpenSessionRequest,
};
use corral::pb::v3electionpb::election_client::ElectionClient;
use corral::pb::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use corral::pb::v3lockpb::lock_client::LockClient;
use corral::pb::v3lockpb::{LockRequest, UnlockRequest};
use etcd_client::GetOptions;
use tokio_stream::StreamExt;
use tonic::Code;

async fn grant(cluster: &Cluster, i: usize, ttl: i64) -> i64 {
    cluster
        .client(i)
        .await
        .lease_grant(ttl, None)
        .await
        .unwrap()
        .id()
}

/// Keeps a lease alive from a background task until dropped.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_alive(cluster: &Cluster, i: usize, lease: i64) -> KeepAlive {
    let mut c = cluster.client(i).await;
    KeepAlive(tokio::spawn(async move {
        let Ok((mut keeper, mut stream)) = c.lease_keep_alive(lease).await else {
            return;
        };
        loop {
            if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_contenders_exclude_each_other_with_increasing_fencing_tokens() {
    let cluster = Arc::new(Cluster::start(3).await);
    let inside = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cluster = cluster.clone();
        let inside = inside.clone();
        let last_token = last_token.clone();
        tasks.push(tokio::spawn(async move {
            let member = i % 3;
            let lease = grant(&cluster, member, 30).await;
            let mut lock = LockClient::connect(cluster.endpoint(member)).await.unwrap();
            let mut kv = cluster.client(member).await;
            let held = lock
                .lock(LockRequest {
                    name: b"counter-lock".to_vec(),
                    lease,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(held.key.starts_with(b"counter-lock/"));
            let token = held.header.unwrap().revision;
            assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
            // The protected resource: a counter that only accepts increasing fencing tokens.
            assert!(
                token > last_token.swap(token, Ordering::SeqCst),
                "fencing tokens increase"
            );
            let n: i64 = kv
                .get("counter", None)
                .await
                .unwrap()
                .kvs()
                .first()
                .map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
            kv.put("counter", (n + 1).to_string(), None).await.unwrap();
            inside.store(false, Ordering::SeqCst);
            lock.unlock(UnlockRequest { key: held.key }).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut kv = cluster.client(0).await;
    let n = kv.get("counter", None).await.unwrap().kvs()[0]
        .value_str()
        .unwrap()
        .to_string();
    assert_eq!(n, "20", "every increment under the lock survived");
    let left = kv
        .get("counter-lock/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "no lock keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_holder_releases_and_abandoned_waiters_clean_up() {
    let cluster = Cluster::start(3).await;
    let mut lock = LockClient::connect(cluster.endpoint(1)).await.unwrap();

    tracing::info!("phase: a holder whose lease expires releases within its TTL");
    let short = grant(&cluster, 1, 2).await;
    let held = lock
        .lock(LockRequest {
            name: b"L".to_vec(),
            lease: short,
        })
        .await
        .unwrap()
        .into_inner();
    let granted = Instant::now();
    let waiter_lease = grant(&cluster, 2, 30).await;
    let _ka = keep_alive(&cluster, 2, waiter_lease).await;
    let mut other = LockClient::connect(cluster.endpoint(2)).await.unwrap();
    let next = other
        .lock(LockRequest {
            name: b"L".to_vec(),
            lease: waiter_lease,
        })
        .await
        .unwrap()
        .into_inner();
    let waited = granted.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "not before the holder's TTL: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "within the TTL plus an election timeout: {waited:?}"
    );
    assert!(next.header.unwrap().revision > held.header.unwrap().revision);
    other.unlock(UnlockRequest { key: next.key }).await.unwrap();

    tracing::info!("phase: a waiter's deadline removes its key from the line");
    let holder_lease = grant(&cluster, 0, 30).await;
    let _ka2 = keep_alive(&cluster, 0, holder_lease).await;
    let holder = lock
        .lock(LockRequest {
            name: b"M".to_vec(),
            lease: holder_lease,
        })
        .await
        .unwrap()
        .into_inner();
    let impatient = grant(&cluster, 1, 30).await;
    let mut req = tonic::Request::new(LockRequest {
        name: b"M".to_vec(),
        lease: impatient,
    });
    req.set_timeout(Duration::from_millis(500));
    let e = lock.lock(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    let mut kv = cluster.client(0).await;
    let key = format!("M/{impatient:x}");
    eventually(
        "the waiter's key is cleaned up",
        Duration::from_secs(10),
        || {
            let mut kv = kv.clone();
            let key = key.clone();
            async move { (kv.get(key, None).await.ok()?.count() == 0).then_some(()) }
        },
    )
    .await;

    tracing::info!("phase: a cancelled waiter (client gone) cleans up too");
    let gone = grant(&cluster, 1, 30).await;
    let mut l2 = LockClient::connect(cluster.endpoint(1)).await.unwrap();
    let call = tokio::spawn(async move {
        l2.lock(LockRequest {
            name: b"M".to_vec(),
            lease: gone,
        })
        .await
    });
    let key = format!("M/{gone:x}");
    eventually("the waiter queued", Duration::from_secs(10), || {
        let mut kv = kv.clone();
        let key = key.clone();
        async move { (kv.get(key, None).await.ok()?.count() == 1).then_some(()) }
    })
    .await;
    call.abort();
    eventually(
        "the cancelled waiter's key is cleaned up",
        Duration::from_secs(10),
        || {
            let mut kv = kv.clone();
            let key = key.clone();
            async move { (kv.get(key, None).await.ok()?.count() == 0).then_some(()) }
        },
    )
    .await;
    lock.unlock(UnlockRequest { key: holder.key })
        .await
        .unwrap();

    tracing::info!("phase: bad input");
    let e = lock
        .lock(LockRequest {
            name: vec![],
            lease: holder_lease,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = lock
        .lock(LockRequest {
            name: b"N".to_vec(),
            lease: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = lock
        .lock(LockRequest {
            name: b"N".to_vec(),
            lease: 12345,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let e = lock
        .unlock(UnlockRequest {
            key: b"N/nothing".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        kv.get("N/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap()
            .count(),
        0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_one_leader_observe_in_order_and_failover() {
    let mut cluster = Cluster::start(3).await;
    let leader_member = cluster.wait_leader().await;
    // Candidates on the two other members, plus one on the Raft leader's member.
    let order = [
        (leader_member + 1) % 3,
        (leader_member + 2) % 3,
        leader_member,
    ];
    let mut observe = ElectionClient::connect(cluster.endpoint(order[1]))
        .await
        .unwrap()
        .observe(LeaderRequest {
            name: b"svc".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut leases = Vec::new();
    let mut alive = Vec::new();
    for (n, &m) in order.iter().enumerate() {
        let lease = grant(&cluster, m, 2).await;
        alive.push(keep_alive(&cluster, m, lease).await);
        leases.push(lease);
        let _ = n;
    }
    let mut e0 = ElectionClient::connect(cluster.endpoint(order[0]))
        .await
        .unwrap();
    let first = e0
        .campaign(CampaignRequest {
            name: b"svc".to_vec(),
            lease: leases[0],
            value: b"c0".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    // The others queue behind it.
    let mut pending = Vec::new();
    for k in 1..3 {
        let mut e = ElectionClient::connect(cluster.endpoint(order[k]))
            .await
            .unwrap();
        let lease = leases[k];
        pending.push(tokio::spawn(async move {
            e.campaign(CampaignRequest {
                name: b"svc".to_vec(),
                lease,
                value: format!("c{k}").into_bytes(),
            })
            .await
            .map(|r| r.into_inner().leader.unwrap())
        }));
        // A known order: each candidate joins the line (its key exists) before the next.
        let key = format!("svc/{lease:x}");
        let kv = cluster.client(order[0]).await;
        eventually(
            "the candidate joined the line",
            Duration::from_secs(10),
            || {
                let mut kv = kv.clone();
                let key = key.clone();
                async move { (kv.get(key, None).await.ok()?.count() == 1).then_some(()) }
            },
        )
        .await;
    }
    // Every wait below is bounded: a broken handover fails the test instead of hanging it.
    let bounded = |t: tokio::task::JoinHandle<Result<LeaderKey, tonic::Status>>| async move {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("campaign finished in time")
            .unwrap()
            .unwrap()
    };
    let mut e1 = ElectionClient::connect(cluster.endpoint(order[1]))
        .await
        .unwrap();
    let who = e1
        .leader(LeaderRequest {
            name: b"svc".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        who.kv.unwrap().value,
        b"c0",
        "exactly one leader: the first"
    );
    e0.proclaim(ProclaimRequest {
        leader: Some(first.clone()),
        value: b"c0-v2".to_vec(),
    })
    .await
    .unwrap();

    tracing::info!("phase: resign hands over to the next in line");
    e0.resign(ResignRequest {
        leader: Some(first.clone()),
    })
    .await
    .unwrap();
    let second = bounded(pending.remove(0)).await;
    assert!(second.rev > first.rev, "leadership tokens grow");
    let e = e0
        .resign(ResignRequest {
            leader: Some(first.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "election: not leader")
    );
    let e = e0
        .proclaim(ProclaimRequest {
            leader: Some(first),
            value: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    tracing::info!("phase: the leader's member dies; its lease lapses; the next takes over");
    let started = Instant::now();
    drop(alive.remove(1)); // the leader's keep-alives stop with its member
    cluster.stop(order[1]).await;
    let third = bounded(pending.remove(0)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2 + 6),
        "within the TTL plus failover: {:?}",
        started.elapsed()
    );
    assert!(third.rev > second.rev);
    let _ = cluster.wait_leader_among(&[order[0], order[2]]).await;

    // Observe (on the stopped member's stream) saw every leadership change in order until its
    // member went away.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_secs(2), observe.next()).await {
        seen.push(String::from_utf8(r.kv.unwrap().value).unwrap());
    }
    assert_eq!(seen[..3], ["c0", "c0-v2", "c1"], "{seen:?}");

    tracing::info!("phase: bad input");
    let e = e0
        .campaign(CampaignRequest {
            name: vec![],
            lease: leases[0],
            value: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = e0
        .resign(ResignRequest {
            leader: Some(LeaderKey {
                name: b"svc".to_vec(),
                key: b"svc/none".to_vec(),
                rev: 1,
                lease: 1,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = e0
        .leader(LeaderRequest {
            name: b"nobody".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "election: no leader")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn barrier_and_double_barrier_with_ten_participants_one_crashing() {
    let cluster = Arc::new(Cluster::start(3).await);
    let mut b = BarrierClient::connect(cluster.endpoint(0)).await.unwrap();
    b.set(BarrierRequest {
        name: "start".into(),
    })
    .await
    .unwrap();
    let mut waiters = Vec::new();
    for i in 0..10 {
        let mut bi = BarrierClient::connect(cluster.endpoint(i % 3))
            .await
            .unwrap();
        waiters.push(tokio::spawn(async move {
            bi.wait(BarrierRequest {
                name: "start".into(),
            })
            .await
        }));
    }
    for w in &waiters {
        assert!(!w.is_finished());
    }
    b.remove(BarrierRequest {
        name: "start".into(),
    })
    .await
    .unwrap();
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    let e = b
        .remove(BarrierRequest {
            name: "start".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = b
        .set(BarrierRequest { name: "a/b".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    tracing::info!("phase: double barrier, 10 participants, one crashes between enter and leave");
    // Counted before each Enter call: when any Enter returns, all ten must have called it.
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let cluster = cluster.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let m = i % 3;
            let mut s = SessionsClient::connect(cluster.endpoint(m)).await.unwrap();
            let session = s
                .open_session(OpenSessionRequest { timeout_ms: 4000 })
                .await
                .unwrap()
                .into_inner();
            let _ka = keep_alive(&cluster, m, session.session_id).await;
            let mut b = BarrierClient::connect(cluster.endpoint(m)).await.unwrap();
            let req = DoubleBarrierRequest {
                name: "job".into(),
                count: 10,
                session_id: session.session_id,
            };
            started.fetch_add(1, Ordering::SeqCst);
            b.enter(req.clone()).await.unwrap();
            assert_eq!(
                started.load(Ordering::SeqCst),
                10,
                "nobody passes before all entered"
            );
            if i == 7 {
                // Crash: no leave, no keep-alives; the session expires and removes it.
                return;
            }
            b.leave(req).await.unwrap();
            drop(s);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let e = b
        .enter(DoubleBarrierRequest {
            name: "job".into(),
            count: 0,
            session_id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut s = SessionsClient::connect(cluster.endpoint(0)).await.unwrap();
    let e = s
        .close_session(CloseSessionRequest { session_id: 42 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_and_counter_recipes_on_znodes() {
    use corral::pb::corral::v1::znodes_client::ZnodesClient;
    use corral::pb::corral::v1::{
        CreateMode, CreateRequest, DeleteRequest, GetChildrenRequest, GetDataRequest,
        SetDataRequest,
    };
    use tonic_types::StatusExt;
    let cluster = Arc::new(Cluster::start(3).await);
    let mut z = ZnodesClient::connect(cluster.endpoint(0)).await.unwrap();
    z.create(CreateRequest {
        path: "/queue".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    z.create(CreateRequest {
        path: "/counter".into(),
        data: "0".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    tracing::info!(
        "phase: a FIFO queue: producers add sequential znodes, consumers take the lowest"
    );
    for p in 0..3 {
        let mut z = ZnodesClient::connect(cluster.endpoint(p)).await.unwrap();
        for i in 0..10 {
            z.create(CreateRequest {
                path: "/queue/item-".into(),
                data: format!("{p}-{i}").into(),
                mode: CreateMode::PersistentSequential as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    let mut consumers = Vec::new();
    for c in 0..3 {
        let cluster = cluster.clone();
        consumers.push(tokio::spawn(async move {
            let mut z = ZnodesClient::connect(cluster.endpoint(c)).await.unwrap();
            let mut taken = Vec::new();
            loop {
                let kids = z
                    .get_children(GetChildrenRequest {
                        path: "/queue".into(),
                        with_stats: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .children;
                let Some(head) = kids.first() else {
                    return taken;
                };
                let path = format!("/queue/{head}");
                let Ok(item) = z.get_data(GetDataRequest { path: path.clone() }).await else {
                    continue;
                };
                // Whoever deletes it owns it; the others see NoNode and try the next head.
                if z.delete(DeleteRequest {
                    path,
                    version: -1,
                    recursive: false,
                })
                .await
                .is_ok()
                {
                    taken.push((
                        head.clone(),
                        String::from_utf8(item.into_inner().data).unwrap(),
                    ));
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    all.sort();
    assert_eq!(all.len(), 30, "every item consumed exactly once");
    all.dedup();
    assert_eq!(all.len(), 30);

    tracing::info!(
        "phase: a counter: read, then write with the version read (retry on BadVersion)"
    );
    let mut tasks = Vec::new();
    for t in 0..10 {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            let mut z = ZnodesClient::connect(cluster.endpoint(t % 3))
                .await
                .unwrap();
            for _ in 0..5 {
                loop {
                    let cur = z
                        .get_data(GetDataRequest {
                            path: "/counter".into(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let n: i64 = String::from_utf8(cur.data).unwrap().parse().unwrap();
                    let version = cur.stat.unwrap().version;
                    let set = SetDataRequest {
                        path: "/counter".into(),
                        data: (n + 1).to_string().into(),
                        version,
                    };
                    match z.set_data(set).await {
                        Ok(_) => break,
                        Err(s) => assert_eq!(
                            s.get_details_error_info().map(|i| i.reason).as_deref(),
                            Some("BadVersion")
                        ),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = z
        .get_data(GetDataRequest {
            path: "/counter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.data, b"50");
    assert_eq!(end.stat.unwrap().version, 50);
}
