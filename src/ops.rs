//! Operations HTTP on the metrics port: `/health`, `/readyz`, `/metrics` (Prometheus text).
//!
//! `/metrics` renders this member's [`Metrics`](crate::metrics::Metrics) (what is counted as
//! it happens) together with what is read off the member at scrape time: Raft's term, leader
//! and indexes, the store's revisions and sizes, the lease table, the process' memory. Where
//! etcd exposes the same thing its name is given in the HELP text, so etcd dashboards can be
//! mapped over.

use std::fmt::{Display, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::{HistogramSnapshot, LATENCY_BUCKETS};
use crate::raft::handle::RaftHandle;
use crate::raft::membership::MEMBER_REMOVED;

/// How long `/health` and `/readyz` wait for a linearizable read (one leadership check with a
/// quorum): a probe must answer well within its own timeout.
const QUORUM_CHECK: Duration = Duration::from_secs(1);
/// Why `/health` and `/readyz` fail when the quorum check does.
const NO_QUORUM: &str = "no quorum: a linearizable read failed";

/// Whether the cluster answers a linearizable read through this member: a leader that lost its
/// quorum still believes it leads, so knowing a leader alone proves nothing (etcd's /health
/// does a quorum read for the same reason).
async fn quorum_reachable(handle: &RaftHandle) -> bool {
    matches!(
        tokio::time::timeout(QUORUM_CHECK, handle.read_barrier()).await,
        Ok(Ok(()))
    )
}

/// Measuring the space in use scans the whole database, so a scrape reuses a measurement
/// this recent instead.
const IN_USE_MAX_AGE: Duration = Duration::from_secs(30);

struct Ops {
    handle: RaftHandle,
    /// The last measurement of the database's space in use, and when it was taken.
    in_use: Mutex<Option<(Instant, u64)>>,
}

pub fn router(handle: RaftHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Ops {
            handle,
            in_use: Mutex::new(None),
        }))
}

/// 200 when this member is in the cluster, no NOSPACE alarm is raised, it knows a leader, a
/// linearizable read through it succeeds and its store answers; etcd's JSON shape.
async fn health(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let handle = &ops.handle;
    let store_ok = handle.store().read_meta(b"revision").is_ok();
    let unhealthy = |reason: &str| {
        let body = serde_json::json!({ "health": "false", "reason": reason }).to_string();
        (StatusCode::SERVICE_UNAVAILABLE, body)
    };
    if handle.standing().removed() {
        return unhealthy(MEMBER_REMOVED);
    }
    // etcd's /health fails while a NOSPACE alarm is raised: the member cannot take writes.
    if handle.store().nospace() {
        return unhealthy("ALARM NOSPACE");
    }
    match (handle.leader(), store_ok) {
        (Some(_), true) if quorum_reachable(handle).await => (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_string(),
        ),
        (Some(_), true) => unhealthy(NO_QUORUM),
        (None, _) => unhealthy("no leader"),
        (_, false) => unhealthy("store not readable"),
    }
}

/// Alive: the process answers and its store is readable. Unlike `/health`, independent of the
/// cluster, so a liveness probe does not restart the members left after a quorum loss (a
/// restart cannot bring the quorum back).
async fn livez(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    if ops.handle.store().read_meta(b"revision").is_ok() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store not readable")
    }
}

/// Ready to take client traffic: part of a cluster with a leader that has its quorum (a
/// linearizable read succeeds), not removed from it, and — a
/// member that joined a running cluster — caught up with it (so an application next to a new
/// learner does not read an empty store). The body says why not.
async fn readyz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let standing = ops.handle.standing();
    if standing.removed() {
        return (StatusCode::SERVICE_UNAVAILABLE, MEMBER_REMOVED.to_string());
    }
    if let Some(reason) = standing.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    if ops.handle.leader().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader".to_string())
    } else if !quorum_reachable(&ops.handle).await {
        (StatusCode::SERVICE_UNAVAILABLE, NO_QUORUM.to_string())
    } else {
        (StatusCode::OK, "ok".to_string())
    }
}

