//! etcd's Lease semantics through a real etcd client: grant, attach, keep-alive (forwarded by
//! followers, never through Raft), time-to-live, revoke, expiry by the leader's clock, and
//! leases surviving a leader change.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Cluster};
use etcd_client::{
    EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use tonic::Code;

/// The harness runs with a 500 ms election timeout.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_attach_time_to_live_revoke_on_followers() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;

    tracing::info!("phase: grant with server- and client-chosen ids");
    let auto = c.lease_grant(30, None).await.unwrap();
    assert!(auto.id() > 0);
    assert_eq!(auto.ttl(), 30);
    let mine = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(4242)))
        .await
        .unwrap();
    assert_eq!(mine.id(), 4242);
    // Too short a TTL is raised to the minimum (1.5 election timeouts, whole seconds).
    let short = c.lease_grant(-5, None).await.unwrap();
    assert_eq!(short.ttl(), 1);

    tracing::info!("phase: attach keys, list them, keep alive from a follower");
    for k in ["l/a", "l/b"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(4242)))
            .await
            .unwrap();
    }
    let kv = c.get("l/a", None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.lease(), 4242);
    let ttl = c
        .lease_time_to_live(4242, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(ttl.ttl() > 50 && ttl.ttl() <= 60, "{}", ttl.ttl());
    let mut keys: Vec<_> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8(k.clone()).unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["l/a", "l/b"]);
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort();
    let mut want = vec![auto.id(), 4242, short.id()];
    want.sort();
    assert_eq!(ids, want);
    let (mut keeper, mut stream) = c.lease_keep_alive(4242).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!((resp.id(), resp.ttl()), (4242, 60));
    // Moving a key to another lease detaches it from the first.
    c.put("l/b", "v", Some(PutOptions::new().with_lease(auto.id())))
        .await
        .unwrap();
    let ttl = c
        .lease_time_to_live(4242, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"l/a".to_vec()]);

    tracing::info!("phase: revoke deletes the keys at once, in one revision");
    let mut watcher = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watcher.message().await.unwrap().unwrap().created());
    c.put("l/c", "v", Some(PutOptions::new().with_lease(auto.id())))
        .await
        .unwrap();
    let put_event = watcher.message().await.unwrap().unwrap();
    assert_eq!(put_event.events().len(), 1);
    c.lease_revoke(auto.id()).await.unwrap();
    let resp = watcher.message().await.unwrap().unwrap();
    let deletes: Vec<_> = resp
        .events()
        .iter()
        .map(|e| (e.event_type(), e.kv().unwrap().mod_revision()))
        .collect();
    assert_eq!(deletes.len(), 2, "both attached keys deleted: {deletes:?}");
    assert!(deletes.iter().all(|(t, _)| *t == EventType::Delete));
    assert_eq!(deletes[0].1, deletes[1].1, "in one revision");
    assert_eq!(c.get("l/b", None).await.unwrap().count(), 0);
    assert_eq!(
        c.get("l/a", None).await.unwrap().count(),
        1,
        "other leases' keys stay"
    );
    let gone = c.lease_time_to_live(auto.id(), None).await.unwrap();
    assert_eq!(gone.ttl(), -1);

    tracing::info!("phase: bad input");
    let before = c
        .get("l/a", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let e = status(c.lease_revoke(auto.id()).await.unwrap_err());
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let e = status(
        c.put("l/x", "v", Some(PutOptions::new().with_lease(999)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let e = status(c.lease_grant(9_000_000_001, None).await.unwrap_err());
    assert_eq!(
        (e.code(), e.message()),
        (Code::OutOfRange, "etcdserver: too large lease TTL")
    );
    let e = status(
        c.lease_grant(10, Some(LeaseGrantOptions::new().with_id(4242)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "etcdserver: lease already exists")
    );
    // A keep-alive for an unknown lease is answered with TTL 0, as etcd does.
    assert!(
        c.lease_keep_alive(999).await.is_err(),
        "the client sees TTL 0 as not found"
    );
    let after = c
        .get("l/a", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(before, after, "nothing changed");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_deletes_its_keys_within_ttl_plus_an_election_timeout() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client((leader + 1) % 3).await;
    let ttl = 2;
    let lease = c.lease_grant(ttl, None).await.unwrap();
    let granted = Instant::now();
    for k in ["e/1", "e/2", "e/3"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(lease.id())))
            .await
            .unwrap();
    }
    let mut watcher = c
        .watch("e/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watcher.message().await.unwrap().unwrap().created());
    let vanished = eventually("keys expire", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let r = c
                .get(
                    "e/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .ok()?;
            (r.count() == 0).then(Instant::now)
        }
    })
    .await;
    let lived = vanished - granted;
    assert!(
        lived >= Duration::from_secs(ttl as u64),
        "not before the TTL: {lived:?}"
    );
    // The bound: TTL, plus an election timeout, plus the expiry tick and the revocation's own
    // Raft round (both well under a second here).
    assert!(
        lived <= Duration::from_secs(ttl as u64) + ELECTION_TIMEOUT + Duration::from_secs(1),
        "within TTL plus an election timeout: {lived:?}"
    );
    let resp = watcher.message().await.unwrap().unwrap();
    assert_eq!(resp.events().len(), 3);
    assert!(resp
        .events()
        .iter()
        .all(|e| e.event_type() == EventType::Delete));
    assert_eq!(
        c.lease_time_to_live(lease.id(), None).await.unwrap().ttl(),
        -1
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_through_a_follower_survives_leader_failover() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut c = cluster.client(follower).await;
    let ttl = 2;
    let lease = c.lease_grant(ttl, None).await.unwrap();
    c.put(
        "k/held",
        "v",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let mut watcher = c
        .watch("k/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watcher.message().await.unwrap().unwrap().created());
    let (mut keeper, mut stream) = c.lease_keep_alive(lease.id()).await.unwrap();
    // A client's keep-alive cadence: every 500 ms, through the follower, across the failover.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    let keep = tokio::spawn(async move {
        loop {
            if keeper.keep_alive().await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(8), stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                other => panic!("keep-alive lost: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let count = || answered.load(std::sync::atomic::Ordering::Relaxed);
    eventually("keep-alives answered", Duration::from_secs(10), || async {
        (count() >= 2).then_some(())
    })
    .await;
    tracing::info!(
        leader,
        "phase: stop the leader while keep-alives flow through a follower"
    );
    cluster.stop(leader).await;
    cluster.wait_leader_among(&[follower, other]).await;
    let mut w = cluster.client(other).await;
    eventually("writes after failover", Duration::from_secs(20), || {
        let mut w = w.clone();
        async move { w.put("k/after", "1", None).await.ok() }
    })
    .await;
    // Proving a lease did NOT expire takes time by nature: watch the key for three TTLs while
    // keep-alives keep flowing through the new leader.
    let since = count();
    let until = Instant::now() + Duration::from_secs(3 * ttl as u64);
    while Instant::now() < until {
        assert_eq!(
            w.get("k/held", None).await.unwrap().count(),
            1,
            "the lease survived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        count() > since + 3,
        "keep-alives answered by the new leader"
    );
    assert!(w.lease_time_to_live(lease.id(), None).await.unwrap().ttl() > 0);
    // The watch on the follower saw exactly the write made after the failover.
    let resp = tokio::time::timeout(Duration::from_secs(10), watcher.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let keys: Vec<_> = resp
        .events()
        .iter()
        .map(|e| e.kv().unwrap().key_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["k/after"]);
    keep.abort();
    cluster.shutdown().await;
}
