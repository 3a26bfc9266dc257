//! The `corral` binary: `corral serve` runs a member; every other subcommand is a client
//! (`corral::cli`).

use clap::{Parser, Subcommand};
use corral::config::{LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "A coordination service: etcd's v3 API, Raft-replicated"
)]
struct Cli {
    /// Client options given before the subcommand (`corral --endpoints ... ls /`).
    #[command(flatten)]
    client: corral::cli::conn::ZkGlobals,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a member. With no flags: a single-node cluster on 127.0.0.1:2379 with data in
    /// ./corral.data.
    Serve(ServeArgs),
    /// Load generator over etcd's v3 API (drives etcd too) and the znode API: throughput and
    /// latency percentiles.
    Bench(corral::bench::BenchArgs),
    #[command(flatten)]
    Client(corral::cli::Command),
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    // Colour codes only for a terminal: in container and file logs they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `serve` keeps clap's own usage errors; the client's are one line and exit code 1.
        Err(e) if std::env::args().nth(1).as_deref() == Some("serve") => e.exit(),
        Err(e) => return corral::cli::usage_error(&e),
    };
    match cli.command {
        Cmd::Client(command) => {
            corral::cli::one_line_panics();
            corral::cli::run(&cli.client, command)
        }
        Cmd::Bench(args) => {
            corral::cli::one_line_panics();
            let json = args.json;
            let result = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(corral::bench::run(args)))
                .and_then(|report| corral::bench::print(&report, json));
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve(args) => {
            let cfg = match args.validate() {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("corral serve: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_tracing(cfg.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("corral serve: starting the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async move {
                let listeners = corral::node::Listeners::bind(&cfg).await?;
                corral::node::run(cfg, listeners, shutdown_signal()).await
            });
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("corral serve: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
