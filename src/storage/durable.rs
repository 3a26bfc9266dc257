//! Flushes that reach the disk.
//!
//! sled 0.34's `Db::flush` writes its IO buffers with `pwrite` followed by `sync_file_range`
//! (sled issue #1452). That pushes the pages towards the device but neither flushes the
//! device's volatile write cache nor the file's metadata, and sled's file grows as it appends:
//! after a power cut the new size, and with it everything written past the old end, can be
//! gone. sled also writes any item larger than a quarter of a segment (128 KiB) to a file of
//! its own under `blobs/`, which it never syncs. A killed process loses none of this (the page
//! cache survives it), which is why crash tests with SIGKILL cannot tell; a power cut or a
//! kernel panic can.
//!
//! A Raft member must not lose what it acknowledged: a granted vote, log entries it reported
//! as persisted, and state-machine pages once the log entries behind them are purged. So every
//! flush that such a promise rests on goes through [`DurableFlush::flush`]: sled's flush, then
//! an `fsync` of every blob file that grew since it was last synced, then an `fdatasync` of
//! the database file. Once that returns, everything sled had accepted before it started is on
//! stable storage.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::metrics::Histogram;

/// Makes a sled database's flushes durable. Cheap to clone; clones share the open file and
/// the statistics.
#[derive(Clone)]
pub struct DurableFlush {
    shared: Arc<Shared>,
}

struct Shared {
    /// sled's data file (`<dir>/db`), opened read-only: `fdatasync` acts on the file, whichever
    /// descriptor wrote to it.
    data: File,
    blobs: PathBuf,
    /// Blob files synced so far and their size then. A blob is written once, front to back,
    /// while sled inserts the item; a flush may list it half-written (another writer is still
    /// inserting it), so a blob counts as synced only at the size it had when synced.
    synced_blobs: Mutex<HashMap<u64, u64>>,
    /// Duration of each whole flush (sled's, the blobs' and the data file's).
    durations: Arc<Histogram>,
    blob_syncs: AtomicU64,
}

impl DurableFlush {
    /// Prepares durable flushes for the sled database open at `dir`. Also makes the
    /// database's files and directories themselves durable (sled creates them without syncing
    /// their directory entries), so a database created just now survives a power cut too.
    pub fn open(dir: &Path) -> io::Result<DurableFlush> {
        let data = File::open(dir.join("db"))?;
        data.sync_all()?;
        match File::open(dir.join("conf")) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let blobs = dir.join("blobs");
        sync_dir(&blobs)?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(DurableFlush {
            shared: Arc::new(Shared {
                data,
                blobs,
                synced_blobs: Mutex::new(HashMap::new()),
                durations: Arc::default(),
                blob_syncs: AtomicU64::new(0),
            }),
        })
    }

    /// Flushes `db` (the database this was opened for) and makes what it wrote durable.
    /// Blocking: call it from a blocking thread, never on a runtime worker.
    pub fn flush(&self, db: &sled::Db) -> io::Result<()> {
        let started = Instant::now();
        db.flush().map_err(io::Error::from)?;
        self.sync_blobs()?;
        self.shared.data.sync_data()?;
        self.shared.durations.observe(started.elapsed());
        Ok(())
    }

    /// The durations of the flushes so far, for `/metrics`.
    pub fn durations(&self) -> Arc<Histogram> {
        self.shared.durations.clone()
    }

    /// How many times a blob file was synced (tests check that large items are covered).
    pub fn blob_syncs(&self) -> u64 {
        self.shared.blob_syncs.load(Ordering::Relaxed)
    }

    /// Syncs every blob file that is new or grew since its last sync, then the directory if
    /// any was new. Blobs sled deleted meanwhile are forgotten.
    fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self
            .shared
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let listing = match std::fs::read_dir(&self.shared.blobs) {
            Ok(listing) => listing,
            // No blobs directory means no blobs (sled creates it at open; be lenient anyway).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = Vec::new();
        let mut new_names = false;
        for entry in listing {
            let entry = entry?;
            // sled names blobs by the decimal log sequence number of their item; anything else
            // in the directory is not sled's and not ours to sync.
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            present.push(id);
            let file = match File::open(entry.path()) {
                Ok(file) => file,
                // Removed by sled between the listing and now: nothing left to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if synced.get(&id) == Some(&len) {
                continue;
            }
            file.sync_all()?;
            new_names |= !synced.contains_key(&id);
            synced.insert(id, len);
            self.shared.blob_syncs.fetch_add(1, Ordering::Relaxed);
        }
        synced.retain(|id, _| present.contains(id));
        if new_names {
            sync_dir(&self.shared.blobs)?;
        }
        Ok(())
    }
}

/// `fsync` of a directory, so the entries created in it survive a power cut. A directory that
/// does not exist has nothing to sync.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (sled::Db, DurableFlush) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let durable = DurableFlush::open(dir).unwrap();
        (db, durable)
    }

    #[test]
    fn every_flush_is_timed_and_small_items_need_no_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, durable) = open(&tmp.path().join("db"));
        db.insert(b"k", &[7u8; 256][..]).unwrap();
        durable.flush(&db).unwrap();
        durable.flush(&db).unwrap();
        assert_eq!(durable.durations().snapshot().count, 2);
        assert_eq!(durable.blob_syncs(), 0);
    }

    #[test]
    fn large_items_are_synced_once_and_forgotten_when_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (db, durable) = open(&dir);
        // Past sled's blob threshold (a quarter of its 512 KiB segments).
        db.insert(b"big", vec![1u8; 1 << 20]).unwrap();
        durable.flush(&db).unwrap();
        let blobs = std::fs::read_dir(dir.join("blobs")).unwrap().count();
        assert!(blobs >= 1, "a 1 MiB value should live in a blob file");
        assert_eq!(durable.blob_syncs(), blobs as u64);

        // Nothing new: nothing synced again.
        durable.flush(&db).unwrap();
        assert_eq!(durable.blob_syncs(), blobs as u64);

        // A second large item is a second blob.
        db.insert(b"big2", vec![2u8; 1 << 20]).unwrap();
        durable.flush(&db).unwrap();
        assert!(durable.blob_syncs() > blobs as u64);
    }
}
