//! The state machine's storage: one sled tree holding every key space (see `mvcc::keys`), plus
//! meta records, committed once per applied batch of entries.
//!
//! # A commit is all or nothing after a crash
//!
//! A crash must never leave half of a batch behind: the state machine resumes from the
//! last-applied id stored with the batch, and re-applying an entry on top of part of itself
//! would give a different state than on the other members. sled's `apply_batch` is atomic,
//! but in sled 0.34 each call seals and writes out its IO buffer twice (its pagecache's
//! `pin_log`), each write waiting in `sync_file_range`: about 40% of the machine's disk writes
//! under put load. So once the state can be rebuilt without this tree, commits are plain
//! inserts and removes (but for records that change in place, see below), and a marker
//! (`meta::TORN`) is written before the first of them: sled recovers a prefix of its writes,
//! so whenever a torn batch survives a crash, the marker does too. A flush that finds no
//! commit ran since it started removes the marker durably (before a snapshot, at shutdown).
//! On opening a marked store, the state machine rebuilds it from its snapshot file (or from
//! nothing, when the log still starts at the first entry), and the log replays the rest. A
//! store seeded by `corral snapshot restore` holds data its log never produced, so it commits
//! through `apply_batch` until its first snapshot exists (see
//! [`StateStore::set_atomic_commits`]).
//!
//! Readers never lock: they read at the last *published* revision, and MVCC ignores versions
//! above it, so a reader can't see half of a batch that is being committed. Only compaction
//! (which removes old versions) excludes readers, through `compaction_guard`. Records that
//! change in place (leases, attachments, alarms, members) have no revision to hide behind:
//! a commit writes those through one `apply_batch`, which excludes readers while it runs.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use crate::metrics::Histogram;
use crate::mvcc::hash::KvHasher;
use crate::mvcc::keys::{decode_history_key, version_key_revision, HISTORY_SPACE, KV_SPACE};
use crate::mvcc::read::resolve_revision;
use crate::mvcc::{Backend, MvccError, INITIAL_REVISION};
use crate::pb::etcdserverpb::{AlarmMember, AlarmType};
use crate::storage::durable::DurableFlush;

/// Meta records live under this one-byte space, after every MVCC space.
const META_SPACE: u8 = b'm';

/// Names of meta records.
pub mod meta {
    pub const REVISION: &[u8] = b"revision";
    pub const COMPACTED: &[u8] = b"compacted";
    pub const APPLIED: &[u8] = b"applied";
    pub const MEMBERSHIP: &[u8] = b"membership";
    /// The raised alarms, sorted (see [`super::encode_alarms`]).
    pub const ALARMS: &[u8] = b"alarms";
    /// Present in a store seeded by `corral snapshot restore` (the backup's revision).
    pub const RESTORED: &[u8] = b"restored";
    /// Present while the tree may hold a torn batch (see the module docs). Never in a dump.
    pub const TORN: &[u8] = b"torn";
    /// Prefix of the per-member records (see [`super::member_attr_name`]).
    pub const MEMBER_PREFIX: &[u8] = b"member/";
}

/// The meta record holding member `id`'s published client URLs.
pub fn member_attr_name(id: u64) -> Vec<u8> {
    let mut name = b"member/".to_vec();
    name.extend_from_slice(&id.to_be_bytes());
    name
}

/// The state-machine key of meta record `name`.
pub fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(META_SPACE);
    k.extend_from_slice(name);
    k
}

/// sled's page cache for the state machine. Reads that miss it decode the page from the OS
/// page cache, so it only has to hold the hot keys and the upper levels of the tree: a
/// 60k-put run with 2 KiB values measured 311 MB RSS per member with this bound and 414 MB
/// with sled's 1 GiB default, at the same serializable-read throughput.
const STATE_CACHE_BYTES: u64 = 64 << 20;

