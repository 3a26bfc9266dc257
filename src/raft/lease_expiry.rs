//! The leader's expiry loop: proposes the revocation of leases whose deadline passed.
//! Followers run it too but do nothing; a member that becomes leader first restarts every
//! lease's TTL (see `LeaseClock::restart_all`).

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::handle::RaftHandle;
use crate::command::Command;
use crate::lease::clock::LeaseClock;

/// Leases revoked per proposal at most.
const MAX_EXPIRE_BATCH: usize = 1000;

pub async fn run(
    handle: RaftHandle,
    clock: Arc<LeaseClock>,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_in_term = None;
    // A revocation that neither applies nor fails within this long is proposed again.
    let retry_after = tick * 20;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (leading, term) = {
            let m = handle.raft().metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(handle.id()),
                m.current_term,
            )
        };
        if !leading {
            leading_in_term = None;
            continue;
        }
        if leading_in_term != Some(term) {
            // New leadership: nobody's keep-alives reached us before, so every lease starts
            // a full TTL now.
            clock.restart_all();
            leading_in_term = Some(term);
            continue;
        }
        let expired = clock.take_expired(MAX_EXPIRE_BATCH, retry_after);
        if expired.is_empty() {
            continue;
        }
        tracing::debug!(count = expired.len(), "revoking expired leases");
        let handle = handle.clone();
        tokio::spawn(async move {
            let command = Command::LeaseExpire { ids: expired, term };
            if let Err(e) = handle.propose(command).await {
                tracing::debug!(%e, "proposing lease expiry; will retry");
            }
        });
    }
}
