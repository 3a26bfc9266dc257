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

use std::collections::HashSet;
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

/// A fixed-size set of operation indexes: the "already linearized" part of a configuration.
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
}

/// Searches for a linearization of `ops` against `model`, giving up after `budget` steps.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<'_, M::Call, M::Reply>],
    budget: u64,
) -> Verdict {
    let mut entries = Entries::new(ops);
    let mut linearized = BitSet::new(ops.len());
    let mut state = model.init();
    // Configurations already explored (or being explored): every way to continue from them
    // is, or will be, known.
    let mut seen: HashSet<(BitSet, M::State)> = HashSet::new();
    // The operations linearized so far, as (call node, state before it).
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut known_left = ops.iter().filter(|o| o.reply.is_some()).count();
    let mut longest: Vec<usize> = Vec::new();
    let mut blocked = None;
    // Whether `stack` is `longest` (set when `longest` grows, cleared on backtracking).
    let mut at_longest = false;
    let mut steps = 0u64;
    let mut node = entries.next[0];
    while known_left > 0 {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps: budget };
        }
        if node != NIL && entries.is_call[node] {
            let i = entries.op[node];
            let op = &ops[i];
            if let Some(next_state) = model.step(&state, op.call, op.reply) {
                let mut next_set = linearized.clone();
                next_set.insert(i);
                if seen.insert((next_set.clone(), next_state.clone())) {
                    stack.push((node, std::mem::replace(&mut state, next_state)));
                    linearized = next_set;
                    entries.lift(node);
                    if op.reply.is_some() {
                        known_left -= 1;
                    }
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|&(n, _)| entries.op[n]).collect();
                        blocked = None;
                        at_longest = true;
                    }
                    node = entries.next[0];
                    continue;
                }
            }
            node = entries.next[node];
        } else {
            // A return entry: its operation had to take effect by now and has not.
            if at_longest && blocked.is_none() && node != NIL {
                blocked = Some(entries.op[node]);
            }
            let Some((call, before)) = stack.pop() else {
                return Verdict::NotLinearizable { longest, blocked };
            };
            at_longest = false;
            let i = entries.op[call];
            linearized.remove(i);
            state = before;
            entries.unlift(call);
            if ops[i].reply.is_some() {
                known_left += 1;
            }
            node = entries.next[call];
        }
    }
    Verdict::Linearizable {
        order: stack.iter().map(|&(n, _)| entries.op[n]).collect(),
    }
}
