//! The durable Raft log: openraft's [`RaftLogStorage`] on its own sled database.
//!
//! # Layout
//!
//! The log lives in a sled `Db` of its own (the caller passes e.g. `<data-dir>/raft-log`),
//! separate from the state machine's `Db`. sled flushes a whole `Db` at once, so sharing one
//! would make every log fsync also write out state-machine pages, and the other way round.
//!
//! * tree `log`: one entry per key; the key is the log index as 8 bytes big-endian, so sled's
//!   key order is index order and "last entry" / "entries from i" are plain range scans. The
//!   value is the bincode-encoded `openraft::Entry`.
//! * tree `meta`: the vote, the committed log id and the last purged log id (bincode).
//!
//! # Durability
//!
//! Raft is only safe if what a node has acknowledged survives a crash: a vote that was granted
//! must never be forgotten (or the node could vote twice in one term), and log entries reported
//! as persisted count towards a quorum that the leader may already have used to commit them.
//! So:
//!
//! * [`append`](RaftLogStorage::append) inserts the entries (readable at once, as openraft
//!   requires) and hands its [`LogFlushed`] callback to a background *flusher* task. The callback
//!   fires only after a durable flush ([`DurableFlush`]: sled's flush, then `fdatasync`) that
//!   *started after* the entries were
//!   inserted. That is guaranteed because the callback is queued only once the inserts are done,
//!   and the flusher starts its flush only after it has taken the callback off the queue.
//! * **Group commit**: the flusher does not fsync per append. It waits for one callback, takes
//!   every other callback already queued, runs ONE flush and then fires them all, in order. Under
//!   load many appends share one fsync; under no load an append waits for exactly one fsync.
//! * `save_vote`, `truncate` and `purge` flush before returning. A flush there also covers
//!   appended-but-unacknowledged entries, which is harmless: their callbacks still wait for the
//!   flusher's own flush. `save_committed` does not flush (it runs on every commit, and a lost
//!   committed id is harmless); sled's prefix recovery keeps it from ever getting ahead of the
//!   durable log, see its comment.
//! * Entries are inserted one by one in index order. sled recovers a prefix of its writes, so
//!   a crash never leaves a hole in the log (it may lose an unacknowledged tail). Truncation
//!   and purge, which delete ranges, still go through one atomic sled `Batch`.
//!
//! # Recent entries
//!
//! The entries appended last are also kept decoded in memory (`Recent`, up to
//! `RECENT_BYTES` of encoded size). openraft reads every entry back right after appending it:
//! once to apply it, and on a leader once per follower to replicate it. Served from memory,
//! those reads cost a clone of the entry (its commands are shared, not copied) instead of a
//! sled lookup and a decode each, and the apply read runs inside openraft's core loop, which
//! everything else waits on. A read the cache cannot answer in full goes to sled.
//!
//! [`LogStore::flush_count`] counts the flusher's flushes, so tests and metrics can see group
//! commit at work (appends / flushes = average group size).

// The helpers return openraft's own (large, ~200-byte) `StorageError`/`StorageIOError` because
// every trait method must; boxing them here only to unbox at the trait boundary buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Histogram;
use crate::raft::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::storage::durable::DurableFlush;

/// Name of the tree holding the entries, keyed by big-endian log index.
const LOG_TREE: &str = "log";
/// Name of the tree holding the vote and the log pointers.
const META_TREE: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// How many appends may wait for the flusher before `append` itself waits. This is
/// back-pressure for a stalled disk, not a tuning knob: a flush normally drains the whole queue.
const FLUSH_QUEUE_CAPACITY: usize = 4096;

/// Encoded size of the recent entries kept decoded in memory, at most (see [`Recent`]). At
/// 64 clients an entry carries 10-30 puts (3-10 KiB), so this holds several hundred entries:
/// far more than are ever in flight or waiting to be applied.
const RECENT_BYTES: usize = 4 << 20;

/// What the flusher calls once the entries of one append are on disk (or could not be put
/// there).
type FlushCallback = Box<dyn FnOnce(Result<(), io::Error>) + Send + 'static>;

/// The sled handles, shared by the store and its readers.
///
/// The flusher task only holds a [`Weak`] to this (and a `Db` clone only while it flushes), so
/// dropping the store and its readers closes the `Db` right away rather than whenever the
/// flusher next wakes up. (sled may still hold its directory lock for a moment; see
/// [`open_db`].)
struct Inner {
    db: sled::Db,
    durable: DurableFlush,
    log: sled::Tree,
    meta: sled::Tree,
    recent: Mutex<Recent>,
}

