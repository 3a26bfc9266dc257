//! Reads: one key or a key range at a revision, and etcd's Range request.

use std::ops::Bound;

use super::keys::{self, Record};
use super::{Backend, KeySpan, MvccError};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};

/// Builds the client-visible form of a stored version.
pub fn to_kv(key: Vec<u8>, mod_revision: i64, record: Record) -> Option<KeyValue> {
    match record {
        Record::Tombstone => None,
        Record::Live {
            create_revision,
            version,
            lease,
            value,
        } => Some(KeyValue {
            key,
            create_revision,
            mod_revision,
            version,
            value,
            lease,
        }),
    }
}

/// The newest stored version of `key` at or below `rev`, tombstones included.
pub fn version_at<B: Backend>(
    b: &B,
    key: &[u8],
    rev: i64,
) -> Result<Option<(i64, Record)>, MvccError> {
    let lo = keys::version_prefix(key);
    let hi = keys::version_key(key, rev);
    match b.last_in(&lo, Bound::Included(&hi))? {
        None => Ok(None),
        Some((sm_key, bytes)) => {
            let (_, mod_rev) = keys::decode_version_key(&sm_key)?;
            Ok(Some((mod_rev, Record::decode(&bytes)?)))
        }
    }
}

/// `key` as it was at revision `rev`, if it existed then.
pub fn get<B: Backend>(b: &B, key: &[u8], rev: i64) -> Result<Option<KeyValue>, MvccError> {
    Ok(version_at(b, key, rev)?.and_then(|(mod_rev, rec)| to_kv(key.to_vec(), mod_rev, rec)))
}

/// Calls `visit` with every key of `span` that existed at `rev`, in key order, until it
/// returns `false`. Costs two seeks per distinct key, however many versions a key has.
pub fn for_each_live<B: Backend>(
    b: &B,
    span: &KeySpan<'_>,
    rev: i64,
    mut visit: impl FnMut(KeyValue) -> bool,
) -> Result<(), MvccError> {
    let (start, end) = match span {
        KeySpan::Single(key) => {
            if let Some(kv) = get(b, key, rev)? {
                visit(kv);
            }
            return Ok(());
        }
        KeySpan::Range { start, end } => (*start, *end),
    };
    let stop = keys::range_stop(end);
    let mut cur = keys::range_start(start);
    while let Some((sm_key, _)) = b.first_in(&cur, &stop)? {
        let (key, _) = keys::decode_version_key(&sm_key)?;
        cur = keys::after_versions(&key);
        if let Some(kv) = get(b, &key, rev)? {
            if !visit(kv) {
                break;
            }
        }
    }
    Ok(())
}

/// Checks a read revision against the store's window: `<= 0` means current.
pub fn resolve_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, MvccError> {
    if requested <= 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(MvccError::FutureRevision);
    }
    if requested < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(requested)
}

/// etcd's Range. `current` is the store revision the read is served at (the header revision),
/// `compacted` the compaction floor.
pub fn range<B: Backend>(
    b: &B,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError> {
    let rev = resolve_revision(req.revision, current, compacted)?;
    let order = SortOrder::try_from(req.sort_order).map_err(|_| MvccError::InvalidSortOption)?;
    let target = SortTarget::try_from(req.sort_target).map_err(|_| MvccError::InvalidSortOption)?;
    // etcd's defaults: a non-key target without an order sorts ascending; key-ascending is the
    // natural order and needs no sort.
    let order = match (order, target) {
        (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
        (o, _) => o,
    };
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // With a sort or a filter every key must be looked at before the limit applies; otherwise
    // collect one extra to learn whether there is `more`.
    let collect = if req.count_only {
        0
    } else if order != SortOrder::None || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(req.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    };
    let span = KeySpan::new(&req.key, &req.range_end);
    let mut count: i64 = 0;
    let mut kvs = Vec::new();
    for_each_live(b, &span, rev, |kv| {
        count += 1;
        if kvs.len() < collect {
            kvs.push(kv);
        }
        true
    })?;

    if filtered {
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
    }
    if order != SortOrder::None {
        match target {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: current,
            ..Default::default()
        }),
        kvs,
        more,
        count,
    })
}

/// The changes with revisions in `[from, to]`, in order, as watch events carrying their
/// previous version. Stops at a revision boundary once `max_events` are collected — the events
/// of one revision are never split — and returns the revision to continue from.
pub fn history<B: Backend>(
    b: &B,
    from: i64,
    to: i64,
    max_events: usize,
) -> Result<(Vec<Event>, i64), MvccError> {
    let mut events = Vec::new();
    if from > to {
        return Ok((events, from));
    }
    let stop = keys::history_key(to.saturating_add(1), 0);
    let mut cur = keys::history_key(from.max(0), 0);
    let mut last_rev = i64::MIN;
    while let Some((hk, key)) = b.first_in(&cur, &stop)? {
        let (rev, _) = keys::decode_history_key(&hk)?;
        if events.len() >= max_events && rev != last_rev {
            return Ok((events, rev));
        }
        last_rev = rev;
        cur = hk;
        cur.push(0);
        let prev_kv = get(b, &key, rev - 1)?;
        let record = match b.get(&keys::version_key(&key, rev))? {
            Some(bytes) => Record::decode(&bytes)?,
            // Compaction drops a tombstone at the floor revision: it was a deletion.
            None => Record::Tombstone,
        };
        events.push(match to_kv(key.clone(), rev, record) {
            Some(kv) => Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv,
            },
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key,
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv,
            },
        });
    }
    Ok((events, to.saturating_add(1)))
}
