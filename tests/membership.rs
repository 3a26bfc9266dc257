//! Membership changes through etcd's Cluster API with a real etcd client: a learner added
//! after the log was compacted catches up from a snapshot, is promoted, an old member is
//! removed, and the cluster serves writes throughout; a voter added directly; automatic
//! learners (several at once, readiness, refusals); member update, leader transfer (under
//! write load, concurrent), removing the leader, a removed member left running, a follower
//! that fell behind the log, and etcd's errors.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, http_get, serve_ops, Cluster, Reserved};
use etcd_client::{GetOptions, MemberAddOptions, WatchOptions};
use tonic::Code;

// etcd's texts, which clients match on.
const MEMBER_REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";

fn status(e: etcd_client::Error) -> tonic::Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// A client writing `<prefix>-<n>` keys one after the other until stopped; returns the keys
/// whose puts were acknowledged and the errors of the failed attempts. `acks` counts the
/// acknowledgements as they come.
fn spawn_writer_counting(
    endpoints: Vec<String>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acks: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let mut client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("writer connects");
        let (mut acked, mut failed) = (Vec::new(), Vec::new());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}-{n:06}");
            n += 1;
            match client.put(key.clone(), "v", None).await {
                Ok(_) => {
                    acked.push(key);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed.push(format!("{key}: {e}")),
            }
        }
        (acked, failed)
    })
}

/// [`spawn_writer_counting`] with `w-` keys; returns the acknowledged keys and the number of
/// failed attempts.
fn spawn_writer(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    let task = spawn_writer_counting(endpoints, "w", stop, Arc::default());
    tokio::spawn(async move {
        let (acked, failed) = task.await.expect("writer");
        (acked, failed.len())
    })
}

