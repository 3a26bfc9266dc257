//! `corral member`, `corral endpoint` and `corral snapshot`: etcdctl's cluster commands over
//! `etcdserverpb.Cluster` and `Maintenance`.

use std::io::Write as _;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::conn::{self, Conn, EtcdGlobals, Settings};
use super::output::{self, emit, emit_json, hex_id, Format};
use super::{bounded, CliError, Result};
use crate::pb::etcdserverpb::cluster_client::ClusterClient;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, RangeRequest, ResponseHeader, SnapshotRequest, StatusRequest,
    StatusResponse,
};
use crate::storage::backup;

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List the members
    List(PlainArgs),
    /// Add a member
    Add(MemberAddArgs),
    /// Remove a member by its (hex) id
    Remove(MemberRemoveArgs),
    /// Promote a learner that has caught up to a voting member
    Promote(MemberRemoveArgs),
    /// Change a member's peer URLs
    Update(MemberUpdateArgs),
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Status of each endpoint: member id, leader, Raft term and index, database size
    Status(EndpointArgs),
    /// Whether each endpoint commits a linearizable read, and how fast
    Health(EndpointArgs),
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a snapshot of the store from one endpoint to a file
    Save(SnapshotSaveArgs),
    /// Seed a new member's data directory from a snapshot file (no server involved)
    Restore(SnapshotRestoreArgs),
    /// Hash, revision, record count and size of a snapshot file
    Status(SnapshotStatusArgs),
}

