//! SIGKILL against real `corral serve` processes: an acknowledged write was fsynced on a
//! majority, so no crash of any member — or of all of them at once — may lose it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::eventually;
use common::process::ProcessCluster;
use etcd_client::GetOptions;

async fn write_some(
    c: &mut etcd_client::Client,
    prefix: &str,
    n: usize,
    acked: &mut BTreeMap<String, String>,
) {
    for i in 0..n {
        let (k, v) = (format!("{prefix}{i:04}"), format!("v{i}"));
        if c.put(k.clone(), v.clone(), None).await.is_ok() {
            acked.insert(k, v);
        }
    }
}

async fn assert_present(cluster: &ProcessCluster, i: usize, acked: &BTreeMap<String, String>) {
    // A linearizable read: it waits until this member has applied everything committed.
    let stored = eventually(
        &format!("member {i} serves a linearizable read"),
        Duration::from_secs(30),
        || async {
            let mut c = cluster.client(i).await;
            let r = c
                .get("k", Some(GetOptions::new().with_prefix()))
                .await
                .ok()?;
            Some(
                r.kvs()
                    .iter()
                    .map(|kv| {
                        (
                            kv.key_str().unwrap().to_string(),
                            kv.value_str().unwrap().to_string(),
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            )
        },
    )
    .await;
    for (k, v) in acked {
        assert_eq!(
            stored.get(k),
            Some(v),
            "acknowledged {k} survived on member {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_leader_and_of_every_member_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut acked = BTreeMap::new();
    let mut c = cluster.client(follower).await;
    write_some(&mut c, "ka", 100, &mut acked).await;
    assert_eq!(
        acked.len(),
        100,
        "a healthy cluster acknowledges every write"
    );

    // kill -9 the leader; the survivors elect and keep taking writes.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let mut c = cluster.client(follower).await;
    write_some(&mut c, "kb", 100, &mut acked).await;
    cluster.restart(leader);
    for i in 0..3 {
        assert_present(&cluster, i, &acked).await;
    }

    // kill -9 every member right after acknowledged writes, then start them all again.
    let mut c = cluster.client(cluster.wait_leader().await).await;
    write_some(&mut c, "kc", 100, &mut acked).await;
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader().await;
    for i in 0..3 {
        assert_present(&cluster, i, &acked).await;
    }
}
