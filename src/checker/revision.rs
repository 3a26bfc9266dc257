//! Checks on the revisions in response headers and read results, which the per-key
//! linearizability search cannot see: the revision is one counter for the whole store.

use std::collections::{BTreeMap, HashMap};

use super::kv::{Call, Op, Reply};
use super::Problem;

/// Every revision check over a history:
///
/// - within one session (one connection to one member), response revisions never decrease;
/// - an operation invoked after another completed never reports a smaller revision (real-time
///   order; serializable reads excluded, they may be stale);
/// - every acknowledged change has a revision of its own;
/// - a read of a value reports the mod revision its write was acknowledged with, every read of
///   it the same one, and never one above its own header revision; nobody reads a value that
///   no one wrote.
pub fn check_revisions(history: &[Op]) -> Vec<Problem> {
    let mut problems = Vec::new();
    sessions_monotonic(history, &mut problems);
    real_time_order(history, &mut problems);
    unique_change_revisions(history, &mut problems);
    read_revisions(history, &mut problems);
    problems
}

/// Problems of one kind reported at most, when one bad revision would repeat them.
const MAX_REPORTED: usize = 10;

fn sessions_monotonic(history: &[Op], problems: &mut Vec<Problem>) {
    let mut sessions: BTreeMap<(u32, u32), Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|op| op.revision().is_some()) {
        sessions
            .entry((op.client, op.session))
            .or_default()
            .push(op);
    }
    for ops in sessions.values_mut() {
        ops.sort_by_key(|op| op.invoke);
        let mut highest: Option<&Op> = None;
        for op in ops.iter() {
            match highest {
                Some(h) if op.revision() < h.revision() => {
                    problems.push(Problem::SessionRevisionWentBack {
                        before: h.clone(),
                        after: (*op).clone(),
                    });
                    break;
                }
                Some(h) if op.revision() == h.revision() => {}
                _ => highest = Some(op),
            }
        }
    }
}

fn real_time_order(history: &[Op], problems: &mut Vec<Problem>) {
    // (time, is_completion, index): at equal times invocations come first, so touching
    // operations count as concurrent.
    let mut timeline: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in history.iter().enumerate() {
        if op.revision().is_none() || op.call == Call::SerializableGet {
            continue;
        }
        timeline.push((op.invoke, false, i));
        timeline.push((op.complete, true, i));
    }
    timeline.sort_unstable();
    let mut highest_completed: Option<usize> = None;
    let mut found = 0;
    for (_, is_completion, i) in timeline {
        let rev = history[i].revision();
        if is_completion {
            if highest_completed.is_none_or(|h| history[h].revision() < rev) {
                highest_completed = Some(i);
            }
        } else if let Some(h) = highest_completed {
            if rev < history[h].revision() {
                problems.push(Problem::RealTimeRevisionWentBack {
                    before: history[h].clone(),
                    after: history[i].clone(),
                });
                // One wrong revision would otherwise be reported once per later operation.
                found += 1;
                if found == MAX_REPORTED {
                    return;
                }
            }
        }
    }
}

fn unique_change_revisions(history: &[Op], problems: &mut Vec<Problem>) {
    let mut by_revision: HashMap<i64, &Op> = HashMap::new();
    for op in history.iter().filter(|op| op.acknowledged_change()) {
        let Some(rev) = op.revision() else { continue };
        if let Some(first) = by_revision.insert(rev, op) {
            problems.push(Problem::SharedRevision {
                first: first.clone(),
                second: op.clone(),
            });
        }
    }
}

