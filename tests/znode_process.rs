//! The znode API against a real `corral serve` process: the classic ZooKeeper exercise with two
//! clients, and a Python client generated from `proto/` with grpcio-tools.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::process::ProcessCluster;
use corral::pb::corral::v1::sessions_client::SessionsClient;
use corral::pb::corral::v1::watch_request::Request as WatchReq;
use corral::pb::corral::v1::znodes_client::ZnodesClient;
use corral::pb::corral::v1::*;
use tokio_stream::StreamExt;

async fn next(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("a watch response in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_classic_exercise_with_two_clients() {
    let cluster = ProcessCluster::start(1).await;
    let endpoint = cluster.members[0].endpoint();
    let mut c1 = ZnodesClient::connect(endpoint.clone()).await.unwrap();
    let mut s1 = SessionsClient::connect(endpoint.clone()).await.unwrap();
    let mut c2 = ZnodesClient::connect(endpoint.clone()).await.unwrap();

    tracing::info!("client 1: /teste, three sequential children, /teste2, an ephemeral");
    c1.create(CreateRequest {
        path: "/teste".into(),
        data: "dados".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut seq = Vec::new();
    for _ in 0..3 {
        let r = c1
            .create(CreateRequest {
                path: "/teste/filho-".into(),
                mode: CreateMode::PersistentSequential as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seq.push(r.path);
    }
    assert_eq!(
        seq,
        [
            "/teste/filho-0000000000",
            "/teste/filho-0000000001",
            "/teste/filho-0000000002"
        ]
    );
    c1.create(CreateRequest {
        path: "/teste2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let session = s1
        .open_session(OpenSessionRequest { timeout_ms: 4000 })
        .await
        .unwrap()
        .into_inner();
    // Client 1 keeps its session alive while it is "connected".
    let (ka_tx, ka_rx) = tokio::sync::mpsc::channel(4);
    let mut ka = s1
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(ka_rx))
        .await
        .unwrap()
        .into_inner();
    let id = session.session_id;
    let connected = tokio::spawn(async move {
        loop {
            if ka_tx
                .send(KeepAliveRequest { session_id: id })
                .await
                .is_err()
            {
                return;
            }
            if ka.next().await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    });
    c1.create(CreateRequest {
        path: "/teste/efemero".into(),
        data: "estou aqui".into(),
        mode: CreateMode::Ephemeral as i32,
        session_id: session.session_id,
        ..Default::default()
    })
    .await
    .unwrap();

    tracing::info!("client 2 watches the ephemeral and the children of /teste");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut w = c2
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let add = |id, path: &str, kind: WatchKind| WatchRequest {
        request: Some(WatchReq::Add(AddWatch {
            watch_id: id,
            path: path.into(),
            kind: kind as i32,
            start_zxid: 0,
            read: true,
        })),
    };
    tx.send(add(1, "/teste/efemero", WatchKind::WatchExists))
        .await
        .unwrap();
    tx.send(add(2, "/teste", WatchKind::WatchChildren))
        .await
        .unwrap();
    let a1 = next(&mut w).await;
    assert!(a1.added && a1.exists);
    assert_eq!(a1.data, b"estou aqui");
    assert_eq!(a1.stat.unwrap().ephemeral_owner, session.session_id);
    let a2 = next(&mut w).await;
    assert_eq!(a2.children.len(), 4);

    tracing::info!("client 1 disconnects: its session expires and the ephemeral goes");
    connected.abort();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = next(&mut w).await;
        let e = r.event.unwrap();
        seen.push((r.watch_id, EventType::try_from(e.r#type).unwrap(), e.path));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, EventType::NodeDeleted, "/teste/efemero".to_string()),
            (2, EventType::NodeChildrenChanged, "/teste".to_string()),
        ]
    );
    let kids = c2
        .get_children(GetChildrenRequest {
            path: "/teste".into(),
            with_stats: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kids.children,
        ["filho-0000000000", "filho-0000000001", "filho-0000000002"]
    );

    tracing::info!("client 1 reconnects with a new session");
    let again = s1
        .open_session(OpenSessionRequest { timeout_ms: 4000 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.session_id, session.session_id);
    c1.create(CreateRequest {
        path: "/teste/efemero".into(),
        mode: CreateMode::Ephemeral as i32,
        session_id: again.session_id,
        ..Default::default()
    })
    .await
    .unwrap();
    let root = c1
        .get_children(GetChildrenRequest {
            path: "/".into(),
            with_stats: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(root.children, ["teste", "teste2"]);
}

fn tools_python() -> PathBuf {
    if let Ok(p) = std::env::var("CORRAL_PYTHON") {
        return p.into();
    }
    let base = std::env::var("CORRAL_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("corral-test-tools")
        });
    base.join("bin").join("python")
}

async fn run_python(script: &str) {
    let python = tools_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-tools.sh (make test does)",
        python.display()
    );
    let cluster = ProcessCluster::start(1).await;
    let endpoint = format!("127.0.0.1:{}", cluster.members[0].client_port);
    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let result = tokio::process::Command::new(&python)
        .arg(format!("{root}/tests/python/{script}"))
        .arg(&endpoint)
        .arg(format!("{root}/proto"))
        .arg(out.path())
        .kill_on_drop(true)
        .output();
    let result = tokio::time::timeout(Duration::from_secs(120), result)
        .await
        .expect("python in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.lines().last() == Some("ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_python_client_runs_an_election_and_a_double_barrier() {
    run_python("recipes_client.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_python_client_drives_the_znode_api() {
    run_python("znode_client.py").await;
}
