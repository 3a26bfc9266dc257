//! `corral lease`: etcdctl's grant, revoke, keep-alive, list and timetolive.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::conn::{Conn, EtcdGlobals, Settings};
use super::kv::parse_lease_id;
use super::output::{self, emit, emit_json, hex_id, Format};
use super::{bounded, CliError, Interrupt, Result};
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease with a TTL in seconds
    Grant(GrantArgs),
    /// Revoke a lease, deleting its keys
    Revoke(IdArgs),
    /// Keep a lease alive until interrupted (or once, with --once)
    KeepAlive(KeepAliveArgs),
    /// List the leases
    List(ListArgs),
    /// A lease's remaining and granted TTL (and keys with --keys)
    Timetolive(TtlArgs),
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// Seconds
    pub ttl: i64,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// Lease id (hex)
    #[arg(value_parser = parse_lease_id)]
    pub id: i64,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    /// Lease id (hex)
    #[arg(value_parser = parse_lease_id)]
    pub id: i64,
    /// One keep-alive, then exit
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct TtlArgs {
    /// Lease id (hex)
    #[arg(value_parser = parse_lease_id)]
    pub id: i64,
    /// Also list the keys attached to the lease
    #[arg(long)]
    pub keys: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

pub async fn run(
    c: LeaseCommand,
    resolve: impl Fn(&EtcdGlobals) -> Result<Settings>,
) -> Result<()> {
    match c {
        LeaseCommand::Grant(a) => grant(&resolve(&a.g)?, &a).await,
        LeaseCommand::Revoke(a) => revoke(&resolve(&a.g)?, &a).await,
        LeaseCommand::KeepAlive(a) => keep_alive(&resolve(&a.g)?, &a).await,
        LeaseCommand::List(a) => list(&resolve(&a.g)?).await,
        LeaseCommand::Timetolive(a) => timetolive(&resolve(&a.g)?, &a).await,
    }
}

/// Grants a lease (used by lock and elect too): (id, ttl).
pub(crate) async fn grant_lease(conn: &Conn, ttl: i64) -> Result<(i64, i64)> {
    let r = LeaseClient::new(conn.channel.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner();
    if !r.error.is_empty() {
        return Err(CliError::new(r.error));
    }
    Ok((r.id, r.ttl))
}

async fn grant(settings: &Settings, a: &GrantArgs) -> Result<()> {
    if a.ttl <= 0 {
        return Err(CliError::new(
            "the TTL must be a positive number of seconds",
        ));
    }
    let (id, ttl) = bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        grant_lease(&conn, a.ttl).await
    })
    .await?;
    match settings.format {
        Format::Json => emit_json(&json!({"id": hex_id(id as u64), "ttl": ttl})),
        Format::Table => emit(&output::table(
            &["ID", "TTL"],
            &[vec![hex_id(id as u64), ttl.to_string()]],
        )),
        Format::Simple => emit(&format!(
            "lease {} granted with TTL({ttl}s)\n",
            hex_id(id as u64)
        )),
    }
}

async fn revoke(settings: &Settings, a: &IdArgs) -> Result<()> {
    bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        LeaseClient::new(conn.channel)
            .lease_revoke(LeaseRevokeRequest { id: a.id })
            .await?;
        Ok(())
    })
    .await?;
    match settings.format {
        Format::Json => emit_json(&json!({"id": hex_id(a.id as u64), "revoked": true})),
        Format::Table => emit(&output::table(
            &["ID", "REVOKED"],
            &[vec![hex_id(a.id as u64), true.to_string()]],
        )),
        Format::Simple => emit(&format!("lease {} revoked\n", hex_id(a.id as u64))),
    }
}