/// The state-machine database of one member.
pub struct StateStore {
    db: sled::Db,
    /// How [`StateStore::flush`] reaches stable storage (sled's own flush does not).
    durable: DurableFlush,
    tree: sled::Tree,
    /// Store revision that readers may read at: set only after its batch is fully committed.
    revision: AtomicI64,
    /// Compaction floor, published like `revision`.
    compacted: AtomicI64,
    /// Held shared by readers, exclusively while a batch that removes versions is committed.
    compaction_guard: RwLock<()>,
    /// Serializes commits with snapshot dumps, so a dump never holds half a batch.
    commit_lock: std::sync::Mutex<()>,
    /// The applied alarm list, published after each commit that changes it.
    alarms: RwLock<Vec<AlarmMember>>,
    /// Whether `alarms` holds a NOSPACE alarm: checked on every proposal, so kept apart.
    nospace: AtomicBool,
    /// This member's `--quota-backend-bytes`.
    quota_bytes: AtomicU64,
    /// Space accounting (see [`StateStore::in_use_upper_bound`]).
    space: SpaceCounter,
    /// Commit through sled's atomic `apply_batch` (see the module docs).
    atomic_commits: AtomicBool,
    /// Whether the `TORN` marker is in the tree (written, not necessarily durable yet).
    torn: AtomicBool,
    /// Commits completed so far, so a flush can tell whether one ran while it did.
    commits: AtomicU64,
}

/// Bytes in use, measured by a scan, plus an upper bound on the growth since.
#[derive(Default)]
struct SpaceCounter {
    /// Key and value bytes of every record at the last scan.
    measured: AtomicU64,
    /// Key and value bytes written by commits since the last scan started: removals and
    /// overwrites are not subtracted, so `measured + written` never underestimates.
    written: AtomicU64,
    /// One scan at a time: two overlapping scans could each reset `written` and lose growth.
    scan: Mutex<()>,
}

/// A consistent copy of every state-machine record, for a backup.
pub struct Dump {
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    pub revision: i64,
    pub compacted: i64,
}

/// The result of HashKV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision the hash covers (the requested one, or the current one for 0).
    pub revision: i64,
    pub compacted: i64,
}

/// Adapts a sled tree to MVCC's [`Backend`].
pub struct SledView<'a>(&'a sled::Tree);

fn storage_err(e: sled::Error) -> MvccError {
    MvccError::Storage(e.to_string())
}

