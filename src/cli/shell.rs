//! `corral shell`: zkCli's interactive shell. One session is opened for the shell's lifetime
//! (kept alive in the background, closed on quit, so ephemerals live exactly as long as the
//! shell) and one watch stream carries every watch set with `-w`, `addWatch` or `watch`:
//! their events print as they fire, above the prompt. Line editing, history (kept in
//! `~/.corral_history`) and tab completion of commands and znode paths come from rustyline.
//!
//! Every one-shot command works in the shell with the same flags; the znode commands use the
//! shell's session and watch stream, the others behave as on the command line.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::conn::{Conn, ConnArgs, Settings, ZkGlobals};
use super::output::{self, Format};
use super::znode::{self, Step, WatchCmd, WatchMode, WatchSet};
use super::{bounded, words, CliError, Command, Result};
use crate::pb::corral::v1::sessions_client::SessionsClient;
use crate::pb::corral::v1::znodes_client::ZnodesClient;
use crate::pb::corral::v1::{
    CloseSessionRequest, GetChildrenRequest, KeepAliveRequest, OpenSessionRequest, WatchKind,
    WatchResponse,
};

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Session timeout in milliseconds (the server fits it into its bounds)
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub session_timeout: i64,
    /// History file [default: ~/.corral_history; env: CORRAL_HISTORY]
    #[arg(long, value_name = "FILE")]
    pub history_file: Option<PathBuf>,
    #[command(flatten)]
    pub g: ZkGlobals,
}

/// What the shell's commands share with its background tasks.
pub struct State {
    /// The connection commands use (locked for one command at a time).
    pub conn: tokio::sync::Mutex<Conn>,
    session: AtomicI64,
    watch_cmds: mpsc::UnboundedSender<WatchCmd>,
    /// Whether the watch stream and the session are both up (shown in the prompt).
    connected: AtomicBool,
    print_watches: AtomicBool,
}

impl State {
    pub fn session_id(&self) -> i64 {
        self.session.load(Ordering::SeqCst)
    }

    /// Adds a watch on the shell's stream with its atomic read; returns the read.
    pub async fn add_watch(&self, path: &str, kind: WatchKind) -> Result<WatchResponse> {
        let (reply, rx) = oneshot::channel();
        self.watch_cmds
            .send(WatchCmd::Add {
                path: path.to_string(),
                kind,
                reply,
            })
            .map_err(|_| CliError::new("the watch stream is gone"))?;
        rx.await
            .map_err(|_| CliError::new("the watch stream is gone"))?
    }

    pub async fn remove_watch(&self, id: i64) {
        let _ = self.watch_cmds.send(WatchCmd::RemoveId(id));
    }
}

/// Prints what happens in the background (watch events, connection changes). At the prompt
/// it does what zkCli does — the text appears below the prompt line — and then draws the
/// prompt again, where rustyline redraws the line being typed at the next key. (rustyline's
/// own ExternalPrinter is not used: with it, rustyline 18 stalls on input typed ahead.)
pub struct Printer {
    /// The prompt on screen while rustyline reads a line; `None` while a command runs.
    prompt: Mutex<Option<String>>,
}

impl Printer {
    fn print(&self, text: &str) {
        let Ok(prompt) = self.prompt.lock() else {
            return;
        };
        let mut out = text.to_string();
        if let Some(p) = prompt.as_ref() {
            out = format!("\n{out}{p}");
        }
        // Holding the lock keeps the prompt and the text together.
        let _ = output::emit(&out);
    }

    fn set_prompt(&self, prompt: Option<String>) {
        if let Ok(mut p) = self.prompt.lock() {
            *p = prompt;
        }
    }
}

fn error_line(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "Error: {message}");
}

fn print(printer: &Printer, text: String) {
    printer.print(&text);
}

