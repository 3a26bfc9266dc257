//! Jepsen-style fault testing against real `corral serve` processes: concurrent clients record
//! histories of gets, puts, deletes and compare-and-sets (plus leases, watches, a lock with
//! fenced writes, and znode sessions with ephemerals) while a nemesis kills (-9), pauses
//! (SIGSTOP) and partitions members; afterwards every member is killed and restarted,
//! everything is read back, and [`corral::checker`] must find every key linearizable,
//! revisions monotonic, watch streams exact, acknowledged writes present, expired lease keys
//! gone, lock holders (fencing tokens) never overlapping, and ephemerals of ended sessions
//! never seen again. The workloads must also have done enough (see `run::MINIMUMS`) for
//! those checks to mean something.
//!
//! Partitions are real cuts of peer traffic: every directed peer link runs through a TCP proxy
//! in this process (`--peer-dial-map`), which the nemesis black-holes.
//!
//! The short schedules here run in `make test` (about 25 s each, every listed fault at least
//! once); `make jepsen DURATION=5m` runs the long ones (ignored here, every fault) and any
//! failing run — also one that stops before its checks — is saved under `target/jepsen/`
//! (recording, report, member logs) for `make jepsen-replay RECORDING=...`. `JEPSEN_SEED`
//! replays a fault schedule (timing still varies). nextest runs this binary without retries
//! (`.config/nextest.toml`): a violation found once fails the run.

mod common;
#[path = "jepsen/locks.rs"]
mod locks;
#[path = "jepsen/nemesis.rs"]
mod nemesis;
#[path = "jepsen/run.rs"]
mod run;
#[path = "jepsen/sessions.rs"]
mod sessions;
#[path = "jepsen/watcher.rs"]
mod watcher;
#[path = "jepsen/workload.rs"]
mod workload;

use std::time::Duration;

use nemesis::Fault;
use run::{duration_from_env, Scenario};

const ALL_FAULTS: [Fault; 8] = [
    Fault::KillRandom,
    Fault::KillLeader,
    Fault::RestartLeader,
    Fault::PauseRandom,
    Fault::PauseLeader,
    Fault::MajorityMinority,
    Fault::IsolateLeader,
    Fault::Bridge,
];

/// Three members: kill -9 (the leader, or anyone), kill -9 and immediate restart of the leader
/// (it comes back leading the same term), and SIGSTOP (the leader or anyone), one fault at a
/// time, held 1–3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_crashes_and_pauses() {
    run::run(Scenario {
        name: "three-crash-pause",
        members: 3,
        clients: 4,
        duration: Duration::from_secs(15),
        faults: vec![
            Fault::KillLeader,
            Fault::KillRandom,
            Fault::PauseLeader,
            Fault::RestartLeader,
            Fault::PauseRandom,
        ],
        lockers: 3,
        session_clients: 1,
        renewed_ttl: 2,
    })
    .await;
}

