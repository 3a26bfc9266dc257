//! `corral serve` configuration: etcd-shaped flags, each also settable from a `CORRAL_*`
//! environment variable, and their validation into a [`Config`] the server uses as is.
//!
//! Flag names, defaults and rules follow etcd so that scripts, Helm charts and Kubernetes
//! manifests written for etcd carry over. Everything that can be checked before binding a
//! socket or opening the data directory is checked here, so that a bad flag fails at startup
//! with a message naming the flag instead of surfacing later as a Raft or network error.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// etcd's rule: a follower must tolerate a few delayed or lost heartbeats before it calls an
/// election, otherwise a brief network hiccup deposes a healthy leader.
const MIN_ELECTION_TO_HEARTBEAT_RATIO: u64 = 5;

/// etcd's upper bound for `--election-timeout`: beyond it a crashed leader leaves the cluster
/// unavailable for too long. It also keeps `2 × election timeout` (the randomized range's upper
/// end) far from overflowing.
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// etcd's default `--quota-backend-bytes`, 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

// Flag names as they appear in error messages. A derived default is named after the flag it
// was copied from, so the user knows which flag to set to fix it.
const FLAG_LISTEN_CLIENT: &str = "--listen-client-urls";
const FLAG_ADVERTISE_CLIENT: &str = "--advertise-client-urls";
const FLAG_ADVERTISE_CLIENT_DEFAULT: &str =
    "--advertise-client-urls (defaulted from --listen-client-urls)";
const FLAG_LISTEN_PEER: &str = "--listen-peer-urls";
const FLAG_ADVERTISE_PEER: &str = "--initial-advertise-peer-urls";
const FLAG_ADVERTISE_PEER_DEFAULT: &str =
    "--initial-advertise-peer-urls (defaulted from --listen-peer-urls)";
const FLAG_INITIAL_CLUSTER: &str = "--initial-cluster";
const FLAG_LISTEN_METRICS: &str = "--listen-metrics-urls";
const FLAG_PEER_DIAL_MAP: &str = "--peer-dial-map";

/// The flags of `corral serve`. Every flag can also be given as an environment variable
/// `CORRAL_<FLAG_IN_UPPER_SNAKE_CASE>` (e.g. `CORRAL_INITIAL_CLUSTER`); a flag on the command
/// line wins over the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Human-readable name of this member; must match its entry in --initial-cluster.
    #[arg(long, env = "CORRAL_NAME", default_value = "default")]
    pub name: String,

    /// Directory for the Raft log, snapshots and the key-value store.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./corral.data")]
    pub data_dir: PathBuf,

    /// Comma-separated http://IP:port URLs to serve clients on (the etcd v3 gRPC API). Hosts
    /// must be IP addresses or localhost; use 0.0.0.0 for all interfaces.
    #[arg(
        long,
        env = "CORRAL_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379",
        value_name = "URLS"
    )]
    pub listen_client_urls: String,

    /// Comma-separated client URLs announced to the cluster and to clients (DNS names allowed).
    /// Defaults to --listen-client-urls, which must then not be 0.0.0.0.
    #[arg(long, env = "CORRAL_ADVERTISE_CLIENT_URLS", value_name = "URLS")]
    pub advertise_client_urls: Option<String>,

    /// http://IP:port URL to serve Raft traffic from other members on. Only one URL is
    /// supported for now.
    #[arg(
        long,
        env = "CORRAL_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        value_name = "URLS"
    )]
    pub listen_peer_urls: String,

    /// Comma-separated peer URLs other members dial to reach this one (DNS names allowed).
    /// Defaults to --listen-peer-urls. Must match this member's entry in --initial-cluster.
    #[arg(long, env = "CORRAL_INITIAL_ADVERTISE_PEER_URLS", value_name = "URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Initial members as name=url,name=url,... (repeat a name to give it several URLs).
    /// Defaults to <--name>=<--initial-advertise-peer-urls>, a cluster of one.
    #[arg(long, env = "CORRAL_INITIAL_CLUSTER", value_name = "NAME=URL,...")]
    pub initial_cluster: Option<String>,

    /// "new" to bootstrap a cluster from --initial-cluster, "existing" to join a running one.
    #[arg(long, env = "CORRAL_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,

    /// Token mixed into member and cluster ids, so that two clusters bootstrapped from the
    /// same member names and URLs still get different ids and refuse each other's traffic.
    #[arg(
        long,
        env = "CORRAL_INITIAL_CLUSTER_TOKEN",
        default_value = "corral-cluster"
    )]
    pub initial_cluster_token: String,

    /// http://IP:port URL for /metrics and health endpoints; empty to disable.
    #[arg(
        long,
        env = "CORRAL_LISTEN_METRICS_URLS",
        default_value = "http://127.0.0.1:2381",
        value_name = "URL"
    )]
    pub listen_metrics_urls: String,

    /// Milliseconds between leader heartbeats (etcd's --heartbeat-interval).
    #[arg(
        long,
        env = "CORRAL_HEARTBEAT_INTERVAL",
        default_value_t = 100,
        value_name = "MS"
    )]
    pub heartbeat_interval: u64,

    /// Milliseconds without a heartbeat before a follower calls an election; the actual timeout
    /// is randomized between this and twice this. At least 5 × --heartbeat-interval.
    #[arg(
        long,
        env = "CORRAL_ELECTION_TIMEOUT",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub election_timeout: u64,

    /// Raft log entries applied between two snapshots, after which older entries are purged.
    #[arg(long, env = "CORRAL_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// Log entries kept behind a snapshot when the log is compacted, so a follower that lags
    /// by fewer than this catches up from the log instead of a whole snapshot (etcd's flag).
    #[arg(long, env = "CORRAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5_000)]
    pub snapshot_catchup_entries: u64,

    /// A member whose --name is not in --initial-cluster joins the running cluster as a
    /// learner by itself (no `member add`): for a sidecar StatefulSet scaled beyond its
    /// voters. Learners replicate everything and serve reads and watches locally.
    #[arg(
        long,
        env = "CORRAL_AUTO_LEARNER",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub auto_learner: bool,

    /// Space quota in bytes for the key-value store (keys, values, history, leases). Past it
    /// a NOSPACE alarm is raised and writes fail with "etcdserver: mvcc: database space
    /// exceeded" until space is freed (compact, delete) and the alarm is cleared
    /// (`alarm disarm`). 0 means the default, 2 GiB (etcd's).
    #[arg(
        long,
        env = "CORRAL_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        value_name = "BYTES"
    )]
    pub quota_backend_bytes: u64,

    /// How often an idle watcher that asked for progress notifications gets one
    /// (`500ms`, `30s`, `10m`; etcd's default is 10 minutes).
    #[arg(
        long,
        env = "CORRAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub watch_progress_notify_interval: std::time::Duration,

    /// Applied batches the watch hub keeps for streams that are momentarily behind; a stream
    /// further behind reads stored history instead. Tests shrink it to exercise that path.
    #[arg(long, env = "CORRAL_WATCH_BUFFER", default_value_t = 4096, hide = true)]
    pub watch_buffer: usize,

    /// Shortest znode session timeout granted, milliseconds (ZooKeeper: 2 ticks of 2 s).
    #[arg(
        long,
        env = "CORRAL_MIN_SESSION_TIMEOUT",
        default_value_t = 4000,
        value_name = "MS"
    )]
    pub min_session_timeout: u64,

    /// Longest znode session timeout granted, milliseconds (ZooKeeper: 20 ticks of 2 s).
    #[arg(
        long,
        env = "CORRAL_MAX_SESSION_TIMEOUT",
        default_value_t = 40_000,
        value_name = "MS"
    )]
    pub max_session_timeout: u64,

    /// Log output format.
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Dial member NAME at URL instead of its advertised peer URL, as NAME=URL,... The fault
    /// tests route every peer link through a proxy they can cut, to make real partitions.
    #[arg(
        long,
        env = "CORRAL_PEER_DIAL_MAP",
        value_name = "NAME=URL,...",
        hide = true
    )]
    pub peer_dial_map: Option<String>,
}

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 10m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration like 500ms, 30s or 10m"))?;
    if ms == 0 {
        return Err("the duration must be greater than zero".into());
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// Whether this member bootstraps a new cluster or joins an existing one.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap: the members of --initial-cluster form a new cluster together.
    New,
    /// Join: this member was added to a running cluster (`member add`) and catches up from it.
    Existing,
}

