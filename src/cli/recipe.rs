//! `corral lock` and `corral elect`: etcdctl's commands over `v3lockpb.Lock` and
//! `v3electionpb.Election` (same key layout, so they take part with etcdctl and etcd clients).
//! Both hold a lease kept alive in the background; interrupting them releases what they hold
//! (unlock, resign) and revokes the lease before exiting.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::conn::{Conn, EtcdGlobals, Settings};
use super::lease::{grant_lease, keep_alive_loop};
use super::output::{self, emit, emit_json, hex_id, Format};
use super::{bounded, CliError, Interrupt, Result};
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::LeaseRevokeRequest;
use crate::pb::v3electionpb::election_client::ElectionClient;
use crate::pb::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use crate::pb::v3lockpb::lock_client::LockClient;
use crate::pb::v3lockpb::{LockRequest, UnlockRequest};

#[derive(Args, Debug)]
pub struct LockArgs {
    /// Lock name
    pub name: String,
    /// Command to run while holding the lock (the lock is released when it exits; its exit
    /// code is passed on). Without one, the lock is held until interrupted.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
    /// Lease TTL in seconds: how long the lock outlives this process if it dies
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// Election name
    pub name: String,
    /// The value to proclaim once leader (required unless --listen)
    pub proposal: Option<String>,
    /// Observe the election: print each new leader until interrupted
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// Lease TTL in seconds: how long leadership outlives this process if it dies
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

/// A lease kept alive in the background for as long as this value lives.
struct HeldLease {
    conn: Conn,
    id: i64,
    keeper: tokio::task::JoinHandle<CliError>,
}

impl HeldLease {
    async fn grant(settings: &Settings, ttl: i64) -> Result<HeldLease> {
        if ttl <= 0 {
            return Err(CliError::new("--ttl must be a positive number of seconds"));
        }
        bounded(settings, async {
            let conn = Conn::connect(settings).await?;
            let (id, granted) = grant_lease(&conn, ttl).await?;
            let every = Duration::from_millis(
                (granted.max(1) as u64)
                    .saturating_mul(1000)
                    .div_euclid(3)
                    .max(100),
            );
            let keeper = tokio::spawn(keep_alive_loop(conn.clone(), id, every));
            Ok(HeldLease { conn, id, keeper })
        })
        .await
    }

    /// Resolves when the lease is lost, with why.
    async fn lost(&mut self) -> CliError {
        match (&mut self.keeper).await {
            Ok(e) => e,
            Err(_) => CliError::new("lease keep-alive stopped"),
        }
    }

    async fn revoke(self) {
        self.keeper.abort();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            LeaseClient::new(self.conn.channel.clone())
                .lease_revoke(LeaseRevokeRequest { id: self.id }),
        )
        .await;
    }
}

pub async fn lock(settings: &Settings, a: &LockArgs) -> Result<()> {
    let mut stop = Interrupt::new();
    if a.name.is_empty() {
        return Err(CliError::new("the lock name must not be empty"));
    }
    let mut lease = HeldLease::grant(settings, a.ttl).await?;
    let req = LockRequest {
        name: a.name.clone().into_bytes(),
        lease: lease.id,
    };
    let mut client = LockClient::new(lease.conn.channel.clone());
    let acquired = tokio::select! {
        r = client.lock(req) => r.map_err(|s| CliError::from_status(&s, Some(lease.conn.endpoint()))),
        e = lease.lost() => Err(e),
        _ = stop.wait() => {
            lease.revoke().await;
            return Ok(());
        }
    };
    let r = match acquired {
        Ok(r) => r.into_inner(),
        Err(e) => {
            lease.revoke().await;
            return Err(e);
        }
    };
    let key = output::text(&r.key);
    let rev = r.header.as_ref().map_or(0, |h| h.revision);
    let outcome = if let Some((program, args)) = a.command.split_first() {
        run_holding(program, args, &key, rev, &mut lease).await
    } else {
        let shown = match settings.format {
            Format::Json => emit_json(&json!({
                "name": a.name,
                "key": key,
                "lease": hex_id(lease.id as u64),
                "revision": rev,
            })),
            _ => emit(&format!("{key}\n")),
        };
        match shown {
            Ok(()) => tokio::select! {
                e = lease.lost() => Err(CliError::new(format!("lock lost: {}", e.message().unwrap_or("lease ended")))),
                _ = stop.wait() => Ok(()),
            },
            Err(e) => Err(e),
        }
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        client.unlock(UnlockRequest { key: r.key.clone() }),
    )
    .await;
    lease.revoke().await;
    outcome
}

