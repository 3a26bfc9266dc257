//! Leases: the lease table, applied through Raft like everything else, and (in [`clock`]) the
//! leader-only expiry clock that *proposes* revocations — it never deletes anything itself.
//!
//! A lease record is `l` ++ id → granted TTL; each attached key has an `a` ++ id ++ key
//! marker (kept by MVCC's put and delete), so a revocation finds its keys with one prefix scan
//! and deletes them all in one revision.

pub mod clock;

use crate::mvcc::keys::{attach_prefix, lease_key, prefix_end, LEASE_SPACE};
use crate::mvcc::{Backend, MvccError, Writer};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{DeleteRangeRequest, RequestOp, TxnRequest};

/// etcd's upper bound on a lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's lower bound: a lease must outlive a leader election (1.5 election timeouts), in
/// whole seconds. Shorter requests are raised to it.
pub fn min_ttl(election_timeout_ms: u64) -> i64 {
    let ms = election_timeout_ms.saturating_mul(3) / 2;
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
}

fn encode_ttl(ttl: i64) -> Vec<u8> {
    ttl.to_be_bytes().to_vec()
}

fn decode_ttl(bytes: &[u8]) -> Result<i64, MvccError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| MvccError::Corrupt("bad lease record".into()))?;
    Ok(i64::from_be_bytes(b))
}

/// The granted TTL of lease `id`, if it exists.
pub fn get<B: Backend>(b: &B, id: i64) -> Result<Option<i64>, MvccError> {
    b.get(&lease_key(id))?.map(|v| decode_ttl(&v)).transpose()
}

/// Every lease as (id, granted TTL), by id.
pub fn all<B: Backend>(b: &B) -> Result<Vec<(i64, i64)>, MvccError> {
    let mut out = Vec::new();
    let stop = vec![LEASE_SPACE + 1];
    let mut from = vec![LEASE_SPACE];
    while let Some((k, v)) = b.first_in(&from, &stop)? {
        let id: [u8; 8] = k
            .get(1..9)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| MvccError::Corrupt("bad lease key".into()))?;
        out.push((i64::from_be_bytes(id), decode_ttl(&v)?));
        from = k;
        from.push(0);
    }
    Ok(out)
}

/// The keys attached to lease `id`.
pub fn attached_keys<B: Backend>(b: &B, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
    let prefix = attach_prefix(id);
    let stop = prefix_end(&prefix);
    let mut keys = Vec::new();
    let mut from = prefix.clone();
    while let Some((k, _)) = b.first_in(&from, &stop)? {
        keys.push(k[prefix.len()..].to_vec());
        from = k;
        from.push(0);
    }
    Ok(keys)
}

/// Applies a grant. The id and the (already bounded) TTL were chosen before proposing, so
/// every member applies the same values.
pub fn grant<B: Backend>(w: &mut Writer<'_, B>, id: i64, ttl: i64) -> Result<(), MvccError> {
    if get(w.view(), id)?.is_some() {
        return Err(MvccError::LeaseExists);
    }
    w.view_mut().insert(lease_key(id), encode_ttl(ttl));
    Ok(())
}

/// Applies a revocation: every attached key is deleted in one revision, then the lease.
pub fn revoke<B: Backend>(w: &mut Writer<'_, B>, id: i64) -> Result<(), MvccError> {
    w.atomically(|w| {
        if get(w.view(), id)?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let keys = attached_keys(w.view(), id)?;
        // Ephemeral znodes go with their parents' counters; everything in one revision.
        let (znodes, plain): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .partition(|k| crate::znode::is_znode_key(k));
        let paths: Vec<String> = znodes
            .iter()
            .filter_map(|k| crate::znode::path_of(k).map(str::to_string))
            .collect();
        let mut ops = crate::znode::ops::session_cleanup_ops(w.view(), w.revision(), &paths)?;
        ops.extend(plain.into_iter().map(|key| RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key,
                ..Default::default()
            })),
        }));
        if !ops.is_empty() {
            w.txn(&TxnRequest {
                success: ops,
                ..Default::default()
            })?;
        }
        w.view_mut().remove(lease_key(id));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pb::etcdserverpb::PutRequest;

    #[test]
    fn min_ttl_follows_the_election_timeout() {
        assert_eq!(min_ttl(1000), 2);
        assert_eq!(min_ttl(500), 1);
        assert_eq!(min_ttl(4000), 6);
    }

    #[test]
    fn grant_attach_revoke() {
        let map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut w = Writer::new(&map, 1, 0);
        grant(&mut w, 7, 10).unwrap();
        assert_eq!(grant(&mut w, 7, 10), Err(MvccError::LeaseExists));
        for k in ["a", "b"] {
            w.put(&PutRequest {
                key: k.into(),
                lease: 7,
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(
            attached_keys(w.view(), 7).unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(all(w.view()).unwrap(), vec![(7, 10)]);
        let before = w.revision();
        revoke(&mut w, 7).unwrap();
        assert_eq!(w.revision(), before + 1, "both keys go in one revision");
        assert!(attached_keys(w.view(), 7).unwrap().is_empty());
        assert_eq!(get(w.view(), 7).unwrap(), None);
        assert_eq!(revoke(&mut w, 7), Err(MvccError::LeaseNotFound));
        let out = w.into_parts();
        assert_eq!(out.events.len(), 4);
    }
}
