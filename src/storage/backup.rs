//! The backup file `Maintenance.Snapshot` streams and `corral snapshot restore` reads.
//!
//! Layout (integers big endian):
//!
//! ```text
//! "CORRALBK"  format version (u32)  revision (i64)  compacted (i64)  record count (u64)
//! record*     key length (u32)  key  value length (u32)  value
//! zero padding to a multiple of 512 bytes
//! sha256 of everything above (32 bytes)
//! ```
//!
//! The records are the state machine's, as one consistent copy. The padding and the
//! trailing sha256 are etcd's convention: `etcdctl snapshot save` refuses a stream whose
//! length is not `512·n + 32`, and a restore checks the digest before trusting the file.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::state::{meta, meta_key, Dump, StateStore};
use crate::mvcc::hash::KvHasher;

const MAGIC: &[u8; 8] = b"CORRALBK";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
/// The data part is padded to a multiple of this (etcd's check: `size % 512 == 32`).
const ALIGN: u64 = 512;
const DIGEST_LEN: usize = 32;

/// Bytes per `SnapshotResponse` blob, as etcd sends them.
pub const CHUNK: usize = 32 * 1024;

/// What a backup's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub revision: i64,
    pub compacted: i64,
    pub records: u64,
}

/// A verified, decoded backup.
pub struct Backup {
    pub header: Header,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// The file's sha256 (its last 32 bytes, checked).
    pub sha256: [u8; DIGEST_LEN],
    /// Length of the whole file.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a corral backup (no CORRALBK header)")]
    BadMagic,
    #[error("backup format version {0} is not supported (this corral reads version 1)")]
    UnsupportedVersion(u32),
    #[error("the file is too short to be a backup ({0} bytes)")]
    TooShort(u64),
    #[error(
        "sha256 mismatch: the file is damaged or truncated (stored {stored}, computed {computed})"
    )]
    HashMismatch { stored: String, computed: String },
    #[error("corrupt backup: {0}")]
    Corrupt(&'static str),
}

fn padded(len: u64) -> u64 {
    len.div_ceil(ALIGN) * ALIGN
}

/// Total length of the backup of `dump`, digest included: what `remaining_bytes` counts down.
pub fn encoded_len(dump: &Dump) -> u64 {
    let data: u64 = HEADER_LEN as u64
        + dump
            .records
            .iter()
            .map(|(k, v)| 8 + k.len() as u64 + v.len() as u64)
            .sum::<u64>();
    padded(data) + DIGEST_LEN as u64
}

/// Encodes `dump` as a backup, `chunk` bytes at a time (the last piece may be shorter).
pub struct Chunks {
    dump: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    /// Encoded bytes not yet handed out start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// Over every data byte appended so far (the digest itself is not).
    sha: Sha256,
    data_len: u64,
    chunk: usize,
    done: bool,
}

impl Chunks {
    pub fn new(dump: Dump, chunk: usize) -> Chunks {
        let mut c = Chunks {
            buf: Vec::with_capacity(2 * chunk.max(1)),
            dump: Vec::new().into_iter(),
            pos: 0,
            sha: Sha256::new(),
            data_len: 0,
            chunk: chunk.max(1),
            done: false,
        };
        c.push(MAGIC);
        c.push(&FORMAT_VERSION.to_be_bytes());
        c.push(&dump.revision.to_be_bytes());
        c.push(&dump.compacted.to_be_bytes());
        c.push(&(dump.records.len() as u64).to_be_bytes());
        c.dump = dump.records.into_iter();
        c
    }

