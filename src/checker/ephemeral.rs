//! Ephemeral znodes and the sessions that own them. Clients open sessions, create ephemerals
//! (each path used once, never deleted by a client), and then either close the session or
//! abandon it (stop its keep-alives) so that it expires; meanwhile everyone reads those paths
//! on every member. A session ends once — close or expiry — and its end deletes all its
//! ephemerals in one apply; a create on an ended session is refused. So:
//!
//! - once a session is *seen* to have ended — its close acknowledged, or one of its
//!   ephemerals read as absent after that ephemeral was known to exist — no read invoked
//!   later (and no read at a later revision) may find any of its ephemerals, and no create
//!   on it may succeed: reads are linearizable on every member, and it holds across restarts;
//! - while a session is provably alive (not closed, and its lease can't have run out, see
//!   [`Session::earliest_end`]) an ephemeral known to exist is not gone.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::lock::Renewal;
use super::Problem;

/// One znode session and the ephemerals created on it. Times are nanoseconds on the
/// history's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client: u32,
    pub id: i64,
    /// The negotiated timeout, milliseconds (the lease TTL behind it, in whole seconds).
    pub timeout_ms: i64,
    /// When OpenSession was sent: the session's clock can't start before.
    pub opened_at: u64,
    /// Keep-alives answered with a positive timeout (`ttl` in seconds).
    pub renewals: Vec<Renewal>,
    pub ephemerals: Vec<Create>,
    pub end: SessionEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub path: String,
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Created {
    /// Created at revision `zxid` (its czxid).
    Ok {
        zxid: i64,
    },
    Refused {
        why: String,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// Keep-alives stopped at `at`; the session is left to expire.
    Abandoned { at: u64 },
    /// CloseSession sent at `invoke`; `acknowledged` if it answered OK.
    Closed {
        invoke: u64,
        complete: u64,
        acknowledged: bool,
    },
}

/// A linearizable read (Exists, GetChildren) of one path on one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZnodeRead {
    pub client: u32,
    /// The member asked (by index).
    pub member: usize,
    pub path: String,
    pub invoke: u64,
    pub complete: u64,
    /// The revision the answer reflects.
    pub zxid: i64,
    /// The znode, if it exists.
    pub found: Option<Found>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub czxid: i64,
    /// The owning session (ephemeralOwner).
    pub owner: i64,
}

/// Everything the session workload recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralHistory {
    pub sessions: Vec<Session>,
    pub reads: Vec<ZnodeRead>,
}

fn secs(ns: u64) -> String {
    if ns == u64::MAX {
        "never".into()
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

impl Session {
    /// The earliest moment the session could have ended: its close being sent, or its lease
    /// expiring — no earlier than a full TTL after the last keep-alive that the leader
    /// answered was *sent* (the renewal happened after that; see
    /// [`crate::checker::lock::Hold::earliest_expiry`] for why the send time is the sound
    /// bound), or after OpenSession was sent.
    pub fn earliest_end(&self) -> u64 {
        let ttl_ns = |ttl_s: i64| u64::try_from(ttl_s).unwrap_or(0) * 1_000_000_000;
        let opened = self
            .opened_at
            .saturating_add(ttl_ns(self.timeout_ms.div_euclid(1000)));
        let expiry = self
            .renewals
            .iter()
            .filter(|r| r.ttl > 0)
            .map(|r| r.sent.saturating_add(ttl_ns(r.ttl)))
            .fold(opened, u64::max);
        match self.end {
            SessionEnd::Closed { invoke, .. } => expiry.min(invoke),
            SessionEnd::Abandoned { .. } => expiry,
        }
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} session {:x} (timeout {} ms) opened {}, {} renewals, ",
            self.client,
            self.id,
            self.timeout_ms,
            secs(self.opened_at),
            self.renewals.len()
        )?;
        match self.end {
            SessionEnd::Abandoned { at } => write!(f, "abandoned at {}", secs(at))?,
            SessionEnd::Closed {
                invoke,
                complete,
                acknowledged,
            } => write!(
                f,
                "closed [{}..{}] acknowledged {acknowledged}",
                secs(invoke),
                secs(complete)
            )?,
        }
        write!(f, "; could not end before {}", secs(self.earliest_end()))
    }
}

