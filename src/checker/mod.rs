//! Correctness checks over what clients observed: a linearizability checker for key-value
//! histories, plus the revision and watch-stream properties etcd promises. Pure and
//! deterministic — the fault tests (`tests/jepsen.rs`) record histories against real
//! processes and hand them here; a saved history can be checked again offline.
//!
//! - [`search`]: the generic Wing–Gong search with memoisation and a step budget.
//! - [`kv`]: the recorded operation ([`Op`]), the per-key register model, and
//!   [`check_linearizable`], which checks each key separately.
//! - [`revision`]: header and mod revisions — per session, in real-time order, unique per
//!   change, consistent across reads.
//! - [`watch`]: the final event log, the streams recorded during the run, acknowledged
//!   writes in the log, and keys that must never come back.
//! - [`lock`]: lock holders and fencing tokens — unique, increasing, never two holders at
//!   once (unless a lease may have expired), the fence keeping older tokens out.
//! - [`ephemeral`]: znode sessions — an ephemeral never seen again once its session was
//!   seen to end, never gone while its session was provably alive.

pub mod ephemeral;
pub mod kv;
pub mod lock;
pub mod revision;
pub mod search;
pub mod watch;

use std::fmt;

pub use kv::{check_linearizable, Call, Op, Outcome, Reply};
pub use revision::check_revisions;
pub use watch::{KeyState, WatchEvent};

/// Search steps spent on one key before giving up with "unknown": a few seconds at most.
pub const DEFAULT_BUDGET: u64 = 5_000_000;

/// A violated property, with the operations or events that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No order of the key's operations explains what clients saw.
    NotLinearizable {
        key: String,
        /// The longest linearizable sequence the search found.
        longest: Vec<Op>,
        /// An operation that had to take effect next and could not.
        blocked: Option<Op>,
        /// All of the key's checked operations, by invocation.
        ops: Vec<Op>,
    },
    /// A later response on one connection carried a smaller revision.
    SessionRevisionWentBack { before: Op, after: Op },
    /// An operation invoked after another completed carried a smaller revision.
    RealTimeRevisionWentBack { before: Op, after: Op },
    /// Two acknowledged changes carried the same revision.
    SharedRevision { first: Op, second: Op },
    /// A read's mod revision disagrees with the write it read, or with another read.
    BadReadRevision { read: Op, why: String },
    /// The full event log is out of order, has a hole or breaks MVCC's counters.
    BadLog { event: WatchEvent, why: String },
    /// The full event log stops before the final revision.
    LogIncomplete { last: i64, upto: i64 },
    /// Replaying the log does not give what the final read returned.
    FinalStateMismatch {
        key: String,
        replayed: Option<KeyState>,
        read: Option<KeyState>,
    },
    /// A watch stream differs from the log: a gap, a duplicate, a wrong or reordered event.
    BadStream {
        stream: String,
        position: usize,
        why: String,
    },
    /// An acknowledged change, or a value read, is not in the log where it should be.
    MissingFromLog { op: Op, found: Option<WatchEvent> },
    /// A key deleted for good came back.
    Reappeared { key: String, why: String },
    /// Fencing tokens handed out twice, or out of real-time order.
    LockToken { why: String },
    /// The lock was granted while an earlier holder provably still held it.
    LockHoldersOverlap {
        earlier: String,
        later: String,
        why: String,
    },
    /// A write guarded by a fencing token got through where it had to be refused, or the
    /// other way round.
    Fencing { why: String },
    /// An ephemeral znode was seen (or created) after its session was seen to end.
    EphemeralReappeared { path: String, why: String },
    /// An ephemeral znode was gone while its session was provably alive.
    EphemeralVanished { path: String, why: String },
}

