//! The `corral` command line against a real `corral serve`: every command as a child process,
//! checking its output (simple, table, json) and exit code; bad input (one line on stderr, exit
//! code 1, never a panic); and `corral shell` driven through a pseudo-terminal as a person
//! would: an ephemeral node seen from a second shell, which watches it vanish when the first
//! one quits.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{free_port, ProcessCluster};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// What a finished command printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok().trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A bad-input failure: exit code 1, nothing on stdout, exactly one line on stderr
    /// starting with "Error: " — and no panic or backtrace.
    #[track_caller]
    fn one_line_error(&self) -> &str {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        assert!(self.stderr.starts_with("Error: "), "{self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        self.stderr.trim_end()
    }
}

fn command(endpoints: &str, args: &[&str], home: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env_remove("CORRAL_ENDPOINTS")
        .env("HOME", home)
        .env("RUST_BACKTRACE", "1");
    c
}

/// Runs `corral --endpoints <endpoints> <args>` to completion with `stdin` as its input.
fn run_with(endpoints: &str, args: &[&str], stdin: &str, home: &std::path::Path) -> Out {
    let mut child = command(endpoints, args, home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("corral output");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command that runs until interrupted, its stdout read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(endpoints: &str, args: &[&str], home: &std::path::Path) -> Running {
        Self::start_reading(endpoints, args, home, usize::MAX)
    }

    /// Reads only the first `lines` lines, then closes the pipe, as `| head -n <lines>` does.
    fn start_reading(
        endpoints: &str,
        args: &[&str],
        home: &std::path::Path,
        lines: usize,
    ) -> Running {
        let mut child = command(endpoints, args, home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn corral");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().take(lines) {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines: rx }
    }

    /// The next line, within a deadline.
    #[track_caller]
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(15))
            .expect("a line of output in time")
    }

    /// Lines until one matching `want` (returned), within a deadline.
    #[track_caller]
    fn until(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the expected line in time");
            if want(&line) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit (within a deadline) and returns the exit code and stderr.
    #[track_caller]
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (status.code().unwrap_or(-1), err);
            }
            assert!(Instant::now() < deadline, "the command did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Repeats `write` until the running command prints something: a stream that prints nothing
/// before its first event is then known to be live.
#[track_caller]
fn live(r: &Running, mut write: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        write();
        if r.lines.recv_timeout(Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "the stream never printed");
    }
}

struct Fixture {
    cluster: ProcessCluster,
    home: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture {
            cluster: ProcessCluster::start(1).await,
            home: tempfile::tempdir().expect("temp home"),
        }
    }

    fn ep(&self) -> String {
        format!("127.0.0.1:{}", self.cluster.members[0].client_port)
    }

    fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.cluster.members[0].peer_port)
    }

    fn run(&self, args: &[&str]) -> Out {
        run_with(&self.ep(), args, "", self.home.path())
    }

    /// Polls until `path` does not exist (the leader reaps within a second or so).
    #[track_caller]
    fn wait_gone(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.run(&["stat", path]);
            if out.code == 1 && out.stderr.contains("Node does not exist") {
                return;
            }
            assert!(Instant::now() < deadline, "{path} never went: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_cmd(&self, args: &[&str]) -> Running {
        Running::start(&self.ep(), args, self.home.path())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znode_commands_in_simple_table_and_json() {
    let f = Fixture::start().await;

    // create: persistent, sequential, TTL, container; zkCli's "Created <path>".
    assert_eq!(f.run(&["create", "/app", "hello"]).ok(), "Created /app\n");
    assert_eq!(
        f.run(&["create", "-s", "/app/job-", "j0"]).ok(),
        "Created /app/job-0000000000\n"
    );
    let j = f
        .run(&["create", "-s", "/app/job-", "--write-out", "json"])
        .json();
    assert_eq!(j["path"], "/app/job-0000000001");
    assert!(j["zxid"].as_i64().unwrap() > 0);
    assert_eq!(
        f.run(&["create", "-t", "60000", "/ttl"]).ok(),
        "Created /ttl\n"
    );
    assert_eq!(f.run(&["create", "-c", "/box"]).ok(), "Created /box\n");
    // The modes show in what the server does with them: a container goes once its last
    // child does (a persistent parent in the same state, emptied first, stays); a TTL znode
    // goes once unmodified and childless for its TTL (the one with a minute left stays).
    f.run(&["create", "/plain"]).ok();
    f.run(&["create", "/plain/kid"]).ok();
    f.run(&["delete", "/plain/kid"]).ok();
    f.run(&["create", "/box/kid"]).ok();
    f.run(&["delete", "/box/kid"]).ok();
    assert_eq!(
        f.run(&["create", "-t", "300", "/brief"]).ok(),
        "Created /brief\n"
    );
    f.wait_gone("/box");
    f.wait_gone("/brief");
    f.run(&["stat", "/plain"]).ok();
    f.run(&["stat", "/ttl"]).ok();
    f.run(&["delete", "/plain"]).ok();
    // Data that starts with a dash is data, not a flag.
    assert_eq!(f.run(&["create", "/neg", "-1"]).ok(), "Created /neg\n");
    assert_eq!(f.run(&["get", "/neg"]).ok(), "-1\n");
    let t = f.run(&["create", "/tab", "--write-out", "table"]);
    assert!(
        t.ok().contains("| PATH") && t.stdout.contains("| /tab"),
        "{t:?}"
    );
    // One-shot ephemeral: created, then gone with the command's session (as zkCli run with a
    // command); a note on stderr says so.
    let e = f.run(&["create", "-e", "/eph"]);
    assert_eq!(e.ok(), "Created /eph\n");
    assert!(e.stderr.contains("corral shell"), "{e:?}");

    // ls: zkCli's list, -s, -R, table and json.
    assert_eq!(
        f.run(&["ls", "/app"]).ok(),
        "[job-0000000000, job-0000000001]\n"
    );
    let ls = f.run(&["ls", "-s", "/app"]);
    assert!(ls
        .ok()
        .starts_with("[job-0000000000, job-0000000001]\ncZxid = 0x"));
    assert!(ls.stdout.contains("numChildren = 2\n"), "{ls:?}");
    let root = f.run(&["ls", "/"]).ok().to_string();
    assert!(
        !root.contains("eph"),
        "the one-shot ephemeral went with its session: {root}"
    );
    assert_eq!(
        f.run(&["ls", "-R", "/app"]).ok(),
        "/app\n/app/job-0000000000\n/app/job-0000000001\n"
    );
    let j = f.run(&["ls", "/app", "--write-out", "json"]).json();
    assert_eq!(
        j["children"],
        serde_json::json!(["job-0000000000", "job-0000000001"])
    );
    assert_eq!(j["stat"]["num_children"], 2);
    let t = f.run(&["ls", "/app", "--write-out", "table"]);
    assert!(t.ok().contains("| NAME "), "{t:?}");
    assert!(t.stdout.contains("| job-0000000001 | 0 "), "{t:?}");
    let j = f.run(&["ls", "-R", "/app", "--write-out", "json"]).json();
    assert_eq!(j["paths"].as_array().unwrap().len(), 3);

    // get and stat.
    assert_eq!(f.run(&["get", "/app"]).ok(), "hello\n");
    let g = f.run(&["get", "-s", "/app"]);
    assert!(g.ok().starts_with("hello\ncZxid = 0x"), "{g:?}");
    assert!(g.stdout.contains("\ndataVersion = 0\n"), "{g:?}");
    let j = f.run(&["--write-out", "json", "get", "/app"]).json();
    assert_eq!(j["data"], "hello");
    assert_eq!(j["stat"]["version"], 0);
    assert_eq!(j["stat"]["ephemeral_owner"], "0x0");
    let t = f.run(&["get", "/app", "--write-out", "table"]);
    assert!(t.ok().contains("| /app | hello | 0 "), "{t:?}");
    let st = f.run(&["stat", "/app"]);
    for field in [
        "cZxid",
        "ctime",
        "mZxid",
        "mtime",
        "pZxid",
        "cversion",
        "dataVersion",
        "aclVersion",
        "ephemeralOwner",
        "dataLength",
        "numChildren",
    ] {
        assert!(st.ok().contains(&format!("{field} = ")), "{field}: {st:?}");
    }
    assert!(st.stdout.contains("dataLength = 5\n"), "{st:?}");
    let j = f.run(&["stat", "/app", "--write-out", "json"]).json();
    assert_eq!(j["stat"]["data_length"], 5);
    let t = f.run(&["stat", "/app", "--write-out", "table"]);
    assert!(t.ok().contains("| numChildren    | 2 "), "{t:?}");

    // set: with and without the expected version.
    assert_eq!(f.run(&["set", "/app", "v1"]).ok(), "");
    let s = f.run(&["set", "-s", "-v", "1", "/app", "v2"]);
    assert!(s.ok().contains("dataVersion = 2\n"), "{s:?}");
    let j = f
        .run(&["set", "/app", "v3", "-v", "2", "--write-out", "json"])
        .json();
    assert_eq!(j["stat"]["version"], 3);
    assert_eq!(f.run(&["get", "/app"]).ok(), "v3\n");
    let t = f.run(&["set", "/app", "v4", "--write-out", "table"]);
    assert!(t.ok().contains("| /app | 4       |"), "{t:?}");

    // sync, delete, deleteall.
    assert_eq!(f.run(&["sync", "/app"]).ok(), "Sync is OK\n");
    assert!(
        f.run(&["sync", "/", "--write-out", "json"]).json()["zxid"]
            .as_i64()
            .unwrap()
            > 0
    );
    let t = f.run(&["sync", "/app", "--write-out", "table"]);
    assert!(t.ok().contains("| /app | 0x"), "{t:?}");
    let t = f.run(&["delete", "/neg", "--write-out", "table"]);
    assert!(t.ok().contains("| /neg | 1       |"), "{t:?}");
    assert_eq!(f.run(&["delete", "/app/job-0000000000"]).ok(), "");
    let d = f
        .run(&[
            "delete",
            "-v",
            "0",
            "/app/job-0000000001",
            "--write-out",
            "json",
        ])
        .json();
    assert_eq!(d["deleted"], 1);
    f.run(&["create", "/app/x", "1"]).ok();
    f.run(&["create", "/app/x/y", "2"]).ok();
    let t = f.run(&["deleteall", "/app", "--write-out", "table"]);
    assert!(t.ok().contains("| /app | 3 "), "{t:?}");
    assert_eq!(
        f.run(&["stat", "/app"]).one_line_error(),
        "Error: Node does not exist: /app"
    );

    // The shell reads a script from a pipe: only the commands' output on stdout, errors on
    // stderr, and its ephemerals go when it ends.
    let script = "create -e /scripted x\nget /scripted\nget /nope\nls -R /scripted\nquit\n";
    let out = run_with(&f.ep(), &["shell"], script, f.home.path());
    assert_eq!(out.ok(), "Created /scripted\nx\n/scripted\n");
    assert!(
        out.stderr.contains("Error: Node does not exist: /nope"),
        "{out:?}"
    );
    assert!(!f.run(&["ls", "/"]).ok().contains("scripted"));

    // The flags after `shell` beat those before it for every command typed, not only for
    // the session (a dead endpoint before, the live one and JSON after); a typed command's
    // own flags beat both.
    let dead = format!("127.0.0.1:{}", free_port());
    let script = "create /sh x\nget /sh\nkv put shk v\nkv get shk\nkv get shk -w simple\nquit\n";
    let out = run_with(
        &dead,
        &["shell", "--endpoints", &f.ep(), "--write-out", "json"],
        script,
        f.home.path(),
    );
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 6, "{out:?}");
    let doc = |i: usize| -> Value {
        serde_json::from_str(lines[i]).unwrap_or_else(|e| panic!("line {i}: {e}: {out:?}"))
    };
    assert_eq!(doc(0)["path"], "/sh");
    assert_eq!(doc(1)["data"], "x");
    assert!(doc(2)["header"]["revision"].as_i64().unwrap() > 0);
    assert_eq!(doc(3)["kvs"][0]["value"], "v");
    assert_eq!(lines[4..], ["shk", "v"]);

    // Failover: a dead endpoint first, then the live one.
    let both = format!("{dead},http://{}", f.ep());
    let out = run_with(&both, &["get", "/ttl"], "", f.home.path());
    assert_eq!(out.ok(), "\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn znode_watches_one_shot_and_streaming() {
    let f = Fixture::start().await;
    f.run(&["create", "/cfg", "v0"]).ok();

    // get -w: prints the data, waits for the change, prints zkCli's event and exits 0.
    let get = f.start_cmd(&["get", "-w", "/cfg"]);
    assert_eq!(get.line(), "v0");
    // ls -w and stat -w (on a znode that does not exist yet) in JSON.
    let ls = f.start_cmd(&["ls", "-w", "/", "--write-out", "json"]);
    let first: Value = serde_json::from_str(&ls.line()).unwrap();
    assert!(first["children"]
        .as_array()
        .unwrap()
        .contains(&"cfg".into()));
    let stat = f.start_cmd(&["stat", "-w", "/later"]);
    // A persistent recursive watch, streamed.
    let stream = f.start_cmd(&["watch", "/cfg"]);
    let json_stream = f.start_cmd(&["watch", "-m", "persistent", "/cfg", "--write-out", "json"]);
    // `watch` prints nothing until the first event: write until each stream shows one, so
    // both are known to be registered before the writes the test checks.
    let mut n = 0;
    for w in [&stream, &json_stream] {
        live(w, || {
            n += 1;
            f.run(&["create", &format!("/cfg/probe{n}")]).ok();
        });
    }

    f.run(&["set", "/cfg", "v1"]).ok();
    f.run(&["create", "/later"]).ok();

    assert_eq!(get.line(), "WATCHER::");
    assert_eq!(get.line(), "");
    assert_eq!(
        get.line(),
        "WatchedEvent state:SyncConnected type:NodeDataChanged path:/cfg"
    );
    assert_eq!(get.finish().0, 0);

    let fired: Value = serde_json::from_str(&ls.line()).unwrap();
    assert_eq!(fired["type"], "NodeChildrenChanged");
    assert_eq!(fired["path"], "/");
    assert_eq!(ls.finish().0, 0);

    stat.until(|l| l.starts_with("WatchedEvent state:SyncConnected type:NodeCreated path:/later"));
    let (code, err) = stat.finish();
    assert_eq!(code, 0);
    assert_eq!(err, "Node does not exist: /later\n");

    stream.until(|l| l == "WatchedEvent state:SyncConnected type:NodeDataChanged path:/cfg");
    let v: Value =
        serde_json::from_str(&json_stream.until(|l| l.contains("NodeDataChanged"))).unwrap();
    assert_eq!(v["type"], "NodeDataChanged");
    assert_eq!(v["path"], "/cfg");
    assert!(v["zxid"].as_i64().unwrap() > 0);

    // Interrupted, the streams end cleanly.
    stream.signal("INT");
    assert_eq!(stream.finish().0, 0);
    json_stream.signal("TERM");
    assert_eq!(json_stream.finish().0, 0);

    // get -w on a missing znode: an error, no wait.
    assert_eq!(
        f.run(&["get", "-w", "/missing"]).one_line_error(),
        "Error: Node does not exist: /missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_lease_and_txn_commands() {
    let f = Fixture::start().await;
    assert_eq!(f.run(&["kv", "put", "greeting", "hello"]).ok(), "OK\n");
    assert_eq!(f.run(&["kv", "get", "greeting"]).ok(), "greeting\nhello\n");
    f.run(&["kv", "put", "app/a", "1"]).ok();
    f.run(&["kv", "put", "app/b", "2"]).ok();
    assert_eq!(
        f.run(&["kv", "get", "app/", "--prefix", "--keys-only"])
            .ok(),
        "app/a\napp/b\n"
    );
    assert_eq!(
        f.run(&["kv", "get", "app/", "--prefix", "--print-value-only"])
            .ok(),
        "1\n2\n"
    );
    assert_eq!(
        f.run(&["kv", "get", "app/", "--prefix", "--count-only"])
            .ok(),
        "2\n"
    );
    let j = f
        .run(&["kv", "get", "app/", "--prefix", "-w", "json"])
        .json();
    assert_eq!(j["kvs"][1]["key"], "app/b");
    assert_eq!(j["kvs"][1]["value"], "2");
    assert!(j["header"]["revision"].as_i64().unwrap() >= 3);
    let t = f.run(&["kv", "get", "app/a", "-w", "table"]);
    assert!(t.ok().contains("| KEY   | VALUE |"), "{t:?}");
    assert!(t.stdout.contains("| app/a | 1     |"), "{t:?}");
    let j = f
        .run(&["kv", "put", "greeting", "hi", "--prev-kv", "-w", "json"])
        .json();
    assert_eq!(j["prev_kv"]["value"], "hello");
    let rev = j["header"]["revision"].as_i64().unwrap();
    let t = f.run(&["kv", "put", "tab", "1", "-w", "table"]);
    assert!(t.ok().contains("| KEY | REVISION |"), "{t:?}");
    assert!(t.stdout.contains(&format!("| tab | {} ", rev + 1)), "{t:?}");
    let t = f.run(&["kv", "put", "tab", "2", "--prev-kv", "-w", "table"]);
    assert!(
        t.ok()
            .contains("| KEY | REVISION | PREV VALUE | PREV VERSION |"),
        "{t:?}"
    );
    assert!(
        t.stdout.contains(&format!(
            "| tab | {:<8} | 1          | 1            |",
            rev + 2
        )),
        "{t:?}"
    );

    // A watch streams what follows.
    let watch = f.start_cmd(&["kv", "watch", "w/", "--prefix"]);
    let json_watch = f.start_cmd(&["kv", "watch", "w/x", "-w", "json"]);
    // Write until each watch shows an event: then both are registered.
    for w in [&watch, &json_watch] {
        live(w, || {
            f.run(&["kv", "put", "w/x", "probe"]).ok();
        });
    }
    f.run(&["kv", "put", "w/x", "last"]).ok();
    watch.until(|l| l == "last");
    let v: Value = serde_json::from_str(&json_watch.until(|l| l.contains("\"last\""))).unwrap();
    assert_eq!(v["type"], "PUT");
    assert_eq!(v["kv"]["key"], "w/x");
    f.run(&["kv", "del", "w/x"]).ok();
    watch.until(|l| l == "DELETE");
    assert_eq!(watch.line(), "w/x");
    let v: Value = serde_json::from_str(&json_watch.line()).unwrap();
    assert_eq!(v["type"], "DELETE");
    watch.signal("INT");
    assert_eq!(watch.finish().0, 0);
    json_watch.signal("TERM");
    assert_eq!(json_watch.finish(), (0, String::new()));

    // txn from stdin, etcdctl's syntax.
    let txn = "value(\"greeting\") = \"hi\"\n\nput greeting bonjour\nget app/ --prefix\n\nput greeting hola\n";
    let out = run_with(&f.ep(), &["kv", "txn"], txn, f.home.path());
    assert_eq!(out.ok(), "SUCCESS\n\nOK\n\napp/a\n1\napp/b\n2\n");
    let out = run_with(&f.ep(), &["kv", "txn", "-w", "json"], txn, f.home.path());
    let j: Value = serde_json::from_str(out.ok().trim()).unwrap();
    assert_eq!(j["succeeded"], false);
    assert_eq!(
        j["responses"][0]["put"]["header"]["revision"],
        j["header"]["revision"]
    );
    assert_eq!(
        f.run(&["kv", "get", "greeting", "--print-value-only"]).ok(),
        "hola\n"
    );
    let out = run_with(&f.ep(), &["kv", "txn", "-w", "table"], txn, f.home.path());
    let t = out.ok();
    assert!(t.contains("| SUCCEEDED | REVISION |\n"), "{out:?}");
    assert!(t.contains("| false     | "), "{out:?}");
    assert!(t.contains("| KEY      | REVISION |\n"), "{out:?}");
    assert!(t.contains("| greeting | "), "{out:?}");
    // etcdctl's txn -i: a prompt before each part, then the result.
    let out = run_with(&f.ep(), &["kv", "txn", "-i"], txn, f.home.path());
    assert_eq!(
        out.ok(),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
         FAILURE\n\nOK\n"
    );
    let bad = run_with(
        &f.ep(),
        &["kv", "txn"],
        "size(\"k\") = \"1\"\n\n\n",
        f.home.path(),
    );
    assert!(bad.one_line_error().contains("unknown target"), "{bad:?}");

    // del.
    assert_eq!(f.run(&["kv", "del", "app/", "--prefix"]).ok(), "2\n");
    assert_eq!(
        f.run(&["kv", "del", "nothing", "-w", "json"]).json()["deleted"],
        0
    );
    let t = f.run(&["kv", "del", "greeting", "-w", "table"]);
    assert!(
        t.ok().contains("| DELETED |") && t.stdout.contains("| 1       |"),
        "{t:?}"
    );

    // Leases.
    let grant = f.run(&["lease", "grant", "30"]);
    let id = grant
        .ok()
        .strip_prefix("lease ")
        .and_then(|s| s.strip_suffix(" granted with TTL(30s)\n"))
        .unwrap_or_else(|| panic!("{grant:?}"))
        .to_string();
    f.run(&["kv", "put", "leased", "v", "--lease", &id]).ok();
    let ttl = f.run(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.ok()
            .starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{ttl:?}"
    );
    assert!(ttl.stdout.ends_with("attached keys([leased])\n"), "{ttl:?}");
    let list = f.run(&["lease", "list"]);
    assert!(list.ok().starts_with("found 1 leases\n"), "{list:?}");
    assert!(list.stdout.contains(&id));
    assert_eq!(
        f.run(&["lease", "list", "-w", "json"]).json()["leases"],
        serde_json::json!([id])
    );
    assert_eq!(
        f.run(&["lease", "keep-alive", "--once", &id]).ok(),
        format!("lease {id} keepalived with TTL(30)\n")
    );
    let j = f
        .run(&["lease", "keep-alive", "--once", &id, "-w", "json"])
        .json();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["ttl"], 30);
    // Streamed (as in etcdctl, simple lines whatever the format): a renewal every third of
    // the TTL until interrupted, then exit 0.
    let short = f.run(&["lease", "grant", "3", "-w", "json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let renewing = f.start_cmd(&["lease", "keep-alive", &short, "-w", "table"]);
    for _ in 0..2 {
        assert_eq!(
            renewing.line(),
            format!("lease {short} keepalived with TTL(3)")
        );
    }
    renewing.signal("INT");
    assert_eq!(renewing.finish(), (0, String::new()));
    let j = f
        .run(&["lease", "timetolive", &id, "--keys", "-w", "json"])
        .json();
    assert_eq!(j["granted_ttl"], 30);
    assert_eq!(j["keys"], serde_json::json!(["leased"]));
    let t = f.run(&["lease", "timetolive", &id, "-w", "table"]);
    assert!(t.ok().contains("| GRANTED TTL |"), "{t:?}");
    let j = f.run(&["lease", "grant", "20", "-w", "json"]).json();
    assert_eq!(j["ttl"], 20);
    let t = f.run(&["lease", "grant", "20", "-w", "table"]);
    assert!(t.ok().contains("| ID "), "{t:?}");
    let other = j["id"].as_str().unwrap().to_string();
    assert_eq!(
        f.run(&["lease", "revoke", &other, "-w", "json"]).json()["revoked"],
        true
    );
    assert_eq!(
        f.run(&["lease", "revoke", &id]).ok(),
        format!("lease {id} revoked\n")
    );
    let third = f.run(&["lease", "grant", "20", "-w", "json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = f.run(&["lease", "revoke", &third, "-w", "table"]);
    assert!(t.ok().contains("| ID "), "{t:?}");
    assert!(t.stdout.contains(" | REVOKED |\n"), "{t:?}");
    assert!(
        t.stdout.contains(&format!("| {third} | true    |")),
        "{t:?}"
    );
    assert_eq!(f.run(&["kv", "get", "leased"]).ok(), "");
    assert_eq!(
        f.run(&["lease", "revoke", &id]).one_line_error(),
        "Error: etcdserver: requested lease not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_elect_member_endpoint_and_snapshot() {
    let f = Fixture::start().await;

    // lock with a command: runs it holding the lock (etcdctl's env), passes its exit code.
    let out = f.run(&["lock", "job", "sh", "-c", "echo $ETCD_LOCK_KEY; exit 3"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.starts_with("job/"), "{out:?}");
    // Held until interrupted; a second locker waits for it.
    let holder = f.start_cmd(&["lock", "job"]);
    let key = holder.line();
    assert!(key.starts_with("job/"), "{key}");
    let waiter = f.start_cmd(&["lock", "-w", "json", "job"]);
    let keys = f.run(&["kv", "get", "job/", "--prefix", "--keys-only"]);
    // Both are in line (the waiter's key appears once it has asked).
    let deadline = Instant::now() + Duration::from_secs(15);
    while f
        .run(&["kv", "get", "job/", "--prefix", "--count-only"])
        .ok()
        != "2\n"
    {
        assert!(
            Instant::now() < deadline,
            "the waiter never queued: {keys:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.signal("INT");
    assert_eq!(holder.finish().0, 0);
    let got: Value = serde_json::from_str(&waiter.line()).unwrap();
    assert_eq!(got["name"], "job");
    assert!(got["revision"].as_i64().unwrap() > 0);
    waiter.signal("TERM");
    assert_eq!(waiter.finish().0, 0);
    assert_eq!(
        f.run(&["kv", "get", "job/", "--prefix", "--count-only"])
            .ok(),
        "0\n",
        "interrupted lockers release and revoke"
    );

    // elect: a candidate leads and prints its key and value; an observer sees it.
    let leader = f.start_cmd(&["elect", "svc", "first"]);
    let lkey = leader.line();
    assert!(lkey.starts_with("svc/"), "{lkey}");
    assert_eq!(leader.line(), "first");
    let observer = f.start_cmd(&["elect", "-l", "svc", "-w", "json"]);
    let seen: Value = serde_json::from_str(&observer.line()).unwrap();
    assert_eq!(seen["key"], lkey);
    assert_eq!(seen["value"], "first");
    let second = f.start_cmd(&["elect", "svc", "second"]);
    leader.signal("INT");
    assert_eq!(leader.finish().0, 0);
    assert!(second.line().starts_with("svc/"));
    assert_eq!(second.line(), "second");
    let next: Value = serde_json::from_str(&observer.line()).unwrap();
    assert_eq!(next["value"], "second");
    drop(second);
    observer.signal("INT");
    assert_eq!(observer.finish(), (0, String::new()));
    assert_eq!(
        f.run(&["elect", "svc"]).one_line_error(),
        "Error: a proposal is required to campaign (or --listen to observe)"
    );

    // member list in the three formats.
    let list = f.run(&["member", "list"]);
    let ep = f.ep();
    let line = list.ok().trim_end().to_string();
    let fields: Vec<&str> = line.split(", ").collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[1], "started");
    assert_eq!(fields[2], "p0");
    assert_eq!(fields[4], format!("http://{ep}"));
    assert_eq!(fields[5], "false");
    let t = f.run(&["member", "list", "-w", "table"]);
    assert!(
        t.ok().contains("| ID ") && t.stdout.contains("| p0 "),
        "{t:?}"
    );
    let j = f.run(&["member", "list", "-w", "json"]).json();
    assert_eq!(j["members"][0]["name"], "p0");
    assert_eq!(j["members"][0]["id"], fields[0]);
    // add (a learner: a voter that never starts would take the quorum of a one-member
    // cluster with it, as in etcd), promote refused until it has caught up, update, remove.
    let add = f.run(&[
        "member",
        "add",
        "p9",
        "--learner",
        "--peer-urls",
        "http://127.0.0.1:9",
    ]);
    let out = add.ok();
    assert!(out.starts_with("Member "), "{out}");
    assert!(out.contains("CORRAL_NAME=\"p9\""), "{out}");
    assert!(
        out.contains(&format!("CORRAL_INITIAL_CLUSTER=\"p0=http://{}", f.peer())),
        "{out}"
    );
    assert!(out.contains(",p9=http://127.0.0.1:9\""), "{out}");
    assert!(
        out.contains("CORRAL_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let new_id = out.split_whitespace().nth(1).unwrap().to_string();
    let j = f.run(&["member", "list", "-w", "json"]).json();
    let added = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == new_id.as_str())
        .expect("the added member is listed")
        .clone();
    assert_eq!(added["is_learner"], true);
    assert_eq!(added["name"], "");
    assert!(f.run(&["member", "list"]).ok().contains("unstarted"));
    assert_eq!(
        f.run(&["member", "promote", &new_id]).one_line_error(),
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    );
    let up = f.run(&[
        "member",
        "update",
        &new_id,
        "--peer-urls",
        "http://127.0.0.1:10",
    ]);
    assert!(
        up.ok().starts_with(&format!("Member {new_id} updated")),
        "{up:?}"
    );
    assert!(f
        .run(&["member", "list"])
        .ok()
        .contains("http://127.0.0.1:10"));
    let rm = f.run(&["member", "remove", &new_id]);
    assert!(
        rm.ok().starts_with(&format!("Member {new_id} removed")),
        "{rm:?}"
    );
    assert_eq!(
        f.run(&["member", "list", "-w", "json"]).json()["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The changes as tables: the member list after each.
    let t = f.run(&[
        "member",
        "add",
        "p8",
        "--learner",
        "--peer-urls",
        "http://127.0.0.1:8",
        "-w",
        "table",
    ]);
    assert!(t.ok().contains("| IS LEARNER |"), "{t:?}");
    assert!(t.stdout.contains("| p0 "), "{t:?}");
    let row = t
        .stdout
        .lines()
        .find(|l| l.contains("http://127.0.0.1:8 "))
        .unwrap_or_else(|| panic!("no row for the new member: {t:?}"));
    assert!(
        row.contains("| unstarted |") && row.ends_with("| true       |"),
        "{t:?}"
    );
    let p8 = row.split('|').nth(1).unwrap().trim().to_string();
    let t = f.run(&[
        "member",
        "update",
        &p8,
        "--peer-urls",
        "http://127.0.0.1:7",
        "-w",
        "table",
    ]);
    assert!(t.ok().contains("| PEER ADDRS "), "{t:?}");
    assert!(t.stdout.contains(&format!("| {p8} | unstarted |")), "{t:?}");
    assert!(t.stdout.contains("| http://127.0.0.1:7 "), "{t:?}");
    let t = f.run(&["member", "remove", &p8, "-w", "table"]);
    assert!(t.ok().contains("| p0 "), "{t:?}");
    assert!(!t.stdout.contains(&p8), "{t:?}");
    assert_eq!(
        f.run(&["member", "promote", fields[0]]).one_line_error(),
        "Error: etcdserver: can only promote a learner member"
    );
    assert_eq!(
        f.run(&["member", "remove", "abc"]).one_line_error(),
        "Error: etcdserver: member not found"
    );
    let snap = f.home.path().join("snap.db");
    let s = f.run(&["snapshot", "save", snap.to_str().unwrap()]);
    assert!(
        s.ok()
            .starts_with(&format!("Snapshot saved at {}", snap.display())),
        "{s:?}"
    );
    assert!(snap.exists());
    let t = f.run(&["snapshot", "save", snap.to_str().unwrap(), "-w", "table"]);
    assert!(t.ok().contains("| FILE "), "{t:?}");
    assert!(t.stdout.contains(" | REVISION | HASH "), "{t:?}");
    assert!(
        t.stdout.contains(&format!("| {} | ", snap.display())),
        "{t:?}"
    );
    let restored = f.home.path().join("restored");
    let t = f.run(&[
        "snapshot",
        "restore",
        snap.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "-w",
        "table",
    ]);
    assert!(t.ok().contains("| DATA DIR "), "{t:?}");
    assert!(
        t.stdout.contains(&format!("| {} | ", restored.display())),
        "{t:?}"
    );

    // endpoint status and health.
    let st = f.run(&["endpoint", "status"]);
    let cols: Vec<String> = st.ok().trim_end().split(", ").map(str::to_string).collect();
    assert_eq!(cols[0], ep);
    assert_eq!(cols[1], fields[0]);
    assert_eq!(cols[4], "true", "the only member leads: {st:?}");
    let j = f.run(&["endpoint", "status", "-w", "json"]).json();
    assert_eq!(j[0]["is_leader"], true);
    let t = f.run(&["endpoint", "status", "--cluster", "-w", "table"]);
    assert!(t.ok().contains("| IS LEADER |"), "{t:?}");
    let h = f.run(&["endpoint", "health"]);
    assert!(
        h.ok().starts_with(&format!(
            "{ep} is healthy: successfully committed proposal: took = "
        )),
        "{h:?}"
    );
    assert_eq!(
        f.run(&["endpoint", "health", "-w", "json"]).json()[0]["health"],
        true
    );
    let t = f.run(&["endpoint", "health", "-w", "table"]);
    assert!(t.ok().contains("| HEALTH |"), "{t:?}");
    // An unreachable endpoint among them: unhealthy, exit code 1.
    let dead = format!("127.0.0.1:{}", free_port());
    let both = format!("{ep},{dead}");
    let h = run_with(
        &both,
        &["endpoint", "health", "--dial-timeout", "300ms"],
        "",
        f.home.path(),
    );
    assert_eq!(h.code, 1, "{h:?}");
    assert!(h.stdout.contains("is healthy"), "{h:?}");
    assert!(h.stderr.contains(&format!("{dead} is unhealthy")), "{h:?}");
    assert!(h.stderr.ends_with("Error: unhealthy cluster\n"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_code_1() {
    let f = Fixture::start().await;
    f.run(&["create", "/v", "x"]).ok();
    let cases: &[(&[&str], &str)] = &[
        // Malformed paths.
        (&["ls", "noslash"], "must start with '/'"),
        (&["get", "/a/"], "must not end with '/'"),
        (&["create", "/a//b"], "empty component"),
        (&["stat", "/a/../b"], "'.' and '..' are not allowed"),
        (&["deleteall", ""], "empty"),
        // Missing arguments.
        (&["ls"], "<PATH>"),
        (&["create"], "<PATH>"),
        (&["set", "/v"], "<DATA>"),
        (&["kv", "put", "k"], "<VALUE>"),
        (&["kv"], "subcommand"),
        (&["lease", "revoke"], "<ID>"),
        (&["create", "-t"], "-t"),
        // Bad versions and values.
        (
            &["set", "-v", "7", "/v", "y"],
            "version No is not valid : /v",
        ),
        (&["delete", "-v", "3", "/v"], "version No is not valid : /v"),
        (&["set", "-v", "abc", "/v", "y"], "abc"),
        (
            &["create", "-e", "-t", "5", "/x"],
            "TTLs cannot be used with ephemeral",
        ),
        (&["create", "-c", "-s", "/x"], "-c cannot be combined"),
        (&["create", "/v"], "Node already exists: /v"),
        (&["create", "/no/parent"], "Node does not exist: /no"),
        (&["delete", "/nope"], "Node does not exist: /nope"),
        (&["lease", "revoke", "xyz"], "invalid lease id"),
        (&["lease", "grant", "0"], "positive"),
        (&["kv", "get", "a", "b", "--prefix"], "only one of"),
        (&["kv", "get", "k", "--rev", "999999"], "future revision"),
        (
            &["ls", "/", "--command-timeout", "soon"],
            "invalid duration",
        ),
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&["ls", "-x", "/"], "unexpected argument '-x'"),
        (&["shell", "--write-out", "yaml"], "yaml"),
    ];
    for (args, want) in cases {
        let out = f.run(args);
        let line = out.one_line_error();
        assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
    }
    // Unreachable endpoints, malformed and TLS ones.
    let home = f.home.path();
    let dead = format!("127.0.0.1:{}", free_port());
    // The streaming commands too: they fail over, but only between endpoints that answer.
    for args in [
        &["ls", "/"][..],
        &["kv", "get", "k"],
        &["member", "list"],
        &["shell"],
        &["watch", "/"],
        &["get", "-w", "/v"],
        &["kv", "watch", "k"],
        &["lease", "keep-alive", "1"],
        &["lock", "l"],
        &["elect", "-l", "e"],
    ] {
        let out = run_with(&dead, args, "", home);
        let line = out.one_line_error();
        assert!(
            line.contains(&format!("cannot connect to {dead}")),
            "{args:?}: {line}"
        );
    }
    let two = format!("{dead},127.0.0.1:{}", free_port());
    let out = run_with(&two, &["get", "/v"], "", home);
    assert!(
        out.one_line_error()
            .contains("cannot connect to any endpoint"),
        "{out:?}"
    );
    let out = run_with("localhost", &["ls", "/"], "", home);
    assert!(
        out.one_line_error().contains("expected host:port"),
        "{out:?}"
    );
    let out = run_with("https://127.0.0.1:1", &["ls", "/"], "", home);
    assert!(out.one_line_error().contains("TLS"), "{out:?}");
    // The environment gives the endpoints when the flag does not.
    let out = Command::new(BIN)
        .args(["get", "/v"])
        .env("CORRAL_ENDPOINTS", f.ep())
        .env("HOME", home)
        .output()
        .expect("run corral");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n");

    // Help is not an error; `serve` keeps clap's own usage errors.
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run corral");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "serve", "ls", "create", "kv", "lease", "lock", "elect", "member", "shell",
    ] {
        assert!(
            text.contains(&format!("  {cmd} ")),
            "{cmd} missing from --help"
        );
    }
    // Streams print simple lines for table (as etcdctl's do): the help says so.
    let help = Command::new(BIN)
        .args(["kv", "watch", "--help"])
        .output()
        .expect("run corral");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains(
            "table prints streams (watch events, keep-alive renewals, lock, elect) as simple lines"
        ),
        "{text}"
    );
    let serve = Command::new(BIN)
        .args(["serve", "--no-such-flag"])
        .output()
        .expect("run corral");
    assert_eq!(serve.status.code(), Some(2));
}

/// A reader that goes away early (`| head`) ends a command quietly: exit code 0, nothing on
/// stderr — no panic from writing to the closed pipe — for a stream and for `bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let f = Fixture::start().await;
    let watch = Running::start_reading(
        &f.ep(),
        &["kv", "watch", "h", "-w", "json"],
        f.home.path(),
        1,
    );
    live(&watch, || {
        f.run(&["kv", "put", "h", "first"]).ok();
    });
    // The pipe is closed now: the next event's output fails, and ends the watch.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut watch = watch;
    while watch.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the watch outlived its reader");
        f.run(&["kv", "put", "h", "more"]).ok();
    }
    assert_eq!(watch.finish(), (0, String::new()));

    let mut bench = Command::new(BIN)
        .args(["bench", "--endpoints", &f.ep(), "--total", "20", "--json"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral bench");
    // Closed before the report is written.
    drop(bench.stdout.take());
    let out = bench.wait_with_output().expect("corral bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// The shell under a pseudo-terminal, as a person uses it: the classic exercise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_on_a_terminal() {
    let f = Fixture::start().await;
    let ep = f.ep();
    let home = f.home.path().to_path_buf();
    tokio::task::spawn_blocking(move || shell_exercise(&ep, &home))
        .await
        .expect("shell exercise");
}

/// A shell whose flags all come after `shell`; the environment names a dead endpoint, so a
/// command that ignored them would fail.
fn spawn_shell(ep: &str, home: &std::path::Path) -> rexpect::session::PtySession {
    let mut c = Command::new(BIN);
    c.args(["shell", "--endpoints", ep, "--session-timeout", "5000"])
        .env("CORRAL_ENDPOINTS", format!("127.0.0.1:{}", free_port()))
        .env("HOME", home)
        .env("TERM", "xterm");
    rexpect::session::spawn_command(c, Some(15_000)).expect("spawn corral shell")
}

/// A shell that has left (its terminal closed) exited with code 0.
#[track_caller]
fn assert_exited_0(s: &rexpect::session::PtySession) {
    use rexpect::process::WaitStatus;
    match s.process().wait() {
        Ok(WaitStatus::Exited(_, 0)) => {}
        other => panic!("the shell did not exit with 0: {other:?}"),
    }
}

/// Waits for the prompt numbered `n` (rustyline reads keys only once it is drawn).
fn prompt(s: &mut rexpect::session::PtySession, n: usize) {
    s.exp_string(&format!("(CONNECTED) {n}] "))
        .unwrap_or_else(|e| panic!("prompt {n}: {e}"));
}

fn shell_exercise(ep: &str, home: &std::path::Path) {
    let mut a = spawn_shell(ep, home);
    a.exp_string("Connected to").expect("greeting");
    prompt(&mut a, 0);
    a.send_line("create /teste dados").unwrap();
    a.exp_string("Created /teste").unwrap();
    prompt(&mut a, 1);
    a.send_line("create -s /teste/filho- ").unwrap();
    a.exp_string("Created /teste/filho-0000000000").unwrap();
    prompt(&mut a, 2);
    a.send_line("create -e /teste/efemero 'estou aqui'")
        .unwrap();
    a.exp_string("Created /teste/efemero").unwrap();
    prompt(&mut a, 3);
    // The etcd commands typed in the shell go to the shell's --endpoints too.
    a.send_line("kv put saudacao ola").unwrap();
    a.exp_string("OK").unwrap();
    prompt(&mut a, 4);
    a.send_line("kv get saudacao").unwrap();
    a.exp_string("saudacao\r\nola").unwrap();
    prompt(&mut a, 5);

    // A second shell sees the ephemeral and watches it.
    let mut b = spawn_shell(ep, home);
    prompt(&mut b, 0);
    b.send_line("ls /teste").unwrap();
    b.exp_string("[efemero, filho-0000000000]").unwrap();
    prompt(&mut b, 1);
    // Tab completes znode paths (from the server) and commands.
    b.send("get /teste/ef\t").unwrap();
    b.flush().unwrap();
    b.exp_string("efemero").unwrap();
    b.send_line("").unwrap();
    b.exp_string("estou aqui").unwrap();
    prompt(&mut b, 2);
    b.send("sta\t/teste/efemero").unwrap();
    b.send_line(" -w").unwrap();
    b.exp_string("ephemeralOwner = 0x").unwrap();
    prompt(&mut b, 3);
    b.send_line("ls -w /teste").unwrap();
    b.exp_string("[efemero, filho-0000000000]").unwrap();
    prompt(&mut b, 4);

    // The first shell quits: its session closes and the ephemeral goes; the second shell's
    // watches fire while it sits at its prompt.
    a.send_line("quit").unwrap();
    a.exp_eof().expect("the first shell exits");
    assert_exited_0(&a);
    let mut fired = Vec::new();
    for _ in 0..2 {
        let (_, line) = b
            .exp_regex(r"WatchedEvent state:SyncConnected type:\w+ path:/teste\S*")
            .expect("a watch fires");
        fired.push(line);
    }
    fired.sort();
    assert_eq!(
        fired,
        [
            "WatchedEvent state:SyncConnected type:NodeChildrenChanged path:/teste",
            "WatchedEvent state:SyncConnected type:NodeDeleted path:/teste/efemero",
        ]
    );
    b.send_line("ls /teste").unwrap();
    b.exp_string("[filho-0000000000]").unwrap();
    prompt(&mut b, 5);
    // History: the arrow brings the last command back.
    b.send("\x1b[A").unwrap();
    b.flush().unwrap();
    b.send_line("").unwrap();
    b.exp_string("[filho-0000000000]").unwrap();
    prompt(&mut b, 6);
    b.send_line("help").unwrap();
    b.exp_string("addWatch [-m mode] path").unwrap();
    prompt(&mut b, 7);
    b.send_line("get /nada").unwrap();
    b.exp_string("Error: Node does not exist: /nada").unwrap();
    prompt(&mut b, 8);
    b.send_line("exit").unwrap();
    b.exp_eof().expect("the second shell exits");
    assert_exited_0(&b);
    assert!(home.join(".corral_history").exists());
}

/// Watches move to the next endpoint when theirs dies and resume from the last event they
/// printed: every later change shows up exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_fail_over_without_losing_or_repeating_events() {
    let mut cluster = ProcessCluster::start(3).await;
    let home = tempfile::tempdir().expect("temp home");
    let ep = |i: usize| format!("127.0.0.1:{}", cluster.members[i].client_port);
    let all = format!("{},{},{}", ep(0), ep(1), ep(2));
    let other = ep(1);
    let run = |args: &[&str]| run_with(&other, args, "", home.path());
    run(&["create", "/f"]).ok();

    // Both watches connect to the first endpoint.
    let zk = Running::start(&all, &["watch", "/f", "--write-out", "json"], home.path());
    let kv = Running::start(&all, &["kv", "watch", "f/", "--prefix"], home.path());
    let mut n = 0;
    live(&zk, || {
        n += 1;
        run(&["create", &format!("/f/probe{n}")]).ok();
    });
    live(&kv, || {
        run(&["kv", "put", "f/probe", "p"]).ok();
    });

    cluster.kill(0);
    // Writes through another member, retried while a new leader is elected; a retry of a
    // create that did apply answers NodeExists.
    let write = |args: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = run(args);
            if out.code == 0 || out.stderr.contains("Node already exists") {
                return;
            }
            assert!(Instant::now() < deadline, "write never succeeded: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for name in ["a", "b", "c"] {
        write(&["create", &format!("/f/{name}")]);
        write(&["kv", "put", &format!("f/{name}"), name]);
    }

    let mut created = Vec::new();
    while created.len() < 3 {
        let v: Value = serde_json::from_str(&zk.line()).unwrap();
        let path = v["path"].as_str().unwrap_or_default().to_string();
        if v["type"] == "NodeCreated" && !path.contains("probe") {
            created.push(path);
        }
    }
    assert_eq!(created, ["/f/a", "/f/b", "/f/c"]);
    let mut put = Vec::new();
    while put.len() < 3 {
        let line = kv.line();
        if line.starts_with("f/") && line != "f/probe" {
            put.push(line);
        }
    }
    assert_eq!(put, ["f/a", "f/b", "f/c"]);
    // Nothing repeated after them.
    run(&["create", "/f/d"]).ok();
    let v: Value = serde_json::from_str(&zk.line()).unwrap();
    assert_eq!(v["path"], "/f/d", "{v}");
}

/// `lease keep-alive` moves to the next endpoint when its member dies and keeps the lease
/// alive from there, for longer than the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_fails_over_and_keeps_the_lease() {
    let mut cluster = ProcessCluster::start(3).await;
    let home = tempfile::tempdir().expect("temp home");
    let ep = |i: usize| format!("127.0.0.1:{}", cluster.members[i].client_port);
    let all = format!("{},{},{}", ep(0), ep(1), ep(2));
    let other = ep(1);
    let run = |args: &[&str]| run_with(&other, args, "", home.path());
    let ttl = 5;
    let id = run(&["lease", "grant", &ttl.to_string(), "-w", "json"]).json()["id"]
        .as_str()
        .expect("lease id")
        .to_string();
    let renewed = format!("lease {id} keepalived with TTL({ttl})");

    // It connects to the first endpoint.
    let keeper = Running::start(&all, &["lease", "keep-alive", &id], home.path());
    assert_eq!(keeper.line(), renewed);
    cluster.kill(0);
    let killed = Instant::now();
    // Renewals go on (each answered with the full TTL: the lease never lapsed) for twice the
    // TTL after the kill; a keep-alive that gave up would end the output early.
    while killed.elapsed() < Duration::from_secs(2 * ttl) {
        assert_eq!(keeper.line(), renewed);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(&["lease", "timetolive", &id, "-w", "json"]);
        if out.code == 0 {
            assert!(out.json()["ttl"].as_i64().unwrap() > 0, "{out:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timetolive never answered: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    keeper.signal("TERM");
    assert_eq!(keeper.finish(), (0, String::new()));
}
