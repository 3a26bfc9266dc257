//! Locks with fencing tokens: clients contend for one `v3lockpb` lock, each attempt on a lease
//! of its own, and while they hold it write a protected resource key with a txn guarded by the
//! lock key's create revision (the fencing token). What they saw must show:
//!
//! - every token was handed out once, and tokens grow in real-time order of acquisition;
//! - a lock was never granted while an earlier holder provably still held it — the only way
//!   an earlier holder loses the lock without releasing it is its lease expiring, and a lease
//!   can't expire before the TTL since its last renewal (see [`Hold::earliest_expiry`]);
//! - the fence held: a write guarded by an older token never got through once a newer token
//!   was granted, so the resource's writes never go back to an older token;
//! - against the store's event log (when given): every write applied to the resource was made
//!   while its token's lock key was the oldest one under the lock prefix (the holder), tokens
//!   in the log never go back — including writes whose outcome the client never learned — and
//!   a refused write was refused because its lock key was really gone.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::watch::WatchEvent;
use super::Problem;

/// One attempt to take the lock: a fresh lease, the Lock call, the guarded writes made while
/// holding it, and the Unlock. Times are nanoseconds on the history's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub client: u32,
    /// The lease the lock key is attached to (one per attempt, never reused).
    pub lease: i64,
    /// The TTL the grant answered with, seconds.
    pub ttl: i64,
    /// When the grant was sent: the lease's expiry clock can't start before.
    pub granted_at: u64,
    /// Keep-alives answered with a positive TTL.
    pub renewals: Vec<Renewal>,
    pub acquire: Acquire,
    pub writes: Vec<GuardedWrite>,
    /// `None`: never sent (the run ended while holding); the client believed it held the lock
    /// to the end.
    pub release: Option<Release>,
}

/// A keep-alive the leader answered with `ttl` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub sent: u64,
    pub received: u64,
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Acquired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acquired {
    /// Told it holds the lock: its lock key, and the key's create revision (the token).
    Held { key: String, token: i64 },
    /// Refused: nothing held (e.g. the lease was gone).
    Refused { why: String },
    /// No answer, or an error after the request may have been acted on. The client then
    /// revokes the lease and does not consider itself a holder.
    Unknown { why: String },
}

