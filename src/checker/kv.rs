//! The history of a key-value client workload and its sequential model: each key is a
//! register that can be read, written, deleted and compare-and-set.
//!
//! Linearizability is local (Herlihy & Wing): a history of many keys is linearizable exactly
//! when each key's sub-history is, so [`check_linearizable`] checks one key at a time. That
//! only holds for single-key operations, which is all a [`Call`] can express.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::search::{self, Model, Operation, Verdict};
use super::Problem;

/// One operation on one key, as a client recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The sequential client that issued it.
    pub client: u32,
    /// The client's connection (to one member process) it went over; a client opens a new
    /// session when it reconnects. Revisions never go backwards within a session.
    pub session: u32,
    pub key: String,
    pub call: Call,
    /// When the client sent it: nanoseconds on one monotonic clock shared by all clients.
    pub invoke: u64,
    /// When the client got its answer or gave up waiting.
    pub complete: u64,
    pub outcome: Outcome,
    /// Free text for whoever reads the history, e.g. the error behind an unknown outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// A linearizable Range of the key.
    Get,
    /// A serializable Range: answered from one member's local state, possibly stale. Not part
    /// of the linearizability check; its revision still never goes backwards in a session.
    SerializableGet,
    /// A Put of a value no other operation writes.
    Put { value: String },
    /// A DeleteRange of the key.
    Delete,
    /// A Txn: if the key's value is `expect` (`None`: the key does not exist), put `value`.
    Cas {
        expect: Option<String>,
        value: String,
    },
    /// Not a request: the server may delete the key once, at any time after `invoke` (its
    /// lease expiring). Recorded with an unknown outcome.
    Expire,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The client got an answer; `revision` is the response header's revision.
    Ok { revision: i64, reply: Reply },
    /// The request may or may not have taken effect (a timeout, a connection lost after
    /// sending, "request timed out").
    Unknown,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The key's value (`None`: no such key) and its mod revision (0 when absent).
    Read {
        value: Option<String>,
        mod_revision: i64,
    },
    Written,
    Deleted {
        existed: bool,
    },
    Swapped {
        succeeded: bool,
    },
}

impl Op {
    /// The response header's revision, when the client got an answer.
    pub fn revision(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Ok { revision, .. } => Some(revision),
            Outcome::Unknown => None,
        }
    }

    pub fn reply(&self) -> Option<&Reply> {
        match &self.outcome {
            Outcome::Ok { reply, .. } => Some(reply),
            Outcome::Unknown => None,
        }
    }

    /// Whether the operation is acknowledged to have changed the store (and so took a
    /// revision of its own).
    pub fn acknowledged_change(&self) -> bool {
        matches!(
            (&self.call, self.reply()),
            (Call::Put { .. }, Some(Reply::Written))
                | (Call::Delete, Some(Reply::Deleted { existed: true }))
                | (Call::Cas { .. }, Some(Reply::Swapped { succeeded: true }))
        )
    }

    /// The value this operation writes, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match &self.call {
            Call::Put { value } | Call::Cas { value, .. } => Some(value),
            _ => None,
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}/s{} {:?} ", self.client, self.session, self.key)?;
        match &self.call {
            Call::Get => write!(f, "get")?,
            Call::SerializableGet => write!(f, "get(serializable)")?,
            Call::Put { value } => write!(f, "put {value:?}")?,
            Call::Delete => write!(f, "delete")?,
            Call::Cas { expect, value } => write!(f, "cas {expect:?} -> {value:?}")?,
            Call::Expire => write!(f, "lease expiry")?,
        }
        write!(
            f,
            " [{:.3}s..{:.3}s] ",
            secs(self.invoke),
            secs(self.complete)
        )?;
        if let Some(note) = &self.note {
            write!(f, "({note}) ")?;
        }
        match &self.outcome {
            Outcome::Unknown => write!(f, "=> unknown"),
            Outcome::Ok { revision, reply } => {
                match reply {
                    Reply::Read {
                        value,
                        mod_revision,
                    } => write!(f, "=> {value:?} (mod {mod_revision})")?,
                    Reply::Written => write!(f, "=> ok")?,
                    Reply::Deleted { existed } => write!(f, "=> deleted {existed}")?,
                    Reply::Swapped { succeeded } => write!(f, "=> succeeded {succeeded}")?,
                }
                write!(f, " @{revision}")
            }
        }
    }
}

