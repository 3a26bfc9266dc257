//! The `corral` client: every subcommand except `serve`.
//!
//! - zkCli's verbs at the top level (`ls`, `create`, `get`, `set`, `stat`, `delete`,
//!   `deleteall`, `sync`, `watch`) over `corral.v1.Znodes`/`Sessions` — `cli/znode.rs`;
//! - etcdctl's commands: `kv` (put/get/del/watch/txn) — `kv.rs`; `lease` — `lease.rs`; `lock`
//!   and `elect` — `recipe.rs`; `member`, `endpoint`, `snapshot` — `cluster.rs`;
//! - `corral shell`, an interactive zkCli with one session for its lifetime — `shell.rs`;
//! - [`conn`]: endpoints, failover and one-line errors; [`output`]: the three formats.
//!
//! Every command is a function of resolved [`conn::Settings`]; errors are one line on stderr
//! (`Error: ...`) and exit code 1, for usage errors too.

mod cluster;
pub mod conn;
mod kv;
mod lease;
pub mod output;
mod recipe;
mod shell;
mod words;
mod znode;

use std::future::Future;
use std::process::ExitCode;

use clap::Subcommand;

use conn::{Settings, ZkGlobals};

/// A command's failure: one line for stderr and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// `None`: nothing to print (stdout was closed, or a child's exit status is passed on).
    message: Option<String>,
    code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: Some(message.into().replace(['\n', '\r'], " ")),
            code: 1,
        }
    }

    /// Stdout was closed (`corral ... | head`): stop quietly, successfully.
    pub fn quiet() -> CliError {
        CliError {
            message: None,
            code: 0,
        }
    }

    /// Exit with `code` and print nothing (the status of a command run under `lock`).
    pub fn exit(code: u8) -> CliError {
        CliError {
            message: None,
            code,
        }
    }

    pub fn from_status(s: &tonic::Status, endpoint: Option<&str>) -> CliError {
        CliError::new(conn::status_line(s, endpoint))
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> CliError {
        CliError::from_status(&s, None)
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// The client subcommands, flattened into `corral`'s own (beside `serve`).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the children of a znode [zkCli: ls [-w] [-s] [-R] path]
    Ls(znode::LsArgs),
    // Create a znode (an attribute, not a doc comment: rustdoc would read `[data]` as a link).
    #[command(about = "Create a znode [zkCli: create [-e] [-s] [-c] [-t ttl] path [data]]")]
    Create(znode::CreateArgs),
    /// Print a znode's data [zkCli: get [-w] [-s] path]
    Get(znode::GetArgs),
    /// Replace a znode's data [zkCli: set [-s] [-v version] path data]
    Set(znode::SetArgs),
    /// Print a znode's stat [zkCli: stat [-w] path]
    Stat(znode::StatArgs),
    /// Delete a znode that has no children [zkCli: delete [-v version] path]
    Delete(znode::DeleteArgs),
    /// Delete a znode and everything under it, atomically [zkCli: deleteall path]
    Deleteall(znode::DeleteallArgs),
    /// Wait until the member has applied every committed write [zkCli: sync path]
    Sync(znode::SyncArgs),
    /// Print the events of a znode (and, by default, its subtree) until interrupted
    Watch(znode::WatchArgs),
    /// The etcd key space: put, get, del, watch, txn
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// etcd leases: grant, revoke, keep-alive, list, timetolive
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Acquire a distributed lock (etcd's), hold it until interrupted or while a command runs
    Lock(recipe::LockArgs),
    /// Campaign in an election (etcd's), or observe its leaders with --listen
    Elect(recipe::ElectArgs),
    /// Cluster membership: list, add, remove
    #[command(subcommand)]
    Member(cluster::MemberCommand),
    /// Endpoint checks: status, health
    #[command(subcommand)]
    Endpoint(cluster::EndpointCommand),
    /// Backups: save (from a member), restore (into a new data dir), status (of a file)
    #[command(subcommand)]
    Snapshot(cluster::SnapshotCommand),
    /// Interactive shell like zkCli: line editing, history, tab completion, one session
    Shell(shell::ShellArgs),
}

/// Runs a client command; prints its error (one line) and returns the exit code.
pub fn run(top: &ZkGlobals, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(CliError::new(format!("starting the runtime: {e}"))),
    };
    let result = match command {
        Command::Shell(args) => shell::run(&runtime, top, args),
        command => runtime.block_on(dispatch(top, command, None)),
    };
    // Background tasks (keep-alives, streams) must not hold the process open.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

/// Makes a panic end the process as any other error does: one `Error: internal error: ...`
/// line on stderr and exit code 1, no stack trace. For the client commands only: `serve`
/// keeps Rust's default report, which its logs want.
pub fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write as _;
        let line = internal_error(info.payload(), info.location());
        let _ = writeln!(std::io::stderr(), "Error: {line}");
        // Whichever thread panicked (a runtime worker too), the command is over.
        std::process::exit(1);
    }));
}

/// The one line for a panic: its message, and where, for a bug report.
fn internal_error(
    payload: &(dyn std::any::Any + Send),
    location: Option<&std::panic::Location<'_>>,
) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    let mut line = format!("internal error: {message}");
    if let Some(l) = location {
        line.push_str(&format!(" (at {}:{})", l.file(), l.line()));
    }
    line.replace(['\n', '\r'], " ")
}

