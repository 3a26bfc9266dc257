//! The clients: sequential processes issuing single-key operations through a real etcd
//! client and recording each one — invocation and completion time, outcome — in a shared
//! history for the checker.
//!
//! Keys rotate: a key takes a bounded number of operations and is then retired for a fresh
//! one, so each key's sub-history stays small enough for the linearizability search even
//! when faults leave many operations with unknown outcomes (as Jepsen's independent
//! checker does).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::checker::{Call, Op, Outcome, Reply};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

/// How long a client waits for any one answer before it gives up (outcome unknown).
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Every key of the workload lives under this prefix.
pub const PREFIX: &str = "jepsen/";
/// Keys holding a lease live under this prefix.
pub const LEASE_PREFIX: &str = "jepsen/lease/";
/// Lease TTL in seconds: short, so that many leases expire during a run.
const LEASE_TTL: i64 = 2;
/// Writes with an unknown outcome a key takes before it is retired.
const MAX_UNKNOWN_PER_KEY: usize = 6;

/// The shared history and clock.
pub struct Recorder {
    epoch: Instant,
    ops: Mutex<Vec<Op>>,
    sessions: AtomicU32,
    /// Session → index of the member it talks to.
    session_members: Mutex<BTreeMap<u32, usize>>,
    /// Error messages seen, with counts (printed in the summary).
    errors: Mutex<HashMap<String, usize>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            epoch: Instant::now(),
            ops: Mutex::default(),
            sessions: AtomicU32::new(0),
            session_members: Mutex::default(),
            errors: Mutex::default(),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A new session (connection) to member `member`.
    pub fn new_session(&self, member: usize) -> u32 {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        self.session_members.lock().unwrap().insert(session, member);
        session
    }

    pub fn session_members(&self) -> BTreeMap<u32, usize> {
        self.session_members.lock().unwrap().clone()
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    pub fn history(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().unwrap().clone();
        ops.sort_by_key(|op| op.invoke);
        ops
    }

    /// Counts an error by its message and returns the message.
    pub fn count_error(&self, text: String) -> String {
        // Group messages that differ only in numbers (ports, ids).
        let group: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        *self.errors.lock().unwrap().entry(group).or_default() += 1;
        text
    }

    pub fn error_summary(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self.errors.lock().unwrap().clone().into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

/// Hands out keys: a few are active at a time, each retired after `ops_per_key` operations.
pub struct KeyPool {
    inner: Mutex<Pool>,
}

struct Pool {
    /// (key, operations claimed on it).
    active: Vec<(String, usize)>,
    next: usize,
    ops_per_key: usize,
    /// Recently written values per key: what compare-and-sets expect.
    recent: HashMap<String, Vec<String>>,
    /// Writes with an unknown outcome per key.
    unknowns: HashMap<String, usize>,
}

impl KeyPool {
    pub fn new(active: usize, ops_per_key: usize) -> KeyPool {
        KeyPool {
            inner: Mutex::new(Pool {
                active: (0..active).map(|i| (key_name(i), 0)).collect(),
                next: active,
                ops_per_key,
                recent: HashMap::new(),
                unknowns: HashMap::new(),
            }),
        }
    }

    fn claim(&self, rng: &mut StdRng) -> String {
        let mut pool = self.inner.lock().unwrap();
        let i = rng.gen_range(0..pool.active.len());
        pool.active[i].1 += 1;
        let key = pool.active[i].0.clone();
        if pool.active[i].1 >= pool.ops_per_key {
            let fresh = key_name(pool.next);
            pool.next += 1;
            pool.active[i] = (fresh, 0);
        }
        key
    }

    /// A write on `key` ended with an unknown outcome. Each one stays concurrent with
    /// everything after it, multiplying the orders the checker must consider, so a key that
    /// collected a few is retired early.
    fn unknown(&self, key: &str) {
        let mut pool = self.inner.lock().unwrap();
        let count = pool.unknowns.entry(key.to_string()).or_default();
        *count += 1;
        if *count >= MAX_UNKNOWN_PER_KEY {
            let next = pool.next;
            if let Some(slot) = pool.active.iter_mut().find(|(k, _)| k == key) {
                *slot = (key_name(next), 0);
                pool.next += 1;
            }
        }
    }

    fn wrote(&self, key: &str, value: &str) {
        let mut pool = self.inner.lock().unwrap();
        let recent = pool.recent.entry(key.to_string()).or_default();
        recent.push(value.to_string());
        if recent.len() > 3 {
            recent.remove(0);
        }
    }

    /// A value a compare-and-set might find: a recent one, or "no key".
    fn expectation(&self, key: &str, rng: &mut StdRng) -> Option<String> {
        let pool = self.inner.lock().unwrap();
        let recent = pool.recent.get(key).map(Vec::as_slice).unwrap_or_default();
        let pick = rng.gen_range(0..=recent.len());
        recent.get(pick).cloned()
    }
}

fn key_name(i: usize) -> String {
    format!("{PREFIX}k{i:04}")
}

/// What became of a request that got an error.
pub enum Failed {
    /// Refused before it could take effect (bad argument, no such lease, connection refused).
    NotApplied,
    /// It may have taken effect.
    Unknown,
}

pub fn classify(e: &etcd_client::Error) -> Failed {
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented => Failed::NotApplied,
            // The connection could not be made: nothing was sent.
            Code::Unavailable if is_connect_failure(s.message()) => Failed::NotApplied,
            _ => Failed::Unknown,
        },
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
            Failed::NotApplied
        }
        _ => Failed::Unknown,
    }
}

