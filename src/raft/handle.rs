//! The small facade the services use: `propose(cmd)`, `read_barrier()`, `leader()`,
//! `members()`.
//!
//! Proposals are batched: concurrent commands queue up, and a batcher turns whatever has
//! queued into one Raft entry, so one replication round and one fsync carry them all. At most
//! `MAX_IN_FLIGHT` entries are in flight; while they are, new commands accumulate into the next
//! batch, so batches grow with load and a lone client pays no waiting window.
//!
//! Any member accepts any command: a follower forwards the batch to the leader over the peer
//! service. A batch is retried on another leader only when it certainly was not appended
//! (refused, or never delivered); when its fate is unknown the callers get a timeout, never a
//! silent retry that could apply it twice.
//!
//! Read barriers are shared the same way: concurrent linearizable reads on a member wait for
//! one read-index round (a leadership check on the leader, one forwarded request on a
//! follower) instead of one each; see `Rounds`.
//!
//! While a leader transfer (MoveLeader) is under way on the leader, everything that would send
//! AppendEntries from it waits: proposals (its own batches and those forwarded to it),
//! read-index rounds and lease leadership checks. Each of those refreshes the followers' leader
//! lease, and a follower inside that lease refuses the transferee's vote, so under steady load
//! the transfer would never finish. Held work goes on once the transfer ends: on this member
//! if it still leads, otherwise forwarded to the new leader like any other (see `TransferGate`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard, RwLock, RwLockReadGuard, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::membership::{Standing, MEMBER_REMOVED, TRANSFER_TIMEOUT};
use super::network::{ForwardRefusal, LeaseAsk, PeerClients, PeerError};
use super::types::{Member, NodeId, Proposal, ProposalResult, Raft, TypeConfig};
use crate::command::{Command, CommandResult};
use crate::lease::clock::LeaseClock;
use crate::metrics::{Histogram, Metrics};
use crate::pb::corral::peer::v1::LeaseAnswer;
use crate::storage::state::StateStore;

/// Commands per Raft entry at most.
const MAX_BATCH: usize = 1024;
/// Raft entries proposed concurrently by one member at most. One: openraft 0.9 appends each
/// proposal and waits for its fsync inside its core loop before it replicates anything, so
/// entries in flight together do not share fsyncs or overlap them, they only split the load
/// into more, smaller entries (more fsyncs, more messages). Measured at 64 clients, 3 members:
/// 6.8k puts/s, p99 15 ms with 1; 5.9-6.3k, 16-18 ms with 2; 5.4k, 21-23 ms with 4.
const MAX_IN_FLIGHT: usize = 1;
/// Pause before retrying after a leader change or an unreachable leader.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Why a proposal or a read barrier did not complete. Each maps to etcd's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The outcome is unknown: the command may or may not have been applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Held while this member handed its leadership over, past the request's deadline; never
    /// proposed, so safe to retry.
    #[error("{}", TRANSFER_TIMEOUT)]
    TransferTimeout,
    /// This member is no longer part of the cluster (see `raft::membership::watch_removal`).
    #[error("{}", MEMBER_REMOVED)]
    Removed,
}

/// Keeps AppendEntries from the leader while it transfers its leadership (see the module
/// docs). Work that sends them takes a shared turn; a transfer takes the exclusive one.
/// tokio's lock is fair: once a transfer waits, later turns queue behind it, so the transfer
/// starts as soon as the calls already in flight finish, and nothing new starts until it ends.
/// Two transfers on one member also run one after the other.
///
/// Never take a turn while holding one: a transfer waiting in between would deadlock the two.
#[derive(Default)]
struct TransferGate(Arc<RwLock<()>>);

impl TransferGate {
    /// Waits until no transfer is under way; the transfer waits for the turn to end.
    async fn turn(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().await
    }
}

/// Shares one read-index round among every caller that asked while it had not started.
///
/// A caller never joins a round already under way: that round's leadership check may have
/// begun before the caller asked, and a read index from it could miss a write acknowledged
/// just before the call. So each caller waits for the next round to *start*, which is after
/// it asked: one such round serves everyone who queued meanwhile, and the read is still
/// linearizable (etcd batches its ReadIndex requests by the same rule). Rounds run in a task
/// of their own, one at a time, so a caller that gives up cannot stall the others.
struct Rounds<T> {
    /// (a round task is running, the callers waiting for the next round).
    state: Mutex<(bool, Vec<oneshot::Sender<T>>)>,
}