/// Five members behind link proxies: majority/minority splits, the leader isolated, a bridge,
/// and kill -9 of the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_partitions() {
    run::run(Scenario {
        name: "five-partitions",
        members: 5,
        clients: 5,
        duration: Duration::from_secs(15),
        faults: vec![
            Fault::MajorityMinority,
            Fault::IsolateLeader,
            Fault::Bridge,
            Fault::KillLeader,
        ],
        lockers: 3,
        session_clients: 1,
        renewed_ttl: 2,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long schedule: make jepsen DURATION=..."]
async fn long_three_members_all_faults() {
    run::run(Scenario {
        name: "long-three",
        members: 3,
        clients: 5,
        duration: duration_from_env(Duration::from_secs(60)),
        faults: ALL_FAULTS.to_vec(),
        lockers: 3,
        session_clients: 2,
        renewed_ttl: 2,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long schedule: make jepsen DURATION=..."]
async fn long_five_members_all_faults() {
    run::run(Scenario {
        name: "long-five",
        members: 5,
        clients: 6,
        duration: duration_from_env(Duration::from_secs(60)),
        faults: ALL_FAULTS.to_vec(),
        lockers: 3,
        session_clients: 2,
        renewed_ttl: 2,
    })
    .await;
}

/// Checks a saved recording again: `make jepsen-replay RECORDING=target/jepsen/<run>`.
#[test]
#[ignore = "replays JEPSEN_REPLAY: make jepsen-replay RECORDING=..."]
fn replay() {
    let path = std::env::var("JEPSEN_REPLAY").expect("JEPSEN_REPLAY=path/to/recording.json");
    run::replay(&path);
}

/// A small recording: two acknowledged puts of `jepsen/k0000` ("a", then "b") and a read,
/// invoked after "b" was acknowledged, that returned `read`; the event log and final state
/// agree with the puts.
fn recording_with_read(read: &str) -> run::Recording {
    use corral::checker::{Call, KeyState, Op, Outcome, Reply, WatchEvent};
    let key = "jepsen/k0000";
    let op = |client: u32, invoke: u64, call: Call, revision: i64, reply: Reply| Op {
        client,
        session: client,
        key: key.into(),
        call,
        invoke,
        complete: invoke + 10,
        outcome: Outcome::Ok { revision, reply },
        note: None,
    };
    let put = |value: &str, revision: i64| WatchEvent {
        revision,
        key: key.into(),
        value: Some(value.into()),
        create_revision: 2,
        version: revision - 1,
    };
    let history = vec![
        op(0, 10, Call::Put { value: "a".into() }, 2, Reply::Written),
        op(0, 30, Call::Put { value: "b".into() }, 3, Reply::Written),
        op(
            1,
            50,
            Call::Get,
            3,
            Reply::Read {
                value: Some(read.into()),
                mod_revision: if read == "a" { 2 } else { 3 },
            },
        ),
    ];
    run::Recording {
        scenario: "replay-test".into(),
        seed: 7,
        history,
        log: vec![put("a", 2), put("b", 3)],
        streams: Vec::new(),
        final_state: [(
            key.to_string(),
            KeyState {
                value: "b".into(),
                mod_revision: 3,
                create_revision: 2,
                version: 2,
            },
        )]
        .into(),
        final_revision: 3,
        lease_keys: Vec::new(),
        nemesis: vec!["1.000s KillLeader: kill -9 p0".into(), "2.000s heal".into()],
        session_members: Default::default(),
        holds: Vec::new(),
        ephemerals: Default::default(),
        ephemeral_keys: Vec::new(),
        aborted: None,
    }
}

/// Saves `rec` as a failing run is saved (a member log beside it), replays the saved copy
/// and returns the replayed verdict, what `make jepsen-replay` printed as the report, and
/// whether replay failed.
fn save_and_replay(rec: &run::Recording) -> (run::Verdict, String, bool) {
    let base = tempfile::tempdir().expect("temp dir");
    let member_log = base.path().join("p0.log.src");
    std::fs::write(&member_log, "a member's log\n").expect("write log");
    let dir = run::save_in(
        base.path(),
        rec,
        &run::Verdict::of(rec),
        &[("p0".into(), member_log)],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("p0.log")).expect("saved member log"),
        "a member's log\n"
    );
    let report = std::fs::read_to_string(dir.join("report.txt")).expect("saved report");
    let (replayed, verdict) = run::recheck(&dir.join("recording.json"));
    assert_eq!(
        replayed.history, rec.history,
        "the history survives the round trip"
    );
    let path = dir.to_str().expect("utf-8 path").to_string();
    let failed = std::panic::catch_unwind(|| run::replay(&path)).is_err();
    (verdict, report, failed)
}

/// The save and replay path on a known-bad run: a stale read (a value overwritten before the
/// read was invoked) is saved like a failing run, and replaying it reports the key as not
/// linearizable and fails. The same recording with a fresh read has no problem.
#[test]
fn replay_reports_a_saved_stale_read() {
    let (verdict, report, failed) = save_and_replay(&recording_with_read("a"));
    assert!(
        verdict.report.problems.iter().any(|p| matches!(
            p,
            corral::checker::Problem::NotLinearizable { key, .. } if key == "jepsen/k0000"
        )),
        "replay did not report the stale read: {verdict}"
    );
    assert!(report.contains("not linearizable"), "{report}");
    assert!(report.contains("KillLeader: kill -9 p0"), "{report}");
    assert!(failed, "replay passed a stale read");

    let (verdict, _, _) = save_and_replay(&recording_with_read("b"));
    assert!(verdict.report.is_valid(), "{verdict}");
}

/// A run that stopped before its checks (here: a member that never answered the final
/// reads) is saved with what it collected; replay reports where it stopped, and fails.
#[test]
fn replay_reports_a_run_that_stopped_early() {
    let mut rec = recording_with_read("b");
    let why = "final reads on every member: timed out after 30s waiting for a linearizable \
               read on p2";
    rec.aborted = Some(why.into());
    // What a run that stopped early has: no final event log, state or streams.
    rec.log.clear();
    rec.final_state.clear();
    rec.final_revision = 0;
    let (verdict, report, failed) = save_and_replay(&rec);
    assert_eq!(verdict.aborted.as_deref(), Some(why));
    assert!(
        verdict.report.problems.is_empty(),
        "the collected history is fine: {verdict}"
    );
    assert!(
        report.contains("the run stopped before its checks") && report.contains(why),
        "{report}"
    );
    assert!(failed, "replay passed a run that stopped early");
}

/// Regression (found by `long_three_members_all_faults`): a leader killed with -9 right after
/// acknowledging a write, and restarted before the others elect a new one, resumes leadership
/// of the same term at once (openraft 0.9 restores a leader whose vote was committed). Its
/// committed index after the restart is whatever was durable — the state machine's
/// last-applied, or the unflushed `save_committed` — so the read index openraft gives it
/// (`max(noop log id of its term, committed)`) can be older than writes it acknowledged
/// before the crash: a linearizable read then returns the state from before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_leader_does_not_serve_stale_linearizable_reads() {
    use common::process::ProcessCluster;
    let mut cluster = ProcessCluster::start(3).await;
    // The race is won in roughly one round out of five; 30 rounds take a few seconds.
    for round in 0..30 {
        let leader = cluster.wait_leader().await;
        let mut c = workload::connect(&cluster.members[leader].endpoint())
            .await
            .expect("connect");
        let value = format!("v{round}");
        // Asked before the put: anything between the put and the kill narrows the window.
        let term_before = cluster.status(leader).await.map(|s| s.2);
        let put = c.put("r", value.as_str(), None).await.expect("put");
        let written_at = put.header().expect("header").revision();
        cluster.kill(leader);
        cluster.restart(leader);
        let endpoint = cluster.members[leader].endpoint();
        let (read, read_at) = common::eventually(
            "a linearizable read on the restarted member",
            Duration::from_secs(20),
            || async {
                let mut c = workload::connect(&endpoint).await?;
                let r = c.get("r", None).await.ok()?;
                let read = r
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap().to_string());
                Some((read, r.header()?.revision()))
            },
        )
        .await;
        let after = cluster.status(leader).await;
        assert!(
            read.as_deref() == Some(value.as_str()) && read_at >= written_at,
            "round {round}: put {value:?} acknowledged at revision {written_at} by leader \
             p{leader} (term {term_before:?}); after kill -9 and restart, a linearizable read on \
             p{leader} returned {read:?} at revision {read_at}; p{leader} then reported \
             (own id, leader id, term) = {after:?}"
        );
    }
}

/// Regression (found by the lock and session checks of the short schedules, e.g.
/// `JEPSEN_SEED=10191208653475748923` five-partitions, `17699302015451630732` and
/// `3550749877735670369` three-crash-pause): a leader cut off (or paused) while a lease is
/// kept alive through its successor still has the lease's old deadline in its own clock and
/// still believes it leads. It finds the lease expired and proposes its revocation; the
/// write can't commit, and when the leader hears of the new term it fails with
/// ForwardToLeader — and the proposal is then forwarded to the new leader, which applies it:
/// a lease revoked less than a TTL after a keep-alive the new leader answered (a lock
/// changing hands under a holder whose lease was alive; an ephemeral vanishing under a live
/// session). Fixed: `Command::LeaseExpire` carries the term its proposer led in and applies
/// only from a log entry of that term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deposed_leader_does_not_expire_a_lease_kept_alive_elsewhere() {
    use common::process::ProcessCluster;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    const TTL: i64 = 2;
    let cluster = ProcessCluster::start_proxied(3).await;
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_millis() as u64;
    // Without the fix the first round fails every time; each round takes about 7 s.
    for round in 0..2 {
        let leader = cluster.wait_leader().await;
        let follower = (leader + 1) % cluster.len();
        let endpoint = cluster.members[follower].endpoint();
        let mut c = workload::connect(&endpoint).await.expect("connect");
        let lease = c.lease_grant(TTL, None).await.expect("grant").id();
        let key = format!("deposed/{round}");
        c.put(
            key.as_str(),
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
        // Keep-alives through the follower (forwarded to whoever leads), one at a time: the
        // send time of the last one answered with a TTL bounds the expiry from below.
        let last_renewed = Arc::new(AtomicU64::new(now()));
        let keeper = {
            let last_renewed = last_renewed.clone();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                loop {
                    let Some(mut c) = workload::connect(&endpoint).await else {
                        continue;
                    };
                    let opened =
                        tokio::time::timeout(Duration::from_secs(1), c.lease_keep_alive(lease));
                    let Ok(Ok((mut k, mut s))) = opened.await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let sent = now();
                        if k.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_secs(1), s.message()).await {
                            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                                last_renewed.fetch_max(sent, Ordering::SeqCst);
                            }
                            Ok(Ok(Some(_))) => return,
                            _ => break,
                        }
                    }
                }
            })
        };
        let started = now();
        common::eventually("a keep-alive answered", Duration::from_secs(10), || {
            let renewed = last_renewed.load(Ordering::SeqCst) > started;
            async move { renewed.then_some(()) }
        })
        .await;
        // Past the TTL in the cut-off leader's clock, while a successor renews the lease.
        let rest: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
        cluster.partition(&[&[leader], &rest]);
        tokio::time::sleep(Duration::from_millis(TTL as u64 * 1000 + 1500)).await;
        cluster.heal();
        let watch_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < watch_until {
            let invoke = now();
            let read =
                tokio::time::timeout(Duration::from_secs(1), c.get(key.as_str(), None)).await;
            if let Ok(Ok(r)) = read {
                let renewed = last_renewed.load(Ordering::SeqCst);
                let alive_until = renewed + TTL as u64 * 1000;
                assert!(
                    !r.kvs().is_empty() || invoke >= alive_until,
                    "round {round}: lease {lease:x} was renewed by a keep-alive sent at {renewed} \
                     ms (TTL {TTL} s, alive until at least {alive_until} ms), yet its key was \
                     gone in a read sent at {invoke} ms, after p{leader} (leader, cut off past \
                     the TTL) was reconnected"
                );
            } else {
                c = workload::connect(&endpoint).await.unwrap_or(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        keeper.abort();
        let _ = c.lease_revoke(lease).await;
    }
}

/// Regression (52264f2): a new leader answered keep-alives from its lease clock before it
/// had applied the entries of earlier terms. An earlier leader that can still reach the next
/// leader but no quorum finds a lease expired and appends its revocation there, where it
/// can't commit; its successor (elected for its longer log) commits and applies that
/// revocation only after a round of replication, and a keep-alive it answered in between
/// renewed a lease that was revoked a moment later (a lock changing hands under a holder
/// whose renewal just succeeded). Fixed: a new leader answers keep-alives only once it has
/// applied an entry of its own term.
///
/// Five members, so that the leader and its successor are a minority together. First the
/// leader reaches only the successor (the others reach nobody; the successor refuses their
/// votes while the leader's heartbeats arrive, openraft's leader lease) and the lease, never
/// kept alive, expires in the leader's clock: the revocation lands in the successor's log
/// only. Then the leader is cut off and the successor alone is linked to the other three,
/// which can't elect one of themselves (their logs lack the revocation, so the successor
/// refuses them its vote): the successor wins. Keep-alives sent to every member but the old
/// leader wait there for a leader, and are answered by the successor as soon as it leads
/// (or its followers learn of it): before the revocation applies, without the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_leader_does_not_renew_a_lease_an_earlier_leader_revoked() {
    use common::process::ProcessCluster;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    const TTL: i64 = 2;
    const MEMBERS: usize = 5;
    /// Keep-alive clients per member other than the old leader.
    const KEEPERS_PER_MEMBER: usize = 3;
    const ROUNDS: usize = 3;
    let mut cluster = ProcessCluster::start_proxied(MEMBERS).await;
    // A leader needs only three: the rounds need all five.
    common::eventually(
        "every member answering",
        Duration::from_secs(30),
        || async {
            let statuses = futures::future::join_all((0..MEMBERS).map(|i| cluster.status(i))).await;
            statuses.iter().all(Option::is_some).then_some(())
        },
    )
    .await;
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_millis() as u64;
    // The last log index a member reports (etcd's Status raft_index), within a second.
    let raft_index = |endpoint: String| async move {
        let mut c = workload::connect(&endpoint).await?;
        let status = tokio::time::timeout(Duration::from_secs(1), c.status()).await;
        Some(status.ok()?.ok()?.raft_index())
    };
    // Set-ups where the leadership moved before the cut (it can, right after start-up on a
    // loaded machine): the old leader was not leading when cut off, so nothing was revoked.
    let mut moved = 0;
    let mut round = 0;
    while round < ROUNDS {
        let old = cluster.wait_leader().await;
        let term = cluster.status(old).await.map(|(_, _, term)| term);
        let next = (old + 1) % MEMBERS;
        let rest: Vec<usize> = (0..MEMBERS).filter(|&i| i != old && i != next).collect();
        // Through the successor: a write a follower forwards is answered once the follower
        // has applied it, so the lease is in the successor's table too.
        let mut c = workload::connect(&cluster.members[next].endpoint())
            .await
            .expect("connect");
        let granted = now();
        let lease = c.lease_grant(TTL, None).await.expect("grant").id();
        let key = format!("revoked/{round}-{moved}");
        c.put(
            key.as_str(),
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
        let next_endpoint = cluster.members[next].endpoint();
        let rest_endpoints: Vec<String> = rest
            .iter()
            .map(|&i| cluster.members[i].endpoint())
            .collect();
        let appended_before = common::eventually(
            "the successor's last log index",
            Duration::from_secs(10),
            || raft_index(next_endpoint.clone()),
        )
        .await;
        cluster.partition(&[&[old, next]]);

        // The leader finds the lease expired (nobody keeps it alive) and appends the
        // revocation on the successor, uncommitted. The others' logs stay as they were; the
        // successor's must end up longer than each of theirs: with logs as long, they all
        // grant each other's votes in the star below, and the terms race on with nobody
        // elected (seen, after an entry other than the revocation reached the successor).
        let longer = || async {
            let appended = raft_index(next_endpoint.clone()).await?;
            let others = futures::future::join_all(rest_endpoints.iter().cloned().map(raft_index));
            let longest = others.await.into_iter().collect::<Option<Vec<u64>>>()?;
            Some(appended > appended_before && longest.iter().all(|&i| i < appended))
        };
        let deadline = Instant::now() + Duration::from_secs(TTL as u64 + 15);
        let mut set_up_again = false;
        while longer().await != Some(true) {
            if Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let statuses = futures::future::join_all((0..MEMBERS).map(|i| cluster.status(i))).await;
            let still_leads =
                statuses[old].is_some_and(|(own, leader, t)| own == leader && Some(t) == term);
            if !still_leads && moved < 3 {
                eprintln!(
                    "round {round}: p{old} no longer led in term {term:?} when cut off; \
                     (own id, leader id, term) of each member: {statuses:?}; once more"
                );
                moved += 1;
                set_up_again = true;
                // Whoever led instead was cut off alone and may hold proposals it would
                // forward once healed (see below): restart everyone.
                for i in 0..MEMBERS {
                    cluster.kill(i);
                    cluster.restart(i);
                }
                cluster.heal();
                break;
            }
            panic!(
                "round {round}: p{old} (leader in term {term:?}) never appended its \
                 revocation of lease {lease:x} on p{next} (last log index still \
                 {appended_before}); (own id, leader id, term) of each member: {statuses:?}"
            );
        }
        if set_up_again {
            continue;
        }
        cluster.set_links(|a, b| a != old && b != old && (a == next || b == next));

        // The send time of the last keep-alive answered with a TTL (the grant counts as one):
        // the lease is alive until at least a TTL after it.
        let last_renewed = Arc::new(AtomicU64::new(granted));
        let renewed = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let keepers: Vec<_> = std::iter::once(next)
            .chain(rest.iter().copied())
            .flat_map(|i| std::iter::repeat_n(cluster.members[i].endpoint(), KEEPERS_PER_MEMBER))
            .map(|endpoint| {
                let (last_renewed, renewed, answered) =
                    (last_renewed.clone(), renewed.clone(), answered.clone());
                tokio::spawn(async move {
                    loop {
                        let Some(mut c) = workload::connect(&endpoint).await else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        // One keep-alive per stream (its answer comes inside
                        // `lease_keep_alive`). One not answered within a second is left
                        // waiting at the member and another is sent, so that one sent
                        // recently is always waiting there for a leader. (Started only now:
                        // until its quorum acks go stale, the old leader answers keep-alives
                        // forwarded by the successor, legitimately, and delays the expiry.)
                        loop {
                            let sent = now();
                            let ask = c.lease_keep_alive(lease);
                            match tokio::time::timeout(Duration::from_secs(1), ask).await {
                                Ok(Ok(_)) => {
                                    last_renewed.fetch_max(sent, Ordering::SeqCst);
                                    renewed.fetch_add(1, Ordering::SeqCst);
                                    answered.fetch_add(1, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                // TTL 0: the lease is gone.
                                Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                                    answered.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(Err(_)) => break,
                                Err(_elapsed) => {}
                            }
                        }
                    }
                })
            })
            .collect();

        common::eventually("the successor elected", Duration::from_secs(30), || async {
            (cluster.leader().await == Some(next)).then_some(())
        })
        .await;

        // Reads through the three others until the key is gone (the revocation applied) and
        // a TTL has passed: the key must not be gone less than a TTL after a renewal was sent.
        // Not a fixed window: on a loaded machine the new leader's first leadership checks
        // (heartbeats that must be answered within one heartbeat interval) can fail for a while.
        let elected = Instant::now();
        let mut gone = false;
        let mut reader = 0;
        while !gone || elected.elapsed() < Duration::from_millis(TTL as u64 * 1000 + 1000) {
            assert!(
                elected.elapsed() < Duration::from_secs(30),
                "round {round}: p{old}'s revocation of lease {lease:x} never applied after \
                 p{next} was elected"
            );
            let endpoint = cluster.members[rest[reader % rest.len()]].endpoint();
            reader += 1;
            let invoke = now();
            let read = async {
                let mut c = workload::connect(&endpoint).await?;
                c.get(key.as_str(), None).await.ok()
            };
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), read).await {
                let renewal = last_renewed.load(Ordering::SeqCst);
                let alive_until = renewal + TTL as u64 * 1000;
                gone = r.kvs().is_empty();
                assert!(
                    !gone || invoke >= alive_until,
                    "round {round}: lease {lease:x} was renewed by a keep-alive sent at \
                     {renewal} ms (TTL {TTL} s, alive until at least {alive_until} ms; {} \
                     renewals since p{old} was cut off), yet its key was gone in a read sent \
                     at {invoke} ms: p{old} (leader, linked only to p{next}) had appended its \
                     revocation on p{next}, which then led",
                    renewed.load(Ordering::SeqCst),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nothing else can answer a keep-alive now, and the revocation is in the successor's
        // log since before it was elected: any renewal answered a revoked lease (the reads
        // above catch it too when one runs within a TTL of it).
        let renewals = renewed.load(Ordering::SeqCst);
        eprintln!(
            "round {round}: p{next} elected after p{old}; {} keep-alives answered, {renewals} \
             with a TTL",
            answered.load(Ordering::SeqCst),
        );
        assert_eq!(
            renewals, 0,
            "round {round}: p{next}, elected with p{old}'s revocation of lease {lease:x} in its \
             log, renewed the lease"
        );
        // The premise: keep-alives reached the new leader.
        common::eventually(
            "a keep-alive answered by the new leader",
            Duration::from_secs(10),
            || {
                let n = answered.load(Ordering::SeqCst);
                async move { (n > 0).then_some(()) }
            },
        )
        .await;
        for k in keepers {
            k.abort();
        }
        // Cut off since the switch, the old leader may still hold revocations it proposed
        // there; healed, it would forward them to the new leader (see `LeaseExpire`), and one
        // appended during the next round's set-up would pass for that round's revocation. A
        // restart drops them.
        cluster.kill(old);
        cluster.restart(old);
        cluster.heal();
        round += 1;
    }
}
