//! Connecting to the cluster: the global options, endpoints tried in order (failover), and
//! gRPC statuses turned into one line a person can act on.

use std::future::Future;
use std::time::Duration;

use clap::Args;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use super::output::Format;
use super::CliError;

pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";
pub const ENDPOINTS_ENV: &str = "CORRAL_ENDPOINTS";

/// Connection options, accepted before the subcommand and after it (etcdctl users write
/// them first, zkCli users after). Not clap "global" args, so that `corral serve` does not
/// grow client options; the environment is read by hand so that a flag always beats it.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// gRPC endpoints, comma-separated, tried in order until one answers
    /// [env: CORRAL_ENDPOINTS] [default: 127.0.0.1:2379]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HOST:PORT,...",
        help_heading = "Global options"
    )]
    pub endpoints: Vec<String>,
    /// Time to establish a connection to one endpoint (e.g. 2s, 500ms) [default: 2s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Global options")]
    pub dial_timeout: Option<Duration>,
    /// Time for a whole command, failovers included (watch, lock, elect and keep-alive run
    /// until interrupted: for them, the time to connect, and for keep-alive each renewal)
    /// [default: 5s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Global options")]
    pub command_timeout: Option<Duration>,
}

/// Global options of the znode commands: `--write-out` has no `-w` there, because zkCli's
/// `-w` (set a watch) is already taken.
#[derive(Args, Clone, Debug, Default)]
pub struct ZkGlobals {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format [default: simple]; table prints streams (watch events, keep-alive
    /// renewals, lock, elect) as simple lines, as etcdctl does
    #[arg(
        long = "write-out",
        value_enum,
        value_name = "FORMAT",
        help_heading = "Global options"
    )]
    pub write_out: Option<Format>,
}

/// Global options of the etcdctl-style commands, with etcdctl's `-w`.
#[derive(Args, Clone, Debug, Default)]
pub struct EtcdGlobals {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format [default: simple]; table prints streams (watch events, keep-alive
    /// renewals, lock, elect) as simple lines, as etcdctl does
    #[arg(
        short = 'w',
        long = "write-out",
        value_enum,
        value_name = "FORMAT",
        help_heading = "Global options"
    )]
    pub write_out: Option<Format>,
}

/// The resolved options of one command.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub format: Format,
}

impl Settings {
    /// Command-level options beat those before the subcommand, which beat the environment,
    /// which beats the defaults.
    pub fn resolve(
        top: &ConnArgs,
        top_format: Option<Format>,
        leaf: &ConnArgs,
        leaf_format: Option<Format>,
    ) -> Result<Settings, CliError> {
        let mut endpoints = if !leaf.endpoints.is_empty() {
            leaf.endpoints.clone()
        } else if !top.endpoints.is_empty() {
            top.endpoints.clone()
        } else if let Ok(env) = std::env::var(ENDPOINTS_ENV) {
            env.split(',').map(str::to_string).collect()
        } else {
            vec![DEFAULT_ENDPOINT.to_string()]
        };
        endpoints.retain(|e| !e.trim().is_empty());
        if endpoints.is_empty() {
            return Err(CliError::new("--endpoints: no endpoint given"));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| normalize(e.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            endpoints,
            dial_timeout: leaf
                .dial_timeout
                .or(top.dial_timeout)
                .unwrap_or(Duration::from_secs(2)),
            command_timeout: leaf
                .command_timeout
                .or(top.command_timeout)
                .unwrap_or(Duration::from_secs(5)),
            format: leaf_format.or(top_format).unwrap_or_default(),
        })
    }
}

/// `host:port` or `http://host:port` → `http://host:port`.
pub fn normalize(endpoint: &str) -> Result<String, CliError> {
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    if uri.starts_with("https://") {
        return Err(CliError::new(format!(
            "endpoint {endpoint}: TLS (https) is not supported yet; use http://"
        )));
    }
    if !uri.starts_with("http://") {
        return Err(CliError::new(format!(
            "endpoint {endpoint}: expected host:port or http://host:port"
        )));
    }
    match uri.parse::<http::Uri>() {
        Ok(u) if u.host().is_some() && u.port().is_some() => Ok(uri.trim_end_matches('/').into()),
        _ => Err(CliError::new(format!(
            "endpoint {endpoint}: expected host:port or http://host:port"
        ))),
    }
}

/// How an endpoint is shown: without the scheme, as etcdctl shows it.
pub fn display(endpoint: &str) -> &str {
    endpoint.strip_prefix("http://").unwrap_or(endpoint)
}

/// `5s`, `500ms`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 5s or 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (units: ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

/// A connection to one endpoint of the list, able to move on to the next one.
#[derive(Clone)]
pub struct Conn {
    pub channel: Channel,
    /// Index into `settings.endpoints` of the endpoint connected to.
    pub index: usize,
    pub settings: Settings,
}

impl Conn {
    /// Connects to the first endpoint that answers, trying them in order.
    pub async fn connect(settings: &Settings) -> Result<Conn, CliError> {
        Self::connect_from(settings, 0).await
    }

