//! The session workload: znode sessions (corral.v1 Sessions) with ephemeral znodes. A client
//! opens a session, keeps it alive, creates ephemerals (each path used once, never deleted
//! by a client), and then either closes the session or abandons it — stops its keep-alives —
//! so that it expires. All along it reads recent ephemerals (its own and abandoned ones) on
//! every member, so that expiries are observed and anything coming back after one is seen.
//! Everything is recorded for [`corral::checker::ephemeral`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::checker::ephemeral::{
    Create, Created, EphemeralHistory, Found, Session, SessionEnd, ZnodeRead,
};
use corral::checker::lock::Renewal;
use corral::pb::corral::v1::sessions_client::SessionsClient;
use corral::pb::corral::v1::znodes_client::ZnodesClient;
use corral::pb::corral::v1::{
    CloseSessionRequest, CreateMode, CreateRequest, ExistsRequest, GetChildrenRequest,
    KeepAliveRequest, OpenSessionRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::workload::{is_connect_failure, Recorder, OP_TIMEOUT};

/// Every ephemeral is a child of this znode (created before the run).
pub const EPHEMERAL_DIR: &str = "/jepsen-eph";
/// Recent paths a client keeps reading.
const TRACKED: usize = 12;

/// A channel to `endpoint`, or `None` if it can't be had quickly.
pub async fn channel(endpoint: &str) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(endpoint.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true);
    tokio::time::timeout(OP_TIMEOUT, endpoint.connect())
        .await
        .ok()?
        .ok()
}

/// Whether a refused request certainly did not take effect.
fn not_applied(s: &Status) -> bool {
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented => true,
        Code::Unavailable => is_connect_failure(s.message()),
        _ => false,
    }
}

/// Keeps one session alive, one keep-alive at a time, moving on to the next member when a
/// stream fails; records each renewal (TTL in whole seconds).
struct Keeper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    renewals: Arc<Mutex<Vec<Renewal>>>,
}