/// A txn on the resource key: if the lock key's create revision is still the token, put
/// `value` (unique per write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedWrite {
    pub invoke: u64,
    pub complete: u64,
    pub value: String,
    pub outcome: WriteOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The txn's answer and its header revision.
    Ok {
        revision: i64,
        succeeded: bool,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Released {
    /// The lock key was deleted at `revision`.
    Ok {
        revision: i64,
    },
    /// The lock key was already gone (the lease expired first).
    NotHeld,
    Unknown,
}

fn secs(ns: u64) -> String {
    if ns == u64::MAX {
        "never".into()
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

fn ttl_ns(ttl: i64) -> u64 {
    u64::try_from(ttl)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
}

impl Hold {
    /// The fencing token, if the client was told it holds the lock.
    pub fn token(&self) -> Option<i64> {
        match self.acquire.outcome {
            Acquired::Held { token, .. } => Some(token),
            _ => None,
        }
    }

    pub fn key(&self) -> Option<&str> {
        match &self.acquire.outcome {
            Acquired::Held { key, .. } => Some(key),
            _ => None,
        }
    }

    /// When the client stopped believing it holds the lock: when it sent the Unlock. Only from
    /// then on may the Unlock have deleted the lock key.
    pub fn hold_end(&self) -> u64 {
        self.release.as_ref().map_or(u64::MAX, |r| r.invoke)
    }

    /// The earliest moment the lease could have expired (deleting the lock key).
    ///
    /// The leader renews a lease to its full TTL when it answers a keep-alive, at some moment
    /// between the request being *sent* and the answer arriving, so a renewal answered with
    /// TTL `t` keeps the lease at least until `sent + t`: the send time is the sound bound,
    /// the receive time is not (a slow answer would stretch the bound past the real expiry).
    /// Likewise the grant starts the clock no earlier than the grant was sent. A new leader
    /// restarts every lease's full TTL and a paused leader's clock only runs late, so neither
    /// can bring the expiry before this bound; only a server bug can. Processes share the
    /// host's monotonic clock, so no skew allowance is needed.
    pub fn earliest_expiry(&self) -> u64 {
        let grant = self.granted_at.saturating_add(ttl_ns(self.ttl));
        self.renewals
            .iter()
            .filter(|r| r.ttl > 0)
            .map(|r| r.sent.saturating_add(ttl_ns(r.ttl)))
            .fold(grant, u64::max)
    }

    /// Writes that got through.
    fn successful_writes(&self) -> impl Iterator<Item = (&GuardedWrite, i64)> {
        self.writes.iter().filter_map(|w| match w.outcome {
            WriteOutcome::Ok {
                revision,
                succeeded: true,
            } => Some((w, revision)),
            _ => None,
        })
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{} lease {:x} ", self.client, self.lease)?;
        match &self.acquire.outcome {
            Acquired::Held { key, token } => write!(f, "token {token} ({key:?})")?,
            Acquired::Refused { why } => write!(f, "refused ({why})")?,
            Acquired::Unknown { why } => write!(f, "unknown ({why})")?,
        }
        write!(
            f,
            ": acquire [{}..{}], ",
            secs(self.acquire.invoke),
            secs(self.acquire.complete)
        )?;
        match &self.release {
            Some(r) => write!(
                f,
                "release [{}..{}] {:?}, ",
                secs(r.invoke),
                secs(r.complete),
                r.outcome
            )?,
            None => write!(f, "never released, ")?,
        }
        write!(
            f,
            "lease alive until at least {} (TTL {} s, {} renewals)",
            secs(self.earliest_expiry()),
            self.ttl,
            self.renewals.len()
        )
    }
}

impl fmt::Display for GuardedWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write {:?} [{}..{}] => ",
            self.value,
            secs(self.invoke),
            secs(self.complete)
        )?;
        match self.outcome {
            WriteOutcome::Ok {
                revision,
                succeeded,
            } => write!(f, "succeeded {succeeded} @{revision}"),
            WriteOutcome::Unknown => write!(f, "unknown"),
        }
    }
}

/// Where the lock and the resource live in the store's event log.
#[derive(Debug, Clone, Copy)]
pub struct LockLog<'a> {
    /// The full event log (a watch of every key from revision 1).
    pub events: &'a [WatchEvent],
    /// The lock's key prefix (`<name>/`): every lock key is under it.
    pub lock_prefix: &'a str,
    /// The protected resource key.
    pub resource: &'a str,
}

/// Problems of one kind reported at most, when one bad token would repeat them.
const MAX_REPORTED: usize = 10;

/// Every lock check over the recorded attempts; the log checks only with `log`.
pub fn check_locks(holds: &[Hold], log: Option<LockLog<'_>>) -> Vec<Problem> {
    let mut held: Vec<(&Hold, i64)> = holds
        .iter()
        .filter_map(|h| h.token().map(|t| (h, t)))
        .collect();
    held.sort_by_key(|(h, t)| (*t, h.acquire.invoke));
    let mut problems = Vec::new();
    unique_tokens(&held, &mut problems);
    tokens_in_real_time_order(&held, &mut problems);
    holders_never_overlap(&held, &mut problems);
    fence_holds(&held, &mut problems);
    writes_in_revision_order(&held, &mut problems);
    if let Some(log) = log {
        against_log(&held, log, &mut problems);
    }
    problems
}

fn unique_tokens(held: &[(&Hold, i64)], problems: &mut Vec<Problem>) {
    for pair in held.windows(2) {
        let ((a, ta), (b, tb)) = (pair[0], pair[1]);
        if ta == tb {
            problems.push(Problem::LockToken {
                why: format!("token {ta} was given to two acquisitions:\n    {a}\n    {b}"),
            });
        }
    }
}

