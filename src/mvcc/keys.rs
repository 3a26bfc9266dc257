//! How MVCC state is laid out in the state machine's flat, ordered key space.
//!
//! Every state-machine key starts with a one-byte key-space tag, so one ordered tree holds
//! everything and one atomic batch can update all of it together.
//!
//! - `k` ++ escaped(user key) ++ `00 01` ++ revision (8 bytes, big endian) → [`Record`].
//!   All versions of one user key are contiguous and ordered by revision, and user keys keep
//!   their byte order, so "latest version at revision R" is one reverse seek and a key range is
//!   a forward walk.
//! - `h` ++ revision ++ sub-revision → user key: the change history in revision order, which
//!   watches replay from.
//!
//! User keys are escaped (`00` → `00 FF`) and terminated with `00 01`: the encoding is
//! prefix-free and order-preserving, so no user key's versions can interleave with another's.

use super::MvccError;

/// Key space of key versions.
pub const KV_SPACE: u8 = b'k';
/// Key space of the revision-ordered change history.
pub const HISTORY_SPACE: u8 = b'h';
/// Key space of leases: `l` ++ lease id → lease record (owned by the lease module).
pub const LEASE_SPACE: u8 = b'l';
/// Key space of lease attachments: `a` ++ lease id ++ user key → empty. Lets a revocation find
/// every attached key with one prefix scan.
pub const ATTACH_SPACE: u8 = b'a';

/// The state-machine key of lease `id`.
pub fn lease_key(id: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(LEASE_SPACE);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The prefix of every attachment of lease `id`.
pub fn attach_prefix(id: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(ATTACH_SPACE);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The attachment of `key` to lease `id`.
pub fn attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = attach_prefix(id);
    out.extend_from_slice(key);
    out
}

/// The exclusive end of a prefix scan over `prefix` (prefixes here never end in 0xFF runs that
/// overflow: they start with a space tag below 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}

/// Appends the escaped, terminated form of `key`.
fn push_escaped(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        if b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(b);
        }
    }
}

/// The prefix shared by every version of `key`.
pub fn version_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    out.push(KV_SPACE);
    push_escaped(&mut out, key);
    out.extend_from_slice(&[0, 1]);
    out
}

/// The state-machine key of `key` at `rev`.
pub fn version_key(key: &[u8], rev: i64) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

/// The smallest state-machine key past every version of `key` (and before the next user key).
pub fn after_versions(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 3);
    out.push(KV_SPACE);
    push_escaped(&mut out, key);
    out.extend_from_slice(&[0, 2]);
    out
}

/// Lower bound (inclusive) of the versions of user keys `>= key`.
pub fn range_start(key: &[u8]) -> Vec<u8> {
    version_prefix(key)
}

/// Upper bound (exclusive) of the versions of user keys `< end`; `None` means "to the end".
pub fn range_stop(end: Option<&[u8]>) -> Vec<u8> {
    match end {
        Some(end) => version_prefix(end),
        None => vec![KV_SPACE + 1],
    }
}

/// Splits a version key back into (user key, revision).
pub fn decode_version_key(sm_key: &[u8]) -> Result<(Vec<u8>, i64), MvccError> {
    let bad = || MvccError::Corrupt(format!("bad version key {sm_key:?}"));
    if sm_key.len() < 11 || sm_key[0] != KV_SPACE {
        return Err(bad());
    }
    let (body, rev) = sm_key[1..].split_at(sm_key.len() - 9);
    let rev = i64::from_be_bytes(rev.try_into().map_err(|_| bad())?);
    let body = body.strip_suffix(&[0, 1]).ok_or_else(bad)?;
    let mut key = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return Err(bad());
            }
            key.push(0);
            i += 2;
        } else {
            key.push(body[i]);
            i += 1;
        }
    }
    Ok((key, rev))
}

/// The revision of a version key, without decoding (and allocating) its user key.
pub fn version_key_revision(sm_key: &[u8]) -> Result<i64, MvccError> {
    let n = sm_key.len();
    if n < 11 || sm_key[0] != KV_SPACE || sm_key[n - 10..n - 8] != [0, 1] {
        return Err(MvccError::Corrupt(format!("bad version key {sm_key:?}")));
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&sm_key[n - 8..]);
    Ok(i64::from_be_bytes(rev))
}

