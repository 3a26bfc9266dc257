//! A cluster of real `corral serve` processes on loopback, for faults an in-process member
//! can't suffer: SIGKILL (no flush, no destructor) and SIGSTOP.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::eventually;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    initial_cluster: String,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("serve")
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
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corral");
        self.child = Some(child);
    }
}

pub struct ProcessCluster {
    pub members: Vec<Member>,
    _dir: TempDir,
}

impl ProcessCluster {
    pub async fn start(n: usize) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("p{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .into_iter()
            .enumerate()
            .map(|(i, (c, p))| Member {
                name: format!("p{i}"),
                client_port: c,
                peer_port: p,
                data_dir: dir.path().join(format!("p{i}")),
                child: None,
                initial_cluster: initial.clone(),
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        let cluster = ProcessCluster { members, _dir: dir };
        cluster.wait_leader().await;
        cluster
    }

    pub async fn client(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.members[i].endpoint()], None)
            .await
            .expect("connect")
    }

    /// The index of the leader, as reported by a running member's Status.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([m.endpoint()], None).await else {
                continue;
            };
            let Ok(status) = c.status().await else {
                continue;
            };
            let id = status.leader();
            if id == 0 {
                continue;
            }
            for j in 0..self.members.len() {
                let Ok(mut cj) =
                    etcd_client::Client::connect([self.members[j].endpoint()], None).await
                else {
                    continue;
                };
                if let Ok(s) = cj.status().await {
                    if s.header().map(|h| h.member_id()) == Some(id) {
                        return (self.members[j].child.is_some()).then_some(j);
                    }
                }
            }
            let _ = i;
        }
        None
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
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.members[i].spawn();
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