/// The last entries appended, decoded: a contiguous run that always ends at the last entry
/// of the log (appends push, truncation pops from the back, purge and the size bound from the
/// front, anything out of order clears it).
#[derive(Default)]
struct Recent {
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, entry: Entry, size: usize) {
        let follows = match self.entries.back() {
            Some((last, _)) => last.log_id.index.checked_add(1) == Some(entry.log_id.index),
            None => true,
        };
        if !follows {
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > RECENT_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(last, _)| last.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Drops the entries up to `index`, inclusive.
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(first, _)| first.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// The entries with index in `start..end` (`end` `None`: to the last), if this run holds
    /// all of them; `None` when part of the range lies before the run or past its end.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let next = first + self.entries.len() as u64;
        if start < first || end.is_some_and(|end| end > next) {
            return None;
        }
        // `end` is at most `next` here, and a `start` past the run reads as empty.
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end.unwrap_or(next).saturating_sub(first)).ok()?;
        Some(
            self.entries
                .range(from.min(to)..to)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
}

/// The durable Raft log store. See the [module docs](self) for layout and durability rules.
///
/// It is deliberately not `Clone`: openraft requires all log writes to be serialized, which the
/// `&mut self` of the [`RaftLogStorage`] methods guarantees only if there is a single writer.
/// Use [`LogStore::reader`] (or `get_log_reader`) for concurrent readers.
pub struct LogStore {
    inner: Arc<Inner>,
    /// Callbacks waiting for the flusher. The flusher ends when this (the only sender) is dropped.
    flush_tx: mpsc::Sender<FlushCallback>,
    flushes: Arc<AtomicU64>,
}

/// A cheap-to-clone, read-only handle on the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Opens (or creates) the log database at `dir` and starts its flusher task.
    ///
    /// Must be called from within a Tokio runtime (the flusher is a Tokio task); otherwise it
    /// returns an error rather than panicking. It does blocking IO (and, if the directory is
    /// still locked, waits up to 2 s): call it at startup, not on a hot path.
    pub fn open(dir: &Path) -> Result<LogStore, io::Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("LogStore::open needs a Tokio runtime: {e}")))?;

        let db = open_db(dir)?;
        let durable = DurableFlush::open(dir)?;
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let inner = Arc::new(Inner {
            db,
            durable,
            log,
            meta,
            recent: Mutex::default(),
        });

        // A purge records `last_purged` durably before deleting entries; if we crashed in
        // between, finish the deletion now so readers never see purged entries.
        if let Some(purged) = inner.read_meta::<LogId>(KEY_LAST_PURGED).map_err(to_io)? {
            inner.delete_upto(purged.index).map_err(to_io)?;
            inner.durable.flush(&inner.db)?;
        }

        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let flushes = Arc::new(AtomicU64::new(0));
        runtime.spawn(run_flusher(
            Arc::downgrade(&inner),
            flush_rx,
            flushes.clone(),
        ));

        Ok(LogStore {
            inner,
            flush_tx,
            flushes,
        })
    }

    /// How many group flushes the flusher has performed (successful or not). Flushes done by
    /// `save_vote`, `truncate`, etc. are not counted.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Durations of this log's durable flushes (group commits, votes, truncations, purges):
    /// etcd's `etcd_disk_wal_fsync_duration_seconds`.
    pub fn sync_durations(&self) -> Arc<Histogram> {
        self.inner.durable.durations()
    }

    /// A read-only handle sharing this store's database.
    pub fn reader(&self) -> LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    /// Appends `entries` and calls `on_flushed` once they are durable (or with the error if the
    /// flush failed). This is the code path behind [`RaftLogStorage::append`]; it is public so
    /// that it can be exercised without an openraft-internal [`LogFlushed`].
    ///
    /// Returns once the entries are inserted (and so readable) and the callback is queued; it
    /// only waits longer if the flush queue is full.
    pub async fn append_and_notify<I, F>(
        &mut self,
        entries: I,
        on_flushed: F,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
        F: FnOnce(Result<(), io::Error>) + Send + 'static,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let value =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            encoded.push((entry, value));
        }
        // Encoded first, so a bad entry fails the append before anything is written. Then
        // plain inserts in index order, not one `apply_batch`: in sled 0.34 that seals and
        // writes out its IO buffer twice (its pagecache's `pin_log`), each write waiting in
        // `sync_file_range`, and the flush that follows waits for those writes (at 64
        // clients, a fifth more disk writes per put with it). A crash still never leaves a
        // hole: sled recovers a prefix of its writes, so it keeps a prefix of this append.
        // Losing the tail is allowed: none of it was reported flushed.
        {
            let mut recent = self.inner.recent();
            for (entry, value) in encoded {
                let size = value.len();
                if let Err(e) = self.inner.log.insert(index_key(entry.log_id.index), value) {
                    // What reached sled is unknown: stop serving reads from memory.
                    recent.clear();
                    return Err(StorageIOError::write_logs(&e).into());
                }
                recent.push(entry, size);
            }
        }

        // Queue the callback only now, after the inserts: the flusher's next flush therefore
        // starts after them, which is what makes firing the callback after it correct.
        if let Err(mpsc::error::SendError(on_flushed)) =
            self.flush_tx.send(Box::new(on_flushed)).await
        {
            // The flusher is gone (its runtime shut down). Nothing will ever flush for us.
            let err = io::Error::other("log flusher task is not running");
            let storage_err = StorageIOError::write_logs(&err);
            on_flushed(Err(err));
            return Err(storage_err.into());
        }
        Ok(())
    }
}

