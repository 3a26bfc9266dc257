//! The in-process cluster harness: N members on loopback port 0 with temp data dirs; stop,
//! restart and partition members; poll for conditions with a deadline (never a fixed sleep).
#![allow(dead_code)]

pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use corral::config::{Config, ServeArgs};
use corral::node::{Listeners, Node};
use tempfile::TempDir;
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct Slot {
    cfg: Config,
    client: SocketAddr,
    peer: SocketAddr,
    node: Option<Node>,
}

pub struct Cluster {
    slots: Vec<Slot>,
    /// The founding members' `--initial-cluster`, for members that join later.
    initial: String,
    _dir: TempDir,
}

/// Sockets reserved for a member that will join a running cluster (see [`Cluster::join`]).
pub struct Reserved {
    client: TcpListener,
    peer: TcpListener,
}

impl Reserved {
    pub async fn new() -> Reserved {
        Reserved {
            client: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            peer: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    /// The sockets of a member that stopped, bound again (a member started anew at the same
    /// addresses).
    pub async fn again(client: SocketAddr, peer: SocketAddr) -> Reserved {
        Reserved {
            client: bind_again(client).await,
            peer: bind_again(peer).await,
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}", self.peer.local_addr().expect("peer addr"))
    }
}

/// A member's configuration as the harness runs it: loopback addresses, fast Raft timing,
/// no metrics port, then `extra` flags.
fn member_config(
    name: &str,
    data: &std::path::Path,
    client: SocketAddr,
    peer: SocketAddr,
    initial: &str,
    extra: &[&str],
) -> Config {
    let base = [
        "corral".to_string(),
        format!("--name={name}"),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://{client}"),
        format!("--advertise-client-urls=http://{client}"),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster={initial}"),
        "--listen-metrics-urls=".to_string(),
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
        "--watch-progress-notify-interval=300ms".to_string(),
    ];
    let args = Args::try_parse_from(base.into_iter().chain(extra.iter().map(|s| s.to_string())))
        .expect("args");
    args.serve.validate().expect("valid config")
}

/// Binds `addr`, retrying while a just-closed socket still holds it.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    eventually(
        &format!("rebinding {addr}"),
        Duration::from_secs(10),
        || async { TcpListener::bind(addr).await.ok() },
    )
    .await
}

impl Cluster {
    /// Starts `n` members forming a new cluster and waits for a leader.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// Like [`Cluster::start`], with extra `corral serve` flags for every member.
    pub async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bound = Vec::new();
        for _ in 0..n {
            let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            bound.push((client, peer));
        }
        let initial: Vec<String> = bound
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://{}", p.local_addr().unwrap()))
            .collect();
        let initial = initial.join(",");
        let mut slots = Vec::new();
        let mut listeners = Vec::new();
        for (i, (client, peer)) in bound.into_iter().enumerate() {
            let (c, p) = (client.local_addr().unwrap(), peer.local_addr().unwrap());
            let data = dir.path().join(format!("m{i}"));
            let cfg = member_config(&format!("m{i}"), &data, c, p, &initial, extra);
            slots.push(Slot {
                cfg,
                client: c,
                peer: p,
                node: None,
            });
            listeners.push(Listeners {
                client: vec![client],
                peer,
                metrics: None,
            });
        }
        // Start every member before waiting on any: they need each other to elect.
        let mut starting = Vec::new();
        for (slot, l) in slots.iter().zip(listeners) {
            starting.push(tokio::spawn(Node::start(slot.cfg.clone(), l)));
        }
        for (slot, task) in slots.iter_mut().zip(starting) {
            slot.node = Some(task.await.expect("join").expect("node start"));
        }
        let cluster = Cluster {
            slots,
            initial,
            _dir: dir,
        };
        cluster.wait_leader().await;
        cluster
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Starts a member named `name` on `reserved` that joins the running cluster. With
    /// `listed`, it names itself in --initial-cluster next to the founders (etcd's way after a
    /// `member add`); otherwise it is not listed and `extra` should carry `--auto-learner`.
    /// Returns its index.
    pub async fn join(
        &mut self,
        reserved: Reserved,
        name: &str,
        listed: bool,
        extra: &[&str],
    ) -> usize {
        let peer = reserved.peer.local_addr().expect("addr");
        let initial = if listed {
            format!("{},{name}=http://{peer}", self.initial)
        } else {
            self.initial.clone()
        };
        let (cfg, listeners) = self.joiner(reserved, name, &initial, extra);
        let node = Node::start(cfg.clone(), listeners)
            .await
            .expect("node start");
        self.admit(cfg, node)
    }

    /// Starts members on `reserved` (name, sockets) at once, each joining the running cluster
    /// as [`Cluster::join`] does with `listed = false` (`extra` should carry
    /// `--auto-learner`). Returns their indexes.
    pub async fn join_many(
        &mut self,
        reserved: Vec<(&str, Reserved)>,
        extra: &[&str],
    ) -> Vec<usize> {
        let initial = self.initial.clone();
        let starting: Vec<_> = reserved
            .into_iter()
            .map(|(name, reserved)| {
                let (cfg, listeners) = self.joiner(reserved, name, &initial, extra);
                (cfg.clone(), tokio::spawn(Node::start(cfg, listeners)))
            })
            .collect();
        let mut indexes = Vec::new();
        for (cfg, task) in starting {
            let node = task.await.expect("join").expect("node start");
            indexes.push(self.admit(cfg, node));
        }
        indexes
    }

