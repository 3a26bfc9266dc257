//! The one place that wires storage, Raft, services and listeners into a running member.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::api::barrier::BarrierService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::session::{SessionBounds, SessionService};
use crate::api::watch::WatchService;
use crate::api::znode::ZnodeService;
use crate::api::{ApiContext, Ctx};
use crate::command::Command;
use crate::config::{member_id_for, Config};
use crate::lease::clock::LeaseClock;
use crate::metrics::GrpcMetricsLayer;
use crate::pb::corral::peer::v1::peer_server::PeerServer;
use crate::pb::corral::v1::barrier_server::BarrierServer;
use crate::pb::corral::v1::sessions_server::SessionsServer;
use crate::pb::corral::v1::znodes_server::ZnodesServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::raft::handle::RaftHandle;
use crate::raft::membership::{Identity, Membership, MembershipRefusal, MembershipRequest};
use crate::raft::network::{Faults, Network, PeerClients};
use crate::raft::service::PeerService;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Member, NodeId, Raft};
use crate::raft::{lease_expiry, znode_reaper};
use crate::storage::log_store::LogStore;
use crate::storage::state::{member_attr_name, StateStore};
use crate::watch::WatchHub;

/// gRPC messages may exceed etcd's 1.5 MiB request cap by this much before the transport
/// refuses them outright; in between, the API answers etcd's "request is too large".
const GRPC_MAX_MESSAGE: usize = 2 * 1024 * 1024;

/// Sockets a member serves on, bound before it starts so callers (and tests, with port 0)
/// know the addresses up front.
pub struct Listeners {
    pub client: Vec<TcpListener>,
    pub peer: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let mut client = Vec::new();
        for addr in &cfg.listen_client {
            client.push(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding client address {addr}"))?,
            );
        }
        let peer = TcpListener::bind(cfg.listen_peer)
            .await
            .with_context(|| format!("binding peer address {}", cfg.listen_peer))?;
        let metrics = match cfg.listen_metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics address {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners {
            client,
            peer,
            metrics,
        })
    }
}

/// A running member.
pub struct Node {
    pub handle: RaftHandle,
    pub faults: Faults,
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// How long a stopping member lets its servers drain before it cuts their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Runs a member until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = Node::start(cfg, listeners).await?;
    shutdown.await;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

/// Reset streams a peer connection may have pending before h2 sends GOAWAY.
const PEER_MAX_PENDING_RESETS: usize = 4096;

fn request_timeout(cfg: &Config) -> Duration {
    // etcd: 5 s plus two election timeouts covers a leader change during the request.
    Duration::from_secs(5) + Duration::from_millis(2 * cfg.election_timeout_ms)
}

impl Node {
    pub async fn start(mut cfg: Config, listeners: Listeners) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let log_store = LogStore::open(&cfg.data_dir.join("raft-log"))
            .with_context(|| "opening the raft log")?;
        let store = Arc::new(
            StateStore::open(&cfg.data_dir.join("state")).with_context(|| "opening the state")?,
        );
        let hub = WatchHub::new(cfg.watch_buffer);
        let leases = Arc::new(LeaseClock::default());
        let sm = StateMachine::open(
            store.clone(),
            &cfg.data_dir.join("snapshot.bin"),
            hub.clone(),
            leases.clone(),
        )
        .map_err(|e| anyhow::anyhow!("opening the state machine: {e}"))?;

        let faults = Faults::default();
        let clients = PeerClients::new(faults.clone(), cfg.peer_dial_map.clone());
        let identity = resolve_identity(&cfg, &clients).await?;
        cfg.member_id = identity.member_id;
        cfg.cluster_id = identity.cluster_id;
        let network = Network {
            clients: clients.clone(),
        };
        let raft_config = Arc::new(cfg.raft_config()?);
        // Read before Raft takes the log store: see `RaftHandle`'s `startup`.
        let mut log_store = log_store;
        let wal_fsync = log_store.sync_durations();
        let startup = {
            use openraft::storage::RaftLogStorage;
            let state = log_store
                .get_log_state()
                .await
                .map_err(|e| anyhow::anyhow!("reading the raft log: {e}"))?;
            let vote = log_store
                .read_vote()
                .await
                .map_err(|e| anyhow::anyhow!("reading the vote: {e}"))?;
            (
                vote.map_or(0, |v| v.leader_id().term),
                state.last_log_id.map_or(0, |l| l.index),
            )
        };
        let raft = Raft::new(cfg.member_id, raft_config, network, log_store, sm)
            .await
            .map_err(|e| anyhow::anyhow!("starting raft: {e}"))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut servers = Vec::new();
        let timeout = request_timeout(&cfg);