impl Inner {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads and decodes one meta value; a value that does not decode is corruption.
    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageIOError<NodeId>> {
        let subject = || meta_subject(key);
        match self.meta.get(key) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => decode(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::new(subject(), ErrorVerb::Read, &e)),
            Err(e) => Err(StorageIOError::new(subject(), ErrorVerb::Read, &e)),
        }
    }

    /// Encodes and stores one meta value (not flushed).
    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageIOError<NodeId>> {
        let subject = || meta_subject(key);
        let bytes =
            encode(value).map_err(|e| StorageIOError::new(subject(), ErrorVerb::Write, &e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StorageIOError::new(subject(), ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Flushes the whole log `Db` durably on the blocking pool, so an fsync never stalls a
    /// runtime worker.
    async fn flush(&self) -> Result<(), io::Error> {
        flush_db(self.db.clone(), self.durable.clone()).await
    }

    /// Deletes, in one atomic batch, every entry whose index is in `range` (not flushed).
    fn delete_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<(), StorageIOError<NodeId>> {
        let delete_err =
            |e: &sled::Error| StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            batch.remove(key.map_err(|e| delete_err(&e))?);
        }
        self.log.apply_batch(batch).map_err(|e| delete_err(&e))
    }

    /// Deletes entries with index <= `index` (not flushed).
    fn delete_upto(&self, index: u64) -> Result<(), StorageIOError<NodeId>> {
        self.delete_range(..=index_key(index))
    }

    /// The log id of the last entry present, if any.
    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageIOError<NodeId>> {
        match self.log.last() {
            Ok(None) => Ok(None),
            Ok(Some((key, value))) => Ok(Some(decode_entry(&key, &value)?.log_id)),
            Err(e) => Err(StorageIOError::read_logs(&e)),
        }
    }

    fn get_log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_meta::<LogId>(KEY_LAST_PURGED)?;
        let last_entry = self.last_entry_log_id()?;
        // `max` rather than "entry or purged": the two only disagree if entries at or below the
        // purge point survived a crash, and then the purge point is the truth.
        let last_log_id = std::cmp::max(last_entry, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Entries with index in `range`, in order: the contiguous run starting at the first entry
    /// present in the range, stopping at the first gap.
    fn entries_in<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end; `None` means no upper limit.
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| start >= end) {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }

        let mut entries: Vec<Entry> = Vec::new();
        let mut expected: Option<u64> = None; // index that continues the run so far
        for item in self.log.range(index_key(start)..) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            // Bounds and gaps are decided on the key alone, so an entry outside the answer is
            // never decoded (and a corrupt one there cannot fail this read).
            let index = key_index(&key)?;
            if end.is_some_and(|end| index >= end) || expected.is_some_and(|want| index != want) {
                break; // past the range, or a gap: only the contiguous run is returned
            }
            entries.push(decode_entry(&key, &value)?);
            match index.checked_add(1) {
                Some(next) => expected = Some(next),
                None => break,
            }
        }
        Ok(entries)
    }
}