#[derive(Args, Debug)]
pub struct PlainArgs {
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct MemberAddArgs {
    /// Name of the new member
    pub name: String,
    /// Its peer URLs, comma-separated
    #[arg(long, value_delimiter = ',', required = true, value_name = "URLS")]
    pub peer_urls: Vec<String>,
    /// Add it as a learner (non-voting)
    #[arg(long)]
    pub learner: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct MemberUpdateArgs {
    /// Member id (hex, as `member list` prints it)
    #[arg(value_parser = parse_member_id)]
    pub id: u64,
    /// Its new peer URLs, comma-separated
    #[arg(long, value_delimiter = ',', required = true, value_name = "URLS")]
    pub peer_urls: Vec<String>,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct MemberRemoveArgs {
    /// Member id (hex, as `member list` prints it)
    #[arg(value_parser = parse_member_id)]
    pub id: u64,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// Check every member's client URLs (from the member list), not just --endpoints
    #[arg(long)]
    pub cluster: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct SnapshotSaveArgs {
    /// Where to write the snapshot (written beside it first, then renamed)
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct SnapshotRestoreArgs {
    /// The snapshot file (from `snapshot save`); its sha256 is checked first
    pub file: std::path::PathBuf,
    /// Data directory to create for the new member; must not exist or be empty
    #[arg(long, default_value = "./corral.data")]
    pub data_dir: std::path::PathBuf,
    /// Name of the member the data directory is for (`corral serve --name`)
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Members of the new cluster, name=url,... (defaults to a cluster of this member alone)
    #[arg(long, value_name = "NAME=URL,...")]
    pub initial_cluster: Option<String>,
    /// This member's peer URLs in the new cluster
    #[arg(long, value_name = "URLS", default_value = "http://127.0.0.1:2380")]
    pub initial_advertise_peer_urls: String,
    /// Token of the new cluster
    #[arg(long, default_value = "corral-cluster")]
    pub initial_cluster_token: String,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct SnapshotStatusArgs {
    /// The snapshot file
    pub file: std::path::PathBuf,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

fn parse_member_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("invalid member id {s:?} (hex, as `member list` prints it)"))
}

fn member_row(m: &Member) -> Vec<String> {
    vec![
        hex_id(m.id),
        // etcd's rule: a member has started once it has published its name.
        if m.name.is_empty() {
            "unstarted"
        } else {
            "started"
        }
        .to_string(),
        m.name.clone(),
        m.peer_ur_ls.join(","),
        m.client_ur_ls.join(","),
        m.is_learner.to_string(),
    ]
}

/// The member list as `member list -w table` draws it.
fn members_table(members: &[Member]) -> String {
    output::table(
        &[
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER",
        ],
        &members.iter().map(member_row).collect::<Vec<_>>(),
    )
}

/// What `member remove|promote|update` print: the member list after the change as json or
/// a table, else one line saying what happened.
fn report_change(
    settings: &Settings,
    header: Option<&ResponseHeader>,
    members: &[Member],
    id: u64,
    what: &str,
) -> Result<()> {
    match settings.format {
        Format::Json => emit_json(&json!({
            "header": output::header_json(header),
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        })),
        Format::Table => emit(&members_table(members)),
        Format::Simple => emit(&format!(
            "Member {} {what} cluster {}\n",
            hex_id(id),
            hex_id(header.map_or(0, |h| h.cluster_id))
        )),
    }
}

fn member_json(m: &Member) -> Value {
    json!({
        "id": hex_id(m.id),
        "name": m.name,
        "peer_urls": m.peer_ur_ls,
        "client_urls": m.client_ur_ls,
        "is_learner": m.is_learner,
    })
}

pub async fn member(
    c: MemberCommand,
    resolve: impl Fn(&EtcdGlobals) -> Result<Settings>,
) -> Result<()> {
    match c {
        MemberCommand::List(a) => {
            let settings = resolve(&a.g)?;
            let r = bounded(&settings, async {
                let mut conn = Conn::connect(&settings).await?;
                conn.call(true, |ch| async move {
                    ClusterClient::new(ch)
                        .member_list(MemberListRequest { linearizable: true })
                        .await
                })
                .await
            })
            .await?
            .into_inner();
            match settings.format {
                Format::Json => emit_json(&json!({
                    "header": output::header_json(r.header.as_ref()),
                    "members": r.members.iter().map(member_json).collect::<Vec<_>>(),
                })),
                Format::Table => emit(&members_table(&r.members)),
                Format::Simple => emit(
                    &r.members
                        .iter()
                        .map(|m| format!("{}\n", member_row(m).join(", ")))
                        .collect::<String>(),
                ),
            }
        }
        MemberCommand::Add(a) => {
            let settings = resolve(&a.g)?;
            for u in &a.peer_urls {
                conn::normalize(u)?;
            }
            let r = bounded(&settings, async {
                let conn = Conn::connect(&settings).await?;
                Ok(ClusterClient::new(conn.channel)
                    .member_add(MemberAddRequest {
                        peer_ur_ls: a.peer_urls.clone(),
                        is_learner: a.learner,
                    })
                    .await?
                    .into_inner())
            })
            .await?;
            let id = r.member.as_ref().map_or(0, |m| m.id);
            match settings.format {
                Format::Json => emit_json(&json!({
                    "header": output::header_json(r.header.as_ref()),
                    "member": r.member.as_ref().map(member_json),
                    "members": r.members.iter().map(member_json).collect::<Vec<_>>(),
                })),
                // The list with the new member in it (unstarted until it runs).
                Format::Table => emit(&members_table(&r.members)),
                Format::Simple => {
                    // Like etcdctl: the settings the new member starts with.
                    let mut initial: Vec<String> = Vec::new();
                    // The new member last, whatever its id: the line reads as "the cluster,
                    // plus me".
                    let others = r.members.iter().filter(|m| m.id != id);
                    for m in others.chain(r.members.iter().filter(|m| m.id == id)) {
                        let name = if m.id == id { a.name.as_str() } else { &m.name };
                        if name.is_empty() {
                            continue;
                        }
                        for url in &m.peer_ur_ls {
                            initial.push(format!("{name}={url}"));
                        }
                    }
                    emit(&format!(
                        "Member {} added to cluster {}\n\n\
                         CORRAL_NAME=\"{}\"\n\
                         CORRAL_INITIAL_CLUSTER=\"{}\"\n\
                         CORRAL_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\n\
                         CORRAL_INITIAL_CLUSTER_STATE=\"existing\"\n",
                        hex_id(id),
                        hex_id(r.header.as_ref().map_or(0, |h| h.cluster_id)),
                        a.name,
                        initial.join(","),
                        a.peer_urls.join(","),
                    ))
                }
            }
        }
        MemberCommand::Remove(a) => {
            let settings = resolve(&a.g)?;
            let r = bounded(&settings, async {
                let conn = Conn::connect(&settings).await?;
                Ok(ClusterClient::new(conn.channel)
                    .member_remove(MemberRemoveRequest { id: a.id })
                    .await?
                    .into_inner())
            })
            .await?;
            report_change(
                &settings,
                r.header.as_ref(),
                &r.members,
                a.id,
                "removed from",
            )
        }
        MemberCommand::Promote(a) => {
            let settings = resolve(&a.g)?;
            let r = bounded(&settings, async {
                let conn = Conn::connect(&settings).await?;
                Ok(ClusterClient::new(conn.channel)
                    .member_promote(MemberPromoteRequest { id: a.id })
                    .await?
                    .into_inner())
            })
            .await?;
            report_change(
                &settings,
                r.header.as_ref(),
                &r.members,
                a.id,
                "promoted in",
            )
        }
        MemberCommand::Update(a) => {
            let settings = resolve(&a.g)?;
            for u in &a.peer_urls {
                conn::normalize(u)?;
            }
            let r = bounded(&settings, async {
                let conn = Conn::connect(&settings).await?;
                Ok(ClusterClient::new(conn.channel)
                    .member_update(MemberUpdateRequest {
                        id: a.id,
                        peer_ur_ls: a.peer_urls.clone(),
                    })
                    .await?
                    .into_inner())
            })
            .await?;
            report_change(&settings, r.header.as_ref(), &r.members, a.id, "updated in")
        }
    }
}

/// The endpoints to check: --endpoints, or with --cluster every member's client URLs.
async fn targets(settings: &Settings, cluster: bool) -> Result<Vec<String>> {
    if !cluster {
        return Ok(settings.endpoints.clone());
    }
    let r = bounded(settings, async {
        let mut conn = Conn::connect(settings).await?;
        conn.call(true, |ch| async move {
            ClusterClient::new(ch)
                .member_list(MemberListRequest {
                    linearizable: false,
                })
                .await
        })
        .await
    })
    .await?
    .into_inner();
    let mut eps = Vec::new();
    for m in &r.members {
        for u in &m.client_ur_ls {
            let u = conn::normalize(u)?;
            if !eps.contains(&u) {
                eps.push(u);
            }
        }
    }
    Ok(eps)
}

/// Settings that reach exactly one endpoint (no failover: each is checked on its own).
fn only(settings: &Settings, endpoint: &str) -> Settings {
    Settings {
        endpoints: vec![endpoint.to_string()],
        ..settings.clone()
    }
}

fn warn(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub async fn endpoint(
    c: EndpointCommand,
    resolve: impl Fn(&EtcdGlobals) -> Result<Settings>,
) -> Result<()> {
    match c {
        EndpointCommand::Status(a) => status(&resolve(&a.g)?, a.cluster).await,
        EndpointCommand::Health(a) => health(&resolve(&a.g)?, a.cluster).await,
    }
}

async fn status(settings: &Settings, cluster: bool) -> Result<()> {
    let eps = targets(settings, cluster).await?;
    let mut rows: Vec<(String, StatusResponse)> = Vec::new();
    let mut failed = 0;
    for ep in &eps {
        let one = only(settings, ep);
        let r = bounded(&one, async {
            let conn = Conn::connect(&one).await?;
            Ok(MaintenanceClient::new(conn.channel)
                .status(StatusRequest {})
                .await?
                .into_inner())
        })
        .await;
        match r {
            Ok(s) => rows.push((conn::display(ep).to_string(), s)),
            Err(e) => {
                failed += 1;
                warn(&format!(
                    "Failed to get the status of endpoint {}: {}",
                    conn::display(ep),
                    e.message().unwrap_or("")
                ));
            }
        }
    }
    let cells = |ep: &str, s: &StatusResponse| {
        let id = s.header.as_ref().map_or(0, |h| h.member_id);
        vec![
            ep.to_string(),
            hex_id(id),
            s.version.clone(),
            output::human_bytes(s.db_size),
            (s.leader == id && id != 0).to_string(),
            s.is_learner.to_string(),
            s.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]
    };
    match settings.format {
        Format::Json => {
            let list: Vec<Value> = rows
                .iter()
                .map(|(ep, s)| {
                    let id = s.header.as_ref().map_or(0, |h| h.member_id);
                    json!({
                        "endpoint": ep,
                        "header": output::header_json(s.header.as_ref()),
                        "version": s.version,
                        "db_size": s.db_size,
                        "leader": hex_id(s.leader),
                        "is_leader": s.leader == id && id != 0,
                        "is_learner": s.is_learner,
                        "raft_term": s.raft_term,
                        "raft_index": s.raft_index,
                        "raft_applied_index": s.raft_applied_index,
                        "errors": s.errors,
                    })
                })
                .collect();
            emit_json(&Value::Array(list))?;
        }
        Format::Table => emit(&output::table(
            &[
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ],
            &rows.iter().map(|(e, s)| cells(e, s)).collect::<Vec<_>>(),
        ))?,
        Format::Simple => emit(
            &rows
                .iter()
                .map(|(e, s)| format!("{}\n", cells(e, s).join(", ")))
                .collect::<String>(),
        )?,
    }
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} endpoints did not answer",
            eps.len()
        )));
    }
    Ok(())
}

async fn health(settings: &Settings, cluster: bool) -> Result<()> {
    let eps = targets(settings, cluster).await?;
    let mut results = Vec::new();
    for ep in &eps {
        let one = only(settings, ep);
        // As etcdctl: a linearizable read must go through the leader's read index.
        let r = bounded(&one, async {
            let conn = Conn::connect(&one).await?;
            let start = Instant::now();
            KvClient::new(conn.channel)
                .range(RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                })
                .await?;
            Ok(start.elapsed())
        })
        .await;
        let (took, err) = match r {
            Ok(took) => (took, None),
            Err(e) => (
                Default::default(),
                Some(e.message().unwrap_or("").to_string()),
            ),
        };
        results.push((conn::display(ep).to_string(), took, err));
    }
    let unhealthy = results.iter().filter(|r| r.2.is_some()).count();
    match settings.format {
        Format::Json => emit_json(&Value::Array(
            results
                .iter()
                .map(|(ep, took, err)| {
                    json!({
                        "endpoint": ep,
                        "health": err.is_none(),
                        "took": format!("{took:?}"),
                        "error": err,
                    })
                })
                .collect(),
        ))?,
        Format::Table => emit(&output::table(
            &["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
            &results
                .iter()
                .map(|(ep, took, err)| {
                    vec![
                        ep.clone(),
                        err.is_none().to_string(),
                        format!("{took:?}"),
                        err.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>(),
        ))?,
        Format::Simple => {
            for (ep, took, err) in &results {
                match err {
                    None => emit(&format!(
                        "{ep} is healthy: successfully committed proposal: took = {took:?}\n"
                    ))?,
                    Some(e) => warn(&format!(
                        "{ep} is unhealthy: failed to commit proposal: {e}"
                    )),
                }
            }
        }
    }
    if unhealthy > 0 {
        return Err(CliError::new("unhealthy cluster"));
    }
    Ok(())
}

pub async fn snapshot(
    c: SnapshotCommand,
    resolve: impl Fn(&EtcdGlobals) -> Result<Settings>,
) -> Result<()> {
    match c {
        SnapshotCommand::Save(a) => snapshot_save(a, resolve).await,
        SnapshotCommand::Restore(a) => snapshot_restore(&a, &resolve(&a.g)?),
        SnapshotCommand::Status(a) => snapshot_status(&a, &resolve(&a.g)?),
    }
}

async fn snapshot_save(
    a: SnapshotSaveArgs,
    resolve: impl Fn(&EtcdGlobals) -> Result<Settings>,
) -> Result<()> {
    let settings = resolve(&a.g)?;
    // One endpoint, as etcdctl insists: a snapshot is of one member's store.
    if settings.endpoints.len() > 1 {
        return Err(CliError::new(
            "snapshot save needs exactly one endpoint (--endpoints)",
        ));
    }
    let conn = bounded(&settings, Conn::connect(&settings)).await?;
    let mut stream = bounded(&settings, async {
        Ok(MaintenanceClient::new(conn.channel.clone())
            .snapshot(SnapshotRequest {})
            .await?
            .into_inner())
    })
    .await?;
    let part = a.file.with_extension("part");
    let mut file = std::fs::File::create(&part)
        .map_err(|e| CliError::new(format!("creating {}: {e}", part.display())))?;
    let mut total: u64 = 0;
    let result: Result<()> = async {
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    file.write_all(&chunk.blob)
                        .map_err(|e| CliError::new(format!("writing {}: {e}", part.display())))?;
                    total += chunk.blob.len() as u64;
                }
                Ok(None) => break,
                Err(s) => return Err(CliError::from_status(&s, Some(conn.endpoint()))),
            }
        }
        file.sync_all()
            .map_err(|e| CliError::new(format!("syncing {}: {e}", part.display())))?;
        // What is on disk must carry a valid digest before it replaces anything.
        let saved = std::fs::read(&part)
            .map_err(|e| CliError::new(format!("reading back {}: {e}", part.display())))?;
        if !backup::digest_ok(&saved) {
            return Err(CliError::new(format!(
                "the snapshot stream ({total} bytes) does not end with a valid sha256"
            )));
        }
        std::fs::rename(&part, &a.file)
            .map_err(|e| CliError::new(format!("renaming to {}: {e}", a.file.display())))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result?;
    // A corral backup says what it holds; another server's (etcd's) is only checked.
    let info = backup::read(&a.file).ok();
    let revision = info.as_ref().map(|b| b.header.revision);
    let hash = info.as_ref().and_then(|b| b.kv_hash().ok());
    match settings.format {
        Format::Json => emit_json(&json!({
            "file": a.file.display().to_string(),
            "size": total,
            "revision": revision,
            "hash": hash,
        })),
        // Revision and hash are known for a corral backup only: empty for another's.
        Format::Table => emit(&output::table(
            &["FILE", "REVISION", "HASH", "SIZE"],
            &[vec![
                a.file.display().to_string(),
                revision.map(|r| r.to_string()).unwrap_or_default(),
                hash.map(|h| format!("{h:x}")).unwrap_or_default(),
                output::human_bytes(i64::try_from(total).unwrap_or(i64::MAX)),
            ]],
        )),
        Format::Simple => {
            let mut line = format!("Snapshot saved at {}", a.file.display());
            if let (Some(rev), Some(hash)) = (revision, hash) {
                line.push_str(&format!(" (revision {rev}, hash {hash:x}, {total} bytes)"));
            }
            line.push('\n');
            emit(&line)
        }
    }
}

fn read_backup(file: &std::path::Path) -> Result<backup::Backup> {
    backup::read(file).map_err(|e| CliError::new(format!("{}: {e}", file.display())))
}

/// etcdctl's `snapshot status`: HASH is the HashKV of the snapshot at its revision, so it
/// can be compared with `Maintenance.HashKV` of a member at that revision.
fn snapshot_status(a: &SnapshotStatusArgs, settings: &Settings) -> Result<()> {
    let b = read_backup(&a.file)?;
    let hash = b
        .kv_hash()
        .map_err(|e| CliError::new(format!("{}: {e}", a.file.display())))?;
    let size = i64::try_from(b.size).unwrap_or(i64::MAX);
    match settings.format {
        Format::Json => emit_json(&json!({
            "hash": hash,
            "revision": b.header.revision,
            "compact_revision": b.header.compacted,
            "totalKey": b.header.records,
            "totalSize": b.size,
        })),
        Format::Table => emit(&output::table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{hash:x}"),
                b.header.revision.to_string(),
                b.header.records.to_string(),
                output::human_bytes(size),
            ]],
        )),
        Format::Simple => emit(&format!(
            "{hash:x}, {}, {}, {}\n",
            b.header.revision,
            b.header.records,
            output::human_bytes(size)
        )),
    }
}