/// The keys under `prefix`, read linearizably through `client`.
async fn keys_under(client: &mut etcd_client::Client, prefix: &str) -> HashSet<String> {
    client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("linearizable get")
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("UTF-8 key").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_catches_up_from_a_snapshot_is_promoted_and_an_old_member_removed() {
    let mut cluster =
        Cluster::start_with(3, &["--snapshot-count=50", "--snapshot-catchup-entries=10"]).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster.client(leader).await;
    for i in 0..300 {
        client
            .put(format!("pre-{i:04}"), "x".repeat(64), None)
            .await
            .expect("put");
    }
    // The leader has compacted its log: a member added now cannot be replicated from index 1.
    let purged = eventually("the leader purged its log", Duration::from_secs(20), || {
        let m = cluster
            .node(leader)
            .handle
            .raft()
            .metrics()
            .borrow()
            .clone();
        let purged = m.purged.map_or(0, |l| l.index);
        async move { (purged > 10).then_some(purged) }
    })
    .await;

    // The founding follower removed at the end; the writer uses the two that stay.
    let old = (0..3).find(|&i| i != leader).expect("a follower");
    let stop = Arc::new(AtomicBool::new(false));
    let staying: Vec<String> = (0..3)
        .filter(|&i| i != old)
        .map(|i| cluster.endpoint(i))
        .collect();
    let writer = spawn_writer(staying, stop.clone());

    let reserved = Reserved::new().await;
    let added = client
        .member_add(
            [reserved.peer_url()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add");
    let new_id = added.member().expect("added member").id();
    assert!(added.member().unwrap().is_learner());
    assert_eq!(
        added.member().unwrap().name(),
        "",
        "unnamed until it starts"
    );
    assert_eq!(added.member_list().len(), 4);

    let new = cluster
        .join(reserved, "m3", true, &["--initial-cluster-state=existing"])
        .await;
    assert_eq!(cluster.node(new).id(), new_id, "the joiner found its id");

    // Caught up: it has everything the leader had before the add, which it can only have
    // received as a snapshot.
    let target = cluster.node(leader).handle.store().revision();
    cluster.wait_revision(new, target).await;
    let snapshot = cluster
        .node(new)
        .handle
        .raft()
        .metrics()
        .borrow()
        .snapshot
        .map_or(0, |l| l.index);
    assert!(
        snapshot >= purged,
        "the learner installed a snapshot covering the purged log (snapshot {snapshot}, purged {purged})"
    );
    let mut on_new = cluster.client(new).await;
    let got = on_new
        .get(
            "pre-",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .expect("serializable get on the learner");
    assert_eq!(got.count(), 300);

    // Named once it started.
    eventually(
        "the new member's name in the list",
        Duration::from_secs(20),
        || {
            let mut c = client.clone();
            async move {
                let list = c.member_list().await.ok()?;
                list.members()
                    .iter()
                    .any(|m| m.id() == new_id && m.name() == "m3" && !m.client_urls().is_empty())
                    .then_some(())
            }
        },
    )
    .await;

    // Promote (retrying until the learner counts as in sync), then remove a founding follower.
    eventually("promotion", Duration::from_secs(20), || {
        let mut c = client.clone();
        async move {
            match c.member_promote(new_id).await {
                Ok(_) => Some(()),
                Err(e) => {
                    let s = status(e);
                    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                    None
                }
            }
        }
    })
    .await;
    let old_id = cluster.member_id(old);
    let after = client.member_remove(old_id).await.expect("member remove");
    assert_eq!(after.members().len(), 3);
    assert!(after.members().iter().all(|m| !m.is_learner()));
    assert!(!after.members().iter().any(|m| m.id() == old_id));
    cluster.stop(old).await;

    // More writes with the new voter counted in the quorum.
    for i in 0..50 {
        client
            .put(format!("post-{i:04}"), "y", None)
            .await
            .expect("put after the change");
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await.expect("writer");
    assert!(
        acked.len() > 10,
        "the writer made progress: {} acks",
        acked.len()
    );
    assert_eq!(failed, 0, "no write failed while membership changed");

    // Every acknowledged write is on the new member, read linearizably there.
    let remaining: Vec<usize> = (0..4).filter(|&i| i != old).collect();
    let final_rev = cluster.node(leader).handle.store().revision();
    for &i in &remaining {
        cluster.wait_revision(i, final_rev).await;
    }
    let all = on_new
        .get("w-", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("linearizable get on the new member");
    let present: std::collections::HashSet<String> = all
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    for key in &acked {
        assert!(present.contains(key), "acknowledged {key} is missing");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_not_in_the_initial_cluster_joins_as_a_learner_by_itself() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster.client(leader).await;
    client.put("before", "1", None).await.expect("put");

    let learner = cluster
        .join(
            Reserved::new().await,
            "sidecar-4",
            false,
            &["--auto-learner"],
        )
        .await;
    let id = cluster.node(learner).id();
    eventually(
        "the learner in the member list",
        Duration::from_secs(20),
        || {
            let mut c = client.clone();
            async move {
                let list = c.member_list().await.ok()?;
                list.members()
                    .iter()
                    .any(|m| m.id() == id && m.is_learner() && m.name() == "sidecar-4")
                    .then_some(())
            }
        },
    )
    .await;

    // Serves serializable reads and watches from its own copy.
    let mut local = cluster.client(learner).await;
    let mut events = local
        .watch("after", Some(WatchOptions::new()))
        .await
        .expect("watch on the learner");
    client.put("after", "2", None).await.expect("put");
    let value = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let resp = events
                .message()
                .await
                .expect("watch stream")
                .expect("a response");
            if let Some(event) = resp.events().first() {
                return event.kv().expect("kv").value().to_vec();
            }
        }
    })
    .await
    .expect("watch event in time");
    assert_eq!(value, b"2");
    let got = local
        .get("before", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    assert_eq!(got.kvs()[0].value(), b"1");
    // Writes through the learner reach the leader.
    local
        .put("via-learner", "3", None)
        .await
        .expect("put via learner");
    let got = client.get("via-learner", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"3");

    // Restarted, it keeps its id and stays a learner.
    drop(events);
    drop(local);
    cluster.stop(learner).await;
    cluster.restart(learner).await;
    assert_eq!(cluster.node(learner).id(), id);
    let voters = client
        .member_list()
        .await
        .expect("list")
        .members()
        .iter()
        .filter(|m| !m.is_learner())
        .count();
    assert_eq!(voters, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_transfer_remove_leader_and_errors() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    // Through a follower: changes are forwarded to the leader.
    let mut client = cluster.client(follower).await;

    // etcd's errors, and nothing changes.
    let taken = format!("http://{}", cluster.node(leader).peer_addr);
    let e = status(client.member_add([taken.as_str()], None).await.unwrap_err());
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "etcdserver: Peer URLs already exists");
    let e = status(client.member_remove(42).await.unwrap_err());
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: member not found")
    );
    let e = status(
        client
            .member_promote(cluster.member_id(leader))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.message(), "etcdserver: can only promote a learner member");
    let e = status(client.member_add(["http://:0"], None).await.unwrap_err());
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = status(client.move_leader(42).await.unwrap_err());
    assert_eq!(e.message(), "etcdserver: bad leader transferee");
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);

    // Update the peer URLs of a learner that never started, then remove it.
    let added = client
        .member_add(
            ["http://127.0.0.1:1"],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("add");
    let id = added.member().unwrap().id();
    let updated = client
        .member_update(id, vec!["http://127.0.0.1:2".to_string()])
        .await
        .expect("update");
    let m = updated.members().iter().find(|m| m.id() == id).unwrap();
    assert_eq!(m.peer_urls(), ["http://127.0.0.1:2"]);
    let removed = client.member_remove(id).await.expect("remove learner");
    assert_eq!(removed.members().len(), 3);

    // Leader transfer to a chosen follower.
    let target = (0..3).find(|&i| i != leader && i != follower).unwrap();
    client
        .move_leader(cluster.member_id(target))
        .await
        .expect("move leader");
    assert_eq!(cluster.wait_leader().await, target);

    // Removing the leader: another member leads and writes go on.
    let removed = client
        .member_remove(cluster.member_id(target))
        .await
        .expect("remove the leader");
    assert_eq!(removed.members().len(), 2);
    // The leader committed the configuration without itself: it knows it is out.
    eventually("the removed leader knows", Duration::from_secs(20), || {
        let removed = cluster.node(target).handle.standing().removed();
        async move { removed.then_some(()) }
    })
    .await;
    cluster.stop(target).await;
    let new_leader = cluster.wait_leader_among(&[leader, follower]).await;
    assert_ne!(new_leader, target);
    client.put("after-removal", "ok", None).await.expect("put");
    cluster.shutdown().await;
}

/// etcd's MoveLeader while writes keep coming, through the leader and through a follower: the
/// leader holds new proposals (and its read-index rounds) during the transfer, so the
/// followers' lease runs out and the target wins; held writes go to the new leader, none is
/// lost or fails. Then two transfers asked at once run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_under_write_load_holds_writes_and_loses_none() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let target = (0..3).find(|&i| i != leader).expect("a follower");
    let other = (0..3)
        .find(|&i| i != leader && i != target)
        .expect("a follower");

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Vec<Arc<std::sync::atomic::AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
    // One writer on the leader (its own batches), one on a follower (proposals forwarded to
    // the leader), and linearizable reads on the leader (read-index rounds).
    let writers = [
        spawn_writer_counting(
            vec![cluster.endpoint(leader)],
            "via-leader",
            stop.clone(),
            acks[0].clone(),
        ),
        spawn_writer_counting(
            vec![cluster.endpoint(other)],
            "via-follower",
            stop.clone(),
            acks[1].clone(),
        ),
    ];
    let reader = {
        let stop = stop.clone();
        let mut c = cluster.client(leader).await;
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.get("via-leader-000000", None).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let acked_now = |acks: &[Arc<std::sync::atomic::AtomicUsize>]| {
        acks.iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    eventually("both writers under way", Duration::from_secs(10), || {
        let counts = acked_now(&acks);
        async move { counts.iter().all(|&n| n >= 20).then_some(()) }
    })
    .await;

    let mut admin = cluster.client(other).await;
    let started = Instant::now();
    admin
        .move_leader(cluster.member_id(target))
        .await
        .expect("move leader under write load");
    eprintln!("transfer under load took {:?}", started.elapsed());
    assert_eq!(cluster.wait_leader().await, target);

    // Writes go on under the new leader.
    let at_transfer = acked_now(&acks);
    eventually(
        "writes continue after the transfer",
        Duration::from_secs(10),
        || {
            let counts = acked_now(&acks);
            let at_transfer = at_transfer.clone();
            async move {
                counts
                    .iter()
                    .zip(&at_transfer)
                    .all(|(now, then)| *now >= then + 20)
                    .then_some(())
            }
        },
    )
    .await;

    // Two transfers asked at once, through different members, still under load: the second
    // waits for the first, then runs on the new leader.
    let (a, b) = (leader, other);
    let mut via_a = cluster.client(a).await;
    let mut via_b = cluster.client(b).await;
    let (id_a, id_b) = (cluster.member_id(a), cluster.member_id(b));
    let started = Instant::now();
    let (ra, rb) = tokio::join!(via_a.move_leader(id_a), via_b.move_leader(id_b));
    eprintln!("two concurrent transfers took {:?}", started.elapsed());
    ra.expect("first of two concurrent transfers");
    rb.expect("second of two concurrent transfers");
    let final_leader = cluster.wait_leader().await;
    assert!(
        final_leader == a || final_leader == b,
        "the leader is one of the targets, not {final_leader}"
    );

    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        let (keys, failed) = writer.await.expect("writer");
        assert!(
            failed.is_empty(),
            "writes failed around the transfers: {failed:?}"
        );
        acked.extend(keys);
    }
    let (reads, failed_reads) = reader.await.expect("reader");
    assert!(reads > 0);
    assert!(
        failed_reads.is_empty(),
        "linearizable reads failed: {failed_reads:?}"
    );

    // Every acknowledged write is there, exactly once (one put each: version 1).
    let mut client = cluster.client(final_leader).await;
    let mut present = keys_under(&mut client, "via-").await;
    for key in &acked {
        assert!(present.remove(key), "acknowledged {key} is missing");
    }
    let versions = client
        .get("via-", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert!(versions.kvs().iter().all(|kv| kv.version() == 1));
    cluster.shutdown().await;
}

/// etcd's MemberAdd of a voter (not a learner): it counts in the quorum as soon as the change
/// commits; started with `--initial-cluster-state existing` it finds its id, catches up, and
/// its acknowledgement is needed for writes once a founding member is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_added_with_member_add_joins_and_counts_in_the_quorum() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster.client(leader).await;
    for i in 0..50 {
        client
            .put(format!("pre-{i:03}"), "x", None)
            .await
            .expect("put");
    }

    let reserved = Reserved::new().await;
    let added = client
        .member_add([reserved.peer_url()], None)
        .await
        .expect("member add (voter)");
    let new_id = added.member().expect("added member").id();
    assert!(!added.member().unwrap().is_learner());
    assert_eq!(added.member_list().len(), 4);
    assert!(added.member_list().iter().all(|m| !m.is_learner()));
    // Three of four voters are up: the quorum (three) is met without the new one.
    client
        .put("before-start", "1", None)
        .await
        .expect("put with the new voter not started");

    let new = cluster
        .join(reserved, "m3", true, &["--initial-cluster-state=existing"])
        .await;
    assert_eq!(cluster.node(new).id(), new_id, "the joiner found its id");
    let rev = cluster.node(leader).handle.store().revision();
    cluster.wait_revision(new, rev).await;
    eventually(
        "the new voter named in the list",
        Duration::from_secs(20),
        || {
            let mut c = client.clone();
            async move {
                let list = c.member_list().await.ok()?;
                let voters = list.members().iter().filter(|m| !m.is_learner()).count();
                let named = list
                    .members()
                    .iter()
                    .any(|m| m.id() == new_id && m.name() == "m3" && !m.is_learner());
                (voters == 4 && named).then_some(())
            }
        },
    )
    .await;

    // With a founding follower down, a write needs three of the four voters: the new one's
    // acknowledgement is what makes the quorum.
    let down = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.stop(down).await;
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(10),
            client.put(format!("quorum-{i:02}"), "y", None),
        )
        .await
        .expect("write in time with the new voter in the quorum")
        .expect("put");
    }
    // Reads on it, and every running member's store identical at one revision.
    let mut on_new = cluster.client(new).await;
    let got = on_new
        .get("quorum-", Some(GetOptions::new().with_prefix()))
        .await
        .expect("linearizable get on the new voter");
    assert_eq!(got.kvs().len(), 20);
    let rev = cluster.node(leader).handle.store().revision();
    let running: Vec<usize> = (0..4).filter(|&i| i != down).collect();
    let first = cluster.hash_kv(running[0], rev).await;
    for &i in &running[1..] {
        assert_eq!(
            cluster.hash_kv(i, rev).await,
            first,
            "member {i}'s HashKV at {rev}"
        );
    }
    cluster.shutdown().await;
}

/// etcd's errors for bad membership requests, each with etcd's code and text; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_errors_are_etcds() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let mut client = cluster.client(follower).await;

    let e = status(
        client
            .member_update(42, vec!["http://127.0.0.1:9".to_string()])
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code(), e.message()), (Code::NotFound, MEMBER_NOT_FOUND));
    let e = status(
        client
            .member_update(cluster.member_id(follower), Vec::<String>::new())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, BAD_URLS));
    let e = status(
        client
            .member_add(Vec::<String>::new(), None)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, BAD_URLS));
    let e = status(client.member_add(["not a url"], None).await.unwrap_err());
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, BAD_URLS));

    let learner = client
        .member_add(
            ["http://127.0.0.1:1"],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("add a learner")
        .member()
        .expect("added member")
        .id();
    let e = status(client.move_leader(learner).await.unwrap_err());
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, BAD_TRANSFEREE)
    );
    // The reply's list: the leader's, after the change (this member may not have applied it).
    let list = client
        .member_remove(learner)
        .await
        .expect("remove the learner");
    assert_eq!(list.members().len(), 3);
    let peer_urls: Vec<Vec<String>> = list
        .members()
        .iter()
        .map(|m| m.peer_urls().to_vec())
        .collect();
    assert!(peer_urls.iter().all(|u| u.len() == 1), "{peer_urls:?}");
    assert_eq!(cluster.wait_leader().await, leader, "nothing moved");
    cluster.shutdown().await;

    // The last voter cannot be removed (etcd: no started member would be left for a quorum).
    let solo = Cluster::start(1).await;
    let mut client = solo.client(0).await;
    let e = status(client.member_remove(solo.member_id(0)).await.unwrap_err());
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, NOT_ENOUGH_STARTED)
    );
    client.put("still", "serving", None).await.expect("put");
    solo.shutdown().await;
}

