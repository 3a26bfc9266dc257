//! The container image (deploy/Dockerfile) and the deployment examples against a real Docker
//! engine:
//!
//! - three members on a private network form a cluster by DNS names; etcdctl in a fourth
//!   container works against it; `docker kill` of the leader (restarted with a new IP, as a
//!   rescheduled pod) and `docker network disconnect` of a member are survived with no
//!   acknowledged write lost;
//! - the sidecar layout: application containers sharing their corral sidecar's network
//!   namespace reach it on localhost:2379; SIGTERM stops a member cleanly;
//! - deploy/compose.yaml brings up a healthy cluster.
//!
//! Members run the way the manifests run them: read-only root filesystem, no capabilities,
//! the image's non-root user. The host talks to the members by container IP (Linux bridge
//! networks are routed from the host). The image is built by `scripts/image.sh --dev`;
//! `make test` compiles its static binary before the tests start, so here it takes seconds.
//!
//! Without a Docker engine each test prints "docker engine not available: skipping ..." and
//! passes; CORRAL_REQUIRE_DOCKER=1 turns that into a failure. Every container, network and
//! image gets a random suffix (parallel runs don't clash) and is removed when the test ends,
//! failed or not; containers and networks left by a test that was killed carry a label with
//! their creation time, and the next run removes them after an hour.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::process::Command;

/// Label on every container and network a test creates; the value is the creation time in
/// Unix seconds.
const LABEL: &str = "org.corral.test.created";
/// Leftovers of a killed test older than this are removed by the next test.
const STALE_AFTER_S: u64 = 3600;
/// For one docker command (run, kill, network connect, ...).
const DOCKER_DEADLINE: Duration = Duration::from_secs(60);
/// For scripts/image.sh: cargo's up-to-date check and a docker build of a few MB. A cold
/// compile takes longer than a test may; `make test` compiles first.
const IMAGE_DEADLINE: Duration = Duration::from_secs(150);
/// Forming a cluster, electing a leader, a member catching up.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// Acknowledged writes the writer must add in each phase: progress under that fault.
const WRITES_PER_PHASE: usize = 30;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ commands