/// Prometheus text exposition (format 0.0.4), written by hand.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled histogram.
    fn one_histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        self.histogram(name, &[], h);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, count) in LATENCY_BUCKETS.iter().zip(&h.cumulative) {
            let le = le.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// Label values come from client requests (method paths): escape what the format reserves.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

async fn metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let handle = &ops.handle;
    let m = handle.raft().metrics().borrow().clone();
    // openraft 0.9 does not publish the committed index in its metrics; its core does answer
    // for it (a message round trip, fine at scrape rate). `None` once Raft has stopped.
    let committed = handle
        .raft()
        .with_raft_state(|st| st.committed.map_or(0, |l| l.index))
        .await
        .ok();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let store = handle.store();
    let counted = handle.metrics();
    let mut t = Text::default();

    t.family(
        "corral_server_info",
        "gauge",
        "Always 1; labels identify the member and the version.",
    );
    t.sample(
        "corral_server_info",
        &[
            ("member_id", &format!("{:x}", handle.id())),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );

    // Raft.
    t.one(
        "corral_raft_term",
        "gauge",
        "Current Raft term.",
        m.current_term,
    );
    t.one(
        "corral_raft_has_leader",
        "gauge",
        "1 when this member knows a leader (etcd_server_has_leader).",
        flag(m.current_leader.is_some()),
    );
    t.one(
        "corral_raft_is_leader",
        "gauge",
        "1 when this member is the leader (etcd_server_is_leader).",
        flag(m.current_leader == Some(handle.id())),
    );
    t.one(
        "corral_raft_leader_changes_seen_total",
        "counter",
        "Times this member saw a new leader, the first one included \
         (etcd_server_leader_changes_seen_total).",
        counted.leader_changes.get(),
    );
    t.one(
        "corral_raft_last_log_index",
        "gauge",
        "Index of the last entry in this member's log.",
        m.last_log_index.unwrap_or(0),
    );
    if let Some(committed) = committed {
        t.one(
            "corral_raft_commit_index",
            "gauge",
            "Index of the last entry this member knows committed \
             (etcd_server_proposals_committed_total).",
            committed,
        );
        t.one(
            "corral_raft_apply_lag",
            "gauge",
            "Committed entries not yet applied to the state machine: commit index minus \
             applied index.",
            committed.saturating_sub(applied),
        );
    }
    t.one(
        "corral_raft_applied_index",
        "gauge",
        "Index of the last entry applied to the state machine \
         (etcd_server_proposals_applied_total).",
        applied,
    );

    t.one(
        "corral_snapshots_received_total",
        "counter",
        "Snapshots this member received in full from a leader and accepted for installing, \
         as a member behind the leader's log catches up (etcd_network_snapshot_receive_success).",
        counted.snapshots_received.get(),
    );

    // Proposals made through this member.
    t.one(
        "corral_proposals_committed_total",
        "counter",
        "Commands proposed through this member that were committed and applied (a count of \
         commands, several of which may share one Raft entry; etcd's \
         etcd_server_proposals_committed_total is an index, see corral_raft_commit_index).",
        counted.proposals_committed.get(),
    );
    t.one(
        "corral_proposals_failed_total",
        "counter",
        "Commands proposed through this member that failed: no leader, timed out, stopped \
         (etcd_server_proposals_failed_total).",
        counted.proposals_failed.get(),
    );
    t.one(
        "corral_proposals_pending",
        "gauge",
        "Commands proposed through this member and not answered yet \
         (etcd_server_proposals_pending).",
        counted.proposals_pending.get(),
    );

    // Store.
    t.one(
        "corral_mvcc_revision",
        "gauge",
        "Current store revision (etcd_debugging_mvcc_current_revision).",
        store.revision(),
    );
    t.one(
        "corral_mvcc_compact_revision",
        "gauge",
        "Compaction floor (etcd_debugging_mvcc_compact_revision).",
        store.compacted(),
    );
    t.one(
        "corral_db_size_bytes",
        "gauge",
        "State machine database size on disk (etcd_mvcc_db_total_size_in_bytes).",
        store.size_on_disk(),
    );
    if let Some(in_use) = size_in_use(&ops).await {
        t.one(
            "corral_db_size_in_use_bytes",
            "gauge",
            "Bytes of live keys and values in the state machine database, measured at most \
             every 30 s (etcd_mvcc_db_total_size_in_use_in_bytes).",
            in_use,
        );
    }

    // Disk: every durable flush (sled's flush, then the fsyncs it leaves out).
    t.one_histogram(
        "corral_disk_wal_fsync_duration_seconds",
        "Durable flushes of the Raft log: one per group commit of appended entries, and one per \
         vote, truncation and purge (etcd_disk_wal_fsync_duration_seconds).",
        &counted.wal_fsync.snapshot(),
    );
    t.one_histogram(
        "corral_disk_backend_flush_duration_seconds",
        "Durable flushes of the state machine database: before a snapshot is handed out, on \
         defragment and at shutdown (applies themselves are not flushed; the log covers them).",
        &store.flush_durations().snapshot(),
    );

    // Watches, leases, sessions.
    t.one(
        "corral_watch_streams",
        "gauge",
        "Open watch streams on this member (etcd_debugging_mvcc_watch_stream_total).",
        counted.watch_streams.get(),
    );
    t.one(
        "corral_watchers",
        "gauge",
        "Watchers on this member's watch streams (etcd_debugging_mvcc_watcher_total).",
        counted.watchers.get(),
    );
    t.one(
        "corral_leases",
        "gauge",
        "Leases in the applied lease table, znode sessions included.",
        handle.leases().count(),
    );
    t.one(
        "corral_lease_keepalive_streams",
        "gauge",
        "Open lease keep-alive streams on this member.",
        counted.lease_keepalive_streams.get(),
    );
    t.one(
        "corral_znode_sessions_connected",
        "gauge",
        "Znode sessions with an open keep-alive stream on this member.",
        counted.sessions_connected.get(),
    );
    t.one(
        "corral_znode_sessions_opened_total",
        "counter",
        "Znode sessions opened through this member.",
        counted.sessions_opened.get(),
    );
    t.one(
        "corral_znode_sessions_closed_total",
        "counter",
        "Znode sessions closed through this member (expiries are not counted).",
        counted.sessions_closed.get(),
    );

    // gRPC, shaped like go-grpc-prometheus' server metrics.
    let grpc = counted.grpc_snapshot();
    t.family(
        "corral_grpc_server_started_total",
        "counter",
        "gRPC calls started on the client port (grpc_server_started_total).",
    );
    for s in &grpc {
        let labels = [
            ("grpc_service", s.service.as_str()),
            ("grpc_method", s.method.as_str()),
        ];
        t.sample("corral_grpc_server_started_total", &labels, s.started);
    }
    t.family(
        "corral_grpc_server_in_flight",
        "gauge",
        "gRPC calls started and not finished; for streaming methods, the open streams.",
    );
    for s in &grpc {
        let labels = [
            ("grpc_service", s.service.as_str()),
            ("grpc_method", s.method.as_str()),
        ];
        t.sample("corral_grpc_server_in_flight", &labels, s.in_flight);
    }
    t.family(
        "corral_grpc_server_handled_total",
        "counter",
        "gRPC calls finished, by status code; a call the client abandoned counts as Canceled \
         (grpc_server_handled_total).",
    );
    for s in &grpc {
        for (code, h) in &s.by_code {
            let labels = [
                ("grpc_service", s.service.as_str()),
                ("grpc_method", s.method.as_str()),
                ("grpc_code", code),
            ];
            t.sample("corral_grpc_server_handled_total", &labels, h.count);
        }
    }
    t.family(
        "corral_grpc_server_handling_seconds",
        "histogram",
        "Time from a gRPC call's start until its status was sent; for a stream, its lifetime \
         (grpc_server_handling_seconds).",
    );
    for s in &grpc {
        for (code, h) in &s.by_code {
            let labels = [
                ("grpc_service", s.service.as_str()),
                ("grpc_method", s.method.as_str()),
                ("grpc_code", code),
            ];
            t.histogram("corral_grpc_server_handling_seconds", &labels, h);
        }
    }

    // The process (shared by every member it runs).
    if let Some(rss) = resident_memory_bytes() {
        t.one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the corral process, in bytes.",
            rss,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        t.one(
            "process_open_fds",
            "gauge",
            "Open file descriptors of the corral process.",
            fds.count(),
        );
    }

    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.0,
    )
}

/// The database's space in use, measured off the async threads and cached
/// ([`IN_USE_MAX_AGE`]). `None` if the measurement could not run.
async fn size_in_use(ops: &Arc<Ops>) -> Option<u64> {
    {
        let cached = ops.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *cached {
            if at.elapsed() < IN_USE_MAX_AGE {
                return Some(bytes);
            }
        }
    }
    let store = ops.handle.store().clone();
    // The same measurement the space quota takes (it also tightens the quota's cheap bound).
    let bytes = tokio::task::spawn_blocking(move || store.measure_in_use())
        .await
        .ok()?
        .ok()?;
    *ops.in_use.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), bytes));
    Some(bytes)
}

/// The process' resident set size, from `/proc/self/status` (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut t = Text::default();
        t.sample("m", &[("a", "x\"y\\z\nw")], 1);
        assert_eq!(t.0, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().is_some_and(|b| b > 0));
        }
    }
}