/// An error in a line: a gRPC status as its code and message, anything else as displayed.
pub fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

pub fn is_connect_failure(message: &str) -> bool {
    message.contains("tcp connect error") || message.contains("Connection refused")
}

pub async fn connect(endpoint: &str) -> Option<Client> {
    connect_with(endpoint, OP_TIMEOUT).await
}

/// A client whose requests give up after `timeout` (a Lock call waits its turn longer).
pub async fn connect_with(endpoint: &str, timeout: Duration) -> Option<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(timeout);
    tokio::time::timeout(OP_TIMEOUT, Client::connect([endpoint], Some(options)))
        .await
        .ok()?
        .ok()
}

/// Sends one call and turns the response into a reply and its header revision.
async fn execute(
    client: &mut Client,
    key: &str,
    call: &Call,
    lease: Option<i64>,
) -> Result<(i64, Reply), etcd_client::Error> {
    let rev = |h: Option<&etcd_client::ResponseHeader>| h.map(|h| h.revision()).unwrap_or(-1);
    match call {
        Call::Get | Call::SerializableGet => {
            let options =
                (*call == Call::SerializableGet).then(|| GetOptions::new().with_serializable());
            let r = client.get(key, options).await?;
            let kv = r.kvs().first();
            Ok((
                rev(r.header()),
                Reply::Read {
                    value: kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    mod_revision: kv.map(|kv| kv.mod_revision()).unwrap_or(0),
                },
            ))
        }
        Call::Put { value } => {
            let options = lease.map(|id| PutOptions::new().with_lease(id));
            let r = client.put(key, value.as_str(), options).await?;
            Ok((rev(r.header()), Reply::Written))
        }
        Call::Delete => {
            let r = client.delete(key, None).await?;
            Ok((
                rev(r.header()),
                Reply::Deleted {
                    existed: r.deleted() > 0,
                },
            ))
        }
        Call::Cas { expect, value } => {
            let compare = match expect {
                Some(v) => Compare::value(key, CompareOp::Equal, v.as_str()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value.as_str(), None)]);
            let r = client.txn(txn).await?;
            Ok((
                rev(r.header()),
                Reply::Swapped {
                    succeeded: r.succeeded(),
                },
            ))
        }
        Call::Expire => unreachable!("not a request"),
    }
}

/// A sequential client talking to one member at a time; after a failure it moves on to the
/// next member (as an etcd client with several endpoints does) on a new session.
pub struct Worker {
    pub id: u32,
    pub endpoints: Vec<String>,
    pub recorder: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
    rng: StdRng,
    member: usize,
    conn: Option<(Client, u32)>,
}