/// A follower stopped while the cluster writes far past its log retention: restarted, it can
/// only catch up from a snapshot. It installs one, ends with the same HashKV as the others at
/// the same revision, and, since a snapshot carries the MVCC history (as etcd's, a copy of the
/// whole backend), a watch on it from a revision before the gap delivers every event. Once
/// that history is compacted, the same watch is refused as etcd refuses it: canceled, with
/// the compaction revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_log_catches_up_from_a_snapshot() {
    let mut cluster =
        Cluster::start_with(3, &["--snapshot-count=50", "--snapshot-catchup-entries=10"]).await;
    let leader = cluster.wait_leader().await;
    let lagger = (0..3).find(|&i| i != leader).expect("a follower");
    let mut client = cluster.client(leader).await;
    for i in 0..20 {
        client
            .put(format!("k-before-{i:03}"), "x", None)
            .await
            .expect("put");
    }
    let first_rev = 2; // revision 1 is the empty store; every write here is one revision
    let rev_before = cluster.node(leader).handle.store().revision();
    cluster.wait_revision(lagger, rev_before).await;
    let lagger_last = cluster
        .node(lagger)
        .handle
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    cluster.stop(lagger).await;

    for i in 0..300 {
        client
            .put(format!("k-gap-{i:04}"), "y".repeat(32), None)
            .await
            .expect("put");
        if i % 10 == 9 {
            client
                .delete(format!("k-gap-{:04}", i - 5), None)
                .await
                .expect("delete");
        }
    }
    let purged = eventually(
        "the leader purged its log past the stopped follower",
        Duration::from_secs(20),
        || {
            let purged = cluster
                .node(leader)
                .handle
                .raft()
                .metrics()
                .borrow()
                .purged
                .map_or(0, |l| l.index);
            async move { (purged > lagger_last).then_some(purged) }
        },
    )
    .await;

    cluster.restart(lagger).await;
    let target = cluster.node(leader).handle.store().revision();
    cluster.wait_revision(lagger, target).await;
    let lagging = &cluster.node(lagger).handle;
    assert!(
        lagging.metrics().snapshots_received.get() >= 1,
        "the follower received a snapshot"
    );
    let snapshot = lagging
        .raft()
        .metrics()
        .borrow()
        .snapshot
        .map_or(0, |l| l.index);
    assert!(
        snapshot >= purged,
        "its snapshot covers the purged log (snapshot {snapshot}, purged {purged})"
    );
    let hashes = [
        cluster.hash_kv(0, target).await,
        cluster.hash_kv(1, target).await,
        cluster.hash_kv(2, target).await,
    ];
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "HashKV at {target}: {hashes:?}"
    );
    assert_eq!(hashes[0].1, target);

    // A watch on it from before the gap: every revision's event, in order.
    let mut on_lagger = cluster.client(lagger).await;
    let mut events = on_lagger
        .watch(
            "k-",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first_rev),
            ),
        )
        .await
        .expect("watch on the caught-up follower");
    let mut revisions = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while revisions.last() != Some(&target) {
            let resp = events
                .message()
                .await
                .expect("watch stream")
                .expect("a response");
            assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
            revisions.extend(
                resp.events()
                    .iter()
                    .map(|e| e.kv().expect("kv").mod_revision()),
            );
        }
    })
    .await
    .expect("every event in time");
    assert_eq!(revisions, (first_rev..=target).collect::<Vec<_>>());

    // Compacted history: etcd cancels a watch from before the compaction revision and says
    // which revision it was compacted to.
    let compact_at = target - 50;
    client.compact(compact_at, None).await.expect("compact");
    eventually(
        "the follower applied the compaction",
        Duration::from_secs(20),
        || {
            let compacted = cluster.node(lagger).handle.store().compacted();
            async move { (compacted >= compact_at).then_some(()) }
        },
    )
    .await;
    let mut events = on_lagger
        .watch(
            "k-",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first_rev),
            ),
        )
        .await
        .expect("watch");
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let resp = events
                .message()
                .await
                .expect("watch stream")
                .expect("a response");
            if resp.canceled() {
                return resp;
            }
        }
    })
    .await
    .expect("the compacted watch is refused in time");
    assert_eq!(refused.compact_revision(), compact_at);
    assert!(refused.events().is_empty());
    cluster.shutdown().await;
}

