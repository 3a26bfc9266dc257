//! `corral bench`: a load generator that speaks etcd's v3 API (so it drives etcd too) and,
//! for corral, the znode API. Prints throughput and latency percentiles as a table or JSON.
//!
//! Clients are spread over `--conns` gRPC connections (HTTP/2 multiplexes a connection's
//! clients); each client runs requests back to back until `--total` are done.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::pb::corral::v1::znodes_client::ZnodesClient;
use crate::pb::corral::v1::{CreateRequest, GetChildrenRequest, GetDataRequest, SetDataRequest};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Puts of random keys in the key space.
    Put,
    /// Linearizable single-key reads.
    Range,
    /// Serializable (local) single-key reads.
    RangeSerializable,
    /// Compare-and-put txns.
    Txn,
    /// Put acknowledged → event received, one watcher per client on its own key.
    WatchLatency,
    /// Lease keep-alives on a stream per client.
    LeaseKeepalive,
    /// corral only: znode creates.
    ZnodeCreate,
    /// corral only: znode reads.
    ZnodeGet,
    /// corral only: znode data writes.
    ZnodeSet,
    /// corral only: children listings.
    ZnodeChildren,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to run.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Comma-separated endpoints (host:port or http://host:port); connections are spread
    /// over them round robin.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// gRPC connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients (spread over the connections).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    pub total: usize,
    /// Key size, bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub clients: usize,
    pub conns: usize,
    pub total: usize,
    pub errors: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn url(e: &str) -> String {
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

fn key(i: usize, size: usize) -> Vec<u8> {
    let mut k = format!("{i:0width$}", width = size).into_bytes();
    k.truncate(size.max(1));
    k
}

/// Requests per client: `total` split as evenly as possible.
fn share(total: usize, clients: usize, c: usize) -> usize {
    total / clients + usize::from(c < total % clients)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.clients >= 1 && args.conns >= 1,
        "--clients and --conns must be >= 1"
    );
    anyhow::ensure!(!args.endpoints.is_empty(), "--endpoints must not be empty");
    let mut channels = Vec::new();
    for i in 0..args.conns {
        let e = url(&args.endpoints[i % args.endpoints.len()]);
        let ch = Endpoint::from_shared(e.clone())
            .with_context(|| format!("bad endpoint {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {e}"))?;
        channels.push(ch);
    }
    prepare(&args, &channels[0]).await?;
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let ch = channels[c % channels.len()].clone();
        let args = args.clone();
        let errors = errors.clone();
        let next = next.clone();
        let n = share(args.total, args.clients, c);
        tasks.push(tokio::spawn(async move {
            client(args, ch, c, n, next, errors).await
        }));
    }
    let mut lat = Vec::with_capacity(args.total);
    for t in tasks {
        lat.extend(t.await.context("bench client")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i.min(lat.len() - 1)].as_secs_f64() * 1000.0
    };
    Ok(Report {
        workload: args.workload,
        clients: args.clients,
        conns: args.conns,
        total: lat.len(),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        throughput: lat.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: pct(1.0),
    })
}

