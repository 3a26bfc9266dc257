//! MVCC with etcd's semantics: revisions, key versions, tombstones, Range / Put / DeleteRange /
//! Txn / Compact.
//!
//! Pure and deterministic: no async, no Raft, no sled. It runs on any ordered [`Backend`]; the
//! state machine gives it the sled tree, unit tests a `BTreeMap`. Every member applies the same
//! commands in the same order and gets byte-identical state.
//!
//! Revisions follow etcd: the store starts at revision 1; each write request that changes
//! something takes the next revision; the changes of one txn share it and are numbered by
//! sub-revision. Reads at a past revision work until that revision is compacted.

pub mod backend;
pub mod hash;
pub mod keys;
pub mod read;
pub mod validate;
pub mod write;

pub use backend::{Backend, Overlay};
pub use read::{get, range};
pub use write::Writer;

use serde::{Deserialize, Serialize};

/// The revision of an empty store: etcd starts at 1, so the first write gets 2.
pub const INITIAL_REVISION: i64 = 1;

/// etcd's limit on operations per txn branch (`--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// etcd's request size cap (`--max-request-bytes` default, 1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Everything MVCC can refuse. The `Display` texts are etcd's exact messages: etcd clients
/// match on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MvccError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A write while a NOSPACE alarm is raised (the space quota was exceeded).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A write through the etcd API into the znode namespace's reserved keys.
    #[error("corral: keys under \"\\x00zk/\" belong to the znode namespace and are read-only through the etcd API")]
    ReservedKey,
    /// The backend failed to read or write; the member cannot continue applying.
    #[error("storage error: {0}")]
    Storage(String),
    /// Stored bytes that do not decode: a bug or disk corruption.
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// Which user keys a request covers, decoded from etcd's (key, range_end) convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpan<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means every key `>= start` (`range_end == "\0"`).
    Range {
        start: &'a [u8],
        end: Option<&'a [u8]>,
    },
}

impl<'a> KeySpan<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::Range {
                start: key,
                end: None,
            },
            end => KeySpan::Range {
                start: key,
                end: Some(end),
            },
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeySpan::Single(key) => *key == k,
            KeySpan::Range { start, end } => k >= *start && end.is_none_or(|e| k < e),
        }
    }

    /// Whether two spans share at least one key.
    pub fn overlaps(&self, other: &KeySpan<'_>) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        // Half-open intervals [a0, a1) and [b0, b1), None = unbounded above.
        let a_below_b_end = b1.as_ref().is_none_or(|e| a0.as_slice() < e.as_slice());
        let b_below_a_end = a1.as_ref().is_none_or(|e| b0.as_slice() < e.as_slice());
        a_below_b_end && b_below_a_end
    }

    fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            KeySpan::Single(k) => {
                let mut end = k.to_vec();
                end.push(0);
                (k.to_vec(), Some(end))
            }
            KeySpan::Range { start, end } => (start.to_vec(), end.map(|e| e.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests;