/// etcdutl's `snapshot restore`: checks the file, then seeds `--data-dir` with its data and
/// no Raft state. `corral serve` with the same --name / --initial-cluster flags (and
/// `--initial-cluster-state new`) then bootstraps a new cluster holding the data, and
/// revisions continue from the snapshot's. Every member of the new cluster is restored from
/// the same file, each with its own --name and --data-dir.
fn snapshot_restore(a: &SnapshotRestoreArgs, settings: &Settings) -> Result<()> {
    // The flags are `corral serve`'s: checked by the same rules now, so a mistake shows
    // before anything is written rather than when the member starts.
    let mut serve = vec![
        "serve".to_string(),
        format!("--name={}", a.name),
        format!("--data-dir={}", a.data_dir.display()),
        format!(
            "--initial-advertise-peer-urls={}",
            a.initial_advertise_peer_urls
        ),
        format!("--initial-cluster-token={}", a.initial_cluster_token),
    ];
    if let Some(c) = &a.initial_cluster {
        serve.push(format!("--initial-cluster={c}"));
    }
    let cfg = parse_serve_flags(&serve)?;
    let b = read_backup(&a.file)?;
    let revision = b.header.revision;
    backup::restore(b, &a.data_dir)
        .map_err(|e| CliError::new(format!("restoring into {}: {e}", a.data_dir.display())))?;
    match settings.format {
        Format::Json => emit_json(&json!({
            "data_dir": a.data_dir.display().to_string(),
            "revision": revision,
            "member_id": hex_id(cfg.member_id),
            "cluster_id": hex_id(cfg.cluster_id),
        })),
        Format::Table => emit(&output::table(
            &["DATA DIR", "REVISION", "NAME", "MEMBER ID", "CLUSTER ID"],
            &[vec![
                a.data_dir.display().to_string(),
                revision.to_string(),
                a.name.clone(),
                hex_id(cfg.member_id),
                hex_id(cfg.cluster_id),
            ]],
        )),
        Format::Simple => emit(&format!(
            "Restored {} (revision {revision}) into {}: member {} ({}) of cluster {}\n",
            a.file.display(),
            a.data_dir.display(),
            a.name,
            hex_id(cfg.member_id),
            hex_id(cfg.cluster_id),
        )),
    }
}

/// Validates `corral serve` flags as `serve` would, ignoring `CORRAL_*` variables (these
/// flags were given explicitly or defaulted here).
fn parse_serve_flags(args: &[String]) -> Result<crate::config::Config> {
    use clap::{CommandFactory, FromArgMatches, Parser};
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: crate::config::ServeArgs,
    }
    let matches = Serve::command()
        .mut_args(|arg| arg.env(None))
        .try_get_matches_from(args)
        .map_err(|e| CliError::new(super::usage_line(&e)))?;
    let serve =
        Serve::from_arg_matches(&matches).map_err(|e| CliError::new(super::usage_line(&e)))?;
    serve
        .args
        .validate()
        .map_err(|e| CliError::new(e.to_string()))
}