/// An acquisition that completed before another was invoked has the smaller token: the later
/// one's lock key was created after the earlier one's, and revisions only grow.
fn tokens_in_real_time_order(held: &[(&Hold, i64)], problems: &mut Vec<Problem>) {
    let mut reported = 0;
    for &(b, tb) in held {
        // The earlier acquisition with the largest token, if that is not smaller.
        let offender = held
            .iter()
            .filter(|(a, ta)| a.acquire.complete < b.acquire.invoke && *ta >= tb)
            .max_by_key(|(_, ta)| *ta);
        if let Some((a, _)) = offender {
            problems.push(Problem::LockToken {
                why: format!(
                    "token {tb} was acquired after token {} had been acquired:\n    {a}\n    {b}",
                    a.token().unwrap_or_default()
                ),
            });
            reported += 1;
            if reported >= MAX_REPORTED {
                return;
            }
        }
    }
}

/// Mutual exclusion in real time. The lock is granted in token order, and `b` (token tb) can
/// only be granted once the key of every earlier holder `a` (ta < tb) is gone. `a`'s key goes
/// by `a`'s Unlock — not before it was sent, [`Hold::hold_end`] — or by `a`'s lease expiring
/// — not before [`Hold::earliest_expiry`]. (The client revokes the lease only after sending
/// the Unlock, and the Lock call's own clean-up only runs when it did not succeed.) `b` was
/// granted the lock at the latest when told so, so
///
/// `b.acquire.complete < min(a.hold_end, a.earliest_expiry)`
///
/// proves the two held it at once. Overlaps where `a`'s lease may have run out are allowed:
/// `a` may not know yet that it lost the lock — what fencing tokens are for.
fn holders_never_overlap(held: &[(&Hold, i64)], problems: &mut Vec<Problem>) {
    let mut reported = 0;
    for (i, &(b, tb)) in held.iter().enumerate() {
        let granted = b.acquire.complete;
        let still_held = held[..i]
            .iter()
            .find(|(a, ta)| *ta < tb && granted < a.hold_end().min(a.earliest_expiry()));
        if let Some((a, _)) = still_held {
            problems.push(Problem::LockHoldersOverlap {
                earlier: a.to_string(),
                later: b.to_string(),
                why: format!(
                    "the later holder was told it holds the lock at {}, before the earlier one \
                     sent its unlock ({}) and before its lease could have expired ({})",
                    secs(granted),
                    secs(a.hold_end()),
                    secs(a.earliest_expiry())
                ),
            });
            reported += 1;
            if reported >= MAX_REPORTED {
                return;
            }
        }
    }
}

/// Once token tb is granted, the key of every older token is gone, so a write guarded by an
/// older token and sent after that must be refused. (This also means no successful write
/// goes back to an older token after a newer token's write succeeded: that writer was
/// granted the lock before it wrote.)
fn fence_holds(held: &[(&Hold, i64)], problems: &mut Vec<Problem>) {
    let mut reported = 0;
    for &(a, ta) in held {
        for (w, _) in a.successful_writes() {
            let newer = held
                .iter()
                .filter(|(b, tb)| *tb > ta && b.acquire.complete < w.invoke)
                .min_by_key(|(b, _)| b.acquire.complete);
            if let Some((b, _)) = newer {
                problems.push(Problem::Fencing {
                    why: format!(
                        "a write fenced by token {ta} got through although a newer token had \
                         been granted before it was sent:\n    {w}\n    by {a}\n    newer: {b}"
                    ),
                });
                reported += 1;
                if reported >= MAX_REPORTED {
                    return;
                }
                break;
            }
        }
    }
}

/// Acknowledged successful writes, by revision: one revision each, tokens never going back.
fn writes_in_revision_order(held: &[(&Hold, i64)], problems: &mut Vec<Problem>) {
    let mut writes: Vec<(i64, i64, &GuardedWrite)> = held
        .iter()
        .flat_map(|&(h, t)| h.successful_writes().map(move |(w, r)| (r, t, w)))
        .collect();
    writes.sort_by_key(|(r, t, _)| (*r, *t));
    let mut highest: Option<(i64, i64, &GuardedWrite)> = None;
    for w in writes {
        if let Some(h) = highest {
            if w.0 == h.0 {
                problems.push(Problem::Fencing {
                    why: format!(
                        "two writes acknowledged at revision {}:\n    {}\n    {}",
                        w.0, h.2, w.2
                    ),
                });
                return;
            }
            if w.1 < h.1 {
                problems.push(Problem::Fencing {
                    why: format!(
                        "writes went back from token {} to token {}:\n    {}\n    {}",
                        h.1, w.1, h.2, w.2
                    ),
                });
                return;
            }
        }
        highest = Some(w);
    }
}