/// Runs `cmd` to completion within `deadline`: its stdout, or an error that says what ran
/// and what it printed. A command past its deadline is killed.
async fn run(mut cmd: Command, deadline: Duration) -> Result<String, String> {
    let what = format!("{:?}", cmd.as_std());
    cmd.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Err(_) => Err(format!("{what}: no answer within {deadline:?}")),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Ok(Ok(out)) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                Ok(stdout)
            } else {
                Err(format!(
                    "{what}: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        }
    }
}

async fn docker(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run(cmd, DOCKER_DEADLINE).await
}

/// A docker command the test cannot go on without.
async fn docker_ok(args: &[&str]) -> String {
    docker(args).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Whether the tests can run; prints why not.
async fn docker_available(test: &str) -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    match run(cmd, Duration::from_secs(20)).await {
        Ok(_) => true,
        Err(e) => {
            // The daemon's own words ("Cannot connect to the Docker daemon ...") end the error.
            let reason = e
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .to_string();
            assert!(
                std::env::var("CORRAL_REQUIRE_DOCKER").as_deref() != Ok("1"),
                "CORRAL_REQUIRE_DOCKER=1 but the docker engine is not available: {e}"
            );
            eprintln!("docker engine not available: skipping {test} ({reason})");
            false
        }
    }
}

/// Polls `f` every [`POLL`] until it returns `Some`, or panics with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Prints a test's progress with the time since it started: where a slow or failed run spent
/// its time.
struct Progress(Instant);

impl Progress {
    fn start() -> Progress {
        Progress(Instant::now())
    }

    fn step(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

// ------------------------------------------------------------------- harness

/// The Docker objects of one test, removed when it is dropped (also on panic, after printing
/// the members' logs).
struct Harness {
    id: String,
    created: u64,
    dir: tempfile::TempDir,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
    /// `docker-compose ... down` arguments for a project this test brought up.
    compose_down: Mutex<Option<Vec<String>>>,
}

/// A user-defined network with a /24 of its own, so members can be given addresses.
struct Net {
    name: String,
    /// The first three octets, e.g. "10.201.7".
    prefix: String,
}

impl Net {
    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }
}

impl Harness {
    async fn new() -> Harness {
        reap_stale().await;
        Harness {
            id: format!("{:08x}", rand::random::<u32>()),
            created: unix_now(),
            dir: tempfile::tempdir().expect("temp dir"),
            containers: Mutex::default(),
            networks: Mutex::default(),
            images: Mutex::default(),
            compose_down: Mutex::default(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("corral-test-{}-{what}", self.id)
    }

    fn label(&self) -> String {
        format!("{LABEL}={}", self.created)
    }

    fn track_container(&self, name: &str) {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
    }

    /// Builds the corral image through scripts/image.sh, as `make image` does (with the
    /// unoptimized binary, see the module docs). Returns its tag.
    async fn corral_image(&self) -> String {
        let tag = format!("corral-test-{}:dev", self.id);
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tag.clone());
        let mut cmd = Command::new(repo().join("scripts/image.sh"));
        cmd.args(["--dev", "--quiet", "--tag", &tag])
            .current_dir(repo());
        if let Err(e) = run(cmd, IMAGE_DEADLINE).await {
            panic!(
                "building the image failed (if it ran out of time compiling, run \
                 `scripts/image.sh --prebuild` first; `make test` does):\n{e}"
            );
        }
        tag
    }

    /// An image with nothing but etcdctl (the one the test tools installer provides) and the
    /// shared libraries it loads: the fourth container, a client that is not ours.
    async fn etcdctl_image(&self) -> String {
        let etcdctl = find_tool("etcdctl", "ETCDCTL").unwrap_or_else(|| {
            panic!(
                "`etcdctl` is not installed (looked at $ETCDCTL, PATH and {}).\n\
                 Run `scripts/install-test-tools.sh` to install it (`make test` runs it for you).",
                tools_dir().join("bin").display()
            )
        });
        let ctx = self.dir.path().join("etcdctl-image");
        let rootfs = ctx.join("rootfs");
        copy_into(&etcdctl, &rootfs.join("usr/local/bin/etcdctl"));
        for lib in shared_libraries(&etcdctl).await {
            let rel = lib.strip_prefix("/").unwrap_or(&lib);
            copy_into(&lib, &rootfs.join(rel));
        }
        copy_into(
            &repo().join("deploy/rootfs/etc/nsswitch.conf"),
            &rootfs.join("etc/nsswitch.conf"),
        );
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY rootfs/ /\nENV ETCDCTL_API=3\nUSER 65532:65532\n\
             ENTRYPOINT [\"/usr/local/bin/etcdctl\"]\n",
        )
        .expect("write Dockerfile");
        let tag = format!("corral-test-{}-etcdctl:t", self.id);
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tag.clone());
        let ctx = ctx.display().to_string();
        docker_ok(&["build", "--quiet", "--tag", &tag, &ctx]).await;
        tag
    }

    /// A network with a random private /24 (retried while it overlaps an existing one).
    async fn network(&self) -> Net {
        let name = self.name("net");
        let label = self.label();
        for _ in 0..20 {
            let prefix = format!(
                "10.{}.{}",
                128 + rand::random::<u8>() % 120,
                rand::random::<u8>()
            );
            let subnet = format!("{prefix}.0/24");
            let args = [
                "network", "create", "--label", &label, "--subnet", &subnet, &name,
            ];
            match docker(&args).await {
                Ok(_) => {
                    self.networks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(name.clone());
                    return Net { name, prefix };
                }
                Err(e) if e.contains("overlap") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free /24 in 10.128.0.0/9 for a test network");
    }

    /// Starts a member of a cluster named by `initial_cluster`: `alias` is its member name and
    /// DNS name on `net` (like a pod's name under its headless Service). Returns the container.
    async fn start_member(
        &self,
        image: &str,
        net: &Net,
        alias: &str,
        ip: &str,
        initial_cluster: &str,
        extra_env: &[&str],
    ) -> String {
        let container = self.name(alias);
        self.track_container(&container);
        let mut env = vec![
            format!("CORRAL_NAME={alias}"),
            format!("CORRAL_INITIAL_CLUSTER={initial_cluster}"),
            format!("CORRAL_INITIAL_ADVERTISE_PEER_URLS=http://{alias}:2380"),
            format!("CORRAL_ADVERTISE_CLIENT_URLS=http://{alias}:2379"),
            format!("CORRAL_INITIAL_CLUSTER_TOKEN={}", self.id),
        ];
        env.extend(extra_env.iter().map(|e| e.to_string()));
        let label = self.label();
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &container,
            "--label",
            &label,
            "--network",
            &net.name,
            "--network-alias",
            alias,
            "--hostname",
            alias,
            "--ip",
            ip,
            // As deploy/kubernetes runs it.
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ];
        for e in &env {
            args.extend(["--env", e.as_str()]);
        }
        args.push(image);
        docker_ok(&args).await;
        container
    }

    /// Runs a one-shot container to completion (`docker run --rm`): its stdout.
    async fn run_once(&self, what: &str, docker_args: &[&str]) -> Result<String, String> {
        let name = self.name(&format!("{what}-{:04x}", rand::random::<u16>()));
        self.track_container(&name);
        let label = self.label();
        let mut args = vec!["run", "--rm", "--name", &name, "--label", &label];
        args.extend_from_slice(docker_args);
        docker(&args).await
    }

    /// Prints the last lines of every container's log: what a failure report needs.
    fn dump_logs(&self) {
        let containers = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in containers {
            if let Ok(out) = std::process::Command::new("docker")
                .args(["logs", "--tail", "40", &c])
                .output()
            {
                if out.stdout.is_empty() && out.stderr.is_empty() {
                    continue;
                }
                eprintln!(
                    "----- docker logs --tail 40 {c}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Blocking commands in a destructor: the test is over, nothing else waits on them.
        let quiet = |args: &[String]| {
            let _ = std::process::Command::new("docker")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        if let Some(down) = self
            .compose_down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = std::process::Command::new(&down[0])
                .args(&down[1..])
                .current_dir(repo())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let take = |m: &Mutex<Vec<String>>| {
            std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let containers = take(&self.containers);
        if !containers.is_empty() {
            // -v: the members' anonymous data volumes go with them.
            let mut args = vec!["rm".to_string(), "--force".into(), "--volumes".into()];
            args.extend(containers);
            quiet(&args);
        }
        let networks = take(&self.networks);
        if !networks.is_empty() {
            let mut args = vec!["network".to_string(), "rm".into()];
            args.extend(networks);
            quiet(&args);
        }
        let images = take(&self.images);
        if !images.is_empty() {
            // Untags; the image itself goes with its last tag.
            let mut args = vec!["rmi".to_string()];
            args.extend(images);
            quiet(&args);
        }
    }
}

/// Removes containers and networks that tests created over [`STALE_AFTER_S`] ago and never
/// removed (a test killed by the runner's time limit skips its destructor).
async fn reap_stale() {
    let now = unix_now();
    let stale = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter_map(|line| {
                let (id, created) = line.split_once(' ')?;
                let created: u64 = created.trim().parse().ok()?;
                (now.saturating_sub(created) > STALE_AFTER_S).then(|| id.to_string())
            })
            .collect()
    };
    let filter = format!("label={LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
    if let Ok(listing) = docker(&["ps", "-a", "--filter", &filter, "--format", &format]).await {
        let ids = stale(&listing);
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args).await;
        }
    }
    if let Ok(listing) = docker(&["network", "ls", "--filter", &filter, "--format", &format]).await
    {
        for id in stale(&listing) {
            let _ = docker(&["network", "rm", &id]).await;
        }
    }
}

// --------------------------------------------------------------------- tools

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

/// `name` from `$env_var`, PATH or the test tools' bin directory.
fn find_tool(name: &str, env_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Some(path) = std::env::var_os(env_var) {
        return Some(PathBuf::from(path)).filter(|p| executable(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(std::iter::once(tools_dir().join("bin")))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// The shared libraries `binary` loads, the dynamic loader included (nothing if static).
async fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary);
    // ldd fails on a static binary ("not a dynamic executable"): then there is nothing to copy.
    let Ok(out) = run(cmd, Duration::from_secs(20)).await else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no file.
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `from` (following symlinks) to `to`, creating its directory; keeps the mode.
fn copy_into(from: &Path, to: &Path) {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

// ------------------------------------------------------------------- clients

fn endpoint(ip: &str) -> String {
    format!("http://{ip}:2379")
}

/// (own member id, leader it reports, term) from the member at `ip`, within about 2 s.
async fn status(ip: &str) -> Option<(u64, u64, u64)> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(700))
        .with_timeout(Duration::from_secs(1));
    let ask = async {
        let mut c = Client::connect([endpoint(ip)], Some(options)).await?;
        c.status().await
    };
    let s = tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()?
        .ok()?;
    Some((s.header()?.member_id(), s.leader(), s.raft_term()))
}

/// Index (into `ips`) of the member that reports itself leader with the highest term, once
/// every member in `ips` names that same leader.
async fn agreed_leader(ips: &[String]) -> Option<usize> {
    let statuses = futures::future::join_all(ips.iter().map(|ip| status(ip))).await;
    let statuses: Vec<(u64, u64, u64)> = statuses.into_iter().collect::<Option<_>>()?;
    let leader_id = statuses[0].1;
    if leader_id == 0 || statuses.iter().any(|s| s.1 != leader_id) {
        return None;
    }
    statuses.iter().position(|s| s.0 == leader_id)
}

/// The value of `key` in a linearizable read from the member at `ip`.
async fn read(ip: &str, key: &str) -> Option<String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(700))
        .with_timeout(Duration::from_secs(2));
    let ask = async {
        let mut c = Client::connect([endpoint(ip)], Some(options)).await?;
        c.get(key, None).await
    };
    let resp = tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()?
        .ok()?;
    let kv = resp.kvs().first()?;
    Some(String::from_utf8_lossy(kv.value()).into_owned())
}

/// Every `w/` key in a linearizable read from the member at `ip`, at `revision` (0: the
/// latest), and the revision read.
async fn written_keys(ip: &str, revision: i64) -> Result<(i64, BTreeMap<String, String>), String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(10));
    let ask = async {
        let mut c = Client::connect([endpoint(ip)], Some(options)).await?;
        let get = GetOptions::new().with_prefix().with_revision(revision);
        c.get("w/", Some(get)).await
    };
    let resp = tokio::time::timeout(Duration::from_secs(15), ask)
        .await
        .map_err(|_| format!("{ip}: no answer"))?
        .map_err(|e| format!("{ip}: {e}"))?;
    let read_at = match revision {
        0 => resp.header().map(|h| h.revision()).unwrap_or_default(),
        r => r,
    };
    let keys = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect();
    Ok((read_at, keys))
}

/// Writes fresh keys w/<n> = v<n> one after the other, through one member at a time (moving
/// on when it fails), and records the writes that were acknowledged. A write whose outcome
/// is unknown (error, timeout) is not retried: the next write uses a new key, so every
/// recorded key was acknowledged exactly once and must survive.
struct Writer {
    endpoints: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let endpoints = Arc::new(Mutex::new(endpoints));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(endpoints.clone(), acked.clone(), stop.clone()));
        Writer {
            endpoints,
            acked,
            stop,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn last_acked(&self) -> Option<(String, String)> {
        self.acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }

    /// Member `i` moved to `ip`.
    fn set_endpoint(&self, i: usize, ip: &str) {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())[i] = endpoint(ip);
    }

    /// Waits until `more` writes were acknowledged after this call.
    async fn wait_progress(&self, more: usize, during: &str) {
        let target = self.acked() + more;
        eventually(
            &format!("{more} acknowledged writes {during}"),
            CLUSTER_DEADLINE,
            || async { (self.acked() >= target).then_some(()) },
        )
        .await;
    }

    async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

async fn write_loop(
    endpoints: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
) {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3));
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut target = 0usize;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ep = {
            let eps = endpoints.lock().unwrap_or_else(|p| p.into_inner());
            eps[target % eps.len()].clone()
        };
        let client = match clients.get_mut(&ep) {
            Some(c) => c,
            None => {
                let connect = Client::connect([ep.clone()], Some(options.clone()));
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(c)) => clients.entry(ep.clone()).or_insert(c),
                    _ => {
                        target += 1;
                        // Back off a little: with every member unreachable this would spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let (key, value) = (format!("w/{n:08}"), format!("v{n}"));
        n += 1;
        let put = client.put(key.as_str(), value.as_str(), None);
        match tokio::time::timeout(Duration::from_secs(4), put).await {
            Ok(Ok(_)) => acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key, value)),
            _ => {
                clients.remove(&ep);
                target += 1;
            }
        }
    }
}

// --------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_cluster_survives_leader_kill_and_partition() {
    let test = "image_cluster_survives_leader_kill_and_partition";
    if !docker_available(test).await {
        return;
    }
    let h = Harness::new().await;
    let p = Progress::start();
    let (image, etcdctl_image) = tokio::join!(h.corral_image(), h.etcdctl_image());
    p.step("images built");

    // The image is what the Dockerfile promises.
    let config = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}}",
        &image,
    ])
    .await;
    for expected in [
        "65532:65532",
        "2379/tcp",
        "2380/tcp",
        "2381/tcp",
        "/var/lib/corral",
    ] {
        assert!(
            config.contains(expected),
            "image config lacks {expected}: {config}"
        );
    }

    let net = h.network().await;
    let aliases = ["c1", "c2", "c3"];
    let initial_cluster = aliases
        .iter()
        .map(|a| format!("{a}=http://{a}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let mut ips: Vec<String> = (0..3).map(|i| net.ip(11 + i as u8)).collect();
    let mut containers = Vec::new();
    for (alias, ip) in aliases.iter().zip(&ips) {
        containers.push(
            h.start_member(&image, &net, alias, ip, &initial_cluster, &[])
                .await,
        );
    }
    let leader = eventually(
        "a leader all three members agree on",
        CLUSTER_DEADLINE,
        || agreed_leader(&ips),
    )
    .await;
    p.step(&format!("cluster formed; leader {}", aliases[leader]));

    // etcdctl in a fourth container, by DNS name like any client on the network.
    let etcdctl = |args: Vec<&'static str>| {
        let (net, image, h) = (&net.name, &etcdctl_image, &h);
        async move {
            let mut docker_args = vec!["--network", net.as_str(), image.as_str()];
            docker_args.extend(["--dial-timeout", "2s", "--command-timeout", "10s"]);
            docker_args.extend(args);
            h.run_once("etcdctl", &docker_args).await
        }
    };
    let members = etcdctl(vec![
        "--endpoints",
        "c1:2379,c2:2379,c3:2379",
        "member",
        "list",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for a in aliases {
        assert!(
            members.contains(&format!("http://{a}:2380")),
            "member list lacks {a}: {members}"
        );
    }
    let put = etcdctl(vec![
        "--endpoints",
        "c2:2379",
        "put",
        "from-etcdctl",
        "hello",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.trim(), "OK");
    let got = etcdctl(vec![
        "--endpoints",
        "c3:2379",
        "get",
        "from-etcdctl",
        "--print-value-only",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.trim(), "hello");

    p.step("etcdctl in a fourth container works");
    let writer = Writer::start(ips.iter().map(|ip| endpoint(ip)).collect());
    writer
        .wait_progress(WRITES_PER_PHASE, "before any fault")
        .await;

    // 1. SIGKILL the leader: the other two elect a new one and keep taking writes.
    let killed = leader;
    docker_ok(&["kill", &containers[killed]]).await;
    let others: Vec<String> = (0..3)
        .filter(|&i| i != killed)
        .map(|i| ips[i].clone())
        .collect();
    eventually("a new leader after the kill", CLUSTER_DEADLINE, || {
        agreed_leader(&others)
    })
    .await;
    writer
        .wait_progress(WRITES_PER_PHASE, "with the old leader killed")
        .await;
    p.step(&format!(
        "killed {}; the others elected a leader and took writes",
        aliases[killed]
    ));

    // Back with a new address, as a rescheduled pod: the others must find it by name.
    let new_ip = net.ip(21 + killed as u8);
    docker_ok(&["network", "disconnect", &net.name, &containers[killed]]).await;
    docker_ok(&[
        "network",
        "connect",
        "--ip",
        &new_ip,
        "--alias",
        aliases[killed],
        &net.name,
        &containers[killed],
    ])
    .await;
    docker_ok(&["start", &containers[killed]]).await;
    ips[killed] = new_ip;
    writer.set_endpoint(killed, &ips[killed]);
    eventually(
        "the restarted member back in the cluster",
        CLUSTER_DEADLINE,
        || agreed_leader(&ips),
    )
    .await;
    let (key, value) = writer.last_acked().expect("acknowledged writes");
    eventually(
        "the restarted member serving the latest writes",
        CLUSTER_DEADLINE,
        || {
            let (ip, key, value) = (ips[killed].clone(), key.clone(), value.clone());
            async move { (read(&ip, &key).await.as_deref() == Some(value.as_str())).then_some(()) }
        },
    )
    .await;

    p.step("the killed member is back, at a new address, with the latest writes");

    // 2. Cut the current leader off the network: the majority side elects a leader and
    // takes writes; healed, the cut member catches up.
    let cut = eventually("a leader before the partition", CLUSTER_DEADLINE, || {
        agreed_leader(&ips)
    })
    .await;
    p.step(&format!("disconnecting {} (the leader)", aliases[cut]));
    docker_ok(&["network", "disconnect", &net.name, &containers[cut]]).await;
    let majority: Vec<String> = (0..3)
        .filter(|&i| i != cut)
        .map(|i| ips[i].clone())
        .collect();
    eventually(
        "a leader on the majority side of the partition",
        CLUSTER_DEADLINE,
        || agreed_leader(&majority),
    )
    .await;
    writer
        .wait_progress(WRITES_PER_PHASE, "with the leader partitioned away")
        .await;
    p.step("the majority side elected a leader and took writes");
    docker_ok(&[
        "network",
        "connect",
        "--ip",
        &ips[cut],
        "--alias",
        aliases[cut],
        &net.name,
        &containers[cut],
    ])
    .await;
    eventually(
        "all three members agreeing after the partition healed",
        CLUSTER_DEADLINE,
        || agreed_leader(&ips),
    )
    .await;
    writer
        .wait_progress(WRITES_PER_PHASE, "after the partition healed")
        .await;
    p.step("partition healed");

    // Every acknowledged write is on every member, and the members agree: compared at one
    // revision, because a write whose client gave up (not acknowledged, so not checked) may
    // still be applied a little later.
    let acked = writer.stop().await;
    let (last_key, last_value) = acked.last().cloned().expect("acknowledged writes");
    for (i, ip) in ips.iter().enumerate() {
        eventually(
            &format!("{} serving the last acknowledged write", aliases[i]),
            CLUSTER_DEADLINE,
            || async {
                (read(ip, &last_key).await.as_deref() == Some(last_value.as_str())).then_some(())
            },
        )
        .await;
    }
    let (revision, view0) = written_keys(&ips[0], 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(k, v)| view0.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        lost.is_empty(),
        "{} lost {} of {} acknowledged writes, e.g. {:?}",
        aliases[0],
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    for (i, ip) in ips.iter().enumerate().skip(1) {
        let (_, view) = written_keys(ip, revision)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let differ: Vec<String> = view
            .iter()
            .filter(|(k, v)| view0.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v} only on {}", aliases[i]))
            .chain(
                view0
                    .iter()
                    .filter(|(k, v)| view.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}={v} only on {}", aliases[0])),
            )
            .collect();
        assert!(
            differ.is_empty(),
            "{} and {} differ at revision {revision}: {differ:?}",
            aliases[i],
            aliases[0]
        );
    }
    p.step(&format!(
        "{} acknowledged writes, all on every member ({} keys at revision {revision})",
        acked.len(),
        view0.len()
    ));

    // And etcdctl sees a healthy cluster through the names members advertise.
    let health = etcdctl(vec![
        "--endpoints",
        "c1:2379",
        "endpoint",
        "health",
        "--cluster",
        "--write-out",
        "json",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        health.matches("\"health\":true").count(),
        3,
        "endpoint health --cluster: {health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_app_reaches_its_member_on_localhost() {
    let test = "sidecar_app_reaches_its_member_on_localhost";
    if !docker_available(test).await {
        return;
    }
    let h = Harness::new().await;
    let p = Progress::start();
    let image = h.corral_image().await;
    p.step("image built");
    let net = h.network().await;

    // Four "pods" of deploy/kubernetes/sidecar.yaml's StatefulSet scaled to 4: each a corral
    // sidecar (app-<i> on the network, as under the headless Service) and an application in
    // its network namespace. app-0..app-2 are the voters of --initial-cluster; app-3 is not
    // named there and joins as a learner by itself (--auto-learner, set on every pod).
    let pods = ["app-0", "app-1", "app-2", "app-3"];
    let voters = 3;
    let initial_cluster = pods[..voters]
        .iter()
        .map(|p| format!("{p}=http://{p}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let ips: Vec<String> = (0..pods.len()).map(|i| net.ip(11 + i as u8)).collect();
    let mut sidecars = Vec::new();
    for (pod, ip) in pods.iter().zip(&ips) {
        let env = ["CORRAL_AUTO_LEARNER=true"];
        sidecars.push(
            h.start_member(&image, &net, pod, ip, &initial_cluster, &env)
                .await,
        );
    }
    eventually(
        "the sidecars forming a cluster, the fourth one included",
        CLUSTER_DEADLINE,
        || agreed_leader(&ips),
    )
    .await;
    p.step("the sidecars formed a cluster");
    eventually(
        "app-3 in the member list as a learner",
        CLUSTER_DEADLINE,
        || async {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(700))
                .with_timeout(Duration::from_secs(2));
            let mut c = Client::connect([endpoint(&ips[0])], Some(options))
                .await
                .ok()?;
            let list = c.member_list().await.ok()?;
            let roles: Vec<(String, bool)> = list
                .members()
                .iter()
                .map(|m| (m.name().to_string(), m.is_learner()))
                .collect();
            let learner = roles.iter().any(|(n, l)| n == "app-3" && *l);
            let voting = roles.iter().filter(|(_, l)| !*l).count();
            (learner && voting == voters).then_some(())
        },
    )
    .await;
    p.step("app-3 joined as a learner");

    // The application: the corral CLI in the same image, with no network of its own.
    let app = |i: usize, args: Vec<String>| {
        let (h, image, sidecar) = (&h, &image, &sidecars[i]);
        async move {
            let netns = format!("container:{sidecar}");
            let mut docker_args = vec![
                "--network",
                netns.as_str(),
                "--read-only",
                "--cap-drop",
                "ALL",
                image.as_str(),
            ];
            docker_args.extend(args.iter().map(String::as_str));
            docker_args.extend(["--endpoints", "http://127.0.0.1:2379"]);
            h.run_once("app", &docker_args).await
        }
    };
    for (i, pod) in pods.iter().enumerate() {
        let out = app(
            i,
            vec![
                "kv".into(),
                "put".into(),
                format!("apps/{pod}"),
                format!("hello from {pod}"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.trim(), "OK", "{pod}: {out}");
    }
    p.step("every app wrote through its sidecar");
    // Each application sees the others' writes through its own sidecar (the learner forwards
    // writes and linearizable reads to the leader).
    for (i, pod) in pods.iter().enumerate() {
        let out = app(
            i,
            vec![
                "kv".into(),
                "get".into(),
                "apps/".into(),
                "--prefix".into(),
                "--print-value-only".into(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        for other in pods {
            assert!(
                out.contains(&format!("hello from {other}")),
                "{pod} does not see {other}'s write: {out}"
            );
        }
    }

    p.step("every app read the others' writes");

    // The application container exactly as deploy/kubernetes/sidecar.yaml runs it (its args
    // and CORRAL_ENDPOINTS, in its sidecar's network namespace): every pod's application
    // campaigns in one election through its own member, and one of them leads.
    let (manifest_args, manifest_endpoints) = sidecar_manifest_app();
    let mut apps = Vec::new();
    for (pod, sidecar) in pods.iter().zip(&sidecars) {
        let container = h.name(&format!("{pod}-app"));
        h.track_container(&container);
        let (label, netns) = (h.label(), format!("container:{sidecar}"));
        let endpoints = format!("CORRAL_ENDPOINTS={manifest_endpoints}");
        let args: Vec<String> = manifest_args
            .iter()
            .map(|a| a.replace("$(POD_NAME)", pod))
            .collect();
        let mut docker_args = vec![
            "run",
            "--detach",
            "--name",
            &container,
            "--label",
            &label,
            "--network",
            &netns,
            "--env",
            &endpoints,
            "--read-only",
            "--cap-drop",
            "ALL",
            &image,
        ];
        docker_args.extend(args.iter().map(String::as_str));
        docker_ok(&docker_args).await;
        apps.push(container);
    }
    let election = manifest_args
        .get(1)
        .cloned()
        .expect("the manifest's app names an election");
    let app_leader = |not: Option<usize>| {
        let (ips, election) = (&ips, &election);
        async move {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(700))
                .with_timeout(Duration::from_secs(2));
            let mut c = Client::connect([endpoint(&ips[0])], Some(options))
                .await
                .ok()?;
            let r = c.leader(election.as_str()).await.ok()?;
            let value = std::str::from_utf8(r.kv()?.value()).ok()?.to_string();
            let i = pods.iter().position(|p| *p == value)?;
            (Some(i) != not).then_some(i)
        }
    };
    let first = eventually(
        "one application leads the manifest's election",
        CLUSTER_DEADLINE,
        || app_leader(None),
    )
    .await;
    p.step(&format!(
        "the manifest's application on {} leads",
        pods[first]
    ));
    // Its pod goes away (SIGTERM): it resigns, and another pod's application takes over.
    docker_ok(&["stop", "--time", "10", &apps[first]]).await;
    let next = eventually(
        "another application leads once the first one stopped",
        CLUSTER_DEADLINE,
        || app_leader(Some(first)),
    )
    .await;
    p.step(&format!("after its SIGTERM, {} leads", pods[next]));
    // The learner's own copy (a serializable read, no round trip to the leader) catches up.
    let values = ["kv", "get", "apps/", "--prefix", "--print-value-only"];
    let serializable = || {
        let args: Vec<String> = values
            .iter()
            .chain(&["--consistency", "s"])
            .map(|a| a.to_string())
            .collect();
        app(3, args)
    };
    eventually(
        "every write in the learner's own copy",
        CLUSTER_DEADLINE,
        || async {
            let out = serializable().await.ok()?;
            pods.iter()
                .all(|p| out.contains(&format!("hello from {p}")))
                .then_some(())
        },
    )
    .await;

    // The member runs as the image's user, and SIGTERM (docker stop, a pod's deletion)
    // stops it cleanly and quickly. Read on the host: the daemon is local (the test reaches
    // the members by IP too).
    let pid = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &sidecars[2]]).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .unwrap_or_else(|e| panic!("/proc/{}/status: {e}", pid.trim()));
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65532"),
        "the member does not run as uid 65532: {uid_line}"
    );
    p.step("the learner's copy has every write");
    let started = Instant::now();
    docker_ok(&["stop", "--time", "20", &sidecars[2]]).await;
    let took = started.elapsed();
    let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &sidecars[2]]).await;
    assert_eq!(exit.trim(), "0", "exit code after SIGTERM");
    assert!(
        took < Duration::from_secs(10),
        "docker stop took {took:?}: SIGTERM did not stop the member promptly"
    );
    p.step(&format!("SIGTERM stopped app-2 in {took:?}"));
    // Two voters of three are a quorum: the applications, the learner's included, still
    // write, and the learner's copy follows.
    let out = app(
        3,
        vec![
            "kv".into(),
            "put".into(),
            "apps/after".into(),
            "hello from after".into(),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.trim(), "OK");
    eventually(
        "the write after the stop in the learner's own copy",
        CLUSTER_DEADLINE,
        || async {
            serializable()
                .await
                .ok()?
                .contains("hello from after")
                .then_some(())
        },
    )
    .await;
}

/// The application container of deploy/kubernetes/sidecar.yaml: its `args` (a JSON-style
/// list in the manifest) and its CORRAL_ENDPOINTS value, so the test runs what users deploy.
fn sidecar_manifest_app() -> (Vec<String>, String) {
    let path = repo().join("deploy/kubernetes/sidecar.yaml");
    let text = std::fs::read_to_string(&path).expect("read sidecar.yaml");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let app = lines
        .iter()
        .position(|l| *l == "- name: app")
        .expect("sidecar.yaml has a container named app");
    let after = &lines[app..];
    let args = after
        .iter()
        .find_map(|l| l.strip_prefix("args:"))
        .expect("the app container has args");
    let args: Vec<String> = serde_json::from_str(args.trim()).expect("args as a list");
    let endpoints = after
        .iter()
        .position(|l| *l == "- name: CORRAL_ENDPOINTS")
        .and_then(|i| after.get(i + 1))
        .and_then(|l| l.strip_prefix("value:"))
        .expect("the app container sets CORRAL_ENDPOINTS")
        .trim()
        .to_string();
    (args, endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_example_forms_a_healthy_cluster() {
    let test = "compose_example_forms_a_healthy_cluster";
    if !docker_available(test).await {
        return;
    }
    let Some(compose) = find_tool("docker-compose", "DOCKER_COMPOSE") else {
        eprintln!("docker-compose not installed: skipping {test}");
        return;
    };
    let h = Harness::new().await;
    let p = Progress::start();
    let (image, etcdctl_image) = tokio::join!(h.corral_image(), h.etcdctl_image());
    p.step("images built");
    let project = h.name("compose");
    let compose_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&compose);
        cmd.args(["--project-name", &project, "--file", "deploy/compose.yaml"])
            .args(args)
            .current_dir(repo())
            .env("CORRAL_IMAGE", &image);
        // Any free host ports: fixed ones would clash with a parallel run or `make cluster`.
        for i in 1..=3 {
            cmd.env(format!("CORRAL_CLIENT_PORT_{i}"), "");
        }
        cmd
    };
    *h.compose_down.lock().unwrap_or_else(|p| p.into_inner()) = Some(
        [
            compose.display().to_string(),
            "--project-name".into(),
            project.clone(),
            "--file".into(),
            "deploy/compose.yaml".into(),
            "down".into(),
            "--volumes".into(),
            "--timeout".into(),
            "5".into(),
        ]
        .into(),
    );
    run(compose_cmd(&["up", "--detach"]), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids = run(compose_cmd(&["ps", "--quiet"]), DOCKER_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
    assert_eq!(ids.len(), 3, "compose started {ids:?}");
    for id in &ids {
        h.track_container(id);
    }
    p.step("compose up");

    // Healthy by the compose file's own check (corral endpoint health in each container).
    eventually(
        "all three compose members healthy",
        CLUSTER_DEADLINE * 2,
        || async {
            let mut args = vec!["inspect", "--format", "{{.State.Health.Status}}"];
            args.extend(ids.iter().map(String::as_str));
            let out = docker(&args).await.ok()?;
            (out.lines().filter(|l| l.trim() == "healthy").count() == 3).then_some(())
        },
    )
    .await;
    p.step("all three healthy");

    // A client on the project's network by service names, and one on the host by a
    // published port. (The network's name depends on the compose version.)
    let network = docker_ok(&[
        "inspect",
        "--format",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &ids[0],
    ])
    .await
    .trim()
    .to_string();
    let out = h
        .run_once(
            "etcdctl",
            &[
                "--network",
                &network,
                &etcdctl_image,
                "--endpoints",
                "corral-1:2379,corral-2:2379,corral-3:2379",
                "--command-timeout",
                "10s",
                "put",
                "compose",
                "works",
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.trim(), "OK");
    let port = run(compose_cmd(&["port", "corral-3", "2379"]), DOCKER_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = port.trim().to_string();
    let value = eventually("a read through a published port", CLUSTER_DEADLINE, || {
        let addr = addr.clone();
        async move {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(3));
            let mut c = Client::connect([format!("http://{addr}")], Some(options))
                .await
                .ok()?;
            let resp = c.get("compose", None).await.ok()?;
            let kv = resp.kvs().first()?;
            Some(String::from_utf8_lossy(kv.value()).into_owned())
        }
    })
    .await;
    assert_eq!(value, "works");
}