/// Operations shown around the point where a search got stuck.
const CONTEXT_OPS: usize = 10;

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotLinearizable {
                key,
                longest,
                blocked,
                ops,
            } => {
                writeln!(
                    f,
                    "key {key:?} is not linearizable ({} operations); the longest linearizable \
                     prefix has {} operations, ending with:",
                    ops.len(),
                    longest.len()
                )?;
                for op in &longest[longest.len().saturating_sub(CONTEXT_OPS)..] {
                    writeln!(f, "    {op}")?;
                }
                if let Some(blocked) = blocked {
                    writeln!(f, "  and then this operation could not take effect:")?;
                    writeln!(f, "    {blocked}")?;
                    writeln!(
                        f,
                        "  while these were not linearized yet and overlapped it:"
                    )?;
                    let overlapping = ops.iter().filter(|op| {
                        !longest.contains(op)
                            && *op != blocked
                            && op.invoke <= blocked.complete
                            && (op.complete >= blocked.invoke || op.outcome == Outcome::Unknown)
                    });
                    for op in overlapping.take(CONTEXT_OPS) {
                        writeln!(f, "    {op}")?;
                    }
                }
                Ok(())
            }
            Problem::SessionRevisionWentBack { before, after } => write!(
                f,
                "revision went backwards on one connection:\n    {before}\n    {after}"
            ),
            Problem::RealTimeRevisionWentBack { before, after } => write!(
                f,
                "an operation started after another finished saw a smaller revision:\n    \
                 {before}\n    {after}"
            ),
            Problem::SharedRevision { first, second } => write!(
                f,
                "two acknowledged changes share a revision:\n    {first}\n    {second}"
            ),
            Problem::BadReadRevision { read, why } => {
                write!(f, "bad mod revision in a read: {why}\n    {read}")
            }
            Problem::BadLog { event, why } => write!(f, "event log: {event}: {why}"),
            Problem::LogIncomplete { last, upto } => write!(
                f,
                "event log ends at revision {last}, the store is at revision {upto}"
            ),
            Problem::FinalStateMismatch {
                key,
                replayed,
                read,
            } => write!(
                f,
                "key {key:?}: the event log replays to {replayed:?} but a read returned {read:?}"
            ),
            Problem::BadStream {
                stream,
                position,
                why,
            } => write!(f, "watch stream {stream}, event #{position}: {why}"),
            Problem::MissingFromLog { op, found } => write!(
                f,
                "not in the event log at its revision (found {found:?}):\n    {op}"
            ),
            Problem::Reappeared { key, why } => {
                write!(f, "key {key:?} of an expired lease came back: {why}")
            }
            Problem::LockToken { why } => write!(f, "lock tokens: {why}"),
            Problem::LockHoldersOverlap {
                earlier,
                later,
                why,
            } => write!(
                f,
                "two lock holders at once: {why}\n    earlier token: {earlier}\n    later \
                 token: {later}"
            ),
            Problem::Fencing { why } => write!(f, "fencing: {why}"),
            Problem::EphemeralReappeared { path, why } => {
                write!(f, "ephemeral {path:?} of an ended session came back: {why}")
            }
            Problem::EphemeralVanished { path, why } => {
                write!(
                    f,
                    "ephemeral {path:?} vanished while its session lived: {why}"
                )
            }
        }
    }
}

/// Everything found in one history.
#[derive(Debug, Default)]
pub struct Report {
    /// Keys and operations the linearizability search covered.
    pub keys: usize,
    pub ops: usize,
    pub problems: Vec<Problem>,
    /// Keys whose search ran out of budget: neither proven nor refuted.
    pub undecided: Vec<String>,
}

impl Report {
    /// No problem found and every key decided.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty() && self.undecided.is_empty()
    }
}

/// Problems printed by a report; the saved history has everything.
const REPORTED_PROBLEMS: usize = 20;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} operations on {} keys: {} problems, {} keys undecided",
            self.ops,
            self.keys,
            self.problems.len(),
            self.undecided.len()
        )?;
        for p in self.problems.iter().take(REPORTED_PROBLEMS) {
            writeln!(f, "- {p}")?;
        }
        if !self.undecided.is_empty() {
            writeln!(f, "- search budget exhausted on keys {:?}", self.undecided)?;
        }
        Ok(())
    }
}

/// Checks a history: every key linearizable (at most `budget` search steps per key) and
/// every revision property of [`check_revisions`].
pub fn check_history(history: &[Op], budget: u64) -> Report {
    let lin = check_linearizable(history, budget);
    let mut problems = lin.problems;
    problems.extend(check_revisions(history));
    Report {
        keys: lin.keys,
        ops: lin.ops,
        problems,
        undecided: lin.undecided,
    }
}