fn read_revisions(history: &[Op], problems: &mut Vec<Problem>) {
    // (key, value) → the operation that writes it (values are unique per write).
    let writers: HashMap<(&str, &str), &Op> = history
        .iter()
        .filter_map(|op| Some(((op.key.as_str(), op.written_value()?), op)))
        .collect();
    // (key, value) → the first read of it that reported a mod revision.
    let mut first_read: HashMap<(&str, &str), &Op> = HashMap::new();
    for op in history {
        let (
            Some(Reply::Read {
                value: Some(value),
                mod_revision,
            }),
            Some(header),
        ) = (op.reply(), op.revision())
        else {
            continue;
        };
        let key = (op.key.as_str(), value.as_str());
        let problem = |why: String| Problem::BadReadRevision {
            read: op.clone(),
            why,
        };
        if *mod_revision > header {
            problems.push(problem(format!(
                "mod revision {mod_revision} is above the response's revision {header}"
            )));
            continue;
        }
        let Some(writer) = writers.get(&key) else {
            problems.push(problem("no operation wrote this value".into()));
            continue;
        };
        if writer.acknowledged_change() && writer.revision() != Some(*mod_revision) {
            problems.push(problem(format!(
                "the write was acknowledged at revision {:?}: {writer}",
                writer.revision().unwrap_or_default()
            )));
            continue;
        }
        match first_read.get(&key) {
            Some(first) => {
                if let Some(Reply::Read {
                    mod_revision: first_mod,
                    ..
                }) = first.reply()
                {
                    if first_mod != mod_revision {
                        problems.push(problem(format!(
                            "another read of the value saw mod revision {first_mod}: {first}"
                        )));
                    }
                }
            }
            None => {
                first_read.insert(key, op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::kv::tests::{ok, put, read, H};
    use crate::checker::kv::Outcome;

    fn only(problems: Vec<Problem>) -> Problem {
        assert_eq!(problems.len(), 1, "{problems:#?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn a_consistent_history_has_no_revision_problems() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .get(Some("a"), (20, 30), 2, 2)
            .put_unknown("b", (25, 35))
            .get(Some("b"), (40, 50), 3, 3)
            .on(
                "k",
                Call::SerializableGet,
                (60, 70),
                ok(3, read(Some("b"), 3)),
            )
            .cas(Some("b"), "c", (80, 90), true, 4);
        assert_eq!(check_revisions(&h.0), vec![]);
    }

    #[test]
    fn a_revision_going_backwards_on_a_connection() {
        let mut h = H::default()
            .on("k", Call::SerializableGet, (0, 10), ok(5, read(None, 0)))
            .on("k", Call::SerializableGet, (20, 30), ok(4, read(None, 0)));
        h.0[1].session = h.0[0].session;
        h.0[1].client = h.0[0].client;
        assert!(matches!(
            only(check_revisions(&h.0)),
            Problem::SessionRevisionWentBack { .. }
        ));
        // On different connections, serializable reads may lag.
        h.0[1].session += 1;
        assert_eq!(check_revisions(&h.0), vec![]);
    }

    #[test]
    fn a_revision_going_backwards_in_real_time() {
        let h = H::default().put("a", (0, 10), 7).on(
            "other",
            Call::Get,
            (20, 30),
            ok(6, read(None, 0)),
        );
        match only(check_revisions(&h.0)) {
            Problem::RealTimeRevisionWentBack { before, after } => {
                assert_eq!((before, after), (h.0[0].clone(), h.0[1].clone()));
            }
            other => panic!("{other:?}"),
        }
        // Overlapping operations may report revisions in either order.
        let h = H::default().put("a", (0, 25), 7).on(
            "other",
            Call::Get,
            (20, 30),
            ok(6, read(None, 0)),
        );
        assert_eq!(check_revisions(&h.0), vec![]);
    }

    #[test]
    fn two_changes_with_one_revision() {
        let h = H::default().put("a", (0, 10), 2).put("b", (0, 10), 2);
        assert!(matches!(
            only(check_revisions(&h.0)),
            Problem::SharedRevision { .. }
        ));
        // Failed compares and reads share revisions freely.
        let h = H::default()
            .put("a", (0, 10), 2)
            .cas(Some("x"), "b", (20, 30), false, 2)
            .get(Some("a"), (20, 30), 2, 2);
        assert_eq!(check_revisions(&h.0), vec![]);
    }

    #[test]
    fn reads_must_agree_with_the_write_they_read() {
        let wrong_mod = H::default()
            .put("a", (0, 10), 2)
            .get(Some("a"), (20, 30), 3, 3);
        assert!(matches!(
            only(check_revisions(&wrong_mod.0)),
            Problem::BadReadRevision { .. }
        ));
        let disagreeing = H::default()
            .on("k", put("a"), (0, 10), Outcome::Unknown)
            .get(Some("a"), (20, 30), 3, 3)
            .get(Some("a"), (40, 50), 4, 2);
        assert!(matches!(
            only(check_revisions(&disagreeing.0)),
            Problem::BadReadRevision { .. }
        ));
        let from_the_future = H::default()
            .on("k", put("a"), (0, 10), Outcome::Unknown)
            .get(Some("a"), (20, 30), 3, 4);
        assert!(matches!(
            only(check_revisions(&from_the_future.0)),
            Problem::BadReadRevision { .. }
        ));
        let unwritten = H::default().on(
            "k",
            Call::SerializableGet,
            (0, 10),
            ok(3, read(Some("ghost"), 2)),
        );
        assert!(matches!(
            only(check_revisions(&unwritten.0)),
            Problem::BadReadRevision { .. }
        ));
    }
}
