//! Membership changes (etcd's MemberAdd / Promote / Remove / Update), members joining a
//! running cluster, and leader transfer (MoveLeader).
//!
//! Every change runs on the leader through openraft's joint consensus; a member that gets a
//! request while not leading forwards it over the peer `Membership` RPC. Requests and replies
//! travel bincode-encoded, like the Raft messages.
//!
//! Member ids: founding members derive theirs from name and peer URLs (see
//! [`crate::config::member_id_for`]); a member added by `MemberAdd` gets one from its peer
//! URLs and the time of the add, and learns it when it starts by asking the cluster which
//! member has its peer URLs (as etcd does with `--initial-cluster-state existing`).
//!
//! A removed member is never told by openraft (the leader stops replicating to it as soon as
//! the configuration without it is appended); [`watch_removal`] finds out, and [`Standing`]
//! records it, as well as a joining member not ready yet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::handle::RaftHandle;
use super::types::{LogId, Member, NodeId};
use crate::config::{canonical_advertise_url, member_id_for};

/// A membership question or change, sent to the leader (or, for `Describe` and `TimeoutNow`,
/// to any member).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipRequest {
    /// The members as this member sees them; answered locally. Joining members ask it.
    Describe,
    /// etcd's MemberAdd: a new member, voter or learner, known so far by its peer URLs.
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    /// A starting member announces itself: added as a learner if it is not a member yet
    /// (`--auto-learner`), and its name and client URLs recorded if the membership lacks them
    /// (a member added by `MemberAdd` is known only by its peer URLs until it starts).
    /// `cluster_token` is the joiner's `--initial-cluster-token`: a member configured for
    /// another cluster is refused.
    Join {
        id: NodeId,
        member: Member,
        cluster_token: String,
    },
    /// etcd's MemberPromote: learner → voter, once it has caught up.
    Promote { id: NodeId },
    /// etcd's MemberRemove.
    Remove { id: NodeId },
    /// etcd's MemberUpdate: new peer URLs for a member.
    Update { id: NodeId, peer_urls: Vec<String> },
    /// etcd's MoveLeader: hand leadership to `target`.
    MoveLeader { target: NodeId },
    /// To a leader-transfer target: campaign now, the leader has stopped its heartbeats.
    TimeoutNow,
    /// To the other voters during a leader transfer: start no election of your own for
    /// `millis` (0: resume now). Without it they time out too once the heartbeats stop, and
    /// one of them may win before the target does.
    HoldElections { millis: u64 },
    /// From a member that hears from no leader, to any member, answered locally: was member
    /// `id`, last seen in the configuration at `seen_in`, removed by a configuration committed
    /// since? Refused with [`MEMBER_REMOVED`] if so.
    CheckRemoved { id: NodeId, seen_in: LogId },
}

/// What a successful request returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipReply {
    pub cluster_id: u64,
    pub leader: Option<NodeId>,
    /// (id, identity, is_learner) after the change.
    pub members: Vec<(NodeId, Member, bool)>,
    /// The id `Add` gave the new member.
    pub added: Option<NodeId>,
}

/// Why a request was refused: a gRPC code and etcd's message, or "ask the leader".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipRefusal {
    NotLeader(Option<NodeId>),
    Status { code: i32, message: String },
}

impl MembershipRefusal {
    fn status(code: Code, message: impl Into<String>) -> Self {
        MembershipRefusal::Status {
            code: code as i32,
            message: message.into(),
        }
    }

    pub fn into_status(self) -> tonic::Status {
        match self {
            MembershipRefusal::NotLeader(_) => tonic::Status::unavailable("etcdserver: no leader"),
            MembershipRefusal::Status { code, message } => {
                tonic::Status::new(Code::from_i32(code), message)
            }
        }
    }
}

pub type MembershipResult = Result<MembershipReply, MembershipRefusal>;

// etcd's texts (clients and operators match on them).
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
/// etcd's answer to a MemberAdd with no peer URL or one that does not parse.
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
/// etcd's answer when a removal would leave fewer started voters than a quorum; removing the
/// last voter is the case that reaches corral.
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";
pub const TRANSFER_TIMEOUT: &str = "etcdserver: request timed out, leader transfer took too long";
/// What a removed member answers, as etcd's removed member logs before it stops.
pub const MEMBER_REMOVED: &str =
    "etcdserver: the member has been permanently removed from the cluster";