/// Commands only the shell has, beside every client command.
#[derive(Parser, Debug)]
#[command(
    name = "corral",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    cmd: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    #[command(flatten)]
    Client(Command),
    /// Add a persistent watch whose events print as they fire [zkCli: addWatch [-m mode] path]
    #[command(name = "addWatch", alias = "addwatch")]
    AddWatch(AddWatchArgs),
    /// Remove this shell's watches on a path [zkCli: removewatches path]
    #[command(name = "removewatches", alias = "removeWatches")]
    RemoveWatches { path: String },
    /// List this shell's watches
    Watches,
    /// Turn the printing of watch events on or off [zkCli: printwatches on|off]
    #[command(name = "printwatches")]
    PrintWatches {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// The commands typed so far
    History,
    /// The commands of the shell
    Help,
    /// Close the session (deleting its ephemerals) and leave
    #[command(alias = "exit")]
    Quit,
}

#[derive(Args, Debug)]
struct AddWatchArgs {
    /// PERSISTENT or PERSISTENT_RECURSIVE [default: PERSISTENT_RECURSIVE]
    #[arg(short = 'm', value_enum, ignore_case = true)]
    mode: Option<WatchMode>,
    path: String,
}

const HELP: &str = "\
corral shell: ZooKeeper's zkCli commands, one session for the shell's lifetime
\taddWatch [-m mode] path  # mode: PERSISTENT or PERSISTENT_RECURSIVE (default)
\tcreate [-e] [-s] [-c] [-t ttl] path [data]
\tdelete [-v version] path
\tdeleteall path
\tget [-s] [-w] path
\thistory
\tls [-s] [-w] [-R] path
\tprintwatches on|off
\tquit
\tremovewatches path
\tset [-s] [-v version] path data
\tstat [-w] path
\tsync path
\twatch [-m mode] path      # as addWatch
\twatches                   # this shell's watches
Also corral's etcd commands: kv, lease, lock, elect, member, endpoint, snapshot
(`<command> --help` for any command; --write-out json|table works on each).
";

/// The words a line can start with, for completion.
const COMMANDS: &[&str] = &[
    "addWatch",
    "create",
    "delete",
    "deleteall",
    "elect",
    "endpoint",
    "exit",
    "get",
    "help",
    "history",
    "kv",
    "lease",
    "lock",
    "ls",
    "member",
    "printwatches",
    "quit",
    "removewatches",
    "set",
    "snapshot",
    "stat",
    "sync",
    "watch",
    "watches",
];

/// Tab completion: command names first, then znode paths (children listed from the server).
struct ShellHelper {
    runtime: tokio::runtime::Handle,
    state: Arc<State>,
}

