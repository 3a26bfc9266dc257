//! zkCli's verbs over `corral.v1.Znodes`: ls, create, get, set, stat, delete, deleteall,
//! sync, and `watch` (zkCli's `addWatch`, streaming). The same functions serve the one-shot
//! commands and `corral shell`; in the shell they use its connection, its session (for
//! ephemerals) and its watch stream (so `-w` watches print when they fire, later).

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};

use clap::Args;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, MutexGuard};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use super::conn::{Conn, Settings, ZkGlobals};
use super::output::{self, emit, emit_json, Format};
use super::shell::State as ShellState;
use super::{bounded, CliError, Interrupt, Result};
use crate::pb::corral::v1::sessions_client::SessionsClient;
use crate::pb::corral::v1::watch_request::Request as WatchReq;
use crate::pb::corral::v1::znodes_client::ZnodesClient;
use crate::pb::corral::v1::{
    AddWatch, CloseSessionRequest, CreateMode, CreateRequest, DeleteRequest, EventType,
    GetChildrenRequest, GetDataRequest, OpenSessionRequest, RemoveWatch, SetDataRequest, Stat,
    SyncRequest, WatchEvent, WatchKind, WatchRequest, WatchResponse,
};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Set a watch: after listing, wait for the children to change and print the event
    #[arg(short = 'w')]
    pub watch: bool,
    /// Also print the znode's stat
    #[arg(short = 's')]
    pub stat: bool,
    /// List the whole subtree, one path per line
    #[arg(short = 'R')]
    pub recursive: bool,
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Ephemeral: deleted when the session ends (in the shell, when it quits)
    #[arg(short = 'e')]
    pub ephemeral: bool,
    /// Sequential: a 10-digit counter is appended to the path
    #[arg(short = 's')]
    pub sequential: bool,
    /// Container: deleted once it has had children and the last one is gone
    #[arg(short = 'c')]
    pub container: bool,
    /// TTL in milliseconds: deleted when unmodified and childless for that long
    #[arg(short = 't', value_name = "TTL")]
    pub ttl: Option<i64>,
    pub path: String,
    #[arg(allow_hyphen_values = true)]
    pub data: Option<String>,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Set a watch: after printing, wait for the data to change and print the event
    #[arg(short = 'w')]
    pub watch: bool,
    /// Also print the stat
    #[arg(short = 's')]
    pub stat: bool,
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Also print the new stat
    #[arg(short = 's')]
    pub stat: bool,
    /// Expected version: refuse (BadVersion) unless the znode has it
    #[arg(short = 'v', value_name = "VERSION", allow_negative_numbers = true)]
    pub version: Option<i32>,
    pub path: String,
    #[arg(allow_hyphen_values = true)]
    pub data: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// Set a watch: wait for the znode to be created, changed or deleted and print the event
    #[arg(short = 'w')]
    pub watch: bool,
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Expected version: refuse (BadVersion) unless the znode has it
    #[arg(short = 'v', value_name = "VERSION", allow_negative_numbers = true)]
    pub version: Option<i32>,
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct DeleteallArgs {
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

/// zkCli's addWatch modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchMode {
    /// The znode's own events and its children changing.
    Persistent,
    /// Created, deleted and data-changed events of the znode and all its descendants.
    PersistentRecursive,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// PERSISTENT or PERSISTENT_RECURSIVE [default: PERSISTENT_RECURSIVE]
    #[arg(short = 'm', long = "mode", value_enum, ignore_case = true)]
    pub mode: Option<WatchMode>,
    /// Also deliver the changes since this zxid (for resuming after a gap)
    #[arg(long, value_name = "ZXID")]
    pub start_zxid: Option<i64>,
    pub path: String,
    #[command(flatten)]
    pub g: ZkGlobals,
}

pub(crate) fn check_path(path: &str) -> Result<()> {
    crate::znode::validate_path(path).map_err(|e| match e {
        crate::znode::ZkError::BadArguments(m) => CliError::new(m),
        e => CliError::new(e.to_string()),
    })
}

/// The connection a command uses: its own, or the shell's (locked for the command).
enum ConnRef<'a> {
    Own(Conn),
    Shell(MutexGuard<'a, Conn>),
}

