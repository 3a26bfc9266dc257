//! The linearizability search: Wing & Gong's backtracking over a history, with Lowe's
//! memoisation (the approach of porcupine and Knossos' `wgl`), generic over a sequential
//! [`Model`].
//!
//! The history becomes a list of call and return entries in time order. The search walks it
//! from the front: at a call entry it tries to linearize that operation next (the model must
//! accept its reply in the current state); it then lifts the operation's two entries out of the
//! list and starts again from the front. Reaching a return entry means an operation that must
//! already have taken effect has not been placed: undo the last choice and try the next call.
//! A set of (linearized operations, model state) already explored is never explored again,
//! which turns the exponential search into one bounded by the number of distinct
//! configurations — usually small, since only concurrent operations can be reordered.
//!
//! An operation with an unknown outcome (a timeout: it may or may not have taken effect) has
//! no return entry: it may take effect at any time after its call, or never. "Never" is the
//! same as "after everything else", so the search succeeds as soon as every operation with a
//! known outcome is placed; unknown ones still pending then are taken to have happened at the
//! end, or not at all (the model must accept an unknown operation in any state).
//!
//! Unknown operations stay candidates for the rest of the history, which is what makes them
//! expensive; three rules keep them cheap without losing any linearization:
//!
//! - *dominance*: a configuration that used a superset of the unknown operations another one
//!   used (same known operations, same state) can do nothing the other can't, and is pruned;
//! - *known first*: candidates with a known outcome are tried before unknown ones, so that the
//!   dominating configurations (fewer unknown operations) tend to come first;
//! - *no wasted runs*: a blind write (see [`Model::blind_write`]) is not tried right after
//!   another unknown operation, whose effect it would erase.

use std::collections::HashMap;
use std::hash::Hash;

/// A sequential specification: the state an object is in and how each operation changes it.
pub trait Model {
    /// The object's state; hashed and compared for memoisation, so keep it small.
    type State: Clone + Eq + Hash;
    /// What the client asked for.
    type Call;
    /// What the client was told.
    type Reply;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `call` to `state`. `reply` is `None` when the outcome is unknown: the step must
    /// then succeed (the operation took effect, whatever it returned). Returns the new state,
    /// or `None` when `reply` is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        call: &Self::Call,
        reply: Option<&Self::Reply>,
    ) -> Option<Self::State>;

    /// Whether `call`, taking effect with an unknown outcome, leaves the same state whatever
    /// the state before (a blind write). Only a hint for pruning; `false` is always safe.
    fn blind_write(&self, _call: &Self::Call) -> bool {
        false
    }
}

/// One operation of a history, as the search sees it.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a, C, R> {
    pub call: &'a C,
    /// `None`: unknown outcome (it may have taken effect at any time after `invoke`, or never).
    pub reply: Option<&'a R>,
    /// When the client sent it.
    pub invoke: u64,
    /// When the client got the reply; ignored when `reply` is `None`.
    pub complete: u64,
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid order: indexes into the operations, every operation with a known outcome and
    /// the unknown ones that had to (or happened to) take effect before the last of them.
    Linearizable { order: Vec<usize> },
    /// No order exists.
    NotLinearizable {
        /// The longest sequence of operations the search could linearize (a good place to
        /// start reading the history).
        longest: Vec<usize>,
        /// An operation that had to take effect next after `longest` and could not.
        blocked: Option<usize>,
    },
    /// The search gave up after `steps` steps without deciding.
    Unknown { steps: u64 },
}

const NIL: usize = usize::MAX;

/// The call and return entries in a doubly linked list that the search lifts operations out
/// of and puts them back into ("dancing links"): removal keeps the removed node's own links,
/// so undoing removals in reverse order restores the list exactly.
struct Entries {
    /// Node 0 is the head sentinel; node `1 + i` is an entry.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: the operation it belongs to.
    op: Vec<usize>,
    /// Whether a node is a call (else a return).
    is_call: Vec<bool>,
    /// For a call node, its operation's return node (NIL for an unknown outcome).
    ret_of_call: Vec<usize>,
}

