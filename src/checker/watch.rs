//! Checks on watch streams: the store's full event log (a watch from the first revision,
//! taken once the run is over) must have no holes and replay to the final state; every
//! stream recorded during the run must be an exact slice of it; every acknowledged write must
//! be in it; and keys that were deleted for good (expired leases) must never come back.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::kv::{Call, Op, Reply};
use super::Problem;

/// One watch event, as a client received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change (the key's mod revision, also for a delete).
    pub revision: i64,
    pub key: String,
    /// The new value for a put; `None` for a delete.
    pub value: Option<String>,
    /// For a put: the key's create revision and version after it (0 for a delete).
    pub create_revision: i64,
    pub version: i64,
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(
                f,
                "@{} put {:?} = {v:?} (create {}, version {})",
                self.revision, self.key, self.create_revision, self.version
            ),
            None => write!(f, "@{} delete {:?}", self.revision, self.key),
        }
    }
}

/// A key as a range read returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

/// Replays an event log into the key space it describes.
pub fn replay(log: &[WatchEvent]) -> BTreeMap<String, KeyState> {
    let mut keys = BTreeMap::new();
    for e in log {
        match &e.value {
            Some(value) => {
                keys.insert(
                    e.key.clone(),
                    KeyState {
                        value: value.clone(),
                        mod_revision: e.revision,
                        create_revision: e.create_revision,
                        version: e.version,
                    },
                );
            }
            None => {
                keys.remove(&e.key);
            }
        }
    }
    keys
}

/// Checks the full log of every change in revisions `(after, upto]`: revisions in order, each
/// key at most once per revision, no revision without an event (a hole is a lost change),
/// nothing beyond `upto`, and create revisions and versions as MVCC defines them.
pub fn check_log(log: &[WatchEvent], after: i64, upto: i64) -> Vec<Problem> {
    let mut problems = Vec::new();
    let bad = |event: &WatchEvent, why: String| Problem::BadLog {
        event: event.clone(),
        why,
    };
    let mut expected_next = after + 1;
    let mut seen_at_revision: HashSet<&str> = HashSet::new();
    let mut live: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut previous: Option<i64> = None;
    for e in log {
        match previous {
            Some(p) if e.revision < p => {
                problems.push(bad(e, format!("comes after revision {p}")));
                return problems;
            }
            Some(p) if e.revision == p => {
                if !seen_at_revision.insert(&e.key) {
                    problems.push(bad(e, "the key changes twice in one revision".into()));
                }
            }
            _ => {
                if e.revision != expected_next {
                    problems.push(bad(
                        e,
                        format!("no event for revision {expected_next}: a change is missing"),
                    ));
                }
                seen_at_revision.clear();
                seen_at_revision.insert(&e.key);
                expected_next = e.revision + 1;
            }
        }
        previous = Some(e.revision);
        if e.revision > upto {
            problems.push(bad(e, format!("beyond the final revision {upto}")));
        }
        match &e.value {
            Some(_) => {
                let (create, version) = match live.get(e.key.as_str()) {
                    Some(&(create, version)) => (create, version + 1),
                    None => (e.revision, 1),
                };
                if (e.create_revision, e.version) != (create, version) {
                    problems.push(bad(
                        e,
                        format!("expected create revision {create} and version {version}"),
                    ));
                }
                live.insert(&e.key, (create, version));
            }
            None => {
                if live.remove(e.key.as_str()).is_none() {
                    problems.push(bad(e, "deletes a key that does not exist".into()));
                }
            }
        }
    }
    if expected_next <= upto && after < upto {
        problems.push(Problem::LogIncomplete {
            last: expected_next - 1,
            upto,
        });
    }
    problems
}

/// The log must replay to the key space a final range read returned.
pub fn check_final_state(log: &[WatchEvent], read: &BTreeMap<String, KeyState>) -> Vec<Problem> {
    let replayed = replay(log);
    let keys: std::collections::BTreeSet<&String> = replayed.keys().chain(read.keys()).collect();
    keys.into_iter()
        .filter(|k| replayed.get(*k) != read.get(*k))
        .map(|k| Problem::FinalStateMismatch {
            key: k.clone(),
            replayed: replayed.get(k).cloned(),
            read: read.get(k).cloned(),
        })
        .collect()
}

