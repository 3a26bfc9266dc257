//! etcd's Watch semantics through a real etcd client: leader and followers, history replay,
//! compaction, many watchers, slow consumers, progress, fragments and bad input.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};

/// The next response on a stream, within a deadline.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a watch response in time")
        .expect("stream ok")
        .expect("stream open")
}

/// Collects events until `n` have arrived; returns them with the responses' sizes.
async fn collect(
    stream: &mut WatchStream,
    n: usize,
) -> (Vec<(EventType, String, i64)>, Vec<usize>) {
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    while events.len() < n {
        let resp = next(stream).await;
        assert!(
            !resp.canceled(),
            "unexpected cancel: {}",
            resp.cancel_reason()
        );
        if resp.events().is_empty() {
            continue;
        }
        sizes.push(resp.events().len());
        for e in resp.events() {
            let kv = e.kv().unwrap();
            events.push((
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
            ));
        }
    }
    (events, sizes)
}

fn assert_ordered_without_duplicates(events: &[(EventType, String, i64)]) {
    for w in events.windows(2) {
        assert!(
            (w[0].2, &w[0].1) < (w[1].2, &w[1].1) || w[0].2 < w[1].2,
            "events out of order or duplicated: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_every_member_sees_puts_deletes_and_txns_in_order() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let mut s = c
            .watch(
                "w/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        let created = next(&mut s).await;
        assert!(
            created.created(),
            "created is acknowledged before any event"
        );
        assert!(created.events().is_empty());
        streams.push(s);
    }
    let mut writer = cluster.client((leader + 1) % 3).await;
    writer.put("w/a", "1", None).await.unwrap();
    writer.put("w/a", "2", None).await.unwrap();
    writer.put("other", "x", None).await.unwrap();
    let txn = writer
        .txn(
            Txn::new()
                .when([Compare::version("w/a", CompareOp::Equal, 2)])
                .and_then([
                    TxnOp::put("w/b", "1", None),
                    TxnOp::put("w/c", "1", None),
                    TxnOp::delete("w/a", None),
                ]),
        )
        .await
        .unwrap();
    let txn_rev = txn.header().unwrap().revision();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let mut txn_responses = 0;
        while seen.len() < 5 {
            let resp = next(s).await;
            let revs: Vec<i64> = resp
                .events()
                .iter()
                .map(|e| e.kv().unwrap().mod_revision())
                .collect();
            if revs.contains(&txn_rev) {
                txn_responses += 1;
                assert_eq!(
                    revs.iter().filter(|r| **r == txn_rev).count(),
                    3,
                    "all events of the txn's revision in one response"
                );
            }
            for e in resp.events() {
                let kv = e.kv().unwrap();
                seen.push((
                    e.event_type(),
                    kv.key_str().unwrap().to_string(),
                    e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
                ));
            }
        }
        assert_eq!(txn_responses, 1, "member {i}");
        assert_eq!(
            seen,
            vec![
                (EventType::Put, "w/a".into(), None),
                (EventType::Put, "w/a".into(), Some("1".into())),
                (EventType::Put, "w/b".into(), None),
                (EventType::Put, "w/c".into(), None),
                (EventType::Delete, "w/a".into(), Some("2".into())),
            ],
            "member {i} sees every change once, in order, with prev_kv"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_replays_10k_writes_from_revision_one_and_compaction_cancels() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    // Ten thousand writes from concurrent clients (batched into few Raft entries).
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut c = cluster.client(leader).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                c.put(format!("h/{t:02}/{i:04}"), "v", None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;
    let current = c
        .get(
            "h/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(current.count(), 10_000);
    let head = current.header().unwrap().revision();
    assert_eq!(head, 10_001);
    let mut s = c
        .watch(
            "h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
        )
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let (events, _) = collect(&mut s, 10_000).await;
    assert_eq!(events.len(), 10_000);
    assert_ordered_without_duplicates(&events);
    assert_eq!(events.first().unwrap().2, 2);
    assert_eq!(events.last().unwrap().2, head);
    // Nothing beyond: the next event is a new write.
    c.put("h/z", "z", None).await.unwrap();
    let (after, _) = collect(&mut s, 1).await;
    assert_eq!(after[0].1, "h/z");

    // Compact, then watch from below the floor: canceled with the compact revision.
    c.compact(5000, None).await.unwrap();
    cluster.wait_revision(follower, head + 1).await;
    let mut s = c
        .watch(
            "h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(100)),
        )
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let resp = next(&mut s).await;
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.compact_revision(), 5000);
    // At the floor itself history is still there.
    let mut s = c
        .watch(
            "h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(5001)),
        )
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let (events, _) = collect(&mut s, head as usize - 5000 + 1).await;
    assert_eq!(events.first().unwrap().2, 5001);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_watchers_on_one_stream() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    let mut s = c.watch("many/0", None).await.unwrap();
    assert!(next(&mut s).await.created());
    for i in 1..10_000 {
        s.watch(format!("many/{}", i % 100), None).await.unwrap();
    }
    let mut created = 1;
    while created < 10_000 {
        let r = next(&mut s).await;
        assert!(r.created());
        created += 1;
    }
    for k in 0..100 {
        c.put(format!("many/{k}"), "v", None).await.unwrap();
    }
    let mut per_watcher = std::collections::HashMap::new();
    let mut total = 0;
    while total < 10_000 {
        let r = next(&mut s).await;
        total += r.events().len();
        *per_watcher.entry(r.watch_id()).or_insert(0) += r.events().len();
    }
    assert_eq!(per_watcher.len(), 10_000);
    assert!(
        per_watcher.values().all(|n| *n == 1),
        "each watcher got exactly its one event"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_consumer_catches_up_from_history_and_does_not_block_others() {
    // A tiny ring, so the stalled stream certainly falls off it.
    let cluster = Cluster::start_with(1, &["--watch-buffer=4"]).await;
    let mut c = cluster.client(0).await;
    let mut slow = c
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut fast = c
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut slow).await.created());
    assert!(next(&mut fast).await.created());
    let value = vec![b'x'; 2048];
    let n = 1600;
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let mut c = c.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..n / 8 {
                    c.put(format!("s/{t}/{i:05}"), value.clone(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // The fast stream keeps up while the slow one is not read at all.
    let (fast_events, _) = collect(&mut fast, n).await;
    for w in writers {
        w.await.unwrap();
    }
    assert_ordered_without_duplicates(&fast_events);
    // Now drain the slow one: everything, in order, no gaps, no duplicates.
    let (slow_events, _) = collect(&mut slow, n).await;
    assert_eq!(slow_events, fast_events);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_filters_progress_and_bad_input() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;
    let mut s = c
        .watch(
            "f/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_watch_id(42)
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut s).await;
    assert_eq!((created.created(), created.watch_id()), (true, 42));
    // A duplicate client-chosen id is refused on the stream.
    s.watch("g", Some(WatchOptions::new().with_watch_id(42)))
        .await
        .unwrap();
    let dup = next(&mut s).await;
    assert!(dup.canceled() && dup.watch_id() == 42, "{dup:?}");
    // Canceling an unknown id is ignored, as etcd does; the stream keeps working.
    s.cancel(777).await.unwrap();
    // A watch on an empty key watches "\0", as etcd does.
    s.watch("", Some(WatchOptions::new().with_watch_id(5)))
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    c.put("f/1", "a", None).await.unwrap();
    c.delete("f/1", None).await.unwrap();
    let r = next(&mut s).await;
    assert_eq!(r.watch_id(), 42);
    assert_eq!(r.events().len(), 1, "NOPUT filtered the put");
    assert_eq!(r.events()[0].event_type(), EventType::Delete);
    let rev = r.header().unwrap().revision();
    // A progress request is answered with the current revision on the stream-wide id.
    s.request_progress().await.unwrap();
    let p = next(&mut s).await;
    assert_eq!(p.watch_id(), -1);
    assert!(p.events().is_empty());
    assert_eq!(p.header().unwrap().revision(), rev);
    // Cancel works and is acknowledged.
    s.cancel(42).await.unwrap();
    let r = next(&mut s).await;
    assert!(r.canceled() && r.watch_id() == 42);
    // Periodic progress notifications reach an idle watcher that asked for them.
    let mut p = c
        .watch("idle", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    let created = next(&mut p).await;
    let at = created.header().unwrap().revision();
    let notify = next(&mut p).await;
    assert!(notify.events().is_empty() && !notify.canceled());
    assert_eq!(notify.watch_id(), created.watch_id());
    assert!(notify.header().unwrap().revision() >= at);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_responses_are_fragmented_on_request() {
    use corral::pb::etcdserverpb::watch_client::WatchClient;
    use corral::pb::etcdserverpb::watch_request::RequestUnion;
    use corral::pb::etcdserverpb::{WatchCreateRequest, WatchRequest};
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    let big = vec![b'x'; 1024 * 1024];
    let first = c
        .put("big/1", big.clone(), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("big/2", big.clone(), None).await.unwrap();
    c.put("big/3", big.clone(), None).await.unwrap();
    let mut raw = WatchClient::connect(cluster.endpoint(0))
        .await
        .unwrap()
        .max_decoding_message_size(16 << 20);
    let req = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            start_revision: first,
            fragment: true,
            ..Default::default()
        })),
    };
    let mut stream = raw
        .watch(tokio_stream::iter([req]).chain(tokio_stream::pending()))
        .await
        .unwrap()
        .into_inner();
    use tokio_stream::StreamExt;
    let created = stream.next().await.unwrap().unwrap();
    assert!(created.created);
    let mut parts = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let last = !r.fragment;
        parts.push(r.events.len());
        if last {
            break;
        }
    }
    assert!(
        parts.len() > 1,
        "the 3 MiB replay came in fragments: {parts:?}"
    );
    assert_eq!(parts.iter().sum::<usize>(), 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_a_follower_survives_leader_failover() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut c = cluster.client(follower).await;
    let mut s = c
        .watch("fo/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let mut w = cluster.client(other).await;
    for i in 0..20 {
        w.put(format!("fo/{i:03}"), "v", None).await.unwrap();
    }
    cluster.stop(leader).await;
    cluster.wait_leader_among(&[follower, other]).await;
    for i in 20..40 {
        eventually("write after failover", Duration::from_secs(20), || {
            let mut w = w.clone();
            async move { w.put(format!("fo/{i:03}"), "v", None).await.ok() }
        })
        .await;
    }
    let (events, _) = collect(&mut s, 40).await;
    let keys: Vec<String> = events.iter().map(|e| e.1.clone()).collect();
    let want: Vec<String> = (0..40).map(|i| format!("fo/{i:03}")).collect();
    assert_eq!(keys, want, "every event exactly once, across the failover");
    cluster.shutdown().await;
}
