//! HashKV: a crc32 over the stored key versions up to a revision.
//!
//! Members apply the same commands in the same order and store byte-identical versions, and
//! compaction removes the same versions everywhere at the same revision, so two members that
//! report the same compaction revision report the same hash for the same revision. A store
//! restored from a backup holds the same versions, so it hashes the same too.

use super::keys::{self, KV_SPACE};
use super::MvccError;

/// Hashes key versions fed in state-machine key order, skipping those above `revision`.
pub struct KvHasher {
    revision: i64,
    crc: crc32fast::Hasher,
}

impl KvHasher {
    pub fn new(revision: i64) -> KvHasher {
        KvHasher {
            revision,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Adds one entry of the version key space (`keys::KV_SPACE`); other entries are ignored.
    pub fn add(&mut self, sm_key: &[u8], value: &[u8]) -> Result<(), MvccError> {
        if sm_key.first() != Some(&KV_SPACE) {
            return Ok(());
        }
        let rev = keys::version_key_revision(sm_key)?;
        if rev > self.revision {
            return Ok(());
        }
        // The state-machine key carries the user key and the revision, the value the record
        // (create revision, version, lease, bytes): together every field of the version.
        // Lengths first, so that no two different entries feed the same byte stream.
        self.crc.update(&(sm_key.len() as u64).to_be_bytes());
        self.crc.update(sm_key);
        self.crc.update(&(value.len() as u64).to_be_bytes());
        self.crc.update(value);
        Ok(())
    }

    pub fn finish(self) -> u32 {
        self.crc.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::keys::{history_key, version_key, Record};

    fn live(v: &[u8]) -> Vec<u8> {
        Record::Live {
            create_revision: 2,
            version: 1,
            lease: 0,
            value: v.to_vec(),
        }
        .encode()
    }

    fn hash(entries: &[(Vec<u8>, Vec<u8>)], rev: i64) -> u32 {
        let mut h = KvHasher::new(rev);
        for (k, v) in entries {
            h.add(k, v).unwrap();
        }
        h.finish()
    }

    #[test]
    fn covers_versions_up_to_the_revision_only() {
        let a2 = (version_key(b"a", 2), live(b"x"));
        let a3 = (version_key(b"a", 3), live(b"y"));
        let hist = (history_key(3, 0), b"a".to_vec());
        let both = vec![a2.clone(), a3.clone(), hist];
        assert_eq!(hash(&both, 2), hash(std::slice::from_ref(&a2), 2));
        assert_ne!(hash(&both, 3), hash(&both, 2));
        assert_eq!(hash(&both, 3), hash(&[a2.clone(), a3], 3));
        // Any change to a covered version changes the hash.
        assert_ne!(
            hash(&[a2], 2),
            hash(&[(version_key(b"a", 2), live(b"z"))], 2)
        );
    }

    #[test]
    fn order_and_membership_matter() {
        let a2 = (version_key(b"a", 2), live(b"x"));
        let b2 = (version_key(b"b", 2), live(b"x"));
        assert_ne!(
            hash(std::slice::from_ref(&a2), 2),
            hash(&[a2.clone(), b2.clone()], 2)
        );
        assert_ne!(hash(&[a2.clone(), b2.clone()], 2), hash(&[b2, a2], 2));
    }

    #[test]
    fn corrupt_keys_are_errors() {
        let mut h = KvHasher::new(10);
        assert!(h.add(&[KV_SPACE, 1, 2], b"").is_err());
    }
}
