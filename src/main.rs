//! The contact-server daemon: parse flags, load the config, bind, serve until
//! SIGINT or SIGTERM, drain, exit. Exits 64 on a configuration error.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use contact_server::{
    Config, Listeners,
    config::{ConfigError, parse_listen_addr},
    server::ServerError,
    shutdown, telemetry,
};

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a journal that cannot be opened: damaged, or held by
/// another server (EX_DATAERR). Restarting would not help.
const EXIT_JOURNAL: u8 = 65;

/// A push-task server for the gRPC Contact pattern.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; without it the built-in defaults are used.
    #[arg(long, short, env = "CONTACT_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address, as host:port, localhost:PORT or
    /// http://host:port (overrides server.grpc_addr).
    #[arg(long, env = "CONTACT_GRPC_ADDR", value_parser = parse_listen_addr)]
    grpc_addr: Option<SocketAddr>,
    /// Prometheus /metrics listen address, in the same forms (overrides
    /// server.metrics_addr).
    #[arg(long, env = "CONTACT_METRICS_ADDR", value_parser = parse_listen_addr)]
    metrics_addr: Option<SocketAddr>,
    /// The journal's directory (overrides storage.dir).
    #[arg(long, env = "CONTACT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a new random token, and the [[auth.principals]] entry (with
    /// only its hash) to paste into the config.
    Token {
        /// The principal's name.
        #[arg(long)]
        name: String,
        /// Its roles: worker, producer, admin (repeat or comma-separate).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Queues it is limited to (repeat or comma-separate); none: all.
        #[arg(long = "queue", value_delimiter = ',')]
        queues: Vec<String>,
        /// The one worker id it may act as.
        #[arg(long)]
        client_id: Option<String>,
    },
}

/// Prints a token and its config entry; the entry is checked the way the
/// daemon would check it.
fn print_token(
    name: String,
    roles: &[String],
    queues: Vec<String>,
    client_id: Option<String>,
) -> anyhow::Result<()> {
    use contact_server::auth::{Role, token};
    let roles = roles
        .iter()
        .map(|role| match role.as_str() {
            "worker" => Ok(Role::Worker),
            "producer" => Ok(Role::Producer),
            "admin" => Ok(Role::Admin),
            other => Err(anyhow::anyhow!(
                "unknown role {other:?}: worker, producer or admin"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secret = token::generate().map_err(|_| anyhow::anyhow!("no secure random source"))?;
    let mut config = Config::default();
    config
        .auth
        .principals
        .push(contact_server::config::PrincipalConfig {
            name,
            token_sha256: token::hex(&token::sha256(secret.as_bytes())),
            roles,
            queues,
            client_id,
            tls_identity: None,
        });
    config.validate()?;
    let entry = toml::to_string(&config.auth)?;
    let entry = entry
        .lines()
        .skip_while(|line| !line.starts_with("[[principals]]"))
        .map(|line| line.replace("[[principals]]", "[[auth.principals]]"))
        .collect::<Vec<_>>()
        .join("\n");
    // The token goes to the client, the entry to the server's config:
    // printed apart, so the secret is not pasted with the entry.
    println!("token: {secret}");
    println!("(for the client: `authorization: Bearer <token>`, or CONTACT_TOKEN; shown once)");
    println!();
    println!("add to the server's config (it keeps only the hash):");
    println!("{entry}");
    Ok(())
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = args.grpc_addr {
        config.server.grpc_addr = addr;
    }
    if let Some(addr) = args.metrics_addr {
        config.server.metrics_addr = addr;
    }
    if let Some(dir) = &args.data_dir {
        config.storage.dir = dir.clone();
    }
    // Again: the flags may have moved a listener off loopback.
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Token {
        name,
        roles,
        queues,
        client_id,
    }) = args.command
    {
        return match print_token(name, &roles, queues, client_id) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("contact-server token: {error:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let config = match load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("contact-server: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(&config.log.filter);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("contact-server: {error:#}");
            match error.downcast_ref::<ServerError>() {
                Some(ServerError::Journal(_)) => ExitCode::from(EXIT_JOURNAL),
                Some(ServerError::Tls(_)) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Before the server says it listens: a SIGTERM from then on drains.
    let stop_signal = shutdown::listen();
    let listeners = Listeners::bind(&config).await?;
    let server = contact_server::start(config, listeners)?;
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        stop_signal.await;
        stop.cancel();
    });
    server.wait().await.context("server stopped with an error")
}