/// Format of the log lines written to stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// One member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's `--name`.
    pub name: String,
    /// Its peer URLs in the order given, normalized (see [`canonical_advertise_url`]).
    pub peer_urls: Vec<String>,
}

impl InitialMember {
    /// This member's id in a cluster with the given token; see [`member_id_for`].
    pub fn id(&self, cluster_token: &str) -> u64 {
        member_id_for(cluster_token, &self.name, &self.peer_urls)
    }
}

/// Validated `corral serve` configuration, built by [`ServeArgs::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This member's name.
    pub name: String,
    /// Where the Raft log, snapshots and key-value store live.
    pub data_dir: PathBuf,
    /// Addresses to bind the client (etcd API) service on; at least one.
    pub listen_client: Vec<SocketAddr>,
    /// Normalized client URLs announced to the cluster and clients.
    pub advertise_client_urls: Vec<String>,
    /// Address to bind the peer (Raft) service on.
    pub listen_peer: SocketAddr,
    /// Normalized peer URLs other members dial; equal (as a set) to this member's
    /// `initial_cluster` entry.
    pub advertise_peer_urls: Vec<String>,
    /// The initial members in the order first named; contains this member unless it joins as
    /// an automatic learner (see [`Config::joins`]).
    pub initial_cluster: Vec<InitialMember>,
    /// Bootstrap a new cluster or join an existing one.
    pub cluster_state: ClusterState,
    /// `--initial-cluster-token`; also Raft's cluster name.
    pub cluster_token: String,
    /// Address for metrics and health endpoints; `None` when disabled.
    pub listen_metrics: Option<SocketAddr>,
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Minimum election timeout, milliseconds (the maximum is twice this).
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// Log entries kept behind a snapshot when the log is purged.
    pub snapshot_catchup_entries: u64,
    /// Join the running cluster as a learner when not named in `initial_cluster`.
    pub auto_learner: bool,
    /// Space quota of the key-value store, bytes (never 0: the default is applied).
    pub quota_backend_bytes: u64,
    /// Period of progress notifications to idle watchers that asked for them.
    pub watch_progress_notify_interval: std::time::Duration,
    /// Capacity of the watch hub's ring of applied batches.
    pub watch_buffer: usize,
    /// Bounds a requested session timeout is negotiated into, milliseconds.
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
    /// Log output format.
    pub log_format: LogFormat,
    /// Member name → the URL to dial it at instead of its advertised peer URL (test hook;
    /// empty in production).
    pub peer_dial_map: BTreeMap<String, String>,
    /// This member's Raft node id, see [`member_id_for`].
    pub member_id: u64,
    /// The cluster id derived from the initial members, see [`cluster_id_for`]. With
    /// `--initial-cluster-state existing` the initial cluster lists the members at the time of
    /// joining, so this is only this member's local view: the running cluster's id (from its
    /// bootstrap) is authoritative.
    pub cluster_id: u64,
}

/// Why a URL given to a flag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("expected http://host:port")]
    NotHostPort,
    #[error("TLS is not supported yet; use http://")]
    Tls,
    #[error("scheme {0:?} is not supported; use http://")]
    Scheme(String),
    #[error("a path, query, fragment or user info is not allowed; expected http://host:port")]
    Extra,
    #[error("the host is missing; expected http://host:port")]
    NoHost,
    #[error("the port is missing; expected http://host:port")]
    NoPort,
    #[error("port {0:?} is not a number from 0 to 65535")]
    BadPort(String),
    #[error("IPv6 addresses must be in brackets, e.g. http://[::1]:2379")]
    UnbracketedIpv6,
    #[error("{0:?} is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("{0:?} is neither an IPv4 address nor a valid DNS name")]
    BadHost(String),
    #[error(
        "the host of a listen URL must be an IP address or localhost, not {0:?} \
         (use 0.0.0.0 to listen on all interfaces)"
    )]
    ListenHostNotIp(String),
    #[error(
        "{0} means \"all interfaces\" and cannot be dialed by others; \
         advertise an address they can reach"
    )]
    Unspecified(IpAddr),
    #[error("port 0 cannot be dialed; advertise the real port")]
    PortZero,
}

