//! A cluster of real `corral serve` processes on loopback, for faults an in-process member
//! can't suffer: SIGKILL (no flush, no destructor), SIGSTOP, and — with
//! [`ProcessCluster::start_proxied`] — network partitions: every directed peer link goes
//! through a TCP proxy in the test process (`--peer-dial-map`), which the test can cut.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::ConnectOptions;
use tempfile::TempDir;
use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::eventually;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback port held bound (port 0) until the listener is dropped: while held, nothing
/// else in this process or another can be given it, as it could a port [`free_port`] has
/// already let go of.
pub fn reserve_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("reserve a port")
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().expect("reserved port").port()
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    /// Stopped with SIGSTOP and not yet continued.
    pub paused: bool,
    initial_cluster: String,
    /// `--peer-dial-map` value: where this member dials each peer (the link proxies).
    dial_map: Option<String>,
    /// More `corral serve` flags ([`ProcessCluster::start_with`]).
    extra_args: Vec<String>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Where this member's stderr goes (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
        cmd.arg("serve")
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                self.peer_port
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                self.peer_port
            ))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--listen-metrics-urls=")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500");
        if let Some(map) = &self.dial_map {
            cmd.arg(format!("--peer-dial-map={map}"));
        }
        cmd.args(&self.extra_args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corral");
        self.child = Some(child);
        self.paused = false;
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("member is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", child.id());
    }
}