/// A member removed from the cluster and left running stops serving what needs the cluster,
/// as etcd's removed member does: `/readyz` and `/health` fail with etcd's text, and so do
/// writes and linearizable reads through it. Checked for a voter (it campaigns, unaware) and a
/// learner (it would keep believing in its leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_left_running_stops_serving() {
    let mut cluster = Cluster::start_with(3, &["--auto-learner"]).await;
    let learner = cluster
        .join(
            Reserved::new().await,
            "sidecar-3",
            false,
            &["--auto-learner"],
        )
        .await;
    let leader = cluster.wait_leader().await;
    let voter = (0..3).find(|&i| i != leader).expect("a follower");
    let ops: Vec<_> = [voter, learner]
        .iter()
        .map(|&i| (i, cluster.node(i)))
        .collect();
    let mut ops_addrs = Vec::new();
    for (i, node) in ops {
        let addr = serve_ops(node).await;
        eventually(
            &format!("member {i} ready"),
            Duration::from_secs(20),
            || async move { (http_get(addr, "/readyz").await.0 == 200).then_some(()) },
        )
        .await;
        ops_addrs.push((i, addr));
    }

    let mut client = cluster.client(leader).await;
    client.put("before", "1", None).await.expect("put");
    for &i in &[voter, learner] {
        client
            .member_remove(cluster.member_id(i))
            .await
            .expect("member remove");
    }
    assert_eq!(client.member_list().await.expect("list").members().len(), 2);

    for (i, addr) in ops_addrs {
        let body = eventually(
            &format!("removed member {i} not ready"),
            Duration::from_secs(20),
            || async move {
                let (code, body) = http_get(addr, "/readyz").await;
                // Until it notices, it may answer "no leader" or "no quorum".
                (code == 503 && body == MEMBER_REMOVED).then_some(body)
            },
        )
        .await;
        assert_eq!(body, MEMBER_REMOVED, "member {i}'s /readyz");
        assert!(cluster.node(i).handle.standing().removed());
        let (code, body) = http_get(addr, "/health").await;
        assert_eq!(code, 503);
        let health: serde_json::Value = serde_json::from_str(&body).expect("JSON health");
        assert_eq!(health["health"], "false");
        assert_eq!(health["reason"], MEMBER_REMOVED);

        let mut on_removed = cluster.client(i).await;
        let e = status(on_removed.put("via-removed", "x", None).await.unwrap_err());
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unavailable, MEMBER_REMOVED),
            "put via {i}"
        );
        let e = status(on_removed.get("before", None).await.unwrap_err());
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unavailable, MEMBER_REMOVED),
            "linearizable get via {i}"
        );
    }
    // The cluster goes on without them.
    client
        .put("after", "2", None)
        .await
        .expect("put after the removals");
    assert!(client
        .get("via-removed", None)
        .await
        .expect("get")
        .kvs()
        .is_empty());
    cluster.shutdown().await;
}