impl Backend for SledView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.0.get(key).map_err(storage_err)?.map(|v| v.to_vec()))
    }

    fn first_in(
        &self,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<Option<crate::mvcc::backend::Entry>, MvccError> {
        if lo >= hi {
            return Ok(None);
        }
        match self.0.range(lo..hi).next() {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r.map_err(storage_err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn last_in(
        &self,
        lo: &[u8],
        hi: Bound<&[u8]>,
    ) -> Result<Option<crate::mvcc::backend::Entry>, MvccError> {
        if crate::mvcc::backend::empty_range(lo, hi) {
            return Ok(None);
        }
        match self
            .0
            .range::<&[u8], _>((Bound::Included(lo), hi))
            .next_back()
        {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r.map_err(storage_err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }
}

/// A consistent read view: the backend plus the revision window it may be read at.
pub struct ReadView<'a> {
    pub backend: SledView<'a>,
    pub revision: i64,
    pub compacted: i64,
    _guard: RwLockReadGuard<'a, ()>,
}

impl StateStore {
    pub fn open(dir: &Path) -> io::Result<StateStore> {
        let db = sled::Config::new()
            .path(dir)
            // The state machine is rebuilt from the Raft log after a crash, so sled's own
            // periodic flush is only an optimization; durability points flush explicitly.
            .flush_every_ms(Some(1000))
            // sled's default is 1 GiB, and it keeps that much of the data resident.
            .cache_capacity(STATE_CACHE_BYTES)
            .open()
            .map_err(io::Error::other)?;
        let durable = DurableFlush::open(dir)?;
        let tree = db.open_tree("state").map_err(io::Error::other)?;
        let store = StateStore {
            db,
            durable,
            tree,
            revision: AtomicI64::new(INITIAL_REVISION),
            compacted: AtomicI64::new(0),
            compaction_guard: RwLock::new(()),
            commit_lock: std::sync::Mutex::new(()),
            alarms: RwLock::new(Vec::new()),
            nospace: AtomicBool::new(false),
            quota_bytes: AtomicU64::new(u64::MAX),
            space: SpaceCounter::default(),
            // Atomic until the state machine knows the state can be rebuilt.
            atomic_commits: AtomicBool::new(true),
            torn: AtomicBool::new(false),
            commits: AtomicU64::new(0),
        };
        store
            .torn
            .store(store.read_meta(meta::TORN)?.is_some(), Ordering::Release);
        let rev = store
            .read_meta_i64(meta::REVISION)?
            .unwrap_or(INITIAL_REVISION);
        let compacted = store.read_meta_i64(meta::COMPACTED)?.unwrap_or(0);
        store.revision.store(rev, Ordering::Release);
        store.compacted.store(compacted, Ordering::Release);
        store.load_alarms()?;
        // Nothing measured yet: the first check scans.
        store.space.written.store(u64::MAX / 2, Ordering::Relaxed);
        Ok(store)
    }

    /// Reads the stored alarm list into the published one.
    fn load_alarms(&self) -> io::Result<()> {
        let alarms = match self.read_meta(meta::ALARMS)? {
            None => Vec::new(),
            Some(bytes) => decode_alarms(&bytes)
                .ok_or_else(|| io::Error::other("bad meta record \"alarms\""))?,
        };
        self.publish_alarms(alarms);
        Ok(())
    }

    /// Publishes the applied alarm list (the state machine calls this after committing a
    /// change to it).
    pub fn publish_alarms(&self, alarms: Vec<AlarmMember>) {
        let nospace = alarms.iter().any(|a| a.alarm == AlarmType::Nospace as i32);
        *self.alarms.write().unwrap_or_else(|p| p.into_inner()) = alarms;
        self.nospace.store(nospace, Ordering::Release);
    }

    /// The raised alarms, as last applied on this member.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the store was opened with the `TORN` marker and not restored since: it may hold
    /// part of a batch, and must be rebuilt before use (see the module docs).
    pub fn torn(&self) -> bool {
        self.torn.load(Ordering::Acquire)
    }

    /// Chooses how commits reach sled: `true`, one atomic `apply_batch` each (needed while
    /// nothing could rebuild the state); `false`, plain writes under the `TORN` marker.
    pub fn set_atomic_commits(&self, atomic: bool) {
        self.atomic_commits.store(atomic, Ordering::Release);
    }

    /// Whether this store was seeded from a backup (see `raft::restored`).
    pub fn restored(&self) -> bool {
        matches!(self.read_meta(meta::RESTORED), Ok(Some(_)))
    }

    /// Whether a NOSPACE alarm is raised: writes that need space are refused.
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }

    pub fn set_quota_bytes(&self, bytes: u64) {
        self.quota_bytes.store(bytes, Ordering::Relaxed);
    }

    /// This member's space quota (`--quota-backend-bytes`).
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes.load(Ordering::Relaxed)
    }

    fn read_meta_i64(&self, name: &[u8]) -> io::Result<Option<i64>> {
        match self.read_meta(name)? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| io::Error::other(format!("bad meta record {name:?}")))?;
                Ok(Some(i64::from_be_bytes(b)))
            }
        }
    }

    pub fn read_meta(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(meta_key(name))
            .map_err(io::Error::other)?
            .map(|v| v.to_vec()))
    }

    /// The current published revision.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn compacted(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// A view for readers at the current published revision.
    pub fn read_view(&self) -> ReadView<'_> {
        let guard = self
            .compaction_guard
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ReadView {
            backend: SledView(&self.tree),
            revision: self.revision(),
            compacted: self.compacted(),
            _guard: guard,
        }
    }

    /// The committed state, for the apply path (which is the only writer).
    pub fn backend(&self) -> SledView<'_> {
        SledView(&self.tree)
    }

    /// Commits one applied batch atomically (MVCC writes plus meta records), then publishes
    /// its revision to readers.
    pub fn commit(
        &self,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        meta: &[(&[u8], Vec<u8>)],
        revision: i64,
        compacted: i64,
    ) -> io::Result<()> {
        let removes = writes.values().any(Option::is_none);
        // Records other than key versions and history change in place, and readers see them
        // without a revision to hide a batch's half behind: leases, attachments, alarms,
        // members. The bookkeeping records (`meta`, revision, compaction) readers never read.
        let mut in_place: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut items: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            Vec::with_capacity(writes.len() + meta.len() + 2);
        let mut written = 0usize;
        for (k, v) in writes {
            if let Some(v) = &v {
                written += k.len() + v.len();
            }
            if matches!(k.first(), Some(&KV_SPACE) | Some(&HISTORY_SPACE)) {
                items.push((k, v));
            } else {
                in_place.push((k, v));
            }
        }
        for (name, value) in meta {
            written += name.len() + 1 + value.len();
            items.push((meta_key(name), Some(value.clone())));
        }
        // Plus the revision and compaction records below.
        self.space
            .written
            .fetch_add(written as u64 + 2 * 32, Ordering::Relaxed);
        items.push((
            meta_key(meta::REVISION),
            Some(revision.to_be_bytes().to_vec()),
        ));
        items.push((
            meta_key(meta::COMPACTED),
            Some(compacted.to_be_bytes().to_vec()),
        ));
        let _commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Removing versions could pull data out from under a reader at an older revision, so
        // such batches wait for readers to finish.
        let _guard = if removes {
            Some(
                self.compaction_guard
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            )
        } else {
            None
        };
        let batch_of = |items: Vec<(Vec<u8>, Option<Vec<u8>>)>| {
            let mut batch = sled::Batch::default();
            for (k, v) in items {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            batch
        };
        if self.atomic_commits.load(Ordering::Acquire) {
            items.extend(in_place);
            self.tree
                .apply_batch(batch_of(items))
                .map_err(io::Error::other)?;
        } else {
            if !self.torn.load(Ordering::Acquire) {
                // Before the first write it covers: see the module docs.
                self.tree
                    .insert(meta_key(meta::TORN), &[][..])
                    .map_err(io::Error::other)?;
                self.torn.store(true, Ordering::Release);
            }
            for (k, v) in items {
                match v {
                    Some(v) => self.tree.insert(k, v).map(drop),
                    None => self.tree.remove(k).map(drop),
                }
                .map_err(io::Error::other)?;
            }
            // sled's `apply_batch` excludes readers while it runs, so they see all of these or
            // none. Only commits that touch them pay for its buffer writes.
            if !in_place.is_empty() {
                self.tree
                    .apply_batch(batch_of(in_place))
                    .map_err(io::Error::other)?;
            }
        }
        self.commits.fetch_add(1, Ordering::AcqRel);
        self.compacted.store(compacted, Ordering::Release);
        self.revision.store(revision, Ordering::Release);
        Ok(())
    }

    /// Every record of the state machine, for a snapshot. Excludes commits for its duration so
    /// the copy is consistent with the applied index stored inside it.
    pub fn dump(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.dump_with_revision()?.records)
    }

    /// Like [`StateStore::dump`], with the revision and compaction floor the copy is at.
    ///
    /// sled has no point-in-time iterator, so the copy is made in two steps that together
    /// are the state at one revision R:
    /// 1. under the commit lock, R and every record that changes in place (leases, lease
    ///    attachments, meta: small);
    /// 2. after the lock is released, the key versions and the history, skipping entries
    ///    above R — as readers do. Batches that only add entries (puts, deletes, txns) keep
    ///    applying meanwhile: whatever they add is above R. A batch that *removes* entries
    ///    (compaction, a lease detach) waits, because the compaction guard is held shared
    ///    from step 1 to the end, so nothing at or below R disappears mid-copy.
    pub fn dump_with_revision(&self) -> io::Result<Dump> {
        let mut records = Vec::new();
        let (revision, compacted) = self.dump_to(
            &mut records,
            |_, _| Ok(()),
            |records, k, v| {
                records.push((k.to_vec(), v.to_vec()));
                Ok(())
            },
        )?;
        Ok(Dump {
            records,
            revision,
            compacted,
        })
    }

    /// The copy of [`StateStore::dump_with_revision`] without holding it: `start` gets the
    /// records that change in place (leases, attachments, meta: small, copied under the
    /// commit lock) before any record is handed out, then `record` gets every record in key
    /// order, the key versions and the history as they are read from the tree. A snapshot
    /// streams to its file this way: holding the whole state in memory for it was the largest
    /// part of a member's peak memory. Returns the revision and compaction floor of the copy.
    pub fn dump_to<S>(
        &self,
        sink: &mut S,
        start: impl FnOnce(&mut S, &[&(Vec<u8>, Vec<u8>)]) -> io::Result<()>,
        mut record: impl FnMut(&mut S, &[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<(i64, i64)> {
        let commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let revision = self.revision();
        let compacted = self.compacted();
        // Taken before the commit lock is released (same order as `commit`: no deadlock).
        let _guard = self
            .compaction_guard
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (lo, hi) = (HISTORY_SPACE.min(KV_SPACE), HISTORY_SPACE.max(KV_SPACE));
        // The torn marker describes this tree on this disk, not the state.
        let torn = meta_key(meta::TORN);
        let not_torn = |k: &[u8]| Ok(k != torn.as_slice());
        let before = self.copy_range(..vec![lo], not_torn)?;
        let between = self.copy_range(vec![lo + 1]..vec![hi], not_torn)?;
        let after = self.copy_range(vec![hi + 1].., not_torn)?;
        drop(commit);
        let in_place: Vec<&(Vec<u8>, Vec<u8>)> =
            before.iter().chain(&between).chain(&after).collect();
        start(sink, &in_place)?;
        let at_or_below = |k: &[u8]| -> io::Result<bool> {
            let rev = if k.first() == Some(&KV_SPACE) {
                version_key_revision(k)
            } else {
                decode_history_key(k).map(|(rev, _)| rev)
            };
            rev.map(|rev| rev <= revision).map_err(io::Error::other)
        };
        // In key order, as the tree holds them.
        for (space, in_place) in [(lo, before), (hi, between)] {
            for (k, v) in &in_place {
                record(sink, k, v)?;
            }
            for r in self.tree.range(vec![space]..vec![space + 1]) {
                let (k, v) = r.map_err(io::Error::other)?;
                if at_or_below(&k)? {
                    record(sink, &k, &v)?;
                }
            }
        }
        for (k, v) in &after {
            record(sink, k, v)?;
        }
        Ok((revision, compacted))
    }

    /// Copies the records in `range` that `keep` accepts.
    fn copy_range<R: std::ops::RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        keep: impl Fn(&[u8]) -> io::Result<bool>,
    ) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for r in self.tree.range(range) {
            let (k, v) = r.map_err(io::Error::other)?;
            if keep(&k)? {
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// etcd's HashKV: a crc32 over every stored key version with a revision up to `revision`
    /// (0: the current revision). Runs on a read view, so compaction waits for it but other
    /// applies do not: versions they add are above the view's revision and skipped.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        let view = self.read_view();
        let rev = resolve_revision(revision, view.revision, view.compacted)?;
        let mut hasher = KvHasher::new(rev);
        for r in self.tree.range(vec![KV_SPACE]..vec![KV_SPACE + 1]) {
            let (k, v) = r.map_err(storage_err)?;
            hasher.add(&k, &v)?;
        }
        Ok(KvHash {
            hash: hasher.finish(),
            revision: rev,
            compacted: view.compacted,
        })
    }

    /// etcd's Hash: a crc32 over every record of the state machine (meta records included,
    /// so members agree only while they have applied exactly the same entries).
    pub fn hash_all(&self) -> io::Result<(u32, i64)> {
        let dump = self.dump_with_revision()?;
        let mut crc = crc32fast::Hasher::new();
        for (k, v) in &dump.records {
            crc.update(&(k.len() as u64).to_be_bytes());
            crc.update(k);
            crc.update(&(v.len() as u64).to_be_bytes());
            crc.update(v);
        }
        Ok((crc.finalize(), dump.revision))
    }

    /// Key and value bytes of every record now: the space in use, as the quota counts it.
    /// A scan of the whole tree; the result also resets [`StateStore::in_use_upper_bound`].
    pub fn measure_in_use(&self) -> io::Result<u64> {
        let _scan = self.space.scan.lock().unwrap_or_else(|p| p.into_inner());
        // Reset before scanning: writes during the scan are counted again afterwards, which
        // keeps the bound an upper bound whether or not the scan saw them.
        let before = self.space.written.swap(0, Ordering::Relaxed);
        let mut total = 0u64;
        for r in self.tree.iter() {
            match r {
                Ok((k, v)) => total += (k.len() + v.len()) as u64,
                Err(e) => {
                    self.space.written.fetch_add(before, Ordering::Relaxed);
                    return Err(io::Error::other(e));
                }
            }
        }
        self.space.measured.store(total, Ordering::Relaxed);
        Ok(total)
    }

    /// The last measured bytes in use.
    pub fn in_use_measured(&self) -> u64 {
        self.space.measured.load(Ordering::Relaxed)
    }

    /// A cheap bound the bytes in use are certainly below: the last scan plus everything
    /// committed since. Lets the quota check skip the scan while far from the quota.
    pub fn in_use_upper_bound(&self) -> u64 {
        self.space
            .measured
            .load(Ordering::Relaxed)
            .saturating_add(self.space.written.load(Ordering::Relaxed))
    }

    /// Replaces the whole state with a snapshot's records, durably.
    pub fn restore(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<()> {
        let _commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _guard = self
            .compaction_guard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.tree.clear().map_err(io::Error::other)?;
        let torn = meta_key(meta::TORN);
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            if k != torn {
                batch.insert(k, v);
            }
        }
        self.tree.apply_batch(batch).map_err(io::Error::other)?;
        self.durable.flush(&self.db)?;
        // `clear` removed the marker, and the flush made that durable with the records.
        self.torn.store(false, Ordering::Release);
        let rev = self
            .read_meta_i64(meta::REVISION)?
            .unwrap_or(INITIAL_REVISION);
        let compacted = self.read_meta_i64(meta::COMPACTED)?.unwrap_or(0);
        self.compacted.store(compacted, Ordering::Release);
        self.revision.store(rev, Ordering::Release);
        self.load_alarms()?;
        self.space.written.store(u64::MAX / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Makes everything committed so far durable (on Tokio's blocking pool) and, if no commit
    /// ran meanwhile, removes the `TORN` marker durably too (see the module docs).
    pub async fn flush(&self) -> io::Result<()> {
        let before = self.commits.load(Ordering::Acquire);
        self.durable_flush().await?;
        let unmarked = {
            let _commit = self
                .commit_lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Every commit counted in `before` had finished its writes before the flush began.
            // A later one (or one under way then) changed the count: its writes may not be
            // durable, so the marker stays.
            if self.torn.load(Ordering::Acquire) && self.commits.load(Ordering::Acquire) == before {
                self.tree
                    .remove(meta_key(meta::TORN))
                    .map_err(io::Error::other)?;
                self.torn.store(false, Ordering::Release);
                true
            } else {
                false
            }
        };
        if unmarked {
            // A commit from here on writes the marker again before its own writes.
            self.durable_flush().await?;
        }
        Ok(())
    }

    async fn durable_flush(&self) -> io::Result<()> {
        let (db, durable) = (self.db.clone(), self.durable.clone());
        match tokio::task::spawn_blocking(move || durable.flush(&db)).await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(format!("state flush task failed: {join}"))),
        }
    }

    /// Durations of this store's durable flushes (before a snapshot, a defragment, shutdown).
    pub fn flush_durations(&self) -> std::sync::Arc<Histogram> {
        self.durable.durations()
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Encodes the alarm list for its meta record: member id (8 bytes) and alarm type (4 bytes),
/// big endian, per alarm.
pub fn encode_alarms(alarms: &[AlarmMember]) -> Vec<u8> {
    let mut out = Vec::with_capacity(alarms.len() * 12);
    for a in alarms {
        out.extend_from_slice(&a.member_id.to_be_bytes());
        out.extend_from_slice(&a.alarm.to_be_bytes());
    }
    out
}

/// Decodes the alarm meta record; `None` if it is corrupt.
pub fn decode_alarms(bytes: &[u8]) -> Option<Vec<AlarmMember>> {
    if bytes.len() % 12 != 0 {
        return None;
    }
    bytes
        .chunks_exact(12)
        .map(|c| {
            Some(AlarmMember {
                member_id: u64::from_be_bytes(c[..8].try_into().ok()?),
                alarm: i32::from_be_bytes(c[8..].try_into().ok()?),
            })
        })
        .collect()
}