/// Data the read workloads read.
async fn prepare(args: &BenchArgs, ch: &Channel) -> anyhow::Result<()> {
    let keys = args.key_space.min(args.total).max(1);
    match args.workload {
        Workload::Range | Workload::RangeSerializable | Workload::Txn => {
            let mut kv = KvClient::new(ch.clone());
            for i in 0..keys.min(1000) {
                kv.put(PutRequest {
                    key: key(i, args.key_size),
                    value: vec![b'v'; args.val_size],
                    ..Default::default()
                })
                .await?;
            }
        }
        Workload::ZnodeGet
        | Workload::ZnodeSet
        | Workload::ZnodeChildren
        | Workload::ZnodeCreate => {
            let mut z = ZnodesClient::new(ch.clone());
            for parent in ["/bench", "/bench-create"] {
                let _ = z
                    .create(CreateRequest {
                        path: parent.into(),
                        ..Default::default()
                    })
                    .await;
            }
            if args.workload != Workload::ZnodeCreate {
                for i in 0..keys.min(100) {
                    let _ = z
                        .create(CreateRequest {
                            path: format!("/bench/n{i}"),
                            data: vec![b'v'; args.val_size],
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

async fn client(
    args: BenchArgs,
    ch: Channel,
    id: usize,
    n: usize,
    next: Arc<AtomicUsize>,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n);
    let value = vec![b'v'; args.val_size];
    let prepared = args.key_space.min(args.total).clamp(1, 1000);
    let mut kv = KvClient::new(ch.clone());
    let mut z = ZnodesClient::new(ch.clone());
    let record = |r: Result<(), tonic::Status>, t: Instant, lat: &mut Vec<Duration>| match r {
        Ok(()) => lat.push(t.elapsed()),
        Err(_) => {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    match args.workload {
        Workload::WatchLatency => return watch_latency(args, ch, id, n, errors).await,
        Workload::LeaseKeepalive => return keepalive(ch, n, errors).await,
        _ => {}
    }
    for _ in 0..n {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let k = key(i % args.key_space.max(1), args.key_size);
        let t = Instant::now();
        let r = match args.workload {
            Workload::Put => kv
                .put(PutRequest {
                    key: k,
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::Range | Workload::RangeSerializable => kv
                .range(RangeRequest {
                    key: key(i % prepared, args.key_size),
                    serializable: args.workload == Workload::RangeSerializable,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::Txn => kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Version as i32,
                        key: key(i % prepared, args.key_size),
                        target_union: Some(TargetUnion::Version(0)),
                        range_end: vec![],
                    }],
                    success: vec![RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: key(i % prepared, args.key_size),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await
                .map(|_| ()),
            Workload::ZnodeCreate => z
                .create(CreateRequest {
                    // Not under /bench: the children workload lists /bench.
                    path: format!("/bench-create/c{id}-{i}"),
                    data: value.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::ZnodeGet => z
                .get_data(GetDataRequest {
                    path: format!("/bench/n{}", i % prepared.min(100)),
                })
                .await
                .map(|_| ()),
            Workload::ZnodeSet => z
                .set_data(SetDataRequest {
                    path: format!("/bench/n{}", i % prepared.min(100)),
                    data: value.clone(),
                    version: -1,
                })
                .await
                .map(|_| ()),
            Workload::ZnodeChildren => z
                .get_children(GetChildrenRequest {
                    path: "/bench".into(),
                    with_stats: false,
                })
                .await
                .map(|_| ()),
            Workload::WatchLatency | Workload::LeaseKeepalive => Ok(()),
        };
        record(r, t, &mut lat);
    }
    Ok(lat)
}

/// Put → event latency: each client watches its own key and puts to it.
async fn watch_latency(
    args: BenchArgs,
    ch: Channel,
    id: usize,
    n: usize,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Duration>> {
    use tokio_stream::StreamExt;
    let k = format!("watch-bench/{id}").into_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: k.clone(),
            ..Default::default()
        })),
    })
    .await?;
    let mut events = WatchClient::new(ch.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let created = events.next().await.context("watch closed")??;
    anyhow::ensure!(created.created, "watch not created");
    let mut kv = KvClient::new(ch);
    let mut lat = Vec::with_capacity(n);
    let value = vec![b'v'; args.val_size];
    for _ in 0..n {
        if kv
            .put(PutRequest {
                key: k.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .is_err()
        {
            errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Latency from the put's acknowledgement to the event's arrival.
        let acked = Instant::now();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .context("no watch event within 5 s")?
                .context("watch closed")??;
            if !r.events.is_empty() {
                break;
            }
        }
        lat.push(acked.elapsed());
    }
    drop(tx);
    Ok(lat)
}

async fn keepalive(ch: Channel, n: usize, errors: Arc<AtomicU64>) -> anyhow::Result<Vec<Duration>> {
    use tokio_stream::StreamExt;
    let id = LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await?
        .into_inner()
        .id;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // Queue the first request before opening the stream: grpc-go servers (etcd) send the
    // response headers only with the first response, so waiting for them first deadlocks.
    let mut t = Instant::now();
    tx.send(LeaseKeepAliveRequest { id }).await?;
    let mut replies = LeaseClient::new(ch)
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            t = Instant::now();
            tx.send(LeaseKeepAliveRequest { id }).await?;
        }
        // A reply that never comes is an error, not a hang.
        match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
            Ok(Some(Ok(r))) if r.ttl > 0 => lat.push(t.elapsed()),
            Ok(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    Ok(lat)
}

impl Report {
    pub fn table(&self) -> String {
        format!(
            "workload {:?}: {} requests ({} errors) from {} clients on {} conns in {:.2}s\n\
             throughput {:.0} req/s | latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            self.workload,
            self.total,
            self.errors,
            self.clients,
            self.conns,
            self.seconds,
            self.throughput,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }
}

/// Prints a report as one JSON line or as the two-line table. A reader that has gone
/// (`| head -c0`) is not an error: there is no one left to tell.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = if json {
        serde_json::to_string(report)?
    } else {
        report.table()
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