impl Keeper {
    fn spawn(
        endpoints: Vec<String>,
        first_member: usize,
        session: i64,
        timeout_ms: i64,
        recorder: Arc<Recorder>,
    ) -> Keeper {
        let renewals: Arc<Mutex<Vec<Renewal>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let every = Duration::from_millis(u64::try_from(timeout_ms / 4).unwrap_or(250).max(100));
        let task = {
            let renewals = renewals.clone();
            tokio::spawn(async move {
                let mut member = first_member;
                loop {
                    if *stopped.borrow() {
                        return;
                    }
                    let endpoint = &endpoints[member % endpoints.len()];
                    member += 1;
                    let Some(ch) = channel(endpoint).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let mut client = SessionsClient::new(ch);
                    let (tx, rx) = mpsc::channel(1);
                    let call = client.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx));
                    // The call answers once the server has the stream; send the first
                    // request first so that it does.
                    let sent = recorder.now();
                    if tx
                        .send(KeepAliveRequest {
                            session_id: session,
                        })
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    let Ok(Ok(stream)) = tokio::time::timeout(OP_TIMEOUT, call).await else {
                        continue;
                    };
                    let mut stream = stream.into_inner();
                    let mut sent = sent;
                    loop {
                        match tokio::time::timeout(OP_TIMEOUT, stream.message()).await {
                            Ok(Ok(Some(resp))) if resp.timeout_ms > 0 => {
                                renewals.lock().unwrap().push(Renewal {
                                    sent,
                                    received: recorder.now(),
                                    ttl: resp.timeout_ms / 1000,
                                });
                            }
                            // The session is gone.
                            Ok(Ok(Some(_))) => return,
                            _ => break,
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(every) => {}
                            _ = stopped.changed() => return,
                        }
                        sent = recorder.now();
                        if tx
                            .send(KeepAliveRequest {
                                session_id: session,
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            })
        };
        Keeper {
            stop,
            task,
            renewals,
        }
    }

    async fn stop(self) -> Vec<Renewal> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let renewals = self.renewals.lock().unwrap().clone();
        renewals
    }
}

pub struct SessionWorker {
    pub id: u32,
    endpoints: Vec<String>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    rng: StdRng,
    member: usize,
    /// A channel per member, made on first use and dropped when a call on it fails.
    channels: Vec<Option<Channel>>,
    history: Arc<Mutex<EphemeralHistory>>,
    tracked: Vec<String>,
    created: usize,
    /// Requested session timeout: members must run with `--min-session-timeout` at most this.
    timeout_ms: i64,
}

impl SessionWorker {
    pub fn new(
        id: u32,
        endpoints: Vec<String>,
        recorder: Arc<Recorder>,
        stop: Arc<AtomicBool>,
        seed: u64,
        history: Arc<Mutex<EphemeralHistory>>,
        timeout_ms: i64,
    ) -> SessionWorker {
        SessionWorker {
            id,
            member: id as usize % endpoints.len(),
            channels: vec![None; endpoints.len()],
            endpoints,
            recorder,
            stop,
            rng: StdRng::seed_from_u64(seed.wrapping_mul(5_000_011).wrapping_add(id as u64)),
            history,
            tracked: Vec::new(),
            created: 0,
            timeout_ms,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn next_member(&mut self) {
        self.member = (self.member + 1) % self.endpoints.len();
    }

    async fn channel(&mut self, member: usize) -> Option<Channel> {
        if self.channels[member].is_none() {
            self.channels[member] = channel(&self.endpoints[member]).await;
        }
        self.channels[member].clone()
    }

    pub async fn run(mut self) {
        while !self.stopped() {
            let member = self.member;
            let Some(ch) = self.channel(member).await else {
                self.next_member();
                self.reads(2).await;
                continue;
            };
            let opened_at = self.recorder.now();
            let mut sc = SessionsClient::new(ch);
            let open = sc.open_session(OpenSessionRequest {
                timeout_ms: self.timeout_ms,
            });
            let Ok(Ok(open)) = tokio::time::timeout(OP_TIMEOUT, open).await else {
                self.recorder.count_error("open session failed".into());
                self.channels[member] = None;
                self.next_member();
                self.reads(2).await;
                continue;
            };
            let open = open.into_inner();
            let keeper = Keeper::spawn(
                self.endpoints.clone(),
                member,
                open.session_id,
                open.timeout_ms,
                self.recorder.clone(),
            );
            let mut session = Session {
                client: self.id,
                id: open.session_id,
                timeout_ms: open.timeout_ms,
                opened_at,
                renewals: Vec::new(),
                ephemerals: Vec::new(),
                end: SessionEnd::Abandoned { at: 0 },
            };
            for _ in 0..self.rng.gen_range(1..=2) {
                let create = self.create(open.session_id).await;
                self.track(create.path.clone());
                session.ephemerals.push(create);
            }
            // Live for a while, reading.
            let rounds = self.rng.gen_range(1..=6);
            self.reads(rounds).await;
            // Either way keep-alives stop first: abandoned, the session expires; closed, it
            // ends when the close applies.
            session.renewals = keeper.stop().await;
            session.end = if self.rng.gen_bool(0.5) {
                SessionEnd::Abandoned {
                    at: self.recorder.now(),
                }
            } else {
                self.close(open.session_id).await
            };
            self.history.lock().unwrap().sessions.push(session);
            let rounds = self.rng.gen_range(2..=6);
            self.reads(rounds).await;
        }
    }

    fn track(&mut self, path: String) {
        self.tracked.push(path);
        if self.tracked.len() > TRACKED {
            self.tracked.remove(0);
        }
    }

    async fn create(&mut self, session: i64) -> Create {
        self.created += 1;
        let path = format!("{EPHEMERAL_DIR}/c{}-{}", self.id, self.created);
        let invoke = self.recorder.now();
        let member = self.member;
        let outcome = match self.channel(member).await {
            None => Created::Refused {
                why: "no connection".into(),
            },
            Some(ch) => {
                let mut zc = ZnodesClient::new(ch);
                let create = zc.create(CreateRequest {
                    path: path.clone(),
                    mode: CreateMode::Ephemeral as i32,
                    session_id: session,
                    ..Default::default()
                });
                match tokio::time::timeout(OP_TIMEOUT, create).await {
                    Ok(Ok(r)) => Created::Ok {
                        zxid: r.into_inner().zxid,
                    },
                    Ok(Err(s)) => {
                        let why = self.recorder.count_error(format!(
                            "create: {:?}: {}",
                            s.code(),
                            s.message()
                        ));
                        self.channels[member] = None;
                        self.next_member();
                        if not_applied(&s) {
                            Created::Refused { why }
                        } else {
                            Created::Unknown
                        }
                    }
                    Err(_) => {
                        self.recorder.count_error("create: client timeout".into());
                        self.channels[member] = None;
                        self.next_member();
                        Created::Unknown
                    }
                }
            }
        };
        Create {
            path,
            invoke,
            complete: self.recorder.now(),
            outcome,
        }
    }

    async fn close(&mut self, session: i64) -> SessionEnd {
        let invoke = self.recorder.now();
        let member = self.member;
        let acknowledged = match self.channel(member).await {
            None => false,
            Some(ch) => {
                let mut sc = SessionsClient::new(ch);
                let close = sc.close_session(CloseSessionRequest {
                    session_id: session,
                });
                match tokio::time::timeout(OP_TIMEOUT, close).await {
                    Ok(Ok(_)) => true,
                    _ => {
                        self.recorder.count_error("close session failed".into());
                        self.channels[member] = None;
                        self.next_member();
                        false
                    }
                }
            }
        };
        SessionEnd::Closed {
            invoke,
            complete: self.recorder.now(),
            acknowledged,
        }
    }

    /// `rounds` linearizable reads of tracked paths, each on a random member.
    async fn reads(&mut self, rounds: usize) {
        for _ in 0..rounds {
            if self.stopped() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(50..=250))).await;
            if self.tracked.is_empty() {
                continue;
            }
            let path = self.tracked[self.rng.gen_range(0..self.tracked.len())].clone();
            let member = self.rng.gen_range(0..self.endpoints.len());
            let Some(ch) = self.channel(member).await else {
                continue;
            };
            let invoke = self.recorder.now();
            let mut zc = ZnodesClient::new(ch);
            let exists = zc.exists(ExistsRequest { path: path.clone() });
            match tokio::time::timeout(OP_TIMEOUT, exists).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    self.history.lock().unwrap().reads.push(ZnodeRead {
                        client: self.id,
                        member,
                        path,
                        invoke,
                        complete: self.recorder.now(),
                        zxid: r.zxid,
                        found: r.stat.filter(|_| r.exists).map(|s| Found {
                            czxid: s.czxid,
                            owner: s.ephemeral_owner,
                        }),
                    });
                }
                _ => self.channels[member] = None,
            }
        }
    }
}

