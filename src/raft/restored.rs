//! A member seeded by `corral snapshot restore` holds data its Raft log never produced: the
//! log starts with the bootstrap membership entry, applied on top of the restored store. A
//! member that joins later (`member add`, an automatic learner) and were caught up from that
//! log would apply it to an empty store and never see the restored data. So each restored
//! member snapshots its state machine once it has applied the bootstrap entry and purges its
//! log up to that snapshot: from then on, any member behind it — every newcomer — is sent
//! the snapshot, which carries the data. (etcd's restore reaches the same end by writing a
//! snapshot into the new data dir.)

use tokio::sync::watch;

use super::handle::RaftHandle;

pub async fn run(handle: RaftHandle, mut stop: watch::Receiver<bool>) {
    if !handle.store().restored() {
        return;
    }
    let mut metrics = handle.raft().metrics();
    loop {
        let (applied, purged) = {
            let m = metrics.borrow();
            (m.last_applied, m.purged)
        };
        // Purged before (this member restarted, or installed a snapshot): nothing to do.
        if purged.is_some() {
            return;
        }
        if applied.is_some() {
            break;
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    if let Err(e) = handle.raft().trigger().snapshot().await {
        tracing::warn!(%e, "snapshotting the restored state");
        return;
    }
    let upto = loop {
        if let Some(s) = metrics.borrow().snapshot {
            break s.index;
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    match handle.raft().trigger().purge_log(upto).await {
        Ok(()) => tracing::info!(
            upto,
            "restored member: log purged behind a snapshot, so joining members receive the \
             restored data"
        ),
        Err(e) => tracing::warn!(%e, "purging the log of a restored member"),
    }
}

/// Whether this member may add members: at once unless it was restored and has not yet
/// purged its log (see the module doc); otherwise it waits for that until `deadline`.
/// Membership changes call this, so that a newcomer is caught up by snapshot, with the
/// restored data, rather than from a log that lacks it.
pub async fn sealed(handle: &RaftHandle, deadline: tokio::time::Instant) -> bool {
    if !handle.store().restored() {
        return true;
    }
    let mut metrics = handle.raft().metrics();
    let purged = async move { metrics.wait_for(|m| m.purged.is_some()).await.is_ok() };
    matches!(tokio::time::timeout_at(deadline, purged).await, Ok(true))
}
