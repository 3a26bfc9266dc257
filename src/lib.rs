//! corral: a coordination service — etcd's v3 API on a Raft-replicated, sled-backed store.
//!
//! # Layout
//!
//! Requests flow one way: gRPC service → command → Raft proposal → apply to the state
//! machine → response (and, later, watch events).
//!
//! - [`config`]: `corral serve` flags (etcd-shaped, also from `CORRAL_*` env), validation,
//!   member and cluster ids, the openraft config.
//! - [`node`]: the one place that wires storage, Raft, services and listeners together.
//! - [`api`]: one tonic service per file — etcd's KV, Watch, Lease, Cluster, Maintenance,
//!   Lock, Election; corral's Znodes, Sessions, Barrier — plus the single error → `Status`
//!   mapping and `recipe` (the waiting primitives lock/election/barrier share).
//! - [`command`]: what gets replicated (Put, DeleteRange, Txn, Compact, member publish) and
//!   what applying it returns.
//! - [`raft`]: openraft types, the state machine, the peer network (client) and peer service
//!   (server), and the `RaftHandle` facade: batched `propose`, `read_barrier`, leader, members;
//!   `raft::membership`: member add / promote / remove / update through joint consensus,
//!   joining a running cluster (`--initial-cluster-state existing`, `--auto-learner`, ready
//!   once caught up), noticing this member's own removal, and leader transfer (the leader
//!   holds proposals and reads meanwhile).
//! - [`mvcc`]: etcd's MVCC semantics — revisions, versions, tombstones, Range / Put /
//!   DeleteRange / Txn / Compact — pure and deterministic over an ordered `Backend`.
//! - [`lease`]: the lease table (applied, deterministic) and the leader-only expiry clock that
//!   proposes revocations; keep-alives never go through Raft.
//! - [`storage`]: sled, and nothing else names it: the Raft log store (group commit; the
//!   last entries appended also kept decoded, for apply and replication to read), the
//!   state-machine store (one commit per apply, all or nothing after a crash: an atomic batch,
//!   or plain writes under a "torn" marker that makes the next start rebuild the state from
//!   the snapshot), and `storage::durable`, the fsyncs sled's own flush leaves out.
//! - [`watch`]: the hub that fans applied events out to watch streams without ever blocking
//!   apply; streams that fall behind catch up from stored history.
//! - [`znode`]: the ZooKeeper-style namespace on the flat key space — path rules, key layout
//!   (depth-prefixed, so children are one prefix scan), records with ZooKeeper's stat, and
//!   the staged all-or-nothing operations that become one MVCC txn per call.
//! - [`mod@bench`]: `corral bench`, a load generator over etcd's v3 API (so it drives etcd too)
//!   and the znode API, reporting throughput and latency percentiles.
//! - [`ops`]: the metrics/health HTTP endpoint.
//! - [`metrics`]: one member's counters, gauges and per-method gRPC latency histograms (a
//!   tower layer on the client port); held by its `RaftHandle`, rendered by [`ops`].
//! - [`pb`]: generated protobuf code (etcd's packages and corral's peer protocol).
//! - [`cli`]: the `corral` client commands — zkCli's verbs (`ls`, `create`, `get`, ...),
//!   etcdctl's (`kv`, `lease`, `lock`, `elect`, `member`, `endpoint`, `snapshot`) and
//!   `corral shell` (interactive, one session) — over the generated gRPC clients in [`pb`].
//! - [`checker`]: linearizability (per-key Wing–Gong search), revision and watch-stream checks,
//!   lock holders and fencing tokens, ephemerals of ended sessions, over recorded client
//!   histories; used by the fault tests, pure and deterministic.

pub mod api;
pub mod bench;
pub mod checker;
pub mod cli;
pub mod command;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod ops;
pub mod pb;
pub mod raft;
pub mod storage;
pub mod watch;
pub mod znode;
