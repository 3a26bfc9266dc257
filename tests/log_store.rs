//! Tests of the sled-backed Raft log store: group commit, durability across reopen, reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use corral::raft::types::{Entry, LogId, TypeConfig, Vote};
use corral::storage::log_store::LogStore;
use openraft::storage::{LogState, RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload};

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    openraft::Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

/// Test data goes under Cargo's target tmpdir: a real disk, where an fsync costs what it costs
/// in production (a tmpfs fsync is nearly free and would hide the value of group commit).
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create tempdir")
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

const APPENDS: u64 = 3000;

/// On one thread the appender and the flusher take turns, so this is deterministic: each flush
/// covers every append made while the previous one ran (Tokio's cooperative budget makes the
/// appender yield at least every ~128 queued callbacks), i.e. groups of a hundred or more.
#[tokio::test(flavor = "current_thread")]
async fn group_commit_on_one_thread() -> anyhow::Result<()> {
    let flushes = append_many_with_callbacks().await?;
    assert!(
        flushes * 10 <= APPENDS,
        "group commit: {flushes} flushes for {APPENDS} appends"
    );
    Ok(())
}

/// With the flusher on another core the group size depends on fsync latency against append
/// speed (on an idle ext4 disk, groups of ~50), so the bound here is loose, only proving that
/// appends do share flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_on_two_threads() -> anyhow::Result<()> {
    let flushes = append_many_with_callbacks().await?;
    assert!(
        flushes * 2 <= APPENDS,
        "group commit: {flushes} flushes for {APPENDS} appends"
    );
    Ok(())
}