        let handle = RaftHandle::new(
            startup,
            cfg.member_id,
            raft.clone(),
            clients,
            store,
            leases.clone(),
            timeout,
            Duration::from_millis(cfg.election_timeout_ms),
            wal_fsync,
        );

        let membership = Membership::new(
            handle.clone(),
            cfg.cluster_token.clone(),
            cfg.cluster_id,
            Duration::from_millis(cfg.election_timeout_ms),
            timeout,
        );

        // Peers first: the others' votes and appends must reach us as soon as we exist.
        let peer_addr = listeners.peer.local_addr()?;
        let peer_router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // openraft gives up on (resets) every append or heartbeat that takes longer than
            // its timeout, so a paused or overloaded member sees bursts of reset streams; h2's
            // rapid-reset guard (20 by default) then tears the whole peer connection down with
            // GOAWAY "too_many_resets". Peers are members, not untrusted clients.
            .http2_max_pending_accept_reset_streams(Some(PEER_MAX_PENDING_RESETS))
            .add_service(
                PeerServer::new(PeerService::new(
                    handle.clone(),
                    membership.clone(),
                    timeout,
                ))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            );
        servers.push(tokio::spawn(serve_grpc(
            "peer",
            peer_router,
            listeners.peer,
            shutdown_rx.clone(),
        )));

        if cfg.joins() {
            // Not ready for clients until it has caught up with the cluster (see `join`): a
            // sidecar application must not read an empty store.
            handle
                .standing()
                .set_not_ready("joining the cluster: not caught up yet");
            tokio::spawn(join(
                handle.clone(),
                membership.clone(),
                cfg.clone(),
                shutdown_rx.clone(),
            ));
        } else {
            bootstrap(&raft, &cfg).await?;
        }

        let ctx: Ctx = Arc::new(ApiContext {
            handle: handle.clone(),
            cluster_id: cfg.cluster_id,
            member_id: cfg.member_id,
            membership,
        });

        let mut client_addrs = Vec::new();
        for listener in listeners.client {
            client_addrs.push(listener.local_addr()?);
            let router = client_router(&ctx, &hub, &cfg).await?;
            servers.push(tokio::spawn(serve_grpc(
                "client",
                router,
                listener,
                shutdown_rx.clone(),
            )));
        }