/// Runs the command with the lock held; ETCD_LOCK_KEY/REV as etcdctl sets them (and the same
/// as CORRAL_LOCK_*). Its exit code becomes ours.
async fn run_holding(
    program: &str,
    args: &[String],
    key: &str,
    rev: i64,
    lease: &mut HeldLease,
) -> Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("ETCD_LOCK_KEY", key)
        .env("ETCD_LOCK_REV", rev.to_string())
        .env("CORRAL_LOCK_KEY", key)
        .env("CORRAL_LOCK_REV", rev.to_string())
        .spawn()
        .map_err(|e| CliError::new(format!("running {program}: {e}")))?;
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(CliError::exit(s.code().map_or(1, |c| c.clamp(1, 255) as u8))),
            Err(e) => Err(CliError::new(format!("waiting for {program}: {e}"))),
        },
        e = lease.lost() => {
            let _ = child.kill().await;
            Err(CliError::new(format!("lock lost while {program} ran: {}", e.message().unwrap_or("lease ended"))))
        }
    }
}

fn leader_text(key: &[u8], value: &[u8]) -> String {
    format!("{}\n{}\n", output::text(key), output::text(value))
}

fn leader_json(name: &str, key: &[u8], value: &[u8], rev: i64) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("name".into(), name.into());
    output::put_bytes(&mut o, "key", key);
    output::put_bytes(&mut o, "value", value);
    o.insert("revision".into(), rev.into());
    Value::Object(o)
}

pub async fn elect(settings: &Settings, a: &ElectArgs) -> Result<()> {
    let mut stop = Interrupt::new();
    if a.name.is_empty() {
        return Err(CliError::new("the election name must not be empty"));
    }
    if a.listen {
        if a.proposal.is_some() {
            return Err(CliError::new("--listen takes no proposal"));
        }
        return observe(settings, a).await;
    }
    let Some(proposal) = &a.proposal else {
        return Err(CliError::new(
            "a proposal is required to campaign (or --listen to observe)",
        ));
    };
    let mut lease = HeldLease::grant(settings, a.ttl).await?;
    let mut client = ElectionClient::new(lease.conn.channel.clone());
    let req = CampaignRequest {
        name: a.name.clone().into_bytes(),
        lease: lease.id,
        value: proposal.clone().into_bytes(),
    };
    let won = tokio::select! {
        r = client.campaign(req) => r.map_err(|s| CliError::from_status(&s, Some(lease.conn.endpoint()))),
        e = lease.lost() => Err(e),
        _ = stop.wait() => {
            lease.revoke().await;
            return Ok(());
        }
    };
    let leader = match won.map(|r| r.into_inner().leader) {
        Ok(Some(l)) => l,
        Ok(None) => {
            lease.revoke().await;
            return Err(CliError::new("campaign answered without a leader key"));
        }
        Err(e) => {
            lease.revoke().await;
            return Err(e);
        }
    };
    let shown = match settings.format {
        Format::Json => emit_json(&leader_json(
            &a.name,
            &leader.key,
            proposal.as_bytes(),
            leader.rev,
        )),
        _ => emit(&leader_text(&leader.key, proposal.as_bytes())),
    };
    let outcome = match shown {
        Ok(()) => tokio::select! {
            e = lease.lost() => Err(CliError::new(format!("leadership lost: {}", e.message().unwrap_or("lease ended")))),
            _ = stop.wait() => Ok(()),
        },
        Err(e) => Err(e),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        client.resign(ResignRequest {
            leader: Some(leader),
        }),
    )
    .await;
    lease.revoke().await;
    outcome
}

async fn observe(settings: &Settings, a: &ElectArgs) -> Result<()> {
    let mut stop = Interrupt::new();
    let mut conn = bounded(settings, Conn::connect(settings)).await?;
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        let opened = ElectionClient::new(conn.channel.clone())
            .observe(LeaderRequest {
                name: a.name.clone().into_bytes(),
            })
            .await;
        match opened {
            Ok(s) => {
                let mut stream = s.into_inner();
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = stop.wait() => return Ok(()),
                    };
                    let Ok(Some(r)) = msg else { break };
                    let Some(kv) = r.kv else { continue };
                    // A reconnect shows the current leader again: print only changes.
                    let id = (kv.key.clone(), kv.mod_revision);
                    if last.as_ref() == Some(&id) {
                        continue;
                    }
                    last = Some(id);
                    match settings.format {
                        Format::Json => emit_json(&leader_json(
                            &a.name,
                            &kv.key,
                            &kv.value,
                            kv.create_revision,
                        ))?,
                        _ => emit(&leader_text(&kv.key, &kv.value))?,
                    }
                }
            }
            Err(s) if s.code() != tonic::Code::Unavailable => {
                return Err(CliError::from_status(&s, Some(conn.endpoint())))
            }
            Err(_) => {}
        }
        tokio::select! {
            r = bounded(settings, conn.failover()) => r?,
            _ = stop.wait() => return Ok(()),
        }
    }
}