/// Appends `APPENDS` single-entry batches back to back without waiting for their callbacks
/// (as openraft does), then checks every callback fired OK, in order, and returns the number of
/// flushes that took.
async fn append_many_with_callbacks() -> anyhow::Result<u64> {
    let dir = tempdir();
    let mut store = LogStore::open(&dir.path().join("raft-log"))?;

    let completed = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for index in 1..=APPENDS {
        let completed = completed.clone();
        let done_tx = done_tx.clone();
        store
            .append_and_notify([blank(1, index)], move |result| {
                completed.fetch_add(1, Ordering::SeqCst);
                let _ = done_tx.send((index, result.map_err(|e| e.to_string())));
            })
            .await?;
    }
    drop(done_tx);

    let mut next = 1;
    while let Some((index, result)) = done_rx.recv().await {
        assert_eq!(index, next, "callbacks fire in append order");
        assert_eq!(result, Ok(()), "callback {index} failed");
        next += 1;
    }
    assert_eq!(next - 1, APPENDS, "every callback fired exactly once");
    assert_eq!(completed.load(Ordering::SeqCst), APPENDS);

    let flushes = store.flush_count();
    eprintln!("{APPENDS} appends, {flushes} flushes");
    assert!(flushes >= 1);

    // Everything appended is readable, in order, and the state reflects it.
    let entries = store.try_get_log_entries(..).await?;
    assert_eq!(indexes(&entries), (1..=APPENDS).collect::<Vec<_>>());
    assert_eq!(
        store.get_log_state().await?,
        LogState::<TypeConfig> {
            last_purged_log_id: None,
            last_log_id: Some(log_id(1, APPENDS))
        }
    );
    Ok(flushes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trait_append_with_real_log_flushed_callback() -> anyhow::Result<()> {
    // `LogFlushed::new` is crate-private in openraft; `RaftLogStorageExt::blocking_append`
    // builds a real one and waits for it, so it drives the trait's `append` end to end.
    let dir = tempdir();
    let mut store = LogStore::open(&dir.path().join("raft-log"))?;
    for index in 1..=20 {
        store.blocking_append([blank(1, index)]).await?;
    }
    assert_eq!(
        store.flush_count(),
        20,
        "a lone append waits for exactly one flush"
    );
    let mut reader = store.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(5..=7).await?),
        vec![5, 6, 7]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen() -> anyhow::Result<()> {
    let dir = tempdir();
    let path = dir.path().join("raft-log");
    let vote = Vote::new_committed(3, 2);
    {
        let mut store = LogStore::open(&path)?;
        assert_eq!(store.read_vote().await?, None);
        assert_eq!(store.get_log_state().await?, LogState::default());

        store.save_vote(&vote).await?;
        store.blocking_append((1..=10).map(|i| blank(1, i))).await?;
        store
            .blocking_append((11..=20).map(|i| blank(2, i)))
            .await?;
        store.save_committed(Some(log_id(2, 12))).await?;
        store.purge(log_id(1, 4)).await?;
        store.truncate(log_id(2, 16)).await?;
        // Append after truncate: the new entries replace the truncated ones.
        store.blocking_append([blank(3, 16)]).await?;

        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(3, 16)));
        // The store (and its flusher's channel) is dropped here.
    }

    let mut store = LogStore::open(&path)?;
    assert_eq!(store.read_vote().await?, Some(vote));
    assert_eq!(store.read_committed().await?, Some(log_id(2, 12)));
    assert_eq!(
        store.get_log_state().await?,
        LogState::<TypeConfig> {
            last_purged_log_id: Some(log_id(1, 4)),
            last_log_id: Some(log_id(3, 16)),
        }
    );
    let entries = store.try_get_log_entries(0..100).await?;
    let expected: Vec<Entry> = (5..=10)
        .map(|i| blank(1, i))
        .chain((11..=15).map(|i| blank(2, i)))
        .chain([blank(3, 16)])
        .collect();
    assert_eq!(entries, expected);

    // Purging everything: the log state keeps pointing at the purge point.
    store.purge(log_id(3, 16)).await?;
    drop(store);
    let mut store = LogStore::open(&path)?;
    assert_eq!(
        store.get_log_state().await?,
        LogState::<TypeConfig> {
            last_purged_log_id: Some(log_id(3, 16)),
            last_log_id: Some(log_id(3, 16)),
        }
    );
    assert!(store.try_get_log_entries(..).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_read_stops_at_first_gap() -> anyhow::Result<()> {
    let dir = tempdir();
    let mut store = LogStore::open(&dir.path().join("raft-log"))?;
    // Entries 3..=5 and 8..=9: a gap at 6..=7. (openraft never writes a gap; this simulates
    // one to check the reader's contract.)
    store.blocking_append((3..=5).map(|i| blank(1, i))).await?;
    store.blocking_append((8..=9).map(|i| blank(1, i))).await?;

    assert_eq!(
        indexes(&store.try_get_log_entries(0..100).await?),
        vec![3, 4, 5]
    );
    assert_eq!(indexes(&store.try_get_log_entries(4..).await?), vec![4, 5]);
    assert_eq!(indexes(&store.try_get_log_entries(4..5).await?), vec![4]);
    assert_eq!(
        indexes(&store.try_get_log_entries(6..100).await?),
        vec![8, 9]
    );
    assert_eq!(indexes(&store.try_get_log_entries(8..=8).await?), vec![8]);
    assert!(store.try_get_log_entries(6..8).await?.is_empty());
    assert!(store.try_get_log_entries(5..5).await?.is_empty());
    assert!(store.try_get_log_entries(10..).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flusher_stops_when_store_is_dropped() -> anyhow::Result<()> {
    let dir = tempdir();
    let path = dir.path().join("raft-log");
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    let mut store = LogStore::open(&path)?;
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before + 1,
        "open spawns the flusher"
    );
    let reader = store.reader();
    let (tx, rx) = tokio::sync::oneshot::channel();
    store
        .append_and_notify([blank(1, 1)], move |r| {
            let _ = tx.send(r.is_ok());
        })
        .await?;
    drop(store);
    // A callback queued before the drop is still served (the reader keeps the Db open).
    assert!(rx.await?);

    // The store held the only sender: the flusher sees the channel closed and ends.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flusher task still alive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // The reader still works without the store, and once it is gone the log reopens.
    let mut reader = reader;
    assert_eq!(indexes(&reader.try_get_log_entries(..).await?), vec![1]);
    drop(reader);
    let mut store = LogStore::open(&path)?;
    assert_eq!(indexes(&store.try_get_log_entries(..).await?), vec![1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_a_storage_error_not_a_panic() -> anyhow::Result<()> {
    let dir = tempdir();
    let path = dir.path().join("raft-log");
    {
        let mut store = LogStore::open(&path)?;
        store.save_vote(&Vote::new(1, 1)).await?;
        store.blocking_append((1..=4).map(|i| blank(1, i))).await?;
    }
    {
        // Damage the files' contents behind the store's back (tree names are the store's
        // on-disk format: `log` and `meta`).
        let db = sled::open(&path)?;
        let log = db.open_tree("log")?;
        log.insert(2u64.to_be_bytes(), &b"not bincode"[..])?;
        // A well-formed entry under the wrong index.
        log.insert(4u64.to_be_bytes(), bincode::serialize(&blank(1, 9))?)?;
        db.open_tree("meta")?.insert("vote", &b"x"[..])?;
        db.flush()?;
    }

    let mut store = LogStore::open(&path)?;
    assert!(store.read_vote().await.is_err());
    assert_eq!(indexes(&store.try_get_log_entries(1..2).await?), vec![1]);
    assert!(store.try_get_log_entries(1..=3).await.is_err());
    assert!(store.try_get_log_entries(4..).await.is_err());
    assert!(
        store.get_log_state().await.is_err(),
        "the last entry is corrupt"
    );
    Ok(())
}

/// An entry carrying one put with a `size`-byte value.
fn put(term: u64, index: u64, size: usize) -> Entry {
    use corral::command::Command;
    use corral::pb::etcdserverpb::PutRequest;
    openraft::Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(corral::raft::types::Proposal {
            commands: [Command::Put(PutRequest {
                key: format!("k{index}").into_bytes(),
                value: vec![b'v'; size],
                ..Default::default()
            })]
            .into(),
        }),
    }
}

/// Recent entries are served from memory; after appends, a truncation, a purge and more
/// entries than memory keeps, every read must still match what sled holds (read back after a
/// reopen, with nothing in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_memory_match_the_log() -> anyhow::Result<()> {
    let dir = tempdir();
    let path = dir.path().join("raft-log");
    let ranges = |last: u64| {
        [
            (0, last + 5),
            (1, 3),
            (last.saturating_sub(3), last + 1),
            (last, last + 1),
            (last + 1, last + 9),
            (2, 2),
        ]
    };
    let mut seen = Vec::new();
    {
        let mut store = LogStore::open(&path)?;
        store
            .blocking_append((1..=10).map(|i| put(1, i, 100)))
            .await?;
        // A new leader's entries replace 7..=10.
        store.truncate(log_id(1, 7)).await?;
        store
            .blocking_append((7..=12).map(|i| put(2, i, 100)))
            .await?;
        assert_eq!(store.try_get_log_entries(7..8).await?, vec![put(2, 7, 100)]);
        store.purge(log_id(1, 3)).await?;
        // 6 MiB of entries: more than memory keeps, so old ones are read from sled.
        store
            .blocking_append((13..=18).map(|i| put(2, i, 1 << 20)))
            .await?;
        for (start, end) in ranges(18) {
            seen.push(store.try_get_log_entries(start..end).await?);
        }
        seen.push(store.try_get_log_entries(5..).await?);
    }
    let mut store = LogStore::open(&path)?;
    let mut i = 0;
    for (start, end) in ranges(18) {
        assert_eq!(
            store.try_get_log_entries(start..end).await?,
            seen[i],
            "{start}..{end}"
        );
        i += 1;
    }
    let all = store.try_get_log_entries(5..).await?;
    assert_eq!(all, seen[i]);
    assert_eq!(indexes(&all), (5..=18).collect::<Vec<_>>());
    assert_eq!(all[2], put(2, 7, 100));
    Ok(())
}
