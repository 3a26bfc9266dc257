//! Failures a cluster must survive: losing the leader, a leader cut off from the majority,
//! and every member restarting. No acknowledged write may be lost; the minority side must
//! fail requests, never answer them with stale success.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, Cluster};
use etcd_client::GetOptions;
use tonic::Code;

type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writes `w{id}-{n}` through member `target` until `stop`, recording every acknowledged put.
fn spawn_writer(
    endpoint: String,
    id: usize,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let (k, v) = (format!("w{id}-{n}"), format!("v{n}"));
            if client.put(k.clone(), v.clone(), None).await.is_ok() {
                acked.lock().unwrap().insert(k, v);
            }
            n += 1;
            tokio::task::yield_now().await;
        }
        n
    })
}

/// Every acknowledged write is readable on member `i` (a local read once it caught up).
async fn assert_all_present(cluster: &Cluster, i: usize, acked: &BTreeMap<String, String>) {
    let mut c = cluster.client(i).await;
    let all = c
        .get(
            "w",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap();
    let stored: BTreeMap<String, String> = all
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().into(), kv.value_str().unwrap().into()))
        .collect();
    for (k, v) in acked {
        assert_eq!(
            stored.get(k),
            Some(v),
            "acknowledged write {k} present on member {i}"
        );
    }
}

async fn catch_up(cluster: &Cluster, i: usize, from: usize) {
    let target = cluster.node(from).handle.store().revision();
    cluster.wait_revision(i, target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_elects_a_new_leader_and_loses_nothing() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers: Vec<_> = survivors
        .iter()
        .map(|&i| spawn_writer(cluster.endpoint(i), i, stop.clone(), acked.clone()))
        .collect();
    eventually("writes flowing", Duration::from_secs(10), || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;

    tracing::info!(leader, "phase: stop the leader under load");
    let before_kill = acked.lock().unwrap().len();
    let started = std::time::Instant::now();
    cluster.stop(leader).await;
    let new_leader = cluster.wait_leader_among(&survivors).await;
    tracing::info!(new_leader, elapsed = ?started.elapsed(), "new leader");
    assert_ne!(new_leader, leader);
    eventually(
        "writes continue on the new leader",
        Duration::from_secs(15),
        || async { (acked.lock().unwrap().len() >= before_kill + 50).then_some(()) },
    )
    .await;

    tracing::info!("phase: the old leader restarts and catches up");
    cluster.restart(leader).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    for i in 0..3 {
        catch_up(&cluster, i, new_leader).await;
        assert_all_present(&cluster, i, &acked).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_fails_requests_and_majority_serves() {
    let cluster = Cluster::start(3).await;
    let old = cluster.wait_leader().await;
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut on_old = cluster.client(old).await;
    on_old.put("before", "1", None).await.unwrap();

    tracing::info!(old, "phase: cut the leader off from the majority");
    cluster.partition(&[old], &majority);
    let new = eventually("majority elects", Duration::from_secs(20), || async {
        let l = cluster.leader_seen_by(majority[0])?;
        (l != old && cluster.leader_seen_by(majority[1]) == Some(l)).then_some(l)
    })
    .await;
    let mut on_majority = cluster.client(new).await;
    on_majority.put("during", "majority", None).await.unwrap();

    // The old leader may still believe it leads: its writes and linearizable reads must fail.
    let write = on_old.put("during", "minority", None).await;
    let read = on_old.get("before", None).await;
    for (what, r) in [("write", write.map(|_| ())), ("read", read.map(|_| ()))] {
        match r {
            Err(etcd_client::Error::GRpcStatus(s)) => {
                assert_eq!(s.code(), Code::Unavailable, "{what} on the minority: {s:?}")
            }
            other => panic!("{what} on the minority must fail with Unavailable, got {other:?}"),
        }
    }
    // A serializable read is allowed to be stale, and is served locally.
    let stale = on_old
        .get("before", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(stale.kvs()[0].value(), b"1");

    tracing::info!("phase: heal and converge");
    cluster.heal();
    eventually("old leader converges", Duration::from_secs(20), || {
        let mut c = on_old.clone();
        async move {
            let r = c.get("during", None).await.ok()?;
            (r.kvs().first()?.value() == b"majority").then_some(())
        }
    })
    .await;
    // The minority's write never reached a majority, so it can never have been committed.
    for i in 0..3 {
        catch_up(&cluster, i, new).await;
        let r = cluster
            .client(i)
            .await
            .get("during", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"majority");
        assert_eq!(r.kvs()[0].version(), 1);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_restarts_and_every_write_is_there() {
    let mut cluster = Cluster::start(3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|i| spawn_writer(cluster.endpoint(i), i, stop.clone(), acked.clone()))
        .collect();
    eventually("writes flowing", Duration::from_secs(10), || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let revision = {
        let leader = cluster.wait_leader().await;
        cluster.node(leader).handle.store().revision()
    };

    tracing::info!(
        writes = acked.len(),
        "phase: stop every member, then start them all"
    );
    for i in 0..3 {
        cluster.stop(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    let leader = cluster.wait_leader().await;
    for i in 0..3 {
        catch_up(&cluster, i, leader).await;
        assert!(cluster.node(i).handle.store().revision() >= revision);
        assert_all_present(&cluster, i, &acked).await;
    }
    // And the cluster still takes writes.
    cluster
        .client(leader)
        .await
        .put("after", "1", None)
        .await
        .unwrap();
    cluster.shutdown().await;
}