/// The history key of change number `sub` within revision `rev`.
pub fn history_key(rev: i64, sub: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(HISTORY_SPACE);
    out.extend_from_slice(&rev.to_be_bytes());
    out.extend_from_slice(&sub.to_be_bytes());
    out
}

/// Splits a history key into (revision, sub-revision).
pub fn decode_history_key(sm_key: &[u8]) -> Result<(i64, i64), MvccError> {
    if sm_key.len() != 17 || sm_key[0] != HISTORY_SPACE {
        return Err(MvccError::Corrupt(format!("bad history key {sm_key:?}")));
    }
    let mut rev = [0u8; 8];
    let mut sub = [0u8; 8];
    rev.copy_from_slice(&sm_key[1..9]);
    sub.copy_from_slice(&sm_key[9..17]);
    Ok((i64::from_be_bytes(rev), i64::from_be_bytes(sub)))
}

/// One stored version of a key. The modification revision is in the state-machine key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The key exists at this revision.
    Live {
        create_revision: i64,
        version: i64,
        lease: i64,
        value: Vec<u8>,
    },
    /// The key was deleted at this revision. Kept until compaction so past reads and watch
    /// replay see the deletion.
    Tombstone,
}

const LIVE: u8 = 1;
const TOMBSTONE: u8 = 0;

impl Record {
    /// Fixed header (tag, create revision, version, lease) then the raw value: no length
    /// prefix, no serde, cheap on the hot path.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Tombstone => vec![TOMBSTONE],
            Record::Live {
                create_revision,
                version,
                lease,
                value,
            } => {
                let mut out = Vec::with_capacity(25 + value.len());
                out.push(LIVE);
                out.extend_from_slice(&create_revision.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&lease.to_be_bytes());
                out.extend_from_slice(value);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, MvccError> {
        match bytes.first() {
            Some(&TOMBSTONE) if bytes.len() == 1 => Ok(Record::Tombstone),
            Some(&LIVE) if bytes.len() >= 25 => {
                let num = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[i..i + 8]);
                    i64::from_be_bytes(b)
                };
                Ok(Record::Live {
                    create_revision: num(1),
                    version: num(9),
                    lease: num(17),
                    value: bytes[25..].to_vec(),
                })
            }
            _ => Err(MvccError::Corrupt("bad version record".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_key_order_and_roundtrips() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"a\x01",
            b"ab",
            b"b",
            b"\xff",
            b"\xff\x00",
        ];
        for w in keys.windows(2) {
            assert!(w[0] < w[1]);
            // Every version of the smaller key sorts before every version of the larger.
            assert!(version_key(w[0], i64::MAX) < version_key(w[1], 0), "{w:?}");
            assert!(after_versions(w[0]) <= version_key(w[1], 0), "{w:?}");
            assert!(range_stop(Some(w[1])) > version_key(w[0], i64::MAX));
        }
        for k in keys {
            let (back, rev) = decode_version_key(&version_key(k, 42)).unwrap();
            assert_eq!((back.as_slice(), rev), (k, 42));
            assert_eq!(version_key_revision(&version_key(k, 42)).unwrap(), 42);
        }
    }

    #[test]
    fn records_roundtrip() {
        let live = Record::Live {
            create_revision: 3,
            version: 2,
            lease: 7,
            value: b"v".to_vec(),
        };
        assert_eq!(Record::decode(&live.encode()).unwrap(), live);
        assert_eq!(
            Record::decode(&Record::Tombstone.encode()).unwrap(),
            Record::Tombstone
        );
        assert!(Record::decode(&[9]).is_err());
        assert!(Record::decode(&[]).is_err());
    }

    #[test]
    fn history_keys_order_by_revision_then_sub() {
        assert!(history_key(1, 5) < history_key(2, 0));
        assert!(history_key(2, 0) < history_key(2, 1));
        assert_eq!(decode_history_key(&history_key(9, 3)).unwrap(), (9, 3));
    }
}