/// A StatefulSet of sidecars scaled from 4 to 7: three automatic learners join at once. None
/// reports ready before it has caught up (here: while the leader cannot reach them, so they
/// have nothing), then each does, as a learner, and serves serializable reads of everything
/// written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_learners_join_at_once_and_are_ready_only_once_caught_up() {
    let mut cluster = Cluster::start_with(3, &["--auto-learner"]).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster.client(leader).await;
    for i in 0..100 {
        client
            .put(format!("pre-{i:03}"), "x", None)
            .await
            .expect("put");
    }
    let sidecar = cluster
        .join(
            Reserved::new().await,
            "sidecar-3",
            false,
            &["--auto-learner"],
        )
        .await;
    let mut reserved = Vec::new();
    for name in ["sidecar-4", "sidecar-5", "sidecar-6"] {
        reserved.push((name, Reserved::new().await));
    }
    // The founders cannot send the newcomers anything (their ids are derived from name and
    // peer URL, with the default token): joined, but not caught up.
    let ids: Vec<u64> = reserved
        .iter()
        .map(|(name, r)| corral::config::member_id_for("corral-cluster", name, &[r.peer_url()]))
        .collect();
    for i in 0..4 {
        for &id in &ids {
            cluster.node(i).faults.block(id);
        }
    }
    let learners = cluster.join_many(reserved, &["--auto-learner"]).await;
    assert_eq!(
        learners
            .iter()
            .map(|&i| cluster.member_id(i))
            .collect::<Vec<_>>(),
        ids
    );
    let mut ops = Vec::new();
    for &i in &learners {
        ops.push((i, serve_ops(cluster.node(i)).await));
    }
    eventually("the three learners added", Duration::from_secs(20), || {
        let mut c = client.clone();
        let ids = ids.clone();
        async move {
            let list = c.member_list().await.ok()?;
            let learners = ids
                .iter()
                .filter(|id| {
                    list.members()
                        .iter()
                        .any(|m| m.id() == **id && m.is_learner())
                })
                .count();
            (learners == 3).then_some(())
        }
    })
    .await;
    for &(i, addr) in &ops {
        let (code, body) = http_get(addr, "/readyz").await;
        assert_eq!(
            code, 503,
            "learner {i} is not ready before catching up: {body}"
        );
        assert!(body.contains("not caught up"), "{body}");
    }

    let commit_at_join = cluster
        .node(leader)
        .handle
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    cluster.heal();
    for &(i, addr) in &ops {
        eventually(
            &format!("learner {i} ready"),
            Duration::from_secs(30),
            || async move { (http_get(addr, "/readyz").await.0 == 200).then_some(()) },
        )
        .await;
        let applied = cluster
            .node(i)
            .handle
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        assert!(
            applied >= commit_at_join,
            "learner {i} ready at {applied}, before {commit_at_join}"
        );
        // Ready means its own copy already has what was written before it joined.
        let got = cluster
            .client(i)
            .await
            .get(
                "pre-",
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await
            .expect("serializable get on a learner");
        assert_eq!(got.kvs().len(), 100, "learner {i}");
    }
    let list = client.member_list().await.expect("list");
    assert_eq!(list.members().len(), 7);
    assert_eq!(list.members().iter().filter(|m| m.is_learner()).count(), 4);
    for name in ["sidecar-3", "sidecar-4", "sidecar-5", "sidecar-6"] {
        assert!(
            list.members()
                .iter()
                .any(|m| m.name() == name && m.is_learner()),
            "{name}"
        );
    }
    assert!(cluster
        .node(sidecar)
        .handle
        .standing()
        .not_ready()
        .is_none());
    cluster.shutdown().await;
}