/// A `corral serve` flag that was refused. Messages name the flag and are complete by
/// themselves (nothing is chained as a `source`), so printing the error is enough.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--min-session-timeout ({min} ms) must be > 0 and <= --max-session-timeout ({max} ms)"
    )]
    SessionBounds { min: u64, max: u64 },
    #[error("--name must not be empty")]
    EmptyName,
    #[error(
        "--name {0:?} must not contain ',', '=' or control characters \
         (they break --initial-cluster's name=url syntax)"
    )]
    BadName(String),
    #[error("--initial-cluster-token must not be empty")]
    EmptyToken,
    #[error("--initial-cluster-token must not contain control characters")]
    BadToken,
    #[error("--data-dir must not be empty")]
    EmptyDataDir,
    #[error("{flag} must be greater than 0")]
    Zero { flag: &'static str },
    #[error(
        "--election-timeout ({election_ms}ms) must be at least 5 times --heartbeat-interval \
         ({heartbeat_ms}ms), or a few delayed heartbeats would make followers depose the leader"
    )]
    ElectionTooShort { election_ms: u64, heartbeat_ms: u64 },
    #[error(
        "--election-timeout ({0}ms) must be at most 50000ms, or a crashed leader leaves the \
         cluster unavailable for too long"
    )]
    ElectionTooLong(u64),
    #[error("{flag} is empty; give at least one URL")]
    NoUrls { flag: &'static str },
    #[error("{flag}: empty entry in the comma-separated list {value:?}")]
    EmptyEntry { flag: &'static str, value: String },
    #[error("{flag}: {url:?}: {reason}")]
    Url {
        flag: &'static str,
        url: String,
        reason: UrlError,
    },
    #[error("{flag}: only one URL is supported for now, got {count}")]
    OneUrlOnly { flag: &'static str, count: usize },
    #[error("{flag}: {url} is listed twice")]
    DuplicateUrl { flag: &'static str, url: String },
    #[error("{first} and {second} both bind {addr}")]
    ListenConflict {
        addr: SocketAddr,
        first: &'static str,
        second: &'static str,
    },
    #[error("--initial-cluster: entry {entry:?} is not name=url")]
    BadClusterEntry { entry: String },
    #[error("--peer-dial-map: entry {entry:?} is not name=url")]
    BadDialMapEntry { entry: String },
    #[error("--peer-dial-map: member {name:?} is listed twice")]
    RepeatedDialMapName { name: String },
    #[error("--initial-cluster: peer URL {url} is given to both {first:?} and {second:?}")]
    DuplicatePeerUrl {
        url: String,
        first: String,
        second: String,
    },
    #[error("--initial-cluster: member {name:?} lists peer URL {url} twice")]
    RepeatedPeerUrl { name: String, url: String },
    #[error("--name {name:?} is not in --initial-cluster")]
    NameNotInCluster { name: String },
    #[error(
        "--initial-cluster: member {name:?} has URL(s) {} but --initial-advertise-peer-urls \
         says {}",
        cluster_urls.join(","),
        advertise_urls.join(",")
    )]
    PeerUrlMismatch {
        name: String,
        cluster_urls: Vec<String>,
        advertise_urls: Vec<String>,
    },
    #[error(
        "--initial-cluster: members {first:?} and {second:?} hash to the same member id \
         {id:#018x}; rename one of them"
    )]
    MemberIdCollision {
        id: u64,
        first: String,
        second: String,
    },
    /// Boxed: openraft's error is large and would bloat every `Result` returned here.
    #[error("invalid Raft configuration: {0}")]
    Raft(Box<openraft::ConfigError>),
}

impl ServeArgs {
    /// Checks every flag and derives defaults, ids and socket addresses.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if self.min_session_timeout == 0 || self.min_session_timeout > self.max_session_timeout {
            return Err(ConfigError::SessionBounds {
                min: self.min_session_timeout,
                max: self.max_session_timeout,
            });
        }
        validate_name(&self.name)?;
        let token = &self.initial_cluster_token;
        if token.is_empty() {
            return Err(ConfigError::EmptyToken);
        }
        // NUL separates the fields hashed into member ids; a token containing it could make
        // two different (token, name) pairs hash identically.
        if token.chars().any(char::is_control) {
            return Err(ConfigError::BadToken);
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        validate_timing(
            self.heartbeat_interval,
            self.election_timeout,
            self.snapshot_count,
        )?;

        let listen_client = parse_listen_list(FLAG_LISTEN_CLIENT, &self.listen_client_urls)?;
        let advertise_client_urls = match &self.advertise_client_urls {
            Some(urls) => parse_advertise_list(FLAG_ADVERTISE_CLIENT, urls)?,
            None => parse_advertise_list(FLAG_ADVERTISE_CLIENT_DEFAULT, &self.listen_client_urls)?,
        };
        let listen_peer = parse_single_listen(FLAG_LISTEN_PEER, &self.listen_peer_urls)?;
        let advertise_peer_urls = match &self.initial_advertise_peer_urls {
            Some(urls) => parse_advertise_list(FLAG_ADVERTISE_PEER, urls)?,
            None => parse_advertise_list(FLAG_ADVERTISE_PEER_DEFAULT, &self.listen_peer_urls)?,
        };
        let listen_metrics = if self.listen_metrics_urls.trim().is_empty() {
            None
        } else {
            Some(parse_single_listen(
                FLAG_LISTEN_METRICS,
                &self.listen_metrics_urls,
            )?)
        };
        check_listen_conflicts(&[
            (FLAG_LISTEN_CLIENT, &listen_client),
            (FLAG_LISTEN_PEER, &[listen_peer]),
            (FLAG_LISTEN_METRICS, listen_metrics.as_slice()),
        ])?;

        let initial_cluster = match &self.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            None => vec![InitialMember {
                name: self.name.clone(),
                peer_urls: advertise_peer_urls.clone(),
            }],
        };
        let me = match initial_cluster.iter().find(|m| m.name == self.name) {
            Some(me) => me.clone(),
            // Not a founding member: it asks the running cluster to add it as a learner.
            None if self.auto_learner => InitialMember {
                name: self.name.clone(),
                peer_urls: advertise_peer_urls.clone(),
            },
            None => {
                return Err(ConfigError::NameNotInCluster {
                    name: self.name.clone(),
                })
            }
        };
        // Like etcd: the other members dial this one at its --initial-cluster URLs, so if they
        // differ from what it advertises, the cluster either never forms or records the wrong
        // address in its membership.
        if sorted(&me.peer_urls) != sorted(&advertise_peer_urls) {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                cluster_urls: me.peer_urls.clone(),
                advertise_urls: advertise_peer_urls,
            });
        }

        let mut names_by_id: HashMap<u64, &str> = HashMap::new();
        for member in &initial_cluster {
            let id = member.id(token);
            if let Some(first) = names_by_id.insert(id, &member.name) {
                return Err(ConfigError::MemberIdCollision {
                    id,
                    first: first.to_string(),
                    second: member.name.clone(),
                });
            }
        }
        let member_id = me.id(token);
        let cluster_id = cluster_id_for(token, names_by_id.keys().copied());
        let peer_dial_map = match &self.peer_dial_map {
            Some(spec) if !spec.trim().is_empty() => parse_dial_map(spec)?,
            _ => BTreeMap::new(),
        };

        let config = Config {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            listen_client,
            advertise_client_urls,
            listen_peer,
            advertise_peer_urls,
            initial_cluster,
            cluster_state: self.initial_cluster_state,
            cluster_token: token.clone(),
            listen_metrics,
            heartbeat_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            auto_learner: self.auto_learner,
            quota_backend_bytes: match self.quota_backend_bytes {
                0 => DEFAULT_QUOTA_BACKEND_BYTES,
                n => n,
            },
            watch_progress_notify_interval: self.watch_progress_notify_interval,
            watch_buffer: self.watch_buffer.max(1),
            min_session_timeout_ms: self.min_session_timeout,
            max_session_timeout_ms: self.max_session_timeout,
            log_format: self.log_format,
            peer_dial_map,
            member_id,
            cluster_id,
        };
        // Fail at startup rather than when Raft starts, after the data dir was opened.
        config.raft_config()?;
        Ok(config)
    }
}