/// Keeps `id` alive every `every` until the lease is gone; returns the error that ended it.
/// Reconnects (next endpoint) when the stream breaks. Used by lock and elect.
pub(crate) async fn keep_alive_loop(mut conn: Conn, id: i64, every: Duration) -> CliError {
    loop {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = LeaseClient::new(conn.channel.clone())
            .lease_keep_alive(UnboundedReceiverStream::new(rx))
            .await;
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            loop {
                if tx.send(LeaseKeepAliveRequest { id }).is_err() {
                    break;
                }
                match stream.message().await {
                    Ok(Some(r)) if r.ttl > 0 => tokio::time::sleep(every).await,
                    Ok(Some(_)) => {
                        return CliError::new(format!(
                            "lease {} expired or was revoked",
                            hex_id(id as u64)
                        ))
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if let Err(e) = conn.failover().await {
            return e;
        }
    }
}

/// Whether a keep-alive stream that ended with `code` may go on from another endpoint: the
/// server only fails a stream for want of a leader (Unavailable); the rest is the connection.
fn worth_retrying(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::DeadlineExceeded
    )
}

/// How one keep-alive stream ended.
enum StreamEnd {
    /// Interrupted, or done (--once): exit 0.
    Done,
    /// The endpoint failed; `renewed`: whether it renewed the lease at least once.
    Broken { renewed: bool },
}

/// etcdctl's `lease keep-alive`: renews every third of the TTL and prints each renewal until
/// interrupted. When its endpoint fails it moves on to the next one (as watches do) and
/// renews at once there; it ends with an error only when no endpoint answers or the lease is
/// gone.
async fn keep_alive(settings: &Settings, a: &KeepAliveArgs) -> Result<()> {
    let mut stop = Interrupt::new();
    let renewing = keep_renewing(settings, a, &mut stop);
    // --once is a one-shot command, failovers included.
    if a.once {
        bounded(settings, renewing).await
    } else {
        renewing.await
    }
}

async fn keep_renewing(settings: &Settings, a: &KeepAliveArgs, stop: &mut Interrupt) -> Result<()> {
    let mut conn = tokio::select! {
        c = bounded(settings, Conn::connect(settings)) => c?,
        _ = stop.wait() => return Ok(()),
    };
    loop {
        match keep_alive_stream(settings, a, &conn, stop).await? {
            StreamEnd::Done => return Ok(()),
            StreamEnd::Broken { renewed } => {
                // Every endpoint may be failing the same way (no leader during an election):
                // pause before the next, rather than spin.
                if !renewed {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = stop.wait() => return Ok(()),
                    }
                }
            }
        }
        tokio::select! {
            r = bounded(settings, conn.failover()) => r?,
            _ = stop.wait() => return Ok(()),
        }
    }
}

/// One keep-alive stream on `conn`, until it breaks, the lease is gone or a signal comes.
async fn keep_alive_stream(
    settings: &Settings,
    a: &KeepAliveArgs,
    conn: &Conn,
    stop: &mut Interrupt,
) -> Result<StreamEnd> {
    let hex = hex_id(a.id as u64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut client = LeaseClient::new(conn.channel.clone());
    let opening = client.lease_keep_alive(UnboundedReceiverStream::new(rx));
    let opened = tokio::select! {
        o = tokio::time::timeout(settings.command_timeout, opening) => o,
        _ = stop.wait() => return Ok(StreamEnd::Done),
    };
    let mut stream = match opened {
        Ok(Ok(s)) => s.into_inner(),
        Ok(Err(s)) if !worth_retrying(s.code()) => {
            return Err(CliError::from_status(&s, Some(conn.endpoint())))
        }
        Ok(Err(_)) | Err(_) => return Ok(StreamEnd::Broken { renewed: false }),
    };
    let mut renewed = false;
    loop {
        if tx.send(LeaseKeepAliveRequest { id: a.id }).is_err() {
            return Ok(StreamEnd::Broken { renewed });
        }
        // A member that stops answering (paused, cut off) is left once the wait for a renewal
        // outlasts --command-timeout, as a failed one is.
        let msg = tokio::select! {
            m = tokio::time::timeout(settings.command_timeout, stream.message()) => m,
            _ = stop.wait() => return Ok(StreamEnd::Done),
        };
        let r = match msg {
            Ok(Ok(Some(r))) => r,
            Ok(Err(s)) if !worth_retrying(s.code()) => {
                return Err(CliError::from_status(&s, Some(conn.endpoint())))
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Ok(StreamEnd::Broken { renewed }),
        };
        if r.ttl <= 0 {
            return Err(CliError::new(format!("lease {hex} expired or revoked")));
        }
        renewed = true;
        match settings.format {
            Format::Json => emit_json(&json!({"id": hex, "ttl": r.ttl}))?,
            // Streamed, so simple lines for table too (as etcdctl does).
            _ => emit(&format!("lease {hex} keepalived with TTL({})\n", r.ttl))?,
        }
        if a.once {
            return Ok(StreamEnd::Done);
        }
        // etcdctl's pace: a third of the TTL.
        let wait =
            Duration::from_millis((r.ttl as u64).saturating_mul(1000).div_euclid(3).max(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait() => return Ok(StreamEnd::Done),
        }
    }
}

async fn list(settings: &Settings) -> Result<()> {
    let r = bounded(settings, async {
        let mut conn = Conn::connect(settings).await?;
        conn.call(true, |ch| async move {
            LeaseClient::new(ch)
                .lease_leases(LeaseLeasesRequest {})
                .await
        })
        .await
    })
    .await?
    .into_inner();
    let ids: Vec<String> = r.leases.iter().map(|l| hex_id(l.id as u64)).collect();
    match settings.format {
        Format::Json => emit_json(&json!({"leases": ids})),
        Format::Table => emit(&output::table(
            &["ID"],
            &ids.iter().map(|i| vec![i.clone()]).collect::<Vec<_>>(),
        )),
        Format::Simple => {
            let mut out = format!("found {} leases\n", ids.len());
            for i in &ids {
                out.push_str(i);
                out.push('\n');
            }
            emit(&out)
        }
    }
}

async fn timetolive(settings: &Settings, a: &TtlArgs) -> Result<()> {
    let r = bounded(settings, async {
        let mut conn = Conn::connect(settings).await?;
        let req = LeaseTimeToLiveRequest {
            id: a.id,
            keys: a.keys,
        };
        conn.call(true, |ch| async move {
            LeaseClient::new(ch).lease_time_to_live(req).await
        })
        .await
    })
    .await?
    .into_inner();
    let hex = hex_id(a.id as u64);
    let keys: Vec<String> = r.keys.iter().map(|k| output::text(k)).collect();
    match settings.format {
        Format::Json => emit_json(&json!({
            "id": hex,
            "ttl": r.ttl,
            "granted_ttl": r.granted_ttl,
            "keys": keys,
        })),
        Format::Table => emit(&output::table(
            &["ID", "TTL", "GRANTED TTL", "KEYS"],
            &[vec![
                hex,
                r.ttl.to_string(),
                r.granted_ttl.to_string(),
                keys.join(","),
            ]],
        )),
        Format::Simple if r.ttl < 0 => emit(&format!("lease {hex} already expired\n")),
        Format::Simple => {
            let mut out = format!(
                "lease {hex} granted with TTL({}s), remaining({}s)",
                r.granted_ttl, r.ttl
            );
            if a.keys {
                out.push_str(&format!(", attached keys([{}])", keys.join(" ")));
            }
            out.push('\n');
            emit(&out)
        }
    }
}