/// A joining member the cluster refuses says why (in its log and on `/readyz`) instead of
/// retrying in silence: one configured with another cluster's token, and one whose peer URLs
/// belong to a member already known under another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_joins_are_reported() {
    let mut cluster = Cluster::start_with(3, &["--auto-learner"]).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster.client(leader).await;

    let stranger = cluster
        .join(
            Reserved::new().await,
            "stranger",
            false,
            &["--auto-learner", "--initial-cluster-token=another-cluster"],
        )
        .await;
    let reason = eventually("the stranger refused", Duration::from_secs(20), || {
        let reason = cluster.node(stranger).handle.standing().not_ready();
        async move { reason.filter(|r| r.starts_with("join refused")) }
    })
    .await;
    assert!(reason.contains("cluster ID mismatch"), "{reason}");
    assert!(reason.contains("another-cluster"), "{reason}");
    let addr = serve_ops(cluster.node(stranger)).await;
    assert_eq!(http_get(addr, "/readyz").await, (503, reason));
    assert_eq!(client.member_list().await.expect("list").members().len(), 3);
    cluster.stop(stranger).await;

    // A member added and started as m3, then started again from a fresh data directory at
    // the same peer URL under another name: the id its URL maps to is m3's.
    let reserved = Reserved::new().await;
    let added = client
        .member_add(
            [reserved.peer_url()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add")
        .member()
        .expect("added")
        .id();
    let m3 = cluster
        .join(reserved, "m3", true, &["--initial-cluster-state=existing"])
        .await;
    eventually("m3 named", Duration::from_secs(20), || {
        let mut c = client.clone();
        async move {
            let list = c.member_list().await.ok()?;
            list.members()
                .iter()
                .any(|m| m.id() == added && m.name() == "m3")
                .then_some(())
        }
    })
    .await;
    let (c, p) = cluster.addrs(m3);
    cluster.stop(m3).await;
    let impostor = cluster
        .join(
            Reserved::again(c, p).await,
            "m4",
            true,
            &["--initial-cluster-state=existing"],
        )
        .await;
    assert_eq!(cluster.node(impostor).id(), added);
    let reason = eventually("the second name refused", Duration::from_secs(20), || {
        let reason = cluster.node(impostor).handle.standing().not_ready();
        async move { reason.filter(|r| r.starts_with("join refused")) }
    })
    .await;
    assert!(reason.contains("already named \"m3\""), "{reason}");
    let list = client.member_list().await.expect("list");
    assert!(list
        .members()
        .iter()
        .any(|m| m.id() == added && m.name() == "m3"));
    cluster.shutdown().await;
}