        let metrics_addr = match listeners.metrics {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let app = crate::ops::router(handle.clone());
                let mut rx = shutdown_rx.clone();
                servers.push(tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                    {
                        tracing::error!(%e, "metrics server failed");
                    }
                }));
                Some(addr)
            }
            None => None,
        };

        tokio::spawn(lease_expiry::run(
            handle.clone(),
            leases,
            Duration::from_millis((cfg.election_timeout_ms / 2).clamp(50, 500)),
            shutdown_rx.clone(),
        ));
        tokio::spawn(znode_reaper::run(
            handle.clone(),
            Duration::from_millis(500),
            shutdown_rx.clone(),
        ));
        crate::raft::quota::start(handle.clone(), cfg.quota_backend_bytes, shutdown_rx.clone());
        tokio::spawn(crate::raft::restored::run(
            handle.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(publish_self(
            handle.clone(),
            cfg.advertise_client_urls.clone(),
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::raft::membership::watch_removal(
            handle.clone(),
            Duration::from_millis(cfg.election_timeout_ms),
            shutdown_rx.clone(),
        ));

        tracing::info!(
            name = %cfg.name,
            member_id = format!("{:x}", cfg.member_id),
            cluster_id = format!("{:x}", cfg.cluster_id),
            ?client_addrs,
            %peer_addr,
            "member started"
        );
        Ok(Node {
            handle,
            faults,
            client_addrs,
            peer_addr,
            metrics_addr,
            shutdown,
            servers,
        })
    }

    pub fn id(&self) -> NodeId {
        self.handle.id()
    }

    /// Stops serving, shuts Raft down and makes the state durable.
    pub async fn stop(self) {
        let started = std::time::Instant::now();
        let _ = self.shutdown.send(true);
        // Raft first: in-flight client calls then fail fast instead of holding the servers'
        // graceful shutdown open.
        if let Err(e) = self.handle.raft().shutdown().await {
            tracing::warn!(%e, "raft shutdown");
        }
        tracing::debug!(elapsed = ?started.elapsed(), "raft stopped");
        // One grace period for all servers: unary calls in flight finish within it (Raft is
        // down, so they fail fast), while long-lived streams (watches, keep-alives, elections)
        // never end by themselves. Cutting those promptly is what sends their clients to
        // another member quickly; nothing a server holds (the store among it) outlives it.
        let drained = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut server in self.servers {
            if tokio::time::timeout_at(drained, &mut server).await.is_err() {
                server.abort();
            }
        }
        let drained_in = started.elapsed();
        if let Err(e) = self.handle.store().flush().await {
            tracing::error!(%e, "flushing the state machine at shutdown");
        }
        tracing::info!(
            drained_ms = drained_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "stopped"
        );
    }
}

/// This member's id and its cluster's: kept in the data dir once known. A founding member
/// derives both from its flags; a joining member asks the running cluster, which knows it by
/// its peer URLs if `member add` added it; an automatic learner that is not known yet keeps
/// the id its flags derive and asks to be added (see [`join`]).
async fn resolve_identity(cfg: &Config, clients: &PeerClients) -> anyhow::Result<Identity> {
    if let Some(identity) = Identity::load(&cfg.data_dir).context("reading member.json")? {
        return Ok(identity);
    }
    let identity = if cfg.joins() {
        ask_cluster_identity(cfg, clients).await?
    } else {
        Identity {
            member_id: cfg.member_id,
            cluster_id: cfg.cluster_id,
        }
    };
    identity
        .save(&cfg.data_dir)
        .context("writing member.json")?;
    Ok(identity)
}

/// The peer URLs in `--initial-cluster` other than this member's own: whom a joining member
/// asks.
fn others_peer_urls(cfg: &Config) -> Vec<String> {
    cfg.initial_cluster
        .iter()
        .flat_map(|m| m.peer_urls.iter())
        .filter(|u| !cfg.advertise_peer_urls.contains(u))
        .cloned()
        .collect()
}

/// How long a joining member keeps asking before it gives up (the cluster may be starting
/// at the same time, as pods of a StatefulSet do).
const JOIN_PATIENCE: Duration = Duration::from_secs(300);

async fn ask_cluster_identity(cfg: &Config, clients: &PeerClients) -> anyhow::Result<Identity> {
    let mut mine = cfg.advertise_peer_urls.clone();
    mine.sort();
    let urls = others_peer_urls(cfg);
    if urls.is_empty() {
        anyhow::bail!(
            "joining an existing cluster needs the peer URLs of its members in --initial-cluster"
        );
    }
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut last_error = String::new();
    loop {
        for url in &urls {
            match clients
                .membership_at(url, &MembershipRequest::Describe, Duration::from_secs(2))
                .await
            {
                Ok(Ok(reply)) => {
                    let known = reply.members.iter().find(|(_, m, _)| {
                        let mut theirs = m.peer_urls.clone();
                        theirs.sort();
                        theirs == mine
                    });
                    let member_id = match known {
                        Some((id, _, _)) => *id,
                        None if cfg.auto_learner => cfg.member_id,
                        None => anyhow::bail!(
                            "member {} (peer URLs {}) is not in the cluster at {url}; add it \
                             first with `corral member add --peer-urls ...`",
                            cfg.name,
                            mine.join(",")
                        ),
                    };
                    tracing::info!(
                        member_id = format!("{member_id:x}"),
                        cluster_id = format!("{:x}", reply.cluster_id),
                        "joining a running cluster"
                    );
                    return Ok(Identity {
                        member_id,
                        cluster_id: reply.cluster_id,
                    });
                }
                Ok(Err(refusal)) => last_error = format!("{url}: {:?}", refusal),
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no member of the cluster answered: {last_error}");
        }
        tracing::info!(%last_error, "waiting for the cluster to answer");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Pause between join requests while the cluster is not answering or has no leader.
const JOIN_RETRY: Duration = Duration::from_millis(500);
/// Pause after the cluster refused: it keeps refusing until an operator changes something.
const JOIN_REFUSED_RETRY: Duration = Duration::from_secs(5);

/// A joining member asks the leader (through any member) to add it as a learner if it is not a
/// member yet, and to record its name and client URLs; joined once the membership shows its
/// name. Then it catches up and reports ready (see [`catch_up`]). A refusal (another cluster's
/// token, an id another member's name holds, peer URLs taken) is logged once per reason and
/// reported by `/readyz`; the member keeps asking, more slowly, in case the cluster changes.
async fn join(
    handle: RaftHandle,
    membership: Membership,
    cfg: Config,
    mut stop: watch::Receiver<bool>,
) {
    let me = Member {
        name: cfg.name.clone(),
        peer_urls: cfg.advertise_peer_urls.clone(),
        client_urls: cfg.advertise_client_urls.clone(),
    };
    let urls = others_peer_urls(&cfg);
    let request = MembershipRequest::Join {
        id: handle.id(),
        member: me.clone(),
        cluster_token: cfg.cluster_token.clone(),
    };
    let mut next = 0;
    let mut refused: Option<String> = None;
    loop {
        let known = handle
            .members()
            .into_iter()
            .any(|(id, m, _)| id == handle.id() && m.name == me.name);
        if known {
            if refused.is_some() {
                tracing::info!("the cluster accepted this member after refusing it");
            }
            break;
        }
        // Once this member has a leader it goes through it; before, through whichever peer
        // from the flags answers (it forwards to its leader).
        let result = if handle.leader().is_some() {
            membership.execute(request.clone()).await
        } else if let Some(url) = urls.get(next % urls.len().max(1)) {
            next += 1;
            match handle
                .peer_clients()
                .membership_at(url, &request, Duration::from_secs(5))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%e, "asking to join");
                    Err(MembershipRefusal::NotLeader(None))
                }
            }
        } else {
            return;
        };
        let pause = match result {
            Ok(_) => JOIN_RETRY,
            Err(MembershipRefusal::NotLeader(_)) => {
                tracing::info!("asking to join the cluster: no leader answered yet; will retry");
                JOIN_RETRY
            }
            Err(MembershipRefusal::Status { message, .. }) => {
                if refused.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        reason = %message,
                        "the cluster refused to let this member join; it is not ready and \
                         asks again every {JOIN_REFUSED_RETRY:?}"
                    );
                }
                handle
                    .standing()
                    .set_not_ready(format!("join refused: {message}"));
                refused = Some(message);
                JOIN_REFUSED_RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    handle
        .standing()
        .set_not_ready("joined the cluster: not caught up yet");
    catch_up(&handle, &mut stop).await;
}

/// Waits until this member has applied everything the cluster had committed when it asked (a
/// read barrier: the leader's commit index, then the local apply reaching it), then marks it
/// ready. Retried until it succeeds: a catch-up from a large snapshot may outlast one barrier.
async fn catch_up(handle: &RaftHandle, stop: &mut watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = handle.read_barrier() => match r {
                Ok(()) => {
                    handle.standing().set_ready();
                    tracing::info!(
                        applied = handle.raft().metrics().borrow().last_applied.map_or(0, |l| l.index),
                        "caught up with the cluster: ready"
                    );
                    return;
                }
                Err(e) => tracing::info!(%e, "catching up with the cluster; will retry"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(JOIN_RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Forms a new cluster from `--initial-cluster`. Every founding member does this with the same
/// member set, which openraft accepts from each; a member that already has state skips it.
async fn bootstrap(raft: &Raft, cfg: &Config) -> anyhow::Result<()> {
    if raft.is_initialized().await? {
        return Ok(());
    }
    let members: BTreeMap<NodeId, Member> = cfg
        .initial_cluster
        .iter()
        .map(|m| {
            let id = member_id_for(&cfg.cluster_token, &m.name, &m.peer_urls);
            let client_urls = if id == cfg.member_id {
                cfg.advertise_client_urls.clone()
            } else {
                Vec::new()
            };
            (
                id,
                Member {
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls,
                },
            )
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another founding member got there first and already replicated to us.
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("initializing the cluster: {e}")),
    }
}

/// Publishes this member's client URLs through Raft once a leader exists, so every member's
/// `MemberList` shows them (the founding membership only knows peer URLs).
async fn publish_self(
    handle: RaftHandle,
    client_urls: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let published: Option<Vec<String>> = handle
            .store()
            .read_meta(&member_attr_name(handle.id()))
            .ok()
            .flatten()
            .and_then(|b| bincode::deserialize(&b).ok());
        if published.as_ref() == Some(&client_urls) {
            return;
        }
        let cmd = Command::PublishMember {
            id: handle.id(),
            client_urls: client_urls.clone(),
        };
        tokio::select! {
            r = handle.propose(cmd) => match r {
                Ok(_) => return,
                Err(e) => tracing::debug!(%e, "publishing member attributes; will retry"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Every client-facing service on one router: etcd's API, health and reflection.
async fn client_router(ctx: &Ctx, hub: &WatchHub, cfg: &Config) -> anyhow::Result<ClientRouter> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let exposed = [
        "etcdserverpb.KV",
        "etcdserverpb.Cluster",
        "etcdserverpb.Maintenance",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "corral.v1.Znodes",
        "corral.v1.Sessions",
        "corral.v1.Barrier",
        "v3lockpb.Lock",
        "v3electionpb.Election",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let descriptor_sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut reflection = tonic_reflection::server::Builder::configure();
    let mut reflection_alpha = tonic_reflection::server::Builder::configure();
    for set in descriptor_sets {
        reflection = reflection.register_encoded_file_descriptor_set(set);
        reflection_alpha = reflection_alpha.register_encoded_file_descriptor_set(set);
    }
    // Only what this port serves: the peer service is in the same descriptor set but must
    // never look like part of the client API.
    for name in exposed {
        reflection = reflection.with_service_name(name);
        reflection_alpha = reflection_alpha.with_service_name(name);
    }
    let reflection_v1 = reflection.build_v1()?;
    let reflection_v1alpha = reflection_alpha.build_v1alpha()?;
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(GrpcMetricsLayer::new(ctx.handle.metrics().clone()))
        .add_service(
            KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(GRPC_MAX_MESSAGE),
        )
        .add_service(
            WatchServer::new(WatchService::new(
                ctx.clone(),
                hub.clone(),
                cfg.watch_progress_notify_interval,
            ))
            .max_decoding_message_size(GRPC_MAX_MESSAGE),
        )
        .add_service(LeaseServer::new(LeaseService::new(
            ctx.clone(),
            cfg.election_timeout_ms,
        )))
        .add_service(
            ZnodesServer::new(ZnodeService::new(ctx.clone(), hub.clone()))
                .max_decoding_message_size(GRPC_MAX_MESSAGE),
        )
        .add_service(SessionsServer::new(SessionService::new(
            ctx.clone(),
            SessionBounds {
                min_ms: i64::try_from(cfg.min_session_timeout_ms).unwrap_or(i64::MAX),
                max_ms: i64::try_from(cfg.max_session_timeout_ms).unwrap_or(i64::MAX),
            },
            cfg.election_timeout_ms,
        )))
        .add_service(LockServer::new(LockService::new(ctx.clone(), hub.clone())))
        .add_service(ElectionServer::new(ElectionService::new(
            ctx.clone(),
            hub.clone(),
        )))
        .add_service(BarrierServer::new(BarrierService::new(
            ctx.clone(),
            hub.clone(),
        )))
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(MaintenanceServer::new(MaintenanceService::new(ctx.clone())))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(router)
}

/// The client port's router: every call timed and counted per method (see
/// [`GrpcMetricsLayer`]).
type ClientRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<GrpcMetricsLayer, tower::layer::util::Identity>,
>;

async fn serve_grpc<L>(
    what: &'static str,
    router: tonic::transport::server::Router<L>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) where
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<tonic::codegen::StdError> + Send,
{
    // tonic's `tcp_nodelay` only applies to listeners it binds itself; ours are bound by the
    // caller, so each accepted socket gets it here. Without it Nagle holds back the small
    // frames of a response until the client's delayed ACK (~40 ms per request).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
        tracing::error!(%e, server = what, "gRPC server failed");
    }
}
