//! The state machine's storage: one sled tree holding every key space (see `mvcc::keys`), plus
//! meta records, committed with one atomic `apply_batch` per applied batch of entries.
//!
//! Readers never lock: they read at the last *published* revision, and MVCC ignores versions
//! above it, so a reader can't see half of a batch that is being committed. Only compaction
//! (which removes old versions) excludes readers, through `compaction_guard`.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use crate::mvcc::{Backend, MvccError, INITIAL_REVISION};

/// Meta records live under this one-byte space, after every MVCC space.
const META_SPACE: u8 = b'm';

/// Names of meta records.
pub mod meta {
    pub const REVISION: &[u8] = b"revision";
    pub const COMPACTED: &[u8] = b"compacted";
    pub const APPLIED: &[u8] = b"applied";
    pub const MEMBERSHIP: &[u8] = b"membership";
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

/// The state-machine database of one member.
pub struct StateStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Store revision that readers may read at: set only after its batch is fully committed.
    revision: AtomicI64,
    /// Compaction floor, published like `revision`.
    compacted: AtomicI64,
    /// Held shared by readers, exclusively while a batch that removes versions is committed.
    compaction_guard: RwLock<()>,
    /// Serializes commits with snapshot dumps, so a dump never holds half a batch.
    commit_lock: std::sync::Mutex<()>,
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
            .open()
            .map_err(io::Error::other)?;
        let tree = db.open_tree("state").map_err(io::Error::other)?;
        let store = StateStore {
            db,
            tree,
            revision: AtomicI64::new(INITIAL_REVISION),
            compacted: AtomicI64::new(0),
            compaction_guard: RwLock::new(()),
            commit_lock: std::sync::Mutex::new(()),
        };
        let rev = store
            .read_meta_i64(meta::REVISION)?
            .unwrap_or(INITIAL_REVISION);
        let compacted = store.read_meta_i64(meta::COMPACTED)?.unwrap_or(0);
        store.revision.store(rev, Ordering::Release);
        store.compacted.store(compacted, Ordering::Release);
        Ok(store)
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
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        for (name, value) in meta {
            batch.insert(meta_key(name), value.clone());
        }
        batch.insert(meta_key(meta::REVISION), revision.to_be_bytes().to_vec());
        batch.insert(meta_key(meta::COMPACTED), compacted.to_be_bytes().to_vec());
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
        self.tree.apply_batch(batch).map_err(io::Error::other)?;
        self.compacted.store(compacted, Ordering::Release);
        self.revision.store(revision, Ordering::Release);
        Ok(())
    }

    /// Every record of the state machine, for a snapshot. Excludes commits for its duration so
    /// the copy is consistent with the applied index stored inside it.
    pub fn dump(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.tree
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(io::Error::other)
            })
            .collect()
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
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch).map_err(io::Error::other)?;
        self.db.flush().map_err(io::Error::other)?;
        let rev = self
            .read_meta_i64(meta::REVISION)?
            .unwrap_or(INITIAL_REVISION);
        let compacted = self.read_meta_i64(meta::COMPACTED)?.unwrap_or(0);
        self.compacted.store(compacted, Ordering::Release);
        self.revision.store(rev, Ordering::Release);
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io::Error::other)?;
        Ok(())
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