impl ShellHelper {
    fn children(&self, parent: &str) -> Vec<String> {
        // The command lock is free while the prompt is up; never wait for it here.
        let Ok(conn) = self.state.conn.try_lock() else {
            return Vec::new();
        };
        let channel = conn.channel.clone();
        drop(conn);
        let req = GetChildrenRequest {
            path: parent.to_string(),
            with_stats: false,
        };
        let ask = async move {
            tokio::time::timeout(
                Duration::from_secs(1),
                ZnodesClient::new(channel).get_children(req),
            )
            .await
        };
        match self.runtime.block_on(ask) {
            Ok(Ok(r)) => r.into_inner().children,
            _ => Vec::new(),
        }
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = words::word_start(line, pos);
        let word = &line[start..pos.min(line.len())];
        if line[..start].trim().is_empty() {
            let pairs = COMMANDS
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| Pair {
                    display: c.to_string(),
                    replacement: format!("{c} "),
                })
                .collect();
            return Ok((start, pairs));
        }
        if !word.starts_with('/') {
            return Ok((start, Vec::new()));
        }
        let cut = word.rfind('/').unwrap_or(0);
        let (parent, partial) = (&word[..cut], &word[cut + 1..]);
        let parent_path = if parent.is_empty() { "/" } else { parent };
        if znode::check_path(parent_path).is_err() {
            return Ok((start, Vec::new()));
        }
        let pairs = self
            .children(parent_path)
            .into_iter()
            .filter(|c| c.starts_with(partial))
            .map(|c| Pair {
                replacement: format!("{parent}/{c}"),
                display: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

fn history_path(args: &ShellArgs) -> Option<PathBuf> {
    if let Some(p) = &args.history_file {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("CORRAL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".corral_history"))
}

async fn open_session(conn: &Conn, timeout_ms: i64) -> Result<(i64, i64)> {
    let r = SessionsClient::new(conn.channel.clone())
        .open_session(OpenSessionRequest { timeout_ms })
        .await
        .map_err(|s| CliError::from_status(&s, Some(conn.endpoint())))?
        .into_inner();
    Ok((r.session_id, r.timeout_ms))
}

/// Keeps the shell's session alive (every third of its timeout), moving to the next
/// endpoint when one fails. A session that expired anyway (the shell was cut off for longer
/// than its timeout) is reported as zkCli reports it, and replaced by a new one.
async fn keep_session(mut conn: Conn, state: Arc<State>, printer: Arc<Printer>, requested_ms: i64) {
    let mut timeout_ms = requested_ms;
    let mut down = false;
    loop {
        let every = Duration::from_millis((timeout_ms.max(300) / 3) as u64);
        let (tx, rx) = mpsc::unbounded_channel();
        let opened = SessionsClient::new(conn.channel.clone())
            .keep_alive(UnboundedReceiverStream::new(rx))
            .await;
        let mut expired = false;
        if let Ok(stream) = opened {
            let mut stream = stream.into_inner();
            loop {
                let id = state.session_id();
                if tx.send(KeepAliveRequest { session_id: id }).is_err() {
                    break;
                }
                match tokio::time::timeout(every * 2, stream.message()).await {
                    Ok(Ok(Some(r))) if r.timeout_ms > 0 => {
                        if down {
                            down = false;
                            state.connected.store(true, Ordering::SeqCst);
                            print(&printer, format!("WATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null (on {})\n", conn.endpoint()));
                        }
                        tokio::time::sleep(every).await;
                    }
                    Ok(Ok(Some(_))) => {
                        expired = true;
                        break;
                    }
                    Ok(Err(s))
                        if super::conn::status_line(&s, None).starts_with("Session expired") =>
                    {
                        expired = true;
                        break;
                    }
                    _ => break,
                }
            }
        }
        if expired {
            print(
                &printer,
                "WATCHER::\n\nWatchedEvent state:Expired type:None path:null\n".to_string(),
            );
            match open_session(&conn, requested_ms).await {
                Ok((id, t)) => {
                    state.session.store(id, Ordering::SeqCst);
                    timeout_ms = t;
                    print(
                        &printer,
                        format!("new session 0x{id:x}: earlier ephemerals are gone\n"),
                    );
                    continue;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        if !down {
            down = true;
            state.connected.store(false, Ordering::SeqCst);
            print(
                &printer,
                "WATCHER::\n\nWatchedEvent state:Disconnected type:None path:null\n".to_string(),
            );
        }
        if conn.failover().await.is_err() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Runs the shell's watch stream, printing events as they fire.
async fn run_watches(mut set: WatchSet, state: Arc<State>, printer: Arc<Printer>) {
    loop {
        match set.step().await {
            Ok(Step::Event(id, e)) => {
                if state.print_watches.load(Ordering::SeqCst) {
                    print(&printer, znode::fired_text(Format::Simple, id, &e));
                }
            }
            Ok(Step::Reconnected(ep)) => {
                // Every watch was registered again from where it was: nothing was missed.
                print(&printer, format!("[watches resumed on {ep}]\n"));
            }
            Ok(Step::Nothing) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The flags given after `shell` laid over those given before it: the defaults for the
/// session and for every command typed (a typed command's own flags still beat both).
fn overlay(top: &ZkGlobals, shell: &ZkGlobals) -> ZkGlobals {
    let endpoints = if shell.conn.endpoints.is_empty() {
        top.conn.endpoints.clone()
    } else {
        shell.conn.endpoints.clone()
    };
    ZkGlobals {
        conn: ConnArgs {
            endpoints,
            dial_timeout: shell.conn.dial_timeout.or(top.conn.dial_timeout),
            command_timeout: shell.conn.command_timeout.or(top.conn.command_timeout),
        },
        write_out: shell.write_out.or(top.write_out),
    }
}

pub fn run(runtime: &tokio::runtime::Runtime, top: &ZkGlobals, args: ShellArgs) -> Result<()> {
    let top = &overlay(top, &args.g);
    let settings = Settings::resolve(&top.conn, top.write_out, &ConnArgs::default(), None)?;
    let (conn, session, timeout_ms) = runtime.block_on(bounded(&settings, async {
        let conn = Conn::connect(&settings).await?;
        let (id, t) = open_session(&conn, args.session_timeout).await?;
        Ok((conn, id, t))
    }))?;

    let config = Config::builder()
        .completion_type(CompletionType::List)
        .max_history_size(1000)
        .map_err(|e| CliError::new(format!("history: {e}")))?
        .history_ignore_dups(true)
        .map_err(|e| CliError::new(format!("history: {e}")))?
        .history_ignore_space(true)
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::with_config(config).map_err(|e| CliError::new(format!("terminal: {e}")))?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let printer = Arc::new(Printer {
        prompt: Mutex::new(None),
    });

    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        conn: tokio::sync::Mutex::new(conn.clone()),
        session: AtomicI64::new(session),
        watch_cmds: watch_tx,
        connected: AtomicBool::new(true),
        print_watches: AtomicBool::new(true),
    });
    let _guard = runtime.enter();
    // Ctrl-C while a command runs stops that command (lock, watch...), never the shell: once
    // the signals are counted, SIGINT no longer kills the process.
    let _ = super::Interrupt::new();
    // SIGTERM is counted too, so it would no longer end the shell: end it here, closing the
    // session first so that its ephemerals go at once.
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        let state = state.clone();
        runtime.spawn(async move {
            term.recv().await;
            let channel = state.conn.lock().await.channel.clone();
            let id = state.session_id();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                SessionsClient::new(channel).close_session(CloseSessionRequest { session_id: id }),
            )
            .await;
            std::process::exit(143);
        });
    }
    runtime.spawn(keep_session(
        conn.clone(),
        state.clone(),
        printer.clone(),
        args.session_timeout,
    ));
    runtime.spawn(run_watches(
        WatchSet::new(conn.clone(), Some(watch_rx)),
        state.clone(),
        printer.clone(),
    ));
    editor.set_helper(Some(ShellHelper {
        runtime: runtime.handle().clone(),
        state: state.clone(),
    }));
    let history = history_path(&args);
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let greeting = format!(
        "Connected to {} with session 0x{session:x} (timeout {timeout_ms} ms). \
         Type help for the commands.\n",
        conn.endpoint()
    );
    if interactive {
        print(&printer, greeting);
    } else {
        // A script's output stays only what its commands print.
        use std::io::Write as _;
        let _ = std::io::stderr().write_all(greeting.as_bytes());
    }

    let mut count = 0usize;
    loop {
        let endpoint = state
            .conn
            .try_lock()
            .map(|c| c.endpoint().to_string())
            .unwrap_or_default();
        let status = if state.connected.load(Ordering::SeqCst) {
            "CONNECTED"
        } else {
            "DISCONNECTED"
        };
        let prompt = format!("[corral: {endpoint}({status}) {count}] ");
        // Without a terminal rustyline shows no prompt, so neither does the printer.
        printer.set_prompt(interactive.then(|| prompt.clone()));
        let read = editor.readline(&prompt);
        printer.set_prompt(None);
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                error_line(&format!("reading the terminal: {e}"));
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        // Scripts piped into the shell are not the user's history.
        if interactive {
            let _ = editor.add_history_entry(line.as_str());
        }
        count += 1;
        let mut words = match words::split(&line) {
            Ok(w) => w,
            Err(e) => {
                error_line(&e);
                continue;
            }
        };
        // Pasted from a terminal: `corral ls /` works as `ls /`.
        if words.first().is_some_and(|w| w == "corral") {
            words.remove(0);
        }
        let parsed = match Line::try_parse_from(&words) {
            Ok(l) => l,
            Err(e) => {
                use clap::error::ErrorKind;
                match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        print(&printer, e.render().to_string());
                    }
                    _ => error_line(&super::usage_line(&e)),
                }
                continue;
            }
        };
        let outcome = match parsed.cmd {
            ShellCommand::Quit => break,
            ShellCommand::Help => {
                print(&printer, HELP.to_string());
                Ok(())
            }
            ShellCommand::History => {
                let text: String = editor
                    .history()
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("{i} - {l}\n"))
                    .collect();
                print(&printer, text);
                Ok(())
            }
            ShellCommand::PrintWatches { state: on } => {
                state.print_watches.store(on == "on", Ordering::SeqCst);
                Ok(())
            }
            ShellCommand::Watches => runtime.block_on(list_watches(&state, &printer)),
            ShellCommand::RemoveWatches { path } => {
                runtime.block_on(remove_watches(&state, &printer, &path))
            }
            ShellCommand::AddWatch(a) => {
                let watch = znode::WatchArgs {
                    mode: a.mode,
                    start_zxid: None,
                    path: a.path,
                    g: ZkGlobals::default(),
                };
                runtime.block_on(super::dispatch(top, Command::Watch(watch), Some(&state)))
            }
            ShellCommand::Client(Command::Shell(_)) => Err(CliError::new("already in the shell")),
            ShellCommand::Client(c) => runtime.block_on(super::dispatch(top, c, Some(&state))),
        };
        if let Err(e) = outcome {
            if let Some(m) = e.message() {
                error_line(m);
            }
        }
    }

    // Leaving: the session ends now, so its ephemerals go at once (not after the timeout).
    let id = state.session_id();
    let conn = runtime.block_on(async { state.conn.lock().await.clone() });
    let _ = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(2),
            SessionsClient::new(conn.channel.clone())
                .close_session(CloseSessionRequest { session_id: id }),
        )
        .await
    });
    if let Some(h) = history.as_ref().filter(|_| interactive) {
        let _ = editor.save_history(h);
    }
    Ok(())
}

async fn list_watches(state: &State, printer: &Printer) -> Result<()> {
    let (reply, rx) = oneshot::channel();
    state
        .watch_cmds
        .send(WatchCmd::List { reply })
        .map_err(|_| CliError::new("the watch stream is gone"))?;
    let list = rx
        .await
        .map_err(|_| CliError::new("the watch stream is gone"))?;
    let text: String = list
        .iter()
        .map(|(id, path, kind)| format!("{id}\t{}\t{path}\n", kind.as_str_name()))
        .collect();
    print(printer, text);
    Ok(())
}

async fn remove_watches(state: &State, printer: &Printer, path: &str) -> Result<()> {
    znode::check_path(path)?;
    let (reply, rx) = oneshot::channel();
    state
        .watch_cmds
        .send(WatchCmd::RemovePath {
            path: path.to_string(),
            reply,
        })
        .map_err(|_| CliError::new("the watch stream is gone"))?;
    let n = rx
        .await
        .map_err(|_| CliError::new("the watch stream is gone"))?;
    if n == 0 {
        return Err(CliError::new(format!("No watches on {path}")));
    }
    print(printer, format!("removed {n} watch(es) on {path}\n"));
    Ok(())
}
