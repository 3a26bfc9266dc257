//! One member's metrics: counters and gauges the code updates as things happen, and the
//! per-method gRPC statistics collected by [`GrpcMetricsLayer`]. [`crate::ops`] renders them,
//! with the values it reads at scrape time (term, leader, indexes, sizes), as Prometheus text.
//!
//! Everything here is per member, never a process-global static: tests run several members in
//! one process, and each one's `/metrics` must describe that member only. The one instance
//! lives in the member's `RaftHandle`, which every service and the ops router already hold.
//!
//! Hand-written on atomics rather than a metrics crate: the set is small and fixed, the
//! histogram needs one bucket layout, and the text format is a few lines of `write!`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down. Things that exist for a while count themselves with
/// [`Gauge::hold`], so every way they can end (including a panic or a dropped task) takes them
/// off again.
#[derive(Default, Clone)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one until the returned guard is dropped.
    pub fn hold(&self) -> Held {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self.0.clone())
    }
}

/// One unit of a [`Gauge`], given back on drop.
pub struct Held(Arc<AtomicI64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the latency histogram buckets. Prometheus' default buckets start
/// at 5 ms, which is slower than most of our calls (a serializable read takes tens of
/// microseconds, a write one fsync); these start at 100 µs and keep the defaults' 1-2.5-5
/// steps up to 10 s, past which only long-lived streams go.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A fixed-bucket latency histogram. Bucket counts are stored per bucket (not cumulative) so
/// an observation touches one bucket; rendering accumulates them.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for rendering.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per [`LATENCY_BUCKETS`] bound (`le`).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        // `count` last: a scrape racing an observation may see it in a bucket but not yet in
        // the count, never the other way round (+Inf, which is `count`, stays >= every bucket).
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let count = self.count.load(Ordering::Relaxed).max(running);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds,
        }
    }
}

/// gRPC status code names as go-grpc-prometheus labels them (`codes.Code.String()`), indexed
/// by the numeric code.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CODE_CANCELED: usize = 1;
const CODE_UNKNOWN: usize = 2;
const CODE_INTERNAL: usize = 13;

/// Distinct (service, method) label pairs kept at most. The path comes from the client, so
/// without a cap anyone could grow the map (and every scrape) without bound; calls past it
/// are counted under `other`.
const MAX_METHODS: usize = 256;

/// Statistics of one gRPC method.
#[derive(Default)]
pub struct MethodStats {
    started: Counter,
    /// Calls started and not finished: for streams, the streams open now.
    in_flight: Gauge,
    /// Handling time until the status was sent, by status code (index into [`GRPC_CODES`]).
    by_code: [Histogram; GRPC_CODES.len()],
}

/// A copy of one method's statistics for rendering.
#[derive(Debug, Clone)]
pub struct MethodSnapshot {
    pub service: String,
    pub method: String,
    pub started: u64,
    pub in_flight: i64,
    /// Only the codes this method has finished with, as (code name, histogram).
    pub by_code: Vec<(&'static str, HistogramSnapshot)>,
}

/// Everything one member counts as it runs. Values that can be read off the member's state at
/// scrape time (term, indexes, sizes, lease count) are not here; see [`crate::ops`].
#[derive(Default)]
pub struct Metrics {
    /// Times this member saw the leader change to a (different) known leader.
    pub leader_changes: Counter,
    /// Commands proposed through this member whose entry was committed and applied.
    pub proposals_committed: Counter,
    /// Commands proposed through this member that failed (no leader, timeout, stopped).
    pub proposals_failed: Counter,
    /// Commands proposed through this member and not answered yet.
    pub proposals_pending: Gauge,
    /// Snapshots received in full from a leader and accepted for installing: how a member
    /// that fell behind the leader's log catches up.
    pub snapshots_received: Counter,
    /// Open etcd watch streams (`Watch.Watch` calls) on this member.
    pub watch_streams: Gauge,
    /// Watchers across those streams.
    pub watchers: Gauge,
    /// Open lease keep-alive streams on this member.
    pub lease_keepalive_streams: Gauge,
    /// Znode sessions opened / closed through this member.
    pub sessions_opened: Counter,
    pub sessions_closed: Counter,
    /// Znode session keep-alive streams open on this member: the sessions connected here.
    pub sessions_connected: Gauge,
    /// Durations of the Raft log's durable flushes, shared with the log store that times them.
    pub wal_fsync: Arc<Histogram>,
    grpc: RwLock<BTreeMap<(String, String), Arc<MethodStats>>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Metrics whose log-flush histogram is the one the log store fills.
    pub fn with_wal_fsync(wal_fsync: Arc<Histogram>) -> Arc<Metrics> {
        Arc::new(Metrics {
            wal_fsync,
            ..Metrics::default()
        })
    }

    /// The statistics of the method at gRPC request `path` (`/package.Service/Method`).
    fn method(&self, path: &str) -> Arc<MethodStats> {
        let (service, method) = split_path(path);
        {
            let map = self.grpc.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&(service.to_owned(), method.to_owned())) {
                return s.clone();
            }
        }
        let mut map = self.grpc.write().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() < MAX_METHODS {
            (service.to_owned(), method.to_owned())
        } else {
            ("other".to_owned(), "other".to_owned())
        };
        map.entry(key).or_default().clone()
    }

