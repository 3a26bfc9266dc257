//! The watch hub: fed after every apply with that batch's events, in revision order, and read
//! by every watch stream on this member.
//!
//! It is a broadcast ring: publishing never blocks, so apply never waits for a watcher. A
//! stream that falls behind far enough to lose batches is told so (`Lagged`) and catches up
//! from the stored history instead; a stream that notices a gap between what it has delivered
//! and the next batch does the same. Either way nothing is missed or delivered twice.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::mvcc::{self, MvccError};
use crate::pb::mvccpb::Event;
use crate::storage::state::StateStore;

/// Events one catch-up read returns at most, so a far-behind stream interleaves its reads
/// with sending instead of holding a whole history in memory.
pub const HISTORY_CHUNK: usize = 1000;

/// Why a stream cannot catch up from stored history.
#[derive(Debug)]
pub enum HistoryGap {
    /// What it still needed was compacted away; the floor is now this revision.
    Compacted(i64),
    /// The store failed to read.
    Storage(MvccError),
}

/// The stored events of revisions `from..=to` (at most [`HISTORY_CHUNK`] of them) and the
/// revision to read from next: how every watch stream, etcd's and the znode one, catches up
/// after it lagged, reconnected or started in the past.
pub fn history_chunk(
    store: &StateStore,
    from: i64,
    to: i64,
) -> Result<(Vec<Event>, i64), HistoryGap> {
    let view = store.read_view();
    if from < view.compacted {
        return Err(HistoryGap::Compacted(view.compacted));
    }
    mvcc::read::history(&view.backend, from, to, HISTORY_CHUNK).map_err(HistoryGap::Storage)
}

/// What one apply produced for watchers.
#[derive(Debug)]
pub enum Published {
    /// The events of revisions `first..=last`, complete and in order.
    Events {
        first: i64,
        last: i64,
        events: Vec<Event>,
    },
    /// The state jumped without events (a snapshot was installed): re-read history.
    Resync,
}

#[derive(Clone)]
pub struct WatchHub {
    tx: broadcast::Sender<Arc<Published>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub::new(4096)
    }
}

impl WatchHub {
    /// `ring`: batches kept for streams that are momentarily behind before they must read
    /// history.
    pub fn new(ring: usize) -> Self {
        WatchHub {
            tx: broadcast::channel(ring.max(1)).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Called by apply; never blocks.
    pub fn publish(&self, events: Vec<Event>) {
        let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let (Some(first), Some(last)) = (events.first().map(rev), events.last().map(rev)) else {
            return;
        };
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(Arc::new(Published::Events {
            first,
            last,
            events,
        }));
    }

    pub fn resync(&self) {
        let _ = self.tx.send(Arc::new(Published::Resync));
    }
}