    /// Appends data bytes (hashed).
    fn push(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.data_len += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl Iterator for Chunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.pending() < self.chunk && !self.done {
            // Drop what was handed out; less than a chunk remains, so this copy is small.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.pending() < self.chunk && !self.done {
            match self.dump.next() {
                Some((k, v)) => {
                    // Keys and values are far below 4 GiB (requests are capped at 1.5 MiB).
                    self.push(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_be_bytes());
                    self.push(&k);
                    self.push(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                    self.push(&v);
                }
                None => {
                    let pad = padded(self.data_len) - self.data_len;
                    self.push(&vec![0; pad as usize]);
                    let digest = std::mem::take(&mut self.sha).finalize();
                    self.buf.extend_from_slice(&digest);
                    self.done = true;
                }
            }
        }
        let n = self.pending().min(self.chunk);
        if n == 0 {
            return None;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Some(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `bytes` end with the sha256 of what precedes them, at etcd's alignment: true for
/// every backup stream, corral's or etcd's.
pub fn digest_ok(bytes: &[u8]) -> bool {
    if bytes.len() < DIGEST_LEN || bytes.len() as u64 % ALIGN != DIGEST_LEN as u64 {
        return false;
    }
    let (data, stored) = bytes.split_at(bytes.len() - DIGEST_LEN);
    Sha256::digest(data).as_slice() == stored
}

/// Reads a backup file, checks its sha256 and decodes it.
pub fn read(path: &Path) -> Result<Backup, BackupError> {
    decode(&std::fs::read(path)?)
}

/// Checks a backup's sha256 and decodes it.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    let size = bytes.len() as u64;
    if bytes.len() < HEADER_LEN + DIGEST_LEN {
        return Err(BackupError::TooShort(size));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::BadMagic);
    }
    let (data, stored) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let computed = Sha256::digest(data);
    if computed.as_slice() != stored {
        return Err(BackupError::HashMismatch {
            stored: hex(stored),
            computed: hex(&computed),
        });
    }
    let mut r = Reader {
        data,
        pos: MAGIC.len(),
    };
    let version = u32::from_be_bytes(r.array()?);
    if version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion(version));
    }
    let header = Header {
        revision: i64::from_be_bytes(r.array()?),
        compacted: i64::from_be_bytes(r.array()?),
        records: u64::from_be_bytes(r.array()?),
    };
    // Every record takes at least 8 bytes, which bounds the allocation by the file size.
    if header.records > data.len() as u64 / 8 {
        return Err(BackupError::Corrupt("record count exceeds the file"));
    }
    let mut records = Vec::with_capacity(header.records as usize);
    for _ in 0..header.records {
        let k = r.bytes()?;
        let v = r.bytes()?;
        records.push((k, v));
    }
    if data[r.pos..].iter().any(|&b| b != 0) {
        return Err(BackupError::Corrupt("unexpected bytes after the records"));
    }
    let mut sha256 = [0u8; DIGEST_LEN];
    sha256.copy_from_slice(stored);
    Ok(Backup {
        header,
        records,
        sha256,
        size,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn slice(&mut self, n: usize) -> Result<&[u8], BackupError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(BackupError::Corrupt("a record runs past the end"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BackupError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.slice(N)?);
        Ok(a)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, BackupError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        Ok(self.slice(n)?.to_vec())
    }
}

impl Backup {
    /// HashKV of the backed-up store at its revision: what `Maintenance.HashKV` answers on a
    /// member restored from it (and on the member it was taken from, at that revision).
    pub fn kv_hash(&self) -> Result<u32, crate::mvcc::MvccError> {
        let mut h = KvHasher::new(self.header.revision);
        for (k, v) in &self.records {
            h.add(k, v)?;
        }
        Ok(h.finish())
    }
}

/// Whether a record belongs to the member or cluster the backup was taken from rather than
/// to the data: the Raft position and membership, the old members' attributes and alarms.
/// A restored store starts without them, so the new cluster's log applies from index 0 on
/// top of the data and its own membership is the only one.
fn is_cluster_record(key: &[u8]) -> bool {
    let member_prefix = meta_key(meta::MEMBER_PREFIX);
    key == meta_key(meta::APPLIED).as_slice()
        || key == meta_key(meta::MEMBERSHIP).as_slice()
        || key == meta_key(meta::ALARMS).as_slice()
        || key.starts_with(&member_prefix)
}

/// Seeds a new member's data directory with a backup's data: the state-machine store (keys,
/// history, leases, znodes, revision and compaction floor) and no Raft state. `corral serve`
/// on it bootstraps a new cluster from its flags, and revisions continue from the backup's.
///
/// `data_dir` must not exist or be empty. The store is built beside it and renamed into
/// place, so an interrupted restore leaves no half-seeded directory behind.
pub fn restore(backup: Backup, data_dir: &Path) -> io::Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("data dir {} exists and is not empty", data_dir.display()),
            ));
        }
    }
    let tmp = sibling(data_dir, ".restoring");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    {
        // The layout `node.rs` opens: the state machine lives in `<data dir>/state`.
        let store = StateStore::open(&tmp.join("state"))?;
        let mut records: Vec<_> = backup
            .records
            .into_iter()
            .filter(|(k, _)| !is_cluster_record(k))
            .collect();
        // Tells the member to hand its data to joining members by snapshot, not by log.
        records.push((
            meta_key(meta::RESTORED),
            backup.header.revision.to_be_bytes().to_vec(),
        ));
        // Flushes before returning.
        store.restore(records)?;
    }
    if data_dir.exists() {
        // Empty (checked above): rename cannot replace a directory on every platform.
        std::fs::remove_dir(data_dir)?;
    }
    std::fs::rename(&tmp, data_dir)?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(n: usize, value_len: usize) -> Dump {
        Dump {
            records: (0..n)
                .map(|i| (format!("k{i:06}").into_bytes(), vec![i as u8; value_len]))
                .collect(),
            revision: 42,
            compacted: 7,
        }
    }

    fn encode(d: Dump, chunk: usize) -> Vec<Vec<u8>> {
        Chunks::new(d, chunk).collect()
    }

    #[test]
    fn roundtrip_in_chunks_of_any_size() {
        for (n, value_len) in [(0, 0), (1, 3), (500, 100), (3, 100_000)] {
            for chunk in [1, 7, 512, CHUNK] {
                if chunk == 1 && value_len > 1000 {
                    continue;
                }
                let d = dump(n, value_len);
                let want_len = encoded_len(&d);
                let records = d.records.clone();
                let pieces = encode(d, chunk);
                assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= chunk));
                let bytes: Vec<u8> = pieces.concat();
                assert_eq!(bytes.len() as u64, want_len, "n={n} chunk={chunk}");
                // etcdctl's acceptance rule.
                assert_eq!(bytes.len() % 512, 32);
                let b = decode(&bytes).expect("decodes");
                assert_eq!(
                    b.header,
                    Header {
                        revision: 42,
                        compacted: 7,
                        records: n as u64
                    }
                );
                assert_eq!(b.records, records);
                assert_eq!(b.size, want_len);
            }
        }
    }

    #[test]
    fn damage_is_detected() {
        let bytes: Vec<u8> = encode(dump(10, 10), CHUNK).concat();
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(matches!(
            decode(&flipped),
            Err(BackupError::HashMismatch { .. })
        ));
        let truncated = &bytes[..bytes.len() - 1];
        assert!(decode(truncated).is_err());
        assert!(matches!(decode(b"short"), Err(BackupError::TooShort(5))));
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(matches!(decode(&other), Err(BackupError::BadMagic)));
    }

    #[test]
    fn restore_drops_cluster_records_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            (meta_key(meta::APPLIED), vec![1]),
            (meta_key(meta::MEMBERSHIP), vec![2]),
            (meta_key(meta::ALARMS), vec![0; 12]),
            (meta_key(&super::super::state::member_attr_name(9)), vec![3]),
            (meta_key(meta::REVISION), 42i64.to_be_bytes().to_vec()),
            (crate::mvcc::keys::version_key(b"data", 42), vec![4]),
        ];
        let bytes: Vec<u8> = Chunks::new(
            Dump {
                records,
                revision: 42,
                compacted: 0,
            },
            CHUNK,
        )
        .collect::<Vec<_>>()
        .concat();
        let target = dir.path().join("member");
        restore(decode(&bytes).unwrap(), &target).unwrap();
        let store = StateStore::open(&target.join("state")).unwrap();
        assert_eq!(store.revision(), 42);
        let kept: Vec<Vec<u8>> = store.dump().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kept,
            vec![
                crate::mvcc::keys::version_key(b"data", 42),
                meta_key(meta::RESTORED),
                meta_key(meta::REVISION)
            ]
        );
        assert!(store.alarms().is_empty());
        assert!(store.restored());
        drop(store);
        // A second restore into the now non-empty directory is refused.
        let again = restore(decode(&bytes).unwrap(), &target);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}
