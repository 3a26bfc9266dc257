//! The peer client: how this member reaches the others for Raft traffic, forwarded proposals
//! and read indexes. One lazily connected gRPC channel per peer, shared by all uses.
//!
//! [`Faults`] is a switch the test harness flips to cut this member off from chosen peers:
//! every outgoing peer call to a blocked member fails as unreachable, exactly as a network
//! partition looks from here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::membership::{MembershipRequest, MembershipResult};
use super::types::{Member, NodeId, Proposal, ProposalResult, TypeConfig};
use crate::pb::corral::peer::v1::peer_client::PeerClient;
use crate::pb::corral::peer::v1::{
    LeaseAnswer, LeaseQuery, RaftMessage, ReadIndexRequest, ReadIndexResponse,
};

/// Peers this member currently cannot reach (test fault injection).
#[derive(Clone, Default)]
pub struct Faults {
    blocked: Arc<RwLock<HashSet<NodeId>>>,
}

impl Faults {
    pub fn block(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    pub fn unblock(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&peer);
    }

    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Could not reach the peer at all: the request was certainly not delivered.
    #[error("peer {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The call failed after it may have been delivered: its effect is unknown.
    #[error("peer {0} call failed: {1}")]
    Failed(NodeId, String),
    /// The payload did not encode or decode.
    #[error("peer message codec: {0}")]
    Codec(String),
}

/// Channels to every peer, by member id.
#[derive(Clone)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    faults: Faults,
    /// Member name → URL to dial instead of its advertised peer URL (`--peer-dial-map`): the
    /// fault tests put a proxy they can cut on every link.
    dial_map: Arc<BTreeMap<String, String>>,
}