impl Deref for ConnRef<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            ConnRef::Own(c) => c,
            ConnRef::Shell(g) => g,
        }
    }
}

impl DerefMut for ConnRef<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            ConnRef::Own(c) => c,
            ConnRef::Shell(g) => g,
        }
    }
}

async fn connect<'a>(settings: &Settings, shell: Option<&'a ShellState>) -> Result<ConnRef<'a>> {
    match shell {
        Some(s) => Ok(ConnRef::Shell(s.conn.lock().await)),
        None => Ok(ConnRef::Own(Conn::connect(settings).await?)),
    }
}

pub fn event_name(t: i32) -> &'static str {
    match EventType::try_from(t) {
        Ok(EventType::NodeCreated) => "NodeCreated",
        Ok(EventType::NodeDeleted) => "NodeDeleted",
        Ok(EventType::NodeDataChanged) => "NodeDataChanged",
        Ok(EventType::NodeChildrenChanged) => "NodeChildrenChanged",
        _ => "None",
    }
}

/// zkCli's line for an event.
pub fn event_line(e: &WatchEvent) -> String {
    format!(
        "WatchedEvent state:SyncConnected type:{} path:{}",
        event_name(e.r#type),
        e.path
    )
}

pub fn event_json(watch_id: i64, e: &WatchEvent) -> Value {
    json!({"watch_id": watch_id, "type": event_name(e.r#type), "path": e.path, "zxid": e.zxid})
}

/// How a fired one-shot watch is shown: zkCli's block, or one JSON line.
pub fn fired_text(format: Format, watch_id: i64, e: &WatchEvent) -> String {
    match format {
        Format::Json => format!("{}\n", event_json(watch_id, e)),
        _ => format!("WATCHER::\n\n{}\n", event_line(e)),
    }
}

// ------------------------------------------------------------------------------- ls

pub async fn ls(settings: &Settings, a: &LsArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    if a.recursive {
        let paths = bounded(settings, async {
            let mut conn = connect(settings, shell).await?;
            subtree(&mut conn, &a.path).await
        })
        .await?;
        return match settings.format {
            Format::Json => emit_json(&json!({"path": a.path, "paths": paths})),
            Format::Table => emit(&output::table(
                &["PATH"],
                &paths.into_iter().map(|p| vec![p]).collect::<Vec<_>>(),
            )),
            Format::Simple => emit(&paths.iter().map(|p| format!("{p}\n")).collect::<String>()),
        };
    }
    if a.watch {
        let ack = add_watch(settings, shell, &a.path, WatchKind::WatchChildren).await?;
        let (ack, pending) = ack;
        print_ls(
            settings.format,
            &a.path,
            &ack.children,
            &[],
            ack.stat.as_ref(),
            ack.zxid,
            a.stat,
        )?;
        return wait_fired(settings.format, pending).await;
    }
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = GetChildrenRequest {
            path: a.path.clone(),
            with_stats: settings.format == Format::Table,
        };
        conn.call(true, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).get_children(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    print_ls(
        settings.format,
        &a.path,
        &r.children,
        &r.child_stats,
        r.stat.as_ref(),
        r.zxid,
        a.stat,
    )
}

fn print_ls(
    format: Format,
    path: &str,
    children: &[String],
    child_stats: &[Stat],
    stat: Option<&Stat>,
    zxid: i64,
    with_stat: bool,
) -> Result<()> {
    let stat = stat.cloned().unwrap_or_default();
    match format {
        Format::Json => emit_json(&json!({
            "path": path,
            "children": children,
            "stat": output::stat_json(&stat),
            "zxid": zxid,
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = children
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut row = vec![name.clone()];
                    if let Some(s) = child_stats.get(i) {
                        row.extend([
                            s.version.to_string(),
                            s.data_length.to_string(),
                            s.num_children.to_string(),
                            format!("0x{:x}", s.ephemeral_owner),
                            format!("0x{:x}", s.mzxid),
                        ]);
                    }
                    row
                })
                .collect();
            let header: &[&str] = if child_stats.is_empty() {
                &["NAME"]
            } else {
                &[
                    "NAME",
                    "VERSION",
                    "DATA LENGTH",
                    "CHILDREN",
                    "EPHEMERAL OWNER",
                    "MZXID",
                ]
            };
            let mut out = output::table(header, &rows);
            if with_stat {
                out.push_str(&output::table(
                    &["FIELD", "VALUE"],
                    &output::stat_rows(&stat),
                ));
            }
            emit(&out)
        }
        Format::Simple => {
            let mut out = format!("[{}]\n", children.join(", "));
            if with_stat {
                out.push_str(&output::stat_text(&stat));
            }
            emit(&out)
        }
    }
}

/// Every path of the subtree under `root`, breadth first (as zkCli's `ls -R`).
async fn subtree(conn: &mut Conn, root: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([root.to_string()]);
    while let Some(p) = queue.pop_front() {
        let req = GetChildrenRequest {
            path: p.clone(),
            with_stats: false,
        };
        let r = conn
            .call(true, |ch| {
                let req = req.clone();
                async move { ZnodesClient::new(ch).get_children(req).await }
            })
            .await;
        let kids = match r {
            Ok(r) => r.into_inner().children,
            // Deleted while we walked: it is simply not there any more.
            Err(_) if p != root => continue,
            Err(e) => return Err(e),
        };
        for k in kids {
            queue.push_back(if p == "/" {
                format!("/{k}")
            } else {
                format!("{p}/{k}")
            });
        }
        out.push(p);
    }
    Ok(out)
}

// ----------------------------------------------------------------------------- create

fn create_mode(a: &CreateArgs) -> Result<CreateMode> {
    if a.container && (a.ephemeral || a.sequential || a.ttl.is_some()) {
        return Err(CliError::new(
            "-c cannot be combined with -e, -s or -t: a container is its own mode",
        ));
    }
    if a.ephemeral && a.ttl.is_some() {
        return Err(CliError::new("TTLs cannot be used with ephemeral nodes"));
    }
    if let Some(t) = a.ttl {
        if t <= 0 {
            return Err(CliError::new(format!(
                "-t {t}: the TTL must be a positive number of milliseconds"
            )));
        }
    }
    Ok(
        match (a.ephemeral, a.sequential, a.container, a.ttl.is_some()) {
            (_, _, true, _) => CreateMode::Container,
            (true, true, _, _) => CreateMode::EphemeralSequential,
            (true, false, _, _) => CreateMode::Ephemeral,
            (false, true, _, true) => CreateMode::PersistentSequentialWithTtl,
            (false, false, _, true) => CreateMode::PersistentWithTtl,
            (false, true, _, false) => CreateMode::PersistentSequential,
            (false, false, _, false) => CreateMode::Persistent,
        },
    )
}

pub async fn create(settings: &Settings, a: &CreateArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    let mode = create_mode(a)?;
    let ephemeral = a.ephemeral;
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        // Ephemerals belong to a session: the shell's, or (one-shot) one opened for this
        // command and closed when it ends — as with zkCli run with a command.
        let (session, own_session) = match (ephemeral, shell) {
            (false, _) => (0, false),
            (true, Some(s)) => (s.session_id(), false),
            (true, None) => {
                let s = conn
                    .call(false, |ch| async move {
                        SessionsClient::new(ch)
                            .open_session(OpenSessionRequest { timeout_ms: 10_000 })
                            .await
                    })
                    .await?
                    .into_inner();
                (s.session_id, true)
            }
        };
        let req = CreateRequest {
            path: a.path.clone(),
            data: a.data.clone().unwrap_or_default().into_bytes(),
            mode: mode as i32,
            session_id: session,
            ttl_ms: a.ttl.unwrap_or(0),
            make_parents: false,
        };
        let r = conn
            .call(false, |ch| {
                let req = req.clone();
                async move { ZnodesClient::new(ch).create(req).await }
            })
            .await;
        if own_session {
            let _ = SessionsClient::new(conn.channel.clone())
                .close_session(CloseSessionRequest {
                    session_id: session,
                })
                .await;
        }
        r.map(|r| (r.into_inner(), own_session))
    })
    .await?;
    let (r, own_session) = r;
    if own_session {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "note: {} was ephemeral to this command's session, which has ended; \
                 use `corral shell` to keep ephemeral nodes\n",
                r.path
            )
            .as_bytes(),
        );
    }
    match settings.format {
        Format::Json => emit_json(&json!({
            "path": r.path,
            "stat": output::stat_json(&r.stat.unwrap_or_default()),
            "zxid": r.zxid,
        })),
        Format::Table => emit(&output::table(
            &["PATH", "CZXID"],
            &[vec![r.path.clone(), format!("0x{:x}", r.zxid)]],
        )),
        Format::Simple => emit(&format!("Created {}\n", r.path)),
    }
}

// -------------------------------------------------------------------------- get, stat

pub async fn get(settings: &Settings, a: &GetArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    if a.watch {
        let (ack, pending) = add_watch(settings, shell, &a.path, WatchKind::WatchData).await?;
        if !ack.exists {
            if let Some(p) = pending {
                p.cancel(shell).await;
            }
            return Err(CliError::new(format!("Node does not exist: {}", a.path)));
        }
        let stat = ack.stat.unwrap_or_default();
        print_get(settings.format, &a.path, &ack.data, &stat, ack.zxid, a.stat)?;
        return wait_fired(settings.format, pending).await;
    }
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = GetDataRequest {
            path: a.path.clone(),
        };
        conn.call(true, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).get_data(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    let stat = r.stat.unwrap_or_default();
    print_get(settings.format, &a.path, &r.data, &stat, r.zxid, a.stat)
}

fn print_get(
    format: Format,
    path: &str,
    data: &[u8],
    stat: &Stat,
    zxid: i64,
    with_stat: bool,
) -> Result<()> {
    match format {
        Format::Json => {
            let mut o = Map::new();
            o.insert("path".into(), path.into());
            output::put_bytes(&mut o, "data", data);
            o.insert("stat".into(), output::stat_json(stat));
            o.insert("zxid".into(), zxid.into());
            emit_json(&Value::Object(o))
        }
        Format::Table => {
            let mut out = output::table(
                &["PATH", "DATA", "VERSION", "MZXID", "MTIME"],
                &[vec![
                    path.to_string(),
                    output::cell(data),
                    stat.version.to_string(),
                    format!("0x{:x}", stat.mzxid),
                    output::java_date(stat.mtime),
                ]],
            );
            if with_stat {
                out.push_str(&output::table(
                    &["FIELD", "VALUE"],
                    &output::stat_rows(stat),
                ));
            }
            emit(&out)
        }
        Format::Simple => {
            output::emit_bytes(data)?;
            if with_stat {
                emit(&output::stat_text(stat))?;
            }
            Ok(())
        }
    }
}

fn print_stat(format: Format, path: &str, stat: &Stat, zxid: i64) -> Result<()> {
    match format {
        Format::Json => emit_json(&json!({
            "path": path,
            "stat": output::stat_json(stat),
            "zxid": zxid,
        })),
        Format::Table => emit(&output::table(
            &["FIELD", "VALUE"],
            &output::stat_rows(stat),
        )),
        Format::Simple => emit(&output::stat_text(stat)),
    }
}

pub async fn stat(settings: &Settings, a: &StatArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    if a.watch {
        let (ack, pending) = add_watch(settings, shell, &a.path, WatchKind::WatchExists).await?;
        if ack.exists {
            print_stat(
                settings.format,
                &a.path,
                &ack.stat.unwrap_or_default(),
                ack.zxid,
            )?;
        } else {
            // zkCli says so, and the watch stays: it fires when the znode is created.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("Node does not exist: {}\n", a.path).as_bytes(),
            );
        }
        return wait_fired(settings.format, pending).await;
    }
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = crate::pb::corral::v1::ExistsRequest {
            path: a.path.clone(),
        };
        conn.call(true, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).exists(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    if !r.exists {
        return Err(CliError::new(format!("Node does not exist: {}", a.path)));
    }
    print_stat(
        settings.format,
        &a.path,
        &r.stat.unwrap_or_default(),
        r.zxid,
    )
}

// ----------------------------------------------------------------- set, delete, sync

pub async fn set(settings: &Settings, a: &SetArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = SetDataRequest {
            path: a.path.clone(),
            data: a.data.clone().into_bytes(),
            version: a.version.unwrap_or(-1),
        };
        conn.call(false, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).set_data(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    let stat = r.stat.unwrap_or_default();
    match settings.format {
        Format::Json => emit_json(&json!({
            "path": a.path,
            "stat": output::stat_json(&stat),
            "zxid": r.zxid,
        })),
        Format::Table => emit(&output::table(
            &["PATH", "VERSION", "MZXID"],
            &[vec![
                a.path.clone(),
                stat.version.to_string(),
                format!("0x{:x}", stat.mzxid),
            ]],
        )),
        Format::Simple if a.stat => emit(&output::stat_text(&stat)),
        Format::Simple => Ok(()),
    }
}

async fn delete_inner(
    settings: &Settings,
    shell: Option<&ShellState>,
    path: &str,
    version: i32,
    recursive: bool,
) -> Result<()> {
    check_path(path)?;
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = DeleteRequest {
            path: path.to_string(),
            version,
            recursive,
        };
        conn.call(false, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).delete(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    match settings.format {
        Format::Json => emit_json(&json!({"path": path, "deleted": r.deleted, "zxid": r.zxid})),
        Format::Table => emit(&output::table(
            &["PATH", "DELETED"],
            &[vec![path.to_string(), r.deleted.to_string()]],
        )),
        Format::Simple => Ok(()),
    }
}

pub async fn delete(settings: &Settings, a: &DeleteArgs, shell: Option<&ShellState>) -> Result<()> {
    delete_inner(settings, shell, &a.path, a.version.unwrap_or(-1), false).await
}

pub async fn deleteall(
    settings: &Settings,
    a: &DeleteallArgs,
    shell: Option<&ShellState>,
) -> Result<()> {
    delete_inner(settings, shell, &a.path, -1, true).await
}

pub async fn sync(settings: &Settings, a: &SyncArgs, shell: Option<&ShellState>) -> Result<()> {
    check_path(&a.path)?;
    let r = bounded(settings, async {
        let mut conn = connect(settings, shell).await?;
        let req = SyncRequest {
            path: a.path.clone(),
        };
        conn.call(true, |ch| {
            let req = req.clone();
            async move { ZnodesClient::new(ch).sync(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    match settings.format {
        Format::Json => emit_json(&json!({"path": r.path, "zxid": r.zxid})),
        Format::Table => emit(&output::table(
            &["PATH", "ZXID"],
            &[vec![r.path, format!("0x{:x}", r.zxid)]],
        )),
        Format::Simple => emit("Sync is OK\n"),
    }
}

// ---------------------------------------------------------------------------- watches

/// A one-shot watch waiting to fire: in a one-shot command, the stream to wait on; in the
/// shell, nothing to wait for (the shell prints the event when it fires).
pub(crate) enum Pending {
    Stream(Box<WatchSet>, i64),
    Shell(i64),
}

impl Pending {
    async fn cancel(self, shell: Option<&ShellState>) {
        if let (Pending::Shell(id), Some(s)) = (self, shell) {
            s.remove_watch(id).await;
        }
    }
}

/// Registers a watch with its atomic read; returns the read and, in a one-shot command, the
/// stream to wait on (`None` in the shell).
async fn add_watch(
    settings: &Settings,
    shell: Option<&ShellState>,
    path: &str,
    kind: WatchKind,
) -> Result<(WatchResponse, Option<Pending>)> {
    if let Some(s) = shell {
        let ack = bounded(settings, s.add_watch(path, kind)).await?;
        return Ok((ack.clone(), Some(Pending::Shell(ack.watch_id))));
    }
    bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        let mut set = WatchSet::new(conn, None);
        let ack = set.add_and_wait(path, kind).await?;
        let id = ack.watch_id;
        Ok((ack, Some(Pending::Stream(Box::new(set), id))))
    })
    .await
}

/// One-shot command: waits for the watch to fire (or Ctrl-C) and prints the event. In the
/// shell: returns at once.
async fn wait_fired(format: Format, pending: Option<Pending>) -> Result<()> {
    let mut stop = Interrupt::new();
    let Some(Pending::Stream(mut set, id)) = pending else {
        return Ok(());
    };
    loop {
        let step = tokio::select! {
            s = set.step() => s?,
            _ = stop.wait() => return Ok(()),
        };
        if let Step::Event(wid, e) = step {
            if wid == id {
                return emit(&fired_text(format, wid, &e));
            }
        }
    }
}

/// `corral watch`: a persistent watch, printed until interrupted.
pub async fn watch(settings: &Settings, a: &WatchArgs, shell: Option<&ShellState>) -> Result<()> {
    let mut stop = Interrupt::new();
    check_path(&a.path)?;
    let kind = match a.mode.unwrap_or(WatchMode::PersistentRecursive) {
        WatchMode::Persistent => WatchKind::WatchPersistent,
        WatchMode::PersistentRecursive => WatchKind::WatchPersistentRecursive,
    };
    if let Some(s) = shell {
        // In the shell a watch prints in the background, as zkCli's addWatch does.
        if a.start_zxid.is_some() {
            return Err(CliError::new("--start-zxid is not available in the shell"));
        }
        bounded(settings, s.add_watch(&a.path, kind)).await?;
        return Ok(());
    }
    let mut set = bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        let mut set = WatchSet::new(conn, None);
        match a.start_zxid {
            Some(z) => set.add_from_and_wait(&a.path, kind, z).await?,
            None => set.add_and_wait(&a.path, kind).await?,
        };
        Ok(set)
    })
    .await?;
    loop {
        let step = tokio::select! {
            s = set.step() => s?,
            _ = stop.wait() => return Ok(()),
        };
        if let Step::Event(id, e) = step {
            match settings.format {
                Format::Json => emit_json(&event_json(id, &e))?,
                _ => emit(&format!("{}\n", event_line(&e)))?,
            }
        }
    }
}

/// One watch of a [`WatchSet`] and where to resume it after a reconnect.
struct Tracked {
    path: String,
    kind: WatchKind,
    /// zxid of the last event delivered (or of the read the watch was registered with).
    last: i64,
    /// Events already delivered at `last`: a resume starts at `last` itself (a multi's
    /// events share one zxid and the stream may have broken between them) and skips these.
    seen_at_last: Vec<(i32, String)>,
    /// Acknowledged by the server (on the current stream).
    added: bool,
}

impl Tracked {
    fn one_shot(&self) -> bool {
        matches!(
            self.kind,
            WatchKind::WatchData | WatchKind::WatchExists | WatchKind::WatchChildren
        )
    }
}

/// What the shell asks its watch task for.
pub(crate) enum WatchCmd {
    Add {
        path: String,
        kind: WatchKind,
        reply: oneshot::Sender<Result<WatchResponse>>,
    },
    /// Removes one watch by id.
    RemoveId(i64),
    /// Removes every watch on a path; replies with how many.
    RemovePath {
        path: String,
        reply: oneshot::Sender<usize>,
    },
    /// Lists the watches: (id, path, kind).
    List {
        reply: oneshot::Sender<Vec<(i64, String, WatchKind)>>,
    },
}

/// What one [`WatchSet::step`] produced.
pub(crate) enum Step {
    /// A watch fired.
    Event(i64, WatchEvent),
    /// The stream broke and was re-established on this endpoint, every watch resumed.
    Reconnected(String),
    /// Nothing to report (an acknowledgement, a command handled).
    Nothing,
}

/// Znode watches on one `Znodes.Watch` stream that survives the loss of its endpoint: on a
/// reconnect (to the next endpoint that answers) every watch is registered again from where
/// it was, so no event is lost or repeated.
pub(crate) struct WatchSet {
    conn: Conn,
    stream: Option<(
        mpsc::UnboundedSender<WatchRequest>,
        Streaming<WatchResponse>,
    )>,
    tracked: BTreeMap<i64, Tracked>,
    next_id: i64,
    /// Adds waiting for their acknowledgement (the shell's replies).
    waiting: BTreeMap<i64, oneshot::Sender<Result<WatchResponse>>>,
    /// The shell's commands, served between events.
    cmds: Option<mpsc::UnboundedReceiver<WatchCmd>>,
    /// A stream was opened once: a missing stream now means a broken one.
    opened: bool,
}

impl WatchSet {
    pub fn new(conn: Conn, cmds: Option<mpsc::UnboundedReceiver<WatchCmd>>) -> WatchSet {
        WatchSet {
            conn,
            stream: None,
            tracked: BTreeMap::new(),
            next_id: 1,
            waiting: BTreeMap::new(),
            cmds,
            opened: false,
        }
    }

    async fn open(
        conn: &Conn,
    ) -> Result<(
        mpsc::UnboundedSender<WatchRequest>,
        Streaming<WatchResponse>,
    )> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = ZnodesClient::new(conn.channel.clone())
            .watch(UnboundedReceiverStream::new(rx))
            .await
            .map_err(|s| CliError::from_status(&s, Some(conn.endpoint())))?
            .into_inner();
        Ok((tx, stream))
    }

    /// Opens the stream if there is none, on this endpoint first.
    async fn ensure_open(&mut self) -> Result<()> {
        if self.stream.is_none() {
            self.stream = Some(Self::open(&self.conn).await?);
            self.opened = true;
        }
        Ok(())
    }

    fn send(&self, req: WatchRequest) {
        if let Some((tx, _)) = &self.stream {
            // A send on a dead stream is noticed (and redone) on the next read.
            let _ = tx.send(req);
        }
    }

    fn queue_add(&mut self, path: &str, kind: WatchKind, start_zxid: Option<i64>) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tracked.insert(
            id,
            Tracked {
                path: path.to_string(),
                kind,
                last: start_zxid.map_or(0, |z| z - 1),
                seen_at_last: Vec::new(),
                added: false,
            },
        );
        self.send(WatchRequest {
            request: Some(WatchReq::Add(AddWatch {
                watch_id: id,
                path: path.to_string(),
                kind: kind as i32,
                start_zxid: start_zxid.unwrap_or(0),
                read: start_zxid.is_none(),
            })),
        });
        id
    }

    /// Registers a watch with its read and waits for the answer (one-shot commands).
    pub async fn add_and_wait(&mut self, path: &str, kind: WatchKind) -> Result<WatchResponse> {
        self.ensure_open().await?;
        let id = self.queue_add(path, kind, None);
        self.wait_ack(id).await
    }

    /// Registers a watch that delivers the changes since `zxid` (no read).
    pub async fn add_from_and_wait(
        &mut self,
        path: &str,
        kind: WatchKind,
        zxid: i64,
    ) -> Result<WatchResponse> {
        if zxid < 1 {
            return Err(CliError::new("--start-zxid must be at least 1"));
        }
        self.ensure_open().await?;
        let id = self.queue_add(path, kind, Some(zxid));
        self.wait_ack(id).await
    }

    async fn wait_ack(&mut self, id: i64) -> Result<WatchResponse> {
        let (tx, mut rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        loop {
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            self.step().await?;
        }
    }

    fn remove(&mut self, id: i64) {
        if self.tracked.remove(&id).is_some() {
            self.send(WatchRequest {
                request: Some(WatchReq::Remove(RemoveWatch { watch_id: id })),
            });
        }
    }

    fn handle(&mut self, cmd: WatchCmd) {
        match cmd {
            WatchCmd::Add { path, kind, reply } => {
                let id = self.queue_add(&path, kind, None);
                self.waiting.insert(id, reply);
            }
            WatchCmd::RemoveId(id) => self.remove(id),
            WatchCmd::RemovePath { path, reply } => {
                let ids: Vec<i64> = self
                    .tracked
                    .iter()
                    .filter(|(_, t)| t.path == path)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    self.remove(*id);
                }
                let _ = reply.send(ids.len());
            }
            WatchCmd::List { reply } => {
                let _ = reply.send(
                    self.tracked
                        .iter()
                        .map(|(id, t)| (*id, t.path.clone(), t.kind))
                        .collect(),
                );
            }
        }
    }

    /// The stream broke: connect again (next endpoint first) and register every watch again
    /// from where it was, without a read.
    async fn reconnect(&mut self) -> Result<String> {
        self.stream = None;
        let mut conn = self.conn.clone();
        conn.failover().await?;
        let stream = Self::open(&conn).await?;
        self.conn = conn;
        self.stream = Some(stream);
        let resumes: Vec<(i64, AddWatch)> = self
            .tracked
            .iter_mut()
            .filter(|(_, t)| t.added)
            .map(|(id, t)| {
                let start = if t.seen_at_last.is_empty() {
                    t.last + 1
                } else {
                    t.last
                };
                (
                    *id,
                    AddWatch {
                        watch_id: *id,
                        path: t.path.clone(),
                        kind: t.kind as i32,
                        start_zxid: start.max(1),
                        read: false,
                    },
                )
            })
            .collect();
        for (_, add) in resumes {
            self.send(WatchRequest {
                request: Some(WatchReq::Add(add)),
            });
        }
        // Adds never acknowledged are sent again as they were asked for (with their read).
        let unacked: Vec<(i64, String, WatchKind)> = self
            .tracked
            .iter()
            .filter(|(_, t)| !t.added)
            .map(|(id, t)| (*id, t.path.clone(), t.kind))
            .collect();
        for (id, path, kind) in unacked {
            self.send(WatchRequest {
                request: Some(WatchReq::Add(AddWatch {
                    watch_id: id,
                    path,
                    kind: kind as i32,
                    start_zxid: 0,
                    read: true,
                })),
            });
        }
        Ok(self.conn.endpoint().to_string())
    }

    /// Waits for the next thing to happen: a shell command, a watch response, or the stream
    /// breaking (then reconnects). Cancel-safe: state changes only once an await is done.
    pub async fn step(&mut self) -> Result<Step> {
        if self.stream.is_none() {
            if !self.opened {
                // The first stream: on the endpoint given, nothing to resume.
                self.stream = Some(Self::open(&self.conn).await?);
                self.opened = true;
                return Ok(Step::Nothing);
            }
            return self.reconnect().await.map(Step::Reconnected);
        }
        let msg = {
            let Some((_, stream)) = self.stream.as_mut() else {
                return Ok(Step::Nothing);
            };
            match self.cmds.as_mut() {
                Some(cmds) => tokio::select! {
                    c = cmds.recv() => Err(c),
                    m = stream.message() => Ok(m),
                },
                None => Ok(stream.message().await),
            }
        };
        let resp = match msg {
            Err(Some(cmd)) => {
                self.handle(cmd);
                return Ok(Step::Nothing);
            }
            // The shell is gone.
            Err(None) => {
                self.cmds = None;
                return Ok(Step::Nothing);
            }
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) | Ok(Err(_)) => {
                self.stream = None;
                return self.reconnect().await.map(Step::Reconnected);
            }
        };
        let id = resp.watch_id;
        if let Some(err) = &resp.error {
            self.tracked.remove(&id);
            if let Some(w) = self.waiting.remove(&id) {
                let status = crate::api::znode::zk_status(&err.code, &err.message);
                let _ = w.send(Err(CliError::from(status)));
            }
            return Ok(Step::Nothing);
        }
        if resp.added {
            if let Some(t) = self.tracked.get_mut(&id) {
                if !t.added && resp.zxid > 0 {
                    t.last = resp.zxid;
                }
                t.added = true;
            }
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.send(Ok(resp));
            }
            return Ok(Step::Nothing);
        }
        let Some(event) = resp.event else {
            return Ok(Step::Nothing);
        };
        let Some(t) = self.tracked.get_mut(&id) else {
            return Ok(Step::Nothing);
        };
        let key = (event.r#type, event.path.clone());
        if event.zxid == t.last && t.seen_at_last.contains(&key) {
            return Ok(Step::Nothing);
        }
        if event.zxid != t.last {
            t.last = event.zxid;
            t.seen_at_last.clear();
        }
        t.seen_at_last.push(key);
        if t.one_shot() {
            self.tracked.remove(&id);
        }
        Ok(Step::Event(id, event))
    }
}