impl<T: Clone + Send + 'static> Rounds<T> {
    fn new() -> Arc<Self> {
        Arc::new(Rounds {
            state: Mutex::new((false, Vec::new())),
        })
    }

    /// The result of the next round to start; `None` if the round task went away (the
    /// runtime is shutting down). `round` runs one round; it is called afresh for each.
    async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.1.push(tx);
            !std::mem::replace(&mut state.0, true)
        };
        if start {
            let rounds = self.clone();
            tokio::spawn(async move {
                loop {
                    let waiting = {
                        let mut state = rounds.state.lock().unwrap_or_else(|p| p.into_inner());
                        let waiting = std::mem::take(&mut state.1);
                        // Decided under the lock: a caller that queues after this sees no
                        // running task and starts one.
                        state.0 = !waiting.is_empty();
                        waiting
                    };
                    if waiting.is_empty() {
                        return;
                    }
                    let result = round().await;
                    for tx in waiting {
                        let _ = tx.send(result.clone());
                    }
                }
            });
        }
        rx.await.ok()
    }
}

/// What a leader's read-index round yields.
type LeaderRound = Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// Everything needed to get a batch committed; shared by the batcher's tasks.
#[derive(Clone)]
struct Submitter {
    id: NodeId,
    raft: Raft,
    clients: PeerClients,
    timeout: Duration,
    /// The leader answers lease keep-alives from this clock, without Raft.
    leases: Arc<LeaseClock>,
    /// How recently a quorum must have acknowledged this leader for it to answer lease
    /// questions on its own authority.
    election_timeout: Duration,
    /// (term of the vote, last log index) read from the log store before Raft started.
    /// openraft 0.9 restores a member whose vote was committed as leader of that same term at
    /// startup, knowing only the committed index that happened to be durable (the
    /// state machine's last-applied, or an unflushed `save_committed`). Entries up to this
    /// index may have been committed and acknowledged before the crash, so reads in that term
    /// wait until they are applied.
    startup: (u64, u64),
    /// Leadership checks shared by concurrent reads on this member (as leader).
    leader_rounds: Arc<Rounds<LeaderRound>>,
    /// Read-index requests to the leader shared by concurrent reads on this member (as a
    /// follower); `None`: no index this round (no leader, refused, unreachable), retry.
    forward_rounds: Arc<Rounds<Option<u64>>>,
    /// Holds what would send AppendEntries while this member transfers its leadership.
    transfer: Arc<TransferGate>,
}

#[derive(Clone)]
pub struct RaftHandle {
    submitter: Submitter,
    store: Arc<StateStore>,
    queue: mpsc::Sender<Pending>,
    /// This member's metrics; everything holding the handle counts into them.
    metrics: Arc<Metrics>,
    /// Whether this member is removed from the cluster or not ready yet.
    standing: Arc<Standing>,
}

