//! The nemesis: injects one fault at a time into a [`ProcessCluster`], holds it, heals it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::common::process::ProcessCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 a random member; restart it on heal.
    KillRandom,
    /// kill -9 whoever leads; restart it on heal.
    KillLeader,
    /// kill -9 whoever leads and restart it at once, before the others elect a new leader:
    /// it comes back as leader of the same term.
    RestartLeader,
    /// SIGSTOP a random member; SIGCONT on heal.
    PauseRandom,
    /// SIGSTOP the leader; SIGCONT on heal.
    PauseLeader,
    /// Random halves: a majority and a minority that can't reach each other.
    MajorityMinority,
    /// The leader alone on one side, everyone else on the other.
    IsolateLeader,
    /// Two halves that see each other only through one bridge member (Jepsen's "bridge").
    Bridge,
}

impl Fault {
    pub fn needs_proxies(self) -> bool {
        matches!(
            self,
            Fault::MajorityMinority | Fault::IsolateLeader | Fault::Bridge
        )
    }
}

/// A random member, or the leader if one is found in time (a paused or cut-off leader may
/// not answer; then a random member takes the fault instead).
async fn leader_or_random(cluster: &ProcessCluster, rng: &mut StdRng) -> usize {
    match cluster.leader().await {
        Some(leader) => leader,
        None => rng.gen_range(0..cluster.len()),
    }
}

/// Injects `fault` and says what it did.
pub async fn inject(cluster: &mut ProcessCluster, fault: Fault, rng: &mut StdRng) -> String {
    let n = cluster.len();
    match fault {
        Fault::KillRandom | Fault::KillLeader => {
            let victim = if fault == Fault::KillLeader {
                leader_or_random(cluster, rng).await
            } else {
                rng.gen_range(0..n)
            };
            cluster.kill(victim);
            format!("kill -9 p{victim}")
        }
        Fault::RestartLeader => {
            let victim = leader_or_random(cluster, rng).await;
            cluster.kill(victim);
            cluster.restart(victim);
            format!("kill -9 and restart p{victim}")
        }
        Fault::PauseRandom | Fault::PauseLeader => {
            let victim = if fault == Fault::PauseLeader {
                leader_or_random(cluster, rng).await
            } else {
                rng.gen_range(0..n)
            };
            cluster.pause(victim);
            format!("SIGSTOP p{victim}")
        }
        Fault::MajorityMinority => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let (minority, majority) = order.split_at(n / 2);
            cluster.partition(&[minority, majority]);
            format!("partition minority {minority:?} | majority {majority:?}")
        }
        Fault::IsolateLeader => {
            let leader = leader_or_random(cluster, rng).await;
            let rest: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
            cluster.partition(&[&[leader], &rest]);
            format!("isolate leader p{leader} from {rest:?}")
        }
        Fault::Bridge => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let bridge = order[n / 2];
            let left: Vec<usize> = order[..n / 2].to_vec();
            let right: Vec<usize> = order[n / 2 + 1..].to_vec();
            let side = |i: usize| -> i8 {
                if left.contains(&i) {
                    -1
                } else if right.contains(&i) {
                    1
                } else {
                    0
                }
            };
            cluster.set_links(|a, b| side(a) * side(b) >= 0);
            format!("bridge p{bridge} between {left:?} and {right:?}")
        }
    }
}

/// Undoes every fault: links restored, paused members continued, killed ones restarted.
pub fn heal(cluster: &mut ProcessCluster, proxied: bool) {
    if proxied {
        cluster.heal();
    }
    for i in 0..cluster.len() {
        cluster.resume(i);
        if cluster.members[i].child.is_none() {
            cluster.restart(i);
        }
    }
}

/// How long a fault is held and how long the cluster runs clean between faults.
pub fn hold_time(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.gen_range(1000..=3000))
}

pub fn quiet_time(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.gen_range(500..=1500))
}
