//! The leader's lease expiry clock.
//!
//! Every member keeps the table of lease deadlines (fed by apply), but only the leader acts
//! on it: when a member becomes leader it gives every lease its full TTL again — a leader
//! change never expires a live lease — and from then on it proposes the revocation of leases
//! whose deadline passed, in batches, through Raft. Keep-alives only move a deadline in this
//! table: they never touch Raft.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    expires: Instant,
    /// When a revocation was last proposed, so a slow one is not proposed again every tick.
    revoking: Option<Instant>,
}

#[derive(Default)]
pub struct LeaseClock {
    leases: Mutex<HashMap<i64, Deadline>>,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl LeaseClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Deadline>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease was granted (applied): its TTL runs from now.
    pub fn granted(&self, id: i64, ttl: i64) {
        let expires = Instant::now() + secs(ttl);
        self.lock().insert(
            id,
            Deadline {
                ttl,
                expires,
                revoking: None,
            },
        );
    }

    /// How many leases exist (applied), znode sessions included.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// A lease was revoked or expired (applied).
    pub fn revoked(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Replaces the table (start-up, snapshot install), every lease with its full TTL.
    pub fn reload(&self, leases: &[(i64, i64)]) {
        let now = Instant::now();
        let mut table = self.lock();
        table.clear();
        for &(id, ttl) in leases {
            table.insert(
                id,
                Deadline {
                    ttl,
                    expires: now + secs(ttl),
                    revoking: None,
                },
            );
        }
    }

    /// This member just became leader: every lease gets its full TTL from now.
    pub fn restart_all(&self) {
        let now = Instant::now();
        for d in self.lock().values_mut() {
            d.expires = now + secs(d.ttl);
            d.revoking = None;
        }
    }

    /// Renews a lease; returns its TTL, or `None` if it does not exist (any more).
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let mut table = self.lock();
        let d = table.get_mut(&id)?;
        if d.revoking.is_some() {
            // Already expired and on its way out: renewing now would race the revocation.
            return None;
        }
        d.expires = Instant::now() + secs(d.ttl);
        Some(d.ttl)
    }

    /// (granted TTL, remaining whole seconds) of a lease.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        let table = self.lock();
        let d = table.get(&id)?;
        let left = d
            .expires
            .saturating_duration_since(Instant::now())
            .as_secs();
        Some((d.ttl, i64::try_from(left).unwrap_or(i64::MAX)))
    }

    /// Leases past their deadline that are not already being revoked (or whose revocation is
    /// older than `retry_after`), at most `max`; marks them as being revoked.
    pub fn take_expired(&self, max: usize, retry_after: Duration) -> Vec<i64> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, d) in self.lock().iter_mut() {
            if out.len() >= max {
                break;
            }
            let pending = d.revoking.is_some_and(|at| now < at + retry_after);
            if d.expires <= now && !pending {
                d.revoking = Some(now);
                out.push(*id);
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expiry_keep_alive_and_leader_restart() {
        let clock = LeaseClock::default();
        clock.granted(1, 5);
        clock.granted(2, 10);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            clock.take_expired(10, Duration::from_secs(1)).is_empty(),
            "not before the TTL"
        );
        assert_eq!(clock.keep_alive(1), Some(5));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(clock.take_expired(10, Duration::from_secs(1)).is_empty());
        assert_eq!(clock.time_to_live(1), Some((5, 1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.take_expired(10, Duration::from_secs(1)), vec![1, 2]);
        // Being revoked: not proposed again right away, and not renewable.
        assert!(clock.take_expired(10, Duration::from_secs(1)).is_empty());
        assert_eq!(clock.keep_alive(1), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            clock.take_expired(10, Duration::from_secs(1)),
            vec![1, 2],
            "retried"
        );
        // A new leader gives everything its full TTL.
        clock.restart_all();
        assert!(clock.take_expired(10, Duration::from_secs(1)).is_empty());
        assert_eq!(clock.time_to_live(2), Some((10, 10)));
        clock.revoked(2);
        assert_eq!(clock.time_to_live(2), None);
    }
}
