//! Operations HTTP on the metrics port: `/health`, `/readyz`, `/metrics` (Prometheus text).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::raft::handle::RaftHandle;

pub fn router(handle: RaftHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(handle))
}

/// 200 when this member knows a leader and its store answers; etcd's JSON shape.
async fn health(State(handle): State<Arc<RaftHandle>>) -> impl IntoResponse {
    let store_ok = handle.store().read_meta(b"revision").is_ok();
    match (handle.leader(), store_ok) {
        (Some(_), true) => (StatusCode::OK, r#"{"health":"true","reason":""}"#),
        (None, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"no leader"}"#,
        ),
        (_, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"store not readable"}"#,
        ),
    }
}

/// Ready to take client traffic: part of a cluster with a leader.
async fn readyz(State(handle): State<Arc<RaftHandle>>) -> impl IntoResponse {
    if handle.leader().is_some() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader")
    }
}

async fn metrics(State(handle): State<Arc<RaftHandle>>) -> impl IntoResponse {
    let m = handle.raft().metrics().borrow().clone();
    let store = handle.store();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "corral_raft_term",
        "Current Raft term.",
        m.current_term as f64,
    );
    gauge(
        "corral_raft_has_leader",
        "1 when this member knows a leader.",
        if m.current_leader.is_some() { 1.0 } else { 0.0 },
    );
    gauge(
        "corral_raft_is_leader",
        "1 when this member is the leader.",
        if m.current_leader == Some(handle.id()) {
            1.0
        } else {
            0.0
        },
    );
    gauge(
        "corral_raft_last_log_index",
        "Index of the last entry in this member's log.",
        m.last_log_index.unwrap_or(0) as f64,
    );
    gauge(
        "corral_raft_applied_index",
        "Index of the last entry applied to the state machine.",
        m.last_applied.map_or(0, |l| l.index) as f64,
    );
    gauge(
        "corral_mvcc_revision",
        "Current store revision.",
        store.revision() as f64,
    );
    gauge(
        "corral_mvcc_compact_revision",
        "Compaction floor.",
        store.compacted() as f64,
    );
    gauge(
        "corral_db_size_bytes",
        "State machine database size on disk.",
        store.size_on_disk() as f64,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
