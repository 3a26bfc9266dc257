//! The durable Raft log: openraft's [`RaftLogStorage`] on append-only segment files.
//!
//! # Layout
//!
//! The log lives in a directory of its own (the caller passes e.g. `<data-dir>/raft-log`)
//! holding segment files `<seq>.wal` (`seq` as 16 hex digits, so name order is write order).
//! A segment starts with the 8-byte magic `CRLWAL01` and is a sequence of records:
//!
//! ```text
//! [len: u32 LE][crc32 of body: u32 LE][body: kind u8, then bincode]   (len = body length)
//! ```
//!
//! Kinds: an entry (the bincode `openraft::Entry`, whose log id is its prefix), the vote, the
//! committed log id, a purge point, a truncation point, and a *state* record (vote, committed,
//! purge point) that begins every segment. Replaying the segments in order rebuilds the log;
//! because every segment begins with the state as it was when the segment was created, the
//! oldest segments can be deleted (always a prefix, never the one being written) without
//! losing the vote. Only each entry's position is kept in memory; entries are read back with
//! `pread` (from the OS page cache, right after they were written, in the common case).
//!
//! Why not sled: a sled `flush` seals its IO buffer, hands it to one of sled's IO threads for
//! a write and a `sync_file_range`, waits for it, then fsyncs; with the B-tree maintenance on
//! top, profiling showed sled's threads taking about 40% of the members' CPU under a put load
//! (both sled databases together), and it holds a page cache of its own. A log needs none of
//! that: one `pwrite` per append and one `fdatasync` per group of appends.
//!
//! # Durability
//!
//! Raft is only safe if what a node has acknowledged survives a crash: a vote that was granted
//! must never be forgotten (or the node could vote twice in one term), and log entries reported
//! as persisted count towards a quorum that the leader may already have used to commit them.
//! So:
//!
//! * [`append`](RaftLogStorage::append) writes the entries (one `pwrite`; readable at once, as
//!   openraft requires) and hands its [`LogFlushed`] callback to the *flusher* thread. The
//!   callback fires only after an `fdatasync` that *started after* the write: the callback is
//!   queued only once the write is done, and the flusher syncs only after taking it off the
//!   queue.
//! * **Group commit**: the flusher does not sync per append. It waits for one callback, takes
//!   every other callback already queued, runs ONE `fdatasync` and fires them all, in order.
//!   Under load many appends share one sync; an append on an idle log waits for exactly one,
//!   started at once (no timer).
//! * `save_vote`, `truncate` and `purge` write their record and wait for a sync (through the
//!   same flusher) before returning. `save_committed` writes nothing by itself: the committed
//!   id rides along with the next record written, after the entries it covers, so it can never
//!   be durable while they are not. A crash before then yields an older committed id, which
//!   openraft handles (it is only an optimization of the restart).
//! * A segment is synced before the next one is started, so only the last segment can end in a
//!   torn record (a crash in the middle of a write). Such a tail held nothing acknowledged and
//!   is cut off at open. A record that fails its checksum anywhere else, or is followed by a
//!   good record, is corruption and fails the open.
//! * A failed write or sync poisons the store: every later write fails (after a failed fsync
//!   the kernel may have dropped the dirty pages, so retrying it could claim durability for
//!   data that is gone).
//!
//! A directory still holding the sled database of earlier versions is converted on open (see
//! `migrate_from_sled`).
//!
//! [`LogStore::flush_count`] counts the flusher's syncs, so tests and metrics can see group
//! commit at work (appends / flushes = average group size).

// The helpers return openraft's own (large, ~200-byte) `StorageError`/`StorageIOError` because
// every trait method must; boxing them here only to unbox at the trait boundary buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// The first bytes of every segment: the format and its version.
const MAGIC: &[u8; 8] = b"CRLWAL01";
/// A segment is closed (synced) and a new one started once it would grow past this. Deleting
/// whole segments is how purged entries leave the disk, so this bounds the space purged
/// entries can keep using; etcd's WAL segments are the same size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// `len` and `crc` before each record's body.
const RECORD_HEADER: usize = 8;

