//! The leader's reaper: deletes containers that lost their last child and TTL znodes that
//! went unmodified (and childless) for their TTL — through Raft, re-checked at apply.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use tokio::sync::watch;

use super::handle::RaftHandle;
use crate::command::Command;
use crate::mvcc::read::for_each_live;
use crate::mvcc::KeySpan;
use crate::znode::{self, ops::is_due, Record, ZNODE_PREFIX};

/// Znodes reaped per proposal at most.
const MAX_REAP_BATCH: usize = 1000;

pub async fn run(handle: RaftHandle, tick: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leading = {
            let m = handle.raft().metrics();
            let m = m.borrow();
            m.state == ServerState::Leader && m.current_leader == Some(handle.id())
        };
        if !leading {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let due = {
            let store = handle.store();
            let view = store.read_view();
            let end = znode::prefix_end(ZNODE_PREFIX);
            let mut due = Vec::new();
            let scan = for_each_live(
                &view.backend,
                &KeySpan::Range {
                    start: ZNODE_PREFIX,
                    end: Some(&end),
                },
                view.revision,
                |kv| {
                    if let (Some(path), Some(rec)) =
                        (znode::path_of(&kv.key), Record::decode(&kv.value))
                    {
                        if is_due(&rec, now_ms) {
                            due.push(path.to_string());
                        }
                    }
                    due.len() < MAX_REAP_BATCH
                },
            );
            if let Err(e) = scan {
                tracing::warn!(%e, "scanning znodes for reaping");
            }
            due
        };
        if due.is_empty() {
            continue;
        }
        if let Err(e) = handle
            .propose(Command::ZnodeReap { paths: due, now_ms })
            .await
        {
            tracing::debug!(%e, "proposing znode reaping; will retry");
        }
    }
}
