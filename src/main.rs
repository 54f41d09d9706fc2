//! `tandem`: argv, logging, then hand over to the subcommand. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Two Linux boxes, one redundant firewall"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node in the foreground (in the current network namespace).
    Boot(tandem::boot::BootArgs),
    /// Call one control-socket method and print its result as JSON.
    Ctl {
        /// The control socket.
        #[arg(long, default_value = "/var/lib/tandem/tandem.sock")]
        socket: PathBuf,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Method name, e.g. system.status.
        method: String,
        /// Params as JSON (default {}).
        params: Option<String>,
    },
    /// Work with config.xml files.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The two-firewall lab in network namespaces.
    Lab(tandem::lab::LabArgs),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config.xml: print findings, exit 1 on any error.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Boot(args) => {
            init_logging();
            match tandem::boot::run(args) {
                // Exit at once: the runtime's teardown (netlink and signal driver threads) can take
                // seconds, and everything that needed an orderly stop has stopped.
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("tandem boot: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Ctl {
            socket,
            timeout,
            method,
            params,
        } => {
            let params = match params.as_deref().map(serde_json::from_str).transpose() {
                Ok(p) => p.unwrap_or_else(|| serde_json::json!({})),
                Err(e) => {
                    eprintln!("tandem ctl: params are not valid JSON: {e}");
                    return ExitCode::from(2);
                }
            };
            match tandem::ctl::call(&socket, &method, params, Duration::from_secs(timeout)) {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tandem ctl {method}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => tandem::config::check_command(&file),
        Cmd::Lab(args) => {
            init_logging();
            tandem::lab::command(args)
        }
        Cmd::Version => {
            println!("tandem {}", tandem::VERSION);
            ExitCode::SUCCESS
        }
    }
}

/// Logs to stderr at `RUST_LOG`'s levels (`info` when unset): `target=level` pairs and a bare
/// default level, comma-separated (`info,tandem::actor::pfsync=debug`). `Targets`, not
/// `EnvFilter`: no span-field filters, and no regex engine in the binary (~1 MB of text that
/// every node kept resident for parsing one string at start).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let mut bad = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v
            .parse::<tracing_subscriber::filter::Targets>()
            .unwrap_or_else(|e| {
                bad = Some(format!(
                    "RUST_LOG={v:?} is not understood ({e}); logging at info"
                ));
                info_level()
            }),
        _ => info_level(),
    };
    let max = tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    // `init` bridges the `log` records of dependencies (actix, mio, netlink, rustls) and lets
    // every level through to be filtered here; at the filter's own ceiling instead, a
    // dependency's `trace!` costs one compare.
    log::set_max_level(match max {
        tracing::level_filters::LevelFilter::OFF => log::LevelFilter::Off,
        tracing::level_filters::LevelFilter::ERROR => log::LevelFilter::Error,
        tracing::level_filters::LevelFilter::WARN => log::LevelFilter::Warn,
        tracing::level_filters::LevelFilter::INFO => log::LevelFilter::Info,
        tracing::level_filters::LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
    if let Some(b) = bad {
        tracing::warn!("{b}");
    }
}

fn info_level() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
}