    /// Like [`Conn::connect`], starting at endpoint `start` and wrapping around.
    pub async fn connect_from(settings: &Settings, start: usize) -> Result<Conn, CliError> {
        let n = settings.endpoints.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let index = (start + k) % n;
            let endpoint = &settings.endpoints[index];
            match dial(endpoint, settings.dial_timeout).await {
                Ok(channel) => {
                    return Ok(Conn {
                        channel,
                        index,
                        settings: settings.clone(),
                    })
                }
                Err(e) => failures.push(format!("{}: {e}", display(endpoint))),
            }
        }
        Err(CliError::new(if n == 1 {
            format!("cannot connect to {}", failures.join("; "))
        } else {
            format!("cannot connect to any endpoint: {}", failures.join("; "))
        }))
    }

    /// The endpoint connected to, as shown to people.
    pub fn endpoint(&self) -> &str {
        display(&self.settings.endpoints[self.index])
    }

    /// Moves to the next endpoint that answers (possibly back to this one).
    pub async fn failover(&mut self) -> Result<(), CliError> {
        *self = Self::connect_from(&self.settings, self.index + 1).await?;
        Ok(())
    }

    /// One request, retried on the next endpoints when this one is unreachable. A request
    /// that changes something is retried only when it cannot have reached the server (the
    /// connection could not be made), so it never applies twice.
    pub async fn call<T, F, Fut>(&mut self, idempotent: bool, mut f: F) -> Result<T, CliError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempts = self.settings.endpoints.len();
        loop {
            match f(self.channel.clone()).await {
                Ok(v) => return Ok(v),
                Err(s) => {
                    attempts -= 1;
                    // A connection that broke mid-call surfaces as Cancelled: for a read,
                    // that is an unreachable endpoint like any other.
                    let retry = match s.code() {
                        Code::Unavailable => idempotent || never_sent(&s),
                        Code::Cancelled => idempotent,
                        _ => false,
                    } && attempts > 0;
                    if !retry || self.failover().await.is_err() {
                        return Err(CliError::from_status(&s, Some(self.endpoint())));
                    }
                }
            }
        }
    }
}

async fn dial(endpoint: &str, timeout: Duration) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| one_line(&e))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        // Streams (watch, keep-alive, the shell) notice a dead server without waiting for
        // TCP to give up.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match tokio::time::timeout(timeout, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(one_line(&e)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A status that says the connection could not be made: the request never left.
fn never_sent(s: &Status) -> bool {
    let text = one_line(s).to_ascii_lowercase();
    text.contains("connect error")
        || text.contains("connection refused")
        || text.contains("error trying to connect")
}

/// An error and its sources on one line, without repeating a source that only echoes its
/// parent.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string().replace(['\n', '\r'], " ");
        if !s.is_empty() && !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// ZooKeeper's wording (as zkCli prints it) for a znode error, from the ErrorInfo reason and
/// the status message "Reason: detail".
fn zk_message(reason: &str, message: &str) -> String {
    let detail = message
        .strip_prefix(reason)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message);
    match reason {
        "NoNode" => format!("Node does not exist: {detail}"),
        "NodeExists" => format!("Node already exists: {detail}"),
        "NotEmpty" => format!("Node not empty: {detail}"),
        // zkCli's words, with the server's detail ("/a has version 0, expected 5") kept.
        "BadVersion" => match detail.split_once(' ') {
            Some((path, rest)) => format!("version No is not valid : {path} ({rest})"),
            None => format!("version No is not valid : {detail}"),
        },
        "NoChildrenForEphemerals" => format!("Ephemerals cannot have children: {detail}"),
        "SessionExpired" => format!("Session expired: {detail}"),
        "BadArguments" => detail.to_string(),
        _ => message.to_string(),
    }
}

/// A status as one line.
pub fn status_line(s: &Status, endpoint: Option<&str>) -> String {
    if let Some(info) = s.get_details_error_info() {
        if info.domain == "corral.v1" {
            return zk_message(&info.reason, s.message()).replace(['\n', '\r'], " ");
        }
    }
    let msg = one_line(s);
    let msg = msg.strip_prefix("status: ").unwrap_or(&msg).to_string();
    match s.code() {
        Code::Unavailable => match endpoint {
            Some(ep) => format!("{ep} is unavailable: {}", s.message()),
            None => format!("unavailable: {}", s.message()),
        },
        Code::Cancelled => match endpoint {
            Some(ep) => format!("lost the connection to {ep} ({})", s.message()),
            None => format!("lost the connection ({})", s.message()),
        },
        Code::DeadlineExceeded => "request timed out".to_string(),
        _ if s.message().is_empty() => msg,
        _ => s.message().replace(['\n', '\r'], " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_or_without_scheme() {
        assert_eq!(
            normalize("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize("http://localhost:2379/").unwrap(),
            "http://localhost:2379"
        );
        assert!(normalize("https://a:1").is_err());
        assert!(normalize("localhost").is_err());
        assert!(normalize("a b:1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn znode_errors_read_like_zkcli() {
        let s = crate::api::znode::zk_status("NoNode", "NoNode: /a/b");
        assert_eq!(status_line(&s, None), "Node does not exist: /a/b");
        let s = crate::api::znode::zk_status("BadVersion", "BadVersion: /a");
        assert_eq!(status_line(&s, None), "version No is not valid : /a");
        let s = Status::not_found("etcdserver: requested lease not found");
        assert_eq!(
            status_line(&s, None),
            "etcdserver: requested lease not found"
        );
    }
}