pub fn encode<T: Serialize>(v: &T) -> Result<RaftMessage, PeerError> {
    bincode::serialize(v)
        .map(|data| RaftMessage { data })
        .map_err(|e| PeerError::Codec(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, PeerError> {
    bincode::deserialize(&m.data).map_err(|e| PeerError::Codec(e.to_string()))
}

fn classify(peer: NodeId, status: tonic::Status) -> PeerError {
    // tonic reports a refused or failed connection as Unavailable before anything was sent.
    if status.code() == tonic::Code::Unavailable {
        PeerError::Unreachable(peer, status.message().to_string())
    } else {
        PeerError::Failed(peer, status.to_string())
    }
}

impl PeerClients {
    pub fn new(faults: Faults, dial_map: BTreeMap<String, String>) -> Self {
        PeerClients {
            channels: Arc::default(),
            faults,
            dial_map: Arc::new(dial_map),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn client(&self, peer: NodeId, member: &Member) -> Result<PeerClient<Channel>, PeerError> {
        if self.faults.is_blocked(peer) {
            return Err(PeerError::Unreachable(
                peer,
                "blocked by fault injection".into(),
            ));
        }
        let url = self
            .dial_map
            .get(&member.name)
            .or_else(|| member.peer_urls.first())
            .ok_or_else(|| PeerError::Unreachable(peer, "member has no peer URL".into()))?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, ch)) = channels.get(&peer) {
            if known == url {
                return Ok(PeerClient::new(ch.clone()).max_decoding_message_size(usize::MAX));
            }
        }
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| PeerError::Unreachable(peer, format!("bad peer URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(peer, (url.clone(), channel.clone()));
        Ok(PeerClient::new(channel).max_decoding_message_size(usize::MAX))
    }

    /// Forwards a batch of commands to the leader.
    pub async fn propose(
        &self,
        peer: NodeId,
        member: &Member,
        proposal: &Proposal,
        timeout: Duration,
    ) -> Result<Result<ProposalResult, ForwardRefusal>, PeerError> {
        let mut client = self.client(peer, member)?;
        let mut req = tonic::Request::new(encode(proposal)?);
        req.set_timeout(timeout);
        let resp = client.propose(req).await.map_err(|s| classify(peer, s))?;
        decode(resp.get_ref())
    }

    /// Asks the leader for a read index.
    pub async fn read_index(
        &self,
        peer: NodeId,
        member: &Member,
        timeout: Duration,
    ) -> Result<ReadIndexResponse, PeerError> {
        let mut client = self.client(peer, member)?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(timeout);
        let resp = client
            .read_index(req)
            .await
            .map_err(|s| classify(peer, s))?;
        Ok(resp.into_inner())
    }
}

impl PeerClients {
    /// Sends a membership request to a member.
    pub async fn membership(
        &self,
        peer: NodeId,
        member: &Member,
        request: &MembershipRequest,
        timeout: Duration,
    ) -> Result<MembershipResult, PeerError> {
        let client = self.client(peer, member)?;
        membership_call(client, peer, request, timeout).await
    }

    /// Sends a membership request to a peer URL, before this member knows anyone's id (a
    /// joining member asking who is in the cluster). A one-off connection.
    pub async fn membership_at(
        &self,
        url: &str,
        request: &MembershipRequest,
        timeout: Duration,
    ) -> Result<MembershipResult, PeerError> {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| PeerError::Unreachable(0, format!("bad peer URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| PeerError::Unreachable(0, format!("{url}: {e}")))?;
        let client = PeerClient::new(channel).max_decoding_message_size(usize::MAX);
        membership_call(client, 0, request, timeout).await
    }
}

async fn membership_call(
    mut client: PeerClient<Channel>,
    peer: NodeId,
    request: &MembershipRequest,
    timeout: Duration,
) -> Result<MembershipResult, PeerError> {
    let mut req = tonic::Request::new(encode(request)?);
    req.set_timeout(timeout);
    let resp = client
        .membership(req)
        .await
        .map_err(|s| classify(peer, s))?;
    decode(resp.get_ref())
}

/// Which lease question to ask the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAsk {
    KeepAlive,
    TimeToLive,
}

impl PeerClients {
    /// Asks the leader's lease clock.
    pub async fn lease(
        &self,
        peer: NodeId,
        member: &Member,
        ask: LeaseAsk,
        id: i64,
        timeout: Duration,
    ) -> Result<LeaseAnswer, PeerError> {
        let mut client = self.client(peer, member)?;
        let mut req = tonic::Request::new(LeaseQuery { id });
        req.set_timeout(timeout);
        let resp = match ask {
            LeaseAsk::KeepAlive => client.lease_keep_alive(req).await,
            LeaseAsk::TimeToLive => client.lease_time_to_live(req).await,
        };
        Ok(resp.map_err(|s| classify(peer, s))?.into_inner())
    }
}

/// Why a leader did not take a forwarded proposal; the proposal was not appended, so the
/// follower may safely retry elsewhere.
#[derive(Debug, Clone, Serialize, serde::Deserialize, thiserror::Error)]
pub enum ForwardRefusal {
    #[error("not the leader (leader hint {0:?})")]
    NotLeader(Option<NodeId>),
    #[error("leader is shutting down")]
    Stopped,
}

/// openraft's network factory: one [`PeerNetwork`] per replication target.
#[derive(Clone)]
pub struct Network {
    pub clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerNetwork {
        PeerNetwork {
            target,
            member: node.clone(),
            clients: self.clients.clone(),
        }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    member: Member,
    clients: PeerClients,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        req: &Req,
        option: &RPCOption,
        rpc: impl AsyncFnOnce(
            PeerClient<Channel>,
            tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let to_rpc_err = |e: PeerError| -> RpcErr<E> {
            match e {
                PeerError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        };
        let client = self
            .clients
            .client(self.target, &self.member)
            .map_err(to_rpc_err)?;
        let mut request = tonic::Request::new(encode(req).map_err(to_rpc_err)?);
        request.set_timeout(option.hard_ttl());
        let resp = rpc(client, request)
            .await
            .map_err(|s| to_rpc_err(classify(self.target, s)))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(resp.get_ref()).map_err(to_rpc_err)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(&rpc, &option, async |mut c, r| c.append_entries(r).await)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(&rpc, &option, async |mut c, r| c.install_snapshot(r).await)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(&rpc, &option, async |mut c, r| c.vote(r).await)
            .await
    }
}