impl RaftHandle {
    /// Starts the batcher. `timeout` bounds every proposal and read barrier; `wal_fsync` is the
    /// log store's flush histogram, published with this member's metrics.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        startup: (u64, u64),
        id: NodeId,
        raft: Raft,
        clients: PeerClients,
        store: Arc<StateStore>,
        leases: Arc<LeaseClock>,
        timeout: Duration,
        election_timeout: Duration,
        wal_fsync: Arc<Histogram>,
    ) -> RaftHandle {
        let submitter = Submitter {
            id,
            raft,
            clients,
            timeout,
            leases,
            election_timeout,
            startup,
            leader_rounds: Rounds::new(),
            forward_rounds: Rounds::new(),
            transfer: Arc::default(),
        };
        let (queue, rx) = mpsc::channel(MAX_BATCH * 2);
        tokio::spawn(batch_loop(submitter.clone(), rx));
        let metrics = Metrics::with_wal_fsync(wal_fsync);
        tokio::spawn(count_leader_changes(
            submitter.raft.metrics(),
            metrics.clone(),
        ));
        RaftHandle {
            submitter,
            store,
            queue,
            metrics,
            standing: Arc::default(),
        }
    }

    pub fn standing(&self) -> &Arc<Standing> {
        &self.standing
    }

    /// Starts a leader transfer on this member: waits (up to `timeout`) for the proposals and
    /// leadership checks in flight to finish, and holds new ones until the guard is dropped.
    /// `None` if the calls in flight did not finish in time (or another transfer ran that long).
    pub async fn begin_transfer(&self, timeout: Duration) -> Option<OwnedRwLockWriteGuard<()>> {
        tokio::time::timeout(timeout, self.submitter.transfer.0.clone().write_owned())
            .await
            .ok()
    }

    /// A turn for a membership change on this member as leader: waits while a leader transfer
    /// is under way here, up to `deadline` (`None` past it). Hold it across the change only.
    pub async fn membership_turn(&self, deadline: Instant) -> Option<RwLockReadGuard<'_, ()>> {
        timeout_at(deadline, self.submitter.transfer.turn())
            .await
            .ok()
    }

    /// `client_write` on this member as leader, held while a leader transfer is under way (the
    /// peer service's path for proposals forwarded by followers). After a transfer that moved
    /// the leadership, it answers ForwardToLeader without appending anything.
    pub async fn write_as_leader(
        &self,
        proposal: Proposal,
    ) -> Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, Member>>,
    > {
        let _turn = self.submitter.transfer.turn().await;
        self.submitter.raft.client_write(proposal).await
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn id(&self) -> NodeId {
        self.submitter.id
    }

    pub fn raft(&self) -> &Raft {
        &self.submitter.raft
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    pub fn peer_clients(&self) -> &PeerClients {
        &self.submitter.clients
    }

    /// Replicates `command` and returns its result once applied on this member.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        if self.standing.removed() {
            self.metrics.proposals_failed.inc();
            return Err(ProposeError::Removed);
        }
        // A NOSPACE alarm refuses this at apply anyway; refusing it here saves the round.
        if self.store.nospace() && command.needs_space() {
            return Ok(CommandResult::Error(crate::mvcc::MvccError::NoSpace));
        }
        // Held across the await: a caller that gives up (drops this future) stops being
        // pending too.
        let _pending = self.metrics.proposals_pending.hold();
        let result = async {
            let (reply, rx) = oneshot::channel();
            self.queue
                .send(Pending { command, reply })
                .await
                .map_err(|_| ProposeError::Stopped)?;
            rx.await.map_err(|_| ProposeError::Stopped)?
        }
        .await;
        match &result {
            Ok(_) => self.metrics.proposals_committed.inc(),
            Err(_) => self.metrics.proposals_failed.inc(),
        }
        result
    }

    /// Returns once this member has applied everything committed before the call: reads
    /// served after it are linearizable. Works on followers through the leader's read index.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        if self.standing.removed() {
            return Err(ProposeError::Removed);
        }
        self.submitter.read_barrier().await
    }

    /// The read index this member hands out as leader (see `Submitter::leader_read_index`).
    pub async fn leader_read_index(
        &self,
    ) -> Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>> {
        self.submitter.leader_read_index().await
    }

    pub fn leases(&self) -> &Arc<LeaseClock> {
        &self.submitter.leases
    }

    /// Asks the leader's lease clock (forwarding from a follower): for a keep-alive the
    /// renewed TTL, for time-to-live (granted, remaining). `None`: no such lease.
    pub async fn lease(&self, ask: LeaseAsk, id: i64) -> Result<Option<(i64, i64)>, ProposeError> {
        if self.standing.removed() {
            return Err(ProposeError::Removed);
        }
        self.submitter.lease(ask, id).await
    }

    /// Answers a lease question if this member is a leader acknowledged by a quorum.
    pub async fn lease_as_leader(&self, ask: LeaseAsk, id: i64) -> LeaseAnswer {
        self.submitter.lease_as_leader(ask, id).await
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.submitter.raft.metrics().borrow().current_leader
    }

    pub fn term(&self) -> u64 {
        self.submitter.raft.metrics().borrow().current_term
    }

    /// Every member: (id, identity, is_learner).
    pub fn members(&self) -> Vec<(NodeId, Member, bool)> {
        let metrics = self.submitter.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), !voters.contains(id)))
            .collect()
    }
}