/// A register holding `None` (no key) or a value, values interned as numbers so that states
/// are cheap to hash and clone during the search.
struct Register;

#[derive(Debug, Clone, Copy)]
enum RegCall {
    Get,
    Put(u32),
    Delete,
    Cas { expect: Option<u32>, value: u32 },
    Expire,
}

#[derive(Debug, Clone, Copy)]
enum RegReply {
    Read(Option<u32>),
    Written,
    Deleted(bool),
    Swapped(bool),
}

impl Model for Register {
    type State = Option<u32>;
    type Call = RegCall;
    type Reply = RegReply;

    fn init(&self) -> Option<u32> {
        None
    }

    fn step(
        &self,
        state: &Option<u32>,
        call: &RegCall,
        reply: Option<&RegReply>,
    ) -> Option<Self::State> {
        match (call, reply) {
            (RegCall::Get, Some(RegReply::Read(v))) => (v == state).then_some(*state),
            // An unknown read changes nothing (and is normally dropped before the search).
            (RegCall::Get, None) => Some(*state),
            (RegCall::Put(v), None | Some(RegReply::Written)) => Some(Some(*v)),
            (RegCall::Delete, None) => Some(None),
            (RegCall::Delete, Some(RegReply::Deleted(existed))) => {
                (*existed == state.is_some()).then_some(None)
            }
            (RegCall::Cas { expect, value }, reply) => {
                let matches = expect == state;
                let next = if matches { Some(*value) } else { *state };
                match reply {
                    None => Some(next),
                    Some(RegReply::Swapped(succeeded)) => (*succeeded == matches).then_some(next),
                    Some(_) => None,
                }
            }
            (RegCall::Expire, _) => Some(None),
            _ => None,
        }
    }

    fn blind_write(&self, call: &RegCall) -> bool {
        matches!(call, RegCall::Put(_) | RegCall::Delete | RegCall::Expire)
    }
}

/// Maps values to small numbers, one table per key.
#[derive(Default)]
struct Interner(HashMap<String, u32>);

impl Interner {
    fn id(&mut self, value: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(value.to_string()).or_insert(next)
    }
}

/// Whether an operation takes part in the linearizability check: serializable reads do not
/// (they may be stale by design), and a read without an answer tells nothing.
fn checked(op: &Op) -> bool {
    match op.call {
        Call::SerializableGet => false,
        Call::Get => op.reply().is_some(),
        _ => true,
    }
}

/// Checks one key's operations (all for the same key). Indexes in the verdict are into `ops`.
pub fn check_key(ops: &[Op], budget: u64) -> Verdict {
    let mut values = Interner::default();
    let mut calls = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        calls.push(match &op.call {
            Call::Get | Call::SerializableGet => RegCall::Get,
            Call::Put { value } => RegCall::Put(values.id(value)),
            Call::Delete => RegCall::Delete,
            Call::Cas { expect, value } => RegCall::Cas {
                expect: expect.as_deref().map(|e| values.id(e)),
                value: values.id(value),
            },
            Call::Expire => RegCall::Expire,
        });
        replies.push(op.reply().map(|reply| match reply {
            Reply::Read { value, .. } => RegReply::Read(value.as_deref().map(|v| values.id(v))),
            Reply::Written => RegReply::Written,
            Reply::Deleted { existed } => RegReply::Deleted(*existed),
            Reply::Swapped { succeeded } => RegReply::Swapped(*succeeded),
        }));
    }
    let operations: Vec<Operation<'_, RegCall, RegReply>> = ops
        .iter()
        .zip(calls.iter().zip(&replies))
        .map(|(op, (call, reply))| Operation {
            call,
            reply: reply.as_ref(),
            invoke: op.invoke,
            complete: op.complete,
        })
        .collect();
    search::check(&Register, &operations, budget)
}