impl Config {
    /// Whether this member joins a running cluster instead of bootstrapping one: started with
    /// `--initial-cluster-state existing`, or an automatic learner not named in
    /// `--initial-cluster`.
    pub fn joins(&self) -> bool {
        self.cluster_state == ClusterState::Existing
            || !self.initial_cluster.iter().any(|m| m.name == self.name)
    }

    /// openraft's configuration for this member. The election timeout is randomized in
    /// `[election_timeout_ms, 2 × election_timeout_ms)` so that members rarely time out at the
    /// same moment and split the vote.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let config = openraft::Config {
            cluster_name: self.cluster_token.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms.saturating_mul(2),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_count),
            max_in_snapshot_log_to_keep: self.snapshot_catchup_entries,
            // openraft bounds each AppendEntries by the heartbeat interval; fewer entries per
            // message (each may batch up to a thousand commands) keep one within it.
            max_payload_entries: 32,
            ..openraft::Config::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Raft(Box::new(e)))
    }
}

/// A member's Raft node id: FNV-1a 64 over `token \0 name \0 url \0 url ...` with the peer
/// URLs sorted, so the order they were listed in does not matter.
///
/// Every member computes every initial member's id from the same flags, so the ids agree
/// without any exchange, and a restarted member gets its old id back. The token keeps two
/// clusters built from the same names and URLs apart. Never 0, which openraft and etcd
/// clients treat as "no member". Pass URLs normalized by [`canonical_advertise_url`] (as
/// [`Config`] holds them), or textual variants of one URL give different ids.
pub fn member_id_for(token: &str, name: &str, peer_urls: &[impl AsRef<str>]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut hash = Fnv1a::new();
    hash.write(token.as_bytes());
    hash.write(&[0]);
    hash.write(name.as_bytes());
    hash.write(&[0]);
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            hash.write(&[0]);
        }
        hash.write(url.as_bytes());
    }
    hash.finish_nonzero()
}

/// The cluster id: FNV-1a 64 over the sorted member ids (8 big-endian bytes each), then the
/// token. Never 0.
pub fn cluster_id_for(token: &str, member_ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let mut hash = Fnv1a::new();
    for id in ids {
        hash.write(&id.to_be_bytes());
    }
    hash.write(token.as_bytes());
    hash.finish_nonzero()
}

/// Normalizes an advertised URL (`http://host:port`, host an IP or DNS name): lower-case
/// scheme and host, canonical IP text, no trailing slash. Also for URLs arriving through the
/// API (e.g. `MemberAdd`), so they compare and hash like the ones from flags.
pub fn canonical_advertise_url(url: &str) -> Result<String, UrlError> {
    let parsed = parse_http_url(url)?;
    if parsed.port == 0 {
        return Err(UrlError::PortZero);
    }
    Ok(match parsed.host {
        Host::Ip(ip) if ip.is_unspecified() => return Err(UrlError::Unspecified(ip)),
        Host::Ip(ip) => format!("http://{}", SocketAddr::new(ip, parsed.port)),
        Host::Name(name) => format!("http://{name}:{}", parsed.port),
    })
}

/// Parses a listen URL into the address to bind. Port 0 (an ephemeral port) is allowed, for
/// tests that start servers side by side.
fn parse_listen_url(url: &str) -> Result<SocketAddr, UrlError> {
    let parsed = parse_http_url(url)?;
    let ip = match parsed.host {
        Host::Ip(ip) => ip,
        // Only localhost is resolved: binding a name that resolves to several or changing
        // addresses would be ambiguous. IPv4 because that is what etcd's default URLs use.
        Host::Name(name) if name == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Host::Name(name) => return Err(UrlError::ListenHostNotIp(name)),
    };
    Ok(SocketAddr::new(ip, parsed.port))
}

enum Host {
    Ip(IpAddr),
    /// Lower-cased DNS name.
    Name(String),
}

struct HttpUrl {
    host: Host,
    port: u16,
}

/// `http://host:port[/]`, host an IPv4 address, a bracketed IPv6 address or a DNS name.
fn parse_http_url(url: &str) -> Result<HttpUrl, UrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::NotHostPort)?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(UrlError::Tls);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(UrlError::Scheme(scheme.to_string()));
    }
    // etcd tooling often writes a trailing slash; it denotes the same endpoint.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(UrlError::Extra);
    }
    if authority.is_empty() {
        return Err(UrlError::NoHost);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::BadIpv6(bracketed.to_string()))?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| UrlError::BadIpv6(ip.to_string()))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(UrlError::NoPort),
            None => return Err(UrlError::NotHostPort),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or(UrlError::NoPort)?;
        if host.contains(':') {
            return Err(UrlError::UnbracketedIpv6);
        }
        (parse_host(host)?, port)
    };
    if port.is_empty() {
        return Err(UrlError::NoPort);
    }
    // `u16::from_str` accepts a leading '+', which is not a valid URL port.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::BadPort(port.to_string()));
    }
    let port = port
        .parse()
        .map_err(|_| UrlError::BadPort(port.to_string()))?;
    Ok(HttpUrl { host, port })
}

/// An IPv4 address or a DNS name (RFC 1123 labels; an optional trailing dot).
fn parse_host(host: &str) -> Result<Host, UrlError> {
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = host.to_ascii_lowercase();
    let labels = name.strip_suffix('.').unwrap_or(&name);
    let labels_ok = labels.len() <= 253
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    // No top-level domain is all digits, so such a name is a mistyped IPv4 address
    // (e.g. 10.0.0.256), which would otherwise fail much later as a DNS lookup.
    let numeric_tld = labels
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tld {
        return Err(UrlError::BadHost(host.to_string()));
    }
    Ok(Host::Name(name))
}

/// Splits a comma-separated flag value, trimming spaces around entries.
fn split_list<'a>(flag: &'static str, value: &'a str) -> Result<Vec<&'a str>, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::NoUrls { flag });
    }
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.is_empty()) {
        return Err(ConfigError::EmptyEntry {
            flag,
            value: value.to_string(),
        });
    }
    Ok(entries)
}

fn parse_listen_list(flag: &'static str, value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    split_list(flag, value)?
        .into_iter()
        .map(|url| {
            parse_listen_url(url).map_err(|reason| ConfigError::Url {
                flag,
                url: url.to_string(),
                reason,
            })
        })
        .collect()
}

/// A listen flag that takes exactly one URL. Refusing extra URLs (rather than binding only the
/// first) avoids silently not listening where the operator asked.
fn parse_single_listen(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let addrs = parse_listen_list(flag, value)?;
    match addrs.as_slice() {
        [addr] => Ok(*addr),
        _ => Err(ConfigError::OneUrlOnly {
            flag,
            count: addrs.len(),
        }),
    }
}

