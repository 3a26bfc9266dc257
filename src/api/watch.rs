//! `etcdserverpb.Watch`: many watchers on one bidirectional stream.
//!
//! Each stream is one task that owns its watchers. Every watcher remembers the next revision
//! it has not delivered (`next_rev`); events come from the hub as they are applied, and
//! anything the hub can't supply (the stream fell behind, a gap, a start revision in the past)
//! is read from the stored history. So events arrive in revision order, each exactly once, and
//! the events of one revision always travel in one response (unless fragmented on request).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::metrics::Held;
use crate::mvcc::{KeySpan, MvccError, MAX_REQUEST_BYTES};
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::Event;
use crate::watch::{history_chunk, HistoryGap, Published, WatchHub};

/// The watch id etcd uses for responses that concern the whole stream.
const STREAM_WIDE_ID: i64 = -1;

pub struct WatchService {
    ctx: Ctx,
    hub: WatchHub,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(ctx: Ctx, hub: WatchHub, progress_interval: Duration) -> Self {
        WatchService {
            ctx,
            hub,
            progress_interval,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (out, rx) = mpsc::channel(256);
        let session = Session {
            _open: self.ctx.handle.metrics().watch_streams.hold(),
            ctx: self.ctx.clone(),
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        // Subscribe before reading any revision, so nothing applied after can be missed.
        let hub = self.hub.subscribe();
        tokio::spawn(session.run(req.into_inner(), hub, self.progress_interval));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet delivered (or skipped as not matching).
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// Something was sent since the last progress tick.
    active: bool,
    /// Counts this watcher in the member's watcher gauge for as long as it exists, however it
    /// ends (cancel, compaction, the stream going away).
    _counted: Held,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        if kv.mod_revision < self.next_rev {
            return false;
        }
        let is_put = e.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        KeySpan::new(&self.key, &self.range_end).contains(&kv.key)
    }

    fn shape(&self, e: &Event) -> Event {
        let mut e = e.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        e
    }
}

/// The client went away; the stream task ends.
struct Gone;

struct Session {
    /// Counts the stream as open until its task ends.
    _open: Held,
    ctx: Ctx,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<WatchRequest>,
        mut hub: broadcast::Receiver<std::sync::Arc<Published>>,
        progress_interval: Duration,
    ) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + progress_interval,
            progress_interval,
        );
        loop {
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    Ok(None) | Err(_) => Err(Gone),
                },
                published = hub.recv() => match published {
                    Ok(p) => match &*p {
                        Published::Events { first, last, events } => {
                            self.deliver(*first, *last, events).await
                        }
                        Published::Resync => self.catch_up_all().await,
                    },
                    // Fell behind the ring: the stored history has everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up_all().await,
                    Err(broadcast::error::RecvError::Closed) => Err(Gone),
                },
                _ = tick.tick() => self.progress_tick().await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(resp)).await.map_err(|_| Gone)
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse {
            header: self.ctx.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                // etcd ignores a cancel for an id it does not know.
                if self.watchers.remove(&c.watch_id).is_some() {
                    let mut resp = self.response(c.watch_id, self.revision());
                    resp.canceled = true;
                    self.send(resp).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let rev = self.progress_revision(None);
                self.send(self.response(STREAM_WIDE_ID, rev)).await
            }
            None => Ok(()),
        }
    }

    fn revision(&self) -> i64 {
        self.ctx.handle.store().revision()
    }

    /// The revision up to which every watcher (or `only` that one) has been told everything.
    fn progress_revision(&self, only: Option<i64>) -> i64 {
        let current = self.revision();
        self.watchers
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .map(|(_, w)| w.next_rev - 1)
            .min()
            .unwrap_or(current)
            .min(current)
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let mut resp = self.response(c.watch_id, self.revision());
                resp.created = true;
                resp.canceled = true;
                resp.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
                return self.send(resp).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let store = self.ctx.handle.store();
        let (current, compacted) = (store.revision(), store.compacted());
        let mut created = self.response(id, current);
        created.created = true;
        self.send(created).await?;
        let start = if c.start_revision <= 0 {
            current + 1
        } else {
            c.start_revision
        };
        if start < compacted {
            let mut resp = self.response(id, current);
            resp.canceled = true;
            resp.compact_revision = compacted;
            resp.cancel_reason = MvccError::Compacted.to_string();
            return self.send(resp).await;
        }
        let filters = |f: FilterType| c.filters.contains(&(f as i32));
        self.watchers.insert(
            id,
            Watcher {
                // etcd: an empty key means the smallest key, "\0".
                key: if c.key.is_empty() { vec![0] } else { c.key },
                range_end: c.range_end,
                next_rev: start,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: c.prev_kv,
                progress_notify: c.progress_notify,
                fragment: c.fragment,
                active: false,
                _counted: self.ctx.handle.metrics().watchers.hold(),
            },
        );
        if start <= current {
            self.replay(id, current).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` everything from its `next_rev` through `to` from stored history.
    async fn replay(&mut self, id: i64, to: i64) -> Result<(), Gone> {
        loop {
            let Some(w) = self.watchers.get(&id) else {
                return Ok(());
            };
            let from = w.next_rev;
            if from > to {
                return Ok(());
            }
            let (events, next) = match history_chunk(self.ctx.handle.store(), from, to) {
                // History this watcher still needed was compacted away while it lagged.
                Err(HistoryGap::Compacted(compacted)) => {
                    self.watchers.remove(&id);
                    let mut resp = self.response(id, self.revision());
                    resp.canceled = true;
                    resp.compact_revision = compacted;
                    resp.cancel_reason = MvccError::Compacted.to_string();
                    return self.send(resp).await;
                }
                Err(HistoryGap::Storage(e)) => {
                    tracing::error!(error = %e, "reading watch history");
                    let _ = self
                        .out
                        .send(Err(Status::internal("etcdserver: reading history failed")))
                        .await;
                    return Err(Gone);
                }
                Ok(read) => read,
            };
            let Some(w) = self.watchers.get_mut(&id) else {
                return Ok(());
            };
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.shape(e))
                .collect();
            let last = next - 1;
            w.next_rev = next;
            if !mine.is_empty() {
                w.active = true;
                let fragment = w.fragment;
                self.send_events(id, last, mine, fragment).await?;
            }
        }
    }

    async fn catch_up_all(&mut self) -> Result<(), Gone> {
        let current = self.revision();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.replay(id, current).await?;
        }
        Ok(())
    }

    async fn deliver(&mut self, first: i64, last: i64, events: &[Event]) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            if w.next_rev > last {
                continue;
            }
            if w.next_rev < first {
                // A gap the hub can't fill: read it from history first.
                self.replay(id, first - 1).await?;
            }
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.shape(e))
                .collect();
            w.next_rev = last + 1;
            if !mine.is_empty() {
                w.active = true;
                let fragment = w.fragment;
                self.send_events(id, last, mine, fragment).await?;
            }
        }
        Ok(())
    }

    /// Sends events in one response, or — when the watcher asked for fragments and the
    /// response would exceed the request size cap — in several, all but the last marked
    /// `fragment`.
    async fn send_events(
        &self,
        id: i64,
        revision: i64,
        events: Vec<Event>,
        fragment: bool,
    ) -> Result<(), Gone> {
        let mut resp = self.response(id, revision);
        resp.events = events;
        if !fragment || resp.encoded_len() <= MAX_REQUEST_BYTES {
            return self.send(resp).await;
        }
        let all = std::mem::take(&mut resp.events);
        let mut chunk = Vec::new();
        let mut size = 0;
        for e in all {
            let len = e.encoded_len();
            if !chunk.is_empty() && size + len > MAX_REQUEST_BYTES {
                let mut part = self.response(id, revision);
                part.events = std::mem::take(&mut chunk);
                part.fragment = true;
                self.send(part).await?;
                size = 0;
            }
            size += len;
            chunk.push(e);
        }
        let mut part = self.response(id, revision);
        part.events = chunk;
        self.send(part).await
    }

    async fn progress_tick(&mut self) -> Result<(), Gone> {
        let idle: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && !w.active)
            .map(|(id, _)| *id)
            .collect();
        for w in self.watchers.values_mut() {
            w.active = false;
        }
        for id in idle {
            let rev = self.progress_revision(Some(id));
            self.send(self.response(id, rev)).await?;
        }
        Ok(())
    }
}