    /// Every method that has been called, in (service, method) order.
    pub fn grpc_snapshot(&self) -> Vec<MethodSnapshot> {
        let map = self.grpc.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((service, method), s)| MethodSnapshot {
                service: service.clone(),
                method: method.clone(),
                started: s.started.get(),
                in_flight: s.in_flight.get(),
                by_code: s
                    .by_code
                    .iter()
                    .enumerate()
                    .map(|(code, h)| (GRPC_CODES[code], h.snapshot()))
                    .filter(|(_, h)| h.count > 0)
                    .collect(),
            })
            .collect()
    }
}

fn split_path(path: &str) -> (&str, &str) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => (service, method),
        _ => ("unknown", "unknown"),
    }
}

/// One call being timed. It records itself exactly once: when its status is known, or — if
/// it is dropped first (the client went away, the connection broke) — as `Canceled`.
struct Call {
    stats: Arc<MethodStats>,
    start: Instant,
    _in_flight: Held,
    done: bool,
}

impl Call {
    fn start(metrics: &Metrics, path: &str) -> Call {
        let stats = metrics.method(path);
        stats.started.inc();
        let in_flight = stats.in_flight.hold();
        Call {
            stats,
            start: Instant::now(),
            _in_flight: in_flight,
            done: false,
        }
    }

    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let code = if code < GRPC_CODES.len() {
            code
        } else {
            CODE_UNKNOWN
        };
        self.stats.by_code[code].observe(self.start.elapsed());
    }

    /// Finishes with the `grpc-status` in `headers`, if there is one.
    fn finish_from(&mut self, headers: &http::HeaderMap) -> bool {
        match headers.get("grpc-status") {
            Some(v) => {
                let code = v
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(CODE_UNKNOWN);
                self.finish(code);
                true
            }
            None => false,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CODE_CANCELED);
    }
}

/// Times every gRPC call on a server and counts it by method and status, like
/// go-grpc-prometheus' server interceptors.
///
/// A call is handled until its status is sent: for a unary call that is right after the
/// response message, for a stream when the stream ends. So a stream's handling time is its
/// lifetime (a watch stream open for an hour lands in the last bucket and adds an hour to the
/// sum), and the per-method in-flight gauge counts the streams open now; both are measured
/// from the call's start to its end, not per message. The status is read from the response
/// headers when the server answered with headers only (an error before any message), else from
/// the trailers at the end of the body.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut call = Call::start(&self.metrics, req.uri().path());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = match response.await {
                Ok(r) => r,
                Err(e) => {
                    call.finish(CODE_INTERNAL);
                    return Err(e);
                }
            };
            if call.finish_from(response.headers()) {
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(Observed {
                    inner: body,
                    call: Some(call),
                })
            }))
        })
    }
}

/// A response body that finishes its call when the trailers (carrying `grpc-status`) go out.
struct Observed {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(mut call) = self.call.take() {
                        if !call.finish_from(trailers) {
                            call.finish(CODE_UNKNOWN);
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut call) = self.call.take() {
                    call.finish(CODE_INTERNAL);
                }
            }
            // Ended without trailers: not a valid gRPC response.
            Poll::Ready(None) => {
                if let Some(mut call) = self.call.take() {
                    call.finish(CODE_UNKNOWN);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1, "50 µs <= 100 µs");
        let le_5ms = LATENCY_BUCKETS.iter().position(|b| *b == 0.005).unwrap();
        assert_eq!(s.cumulative[le_5ms - 1], 1, "3 ms > 2.5 ms");
        assert_eq!(s.cumulative[le_5ms], 2);
        assert_eq!(*s.cumulative.last().unwrap(), 2, "60 s is only in +Inf");
        assert!((s.sum_seconds - 60.00305).abs() < 1e-9);
    }

    #[test]
    fn gauge_guards_give_back() {
        let g = Gauge::default();
        let a = g.hold();
        let b = g.hold();
        assert_eq!(g.get(), 2);
        drop(a);
        assert_eq!(g.get(), 1);
        drop(b);
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn calls_record_once_and_dropped_calls_are_canceled() {
        let m = Metrics::default();
        let mut call = Call::start(&m, "/etcdserverpb.KV/Put");
        call.finish(0);
        drop(call);
        drop(Call::start(&m, "/etcdserverpb.KV/Put"));
        let mut odd = Call::start(&m, "no-slash");
        odd.finish(99);
        drop(odd);
        let snap = m.grpc_snapshot();
        let put = snap.iter().find(|s| s.method == "Put").unwrap();
        assert_eq!(put.service, "etcdserverpb.KV");
        assert_eq!((put.started, put.in_flight), (2, 0));
        let codes: Vec<(&str, u64)> = put.by_code.iter().map(|(c, h)| (*c, h.count)).collect();
        assert_eq!(codes, vec![("OK", 1), ("Canceled", 1)]);
        let odd = snap.iter().find(|s| s.service == "unknown").unwrap();
        assert_eq!(odd.by_code[0].0, "Unknown");
    }

    #[test]
    fn method_labels_are_capped() {
        let m = Metrics::default();
        for i in 0..MAX_METHODS + 10 {
            drop(Call::start(&m, &format!("/s/m{i}")));
        }
        let snap = m.grpc_snapshot();
        assert_eq!(snap.len(), MAX_METHODS + 1);
        let other = snap.iter().find(|s| s.service == "other").unwrap();
        assert_eq!(other.started, 10);
    }
}