/// A stream a client watched from `start` (reconnecting and resuming after the last revision
/// it saw) must be exactly the log's events from `start` to the last revision it received:
/// in order, no duplicates, no gaps.
pub fn check_stream(
    name: &str,
    start: i64,
    stream: &[WatchEvent],
    log: &[WatchEvent],
) -> Vec<Problem> {
    let Some(last) = stream.last().map(|e| e.revision) else {
        return Vec::new();
    };
    let expected: Vec<&WatchEvent> = log
        .iter()
        .filter(|e| e.revision >= start && e.revision <= last)
        .collect();
    let problem = |position: usize, why: String| {
        vec![Problem::BadStream {
            stream: name.to_string(),
            position,
            why,
        }]
    };
    for (i, got) in stream.iter().enumerate() {
        if expected.get(i) == Some(&got) {
            continue;
        }
        let why = if stream[..i].contains(got) {
            format!("duplicate {got}")
        } else if let Some(want) = expected.get(i) {
            if got.revision > want.revision {
                format!("missed {want}, got {got}")
            } else {
                format!("expected {want}, got {got}")
            }
        } else {
            format!("got {got}, more events than the log has")
        };
        return problem(i, why);
    }
    if expected.len() > stream.len() {
        return problem(
            stream.len(),
            format!("missed {} (stream ends early)", expected[stream.len()]),
        );
    }
    Vec::new()
}

/// Every acknowledged change is in the log at the revision it was acknowledged with, and
/// every value read is the log's value at the mod revision the read reported.
pub fn check_history_in_log(history: &[Op], log: &[WatchEvent]) -> Vec<Problem> {
    let at: std::collections::HashMap<(i64, &str), &WatchEvent> = log
        .iter()
        .map(|e| ((e.revision, e.key.as_str()), e))
        .collect();
    let mut problems = Vec::new();
    for op in history {
        let expected = match (&op.call, op.reply()) {
            (
                _,
                Some(Reply::Read {
                    value: Some(v),
                    mod_revision,
                }),
            ) => Some((*mod_revision, Some(v.as_str()))),
            (Call::Delete, _) if op.acknowledged_change() => op.revision().map(|r| (r, None)),
            _ if op.acknowledged_change() => op.revision().map(|r| (r, op.written_value())),
            _ => None,
        };
        let Some((revision, value)) = expected else {
            continue;
        };
        let found = at.get(&(revision, op.key.as_str()));
        if found.map(|e| e.value.as_deref()) != Some(value) {
            problems.push(Problem::MissingFromLog {
                op: op.clone(),
                found: found.map(|e| (*e).clone()),
            });
        }
    }
    problems
}