/// The group-commit loop. Ends when the store is dropped (channel closed); callbacks still
/// queued at that point are served first.
async fn run_flusher(
    inner: Weak<Inner>,
    mut rx: mpsc::Receiver<FlushCallback>,
    flushes: Arc<AtomicU64>,
) {
    let mut group: Vec<FlushCallback> = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        // Everything already queued joins this group. Each of these callbacks was queued after
        // its inserts, and the flush below starts after we took it off the queue.
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }

        let result = match inner.upgrade() {
            // Hold only a `Db` clone during the flush, not the `Inner`.
            Some(inner) => {
                let db = inner.db.clone();
                let durable = inner.durable.clone();
                drop(inner);
                flush_db(db, durable).await
            }
            // The store and all readers are gone, so the `Db` was closed; sled flushes on close
            // but cannot report whether that worked, so we cannot claim durability.
            None => Err(io::Error::other(
                "log store closed before its entries were flushed",
            )),
        };
        flushes.fetch_add(1, Ordering::Relaxed);

        match result {
            Ok(()) => {
                for callback in group.drain(..) {
                    callback(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, callbacks = group.len(), "raft log flush failed");
                // io::Error is not Clone: give each callback its own copy.
                for callback in group.drain(..) {
                    callback(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
    tracing::debug!("raft log flusher stopped");
}

/// A durable flush (write out and sync everything inserted so far) on Tokio's blocking pool.
async fn flush_db(db: sled::Db, durable: DurableFlush) -> Result<(), io::Error> {
    match tokio::task::spawn_blocking(move || durable.flush(&db)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(join) => Err(io::Error::other(format!("log flush task failed: {join}"))),
    }
}

/// sled's page cache for the log (its default is 1 GiB). Entries are read back right after
/// they are appended (replication) or not at all, so a small cache serves the hot path; a
/// follower catching up from far behind reads from disk.
const LOG_CACHE_BYTES: u64 = 16 << 20;

/// How long [`open_db`] keeps retrying while sled's directory lock is still held.
const LOCK_RETRY_FOR: Duration = Duration::from_secs(2);

/// Opens the sled `Db`, retrying briefly while its directory lock is held.
///
/// sled releases the lock only when the last internal reference to its config drops, and its
/// own IO threads can hold one for a moment after the last `Db` handle is gone. So reopening a
/// log in the same process right after dropping it (a restart in tests, a member rejoining)
/// can transiently fail. A lock held by another process still fails, just 2 s later.
fn open_db(dir: &Path) -> Result<sled::Db, io::Error> {
    let deadline = Instant::now() + LOCK_RETRY_FOR;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(LOG_CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports this as `ErrorKind::Other`; its message is the only way to tell.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a meta key is about, for error reports.
fn meta_subject(key: &[u8]) -> ErrorSubject<NodeId> {
    match key {
        KEY_VOTE => ErrorSubject::Vote,
        KEY_LAST_PURGED => ErrorSubject::Logs,
        _ => ErrorSubject::Store,
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

/// Decodes a stored entry and checks it sits under the key of its own index: anything else is
/// corruption and is reported as a storage error, never a panic.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StorageIOError<NodeId>> {
    let index = key_index(key)?;
    let entry: Entry = decode(value).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
    if entry.log_id.index != index {
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("entry {} stored under index {index}", entry.log_id),
        );
        return Err(StorageIOError::read_log_at_index(index, &err));
    }
    Ok(entry)
}

/// The log index a key of the `log` tree stands for; a key that is not 8 bytes is corruption.
fn key_index(key: &[u8]) -> Result<u64, StorageIOError<NodeId>> {
    match <[u8; 8]>::try_from(key) {
        Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
        Err(_) => {
            let err = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("log key of {} bytes, want 8", key.len()),
            );
            Err(StorageIOError::read_logs(&err))
        }
    }
}

fn to_io(e: StorageIOError<NodeId>) -> io::Error {
    io::Error::other(e.to_string())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries_in(range)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries_in(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.inner.get_log_state()
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A granted vote must survive a crash, or this node could vote twice in one term.
        self.inner.write_meta(KEY_VOTE, vote)?;
        self.inner
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.read_meta(KEY_VOTE)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed. openraft calls this on every commit advance, inside its core loop, so
        // an fsync here would cost one extra fsync per commit. It is safe without one: the
        // committed id is only an optimization (on restart openraft re-applies up to it
        // without waiting for a leader), and it stays consistent with the log because sled
        // recovers a *prefix* of its writes (recovery stops at the first gap in its log).
        // This insert comes after the inserts of every entry it covers, so it can never be
        // durable while they are not; it becomes durable with the next flush of any kind
        // (group commit, vote, truncate, purge, or sled's own periodic flush). A crash before
        // then just yields an older committed id, which openraft handles.
        match committed {
            Some(committed) => self.inner.write_meta(KEY_COMMITTED, &committed)?,
            None => {
                self.inner
                    .meta
                    .remove(KEY_COMMITTED)
                    .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Delete, &e))?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.read_meta(KEY_COMMITTED)?)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_and_notify(entries, move |result| callback.log_io_completed(result))
            .await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Conflicting entries from an old leader: delete [index, +oo) atomically and make the
        // deletion durable, so a restart cannot resurrect them.
        self.inner.recent().truncate(log_id.index);
        self.inner.delete_range(index_key(log_id.index)..)?;
        self.inner
            .flush()
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point durably FIRST. If we crash after deleting some entries but
        // before the purge point is on disk, `get_log_state` would report a log that starts
        // after a hole. With this order a crash leaves at worst extra entries below the purge
        // point, which `open` deletes.
        self.inner.write_meta(KEY_LAST_PURGED, &log_id)?;
        self.inner
            .flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;

        self.inner.recent().purge(log_id.index);
        self.inner.delete_upto(log_id.index)?;
        self.inner
            .flush()
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        Ok(())
    }
}
