//! The lock workload: clients contend for one `v3lockpb` lock through etcd-client's lock
//! client, each attempt on a fresh lease kept alive by a keep-alive stream, and while holding
//! it write a protected resource key with a txn fenced by the lock key's create revision.
//! Some holders stall — stop renewing and sleep past their TTL — and then try one more
//! write, which the fence must refuse once the lock has moved on. Everything is recorded as
//! [`Hold`]s for [`corral::checker::lock`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::checker::lock::{
    Acquire, Acquired, GuardedWrite, Hold, Release, Released, Renewal, WriteOutcome,
};
use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

use super::workload::{classify, connect, connect_with, describe, Failed, Recorder, OP_TIMEOUT};

/// The lock's name; its keys are `LOCK_NAME/<lease hex>`.
pub const LOCK_NAME: &str = "jepsen/lock";
pub const LOCK_PREFIX: &str = "jepsen/lock/";
/// The key only lock holders write, fenced by their token.
pub const RESOURCE: &str = "jepsen/fenced";
/// How long a Lock call may wait for its turn beyond the longest hold (a stalled holder's,
/// which lasts a TTL and then some).
const LOCK_WAIT_MARGIN: Duration = Duration::from_millis(2500);
/// Share of holders that stall past their lease while holding.
const STALL_PROBABILITY: f64 = 0.15;

fn now(recorder: &Recorder) -> u64 {
    recorder.now()
}

/// Keeps one lease alive — one keep-alive at a time, so each answer belongs to the request
/// just sent — moving to the next member when a stream fails, and records each renewal.
struct Keeper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    renewals: Arc<Mutex<Vec<Renewal>>>,
}

impl Keeper {
    fn spawn(
        endpoints: Vec<String>,
        first_member: usize,
        lease: i64,
        ttl: i64,
        recorder: Arc<Recorder>,
    ) -> Keeper {
        let renewals: Arc<Mutex<Vec<Renewal>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let every = Duration::from_millis(u64::try_from(ttl).unwrap_or(1).max(1) * 1000 / 3);
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
                    let Some(mut client) = connect(endpoint).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    // The first keep-alive is sent and answered inside `lease_keep_alive`
                    // (an error if the lease is gone); its answer carries the full TTL.
                    let sent = recorder.now();
                    let opened = tokio::time::timeout(OP_TIMEOUT, client.lease_keep_alive(lease));
                    let (mut keeper, mut stream) = match opened.await {
                        Ok(Ok(pair)) => pair,
                        Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => return,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    renewals.lock().unwrap().push(Renewal {
                        sent,
                        received: recorder.now(),
                        ttl,
                    });
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(every) => {}
                            _ = stopped.changed() => return,
                        }
                        let sent = recorder.now();
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(OP_TIMEOUT, stream.message()).await {
                            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                                renewals.lock().unwrap().push(Renewal {
                                    sent,
                                    received: recorder.now(),
                                    ttl: resp.ttl(),
                                });
                            }
                            // The lease is gone: nothing left to keep alive.
                            Ok(Ok(Some(_))) => return,
                            // A late answer would be taken for the next request's: start over.
                            _ => break,
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

    /// Stops renewing; returns the renewals recorded.
    async fn stop(self) -> Vec<Renewal> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let renewals = self.renewals.lock().unwrap().clone();
        renewals
    }
}

pub struct Locker {
    pub id: u32,
    endpoints: Vec<String>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    rng: StdRng,
    member: usize,
    holds: Arc<Mutex<Vec<Hold>>>,
    /// Lease TTL of an attempt, seconds: short, so that stalled holders lose the lock soon.
    ttl: i64,
}