fn parse_advertise_list(flag: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    let mut urls: Vec<String> = Vec::new();
    for entry in split_list(flag, value)? {
        let url = canonical_advertise_url(entry).map_err(|reason| ConfigError::Url {
            flag,
            url: entry.to_string(),
            reason,
        })?;
        if urls.contains(&url) {
            return Err(ConfigError::DuplicateUrl { flag, url });
        }
        urls.push(url);
    }
    Ok(urls)
}

/// Two listeners on one address would fail with "address in use" only once the first is
/// already serving; catch it here with the flags' names. Port 0 never conflicts (the kernel
/// picks a free port), and a wildcard address conflicts with any address of its family.
fn check_listen_conflicts(listeners: &[(&'static str, &[SocketAddr])]) -> Result<(), ConfigError> {
    let all: Vec<(&'static str, SocketAddr)> = listeners
        .iter()
        .flat_map(|(flag, addrs)| addrs.iter().map(move |addr| (*flag, *addr)))
        .filter(|(_, addr)| addr.port() != 0)
        .collect();
    for (i, (first, a)) in all.iter().enumerate() {
        for (second, b) in &all[i + 1..] {
            let same_family = a.is_ipv4() == b.is_ipv4();
            let overlap = a.ip() == b.ip()
                || (same_family && (a.ip().is_unspecified() || b.ip().is_unspecified()));
            if a.port() == b.port() && overlap {
                return Err(ConfigError::ListenConflict {
                    addr: *b,
                    first,
                    second,
                });
            }
        }
    }
    Ok(())
}

/// Parses `name=url,name=url,...`, merging repeated names into one member with several URLs.
fn parse_initial_cluster(spec: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members: Vec<InitialMember> = Vec::new();
    // Peer URL → owning member: one URL reaching two members would route Raft messages for one
    // to the other.
    let mut owners: HashMap<String, String> = HashMap::new();
    for entry in split_list(FLAG_INITIAL_CLUSTER, spec)? {
        let bad_entry = || ConfigError::BadClusterEntry {
            entry: entry.to_string(),
        };
        let (name, url) = entry.split_once('=').ok_or_else(bad_entry)?;
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() || url.is_empty() || name.chars().any(char::is_control) {
            return Err(bad_entry());
        }
        let url = canonical_advertise_url(url).map_err(|reason| ConfigError::Url {
            flag: FLAG_INITIAL_CLUSTER,
            url: url.to_string(),
            reason,
        })?;
        if let Some(owner) = owners.get(&url) {
            return Err(if owner == name {
                ConfigError::RepeatedPeerUrl {
                    name: name.to_string(),
                    url,
                }
            } else {
                ConfigError::DuplicatePeerUrl {
                    url,
                    first: owner.clone(),
                    second: name.to_string(),
                }
            });
        }
        owners.insert(url.clone(), name.to_string());
        match members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.peer_urls.push(url),
            None => members.push(InitialMember {
                name: name.to_string(),
                peer_urls: vec![url],
            }),
        }
    }
    Ok(members)
}

/// Parses `name=url,...` for `--peer-dial-map`. Names are not checked against the initial
/// cluster: a member added later may be listed too.
fn parse_dial_map(spec: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in split_list(FLAG_PEER_DIAL_MAP, spec)? {
        let bad_entry = || ConfigError::BadDialMapEntry {
            entry: entry.to_string(),
        };
        let (name, url) = entry.split_once('=').ok_or_else(bad_entry)?;
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() || url.is_empty() {
            return Err(bad_entry());
        }
        let url = canonical_advertise_url(url).map_err(|reason| ConfigError::Url {
            flag: FLAG_PEER_DIAL_MAP,
            url: url.to_string(),
            reason,
        })?;
        if map.insert(name.to_string(), url).is_some() {
            return Err(ConfigError::RepeatedDialMapName {
                name: name.to_string(),
            });
        }
    }
    Ok(map)
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::EmptyName);
    }
    // Control characters include NUL, the separator of the fields hashed into member ids.
    if name.contains([',', '=']) || name.chars().any(char::is_control) {
        return Err(ConfigError::BadName(name.to_string()));
    }
    Ok(())
}

fn validate_timing(
    heartbeat_ms: u64,
    election_ms: u64,
    snapshot_count: u64,
) -> Result<(), ConfigError> {
    for (flag, value) in [
        ("--heartbeat-interval", heartbeat_ms),
        ("--election-timeout", election_ms),
        ("--snapshot-count", snapshot_count),
    ] {
        if value == 0 {
            return Err(ConfigError::Zero { flag });
        }
    }
    if election_ms < heartbeat_ms.saturating_mul(MIN_ELECTION_TO_HEARTBEAT_RATIO) {
        return Err(ConfigError::ElectionTooShort {
            election_ms,
            heartbeat_ms,
        });
    }
    if election_ms > MAX_ELECTION_TIMEOUT_MS {
        return Err(ConfigError::ElectionTooLong(election_ms));
    }
    Ok(())
}

fn sorted(urls: &[String]) -> Vec<&str> {
    let mut urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    urls
}

