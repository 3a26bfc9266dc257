//! `make cluster` / `make cluster-stop` (`scripts/cluster.sh`): the script starts three real
//! `corral serve` processes that form one cluster, reports the ones already running instead of
//! starting them twice, stops them with SIGTERM, and a second start serves the data of the
//! first. The members must ignore `CORRAL_*` variables of the caller's shell (here one that
//! would make them wait for a cluster that does not exist).
//!
//! The script's fixed ports (12379, ...) are replaced by free ones through `CLUSTER_PORTS`, so
//! this test runs beside the others.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

/// Nine ports that were free a moment ago (listeners bound to port 0, then closed).
fn free_ports() -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..9)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

struct LocalCluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl LocalCluster {
    fn run(&self, action: &str) -> Output {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let out = Command::new("bash")
            .arg(script())
            .arg(action)
            .env("CORRAL_BIN", env!("CARGO_BIN_EXE_corral"))
            .env("CLUSTER_DIR", self.dir.path())
            .env("CLUSTER_PORTS", ports.join(" "))
            // Left over in a user's shell, these would make the members join a cluster that
            // does not exist: the script must not pass them on.
            .env("CORRAL_INITIAL_CLUSTER_STATE", "existing")
            .env("CORRAL_AUTO_LEARNER", "true")
            .output()
            .expect("run scripts/cluster.sh");
        eprintln!(
            "cluster.sh {action}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn endpoint(&self, member: usize) -> String {
        format!("127.0.0.1:{}", self.ports[3 * member])
    }

    /// The pids the script recorded for the members that run now.
    fn pids(&self) -> Vec<u32> {
        (1..=3)
            .filter_map(|i| std::fs::read_to_string(self.dir.path().join(format!("n{i}.pid"))).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Never leave processes behind, whatever the test's outcome.
        let _ = self.run("stop");
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

async fn client(endpoint: &str) -> Client {
    Client::connect(
        [endpoint],
        Some(ConnectOptions::new().with_timeout(Duration::from_secs(5))),
    )
    .await
    .expect("connect")
}

#[tokio::test]
async fn make_cluster_starts_reports_stops_and_restarts_with_the_data() {
    let cluster = LocalCluster {
        dir: tempfile::tempdir().expect("temp dir"),
        ports: free_ports(),
    };

    tracing_phase("start: three members form one cluster");
    let out = cluster.run("start");
    assert!(out.status.success(), "cluster.sh start failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("started n1 n2 n3"), "{stdout}");
    for i in 0..3 {
        assert!(stdout.contains(&cluster.endpoint(i)), "{stdout}");
    }
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| alive(p)));

    let mut first = client(&cluster.endpoint(0)).await;
    first
        .put("greeting", "hello", None)
        .await
        .expect("put on n1");
    let mut third = client(&cluster.endpoint(2)).await;
    let members = third.member_list().await.expect("member list");
    assert_eq!(members.members().len(), 3, "one cluster of three");
    let got = third.get("greeting", None).await.expect("get on n3");
    assert_eq!(got.kvs()[0].value(), b"hello");

    tracing_phase("start again: the running members are reported, not started twice");
    let out = cluster.run("start");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("started"), "{stdout}");
    assert_eq!(cluster.pids(), pids);
    let out = cluster.run("status");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("(pid ")
            .count(),
        3
    );

    tracing_phase("stop: every member exits on SIGTERM");
    let out = cluster.run("stop");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped 3 member(s)"));
    assert!(pids.iter().all(|&p| !alive(p)), "a member still runs");
    assert!(cluster.pids().is_empty());

    tracing_phase("start after stop: the data is still there");
    let out = cluster.run("start");
    assert!(out.status.success());
    let mut second = client(&cluster.endpoint(1)).await;
    let got = second.get("greeting", None).await.expect("get on n2");
    assert_eq!(got.kvs()[0].value(), b"hello");
}

fn tracing_phase(what: &str) {
    eprintln!("== {what}");
}
