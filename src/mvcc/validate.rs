//! Stateless request checks, done before a request is proposed so that a bad request costs no
//! Raft round and changes nothing. Same rules and order as etcd's API layer.

use std::collections::HashSet;

use super::{KeySpan, MvccError, MAX_TXN_OPS};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

pub fn check_range(r: &RangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's txn rules: at most `MAX_TXN_OPS` compares or ops per branch (nested txns share the
/// budget), no empty compare key, every op valid, and no key written twice in one branch path.
pub fn check_txn(r: &TxnRequest) -> Result<(), MvccError> {
    check_txn_budget(r, MAX_TXN_OPS)?;
    check_no_duplicates(&r.success)?;
    check_no_duplicates(&r.failure)?;
    Ok(())
}

fn check_txn_budget(r: &TxnRequest, budget: usize) -> Result<(), MvccError> {
    let widest = r.compare.len().max(r.success.len()).max(r.failure.len());
    if widest > budget {
        return Err(MvccError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, budget - widest)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, budget: usize) -> Result<(), MvccError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(t)) => check_txn_budget(t, budget),
        // etcd ignores an empty op; so do we.
        None => Ok(()),
    }
}

/// Rejects a branch that puts the same key twice, or puts a key that a delete in the same
/// branch (nested txns included) also covers: the outcome would depend on op order.
fn check_no_duplicates(ops: &[RequestOp]) -> Result<(), MvccError> {
    let mut puts = HashSet::new();
    let mut deletes = Vec::new();
    collect_writes(ops, &mut puts, &mut deletes)?;
    for put in &puts {
        if deletes.iter().any(|d: &KeySpan<'_>| d.contains(put)) {
            return Err(MvccError::DuplicateKey);
        }
    }
    Ok(())
}

fn collect_writes<'a>(
    ops: &'a [RequestOp],
    puts: &mut HashSet<&'a [u8]>,
    deletes: &mut Vec<KeySpan<'a>>,
) -> Result<(), MvccError> {
    for op in ops {
        match &op.request {
            Some(Request::RequestPut(p)) => {
                if !puts.insert(p.key.as_slice()) {
                    return Err(MvccError::DuplicateKey);
                }
            }
            Some(Request::RequestDeleteRange(d)) => {
                deletes.push(KeySpan::new(&d.key, &d.range_end))
            }
            Some(Request::RequestTxn(t)) => {
                // Only one branch of a nested txn runs, so each is checked against the outer
                // writes on its own; then both join the outer set, as etcd does.
                let mut joined = HashSet::new();
                for branch in [&t.success, &t.failure] {
                    let mut inner_puts = HashSet::new();
                    let mut inner_dels = Vec::new();
                    collect_writes(branch, &mut inner_puts, &mut inner_dels)?;
                    if inner_puts.iter().any(|k| puts.contains(k)) {
                        return Err(MvccError::DuplicateKey);
                    }
                    for k in &inner_puts {
                        if deletes.iter().any(|d| d.contains(k)) {
                            return Err(MvccError::DuplicateKey);
                        }
                    }
                    for k in puts.iter() {
                        if inner_dels.iter().any(|d| d.contains(k)) {
                            return Err(MvccError::DuplicateKey);
                        }
                    }
                    joined.extend(inner_puts);
                    deletes.extend(inner_dels);
                }
                puts.extend(joined);
            }
            Some(Request::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

/// True when a txn (nested ones included) cannot write: it can then be served as a read.
pub fn txn_is_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => txn_is_read_only(t),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        })
}