/// The proxy on one directed peer link: the `from` member dials it to reach `to`. Cutting it
/// black-holes the link — bytes stop flowing both ways on open connections and new ones are
/// accepted but never answered — as a dropped-packet partition looks; healing closes those
/// stalled connections, so the member reconnects.
struct LinkProxy {
    port: u16,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LinkProxy {
    async fn start(target_port: u16) -> LinkProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind link proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        let task = tokio::spawn(async move {
            // Dropped (aborting every connection) when the proxy is.
            let mut connections = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(forward(inbound, target_port, cut_rx.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        LinkProxy { port, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut
            .send_if_modified(|c| std::mem::replace(c, cut) != cut);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut inbound: TcpStream, target_port: u16, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let connect = TcpStream::connect(("127.0.0.1", target_port));
    let Ok(Ok(mut outbound)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let was_cut = tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => false,
        r = cut.wait_for(|c| *c) => r.is_ok(),
    };
    if was_cut {
        // Hold both ends, silent, until the link heals.
        let _ = cut.wait_for(|c| !*c).await;
    }
}

pub struct ProcessCluster {
    pub members: Vec<Member>,
    /// `proxies[from][to]`: the link proxy `from` dials `to` through (none on the diagonal,
    /// and none at all without [`ProcessCluster::start_proxied`]).
    proxies: Vec<Vec<Option<LinkProxy>>>,
    dir: TempDir,
}

impl ProcessCluster {
    /// `n` members dialing each other directly.
    pub async fn start(n: usize) -> ProcessCluster {
        Self::start_inner(n, false, &[]).await
    }

    /// `n` members whose peer links all go through proxies, so that
    /// [`ProcessCluster::set_links`] can partition them.
    pub async fn start_proxied(n: usize) -> ProcessCluster {
        Self::start_inner(n, true, &[]).await
    }

    /// `n` members, proxied or not, each started with the `extra` `corral serve` flags too.
    pub async fn start_with(n: usize, proxied: bool, extra: &[&str]) -> ProcessCluster {
        Self::start_inner(n, proxied, extra).await
    }

    /// Like [`ProcessCluster::start_with`], but returns as soon as the processes are spawned,
    /// without waiting for a leader: a caller that must keep the members' logs when no leader
    /// comes (the fault tests save them) waits with its own deadline.
    pub async fn launch_with(n: usize, proxied: bool, extra: &[&str]) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // Held until the members are spawned: the link proxies below bind port 0 too, and
        // could otherwise be given a member's port (seen: a member that never started, its
        // client port taken by a proxy of its own cluster).
        let reserved: Vec<(TcpListener, TcpListener)> =
            (0..n).map(|_| (reserve_port(), reserve_port())).collect();
        let ports: Vec<(u16, u16)> = reserved
            .iter()
            .map(|(c, p)| (port_of(c), port_of(p)))
            .collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("p{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut proxies: Vec<Vec<Option<LinkProxy>>> = Vec::new();
        for from in 0..n {
            let mut row = Vec::new();
            for (to, &(_, peer)) in ports.iter().enumerate() {
                row.push(if proxied && from != to {
                    Some(LinkProxy::start(peer).await)
                } else {
                    None
                });
            }
            proxies.push(row);
        }
        let mut members: Vec<Member> = ports
            .into_iter()
            .enumerate()
            .map(|(i, (c, p))| Member {
                name: format!("p{i}"),
                client_port: c,
                peer_port: p,
                data_dir: dir.path().join(format!("p{i}")),
                child: None,
                paused: false,
                initial_cluster: initial.clone(),
                extra_args: extra.iter().map(|a| a.to_string()).collect(),
                dial_map: proxied.then(|| {
                    proxies[i]
                        .iter()
                        .enumerate()
                        .filter_map(|(to, proxy)| {
                            let port = proxy.as_ref()?.port;
                            Some(format!("p{to}=http://127.0.0.1:{port}"))
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            })
            .collect();
        // Let go only now, the moment each member binds them again.
        drop(reserved);
        for m in &mut members {
            m.spawn();
        }
        ProcessCluster {
            members,
            proxies,
            dir,
        }
    }

    async fn start_inner(n: usize, proxied: bool, extra: &[&str]) -> ProcessCluster {
        let cluster = Self::launch_with(n, proxied, extra).await;
        cluster.wait_leader().await;
        cluster
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The directory holding the members' data dirs and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Running and not paused: it can answer.
    pub fn is_up(&self, i: usize) -> bool {
        self.members[i].child.is_some() && !self.members[i].paused
    }

    pub async fn client(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.members[i].endpoint()], None)
            .await
            .expect("connect")
    }

    /// (own member id, leader id it reports, its term) from member `i`'s Status, within about
    /// a second, or `None`.
    pub async fn status(&self, i: usize) -> Option<(u64, u64, u64)> {
        if !self.is_up(i) {
            return None;
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        let ask = async {
            let mut c =
                etcd_client::Client::connect([self.members[i].endpoint()], Some(options)).await?;
            c.status().await
        };
        let status = tokio::time::timeout(Duration::from_millis(1500), ask)
            .await
            .ok()?
            .ok()?;
        Some((
            status.header()?.member_id(),
            status.leader(),
            status.raft_term(),
        ))
    }

    /// The index of the leader: a member that reports itself as leader; of several (a deposed
    /// leader that has not heard of the new term yet), the one with the highest term.
    pub async fn leader(&self) -> Option<usize> {
        let statuses = futures::future::join_all((0..self.len()).map(|i| self.status(i))).await;
        statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (own, leader, term) = (*s)?;
                (own == leader).then_some((term, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    pub async fn wait_leader(&self) -> usize {
        eventually(
            "a leader among the processes",
            Duration::from_secs(30),
            || self.leader(),
        )
        .await
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].paused = false;
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.members[i].spawn();
    }

    /// SIGSTOP: the process freezes with its connections open.
    pub fn pause(&mut self, i: usize) {
        if self.members[i].child.is_some() && !self.members[i].paused {
            self.members[i].signal("STOP");
            self.members[i].paused = true;
        }
    }

    /// SIGCONT after [`ProcessCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        if self.members[i].paused {
            self.members[i].signal("CONT");
            self.members[i].paused = false;
        }
    }

    /// Sets which directed peer links carry traffic: `connected(from, to)`. Needs
    /// [`ProcessCluster::start_proxied`].
    pub fn set_links(&self, connected: impl Fn(usize, usize) -> bool) {
        for (from, row) in self.proxies.iter().enumerate() {
            for (to, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy {
                    proxy.set_cut(!connected(from, to));
                } else {
                    assert!(from == to, "partitions need ProcessCluster::start_proxied");
                }
            }
        }
    }

    /// Only members in the same group reach each other; a member in no group reaches nobody.
    pub fn partition(&self, groups: &[&[usize]]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        self.set_links(|a, b| group_of(a).is_some() && group_of(a) == group_of(b));
    }

    /// Restores every peer link.
    pub fn heal(&self) {
        self.set_links(|_, _| true);
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