impl Entries {
    fn new<C, R>(ops: &[Operation<'_, C, R>]) -> Entries {
        // (time, is_return, op): calls sort before returns at the same instant, which treats
        // touching operations as concurrent — the permissive reading of a tie.
        let mut timeline: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            timeline.push((op.invoke, false, i));
            if op.reply.is_some() {
                timeline.push((op.complete.max(op.invoke), true, i));
            }
        }
        timeline.sort_unstable();
        let len = timeline.len() + 1;
        let mut entries = Entries {
            next: (1..=len).map(|n| if n == len { NIL } else { n }).collect(),
            prev: (0..len).map(|n| if n == 0 { NIL } else { n - 1 }).collect(),
            op: vec![NIL; len],
            is_call: vec![false; len],
            ret_of_call: vec![NIL; len],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (pos, &(_, is_return, op)) in timeline.iter().enumerate() {
            let node = pos + 1;
            entries.op[node] = op;
            entries.is_call[node] = !is_return;
            if is_return {
                entries.ret_of_call[call_node[op]] = node;
            } else {
                call_node[op] = node;
            }
        }
        entries
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes an operation's call node (and its return node, if any).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.ret_of_call[call];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes [`Entries::lift`] of the most recently lifted operation.
    fn unlift(&mut self, call: usize) {
        let ret = self.ret_of_call[call];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(len: usize) -> BitSet {
        BitSet(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset(&self, other: &BitSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations explored so far. A configuration is (operations with a known outcome
/// linearized, operations with an unknown outcome linearized, model state). An unknown
/// operation is an option, never an obligation, and has no return entry to constrain the
/// order — so a configuration is *dominated* by one with the same known set and state that
/// used a subset of its unknown operations: whatever the first can still do, the second can
/// too. Only undominated configurations are explored. (With every outcome known this is
/// plain memoisation.)
struct Explored<S> {
    by_known: HashMap<(BitSet, S), Vec<BitSet>>,
}

impl<S: Clone + Eq + Hash> Explored<S> {
    /// Records the configuration; false if it is dominated by one already recorded.
    fn insert(&mut self, known: &BitSet, unknown: &BitSet, state: &S) -> bool {
        let used = self
            .by_known
            .entry((known.clone(), state.clone()))
            .or_default();
        if used.iter().any(|u| u.is_subset(unknown)) {
            return false;
        }
        // Those it dominates can go: it prunes everything they would.
        used.retain(|u| !unknown.is_subset(u));
        used.push(unknown.clone());
        true
    }
}

/// Which candidates a scan of the entries is trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Known,
    Unknown,
}

/// Searches for a linearization of `ops` against `model`, giving up after `budget` steps.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<'_, M::Call, M::Reply>],
    budget: u64,
) -> Verdict {
    let mut entries = Entries::new(ops);
    let mut known = BitSet::new(ops.len());
    let mut unknown = BitSet::new(ops.len());
    let mut state = model.init();
    let mut explored = Explored {
        by_known: HashMap::new(),
    };
    // The operations linearized so far, as (call node, state before it, pass it was found in).
    let mut stack: Vec<(usize, M::State, Pass)> = Vec::new();
    let mut known_left = ops.iter().filter(|o| o.reply.is_some()).count();
    let mut longest: Vec<usize> = Vec::new();
    let mut blocked = None;
    // Whether `stack` is `longest` (set when `longest` grows, cleared on backtracking).
    let mut at_longest = false;
    let mut steps = 0u64;
    // The candidates for the next operation are the calls before the first return entry. They
    // are tried in two passes, those with a known outcome first: unknown operations are
    // optional, so trying to do without them first reaches the configurations that dominate
    // (see `Explored`) before the ones they dominate.
    let mut pass = Pass::Known;
    let mut node = entries.next[0];
    while known_left > 0 {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps: budget };
        }
        if node != NIL && entries.is_call[node] {
            let i = entries.op[node];
            let op = &ops[i];
            let in_pass = (op.reply.is_some()) == (pass == Pass::Known);
            // A blind write right after another unknown operation makes that one pointless:
            // the same state is reached by the blind write alone, from before the run of
            // unknown operations, with fewer of them used (a dominating configuration, which
            // is explored from there since unknown operations stay candidates).
            let pointless = op.reply.is_none()
                && model.blind_write(op.call)
                && stack
                    .last()
                    .is_some_and(|&(n, _, _)| ops[entries.op[n]].reply.is_none());
            if in_pass && !pointless {
                if let Some(next_state) = model.step(&state, op.call, op.reply) {
                    let set = if op.reply.is_some() {
                        &mut known
                    } else {
                        &mut unknown
                    };
                    set.insert(i);
                    if explored.insert(&known, &unknown, &next_state) {
                        stack.push((node, std::mem::replace(&mut state, next_state), pass));
                        entries.lift(node);
                        if op.reply.is_some() {
                            known_left -= 1;
                        }
                        if stack.len() > longest.len() {
                            longest = stack.iter().map(|&(n, _, _)| entries.op[n]).collect();
                            blocked = None;
                            at_longest = true;
                        }
                        pass = Pass::Known;
                        node = entries.next[0];
                        continue;
                    }
                    let set = if op.reply.is_some() {
                        &mut known
                    } else {
                        &mut unknown
                    };
                    set.remove(i);
                }
            }
            node = entries.next[node];
        } else if pass == Pass::Known {
            // Every known candidate tried: now the unknown ones.
            pass = Pass::Unknown;
            node = entries.next[0];
        } else {
            // A return entry: its operation had to take effect by now and has not.
            if at_longest && blocked.is_none() && node != NIL {
                blocked = Some(entries.op[node]);
            }
            let Some((call, before, found_in)) = stack.pop() else {
                return Verdict::NotLinearizable { longest, blocked };
            };
            at_longest = false;
            let i = entries.op[call];
            state = before;
            entries.unlift(call);
            if ops[i].reply.is_some() {
                known.remove(i);
                known_left += 1;
            } else {
                unknown.remove(i);
            }
            pass = found_in;
            node = entries.next[call];
        }
    }
    Verdict::Linearizable {
        order: stack.iter().map(|&(n, _, _)| entries.op[n]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter: each call adds its number and replies with the new total.
    struct Counter;

    impl Model for Counter {
        type State = i64;
        type Call = i64;
        type Reply = i64;

        fn init(&self) -> i64 {
            0
        }

        fn step(&self, state: &i64, add: &i64, reply: Option<&i64>) -> Option<i64> {
            let next = state + add;
            match reply {
                Some(r) if *r != next => None,
                _ => Some(next),
            }
        }
    }

    fn op<'a>(add: &'a i64, reply: Option<&'a i64>, span: (u64, u64)) -> Operation<'a, i64, i64> {
        Operation {
            call: add,
            reply,
            invoke: span.0,
            complete: span.1,
        }
    }

    #[test]
    fn lifting_and_unlifting_restores_the_entry_list() {
        let (one, two) = (1, 2);
        let ops = [
            op(&one, Some(&1), (0, 10)),
            op(&two, None, (5, 0)),
            op(&one, Some(&4), (6, 20)),
        ];
        let mut entries = Entries::new(&ops);
        let walk = |e: &Entries| {
            let mut order = Vec::new();
            let mut n = e.next[0];
            while n != NIL {
                order.push((e.op[n], e.is_call[n]));
                n = e.next[n];
            }
            order
        };
        let before = walk(&entries);
        assert_eq!(
            before,
            vec![(0, true), (1, true), (2, true), (0, false), (2, false)]
        );
        let call_of =
            |e: &Entries, i: usize| (1..e.op.len()).find(|&n| e.op[n] == i && e.is_call[n]);
        let (c0, c1) = (call_of(&entries, 0).unwrap(), call_of(&entries, 1).unwrap());
        entries.lift(c0);
        entries.lift(c1);
        assert_eq!(walk(&entries), vec![(2, true), (2, false)]);
        entries.unlift(c1);
        entries.unlift(c0);
        assert_eq!(walk(&entries), before);
    }

    #[test]
    fn a_generic_model_with_an_unknown_operation() {
        let (one, two) = (1, 2);
        // +1 → 1, then +2 (timed out), then +1 → 4: the timed-out +2 must have happened.
        let ops = [
            op(&one, Some(&1), (0, 10)),
            op(&two, None, (5, 6)),
            op(&one, Some(&4), (20, 30)),
        ];
        assert_eq!(
            check(&Counter, &ops, 1000),
            Verdict::Linearizable {
                order: vec![0, 1, 2]
            }
        );
        // +1 → 1 then +1 → 3: nothing explains the extra 1.
        let ops = [op(&one, Some(&1), (0, 10)), op(&one, Some(&3), (20, 30))];
        assert_eq!(
            check(&Counter, &ops, 1000),
            Verdict::NotLinearizable {
                longest: vec![0],
                blocked: Some(1)
            }
        );
    }
}