/// 64-bit FNV-1a: tiny, dependency-free, and fixed forever by its spec, which matters because
/// ids derived with it are persisted and compared across members and versions.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// The hash, with 0 (reserved for "no member/cluster") mapped to 1.
    fn finish_nonzero(&self) -> u64 {
        self.0.max(1)
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// Parses flags with every `env` binding removed: the environment is process-global and
    /// tests run in parallel, so only `env_overrides_defaults_and_flags_override_env` may
    /// depend on it. (clap reads the variables when the command is built, hence the rebuild.)
    fn parse(args: &[&str]) -> ServeArgs {
        let cmd = Cli::command().mut_args(|arg| arg.env(None));
        let matches = cmd
            .try_get_matches_from(std::iter::once("corral").chain(args.iter().copied()))
            .expect("flags parse");
        Cli::from_arg_matches(&matches).expect("matches").args
    }

    fn validate(args: &[&str]) -> Result<Config, ConfigError> {
        parse(args).validate()
    }

    fn err(args: &[&str]) -> ConfigError {
        validate(args).expect_err("flags should be refused")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    const THREE: &str =
        "a=http://10.0.0.1:2380,b=http://corral-1.corral.svc:2380,c=http://[fd00::3]:2380";

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn quota_flag_sets_bytes_and_zero_means_the_default() {
        let config = validate(&["--quota-backend-bytes=262144"]).expect("valid");
        assert_eq!(config.quota_backend_bytes, 262_144);
        let config = validate(&["--quota-backend-bytes=0"]).expect("valid");
        assert_eq!(config.quota_backend_bytes, DEFAULT_QUOTA_BACKEND_BYTES);
    }

    #[test]
    fn every_flag_has_its_corral_env_var() {
        let cmd = Cli::command();
        let mut count = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let expected = format!("CORRAL_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
            count += 1;
        }
        assert_eq!(count, 22);
    }

    #[test]
    fn defaults_are_a_single_node_on_localhost() {
        let config = validate(&[]).expect("defaults are valid");
        let peer = vec!["http://127.0.0.1:2380".to_string()];
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("./corral.data"));
        assert_eq!(config.listen_client, vec![addr("127.0.0.1:2379")]);
        assert_eq!(config.advertise_client_urls, vec!["http://127.0.0.1:2379"]);
        assert_eq!(config.listen_peer, addr("127.0.0.1:2380"));
        assert_eq!(config.advertise_peer_urls, peer);
        assert_eq!(
            config.initial_cluster,
            vec![InitialMember {
                name: "default".into(),
                peer_urls: peer.clone()
            }]
        );
        assert_eq!(config.cluster_state, ClusterState::New);
        assert_eq!(config.cluster_token, "corral-cluster");
        assert_eq!(config.listen_metrics, Some(addr("127.0.0.1:2381")));
        assert_eq!(config.heartbeat_ms, 100);
        assert_eq!(config.election_timeout_ms, 1000);
        assert_eq!(config.snapshot_count, 10_000);
        assert_eq!(config.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(
            config.member_id,
            member_id_for("corral-cluster", "default", &peer)
        );
        assert_eq!(
            config.cluster_id,
            cluster_id_for("corral-cluster", [config.member_id])
        );
    }

    #[test]
    fn three_member_cluster() {
        let config = validate(&[
            "--name=b",
            "--initial-cluster",
            THREE,
            "--initial-advertise-peer-urls=http://corral-1.corral.svc:2380",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--listen-client-urls=http://0.0.0.0:2379,http://[::1]:2379",
            "--advertise-client-urls=http://corral-1.corral.svc:2379",
            "--initial-cluster-state=existing",
            "--initial-cluster-token=prod",
            "--listen-metrics-urls=",
            "--log-format=json",
        ])
        .expect("valid");
        let names: Vec<&str> = config
            .initial_cluster
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            config.initial_cluster[2].peer_urls,
            ["http://[fd00::3]:2380"]
        );
        assert_eq!(config.listen_peer, addr("0.0.0.0:2380"));
        assert_eq!(
            config.listen_client,
            [addr("0.0.0.0:2379"), addr("[::1]:2379")]
        );
        assert_eq!(
            config.advertise_client_urls,
            ["http://corral-1.corral.svc:2379"]
        );
        assert_eq!(config.cluster_state, ClusterState::Existing);
        assert_eq!(config.listen_metrics, None);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.member_id, config.initial_cluster[1].id("prod"));

        // Every member derives the same cluster id and everyone's ids from the shared flags.
        let ids: Vec<u64> = config
            .initial_cluster
            .iter()
            .map(|m| m.id("prod"))
            .collect();
        let config_a = validate(&[
            "--name=a",
            "--initial-cluster",
            THREE,
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            "--initial-cluster-token=prod",
        ])
        .expect("valid");
        assert_eq!(config_a.cluster_id, config.cluster_id);
        assert_eq!(config_a.member_id, ids[0]);
        assert_eq!(config.cluster_id, cluster_id_for("prod", ids));
    }

    #[test]
    fn repeated_name_merges_urls_and_url_order_does_not_matter() {
        let config = validate(&[
            "--name=a",
            "--initial-cluster=a=http://10.0.0.1:2380, b=http://10.0.0.2:2380 ,a=http://10.1.0.1:2380",
            "--initial-advertise-peer-urls=http://10.1.0.1:2380,http://10.0.0.1:2380",
        ])
        .expect("valid");
        assert_eq!(config.initial_cluster.len(), 2);
        assert_eq!(
            config.initial_cluster[0].peer_urls,
            ["http://10.0.0.1:2380", "http://10.1.0.1:2380"]
        );
        assert_eq!(
            config.advertise_peer_urls,
            ["http://10.1.0.1:2380", "http://10.0.0.1:2380"]
        );
        assert_eq!(
            config.member_id,
            config.initial_cluster[0].id("corral-cluster")
        );
    }

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            canonical_advertise_url("HTTP://Corral-0.Example.COM:2380/").as_deref(),
            Ok("http://corral-0.example.com:2380")
        );
        assert_eq!(
            canonical_advertise_url("http://[0:0:0:0:0:0:0:1]:2380").as_deref(),
            Ok("http://[::1]:2380")
        );
        assert_eq!(
            parse_listen_url("http://localhost:2379"),
            Ok(addr("127.0.0.1:2379"))
        );
        assert_eq!(parse_listen_url("http://[::]:0"), Ok(addr("[::]:0")));
        // The initial cluster and the advertised URLs are compared after normalization.
        validate(&[
            "--initial-cluster=default=http://LOCALHOST:2380/",
            "--initial-advertise-peer-urls=http://localhost:2380",
            "--listen-peer-urls=http://localhost:2380",
        ])
        .expect("valid");
    }

    #[test]
    fn url_errors() {
        let cases: &[(&str, UrlError)] = &[
            ("https://10.0.0.1:2379", UrlError::Tls),
            ("10.0.0.1:2379", UrlError::NotHostPort),
            ("unix://sock:1", UrlError::Scheme("unix".into())),
            ("http://10.0.0.1:2379/v3", UrlError::Extra),
            ("http://u@10.0.0.1:2379", UrlError::Extra),
            ("http://", UrlError::NoHost),
            ("http://:2379", UrlError::NoHost),
            ("http://10.0.0.1", UrlError::NoPort),
            ("http://10.0.0.1:", UrlError::NoPort),
            ("http://[::1]", UrlError::NoPort),
            ("http://10.0.0.1:65536", UrlError::BadPort("65536".into())),
            ("http://10.0.0.1:+80", UrlError::BadPort("+80".into())),
            ("http://::1:2379", UrlError::UnbracketedIpv6),
            ("http://[zz]:2379", UrlError::BadIpv6("zz".into())),
            (
                "http://10.0.0.256:2379",
                UrlError::BadHost("10.0.0.256".into()),
            ),
            ("http://a_b:2379", UrlError::BadHost("a_b".into())),
            ("http://-a.b:2379", UrlError::BadHost("-a.b".into())),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_http_url(url).err().as_ref(), Some(expected), "{url}");
        }
        assert_eq!(
            parse_listen_url("http://corral-0.svc:2379"),
            Err(UrlError::ListenHostNotIp("corral-0.svc".into()))
        );
        assert_eq!(
            canonical_advertise_url("http://0.0.0.0:2379"),
            Err(UrlError::Unspecified(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
        );
        assert_eq!(
            canonical_advertise_url("http://10.0.0.1:0"),
            Err(UrlError::PortZero)
        );
    }

    #[test]
    fn tls_is_refused_with_the_flag_named() {
        let e = err(&["--listen-client-urls=https://127.0.0.1:2379"]);
        assert_eq!(
            e,
            ConfigError::Url {
                flag: FLAG_LISTEN_CLIENT,
                url: "https://127.0.0.1:2379".into(),
                reason: UrlError::Tls
            }
        );
        assert!(e.to_string().contains("TLS is not supported yet"), "{e}");
    }

    #[test]
    fn bad_initial_cluster_entries() {
        for entry in ["x", "=http://10.0.0.1:2380", "a="] {
            let e = err(&["--initial-cluster", entry]);
            assert_eq!(
                e,
                ConfigError::BadClusterEntry {
                    entry: entry.into()
                }
            );
            assert_eq!(
                e.to_string(),
                format!("--initial-cluster: entry \"{entry}\" is not name=url")
            );
        }
        assert!(matches!(
            err(&["--initial-cluster=default=http://127.0.0.1:2380,"]),
            ConfigError::EmptyEntry {
                flag: FLAG_INITIAL_CLUSTER,
                ..
            }
        ));
        assert!(matches!(
            err(&["--initial-cluster=default=https://127.0.0.1:2380"]),
            ConfigError::Url {
                flag: FLAG_INITIAL_CLUSTER,
                reason: UrlError::Tls,
                ..
            }
        ));
    }

    #[test]
    fn peer_dial_map() {
        assert_eq!(validate(&[]).expect("valid").peer_dial_map, BTreeMap::new());
        assert_eq!(
            validate(&["--peer-dial-map="])
                .expect("valid")
                .peer_dial_map,
            BTreeMap::new()
        );
        let config =
            validate(&["--peer-dial-map=b=http://127.0.0.1:7001/, c = HTTP://LOCALHOST:7002"])
                .expect("valid");
        assert_eq!(
            config.peer_dial_map,
            BTreeMap::from([
                ("b".to_string(), "http://127.0.0.1:7001".to_string()),
                ("c".to_string(), "http://localhost:7002".to_string()),
            ])
        );
        for entry in ["b", "=http://127.0.0.1:7001", "b="] {
            assert_eq!(
                err(&["--peer-dial-map", entry]),
                ConfigError::BadDialMapEntry {
                    entry: entry.into()
                }
            );
        }
        assert_eq!(
            err(&["--peer-dial-map=b=http://127.0.0.1:1,b=http://127.0.0.1:2"]),
            ConfigError::RepeatedDialMapName { name: "b".into() }
        );
        assert!(matches!(
            err(&["--peer-dial-map=b=https://127.0.0.1:1"]),
            ConfigError::Url {
                flag: FLAG_PEER_DIAL_MAP,
                reason: UrlError::Tls,
                ..
            }
        ));
        // A test hook: not in --help.
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some("peer-dial-map"))
            .expect("flag");
        assert!(arg.is_hide_set());
    }

    #[test]
    fn name_must_be_in_initial_cluster() {
        let e = err(&["--name=a", "--initial-cluster=b=http://127.0.0.1:2380"]);
        assert_eq!(e, ConfigError::NameNotInCluster { name: "a".into() });
        assert_eq!(e.to_string(), "--name \"a\" is not in --initial-cluster");
    }

    #[test]
    fn advertised_peer_urls_must_match_initial_cluster() {
        let e = err(&[
            "--name=a",
            "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
            "--initial-advertise-peer-urls=http://10.0.0.9:2380",
        ]);
        assert_eq!(
            e.to_string(),
            "--initial-cluster: member \"a\" has URL(s) http://10.0.0.1:2380 but \
             --initial-advertise-peer-urls says http://10.0.0.9:2380"
        );
        // A subset is not enough: the others would dial a URL this member never announced.
        assert!(matches!(
            err(&[
                "--name=a",
                "--initial-cluster=a=http://10.0.0.1:2380,a=http://10.1.0.1:2380",
                "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            ]),
            ConfigError::PeerUrlMismatch { .. }
        ));
        // Left unset, the advertised URLs default to the listen URL, like etcd.
        assert!(matches!(
            err(&["--name=a", "--initial-cluster=a=http://10.0.0.1:2380"]),
            ConfigError::PeerUrlMismatch { .. }
        ));
    }

    #[test]
    fn peer_urls_must_be_unique() {
        assert_eq!(
            err(&["--initial-cluster=default=http://127.0.0.1:2380,b=http://127.0.0.1:2380/"]),
            ConfigError::DuplicatePeerUrl {
                url: "http://127.0.0.1:2380".into(),
                first: "default".into(),
                second: "b".into()
            }
        );
        assert_eq!(
            err(&["--initial-cluster=default=http://127.0.0.1:2380,default=http://127.0.0.1:2380"]),
            ConfigError::RepeatedPeerUrl {
                name: "default".into(),
                url: "http://127.0.0.1:2380".into()
            }
        );
        assert!(matches!(
            err(&["--advertise-client-urls=http://a:1,http://A:1"]),
            ConfigError::DuplicateUrl {
                flag: FLAG_ADVERTISE_CLIENT,
                ..
            }
        ));
    }

    #[test]
    fn election_timeout_rules() {
        let e = err(&["--heartbeat-interval=300", "--election-timeout=1000"]);
        assert_eq!(
            e,
            ConfigError::ElectionTooShort {
                election_ms: 1000,
                heartbeat_ms: 300
            }
        );
        assert!(e
            .to_string()
            .contains("at least 5 times --heartbeat-interval"));
        // Exactly 5× is allowed, as in etcd.
        validate(&["--heartbeat-interval=200", "--election-timeout=1000"]).expect("valid");
        assert_eq!(
            err(&["--heartbeat-interval=1000", "--election-timeout=50001"]),
            ConfigError::ElectionTooLong(50_001)
        );
        assert!(matches!(
            err(&["--heartbeat-interval=18446744073709551615"]),
            ConfigError::ElectionTooShort { .. }
        ));
    }

    #[test]
    fn zero_and_empty_values() {
        for (flag, arg) in [
            ("--heartbeat-interval", "--heartbeat-interval=0"),
            ("--election-timeout", "--election-timeout=0"),
            ("--snapshot-count", "--snapshot-count=0"),
        ] {
            let e = err(&[arg]);
            assert_eq!(e, ConfigError::Zero { flag });
            assert_eq!(e.to_string(), format!("{flag} must be greater than 0"));
        }
        assert_eq!(err(&["--name="]), ConfigError::EmptyName);
        assert_eq!(err(&["--name=a=b"]), ConfigError::BadName("a=b".into()));
        assert_eq!(err(&["--initial-cluster-token="]), ConfigError::EmptyToken);
        assert_eq!(
            err(&["--initial-cluster-token=a\0b"]),
            ConfigError::BadToken
        );
        // clap's PathBuf parser already refuses an empty --data-dir; validate() must too, for
        // ServeArgs built in code.
        let mut args = parse(&[]);
        args.data_dir = PathBuf::new();
        assert_eq!(args.validate(), Err(ConfigError::EmptyDataDir));
        assert_eq!(
            err(&["--listen-client-urls= "]),
            ConfigError::NoUrls {
                flag: FLAG_LISTEN_CLIENT
            }
        );
        assert_eq!(
            err(&["--advertise-client-urls="]),
            ConfigError::NoUrls {
                flag: FLAG_ADVERTISE_CLIENT
            }
        );
    }

    #[test]
    fn listen_and_advertise_errors() {
        // Listening on all interfaces requires saying what to advertise.
        let e = err(&["--listen-client-urls=http://0.0.0.0:2379"]);
        assert!(matches!(
            e,
            ConfigError::Url {
                flag: FLAG_ADVERTISE_CLIENT_DEFAULT,
                reason: UrlError::Unspecified(_),
                ..
            }
        ));
        assert!(e.to_string().contains("--advertise-client-urls"), "{e}");
        assert!(matches!(
            err(&["--listen-peer-urls=http://[::]:2380"]),
            ConfigError::Url {
                flag: FLAG_ADVERTISE_PEER_DEFAULT,
                ..
            }
        ));
        assert!(matches!(
            err(&["--listen-peer-urls=http://corral-0:2380"]),
            ConfigError::Url {
                flag: FLAG_LISTEN_PEER,
                reason: UrlError::ListenHostNotIp(_),
                ..
            }
        ));
        assert_eq!(
            err(&[
                "--listen-peer-urls=http://127.0.0.1:2380,http://127.0.0.2:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            ]),
            ConfigError::OneUrlOnly {
                flag: FLAG_LISTEN_PEER,
                count: 2
            }
        );
        assert_eq!(
            err(&["--listen-metrics-urls=http://127.0.0.1:2379"]),
            ConfigError::ListenConflict {
                addr: addr("127.0.0.1:2379"),
                first: FLAG_LISTEN_CLIENT,
                second: FLAG_LISTEN_METRICS
            }
        );
        assert!(matches!(
            err(&[
                "--listen-client-urls=http://0.0.0.0:2380",
                "--advertise-client-urls=http://10.0.0.1:2380",
            ]),
            ConfigError::ListenConflict { .. }
        ));
        // Ephemeral ports never conflict (tests start several servers on port 0).
        let config = validate(&[
            "--listen-client-urls=http://127.0.0.1:0",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-metrics-urls=http://127.0.0.1:0",
        ])
        .expect("valid");
        assert_eq!(config.listen_client, [addr("127.0.0.1:0")]);
    }

    #[test]
    fn unknown_enum_values_are_refused_by_clap() {
        let cmd = || Cli::command().mut_args(|arg| arg.env(None));
        assert!(cmd()
            .try_get_matches_from(["corral", "--initial-cluster-state=joining"])
            .is_err());
        assert!(cmd()
            .try_get_matches_from(["corral", "--log-format=xml"])
            .is_err());
    }

    /// The only test that touches the environment (see [`parse`]).
    #[test]
    fn env_overrides_defaults_and_flags_override_env() {
        const VARS: [(&str, &str); 4] = [
            ("CORRAL_SNAPSHOT_COUNT", "777"),
            ("CORRAL_LOG_FORMAT", "json"),
            ("CORRAL_LISTEN_METRICS_URLS", ""),
            ("CORRAL_INITIAL_CLUSTER_TOKEN", "from-env"),
        ];
        /// Removes the variables even when an assertion fails.
        struct Unset;
        impl Drop for Unset {
            fn drop(&mut self) {
                for (name, _) in VARS {
                    std::env::remove_var(name);
                }
            }
        }
        let _unset = Unset;
        for (name, value) in VARS {
            std::env::set_var(name, value);
        }
        let cli = Cli::try_parse_from(["corral", "--initial-cluster-token=from-flag"])
            .expect("flags parse");
        let config = cli.args.validate().expect("valid");
        assert_eq!(config.snapshot_count, 777);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.listen_metrics, None);
        assert_eq!(config.cluster_token, "from-flag");
    }

    #[test]
    fn raft_config_follows_flags() {
        let config = validate(&[
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--snapshot-count=42",
            "--initial-cluster-token=t",
        ])
        .expect("valid");
        let raft = config.raft_config().expect("valid raft config");
        assert_eq!(raft.cluster_name, "t");
        assert_eq!(raft.heartbeat_interval, 50);
        assert_eq!(raft.election_timeout_min, 500);
        assert_eq!(raft.election_timeout_max, 1000);
        assert_eq!(
            raft.snapshot_policy,
            openraft::SnapshotPolicy::LogsSinceLast(42)
        );
        assert_eq!(raft.max_in_snapshot_log_to_keep, 5000);

        // openraft's own checks still apply to a hand-built Config.
        let bad = Config {
            heartbeat_ms: 500,
            ..config
        };
        assert!(matches!(bad.raft_config(), Err(ConfigError::Raft(_))));
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv1a::new();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn ids_are_stable_distinct_and_nonzero() {
        let urls = ["http://10.0.0.1:2380", "http://10.1.0.1:2380"];
        let id = member_id_for("t", "a", &urls);
        // Pinned: ids are persisted in the Raft log and membership, so the scheme must never
        // change silently.
        assert_eq!(id, PINNED_MEMBER_ID);
        assert_eq!(cluster_id_for("t", [id, 1]), PINNED_CLUSTER_ID);

        assert_eq!(member_id_for("t", "a", &[urls[1], urls[0]]), id);
        assert_ne!(member_id_for("u", "a", &urls), id);
        assert_ne!(member_id_for("t", "b", &urls), id);
        assert_ne!(member_id_for("t", "a", &urls[..1]), id);
        // The separators keep field boundaries apart.
        assert_ne!(
            member_id_for("ab", "c", &["http://x:1"]),
            member_id_for("a", "bc", &["http://x:1"])
        );
        assert_eq!(cluster_id_for("t", [1, id]), cluster_id_for("t", [id, 1]));
        assert_ne!(cluster_id_for("t", [1, id]), cluster_id_for("u", [1, id]));

        let config = validate(&[
            "--name=b",
            "--initial-cluster",
            THREE,
            "--initial-advertise-peer-urls=http://corral-1.corral.svc:2380",
        ])
        .expect("valid");
        let mut ids: Vec<u64> = config
            .initial_cluster
            .iter()
            .map(|m| m.id(&config.cluster_token))
            .collect();
        assert!(ids.iter().all(|&id| id != 0));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert_ne!(config.cluster_id, 0);
        // Restarting with the same flags yields the same ids.
        let again = validate(&[
            "--name=b",
            "--initial-cluster",
            THREE,
            "--initial-advertise-peer-urls=http://corral-1.corral.svc:2380",
        ])
        .expect("valid");
        assert_eq!(
            (again.member_id, again.cluster_id),
            (config.member_id, config.cluster_id)
        );
    }

    /// Computed independently (Python) from the scheme in [`member_id_for`].
    const PINNED_MEMBER_ID: u64 = 0xf874_d112_99bd_16a7;
    const PINNED_CLUSTER_ID: u64 = 0xff4a_b3cd_7c9a_2844;
}