impl Locker {
    pub fn new(
        id: u32,
        endpoints: Vec<String>,
        recorder: Arc<Recorder>,
        stop: Arc<AtomicBool>,
        seed: u64,
        holds: Arc<Mutex<Vec<Hold>>>,
        ttl: i64,
    ) -> Locker {
        Locker {
            id,
            member: id as usize % endpoints.len(),
            endpoints,
            recorder,
            stop,
            rng: StdRng::seed_from_u64(seed.wrapping_mul(7_000_003).wrapping_add(id as u64)),
            holds,
            ttl,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn next_member(&mut self) {
        self.member = (self.member + 1) % self.endpoints.len();
    }

    async fn pause(&mut self, max_ms: u64) {
        let ms = self.rng.gen_range(0..=max_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Runs `fut` unless the run stops first (then `None`): a Lock call waits for seconds.
    async fn unless_stopped<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        let stop = self.stop.clone();
        tokio::select! {
            v = fut => Some(v),
            _ = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } => None,
        }
    }

    pub async fn run(mut self) {
        let mut seq = 0u64;
        let lock_wait = Duration::from_secs(self.ttl.max(1) as u64) + LOCK_WAIT_MARGIN;
        while !self.stopped() {
            let endpoint = self.endpoints[self.member].clone();
            let Some(mut client) = connect_with(&endpoint, lock_wait).await else {
                self.next_member();
                self.pause(100).await;
                continue;
            };
            let granted_at = self.recorder.now();
            let grant = tokio::time::timeout(OP_TIMEOUT, client.lease_grant(self.ttl, None)).await;
            let Ok(Ok(grant)) = grant else {
                self.next_member();
                self.pause(100).await;
                continue;
            };
            let (lease, ttl) = (grant.id(), grant.ttl());
            let keeper = Keeper::spawn(
                self.endpoints.clone(),
                self.member,
                lease,
                ttl,
                self.recorder.clone(),
            );
            let invoke = self.recorder.now();
            let options = LockOptions::new().with_lease(lease);
            let locked = self
                .unless_stopped(tokio::time::timeout(
                    lock_wait,
                    client.lock(LOCK_NAME, Some(options)),
                ))
                .await;
            let complete = self.recorder.now();
            let outcome = match locked {
                Some(Ok(Ok(resp))) => Acquired::Held {
                    key: String::from_utf8_lossy(resp.key()).into_owned(),
                    // corral answers with the lock key's create revision in the header.
                    token: resp.header().map_or(-1, |h| h.revision()),
                },
                Some(Ok(Err(e))) => {
                    let why = self.recorder.count_error(format!("lock: {}", describe(&e)));
                    match classify(&e) {
                        Failed::NotApplied => Acquired::Refused { why },
                        Failed::Unknown => Acquired::Unknown { why },
                    }
                }
                Some(Err(_)) => Acquired::Unknown {
                    why: self.recorder.count_error("lock: client timeout".into()),
                },
                None => Acquired::Unknown {
                    why: "the run ended while waiting".into(),
                },
            };
            let mut hold = Hold {
                client: self.id,
                lease,
                ttl,
                granted_at,
                renewals: Vec::new(),
                acquire: Acquire {
                    invoke,
                    complete,
                    outcome: outcome.clone(),
                },
                writes: Vec::new(),
                release: None,
            };
            let mut keeper = Some(keeper);
            if let Acquired::Held { key, token } = outcome {
                let writes = self.rng.gen_range(1..=3);
                for _ in 0..writes {
                    seq += 1;
                    let w = self.guarded_write(&mut client, &key, token, seq).await;
                    let unknown = w.outcome == WriteOutcome::Unknown;
                    hold.writes.push(w);
                    if unknown {
                        break;
                    }
                    self.pause(50).await;
                }
                if self.rng.gen_bool(STALL_PROBABILITY) && !self.stopped() {
                    // Lose the lock without knowing: stop renewing, sleep past the TTL, then
                    // write as if still holding it.
                    if let Some(k) = keeper.take() {
                        hold.renewals = k.stop().await;
                    }
                    let past_ttl = Duration::from_millis(ttl.max(1) as u64 * 1000 + 500);
                    tokio::time::sleep(past_ttl).await;
                    seq += 1;
                    let w = self.guarded_write(&mut client, &key, token, seq).await;
                    hold.writes.push(w);
                }
                hold.release = Some(self.release(&mut client, &key).await);
            } else {
                // The member failed us: revoke (below) and try again elsewhere.
                self.next_member();
                if let Some(c) = connect(&self.endpoints[self.member]).await {
                    client = c;
                }
            }
            if let Some(k) = keeper.take() {
                hold.renewals = k.stop().await;
            }
            // Frees the lock at once if the unlock did not (or the Lock call's outcome is
            // unknown: a key of ours may be waiting in line); the lease would expire anyway.
            let _ = tokio::time::timeout(OP_TIMEOUT, client.lease_revoke(lease)).await;
            self.holds.lock().unwrap().push(hold);
            self.pause(100).await;
        }
    }

    /// If the lock key still has create revision `token`, put a fresh value in the resource.
    async fn guarded_write(
        &mut self,
        client: &mut Client,
        key: &str,
        token: i64,
        seq: u64,
    ) -> GuardedWrite {
        let value = format!("t{token}-c{}-{seq}", self.id);
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, token)])
            .and_then([TxnOp::put(RESOURCE, value.as_str(), None)]);
        let invoke = now(&self.recorder);
        let result = tokio::time::timeout(OP_TIMEOUT, client.txn(txn)).await;
        let complete = now(&self.recorder);
        let outcome = match result {
            Ok(Ok(r)) => WriteOutcome::Ok {
                revision: r.header().map_or(-1, |h| h.revision()),
                succeeded: r.succeeded(),
            },
            Ok(Err(e)) => {
                self.recorder
                    .count_error(format!("guarded write: {}", describe(&e)));
                WriteOutcome::Unknown
            }
            Err(_) => {
                self.recorder
                    .count_error("guarded write: client timeout".into());
                WriteOutcome::Unknown
            }
        };
        GuardedWrite {
            invoke,
            complete,
            value,
            outcome,
        }
    }

    /// Unlock, on the connection in use or (once that fails) a new one to the next member;
    /// `client` is left on the member that answered.
    async fn release(&mut self, client: &mut Client, key: &str) -> Release {
        let invoke = self.recorder.now();
        // Whether an attempt that failed may still have deleted the key.
        let mut maybe_applied = false;
        let mut outcome = Released::Unknown;
        for attempt in 0..self.endpoints.len() {
            if attempt > 0 {
                self.next_member();
                match connect(&self.endpoints[self.member]).await {
                    Some(c) => *client = c,
                    None => continue,
                }
            }
            match tokio::time::timeout(OP_TIMEOUT, client.unlock(key)).await {
                Ok(Ok(r)) => {
                    outcome = Released::Ok {
                        revision: r.header().map_or(-1, |h| h.revision()),
                    };
                    break;
                }
                Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == Code::NotFound => {
                    if !maybe_applied {
                        outcome = Released::NotHeld;
                    }
                    break;
                }
                Ok(Err(e)) => {
                    self.recorder
                        .count_error(format!("unlock: {}", describe(&e)));
                    maybe_applied |= matches!(classify(&e), Failed::Unknown);
                }
                Err(_) => {
                    self.recorder.count_error("unlock: client timeout".into());
                    maybe_applied = true;
                }
            }
        }
        Release {
            invoke,
            complete: self.recorder.now(),
            outcome,
        }
    }
}