/// Record kinds (the first byte of a body).
const KIND_STATE: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_COMMITTED: u8 = 4;
const KIND_PURGED: u8 = 5;
const KIND_TRUNCATE: u8 = 6;

/// What the flusher calls once the records of one append are on disk (or could not be put
/// there).
type FlushCallback = Box<dyn FnOnce(Result<(), io::Error>) + Send + 'static>;

/// The body of a state record: (vote, committed, purge point).
type StateRecord = (Option<Vote>, Option<LogId>, Option<LogId>);

/// Where an entry's record is.
#[derive(Clone, Copy)]
struct Loc {
    seq: u64,
    /// Offset of the record (its header) in the segment.
    offset: u64,
    /// Length of the record's body.
    len: u32,
    log_id: LogId,
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index ever written to this segment (truncated or not): once the purge
    /// point reaches it, nothing in the segment is needed any more.
    max_index: Option<u64>,
}

/// What readers and the writer share.
#[derive(Default)]
struct Shared {
    index: BTreeMap<u64, Loc>,
    segments: BTreeMap<u64, Segment>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Why the store stopped accepting writes (a failed write or sync), if it did.
    failed: Option<String>,
}

struct Inner {
    dir: PathBuf,
    shared: RwLock<Shared>,
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Shared> {
        self.shared.write().unwrap_or_else(|p| p.into_inner())
    }

    fn poison(&self, e: &io::Error) {
        let mut shared = self.write();
        if shared.failed.is_none() {
            tracing::error!(error = %e, "raft log write failed; the log accepts no more writes");
            shared.failed = Some(e.to_string());
        }
    }
}

/// The segment being written. Only the (single) writer touches it.
struct Active {
    seq: u64,
    file: Arc<File>,
    len: u64,
}

/// A request to the flusher: sync `file` (segment `seq`), then call `done`.
struct SyncRequest {
    seq: u64,
    file: Arc<File>,
    done: FlushCallback,
}

/// The durable Raft log store. See the [module docs](self) for layout and durability rules.
///
/// It is deliberately not `Clone`: openraft requires all log writes to be serialized, which the
/// `&mut self` of the [`RaftLogStorage`] methods guarantees only if there is a single writer.
/// Use [`LogStore::reader`] (or `get_log_reader`) for concurrent readers.
pub struct LogStore {
    inner: Arc<Inner>,
    active: Active,
    /// Start a new segment once the active one would grow past this.
    segment_bytes: u64,
    /// The flusher thread ends when this (the only sender) is dropped.
    sync_tx: std_mpsc::Sender<SyncRequest>,
    flushes: Arc<AtomicU64>,
    /// A committed id saved but not yet written: it goes out with the next record.
    pending_committed: Option<Option<LogId>>,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// A cheap-to-clone, read-only handle on the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and starts its flusher thread.
    ///
    /// Replays every segment (checking every record), so it takes time proportional to the
    /// retained log: call it at startup, not on a hot path.
    pub fn open(dir: &Path) -> Result<LogStore, io::Error> {
        Self::open_with_segment_size(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with segments of `segment_bytes` instead of 64 MiB, so
    /// tests can exercise segment rotation and deletion with little data.
    #[doc(hidden)]
    pub fn open_with_segment_size(dir: &Path, segment_bytes: u64) -> Result<LogStore, io::Error> {
        fs::create_dir_all(dir)?;
        migrate_from_sled(dir)?;

        let mut shared = Shared::default();
        let seqs = list_segments(dir)?;
        let mut active = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let last = i + 1 == seqs.len();
            let path = segment_path(dir, seq);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let replayed = replay_segment(&file, seq, last, &mut shared)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let Some((valid_len, max_index)) = replayed else {
                // The last segment's header never made it to disk (a crash while it was being
                // created): nothing was written to it.
                tracing::warn!(path = %path.display(), "removing a segment with no header");
                fs::remove_file(&path)?;
                sync_dir(dir)?;
                continue;
            };
            if valid_len < file_len {
                tracing::warn!(
                    path = %path.display(),
                    valid_len,
                    file_len,
                    "cutting off a torn record at the end of the raft log"
                );
                file.set_len(valid_len)?;
                file.sync_all()?;
            }
            let file = Arc::new(file);
            shared.segments.insert(
                seq,
                Segment {
                    file: file.clone(),
                    max_index,
                },
            );
            if last {
                active = Some(Active {
                    seq,
                    file,
                    len: valid_len,
                });
            }
        }
        // Entries at or below the purge point may survive in a partially purged segment; they
        // are not part of the log.
        if let Some(purged) = shared.purged {
            shared.index = shared.index.split_off(&(purged.index + 1));
        }
        let active = match active {
            Some(active) => active,
            None => {
                let seq = shared.segments.keys().next_back().map_or(1, |s| s + 1);
                let state = (shared.vote, shared.committed, shared.purged);
                let (file, len) = create_segment(dir, seq, &state)?;
                shared.segments.insert(
                    seq,
                    Segment {
                        file: file.clone(),
                        max_index: None,
                    },
                );
                Active { seq, file, len }
            }
        };

        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            shared: RwLock::new(shared),
        });
        let (sync_tx, sync_rx) = std_mpsc::channel();
        let flushes = Arc::new(AtomicU64::new(0));
        {
            let inner = Arc::downgrade(&inner);
            let flushes = flushes.clone();
            std::thread::Builder::new()
                .name("raft-log-sync".into())
                .spawn(move || run_flusher(sync_rx, inner, flushes))?;
        }