impl Worker {
    pub fn new(
        id: u32,
        endpoints: Vec<String>,
        recorder: Arc<Recorder>,
        stop: Arc<AtomicBool>,
        seed: u64,
    ) -> Worker {
        let member = id as usize % endpoints.len();
        Worker {
            id,
            endpoints,
            recorder,
            stop,
            rng: StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(id as u64)),
            member,
            conn: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Pacing between operations, so two cores are not saturated.
    async fn pause(&mut self, max_ms: u64) {
        let ms = self.rng.gen_range(0..=max_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn ensure_connected(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match connect(&self.endpoints[self.member]).await {
            Some(c) => {
                self.conn = Some((c, self.recorder.new_session(self.member)));
                true
            }
            None => {
                self.next_member();
                false
            }
        }
    }

    fn next_member(&mut self) {
        self.conn = None;
        self.member = (self.member + 1) % self.endpoints.len();
    }

    /// Runs `call` on `key` and records it. Returns the outcome recorded, if any.
    async fn perform(&mut self, key: &str, call: Call, lease: Option<i64>) -> Option<Outcome> {
        let (client, session) = self.conn.as_mut()?;
        let session = *session;
        let invoke = self.recorder.now();
        let result = tokio::time::timeout(OP_TIMEOUT, execute(client, key, &call, lease)).await;
        let complete = self.recorder.now();
        let is_read = matches!(call, Call::Get | Call::SerializableGet);
        let (outcome, note) = match result {
            Ok(Ok((revision, reply))) => (Outcome::Ok { revision, reply }, None),
            Ok(Err(e)) => {
                let text = self.recorder.count_error(describe(&e));
                self.next_member();
                match classify(&e) {
                    Failed::NotApplied => return None,
                    Failed::Unknown if is_read => return None,
                    Failed::Unknown => (Outcome::Unknown, Some(text)),
                }
            }
            Err(_elapsed) => {
                let text = self.recorder.count_error("client timeout".into());
                self.next_member();
                if is_read {
                    return None;
                }
                (Outcome::Unknown, Some(text))
            }
        };
        self.recorder.record(Op {
            client: self.id,
            session,
            key: key.to_string(),
            call,
            invoke,
            complete,
            outcome: outcome.clone(),
            note,
        });
        Some(outcome)
    }

    /// The key-value workload: reads, writes, deletes and compare-and-sets on rotating keys.
    pub async fn run_kv(mut self, pool: Arc<KeyPool>) {
        let mut seq = 0u64;
        while !self.stopped() {
            if !self.ensure_connected().await {
                self.pause(100).await;
                continue;
            }
            let key = pool.claim(&mut self.rng);
            seq += 1;
            let value = format!("c{}-{seq}", self.id);
            let roll = self.rng.gen_range(0..100);
            let call = match roll {
                0..35 => Call::Get,
                35..40 => Call::SerializableGet,
                40..65 => Call::Put { value },
                65..90 => Call::Cas {
                    expect: pool.expectation(&key, &mut self.rng),
                    value,
                },
                _ => Call::Delete,
            };
            if let Some(v) = match &call {
                Call::Put { value } | Call::Cas { value, .. } => Some(value.clone()),
                _ => None,
            } {
                pool.wrote(&key, &v);
            }
            if self.perform(&key, call, None).await == Some(Outcome::Unknown) {
                pool.unknown(&key);
                // The member is likely in trouble: do not pile up unknowns back to back.
                self.pause(100).await;
            }
            self.pause(20).await;
        }
    }

    /// The lease workload: grant a short lease, attach one fresh key to it, never keep it
    /// alive, and keep reading recent lease keys. Each key is recorded with an `Expire`
    /// operation from the grant on: its deletion may come at any time, but only once.
    pub async fn run_leases(mut self, lease_keys: Arc<Mutex<Vec<String>>>) {
        let mut recent: Vec<String> = Vec::new();
        while !self.stopped() {
            if !self.ensure_connected().await {
                self.pause(100).await;
                continue;
            }
            let granted_at = self.recorder.now();
            let Some((client, _)) = self.conn.as_mut() else {
                continue;
            };
            let grant = tokio::time::timeout(OP_TIMEOUT, client.lease_grant(LEASE_TTL, None)).await;
            match grant {
                Ok(Ok(lease)) => {
                    let key = format!("{LEASE_PREFIX}{:x}", lease.id());
                    lease_keys.lock().unwrap().push(key.clone());
                    self.recorder.record(Op {
                        client: self.id,
                        session: u32::MAX,
                        key: key.clone(),
                        call: Call::Expire,
                        invoke: granted_at,
                        complete: granted_at,
                        outcome: Outcome::Unknown,
                        note: Some(format!("lease {:x} expiry", lease.id())),
                    });
                    let value = format!("lease-{:x}", lease.id());
                    self.perform(&key, Call::Put { value }, Some(lease.id()))
                        .await;
                    recent.push(key);
                    if recent.len() > 5 {
                        recent.remove(0);
                    }
                }
                Ok(Err(e)) => {
                    self.recorder.count_error(e.to_string());
                    self.next_member();
                }
                Err(_) => self.next_member(),
            }
            for _ in 0..3 {
                if recent.is_empty() || self.stopped() || !self.ensure_connected().await {
                    break;
                }
                let key = recent[self.rng.gen_range(0..recent.len())].clone();
                self.perform(&key, Call::Get, None).await;
                self.pause(100).await;
            }
        }
    }
}