/// Where this member stands beyond knowing a leader; `/readyz` and `/health` report it.
#[derive(Default)]
pub struct Standing {
    /// Removed from the cluster: requests that need the cluster fail with [`MEMBER_REMOVED`].
    /// For good, as in etcd, whose removed member stops.
    removed: AtomicBool,
    /// Why this member is not ready for clients yet (a joining member still catching up, or
    /// refused by the cluster); `None` once ready.
    not_ready: Mutex<Option<String>>,
}

impl Standing {
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Marks this member removed; true the first time, so the caller logs it once.
    pub fn set_removed(&self) -> bool {
        !self.removed.swap(true, Ordering::AcqRel)
    }

    pub fn not_ready(&self) -> Option<String> {
        self.not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    pub fn set_ready(&self) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A learner is "in sync" (promotable) when it has replicated this share of the leader's log,
/// etcd's rule.
const LEARNER_READY_PERCENT: f64 = 0.9;

/// Membership operations of one member.
#[derive(Clone)]
pub struct Membership {
    handle: RaftHandle,
    cluster_token: String,
    cluster_id: u64,
    election_timeout: Duration,
    request_timeout: Duration,
    /// Until when another member's leader transfer holds this member's elections.
    election_hold: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl Membership {
    pub fn new(
        handle: RaftHandle,
        cluster_token: String,
        cluster_id: u64,
        election_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Membership {
            handle,
            cluster_token,
            cluster_id,
            election_timeout,
            request_timeout,
            election_hold: Arc::default(),
        }
    }

    /// Holds this member's own elections for `hold` (a zero `hold` resumes them at once).
    /// Overlapping holds end with the last one; a transfer whose leader dies mid-way holds them
    /// no longer than it asked.
    fn hold_elections(&self, hold: Duration) {
        let raft = self.handle.raft().clone();
        let until = tokio::time::Instant::now() + hold;
        {
            let mut held = self.election_hold.lock().unwrap_or_else(|p| p.into_inner());
            if hold.is_zero() {
                *held = None;
                raft.runtime_config().elect(true);
                return;
            }
            *held = Some(held.map_or(until, |u| u.max(until)));
            raft.runtime_config().elect(false);
        }
        let election_hold = self.election_hold.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            let mut held = election_hold.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_some_and(|u| u <= tokio::time::Instant::now()) {
                *held = None;
                raft.runtime_config().elect(true);
            }
        });
    }

    /// Asks `voters` to hold their elections for `hold` (zero: resume), each at most one
    /// election timeout; a voter that does not answer is left alone.
    async fn hold_voters(&self, voters: &[(NodeId, Member)], hold: Duration) {
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let asks = voters.iter().map(|(id, member)| async move {
            let ask = MembershipRequest::HoldElections { millis };
            let clients = self.handle.peer_clients();
            if let Err(e) = clients
                .membership(*id, member, &ask, self.election_timeout)
                .await
            {
                tracing::debug!(%e, voter = format!("{id:x}"), "holding a voter's elections");
            }
        });
        futures::future::join_all(asks).await;
    }

    fn reply(&self, added: Option<NodeId>) -> MembershipReply {
        MembershipReply {
            cluster_id: self.cluster_id,
            leader: self.handle.leader(),
            members: self.handle.members(),
            added,
        }
    }

    /// Runs `req` where it belongs: on the leader (forwarding to it from any other member,
    /// following leader changes until the request timeout), or here for `Describe`.
    pub async fn execute(&self, req: MembershipRequest) -> MembershipResult {
        if matches!(req, MembershipRequest::Describe) {
            return Ok(self.reply(None));
        }
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let outcome = match self.handle.leader() {
                Some(leader) if leader == self.handle.id() => self.as_leader(req.clone()).await,
                Some(leader) => self.forward(leader, &req).await,
                None => Err(MembershipRefusal::NotLeader(None)),
            };
            match outcome {
                Err(MembershipRefusal::NotLeader(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward(&self, leader: NodeId, req: &MembershipRequest) -> MembershipResult {
        let Some(member) = self
            .handle
            .members()
            .into_iter()
            .find(|(id, _, _)| *id == leader)
            .map(|(_, m, _)| m)
        else {
            return Err(MembershipRefusal::NotLeader(None));
        };
        match self
            .handle
            .peer_clients()
            .membership(leader, &member, req, self.request_timeout)
            .await
        {
            Ok(result) => result,
            Err(e) => {
                tracing::debug!(%e, "forwarding a membership request to the leader");
                Err(MembershipRefusal::NotLeader(None))
            }
        }
    }

    /// Answers a request that arrived over the peer RPC.
    pub async fn serve_peer(&self, req: MembershipRequest) -> MembershipResult {
        match req {
            MembershipRequest::Describe => Ok(self.reply(None)),
            MembershipRequest::TimeoutNow => {
                tokio::spawn(campaign(self.handle.clone(), self.election_timeout));
                Ok(self.reply(None))
            }
            MembershipRequest::HoldElections { millis } => {
                self.hold_elections(Duration::from_millis(millis));
                Ok(self.reply(None))
            }
            MembershipRequest::CheckRemoved { id, seen_in } => {
                self.check_removed(id, seen_in).await
            }
            // Forwarded on to the leader from here: a joining member does not know the leader
            // yet and asks whichever member its flags name.
            other => self.execute(other).await,
        }
    }

    async fn as_leader(&self, req: MembershipRequest) -> MembershipResult {
        match req {
            MembershipRequest::Describe
            | MembershipRequest::TimeoutNow
            | MembershipRequest::HoldElections { .. } => Ok(self.reply(None)),
            MembershipRequest::CheckRemoved { id, seen_in } => {
                self.check_removed(id, seen_in).await
            }
            MembershipRequest::Add { peer_urls, learner } => self.add(peer_urls, learner).await,
            MembershipRequest::Join {
                id,
                member,
                cluster_token,
            } => self.join(id, member, cluster_token).await,
            MembershipRequest::Promote { id } => self.promote(id).await,
            MembershipRequest::Remove { id } => self.remove(id).await,
            MembershipRequest::Update { id, peer_urls } => self.update(id, peer_urls).await,
            MembershipRequest::MoveLeader { target } => self.move_leader(target).await,
        }
    }

    fn find(&self, id: NodeId) -> Result<(Member, bool), MembershipRefusal> {
        self.handle
            .members()
            .into_iter()
            .find(|(m, _, _)| *m == id)
            .map(|(_, member, learner)| (member, learner))
            .ok_or_else(|| MembershipRefusal::status(Code::NotFound, MEMBER_NOT_FOUND))
    }

    /// Normalizes URLs and refuses ones another member (other than `except`) already has.
    fn check_urls(
        &self,
        peer_urls: &[String],
        except: Option<NodeId>,
    ) -> Result<Vec<String>, MembershipRefusal> {
        if peer_urls.is_empty() {
            return Err(MembershipRefusal::status(Code::InvalidArgument, BAD_URLS));
        }
        let mut urls = Vec::with_capacity(peer_urls.len());
        for url in peer_urls {
            let canonical = canonical_advertise_url(url).map_err(|e| {
                // etcd's text, which clients match on, has no room for the detail.
                tracing::info!(%url, %e, "refusing a member's peer URL");
                MembershipRefusal::status(Code::InvalidArgument, BAD_URLS)
            })?;
            if !urls.contains(&canonical) {
                urls.push(canonical);
            }
        }
        let taken =
            self.handle.members().into_iter().any(|(id, m, _)| {
                Some(id) != except && m.peer_urls.iter().any(|u| urls.contains(u))
            });
        if taken {
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                PEER_URL_EXISTS,
            ));
        }
        Ok(urls)
    }

    async fn add(&self, peer_urls: Vec<String>, learner: bool) -> MembershipResult {
        let urls = self.check_urls(&peer_urls, None)?;
        // The add time keeps a member re-added at the same URLs from getting the id it had.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = member_id_for(&self.cluster_token, &format!("\0added@{nanos}"), &urls);
        let member = Member {
            name: String::new(),
            peer_urls: urls,
            client_urls: Vec::new(),
        };
        let change = if learner {
            ChangeMembers::AddNodes(BTreeMap::from([(id, member)]))
        } else {
            // A voter counts toward quorum from the moment the change commits, before it has
            // even started: exactly etcd's MemberAdd.
            ChangeMembers::AddVoters(BTreeMap::from([(id, member)]))
        };
        self.change(change).await?;
        Ok(self.reply(Some(id)))
    }

    async fn join(&self, id: NodeId, member: Member, cluster_token: String) -> MembershipResult {
        // Same names and URLs with another token make another cluster (the ids differ): a
        // member configured for that one must not slip into this one.
        if cluster_token != self.cluster_token {
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                format!(
                    "etcdserver: cluster ID mismatch: member {:?} was started with \
                     --initial-cluster-token {cluster_token:?}, this cluster's is {:?}",
                    member.name, self.cluster_token
                ),
            ));
        }
        let urls = self.check_urls(&member.peer_urls, Some(id))?;
        let member = Member {
            peer_urls: urls,
            ..member
        };
        match self.find(id) {
            Ok((known, _)) if !known.name.is_empty() && known.name != member.name => {
                // Two members cannot share an id; the joiner must not keep asking in silence
                // (it logs this and reports it on /readyz).
                Err(MembershipRefusal::status(
                    Code::FailedPrecondition,
                    format!(
                        "etcdserver: member {id:x} is already named {:?}; a member named {:?} \
                         cannot join as it (reused data directory or peer URLs?)",
                        known.name, member.name
                    ),
                ))
            }
            Err(_) => {
                tracing::info!(id = format!("{id:x}"), name = %member.name, "adding a learner that asked to join");
                self.change(ChangeMembers::AddNodes(BTreeMap::from([(id, member)])))
                    .await?;
                Ok(self.reply(None))
            }
            Ok((known, _)) if known.name.is_empty() && !member.name.is_empty() => {
                // Only the name and client URLs are filled in; the peer URLs, which the
                // others dial, stay what the add recorded.
                let named = Member {
                    name: member.name,
                    peer_urls: known.peer_urls,
                    client_urls: member.client_urls,
                };
                self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, named)])))
                    .await?;
                Ok(self.reply(None))
            }
            Ok(_) => Ok(self.reply(None)),
        }
    }

    /// Answers [`MembershipRequest::CheckRemoved`] from this member's committed configuration.
    /// Configurations follow one another in the log, so a committed one newer than one that
    /// named `id`, and without it, means `id` was removed since (an id named again later, as an
    /// automatic learner's can be, would be named in the newer one). Anything older or still
    /// uncommitted proves nothing: the answer is then no.
    async fn check_removed(&self, id: NodeId, seen_in: LogId) -> MembershipResult {
        let committed = self
            .handle
            .raft()
            .with_raft_state(move |st| {
                let c = st.membership_state.committed();
                (*c.log_id(), c.membership().get_node(&id).is_some())
            })
            .await;
        match committed {
            Ok((Some(at), false)) if at > seen_in => Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                MEMBER_REMOVED,
            )),
            Ok(_) => Ok(self.reply(None)),
            Err(e) => Err(MembershipRefusal::status(
                Code::Unavailable,
                format!("etcdserver: server stopped: {e}"),
            )),
        }
    }

    async fn promote(&self, id: NodeId) -> MembershipResult {
        let (_, learner) = self.find(id)?;
        if !learner {
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                NOT_A_LEARNER,
            ));
        }
        let metrics = self.handle.raft().metrics().borrow().clone();
        let leader_index = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        if (matched as f64) < (leader_index as f64) * LEARNER_READY_PERCENT {
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                LEARNER_NOT_READY,
            ));
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        Ok(self.reply(None))
    }

    async fn remove(&self, id: NodeId) -> MembershipResult {
        let (_, learner) = self.find(id)?;
        if learner {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                .await?;
            return Ok(self.reply(None));
        }
        let voters = self.handle.members().iter().filter(|(_, _, l)| !l).count();
        if voters <= 1 {
            // No voter would be left to form a quorum: etcd refuses this with its "not enough
            // started members" check.
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                NOT_ENOUGH_STARTED,
            ));
        }
        // `retain = false`: the removed voter leaves the membership altogether. A leader that
        // removes itself steps down once the new configuration commits.
        self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
            .await?;
        Ok(self.reply(None))
    }

    async fn update(&self, id: NodeId, peer_urls: Vec<String>) -> MembershipResult {
        let (known, _) = self.find(id)?;
        // etcd does not check these on update; a member left with no peer URL could never be
        // reached again, so the add's rule applies.
        let urls = self.check_urls(&peer_urls, Some(id))?;
        let updated = Member {
            peer_urls: urls,
            ..known
        };
        self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])))
            .await?;
        Ok(self.reply(None))
    }

    /// Commits one membership change, retrying while an earlier change is still in flight.
    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), MembershipRefusal> {
        let deadline = Instant::now() + self.request_timeout;
        if !super::restored::sealed(&self.handle, deadline.into()).await {
            return Err(MembershipRefusal::status(
                Code::Unavailable,
                "etcdserver: this member was restored from a backup and is still snapshotting it",
            ));
        }
        loop {
            // A membership change replicates like any entry: it waits for a leader transfer
            // under way here to end (see `RaftHandle`), and then fails over to the new leader.
            let attempt = async {
                let _turn = self.handle.membership_turn(deadline.into()).await?;
                Some(
                    self.handle
                        .raft()
                        .change_membership(change.clone(), false)
                        .await,
                )
            };
            let Some(outcome) = attempt.await else {
                return Err(MembershipRefusal::status(
                    Code::DeadlineExceeded,
                    TRANSFER_TIMEOUT,
                ));
            };
            match outcome {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(MembershipRefusal::NotLeader(f.leader_id))
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    let in_progress =
                        matches!(e, openraft::error::ChangeMembershipError::InProgress(_));
                    if in_progress && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    return Err(MembershipRefusal::status(
                        Code::FailedPrecondition,
                        format!("etcdserver: membership change refused: {e}"),
                    ));
                }
                Err(RaftError::Fatal(e)) => {
                    return Err(MembershipRefusal::status(
                        Code::Unavailable,
                        format!("etcdserver: server stopped: {e}"),
                    ))
                }
            }
        }
    }

    /// Hands leadership to `target`: stop heartbeats so the followers' leader lease runs out,
    /// tell the target to campaign, and wait until it leads. openraft 0.9 has no transfer
    /// primitive; this is Raft's TimeoutNow done from outside.
    ///
    /// While it runs, this member holds its proposals and leadership checks (see `RaftHandle`):
    /// each would send AppendEntries, renewing the followers' lease, and under steady writes
    /// the target's votes would keep being refused. Concurrent transfers on this member run one
    /// after the other; one that finds the leadership gone once its turn comes is forwarded to
    /// the new leader.
    async fn move_leader(&self, target: NodeId) -> MembershipResult {
        let me = self.handle.id();
        if target == me {
            return Ok(self.reply(None));
        }
        let (member, learner) = self
            .find(target)
            .map_err(|_| MembershipRefusal::status(Code::FailedPrecondition, BAD_TRANSFEREE))?;
        if learner {
            return Err(MembershipRefusal::status(
                Code::FailedPrecondition,
                BAD_TRANSFEREE,
            ));
        }
        let Some(_hold) = self.handle.begin_transfer(self.request_timeout).await else {
            return Err(MembershipRefusal::status(
                Code::DeadlineExceeded,
                TRANSFER_TIMEOUT,
            ));
        };
        match self.handle.leader() {
            Some(leader) if leader == target => return Ok(self.reply(None)),
            Some(leader) if leader == me => {}
            // An earlier transfer moved the leadership while this one waited its turn.
            other => return Err(MembershipRefusal::NotLeader(other)),
        }
        let raft = self.handle.raft();
        // Longer than the followers' lease (election timeout max = 2 × election timeout) plus
        // a campaign.
        let deadline = Instant::now() + self.election_timeout * 6;
        // The other voters must not campaign when the heartbeats stop: one of them could win
        // before the target. (Raft's TimeoutNow has the target campaign at once, while the
        // others' timers are fresh; here the target waits out their lease, long enough for
        // their own timers to fire.)
        let others: Vec<(NodeId, Member)> = self
            .handle
            .members()
            .into_iter()
            .filter(|(id, _, learner)| !learner && *id != me && *id != target)
            .map(|(id, m, _)| (id, m))
            .collect();
        // This member too, once it steps down: with the longest log it would win again.
        let hold = self.election_timeout * 7;
        self.hold_elections(hold);
        self.hold_voters(&others, hold).await;
        // Declared after `_hold`, so dropped first: heartbeats resume before held proposals go
        // out, on every way out of here.
        let _heartbeats = HeartbeatsOff::new(raft);
        // As Raft's transfer does: the target campaigns only once it has this leader's whole
        // log (nothing is appended meanwhile), or the voters, this one first, refuse it.
        let outcome = if self.target_caught_up(target, deadline).await {
            self.hand_over(target, &member, deadline).await
        } else {
            Err(MembershipRefusal::status(
                Code::DeadlineExceeded,
                TRANSFER_TIMEOUT,
            ))
        };
        // Their holds would lapse by themselves; resuming now restores the usual failover
        // time. In the background: the answer does not wait for it.
        self.hold_elections(Duration::ZERO);
        let this = self.clone();
        tokio::spawn(async move { this.hold_voters(&others, Duration::ZERO).await });
        outcome.map(|()| self.reply(None))
    }

    /// Tells `target` to campaign and waits until it leads (or `deadline`).
    async fn hand_over(
        &self,
        target: NodeId,
        member: &Member,
        deadline: Instant,
    ) -> Result<(), MembershipRefusal> {
        let me = self.handle.id();
        let mut told = false;
        loop {
            let leader = self.handle.leader();
            if leader == Some(target) {
                return Ok(());
            }
            if (leader.is_some() && leader != Some(me)) || Instant::now() >= deadline {
                // Too slow, or another member won: not the transfer that was asked for.
                return Err(MembershipRefusal::status(
                    Code::DeadlineExceeded,
                    TRANSFER_TIMEOUT,
                ));
            }
            if !told {
                let timeout = deadline.saturating_duration_since(Instant::now());
                match self
                    .handle
                    .peer_clients()
                    .membership(target, member, &MembershipRequest::TimeoutNow, timeout)
                    .await
                {
                    Ok(_) => told = true,
                    Err(e) => tracing::debug!(%e, "asking the transferee to campaign"),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `target` has replicated this leader's last log entry; false if `deadline`
    /// passes first (or this member stops leading).
    async fn target_caught_up(&self, target: NodeId, deadline: Instant) -> bool {
        let caught_up = |m: &openraft::RaftMetrics<NodeId, Member>| {
            let last = m.last_log_index;
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).copied().flatten())
                .map(|l| l.index);
            matched.is_some() && matched >= last
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let done = self
            .handle
            .raft()
            .wait(Some(timeout))
            .metrics(caught_up, "the transfer target has the whole log")
            .await;
        if let Err(e) = &done {
            tracing::warn!(%e, target = format!("{target:x}"), "leader transfer: the target did not catch up");
        }
        done.is_ok()
    }
}

/// Heartbeats off for as long as this lives (a leader transfer).
struct HeartbeatsOff(super::types::Raft);

impl HeartbeatsOff {
    fn new(raft: &super::types::Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        HeartbeatsOff(raft.clone())
    }
}

impl Drop for HeartbeatsOff {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

/// The transferee's side of MoveLeader: call elections until this member leads, a leader
/// other than the old one appears, or time runs out. The early calls are refused by members
/// still inside the old leader's lease; each refusal costs only a term.
async fn campaign(handle: RaftHandle, election_timeout: Duration) {
    let old = handle.leader();
    let deadline = Instant::now() + election_timeout * 6;
    while Instant::now() < deadline {
        let leader = handle.leader();
        if leader == Some(handle.id()) || (leader.is_some() && leader != old) {
            return;
        }
        if let Err(e) = handle.raft().trigger().elect().await {
            tracing::warn!(%e, "campaigning for a leader transfer");
            return;
        }
        // Soon after the leases run out, and not so often that a round's answers, slow under
        // load, are dropped for a newer term.
        tokio::time::sleep(election_timeout / 2).await;
    }
}

/// What one look at this member's Raft state tells about its membership.
struct MembershipView {
    /// (log id, names this member) of the newest configuration, committed or not.
    effective: (Option<LogId>, bool),
    /// The same for the newest committed configuration.
    committed: (Option<LogId>, bool),
    /// Whether this member leads.
    leading: bool,
    /// Whether this member has heard from a leader within `quiet` (AppendEntries renew the
    /// vote's time on followers and learners).
    heard_from_leader: bool,
    /// The other members of the newest configuration: whom to ask.
    peers: Vec<(NodeId, Member)>,
}

/// Watches for this member's removal from the cluster and marks it in [`Standing`] (then
/// `/readyz` and `/health` fail and requests that need the cluster are refused with etcd's
/// [`MEMBER_REMOVED`]). Ends when `stop` fires or Raft stops.
///
/// openraft does not tell a removed member: the leader stops replicating to it as soon as it
/// appends the configuration without it, so the removed member keeps its last view — usually
/// the joint configuration that still names it — for good (a learner even keeps believing in
/// its leader). So this remembers the newest configuration that named this member, and
/// concludes it was removed when a committed configuration newer than that does not: its own
/// (a leader that removed itself), or, once it has heard from no leader for a while, another
/// member's ([`MembershipRequest::CheckRemoved`]). A member still joining has never been named
/// and is never judged.
pub async fn watch_removal(
    handle: RaftHandle,
    election_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let me = handle.id();
    // Longer than a leader transfer keeps its followers without heartbeats.
    let quiet = election_timeout * 3;
    let ask_timeout = election_timeout.max(Duration::from_millis(500));
    let mut seen_in: Option<LogId> = None;
    let mut next_peer = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(election_timeout) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let view = handle
            .raft()
            .with_raft_state(move |st| {
                let look = |m: &openraft::EffectiveMembership<NodeId, Member>| {
                    (*m.log_id(), m.membership().get_node(&me).is_some())
                };
                let effective = st.membership_state.effective();
                MembershipView {
                    effective: look(effective),
                    committed: look(st.membership_state.committed()),
                    leading: st.server_state == openraft::ServerState::Leader,
                    heard_from_leader: st.vote_ref().is_committed()
                        && st.vote_last_modified().is_some_and(|t| t.elapsed() < quiet),
                    peers: effective
                        .nodes()
                        .filter(|(id, _)| **id != me)
                        .map(|(id, m)| (*id, m.clone()))
                        .collect(),
                }
            })
            .await;
        let Ok(view) = view else {
            return;
        };
        for (at, named) in [view.effective, view.committed] {
            if named {
                seen_in = seen_in.max(at);
            }
        }
        let Some(seen) = seen_in else {
            continue;
        };
        let removed = match view.committed {
            (Some(at), false) if at > seen => true,
            _ if view.leading || view.heard_from_leader => false,
            _ => {
                let Some((peer, member)) = view.peers.get(next_peer % view.peers.len().max(1))
                else {
                    continue;
                };
                next_peer = next_peer.wrapping_add(1);
                let ask = MembershipRequest::CheckRemoved {
                    id: me,
                    seen_in: seen,
                };
                // Bounded here too: the timeout the call carries is the server's to enforce,
                // and a peer that stopped answering must not stall this loop.
                let answer = tokio::time::timeout(
                    ask_timeout,
                    handle
                        .peer_clients()
                        .membership(*peer, member, &ask, ask_timeout),
                )
                .await;
                match answer {
                    Ok(Ok(Err(MembershipRefusal::Status { message, .. }))) => {
                        message == MEMBER_REMOVED
                    }
                    // Not removed, or no answer (unreachable, an older version): ask again.
                    _ => false,
                }
            }
        };
        if removed && handle.standing().set_removed() {
            tracing::error!(
                member_id = format!("{me:x}"),
                "{MEMBER_REMOVED}: this member no longer serves requests that need the cluster \
                 and reports not ready; stop it (and wipe its data directory before it ever \
                 joins again)"
            );
        }
    }
}

/// The identity a member keeps across restarts once it has one: a joining member learns its
/// id from the cluster only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub member_id: NodeId,
    pub cluster_id: u64,
}

const IDENTITY_FILE: &str = "member.json";

impl Identity {
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
        match std::fs::read(data_dir.join(IDENTITY_FILE)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the identity durably (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, data_dir.join(IDENTITY_FILE))?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(())
    }
}