/// Counts leader changes as etcd does (`etcd_server_leader_changes_seen_total`): each time the
/// leader this member knows becomes a known leader different from the last one it saw (losing
/// the leader and finding the same one again counts too). Ends when Raft shuts down.
async fn count_leader_changes(
    mut raft_metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, Member>>,
    metrics: Arc<Metrics>,
) {
    let mut last = None;
    loop {
        let leader = raft_metrics.borrow_and_update().current_leader;
        if leader != last {
            if leader.is_some() {
                metrics.leader_changes.inc();
            }
            last = leader;
        }
        if raft_metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn batch_loop(submitter: Submitter, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch fill up under load.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let submitter = submitter.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            let n = commands.len();
            match submitter
                .submit(Proposal {
                    commands: commands.into(),
                })
                .await
            {
                Ok(ProposalResult { results, .. }) if results.len() == n => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Ok(other) => {
                    tracing::error!(
                        expected = n,
                        got = other.results.len(),
                        "result count mismatch"
                    );
                    for reply in replies {
                        let _ = reply.send(Err(ProposeError::Timeout));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

impl Submitter {
    fn member(&self, id: NodeId) -> Option<Member> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Waits until some leader is known.
    async fn wait_leader(&self, deadline: Instant) -> Result<NodeId, ProposeError> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Ok(leader);
            }
            match timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Err(ProposeError::NoLeader),
                Ok(Err(_)) => return Err(ProposeError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    async fn backoff(&self, deadline: Instant) -> Result<(), ProposeError> {
        if Instant::now() + RETRY_BACKOFF >= deadline {
            return Err(ProposeError::Timeout);
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
        Ok(())
    }

    async fn submit(&self, proposal: Proposal) -> Result<ProposalResult, ProposeError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.wait_leader(deadline).await?;
            if leader == self.id {
                // Held here while this member hands its leadership over (see the module docs).
                let Ok(_turn) = timeout_at(deadline, self.transfer.turn()).await else {
                    return Err(ProposeError::TransferTimeout);
                };
                if self.raft.metrics().borrow().current_leader != Some(self.id) {
                    // The transfer moved the leadership: forward to the new leader instead.
                    continue;
                }
                match timeout_at(deadline, self.raft.client_write(proposal.clone())).await {
                    Err(_) => return Err(ProposeError::Timeout),
                    Ok(Ok(resp)) => return Ok(resp.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                        self.backoff(deadline).await?
                    }
                    Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                        tracing::error!(%e, "membership error on a normal proposal");
                        return Err(ProposeError::Timeout);
                    }
                    Ok(Err(RaftError::Fatal(_))) => return Err(ProposeError::Stopped),
                }
                continue;
            }
            let Some(member) = self.member(leader) else {
                self.backoff(deadline).await?;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self
                .clients
                .propose(leader, &member, &proposal, remaining)
                .await
            {
                Ok(Ok(result)) => {
                    // Answer only once this member has applied the entry too, as etcd does:
                    // the caller's next request here (even a serializable read) sees it.
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if let Err(e) = self
                        .raft
                        .wait(Some(remaining))
                        .applied_index_at_least(Some(result.index), "forwarded write applied")
                        .await
                    {
                        tracing::warn!(%e, index = result.index, "forwarded write not applied here in time");
                    }
                    return Ok(result);
                }
                // Refused or never delivered: certainly not appended, safe to retry.
                Ok(Err(ForwardRefusal::NotLeader(_) | ForwardRefusal::Stopped))
                | Err(PeerError::Unreachable(..)) => self.backoff(deadline).await?,
                Err(e) => {
                    tracing::debug!(%e, "forwarded proposal failed with unknown outcome");
                    return Err(ProposeError::Timeout);
                }
            }
        }
    }

    async fn lease(&self, ask: LeaseAsk, id: i64) -> Result<Option<(i64, i64)>, ProposeError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.wait_leader(deadline).await?;
            let answer = if leader == self.id {
                self.lease_as_leader(ask, id).await
            } else {
                let Some(member) = self.member(leader) else {
                    self.backoff(deadline).await?;
                    continue;
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self
                    .clients
                    .lease(leader, &member, ask, id, remaining)
                    .await
                {
                    Ok(a) => a,
                    // A keep-alive renews a deadline; repeating one is harmless.
                    Err(_) => {
                        self.backoff(deadline).await?;
                        continue;
                    }
                }
            };
            if answer.not_leader {
                self.backoff(deadline).await?;
                continue;
            }
            return Ok(answer
                .found
                .then_some((answer.granted_ttl, answer.remaining_ttl)));
        }
    }

    /// Confirms with a quorum that this member still leads (a leader cut off from the
    /// majority must not keep leases alive that the new leader will expire).
    async fn confirm_leadership(&self) -> bool {
        // Held during a leader transfer: a check would send AppendEntries (see the module
        // docs), and an answer given meanwhile could come from a leader about to step down.
        let _turn = self.transfer.turn().await;
        let fresh = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(self.id)
                && m.millis_since_quorum_ack
                    .is_some_and(|ms| u128::from(ms) < self.election_timeout.as_millis())
        };
        if fresh {
            return true;
        }
        matches!(
            tokio::time::timeout(self.election_timeout, self.raft.get_read_log_id()).await,
            Ok(Ok(_))
        )
    }

    /// Whether this leader has applied an entry of its own term (openraft appends a blank one
    /// on election), waiting up to an election timeout. Entries of earlier terms may still
    /// carry a revocation an earlier leader decided while it led (`Command::LeaseExpire`
    /// applies from its own term's entries); a keep-alive answered before they apply would
    /// renew a lease that is then revoked. After, the clock reflects them.
    async fn applied_own_term(&self) -> bool {
        let done = |m: &openraft::RaftMetrics<NodeId, Member>| {
            m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
        };
        if done(&self.raft.metrics().borrow()) {
            return true;
        }
        self.raft
            .wait(Some(self.election_timeout))
            .metrics(done, "the leader applied an entry of its own term")
            .await
            .is_ok()
    }

    async fn lease_as_leader(&self, ask: LeaseAsk, id: i64) -> LeaseAnswer {
        let not_leader = LeaseAnswer {
            not_leader: true,
            ..Default::default()
        };
        if !self.confirm_leadership().await || !self.applied_own_term().await {
            return not_leader;
        }
        let mut answer = self.ask_clock(ask, id);
        if answer.is_none() {
            // A new leader may not have applied a recent grant yet: catch up, look again.
            if self.read_barrier().await.is_err() {
                return not_leader;
            }
            answer = self.ask_clock(ask, id);
        }
        match answer {
            Some((granted_ttl, remaining_ttl)) => LeaseAnswer {
                not_leader: false,
                found: true,
                granted_ttl,
                remaining_ttl,
            },
            None => LeaseAnswer::default(),
        }
    }

    fn ask_clock(&self, ask: LeaseAsk, id: i64) -> Option<(i64, i64)> {
        match ask {
            LeaseAsk::KeepAlive => self.leases.keep_alive(id).map(|ttl| (ttl, ttl)),
            LeaseAsk::TimeToLive => self.leases.time_to_live(id),
        }
    }

    /// The read index as leader, from a leadership check shared with concurrent callers (see
    /// [`Rounds`]).
    async fn leader_read_index(&self) -> LeaderRound {
        let submitter = self.clone();
        let round = move || {
            let submitter = submitter.clone();
            async move { submitter.leader_read_index_now().await }
        };
        match self.leader_rounds.join(round).await {
            Some(result) => result,
            None => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
        }
    }

    /// A read index from the leader, through a request shared with concurrent callers on
    /// this follower (see [`Rounds`]); `None`: retry.
    async fn forwarded_read_index(&self) -> Option<u64> {
        let submitter = self.clone();
        let round = move || {
            let submitter = submitter.clone();
            async move { submitter.forwarded_read_index_now().await }
        };
        self.forward_rounds.join(round).await.flatten()
    }

    async fn forwarded_read_index_now(&self) -> Option<u64> {
        let leader = self.raft.metrics().borrow().current_leader?;
        // Became the leader meanwhile: the callers retry and take the leader's path.
        if leader == self.id {
            return None;
        }
        let member = self.member(leader)?;
        match self.clients.read_index(leader, &member, self.timeout).await {
            Ok(r) if !r.not_leader => Some(r.index),
            // Reads have no effect, so any failure can be retried.
            Ok(_) | Err(_) => None,
        }
    }

    /// openraft's read log id, raised to the last log index at startup while leading in the
    /// term this member started in (see `startup`).
    async fn leader_read_index_now(&self) -> LeaderRound {
        let (read_log_id, _) = {
            // Held during a leader transfer: the check sends AppendEntries (module docs).
            let _turn = self.transfer.turn().await;
            self.raft.get_read_log_id().await?
        };
        let index = read_log_id.map_or(0, |l| l.index);
        let (term, last) = self.startup;
        let restored = read_log_id.is_some_and(|l| l.leader_id.term == term);
        Ok(if restored { index.max(last) } else { index })
    }

    async fn read_barrier(&self) -> Result<(), ProposeError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let leader = self.wait_leader(deadline).await?;
            let index = if leader == self.id {
                match timeout_at(deadline, self.leader_read_index()).await {
                    Err(_) => return Err(ProposeError::Timeout),
                    Ok(Ok(index)) => Some(index),
                    Ok(Err(RaftError::APIError(
                        CheckIsLeaderError::ForwardToLeader(_)
                        | CheckIsLeaderError::QuorumNotEnough(_),
                    ))) => {
                        self.backoff(deadline).await?;
                        continue;
                    }
                    Ok(Err(RaftError::Fatal(_))) => return Err(ProposeError::Stopped),
                }
            } else {
                match timeout_at(deadline, self.forwarded_read_index()).await {
                    Err(_) => return Err(ProposeError::Timeout),
                    Ok(Some(index)) => Some(index),
                    Ok(None) => {
                        self.backoff(deadline).await?;
                        continue;
                    }
                }
            };
            if let Some(index) = index {
                let remaining = deadline.saturating_duration_since(Instant::now());
                self.raft
                    .wait(Some(remaining))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map_err(|_| ProposeError::Timeout)?;
            }
            return Ok(());
        }
    }
}