    /// The configuration and listeners of a member joining as `name` on `reserved`.
    fn joiner(
        &self,
        reserved: Reserved,
        name: &str,
        initial: &str,
        extra: &[&str],
    ) -> (Config, Listeners) {
        let (c, p) = (
            reserved.client.local_addr().expect("addr"),
            reserved.peer.local_addr().expect("addr"),
        );
        let data = self._dir.path().join(name);
        let cfg = member_config(name, &data, c, p, initial, extra);
        let listeners = Listeners {
            client: vec![reserved.client],
            peer: reserved.peer,
            metrics: None,
        };
        (cfg, listeners)
    }

    /// Adds a started joiner to the cluster's slots; returns its index.
    fn admit(&mut self, mut cfg: Config, node: Node) -> usize {
        // A joining member learns its ids from the cluster.
        cfg.member_id = node.id();
        cfg.cluster_id = self.cluster_id();
        // `member_config` listens on exactly one client address.
        let (client, peer) = (cfg.listen_client[0], cfg.listen_peer);
        self.slots.push(Slot {
            cfg,
            client,
            peer,
            node: Some(node),
        });
        self.slots.len() - 1
    }

    /// Member `i`'s (client, peer) socket addresses.
    pub fn addrs(&self, i: usize) -> (SocketAddr, SocketAddr) {
        (self.slots[i].client, self.slots[i].peer)
    }

    pub fn node(&self, i: usize) -> &Node {
        self.slots[i].node.as_ref().expect("member is running")
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    pub fn member_id(&self, i: usize) -> u64 {
        self.slots[i].cfg.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.slots[0].cfg.cluster_id
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.slots[i].client)
    }

    /// A real etcd client connected to member `i` only.
    pub async fn client(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint(i)], None)
            .await
            .expect("etcd client connects")
    }

    /// Index of the member that `i` believes is the leader.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let id = self.node(i).handle.leader()?;
        self.slots.iter().position(|s| s.cfg.member_id == id)
    }

    /// Waits until every running member agrees on one running leader; returns its index.
    pub async fn wait_leader(&self) -> usize {
        self.wait_leader_among(&(0..self.len()).collect::<Vec<_>>())
            .await
    }

    /// Waits until the running members in `group` agree on a leader inside the group.
    pub async fn wait_leader_among(&self, group: &[usize]) -> usize {
        eventually(
            "a leader agreed by the group",
            Duration::from_secs(20),
            || async {
                let running: Vec<usize> = group
                    .iter()
                    .copied()
                    .filter(|&i| self.is_running(i))
                    .collect();
                let first = self.leader_seen_by(*running.first()?)?;
                let agreed = running
                    .iter()
                    .all(|&i| self.leader_seen_by(i) == Some(first));
                (agreed && group.contains(&first) && self.is_running(first)).then_some(first)
            },
        )
        .await
    }

    /// Waits until member `i` has applied up to store revision `rev`.
    pub async fn wait_revision(&self, i: usize, rev: i64) {
        eventually(
            &format!("member {i} at revision {rev}"),
            Duration::from_secs(20),
            || async { (self.node(i).handle.store().revision() >= rev).then_some(()) },
        )
        .await
    }

    /// (hash, hash revision, compact revision) of member `i`'s store at `rev`
    /// (Maintenance.HashKV), once it has applied that far.
    pub async fn hash_kv(&self, i: usize, rev: i64) -> (u32, i64, i64) {
        self.wait_revision(i, rev).await;
        let r = self
            .client(i)
            .await
            .maintenance_client()
            .hash_kv(rev)
            .await
            .expect("hash_kv");
        (r.hash(), r.hash_revision(), r.compact_version())
    }

    /// Graceful stop of member `i` (its data dir stays).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.slots[i].node.take() {
            node.stop().await;
        }
    }

    /// Starts member `i` again on the same addresses and data dir.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.slots[i].node.is_none(), "member {i} is running");
        let slot = &self.slots[i];
        let listeners = Listeners {
            client: vec![bind_again(slot.client).await],
            peer: bind_again(slot.peer).await,
            metrics: None,
        };
        let node = Node::start(slot.cfg.clone(), listeners)
            .await
            .expect("restart");
        self.slots[i].node = Some(node);
    }

    /// Cuts all peer traffic between the two groups, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                if self.is_running(x) {
                    self.node(x).faults.block(self.member_id(y));
                }
                if self.is_running(y) {
                    self.node(y).faults.block(self.member_id(x));
                }
            }
        }
    }

    /// Restores every peer link.
    pub fn heal(&self) {
        for i in 0..self.len() {
            if self.is_running(i) {
                self.node(i).faults.heal();
            }
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.len() {
            self.stop(i).await;
        }
    }
}

/// Serves `node`'s ops endpoints (`/readyz`, `/health`, `/metrics`) on a port-0 listener, as
/// `corral serve` does on its metrics port (the harness starts members without one). The
/// server lives as long as the test's runtime.
pub async fn serve_ops(node: &Node) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = corral::ops::router(node.handle.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `GET path` over HTTP/1.1: (status, body). Panics on a malformed response.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with_head(addr, path).await;
    (status, body)
}

/// `GET path` over HTTP/1.1: (status, lower-cased headers, body, de-chunked). Panics on a
/// malformed response.
pub async fn http_get_with_head(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the ops port");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}