/// Keys that are written once and then deleted for good (a lease's keys after it expired):
/// after the delete the log must show no further change of them, and the final state must not
/// hold them.
pub fn check_never_reappear(
    keys: &[String],
    log: &[WatchEvent],
    final_state: &BTreeMap<String, KeyState>,
) -> Vec<Problem> {
    let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut deleted: BTreeMap<&str, &WatchEvent> = BTreeMap::new();
    let mut problems = Vec::new();
    for e in log.iter().filter(|e| keys.contains(e.key.as_str())) {
        if let Some(delete) = deleted.get(e.key.as_str()) {
            problems.push(Problem::Reappeared {
                key: e.key.clone(),
                why: format!("{e} after {delete}"),
            });
        }
        if e.value.is_none() {
            deleted.insert(&e.key, e);
        }
    }
    for key in keys {
        if let Some(state) = final_state.get(key) {
            problems.push(Problem::Reappeared {
                key: key.to_string(),
                why: format!("still present at the end: {state:?}"),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::kv::tests::H;

    fn put(
        revision: i64,
        key: &str,
        value: &str,
        create_revision: i64,
        version: i64,
    ) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            value: Some(value.into()),
            create_revision,
            version,
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

    fn log() -> Vec<WatchEvent> {
        vec![
            put(2, "k", "a", 2, 1),
            put(3, "j", "x", 3, 1),
            put(4, "k", "b", 2, 2),
            del(5, "k"),
            del(5, "j"),
            put(6, "k", "c", 6, 1),
        ]
    }

    #[test]
    fn a_good_log_replays_to_the_final_state() {
        assert_eq!(check_log(&log(), 1, 6), vec![]);
        let final_state = BTreeMap::from([(
            "k".to_string(),
            KeyState {
                value: "c".into(),
                mod_revision: 6,
                create_revision: 6,
                version: 1,
            },
        )]);
        assert_eq!(replay(&log()), final_state);
        assert_eq!(check_final_state(&log(), &final_state), vec![]);
        let mut stale = final_state.clone();
        stale.get_mut("k").unwrap().value = "b".into();
        assert!(matches!(
            check_final_state(&log(), &stale).as_slice(),
            [Problem::FinalStateMismatch { .. }]
        ));
        assert_eq!(check_final_state(&log(), &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn holes_reorders_and_bad_counters_in_the_log() {
        let mut hole = log();
        hole.remove(2);
        assert!(matches!(
            check_log(&hole, 1, 6).as_slice(),
            [Problem::BadLog { .. }]
        ));
        assert!(matches!(
            check_log(&log(), 1, 7).as_slice(),
            [Problem::LogIncomplete { last: 6, upto: 7 }]
        ));
        assert!(matches!(
            check_log(&log(), 1, 5).as_slice(),
            [Problem::BadLog { .. }]
        ));
        let mut reordered = log();
        reordered.swap(0, 1);
        assert!(!check_log(&reordered, 1, 6).is_empty());
        let mut twice = log();
        twice.insert(4, del(5, "k"));
        assert!(!check_log(&twice, 1, 6).is_empty());
        let mut bad_version = log();
        bad_version[2].version = 1;
        assert!(!check_log(&bad_version, 1, 6).is_empty());
        let mut bad_create = log();
        bad_create[5].create_revision = 2;
        assert!(!check_log(&bad_create, 1, 6).is_empty());
    }

    #[test]
    fn streams_must_be_exact_slices_of_the_log() {
        let log = log();
        assert_eq!(check_stream("w", 1, &log, &log), vec![]);
        assert_eq!(check_stream("w", 4, &log[2..5], &log), vec![]);
        assert_eq!(check_stream("w", 4, &[], &log), vec![]);
        let why = |problems: Vec<Problem>| match problems.as_slice() {
            [Problem::BadStream { why, .. }] => why.clone(),
            other => panic!("{other:?}"),
        };
        let gap = [log[0].clone(), log[2].clone()];
        assert!(why(check_stream("w", 1, &gap, &log)).starts_with("missed @3"));
        let dup = [log[0].clone(), log[1].clone(), log[1].clone()];
        assert!(why(check_stream("w", 1, &dup, &log)).starts_with("duplicate @3"));
        let reordered = [log[1].clone(), log[0].clone()];
        assert!(!check_stream("w", 1, &reordered, &log).is_empty());
        let half_revision = [log[2].clone(), log[3].clone()];
        assert!(why(check_stream("w", 4, &half_revision, &log)).contains("ends early"));
        let mut changed = log.clone();
        changed[2].value = Some("z".into());
        assert!(why(check_stream("w", 1, &changed, &log)).starts_with("expected"));
    }

    #[test]
    fn acknowledged_changes_and_reads_are_in_the_log() {
        let h = H::default()
            .put("a", (0, 10), 2)
            .put("b", (20, 30), 4)
            .get(Some("b"), (40, 50), 6, 4)
            .on(
                "k",
                Call::Delete,
                (60, 70),
                crate::checker::kv::tests::ok(5, Reply::Deleted { existed: true }),
            );
        assert_eq!(check_history_in_log(&h.0, &log()), vec![]);
        let lost = H::default().put("zz", (0, 10), 4);
        assert!(matches!(
            check_history_in_log(&lost.0, &log()).as_slice(),
            [Problem::MissingFromLog { found: Some(_), .. }]
        ));
        let lost = H::default().put("zz", (0, 10), 9);
        assert!(matches!(
            check_history_in_log(&lost.0, &log()).as_slice(),
            [Problem::MissingFromLog { found: None, .. }]
        ));
    }

    #[test]
    fn deleted_for_good_means_never_again() {
        let keys = vec!["j".to_string()];
        assert_eq!(
            check_never_reappear(&keys, &log(), &BTreeMap::new()),
            vec![]
        );
        let keys = vec!["k".to_string()];
        let problems = check_never_reappear(&keys, &log(), &replay(&log()));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .all(|p| matches!(p, Problem::Reappeared { .. })));
    }
}