/// The lock keys under the prefix, live at some point of the log: key → create revision.
type LiveKeys<'a> = BTreeMap<&'a str, i64>;

fn against_log(held: &[(&Hold, i64)], log: LockLog<'_>, problems: &mut Vec<Problem>) {
    // Every value ever sent to the resource, acknowledged or not, names its write.
    let mut by_value: HashMap<&str, (&Hold, i64, &GuardedWrite)> = HashMap::new();
    for &(h, t) in held {
        for w in &h.writes {
            by_value.insert(w.value.as_str(), (h, t, w));
        }
    }
    // Lifetimes of the lock keys: (key, create revision) → delete revision.
    let mut lifetimes: HashMap<(&str, i64), i64> = HashMap::new();
    let mut live: LiveKeys<'_> = BTreeMap::new();
    let mut last: Option<(i64, &WatchEvent)> = None;
    let mut reported = 0;
    let mut report = |problems: &mut Vec<Problem>, why: String| {
        if reported < MAX_REPORTED {
            problems.push(Problem::Fencing { why });
        }
        reported += 1;
    };
    for e in log.events {
        if e.key.starts_with(log.lock_prefix) {
            match &e.value {
                Some(_) => {
                    live.insert(&e.key, e.create_revision);
                }
                None => {
                    if let Some(created) = live.remove(e.key.as_str()) {
                        lifetimes.insert((&e.key, created), e.revision);
                    }
                }
            }
            continue;
        }
        if e.key != log.resource {
            continue;
        }
        let Some(value) = &e.value else {
            report(
                problems,
                format!("the resource was deleted, which no client does: {e}"),
            );
            continue;
        };
        // Txns from other workloads never write here, so anything else is a stray write.
        let Some(&(h, token, w)) = by_value.get(value.as_str()) else {
            report(
                problems,
                format!("the resource holds a value no guarded write sent: {e}"),
            );
            continue;
        };
        let holder = live.iter().min_by_key(|(_, c)| **c);
        if holder.map(|(k, c)| (*k, *c)) != Some((h.key().unwrap_or_default(), token)) {
            report(
                problems,
                format!(
                    "a write fenced by token {token} was applied at revision {} while the \
                     lock was held by {holder:?} (lock keys then: {live:?}):\n    {w}\n    by {h}",
                    e.revision
                ),
            );
        }
        if let Some((before, prev)) = last {
            if token < before {
                report(
                    problems,
                    format!(
                        "the resource went back from token {before} ({prev}) to token {token} \
                         ({e}):\n    {w}\n    by {h}"
                    ),
                );
            }
        }
        last = Some((token, e));
    }
    let at: HashMap<(i64, &str), &WatchEvent> = log
        .events
        .iter()
        .map(|e| ((e.revision, e.key.as_str()), e))
        .collect();
    for &(h, token) in held {
        let key = h.key().unwrap_or_default();
        // The token is the create revision of the key the Lock call answered with.
        match at.get(&(token, key)) {
            Some(e) if e.value.is_some() && e.create_revision == token => {}
            found => report(
                problems,
                format!(
                    "token {token} is not the create revision of the lock key: the log has \
                     {found:?} at that revision\n    {h}"
                ),
            ),
        }
        let deleted_at = lifetimes.get(&(key, token)).copied().unwrap_or(i64::MAX);
        for w in &h.writes {
            match w.outcome {
                WriteOutcome::Ok {
                    revision,
                    succeeded: true,
                } => {
                    let found = at.get(&(revision, log.resource));
                    if found.and_then(|e| e.value.as_deref()) != Some(w.value.as_str()) {
                        report(
                            problems,
                            format!(
                                "an acknowledged write is not in the log at its revision \
                                 (found {found:?}):\n    {w}\n    by {h}"
                            ),
                        );
                    }
                }
                // The header revision of a refused txn is the store's revision when it was
                // evaluated, or later: if the lock key lived then, it lived at evaluation
                // (it was created before the write was sent), and the compare had to pass.
                WriteOutcome::Ok {
                    revision,
                    succeeded: false,
                } if token <= revision && revision < deleted_at => report(
                    problems,
                    format!(
                        "a write was refused at revision {revision} although its lock key \
                         (created at {token}, deleted at {}) existed then:\n    {w}\n    by {h}",
                        if deleted_at == i64::MAX {
                            "never".to_string()
                        } else {
                            deleted_at.to_string()
                        }
                    ),
                ),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const LOCK: &str = "lock/";
    const RESOURCE: &str = "resource";

    /// A hold by client `c` on lease `lease` (TTL 2 s, granted at `acquired.0`), told at
    /// `acquired.1` it holds with `token`, releasing over `released`; times in seconds.
    fn hold(c: u32, lease: i64, token: i64, acquired: (u64, u64), released: (u64, u64)) -> Hold {
        Hold {
            client: c,
            lease,
            ttl: 2,
            granted_at: acquired.0 * S,
            renewals: Vec::new(),
            acquire: Acquire {
                invoke: acquired.0 * S,
                complete: acquired.1 * S,
                outcome: Acquired::Held {
                    key: format!("{LOCK}{lease:x}"),
                    token,
                },
            },
            writes: Vec::new(),
            release: Some(Release {
                invoke: released.0 * S,
                complete: released.1 * S,
                outcome: Released::Ok {
                    revision: token + 10,
                },
            }),
        }
    }

    /// Keep-alives sent every second from `from` to `to` (seconds), answered at once.
    fn renewed(mut h: Hold, from: u64, to: u64) -> Hold {
        for t in from..=to {
            h.renewals.push(Renewal {
                sent: t * S,
                received: t * S + 1,
                ttl: h.ttl,
            });
        }
        h
    }

    fn write(mut h: Hold, at: (u64, u64), outcome: WriteOutcome) -> Hold {
        let value = format!("t{}-{}", h.token().unwrap_or_default(), h.writes.len());
        h.writes.push(GuardedWrite {
            invoke: at.0 * S,
            complete: at.1 * S,
            value,
            outcome,
        });
        h
    }

    fn ok(revision: i64, succeeded: bool) -> WriteOutcome {
        WriteOutcome::Ok {
            revision,
            succeeded,
        }
    }

    fn kinds(problems: &[Problem]) -> Vec<&'static str> {
        problems
            .iter()
            .map(|p| match p {
                Problem::LockToken { .. } => "token",
                Problem::LockHoldersOverlap { .. } => "overlap",
                Problem::Fencing { .. } => "fencing",
                _ => "other",
            })
            .collect()
    }

    /// Two clients taking turns, each writing once, released properly.
    fn turns() -> Vec<Hold> {
        let a = write(hold(0, 0xa, 5, (0, 1), (3, 4)), (2, 2), ok(6, true));
        let b = write(hold(1, 0xb, 7, (2, 5), (7, 8)), (6, 6), ok(9, true));
        vec![renewed(a, 1, 3), renewed(b, 1, 7)]
    }

    fn put(revision: i64, key: &str, value: &str, create_revision: i64) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            value: Some(value.into()),
            create_revision,
            version: 1,
        }
    }

    fn del(revision: i64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            value: None,
            create_revision: 0,
            version: 0,
        }
    }

    fn turns_log() -> Vec<WatchEvent> {
        vec![
            put(5, "lock/a", "", 5),
            put(6, RESOURCE, "t5-0", 6),
            put(7, "lock/b", "", 7),
            del(8, "lock/a"),
            put(9, RESOURCE, "t7-0", 6),
            del(10, "lock/b"),
        ]
    }

    fn with_log(holds: &[Hold], events: &[WatchEvent]) -> Vec<Problem> {
        check_locks(
            holds,
            Some(LockLog {
                events,
                lock_prefix: LOCK,
                resource: RESOURCE,
            }),
        )
    }

    #[test]
    fn holders_taking_turns_pass() {
        assert_eq!(check_locks(&turns(), None), vec![]);
        assert_eq!(with_log(&turns(), &turns_log()), vec![]);
    }

    #[test]
    fn a_token_given_twice_is_caught() {
        let mut holds = turns();
        holds[1] = hold(1, 0xb, 5, (4, 5), (7, 8));
        assert!(kinds(&check_locks(&holds, None)).contains(&"token"));
    }

    #[test]
    fn tokens_going_back_in_real_time_are_caught() {
        // b acquires after a completed, yet with a smaller token.
        let a = renewed(hold(0, 0xa, 9, (0, 1), (2, 3)), 0, 2);
        let b = renewed(hold(1, 0xb, 7, (4, 5), (6, 7)), 4, 6);
        // (Also an overlap: token 9 can only be granted after token 7's key is gone.)
        assert!(kinds(&check_locks(&[a, b], None)).contains(&"token"));
    }

    #[test]
    fn a_grant_while_the_holder_provably_holds_is_caught() {
        // a keeps its lease alive and releases at 6; b is told it holds at 3.
        let a = renewed(hold(0, 0xa, 5, (0, 1), (6, 7)), 1, 6);
        let b = renewed(hold(1, 0xb, 7, (2, 3), (8, 9)), 2, 8);
        assert_eq!(kinds(&check_locks(&[a, b], None)), vec!["overlap"]);
    }

    #[test]
    fn an_overlap_after_the_lease_could_have_expired_is_allowed() {
        // a stops renewing at 2 (lease alive until at least 4), still believes it holds until
        // it sends its unlock at 9; b is told it holds at 5.
        let a = renewed(hold(0, 0xa, 5, (0, 1), (9, 10)), 1, 2);
        let b = renewed(hold(1, 0xb, 7, (3, 5), (11, 12)), 3, 11);
        assert_eq!(check_locks(&[a.clone(), b.clone()], None), vec![]);
        // Granted at 3.5 s instead: the lease was provably alive (renewed at 2 s, TTL 2 s).
        let mut early = b;
        early.acquire.complete = 3 * S + S / 2;
        assert_eq!(kinds(&check_locks(&[a, early], None)), vec!["overlap"]);
    }

    #[test]
    fn the_lease_bound_counts_from_when_a_renewal_was_sent() {
        // a's last keep-alive was sent at 2 s but answered only at 3.9 s (a slow leader). The
        // lease may have been renewed right at 2 s and expired at 4 s, so b's grant at 4.5 s
        // is fine. A checker counting from the answer (lease alive until 5.9 s) would call it
        // an overlap.
        let mut a = renewed(hold(0, 0xa, 5, (0, 1), (9, 10)), 1, 1);
        a.renewals.push(Renewal {
            sent: 2 * S,
            received: 3 * S + 9 * S / 10,
            ttl: 2,
        });
        let mut b = renewed(hold(1, 0xb, 7, (3, 4), (11, 12)), 3, 11);
        b.acquire.complete = 4 * S + S / 2;
        assert_eq!(check_locks(&[a, b], None), vec![]);
    }

    #[test]
    fn a_stale_holder_whose_write_is_refused_passes() {
        // a's lease runs out while it stalls; b takes over and writes; a's late write is
        // refused (its key is gone).
        let a = renewed(hold(0, 0xa, 5, (0, 1), (9, 10)), 1, 1);
        let a = write(a, (2, 2), ok(6, true));
        let a = write(a, (8, 8), ok(9, false));
        let b = renewed(hold(1, 0xb, 7, (2, 5), (11, 12)), 2, 11);
        let b = write(b, (6, 6), ok(9, true));
        let log = vec![
            put(5, "lock/a", "", 5),
            put(6, RESOURCE, "t5-0", 6),
            put(7, "lock/b", "", 7),
            del(8, "lock/a"), // a's lease expired
            put(9, RESOURCE, "t7-0", 6),
            del(12, "lock/b"),
        ];
        let holds = [a, b];
        assert_eq!(with_log(&holds, &log), vec![]);
    }

    #[test]
    fn a_stale_write_getting_through_is_caught() {
        let a = renewed(hold(0, 0xa, 5, (0, 1), (9, 10)), 1, 1);
        let a = write(a, (8, 8), ok(9, true));
        let b = renewed(hold(1, 0xb, 7, (2, 5), (11, 12)), 2, 11);
        let b = write(b, (6, 6), ok(8, true));
        let problems = check_locks(&[a, b], None);
        // The fence failed in real time, and the acknowledged writes go back by revision.
        assert_eq!(kinds(&problems), vec!["fencing", "fencing"]);
    }

    #[test]
    fn an_unacknowledged_stale_write_in_the_log_is_caught() {
        // a's write timed out (unknown) and was applied after b's: only the log shows it.
        let a = renewed(hold(0, 0xa, 5, (0, 1), (9, 10)), 1, 1);
        let a = write(a, (2, 4), WriteOutcome::Unknown);
        let b = renewed(hold(1, 0xb, 7, (3, 5), (11, 12)), 3, 11);
        let b = write(b, (6, 6), ok(8, true));
        let holds = [a, b];
        assert_eq!(check_locks(&holds, None), vec![]);
        let log = vec![
            put(5, "lock/a", "", 5),
            del(6, "lock/a"),
            put(7, "lock/b", "", 7),
            put(8, RESOURCE, "t7-0", 8),
            put(9, RESOURCE, "t5-0", 8),
            del(12, "lock/b"),
        ];
        let problems = with_log(&holds, &log);
        // Applied while b held the lock, and going back from token 7 to 5.
        assert_eq!(kinds(&problems), vec!["fencing", "fencing"]);
        assert!(
            problems[1].to_string().contains("went back"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unacknowledged_write_applied_in_time_passes() {
        let a = renewed(hold(0, 0xa, 5, (0, 1), (3, 4)), 1, 3);
        let a = write(a, (2, 2), WriteOutcome::Unknown);
        let b = renewed(hold(1, 0xb, 7, (2, 5), (11, 12)), 2, 11);
        let log = vec![
            put(5, "lock/a", "", 5),
            put(6, RESOURCE, "t5-0", 6),
            put(7, "lock/b", "", 7),
            del(8, "lock/a"),
            del(12, "lock/b"),
        ];
        assert_eq!(with_log(&[a, b], &log), vec![]);
    }

    #[test]
    fn a_write_applied_while_an_older_key_held_the_lock_is_caught() {
        // b was told it holds, but a's key (older) was still there when b's write applied:
        // only the log shows the lock was not b's.
        let a = renewed(hold(0, 0xa, 5, (0, 1), (3, 4)), 1, 3);
        let b = write(
            renewed(hold(1, 0xb, 7, (2, 5), (11, 12)), 2, 11),
            (6, 6),
            ok(8, true),
        );
        let log = vec![
            put(5, "lock/a", "", 5),
            put(7, "lock/b", "", 7),
            put(8, RESOURCE, "t7-0", 8),
            del(9, "lock/a"),
            del(12, "lock/b"),
        ];
        let problems = with_log(&[a, b], &log);
        assert_eq!(kinds(&problems), vec!["fencing"]);
        assert!(problems[0]
            .to_string()
            .contains("while the lock was held by"));
    }

    #[test]
    fn a_write_refused_while_its_key_existed_is_caught() {
        let a = write(
            renewed(hold(0, 0xa, 5, (0, 1), (3, 4)), 1, 3),
            (2, 2),
            ok(6, false),
        );
        let log = vec![put(5, "lock/a", "", 5), del(8, "lock/a")];
        let problems = with_log(&[a], &log);
        assert_eq!(kinds(&problems), vec!["fencing"]);
        assert!(problems[0].to_string().contains("refused"));
    }

    #[test]
    fn a_token_that_is_not_the_keys_create_revision_is_caught() {
        let a = renewed(hold(0, 0xa, 6, (0, 1), (3, 4)), 1, 3);
        let log = vec![put(5, "lock/a", "", 5), del(8, "lock/a")];
        assert_eq!(kinds(&with_log(&[a], &log)), vec!["fencing"]);
    }

    #[test]
    fn unknown_and_refused_acquisitions_hold_nothing() {
        let mut a = hold(0, 0xa, 5, (0, 1), (6, 7));
        a.acquire.outcome = Acquired::Unknown {
            why: "timeout".into(),
        };
        let mut c = hold(2, 0xc, 6, (0, 1), (6, 7));
        c.acquire.outcome = Acquired::Refused {
            why: "lease not found".into(),
        };
        let b = renewed(hold(1, 0xb, 7, (2, 3), (8, 9)), 2, 8);
        assert_eq!(check_locks(&[a, b, c], None), vec![]);
    }
}
