//! The state store's plain (non-batch) commits and what makes them crash-safe: the `TORN`
//! marker, its durable removal by a clean flush, and the state machine rebuilding a marked
//! store from its snapshot (see `corral::storage::state`).
//!
//! "Crash" here is dropping the store without its `flush`: sled writes out its buffers on drop
//! (as its periodic flush would before a real crash), so the reopened tree holds every commit,
//! marker included, exactly the case a rebuild must handle.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::command::Command;
use corral::pb::etcdserverpb::PutRequest;
use corral::raft::state_machine::StateMachine;
use corral::raft::types::{Entry, LogId, Proposal};
use corral::storage::state::StateStore;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

/// Opens the store, retrying while sled still holds the directory lock of a dropped one.
fn open_store(dir: &Path) -> Arc<StateStore> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match StateStore::open(&dir.join("state")) {
            Ok(store) => return Arc::new(store),
            Err(e) if Instant::now() < deadline => {
                eprintln!("reopening the state store: {e}; retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening the state store: {e}"),
        }
    }
}

fn open_sm(dir: &Path, store: Arc<StateStore>) -> Result<StateMachine, String> {
    StateMachine::open(
        store,
        &dir.join("snapshot.bin"),
        corral::watch::WatchHub::default(),
        Default::default(),
    )
    .map_err(|e| e.to_string())
}

fn put_entry(index: u64, key: &str) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal {
            commands: [Command::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: format!("value of {key}").into_bytes(),
                ..Default::default()
            })]
            .into(),
        }),
    }
}

/// The latest value of `key`, read as a client would.
fn value(store: &StateStore, key: &str) -> Option<Vec<u8>> {
    corral::mvcc::get(&store.backend(), key.as_bytes(), store.revision())
        .expect("read")
        .map(|kv| kv.value)
}

/// Applies one put of `k<i>` per index in `indexes`, as the log would hand them over.
async fn apply_puts(sm: &mut StateMachine, indexes: std::ops::RangeInclusive<u64>) {
    sm.apply(indexes.map(|i| put_entry(i, &format!("k{i}"))))
        .await
        .expect("apply");
}

/// Builds a snapshot of everything applied so far.
async fn snapshot(sm: &mut StateMachine) -> corral::raft::types::Snapshot {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot")
}

fn one_put(key: &str) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    BTreeMap::from([(key.as_bytes().to_vec(), Some(b"v".to_vec()))])
}

#[tokio::test]
async fn plain_commits_are_marked_torn_until_a_clean_flush() {
    let dir = tempfile::tempdir().expect("tempdir");

    let store = open_store(dir.path());
    assert!(!store.torn(), "a new store is not torn");
    // Atomic commits (the default until a state machine allows plain ones) never mark.
    store.commit(one_put("a"), &[], 2, 0).expect("commit");
    assert!(!store.torn(), "an atomic commit marked the store");
    store.set_atomic_commits(false);
    store.commit(one_put("b"), &[], 3, 0).expect("commit");
    assert!(store.torn(), "a plain commit did not mark the store");
    drop(store);

    let store = open_store(dir.path());
    assert!(store.torn(), "the marker did not survive an unclean close");
    // A dump (snapshots, backups) never carries the marker: it describes this disk only.
    let dump = store.dump().expect("dump");
    assert!(
        !dump.iter().any(|(k, _)| k.ends_with(b"torn")),
        "the marker is in a dump"
    );
    store.set_atomic_commits(false);
    store.commit(one_put("c"), &[], 4, 0).expect("commit");
    store.flush().await.expect("flush");
    assert!(
        !store.torn(),
        "a flush with no commit under way left the marker"
    );
    drop(store);

    let store = open_store(dir.path());
    assert!(!store.torn(), "the clean flush did not reach the disk");
    assert_eq!(store.revision(), 4);
}

#[tokio::test]
async fn a_torn_state_is_rebuilt_from_its_snapshot_and_the_log_replays_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");

    let mut sm = open_sm(dir.path(), open_store(dir.path())).expect("open");
    apply_puts(&mut sm, 1..=3).await;
    let built = snapshot(&mut sm).await;
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
    apply_puts(&mut sm, 4..=5).await;
    assert!(
        sm.store().torn(),
        "plain commits after a snapshot are marked"
    );
    assert!(value(sm.store(), "k5").is_some());
    drop(sm);

    // Reopened after an unclean close: the state is the snapshot's, not the torn tree's.
    let store = open_store(dir.path());
    assert!(store.torn());
    let mut sm = open_sm(dir.path(), store).expect("reopen");
    assert!(!sm.store().torn(), "the rebuilt store is still marked");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(3), "resumes at the snapshot");
    assert!(value(sm.store(), "k3").is_some(), "lost a snapshotted key");
    assert_eq!(
        value(sm.store(), "k4"),
        None,
        "kept a write after the snapshot"
    );
    let revision_at_snapshot = sm.store().revision();

    // The log replays the entries after the snapshot: same keys, same revisions as before.
    apply_puts(&mut sm, 4..=5).await;
    assert_eq!(sm.store().revision(), revision_at_snapshot + 2);
    assert_eq!(value(sm.store(), "k5"), Some(b"value of k5".to_vec()));
}

#[tokio::test]
async fn a_torn_state_without_a_snapshot_starts_empty_for_a_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");

    let mut sm = open_sm(dir.path(), open_store(dir.path())).expect("open");
    apply_puts(&mut sm, 1..=2).await;
    assert!(sm.store().torn());
    drop(sm);

    let mut sm = open_sm(dir.path(), open_store(dir.path())).expect("reopen");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, None, "the whole log replays");
    assert_eq!(value(sm.store(), "k1"), None);
    assert_eq!(sm.store().revision(), corral::mvcc::INITIAL_REVISION);
}

#[tokio::test]
async fn a_clean_shutdown_needs_no_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");

    let mut sm = open_sm(dir.path(), open_store(dir.path())).expect("open");
    apply_puts(&mut sm, 1..=2).await;
    sm.store().flush().await.expect("flush");
    drop(sm);

    let mut sm = open_sm(dir.path(), open_store(dir.path())).expect("reopen");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(2));
    assert!(value(sm.store(), "k2").is_some());
}

/// A store seeded from a backup holds data no log entry produced, so it cannot be rebuilt
/// from nothing: it commits atomically until its first snapshot exists.
#[tokio::test]
async fn a_restored_store_commits_atomically_until_its_first_snapshot() {
    use corral::storage::state::meta;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    store
        .commit(one_put("seeded"), &[(meta::RESTORED, b"1".to_vec())], 2, 0)
        .expect("seed");
    store.flush().await.expect("flush");
    assert!(store.restored());

    let mut sm = open_sm(dir.path(), store).expect("open");
    apply_puts(&mut sm, 1..=2).await;
    assert!(
        !sm.store().torn(),
        "a restored store without a snapshot wrote plainly"
    );

    snapshot(&mut sm).await;
    sm.apply([put_entry(3, "k3")]).await.expect("apply 3");
    assert!(sm.store().torn(), "plain commits once the snapshot exists");
}