impl fmt::Display for ZnodeRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} read {:?} on p{} [{}..{}] @{} => ",
            self.client,
            self.path,
            self.member,
            secs(self.invoke),
            secs(self.complete),
            self.zxid
        )?;
        match self.found {
            Some(found) => write!(
                f,
                "present (czxid {}, owner {:x})",
                found.czxid, found.owner
            ),
            None => write!(f, "absent"),
        }
    }
}

impl fmt::Display for Create {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "create {:?} [{}..{}] => {:?}",
            self.path,
            secs(self.invoke),
            secs(self.complete),
            self.outcome
        )
    }
}

/// What the reads and the create of one path show.
#[derive(Default)]
struct PathFacts<'a> {
    /// The create's revision, from its answer or from any read that found the znode.
    czxid: Option<i64>,
    /// The earliest moment the znode was known to exist: the create answered, or a read that
    /// found it completed.
    known_at: Option<u64>,
    reads: Vec<&'a ZnodeRead>,
}

/// Problems of one kind reported at most.
const MAX_REPORTED: usize = 20;

/// Every ephemeral check over a session history.
pub fn check_ephemerals(history: &EphemeralHistory) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut owner: HashMap<&str, (&Session, &Create)> = HashMap::new();
    for s in &history.sessions {
        for c in &s.ephemerals {
            owner.insert(&c.path, (s, c));
        }
    }
    let mut facts: HashMap<&str, PathFacts<'_>> = HashMap::new();
    for (path, (_, c)) in &owner {
        let f = facts.entry(path).or_default();
        if let Created::Ok { zxid } = c.outcome {
            f.czxid = Some(zxid);
            f.known_at = Some(c.complete);
        }
    }
    let report = |problems: &mut Vec<Problem>, p: Problem| {
        if problems.len() < MAX_REPORTED {
            problems.push(p);
        }
    };
    for r in &history.reads {
        let Some(&(s, c)) = owner.get(r.path.as_str()) else {
            continue;
        };
        let f = facts.entry(&r.path).or_default();
        f.reads.push(r);
        let Some(found) = r.found else { continue };
        f.known_at = Some(f.known_at.map_or(r.complete, |k| k.min(r.complete)));
        // One create per path: every read that finds it finds that znode.
        if found.owner != s.id || f.czxid.is_some_and(|z| z != found.czxid) {
            report(
                &mut problems,
                Problem::EphemeralReappeared {
                    path: r.path.clone(),
                    why: format!(
                        "a read found a different znode than the one created (czxid {:?}, \
                         owner {:x}):\n    {r}\n    {c}",
                        f.czxid, s.id
                    ),
                },
            );
        }
        f.czxid.get_or_insert(found.czxid);
    }

    for s in &history.sessions {
        // When and at which revision the session was seen to have ended, and the evidence.
        let mut ended_at: Option<(u64, String)> = match s.end {
            SessionEnd::Closed {
                complete,
                acknowledged: true,
                ..
            } => Some((
                complete,
                format!("its close was acknowledged at {}", secs(complete)),
            )),
            _ => None,
        };
        let mut ended_rev: Option<(i64, String)> = None;
        let earliest_end = s.earliest_end();
        for c in &s.ephemerals {
            let Some(f) = facts.get(c.path.as_str()) else {
                continue;
            };
            for r in f.reads.iter().filter(|r| r.found.is_none()) {
                if f.known_at.is_some_and(|k| k < r.invoke) {
                    if ended_at.as_ref().is_none_or(|(t, _)| r.complete < *t) {
                        ended_at = Some((r.complete, format!("{r}")));
                    }
                    // Nothing but the session's end deletes an ephemeral.
                    if r.complete < earliest_end {
                        report(
                            &mut problems,
                            Problem::EphemeralVanished {
                                path: c.path.clone(),
                                why: format!(
                                    "read as absent before the session could have ended:\n    \
                                     {r}\n    {c}\n    {s}"
                                ),
                            },
                        );
                    }
                }
                if f.czxid.is_some_and(|z| z <= r.zxid)
                    && ended_rev.as_ref().is_none_or(|(g, _)| r.zxid < *g)
                {
                    ended_rev = Some((r.zxid, format!("{r}")));
                }
            }
        }
        for c in &s.ephemerals {
            // The evidence that the session had ended before time `t`, or by revision `z`.
            let ended_before = |t: u64, z: i64| {
                let by_time = ended_at.as_ref().filter(|(e, _)| t > *e).map(|(_, w)| w);
                by_time.or(ended_rev.as_ref().filter(|(g, _)| z >= *g).map(|(_, w)| w))
            };
            if let Created::Ok { zxid } = c.outcome {
                if let Some(why) = ended_before(c.invoke, zxid) {
                    report(
                        &mut problems,
                        Problem::EphemeralReappeared {
                            path: c.path.clone(),
                            why: format!(
                                "created on a session seen to have ended ({why}):\n    {c}\n    \
                                 {s}"
                            ),
                        },
                    );
                }
            }
            let Some(f) = facts.get(c.path.as_str()) else {
                continue;
            };
            for r in f.reads.iter().filter(|r| r.found.is_some()) {
                if let Some(why) = ended_before(r.invoke, r.zxid) {
                    report(
                        &mut problems,
                        Problem::EphemeralReappeared {
                            path: c.path.clone(),
                            why: format!(
                                "read after its session was seen to have ended ({why}):\n    \
                                 {r}\n    {s}"
                            ),
                        },
                    );
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// Session `id` of client 0 (timeout 2 s) opened at `opened` s, renewed every second up to
    /// `renewed_to` s, with ephemeral `/e/<id>-<n>` created over `created` (seconds) for each
    /// given czxid.
    fn session(id: i64, opened: u64, renewed_to: u64, czxids: &[i64], end: SessionEnd) -> Session {
        Session {
            client: 0,
            id,
            timeout_ms: 2000,
            opened_at: opened * S,
            renewals: (opened..=renewed_to)
                .map(|t| Renewal {
                    sent: t * S,
                    received: t * S + 1,
                    ttl: 2,
                })
                .collect(),
            ephemerals: czxids
                .iter()
                .enumerate()
                .map(|(n, &zxid)| Create {
                    path: format!("/e/{id}-{n}"),
                    invoke: opened * S,
                    complete: opened * S + S / 10,
                    outcome: Created::Ok { zxid },
                })
                .collect(),
            end,
        }
    }

    /// A read of `path` over `span` (tenths of a second) at revision `zxid`.
    fn read(path: &str, span: (u64, u64), zxid: i64, found: Option<(i64, i64)>) -> ZnodeRead {
        ZnodeRead {
            client: 1,
            member: 0,
            path: path.into(),
            invoke: span.0 * S / 10,
            complete: span.1 * S / 10,
            zxid,
            found: found.map(|(czxid, owner)| Found { czxid, owner }),
        }
    }

    fn kinds(problems: &[Problem]) -> Vec<&'static str> {
        problems
            .iter()
            .map(|p| match p {
                Problem::EphemeralReappeared { .. } => "reappeared",
                Problem::EphemeralVanished { .. } => "vanished",
                _ => "other",
            })
            .collect()
    }

    fn abandoned(at: u64) -> SessionEnd {
        SessionEnd::Abandoned { at: at * S }
    }

    /// Session 7 creates /e/7-0 at revision 10 at 1 s, renews to 3 s and is abandoned: it
    /// can't expire before 5 s. Reads find it until 5 s, then not.
    fn expiry() -> EphemeralHistory {
        EphemeralHistory {
            sessions: vec![session(7, 1, 3, &[10], abandoned(3))],
            reads: vec![
                read("/e/7-0", (20, 21), 12, Some((10, 7))),
                read("/e/7-0", (45, 46), 15, Some((10, 7))),
                read("/e/7-0", (60, 61), 20, None),
                read("/e/7-0", (70, 71), 21, None),
            ],
        }
    }

    #[test]
    fn an_ephemeral_gone_for_good_passes() {
        assert_eq!(check_ephemerals(&expiry()), vec![]);
    }

    #[test]
    fn an_ephemeral_seen_again_after_its_expiry_is_caught() {
        let mut h = expiry();
        // A lagging member (or a restarted one) still shows it after the expiry was observed.
        h.reads.push(read("/e/7-0", (80, 81), 19, Some((10, 7))));
        let problems = check_ephemerals(&h);
        assert_eq!(kinds(&problems), vec!["reappeared"]);
        // By revision alone: a read at a revision after the one it was gone at.
        let mut h = expiry();
        h.reads.push(read("/e/7-0", (55, 62), 22, Some((10, 7))));
        assert_eq!(kinds(&check_ephemerals(&h)), vec!["reappeared"]);
    }

    #[test]
    fn a_read_concurrent_with_the_observed_expiry_may_still_find_it() {
        // Invoked before the absent read completed, at an older revision: linearizable.
        let mut h = expiry();
        h.reads.push(read("/e/7-0", (59, 62), 19, Some((10, 7))));
        assert_eq!(check_ephemerals(&h), vec![]);
    }

    #[test]
    fn a_sibling_of_an_expired_ephemeral_seen_later_is_caught() {
        // The session had two ephemerals; one is seen gone, the other seen later: the
        // session's end deletes both in one apply.
        let mut h = expiry();
        h.sessions[0] = session(7, 1, 3, &[10, 11], abandoned(3));
        h.reads.push(read("/e/7-1", (75, 76), 21, Some((11, 7))));
        assert_eq!(kinds(&check_ephemerals(&h)), vec!["reappeared"]);
    }

    #[test]
    fn absent_before_its_create_applied_is_not_an_expiry() {
        // The create's answer was lost; a read found nothing (the create not applied yet),
        // a later one found it. A checker taking any absent read as the end would call this
        // a reappearance.
        let mut s = session(7, 1, 3, &[10], abandoned(3));
        s.ephemerals[0].outcome = Created::Unknown;
        let h = EphemeralHistory {
            sessions: vec![s],
            reads: vec![
                read("/e/7-0", (12, 13), 9, None),
                read("/e/7-0", (20, 21), 12, Some((10, 7))),
            ],
        };
        assert_eq!(check_ephemerals(&h), vec![]);
    }

    #[test]
    fn an_ephemeral_gone_while_its_session_lived_is_caught() {
        let mut h = expiry();
        // Renewed up to 3 s: alive until at least 5 s, yet read as absent at 4.6 s.
        h.reads.insert(2, read("/e/7-0", (45, 46), 16, None));
        h.reads.remove(1);
        assert_eq!(kinds(&check_ephemerals(&h)), vec!["vanished"]);
    }

    #[test]
    fn a_closed_session_ends_at_the_acknowledgement() {
        let closed = SessionEnd::Closed {
            invoke: 2 * S,
            complete: 3 * S,
            acknowledged: true,
        };
        let h = EphemeralHistory {
            sessions: vec![session(7, 1, 9, &[10], closed)],
            reads: vec![
                // Concurrent with the close: either answer is fine.
                read("/e/7-0", (25, 26), 12, Some((10, 7))),
                read("/e/7-0", (25, 26), 13, None),
            ],
        };
        assert_eq!(check_ephemerals(&h), vec![]);
        let mut bad = h.clone();
        bad.reads.push(read("/e/7-0", (31, 32), 14, Some((10, 7))));
        assert_eq!(kinds(&check_ephemerals(&bad)), vec!["reappeared"]);
    }

    #[test]
    fn a_create_on_an_ended_session_is_caught() {
        let mut h = expiry();
        h.sessions[0].ephemerals.push(Create {
            path: "/e/7-9".into(),
            invoke: 8 * S,
            complete: 8 * S + 1,
            outcome: Created::Ok { zxid: 25 },
        });
        assert_eq!(kinds(&check_ephemerals(&h)), vec!["reappeared"]);
    }

    #[test]
    fn a_different_znode_at_the_path_is_caught() {
        let mut h = expiry();
        h.reads[1].found = Some(Found {
            czxid: 14,
            owner: 7,
        });
        assert_eq!(kinds(&check_ephemerals(&h)), vec!["reappeared"]);
    }
}