        Ok(LogStore {
            inner,
            active,
            segment_bytes,
            sync_tx,
            flushes,
            pending_committed: None,
            buf: Vec::new(),
        })
    }

    /// How many group syncs the flusher has performed (successful or not).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// A read-only handle sharing this store's files.
    pub fn reader(&self) -> LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    /// Appends `entries` and calls `on_flushed` once they are durable (or with the error if the
    /// write or the sync failed). This is the code path behind [`RaftLogStorage::append`]; it is
    /// public so that it can be exercised without an openraft-internal [`LogFlushed`].
    ///
    /// Returns once the entries are written (and so readable) and the callback is queued.
    pub async fn append_and_notify<I, F>(
        &mut self,
        entries: I,
        on_flushed: F,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
        F: FnOnce(Result<(), io::Error>) + Send + 'static,
    {
        let result = self.append_entries(entries);
        match result {
            Ok(()) => {
                // Queued only now, after the write: the flusher's next sync starts after it.
                self.queue_sync(Box::new(on_flushed));
                Ok(())
            }
            Err(e) => {
                on_flushed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    fn append_entries<I>(&mut self, entries: I) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        self.check_failed()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.push_pending_committed(&mut buf)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // (log id, offset in `buf`, body length) of each entry.
        let mut written = Vec::new();
        for entry in entries {
            let start = buf.len();
            let len = push_record(&mut buf, KIND_ENTRY, &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            written.push((entry.log_id, start as u64, len));
        }
        let offset = self.write_buf(&buf);
        self.buf = buf;
        let offset = offset.map_err(|e| StorageIOError::write_logs(&e))?;

        let seq = self.active.seq;
        let mut shared = self.inner.write();
        for (log_id, start, len) in written {
            shared.index.insert(
                log_id.index,
                Loc {
                    seq,
                    offset: offset + start,
                    len,
                    log_id,
                },
            );
            if let Some(segment) = shared.segments.get_mut(&seq) {
                segment.max_index = segment.max_index.max(Some(log_id.index));
            }
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), io::Error> {
        match &self.inner.read().failed {
            Some(why) => Err(io::Error::other(format!(
                "the raft log failed earlier and accepts no writes: {why}"
            ))),
            None => Ok(()),
        }
    }

    fn push_pending_committed(&mut self, buf: &mut Vec<u8>) -> Result<(), io::Error> {
        if let Some(committed) = self.pending_committed.take() {
            push_record(buf, KIND_COMMITTED, &committed).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Writes `buf` (whole records) at the end of the active segment, starting a new segment
    /// first if this one is full. Returns the offset `buf` went to. A failure poisons the store.
    fn write_buf(&mut self, buf: &[u8]) -> Result<u64, io::Error> {
        let result = (|| {
            let header_len = MAGIC.len() as u64;
            if self.active.len > header_len
                && self.active.len + buf.len() as u64 > self.segment_bytes
            {
                self.rotate()?;
            }
            let offset = self.active.len;
            self.active.file.write_all_at(buf, offset)?;
            self.active.len += buf.len() as u64;
            Ok(offset)
        })();
        if let Err(e) = &result {
            self.inner.poison(e);
        }
        result
    }

    /// Closes the active segment (syncing it, so that only the last segment can ever end in a
    /// torn record) and starts the next one.
    fn rotate(&mut self) -> Result<(), io::Error> {
        self.active.file.sync_data()?;
        let seq = self.active.seq + 1;
        let state = {
            let shared = self.inner.read();
            (shared.vote, shared.committed, shared.purged)
        };
        let (file, len) = create_segment(&self.inner.dir, seq, &state)?;
        self.inner.write().segments.insert(
            seq,
            Segment {
                file: file.clone(),
                max_index: None,
            },
        );
        self.active = Active { seq, file, len };
        Ok(())
    }

    /// Hands `done` to the flusher, to be called after a sync of the active segment.
    fn queue_sync(&mut self, done: FlushCallback) {
        let request = SyncRequest {
            seq: self.active.seq,
            file: self.active.file.clone(),
            done,
        };
        if let Err(std_mpsc::SendError(request)) = self.sync_tx.send(request) {
            // Only if the flusher thread died (it does not end while we hold the sender).
            (request.done)(Err(io::Error::other("raft log flusher is not running")));
        }
    }

    /// Writes one record (after a pending committed id) and waits until it is durable.
    async fn write_durably<T: Serialize>(&mut self, kind: u8, value: &T) -> Result<(), io::Error> {
        self.check_failed()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let encoded = self
            .push_pending_committed(&mut buf)
            .and_then(|()| push_record(&mut buf, kind, value).map_err(io::Error::other));
        let written = encoded.and_then(|_| self.write_buf(&buf));
        self.buf = buf;
        written?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue_sync(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await
            .map_err(|_| io::Error::other("raft log flusher is not running"))?
    }

    /// Deletes the oldest segments while everything in them is purged (never the active one,
    /// and only a prefix: a later segment's entries may have been truncated by a record in an
    /// earlier one that must then stay).
    fn delete_purged_segments(&mut self) {
        let mut shared = self.inner.write();
        let Some(purged) = shared.purged else {
            return;
        };
        let deletable: Vec<u64> = shared
            .segments
            .iter()
            .take_while(|(&seq, segment)| {
                seq != self.active.seq && segment.max_index.is_none_or(|m| m <= purged.index)
            })
            .map(|(&seq, _)| seq)
            .collect();
        for seq in deletable {
            // Readers holding the file keep reading it; the name goes now. A file that fails
            // to go is replayed at the next open, which is harmless (see the module docs).
            if let Err(e) = fs::remove_file(segment_path(&self.inner.dir, seq)) {
                tracing::warn!(seq, error = %e, "could not delete a purged raft log segment");
                break;
            }
            shared.segments.remove(&seq);
        }
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Best effort: a committed id saved since the last write (not synced; see the module
        // docs for why losing it is harmless).
        if self.pending_committed.is_some() && self.check_failed().is_ok() {
            let mut buf = Vec::new();
            if self.push_pending_committed(&mut buf).is_ok() {
                let _ = self.write_buf(&buf);
            }
        }
    }
}

/// The group-commit loop, on its own thread (an fsync blocks). Ends when the store is dropped
/// (channel closed); requests still queued at that point are served first.
fn run_flusher(rx: std_mpsc::Receiver<SyncRequest>, inner: Weak<Inner>, flushes: Arc<AtomicU64>) {
    let mut group: Vec<SyncRequest> = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        // Everything already queued joins this group. Each request was queued after its
        // write, and the sync below starts after we took it off the queue.
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        // Usually one file; two right after a new segment was started.
        let mut result = Ok(());
        let mut synced: Vec<u64> = Vec::new();
        for request in &group {
            if synced.contains(&request.seq) {
                continue;
            }
            synced.push(request.seq);
            if let Err(e) = request.file.sync_data() {
                result = Err(e);
                break;
            }
        }
        flushes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                for request in group.drain(..) {
                    (request.done)(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, callbacks = group.len(), "raft log sync failed");
                if let Some(inner) = inner.upgrade() {
                    inner.poison(&e);
                }
                // io::Error is not Clone: give each callback its own copy.
                for request in group.drain(..) {
                    (request.done)(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
    tracing::debug!("raft log flusher stopped");
}

/// Appends one record to `buf`; returns the body length.
fn push_record<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    kind: u8,
    value: &T,
) -> Result<u32, bincode::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER]);
    buf.push(kind);
    bincode::serialize_into(&mut *buf, value)?;
    let body = &buf[start + RECORD_HEADER..];
    let len = u32::try_from(body.len()).map_err(|_| {
        Box::new(bincode::ErrorKind::Custom(format!(
            "raft log record of {} bytes is too large",
            body.len()
        )))
    })?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// The sequence numbers of the segments in `dir`, in order.
fn list_segments(dir: &Path) -> Result<Vec<u64>, io::Error> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(".wal") {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` holding the magic and a state record, durably (file and directory
/// entry), and returns it open with its length.
fn create_segment(
    dir: &Path,
    seq: u64,
    state: &StateRecord,
) -> Result<(Arc<File>, u64), io::Error> {
    let mut buf = MAGIC.to_vec();
    push_record(&mut buf, KIND_STATE, state).map_err(io::Error::other)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, seq))?;
    file.write_all_at(&buf, 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((Arc::new(file), buf.len() as u64))
}

fn sync_dir(dir: &Path) -> Result<(), io::Error> {
    File::open(dir)?.sync_all()
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One record as read from a segment.
enum Read1 {
    Record {
        kind: u8,
        body: Vec<u8>,
    },
    /// End of the file exactly at a record boundary.
    End,
    /// Not a whole, intact record: (what is wrong, the body length if the header was whole).
    Bad(String, Option<u32>),
}

/// Reads the record at the reader's position.
fn read_record(reader: &mut impl Read, remaining: u64) -> Result<Read1, io::Error> {
    if remaining == 0 {
        return Ok(Read1::End);
    }
    if remaining < RECORD_HEADER as u64 {
        return Ok(Read1::Bad("a partial record header".into(), None));
    }
    let mut header = [0u8; RECORD_HEADER];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || u64::from(len) > remaining - RECORD_HEADER as u64 {
        return Ok(Read1::Bad(
            format!("a record length of {len} with {remaining} bytes left"),
            None,
        ));
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body)?;
    if crc32fast::hash(&body) != crc {
        return Ok(Read1::Bad("a record checksum mismatch".into(), Some(len)));
    }
    Ok(Read1::Record {
        kind: body[0],
        body,
    })
}

/// Replays segment `seq` into `shared`. Returns the length of its valid prefix and the highest
/// entry index in it, or `None` if it is the last segment and its header (the magic and the
/// state record) never made it to disk whole: a crash while it was being created, before
/// anything else was written to it.
///
/// A bad record ends the replay of the last segment (a torn tail) unless a good record follows
/// it, which means damage in the middle: that, and a bad record in any other segment, is an
/// error.
fn replay_segment(
    file: &File,
    seq: u64,
    last: bool,
    shared: &mut Shared,
) -> Result<Option<(u64, Option<u64>)>, io::Error> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; MAGIC.len()];
    if file_len < MAGIC.len() as u64 || {
        reader.read_exact(&mut magic)?;
        &magic != MAGIC
    } {
        if last && (file_len < MAGIC.len() as u64 || magic.iter().all(|&b| b == 0)) {
            return Ok(None);
        }
        return Err(corrupt("not a raft log segment (bad magic)".into()));
    }
    let mut pos = MAGIC.len() as u64;
    let mut max_index = None;
    loop {
        let header = pos == MAGIC.len() as u64;
        match read_record(&mut reader, file_len - pos)? {
            Read1::Record { kind, .. } if header && kind != KIND_STATE => {
                return Err(corrupt(
                    "a segment that does not begin with the state".into(),
                ));
            }
            Read1::Record { kind, body } => {
                apply_record(seq, pos, kind, &body, shared, &mut max_index)?;
                pos += (RECORD_HEADER + body.len()) as u64;
            }
            Read1::End | Read1::Bad(..) if header && last => return Ok(None),
            Read1::End if header => return Err(corrupt("a segment without its state".into())),
            Read1::End => break,
            Read1::Bad(what, len) => {
                let at = format!("{what} at offset {pos}");
                if !last {
                    return Err(corrupt(format!("{at} of a closed segment")));
                }
                // A torn write leaves nothing intact after it; an intact record after a bad
                // one means the bad one was damaged in place.
                if let Some(len) = len {
                    let next = pos + (RECORD_HEADER as u64) + u64::from(len);
                    if next < file_len {
                        let mut rest = BufReader::new(file);
                        io::Seek::seek(&mut rest, io::SeekFrom::Start(next))?;
                        if let Read1::Record { .. } = read_record(&mut rest, file_len - next)? {
                            return Err(corrupt(format!("{at}, followed by intact records")));
                        }
                    }
                }
                break;
            }
        }
    }
    Ok(Some((pos, max_index)))
}

/// Applies one replayed record to the in-memory state.
fn apply_record(
    seq: u64,
    offset: u64,
    kind: u8,
    body: &[u8],
    shared: &mut Shared,
    max_index: &mut Option<u64>,
) -> Result<(), io::Error> {
    let payload = &body[1..];
    let bad = |e: bincode::Error| corrupt(format!("record of kind {kind} at offset {offset}: {e}"));
    match kind {
        KIND_STATE => {
            let (vote, committed, purged): StateRecord = decode(payload).map_err(bad)?;
            shared.vote = vote;
            shared.committed = committed;
            shared.purged = purged;
        }
        KIND_ENTRY => {
            // The entry's log id is the prefix of its encoding: no need to decode the payload.
            let log_id: LogId = decode(payload).map_err(bad)?;
            let len = u32::try_from(body.len()).map_err(|_| corrupt("huge record".into()))?;
            shared.index.insert(
                log_id.index,
                Loc {
                    seq,
                    offset,
                    len,
                    log_id,
                },
            );
            *max_index = (*max_index).max(Some(log_id.index));
        }
        KIND_VOTE => shared.vote = Some(decode(payload).map_err(bad)?),
        KIND_COMMITTED => shared.committed = decode(payload).map_err(bad)?,
        KIND_PURGED => {
            let purged: LogId = decode(payload).map_err(bad)?;
            shared.purged = Some(purged);
            shared.index = shared.index.split_off(&(purged.index + 1));
        }
        KIND_TRUNCATE => {
            let from: u64 = decode(payload).map_err(bad)?;
            shared.index.split_off(&from);
        }
        _ => {
            return Err(corrupt(format!(
                "unknown record kind {kind} at offset {offset}"
            )))
        }
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

impl Shared {
    fn get_log_state(&self) -> LogState<TypeConfig> {
        let last_entry = self.index.last_key_value().map(|(_, loc)| loc.log_id);
        // `max` rather than "entry or purged": after purging everything (or more than there
        // was, when a snapshot was installed), the purge point is the last log id.
        let last_log_id = std::cmp::max(last_entry, self.purged);
        LogState {
            last_purged_log_id: self.purged,
            last_log_id,
        }
    }
}

impl Inner {
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

        // Where the records are, collected under the lock; read after it is released.
        let mut plan: Vec<(Loc, Arc<File>)> = Vec::new();
        {
            let shared = self.read();
            let mut expected: Option<u64> = None;
            for (&index, loc) in shared.index.range(start..) {
                if end.is_some_and(|end| index >= end) || expected.is_some_and(|want| index != want)
                {
                    break; // past the range, or a gap: only the contiguous run is returned
                }
                let file = match plan.last() {
                    Some((prev, file)) if prev.seq == loc.seq => file.clone(),
                    _ => match shared.segments.get(&loc.seq) {
                        Some(segment) => segment.file.clone(),
                        None => {
                            let err =
                                corrupt(format!("segment {} of entry {index} is gone", loc.seq));
                            return Err(StorageIOError::read_log_at_index(index, &err).into());
                        }
                    },
                };
                plan.push((*loc, file));
                match index.checked_add(1) {
                    Some(next) => expected = Some(next),
                    None => break,
                }
            }
        }

        let mut entries = Vec::with_capacity(plan.len());
        let mut i = 0;
        let mut buf = Vec::new();
        while i < plan.len() {
            // Records written together lie back to back: read each such run with one pread.
            let (first, file) = &plan[i];
            let mut j = i + 1;
            let mut run_end = first.offset + RECORD_HEADER as u64 + u64::from(first.len);
            while j < plan.len() && plan[j].0.seq == first.seq && plan[j].0.offset == run_end {
                run_end += RECORD_HEADER as u64 + u64::from(plan[j].0.len);
                j += 1;
            }
            let run_len = usize::try_from(run_end - first.offset)
                .map_err(|_| StorageIOError::read_logs(&corrupt("huge read".into())))?;
            buf.resize(run_len, 0);
            file.read_exact_at(&mut buf, first.offset)
                .map_err(|e| StorageIOError::read_log_at_index(first.log_id.index, &e))?;
            let mut at = 0usize;
            for (loc, _) in &plan[i..j] {
                let record = &buf[at..at + RECORD_HEADER + loc.len as usize];
                entries.push(decode_entry(loc, record)?);
                at += record.len();
            }
            i = j;
        }
        Ok(entries)
    }
}

/// Decodes the entry record at `loc` and checks it is whole and holds the entry of that index:
/// anything else is corruption and is reported as a storage error, never a panic.
fn decode_entry(loc: &Loc, record: &[u8]) -> Result<Entry, StorageIOError<NodeId>> {
    let index = loc.log_id.index;
    let err = |msg: String| StorageIOError::read_log_at_index(index, &corrupt(msg));
    let (header, body) = record.split_at(RECORD_HEADER);
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len != loc.len || crc32fast::hash(body) != crc || body.first() != Some(&KIND_ENTRY) {
        return Err(err(format!("damaged record at offset {}", loc.offset)));
    }
    let entry: Entry =
        decode(&body[1..]).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
    if entry.log_id != loc.log_id {
        return Err(err(format!(
            "entry {} stored as {}",
            entry.log_id, loc.log_id
        )));
    }
    Ok(entry)
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
        Ok(self.inner.read().get_log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A granted vote must survive a crash, or this node could vote twice in one term.
        self.write_durably(KIND_VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.inner.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not written (nor synced) now: openraft calls this on every commit advance, inside
        // its core loop. It goes out with the next record; see the module docs.
        self.pending_committed = Some(committed);
        self.inner.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.read().committed)
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
        // Conflicting entries from an old leader: delete [index, +oo), durably, so a restart
        // cannot resurrect them.
        self.write_durably(KIND_TRUNCATE, &log_id.index)
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        self.inner.write().index.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is durable before any segment is deleted; a crash in between leaves
        // segments that the next open replays and filters.
        self.write_durably(KIND_PURGED, &log_id)
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        {
            let mut shared = self.inner.write();
            shared.purged = Some(log_id);
            shared.index = shared.index.split_off(&(log_id.index + 1));
        }
        self.delete_purged_segments();
        Ok(())
    }
}

/// sled's page cache while a log of an earlier version is read for conversion.
const SLED_CACHE_BYTES: u64 = 16 << 20;

/// Opens a sled database, retrying for up to 2 s while its directory lock is held: sled
/// releases it only when its own IO threads let go of its config, which can be a moment after
/// the last handle in this process was dropped.
fn open_sled(dir: &Path) -> Result<sled::Db, io::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports this as `ErrorKind::Other`; its message is the only way to tell.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// Converts a log directory written by earlier versions (a sled database with trees `log`:
/// big-endian index → bincode entry, and `meta`: `vote`, `committed`, `last_purged`) into one
/// segment, then removes the sled files. The segment is written under a temporary name and
/// renamed into place durably before anything is removed, so a crash at any point leaves
/// either the sled database (converted again at the next open) or the segment.
fn migrate_from_sled(dir: &Path) -> Result<(), io::Error> {
    let sled_files = ["conf", "db"];
    if !sled_files.iter().all(|f| dir.join(f).exists()) {
        return Ok(());
    }
    if list_segments(dir)?.is_empty() {
        tracing::info!(dir = %dir.display(), "converting the raft log from sled to segment files");
        let db = open_sled(dir)?;
        let meta = db.open_tree("meta").map_err(io::Error::other)?;
        let log = db.open_tree("log").map_err(io::Error::other)?;
        let read_meta = |key: &str| -> Result<Option<sled::IVec>, io::Error> {
            meta.get(key).map_err(io::Error::other)
        };
        let vote: Option<Vote> = match read_meta("vote")? {
            Some(b) => Some(decode(&b).map_err(io::Error::other)?),
            None => None,
        };
        let committed: Option<LogId> = match read_meta("committed")? {
            Some(b) => Some(decode(&b).map_err(io::Error::other)?),
            None => None,
        };
        let purged: Option<LogId> = match read_meta("last_purged")? {
            Some(b) => Some(decode(&b).map_err(io::Error::other)?),
            None => None,
        };
        let tmp = dir.join("migrate.tmp");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut writer = io::BufWriter::new(file);
        let mut buf = MAGIC.to_vec();
        push_record(&mut buf, KIND_STATE, &(vote, committed, purged)).map_err(io::Error::other)?;
        io::Write::write_all(&mut writer, &buf)?;
        for item in log.iter() {
            let (_, value) = item.map_err(io::Error::other)?;
            let entry: Entry = decode(&value).map_err(io::Error::other)?;
            if purged.is_some_and(|p| entry.log_id.index <= p.index) {
                continue;
            }
            buf.clear();
            push_record(&mut buf, KIND_ENTRY, &entry).map_err(io::Error::other)?;
            io::Write::write_all(&mut writer, &buf)?;
        }
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        drop((log, meta, db));
        fs::rename(&tmp, segment_path(dir, 1))?;
        sync_dir(dir)?;
    }
    // The segment is in place: the sled files are no longer needed.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name == "blobs" {
            fs::remove_dir_all(&path)?;
        } else if sled_files.contains(&name.as_ref()) || name.starts_with("snap.") {
            fs::remove_file(&path)?;
        }
    }
    sync_dir(dir)
}