/// The result of checking every key of a history.
#[derive(Debug, Default)]
pub struct Linearizability {
    /// Keys with operations that took part.
    pub keys: usize,
    /// Operations that took part.
    pub ops: usize,
    /// One problem per key that is not linearizable.
    pub problems: Vec<Problem>,
    /// Keys the search gave up on (see the budget).
    pub undecided: Vec<String>,
}

/// Checks each key's sub-history, spending at most `budget` search steps on any one key.
pub fn check_linearizable(history: &[Op], budget: u64) -> Linearizability {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history.iter().filter(|op| checked(op)) {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut result = Linearizability {
        keys: by_key.len(),
        ops: by_key.values().map(Vec::len).sum(),
        ..Linearizability::default()
    };
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.invoke);
        match check_key(&ops, budget) {
            Verdict::Linearizable { .. } => {}
            Verdict::Unknown { .. } => result.undecided.push(key.to_string()),
            Verdict::NotLinearizable { longest, blocked } => {
                result.problems.push(Problem::NotLinearizable {
                    key: key.to_string(),
                    longest: longest.iter().map(|&i| ops[i].clone()).collect(),
                    blocked: blocked.map(|i| ops[i].clone()),
                    ops,
                })
            }
        }
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checker::search::Verdict;

    const BUDGET: u64 = 1_000_000;

    /// Builds one key's history; times are in arbitrary units.
    #[derive(Default)]
    pub(crate) struct H(pub Vec<Op>);

    impl H {
        pub fn on(mut self, key: &str, call: Call, span: (u64, u64), outcome: Outcome) -> H {
            let client = self.0.len() as u32;
            self.0.push(Op {
                client,
                session: client,
                key: key.into(),
                call,
                invoke: span.0,
                complete: span.1,
                outcome,
                note: None,
            });
            self
        }
        pub fn put(self, v: &str, span: (u64, u64), rev: i64) -> H {
            self.on("k", put(v), span, ok(rev, Reply::Written))
        }
        pub fn put_unknown(self, v: &str, span: (u64, u64)) -> H {
            self.on("k", put(v), span, Outcome::Unknown)
        }
        pub fn get(self, v: Option<&str>, span: (u64, u64), rev: i64, mod_rev: i64) -> H {
            self.on("k", Call::Get, span, ok(rev, read(v, mod_rev)))
        }
        pub fn cas(
            self,
            expect: Option<&str>,
            v: &str,
            span: (u64, u64),
            succeeded: bool,
            rev: i64,
        ) -> H {
            let call = Call::Cas {
                expect: expect.map(Into::into),
                value: v.into(),
            };
            self.on("k", call, span, ok(rev, Reply::Swapped { succeeded }))
        }
        pub fn verdict(&self) -> Verdict {
            let mut ops = self.0.clone();
            ops.sort_by_key(|op| op.invoke);
            check_key(&ops, BUDGET)
        }
        pub fn linearizable(&self) -> bool {
            match self.verdict() {
                Verdict::Linearizable { .. } => true,
                Verdict::NotLinearizable { .. } => false,
                Verdict::Unknown { .. } => panic!("undecided"),
            }
        }
    }

    pub(crate) fn put(v: &str) -> Call {
        Call::Put { value: v.into() }
    }

    pub(crate) fn ok(revision: i64, reply: Reply) -> Outcome {
        Outcome::Ok { revision, reply }
    }

    pub(crate) fn read(v: Option<&str>, mod_revision: i64) -> Reply {
        Reply::Read {
            value: v.map(Into::into),
            mod_revision,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = H::default()
            .get(None, (0, 1), 1, 0)
            .put("a", (2, 3), 2)
            .get(Some("a"), (4, 5), 2, 2)
            .cas(Some("a"), "b", (6, 7), true, 3)
            .cas(Some("a"), "c", (8, 9), false, 3)
            .get(Some("b"), (10, 11), 3, 3)
            .on(
                "k",
                Call::Delete,
                (12, 13),
                ok(4, Reply::Deleted { existed: true }),
            )
            .on(
                "k",
                Call::Delete,
                (14, 15),
                ok(4, Reply::Deleted { existed: false }),
            )
            .cas(None, "d", (16, 17), true, 5)
            .get(Some("d"), (18, 19), 5, 5);
        assert!(h.linearizable());
        assert_eq!(
            h.verdict(),
            Verdict::Linearizable {
                order: (0..10).collect()
            }
        );
    }

    #[test]
    fn empty_history_and_unknown_only_history_are_linearizable() {
        assert!(H::default().linearizable());
        assert!(H::default().put_unknown("a", (0, 5)).linearizable());
    }

    /// put(b) is invoked after put(a) and completes first; a read after both sees a. Ordering
    /// by invocation (a, b) or by completion (b, then the read before a finished) both say
    /// "stale read"; put(b) before put(a) explains it.
    #[test]
    fn concurrent_writes_need_reordering() {
        let h =
            H::default()
                .put("a", (0, 50), 3)
                .put("b", (5, 10), 2)
                .get(Some("a"), (20, 30), 3, 3);
        assert!(h.linearizable());
        assert_eq!(
            h.verdict(),
            Verdict::Linearizable {
                order: vec![1, 0, 2]
            }
        );
    }

    /// A greedy checker that linearizes whichever operation it can, in invocation order, puts
    /// put(b) before the read of a and gets stuck; backtracking finds a, read, b, read.
    #[test]
    fn greedy_choice_must_be_undone() {
        let h = H::default()
            .put("a", (0, 100), 2)
            .put("b", (0, 100), 3)
            .get(Some("a"), (50, 60), 2, 2)
            .get(Some("b"), (110, 120), 3, 3);
        assert_eq!(
            h.verdict(),
            Verdict::Linearizable {
                order: vec![0, 2, 1, 3]
            }
        );
    }

    /// A checker that drops timed-out writes rejects this: only put(b) explains the read of b.
    #[test]
    fn timed_out_write_must_count_as_applied() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .put_unknown("b", (20, 30))
            .get(Some("b"), (40, 50), 3, 3);
        assert!(h.linearizable());
    }

    /// A timed-out write may take effect after the client gave up: here after a read that still
    /// saw the old value. A checker that closes it at the time-out rejects this.
    #[test]
    fn timed_out_write_may_take_effect_after_the_client_gave_up() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .put_unknown("b", (20, 30))
            .get(Some("a"), (40, 50), 2, 2)
            .get(Some("b"), (100, 110), 3, 3);
        assert!(h.linearizable());
    }

    /// A checker that takes every timed-out write as applied rejects this: reads after it
    /// still see a, so it never took effect.
    #[test]
    fn timed_out_write_must_count_as_not_applied() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .put_unknown("b", (20, 30))
            .get(Some("a"), (40, 50), 2, 2)
            .get(Some("a"), (60, 70), 2, 2);
        assert!(h.linearizable());
        // ...but it can't take effect and then be undone.
        let h = H::default()
            .put("a", (0, 10), 2)
            .put_unknown("b", (20, 30))
            .get(Some("b"), (40, 50), 3, 3)
            .get(Some("a"), (60, 70), 2, 2);
        assert!(!h.linearizable());
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not_linearizable() {
        let h =
            H::default()
                .put("a", (0, 10), 2)
                .put("b", (20, 30), 3)
                .get(Some("a"), (40, 50), 2, 2);
        match h.verdict() {
            Verdict::NotLinearizable { longest, blocked } => {
                assert_eq!(longest, vec![0, 1]);
                assert_eq!(blocked, Some(2));
            }
            other => panic!("{other:?}"),
        }
        // Concurrent with the second write, the same read is fine.
        let h =
            H::default()
                .put("a", (0, 10), 2)
                .put("b", (20, 45), 3)
                .get(Some("a"), (40, 50), 2, 2);
        assert!(h.linearizable());
    }

    #[test]
    fn read_of_a_value_nobody_wrote_is_not_linearizable() {
        let h = H::default().get(Some("ghost"), (0, 1), 1, 1);
        assert!(!h.linearizable());
        let h = H::default().put("a", (0, 10), 2).get(None, (20, 30), 2, 0);
        assert!(!h.linearizable(), "lost write");
    }

    #[test]
    fn compare_and_set_outcomes_constrain_the_order() {
        let both_won = H::default()
            .put("a", (0, 10), 2)
            .cas(Some("a"), "b", (20, 40), true, 3)
            .cas(Some("a"), "c", (20, 40), true, 4);
        assert!(!both_won.linearizable());
        let one_won = H::default()
            .put("a", (0, 10), 2)
            .cas(Some("a"), "b", (20, 40), false, 3)
            .cas(Some("a"), "c", (20, 40), true, 3)
            .get(Some("c"), (50, 60), 3, 3);
        assert!(one_won.linearizable());
        // A failed compare means the value differed at some point in its interval.
        let failed_for_nothing =
            H::default()
                .put("a", (0, 10), 2)
                .cas(Some("a"), "b", (20, 40), false, 2);
        assert!(!failed_for_nothing.linearizable());
        // "Create if absent".
        let created_twice =
            H::default()
                .cas(None, "a", (0, 10), true, 2)
                .cas(None, "b", (20, 30), true, 3);
        assert!(!created_twice.linearizable());
    }

    #[test]
    fn an_unknown_compare_and_set_only_applies_if_its_compare_held() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .on(
                "k",
                Call::Cas {
                    expect: Some("x".into()),
                    value: "b".into(),
                },
                (20, 30),
                Outcome::Unknown,
            )
            .get(Some("b"), (40, 50), 3, 3);
        assert!(!h.linearizable());
        let h = H::default()
            .put("a", (0, 10), 2)
            .on(
                "k",
                Call::Cas {
                    expect: Some("a".into()),
                    value: "b".into(),
                },
                (20, 30),
                Outcome::Unknown,
            )
            .get(Some("b"), (40, 50), 3, 3);
        assert!(h.linearizable());
    }

    #[test]
    fn delete_reports_whether_the_key_existed() {
        let h = H::default().on(
            "k",
            Call::Delete,
            (0, 1),
            ok(1, Reply::Deleted { existed: true }),
        );
        assert!(!h.linearizable());
        let h = H::default().put("a", (0, 10), 2).on(
            "k",
            Call::Delete,
            (20, 30),
            ok(2, Reply::Deleted { existed: false }),
        );
        assert!(!h.linearizable());
    }

    /// A lease key: written once; the lease's expiry may delete it once, any time after the
    /// grant. Seen gone and then back is a resurrection.
    #[test]
    fn an_expired_key_never_comes_back() {
        let expire = |h: H| h.on("k", Call::Expire, (0, 0), Outcome::Unknown);
        let fine = expire(H::default())
            .put("a", (1, 10), 2)
            .get(Some("a"), (20, 30), 2, 2)
            .get(None, (40, 50), 3, 0)
            .get(None, (60, 70), 3, 0);
        assert!(fine.linearizable());
        let back = expire(H::default())
            .put("a", (1, 10), 2)
            .get(None, (40, 50), 3, 0)
            .get(Some("a"), (60, 70), 3, 2);
        assert!(!back.linearizable());
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = H::default()
            .on("x", put("1"), (0, 10), ok(2, Reply::Written))
            .on("y", put("2"), (5, 15), ok(3, Reply::Written))
            .on("x", Call::Get, (20, 30), ok(3, read(Some("1"), 2)))
            .on("y", Call::Get, (20, 30), ok(3, read(None, 0)))
            // Not checked: serializable, or without an answer.
            .on("x", Call::SerializableGet, (40, 50), ok(1, read(None, 0)))
            .on("x", Call::Get, (40, 50), Outcome::Unknown)
            .0;
        let result = check_linearizable(&history, BUDGET);
        assert_eq!((result.keys, result.ops), (2, 4));
        assert!(result.undecided.is_empty());
        match result.problems.as_slice() {
            [Problem::NotLinearizable {
                key, blocked, ops, ..
            }] => {
                assert_eq!(key, "y");
                assert_eq!(ops.len(), 2);
                assert_eq!(blocked.as_ref(), Some(&history[3]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_exhausted_budget_says_unknown() {
        // Many concurrent writes and a read that none of them wrote: every order must be tried.
        let mut h = H::default();
        for i in 0..12 {
            h = h.put(&format!("v{i}"), (0, 100), 2 + i);
        }
        h = h.get(Some("nobody"), (0, 100), 20, 20);
        let mut ops = h.0.clone();
        ops.sort_by_key(|op| op.invoke);
        assert_eq!(check_key(&ops, 1000), Verdict::Unknown { steps: 1000 });
        let result = check_linearizable(&h.0, 1000);
        assert_eq!(result.undecided, vec!["k".to_string()]);
        assert!(result.problems.is_empty());
        // With memoisation the same search is decided well inside a budget far below the
        // 12! orders a plain backtracking search would walk.
        assert!(matches!(
            check_key(&ops, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    /// The shape of a history from a partition (found by `make jepsen`): a burst of writes
    /// that all timed out, then only reads that saw none of them. Every subset of the
    /// timed-out writes could have taken effect (each then undone by the one timed-out
    /// delete); plain memoisation explores them all, pruning configurations dominated by one
    /// that used fewer unknown operations decides it at once.
    #[test]
    fn a_burst_of_timed_out_writes_nobody_saw_is_decided_quickly() {
        let mut h =
            H::default()
                .put("a", (0, 10), 2)
                .on("k", Call::Delete, (20, 30), Outcome::Unknown);
        for i in 0..24 {
            let t = 20 + i;
            h = if i % 3 == 1 {
                h.on(
                    "k",
                    Call::Cas {
                        expect: Some(format!("w{}", i - 1)),
                        value: format!("w{i}"),
                    },
                    (t, t + 5),
                    Outcome::Unknown,
                )
            } else {
                h.put_unknown(&format!("w{i}"), (t, t + 5))
            };
        }
        for i in 0..10 {
            h = h.get(None, (100 + 10 * i, 105 + 10 * i), 3, 0);
        }
        let mut ops = h.0.clone();
        ops.sort_by_key(|op| op.invoke);
        assert!(matches!(
            check_key(&ops, 50_000),
            Verdict::Linearizable { .. }
        ));
        // And a read of one of them after the reads of nothing is still caught.
        // A timed-out write may still show up late — but only once.
        let h = h
            .get(Some("w5"), (300, 310), 3, 3)
            .get(None, (320, 330), 3, 0)
            .get(Some("w5"), (340, 350), 3, 3);
        let mut ops = h.0.clone();
        ops.sort_by_key(|op| op.invoke);
        assert!(matches!(
            check_key(&ops, 50_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    /// Memoisation keeps a long history with many timed-out writes cheap: without it the
    /// unknown writes' possible positions multiply.
    #[test]
    fn long_history_with_unknown_writes_is_decided_quickly() {
        let mut h = H::default();
        let mut t = 0;
        let mut rev = 1;
        for i in 0..300 {
            match i % 5 {
                0 => {
                    rev += 1;
                    h = h.put(&format!("v{i}"), (t, t + 15), rev);
                }
                1 => h = h.put_unknown(&format!("lost{i}"), (t, t + 15)),
                _ => {
                    let last = format!("v{}", i - i % 5);
                    h = h.get(Some(&last), (t + 16, t + 20), rev, rev);
                }
            }
            t += 10;
        }
        let mut ops = h.0.clone();
        ops.sort_by_key(|op| op.invoke);
        assert!(matches!(
            check_key(&ops, 200_000),
            Verdict::Linearizable { .. }
        ));
    }
}
