//! The space quota (`--quota-backend-bytes`): each member measures the bytes its state
//! machine holds and, past the quota, raises a NOSPACE alarm for itself through Raft.
//!
//! The alarm, not the measurement, is what refuses writes: it is replicated and checked at
//! apply, so every member refuses the same commands even though their disk usage differs
//! slightly. Clearing it (`Alarm` DEACTIVATE) lets writes through again; if the store is
//! still over the quota, the next check raises it again, as etcd does.

use std::time::Duration;

use tokio::sync::watch;

use super::handle::RaftHandle;
use crate::command::Command;
use crate::pb::etcdserverpb::AlarmType;

/// How often the size is checked. Between two checks the store can outgrow the quota by
/// what one second of writes adds, as with etcd's own approximate accounting.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Records this member's quota (Status reports it) and starts the checks.
pub fn start(handle: RaftHandle, quota_bytes: u64, stop: watch::Receiver<bool>) {
    handle.store().set_quota_bytes(quota_bytes);
    tokio::spawn(run(handle, quota_bytes, stop));
}

async fn run(handle: RaftHandle, quota: u64, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = handle.id();
    // Near the quota every check would scan; spacing scans by ten times what the last one
    // took keeps that to a tenth of a core whatever the store's size.
    let mut next_scan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = handle.store().clone();
        let raised = store
            .alarms()
            .iter()
            .any(|a| a.member_id == me && a.alarm == AlarmType::Nospace as i32);
        // Far from the quota the bound answers without reading the store.
        if raised || store.in_use_upper_bound() <= quota || tokio::time::Instant::now() < next_scan
        {
            continue;
        }
        let started = tokio::time::Instant::now();
        let scan = tokio::task::spawn_blocking(move || store.measure_in_use()).await;
        next_scan = started + started.elapsed() * 10;
        let in_use = match scan {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::error!(%e, "measuring the state machine's size");
                continue;
            }
            Err(_) => continue,
        };
        if in_use <= quota {
            continue;
        }
        tracing::warn!(
            in_use,
            quota,
            "space quota exceeded; raising the NOSPACE alarm (writes are refused until it is \
             cleared with `alarm disarm` after compacting and deleting)"
        );
        let cmd = Command::Alarm {
            activate: true,
            member_id: me,
            alarm: AlarmType::Nospace as i32,
        };
        tokio::select! {
            r = handle.propose(cmd) => {
                if let Err(e) = r {
                    tracing::debug!(%e, "raising the NOSPACE alarm; will retry");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