/// Creates [`EPHEMERAL_DIR`] (before the run, so that creates need no parents).
pub async fn create_dir(endpoint: &str) -> Option<()> {
    let mut c = ZnodesClient::new(channel(endpoint).await?);
    let create = c.create(CreateRequest {
        path: EPHEMERAL_DIR.into(),
        ..Default::default()
    });
    match tokio::time::timeout(OP_TIMEOUT, create).await.ok()? {
        Ok(_) => Some(()),
        Err(s) if s.code() == Code::AlreadyExists => Some(()),
        Err(_) => None,
    }
}

/// The ephemerals present on `endpoint` (one linearizable GetChildren), as reads of every
/// path in `paths`.
pub async fn read_all(
    endpoint: &str,
    member: usize,
    client: u32,
    paths: &[String],
    recorder: &Recorder,
) -> Option<Vec<ZnodeRead>> {
    let mut c = ZnodesClient::new(channel(endpoint).await?);
    let invoke = recorder.now();
    let list = c.get_children(GetChildrenRequest {
        path: EPHEMERAL_DIR.into(),
        with_stats: true,
    });
    let r = tokio::time::timeout(OP_TIMEOUT, list)
        .await
        .ok()?
        .ok()?
        .into_inner();
    let complete = recorder.now();
    let present: std::collections::HashMap<String, Found> = r
        .children
        .iter()
        .zip(&r.child_stats)
        .map(|(name, s)| {
            (
                format!("{EPHEMERAL_DIR}/{name}"),
                Found {
                    czxid: s.czxid,
                    owner: s.ephemeral_owner,
                },
            )
        })
        .collect();
    Some(
        paths
            .iter()
            .map(|path| ZnodeRead {
                client,
                member,
                path: path.clone(),
                invoke,
                complete,
                zxid: r.zxid,
                found: present.get(path).copied(),
            })
            .collect(),
    )
}

/// How many ephemerals are left (any member's answer).
pub async fn count_left(endpoint: &str) -> Option<usize> {
    let mut c = ZnodesClient::new(channel(endpoint).await?);
    let list = c.get_children(GetChildrenRequest {
        path: EPHEMERAL_DIR.into(),
        with_stats: false,
    });
    let r = tokio::time::timeout(OP_TIMEOUT, list).await.ok()?.ok()?;
    Some(r.into_inner().children.len())
}