fn report(e: CliError) -> ExitCode {
    if let Some(m) = e.message() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "Error: {m}");
    }
    ExitCode::from(e.code)
}

/// Prints a clap parse outcome: help and version go to stdout with exit code 0; a usage
/// error is one line on stderr with exit code 1 (clap's own would be several lines and 2).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => report(CliError::new(usage_line(e))),
    }
}

/// clap's multi-line error rendered as one line: the message, then the usage.
pub fn usage_line(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let usage = e
            .render()
            .to_string()
            .lines()
            .find_map(|l| l.strip_prefix("Usage: ").map(str::to_string))
            .unwrap_or_default();
        return format!("a subcommand is required; usage: {usage} (see --help)");
    }
    let rendered = e.render().to_string();
    let mut message = String::new();
    let mut usage = None;
    for line in rendered.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("For more information") || l.starts_with("tip:") {
            continue;
        }
        if let Some(u) = l.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
            continue;
        }
        let l = l.strip_prefix("error: ").unwrap_or(l);
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(l);
    }
    match usage {
        Some(u) => format!("{message}; usage: {u}"),
        None => message,
    }
}

/// Runs one client command with its resolved settings. In the shell, `shell` carries the
/// shell's session and watch stream.
async fn dispatch(top: &ZkGlobals, command: Command, shell: Option<&shell::State>) -> Result<()> {
    let zk = |g: &ZkGlobals| Settings::resolve(&top.conn, top.write_out, &g.conn, g.write_out);
    let etcd =
        |g: &conn::EtcdGlobals| Settings::resolve(&top.conn, top.write_out, &g.conn, g.write_out);
    match command {
        Command::Ls(a) => znode::ls(&zk(&a.g)?, &a, shell).await,
        Command::Create(a) => znode::create(&zk(&a.g)?, &a, shell).await,
        Command::Get(a) => znode::get(&zk(&a.g)?, &a, shell).await,
        Command::Set(a) => znode::set(&zk(&a.g)?, &a, shell).await,
        Command::Stat(a) => znode::stat(&zk(&a.g)?, &a, shell).await,
        Command::Delete(a) => znode::delete(&zk(&a.g)?, &a, shell).await,
        Command::Deleteall(a) => znode::deleteall(&zk(&a.g)?, &a, shell).await,
        Command::Sync(a) => znode::sync(&zk(&a.g)?, &a, shell).await,
        Command::Watch(a) => znode::watch(&zk(&a.g)?, &a, shell).await,
        Command::Kv(c) => kv::run(c, etcd).await,
        Command::Lease(c) => lease::run(c, etcd).await,
        Command::Lock(a) => recipe::lock(&etcd(&a.g)?, &a).await,
        Command::Elect(a) => recipe::elect(&etcd(&a.g)?, &a).await,
        Command::Member(c) => cluster::member(c, etcd).await,
        Command::Endpoint(c) => cluster::endpoint(c, etcd).await,
        Command::Snapshot(c) => cluster::snapshot(c, etcd).await,
        Command::Shell(_) => Err(CliError::new("already in the shell")),
    }
}

/// A bounded piece of a command: fails with a clear message after `--command-timeout`.
pub(crate) async fn bounded<T>(
    settings: &Settings,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(settings.command_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(CliError::new(format!(
            "timed out after {:?} (--command-timeout)",
            settings.command_timeout
        ))),
    }
}

/// Ctrl-C or SIGTERM seen since a command started: how the commands that run "until
/// interrupted" end, so that they can clean up (unlock, resign, revoke) first. Signals are
/// counted by one task for the whole process, so one that arrives while a command is busy
/// (printing an event) is not lost, and one from before a command (in the shell) does not
/// stop it.
pub(crate) struct Interrupt(tokio::sync::watch::Receiver<u64>);

static INTERRUPTS: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> =
    std::sync::OnceLock::new();

impl Interrupt {
    /// Must be called inside the runtime.
    pub(crate) fn new() -> Interrupt {
        let tx = INTERRUPTS.get_or_init(|| {
            let (tx, _) = tokio::sync::watch::channel(0u64);
            let count = tx.clone();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let int = signal(SignalKind::interrupt()).ok();
                let term = signal(SignalKind::terminate()).ok();
                tokio::spawn(async move {
                    let (Some(mut int), Some(mut term)) = (int, term) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = int.recv() => {}
                            _ = term.recv() => {}
                        }
                        count.send_modify(|n| *n += 1);
                    }
                });
            }
            #[cfg(not(unix))]
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    count.send_modify(|n| *n += 1);
                }
            });
            tx
        });
        Interrupt(tx.subscribe())
    }

    /// Resolves at the next signal (at once if one came since [`Interrupt::new`]).
    pub(crate) async fn wait(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_line() {
        let payload = std::panic::catch_unwind(|| {
            std::panic::panic_any(String::from("bad state\nsecond line"));
        })
        .expect_err("it panicked");
        let here = std::panic::Location::caller();
        assert_eq!(
            internal_error(payload.as_ref(), Some(here)),
            format!(
                "internal error: bad state second line (at {}:{})",
                here.file(),
                here.line()
            )
        );
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).expect_err("panic");
        assert_eq!(
            internal_error(payload.as_ref(), None),
            "internal error: panic"
        );
        let payload = std::panic::catch_unwind(|| panic!("static")).expect_err("panic");
        assert_eq!(
            internal_error(payload.as_ref(), None),
            "internal error: static"
        );
    }
}
