//! The `weft` binary: a thin layer of argument parsing over the library crates.
//! `controller run` starts a controller; `login`, `logout` and `status` manage the stored
//! profile (controller URLs, CA, session token) that `edge ...` (the management API's
//! entities) and `cluster ...` (membership) run on, through the SDK; `enroll` trades an
//! enrollment token for an identity file; `quickstart` runs a local three-node cluster;
//! `completions` prints shell completions; `version` prints the version.
//!
//! Exit codes: 0 success, 1 the controller refused or could not be reached, 2 a usage
//! error (clap's parse errors, and the CLI's own: unknown entity type, missing profile).
#![forbid(unsafe_code)]

/// `print!` for the CLI's output: see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*)) };
}

/// `println!` for the CLI's output: see [`write_stdout`].
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

mod bodies;
mod cluster_cmd;
mod connect;
mod edge;
mod enroll_cmd;
mod errors;
mod kinds;
mod output;
mod profile;
mod progress;
mod quickstart;
mod session_cmd;
mod yaml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use weft_controller::limits::{self, Limits};
use weft_controller::{Controller, ControllerOptions, Timing};

use crate::connect::Global;

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a zero-trust overlay network")]
struct Cli {
    /// The stored profile to use (see `weft login`).
    #[arg(
        long,
        global = true,
        env = "WEFT_PROFILE",
        default_value = profile::DEFAULT_PROFILE
    )]
    profile: String,
    /// Print every HTTP exchange with the controllers to stderr.
    #[arg(long, global = true)]
    verbose: bool,
    /// The command.
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a controller.
    Controller {
        #[command(subcommand)]
        cmd: ControllerCmd,
    },
    /// Log in to a cluster and store the session in a profile (mode 0600).
    Login(session_cmd::LoginArgs),
    /// Revoke the profile's session on the cluster and remove the profile.
    Logout,
    /// Show the profile, its session and each controller (reachable, leader).
    Status(session_cmd::StatusArgs),
    /// Manage the entities: `weft edge list|show|create|update|delete <entity>`.
    Edge(edge::EdgeArgs),
    /// Inspect and change the controller cluster.
    Cluster(cluster_cmd::ClusterArgs),
    /// Enroll an identity or edge router with its enrollment token (JWT file): writes the
    /// identity file (key, certificate, CA, controller URLs), mode 0600.
    Enroll(enroll_cmd::EnrollArgs),
    /// Start a local three-controller cluster and keep it running until Ctrl-C.
    Quickstart(quickstart::QuickstartArgs),
    /// Print a shell completion script: `weft completions bash > /etc/bash_completion.d/weft`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ControllerCmd {
    /// Run a controller node (see `weft controller run --help`).
    Run(RunArgs),
}

/// Flags of `weft controller run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Directory for this node's data (raft log, state, certificates, keys).
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (HTTPS: REST API and peer RPC).
    #[arg(long, env = "WEFT_LISTEN")]
    pub listen: SocketAddr,
    /// URL others use to reach this node (default: https:// + listen address).
    #[arg(long, env = "WEFT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Create a new cluster (only on an empty data dir; ignored otherwise).
    #[arg(long)]
    pub bootstrap: bool,
    /// URL of a member to ask for admission (with --join-token).
    #[arg(long)]
    pub join: Option<String>,
    /// Join token from `weft cluster join-token`.
    #[arg(long, env = "WEFT_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// Admin user name created at bootstrap.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,
    /// Admin password at bootstrap (default: generated and written to DIR/admin-password).
    #[arg(long, env = "WEFT_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Session token lifetime in seconds.
    #[arg(long, default_value_t = 1800)]
    pub session_ttl_secs: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Minimum raft election timeout in milliseconds (the maximum is twice this).
    #[arg(long, default_value_t = 200)]
    pub election_timeout_ms: u64,
    /// How long a write waits for an election before answering 503 CLUSTER_NO_LEADER.
    #[arg(long, default_value_t = 2000)]
    pub election_wait_ms: u64,
    /// Take a snapshot (and compact the log) after at least this many entries; with a
    /// bigger state, after as many entries as the state has rows (up to
    /// --snapshot-logs-max), so snapshots cost about as much disk as the log.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// Most entries between two snapshots, however big the state (the log since the last
    /// snapshot is held in memory).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_logs_max: u64,
    /// Largest request body of the API in bytes; a bigger one is 413
    /// REQUEST_ENTITY_TOO_LARGE. (Raft traffic between controllers has its own cap.)
    #[arg(long, default_value_t = limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) in bytes; a bigger one is answered
    /// 431 with an empty body and its connection closed. At least 1024.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Most client connections open at once; more are closed as they come. (Each takes
    /// a file descriptor: keep `ulimit -n` above this plus the peer connections.)
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most connections from the other controllers of the cluster (a budget of their own,
    /// so clients cannot starve raft).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_PEER_CONNECTIONS)]
    pub max_peer_connections: usize,
    /// Most client connections from one address (an IPv6 /64 counts as one); 0: no limit.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Failed logins from one address within --login-failure-window-secs after which
    /// `authenticate` answers 429 RATE_LIMITED (with Retry-After) from there; 0: no limit.
    #[arg(long, default_value_t = limits::DEFAULT_LOGIN_FAILURES)]
    pub login_failures_per_ip: u32,
    /// The sliding window of --login-failures-per-ip, in seconds.
    #[arg(long, default_value_t = limits::DEFAULT_LOGIN_FAILURE_WINDOW_SECS)]
    pub login_failure_window_secs: u64,
}

impl RunArgs {
    /// The controller options these flags describe.
    pub fn options(&self) -> ControllerOptions {
        let mut o = ControllerOptions::new(&self.data_dir, self.listen);
        o.advertise = self.advertise.clone();
        o.bootstrap = self.bootstrap;
        o.join = self.join.clone();
        o.join_token = self.join_token.clone();
        o.admin_user = self.admin_user.clone();
        o.admin_password = self.admin_password.clone();
        o.session_ttl = Duration::from_secs(self.session_ttl_secs.max(1));
        let ms = Duration::from_millis;
        o.timing = Timing {
            heartbeat: ms(self.heartbeat_ms.max(1)),
            election_min: ms(self.election_timeout_ms.max(2)),
            election_max: ms(self.election_timeout_ms.max(2) * 2),
            contact_timeout: ms((self.election_timeout_ms * 3).max(300)),
            election_wait: ms(self.election_wait_ms),
            snapshot_logs: self.snapshot_logs.max(2),
            snapshot_logs_max: self.snapshot_logs_max,
            logs_to_keep: (self.snapshot_logs / 10).max(1),
            ..Timing::default()
        };
        o.limits = Limits {
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_peer_connections: self.max_peer_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            login_failures: self.login_failures_per_ip,
            login_failure_window: Duration::from_secs(self.login_failure_window_secs),
        };
        o
    }
}

/// Logs to stderr (`WEFT_LOG` overrides the filter): the servers log at info, client
/// commands only warnings, so their output stays what the command prints.
fn init_tracing(server: bool) {
    let default = if server { "info,openraft=warn" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    let controller = Controller::start(args.options())
        .await
        .context("starting the controller")?;
    if let Some(p) = &controller.generated_password {
        eprintln!(
            "generated admin password (also in {}): {p}",
            args.data_dir.join("admin-password").display()
        );
    }
    tracing::info!(url = %controller.url, node_id = controller.node.id(), "controller running");
    outln!(
        "weft controller {} listening on {}",
        controller.node.id(),
        controller.url
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    controller.stop().await;
    Ok(())
}

/// Writes the CLI's output to stdout. A reader that went away (`weft edge list | head`)
/// ends the program quietly with success, as SIGPIPE ends other Unix tools, instead of
/// the panic `print!` gives; any other write failure is reported with exit code 1.
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.cmd,
        Cmd::Controller { .. } | Cmd::Quickstart(_)
    ));
    weft_controller::tls::install_crypto_provider();
    let g = Global {
        profile: cli.profile,
        verbose: cli.verbose,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Controller {
                cmd: ControllerCmd::Run(args),
            } => run_controller(args).await,
            Cmd::Login(args) => session_cmd::login(&g, args).await,
            Cmd::Logout => session_cmd::logout(&g).await,
            Cmd::Status(args) => session_cmd::status(&g, args).await,
            Cmd::Edge(args) => edge::run(&g, args).await,
            Cmd::Cluster(args) => cluster_cmd::run(&g, args).await,
            Cmd::Completions { shell } => {
                // Into a buffer first: clap_complete panics on a failed write (a closed pipe).
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "weft", &mut script);
                out!("{}", String::from_utf8_lossy(&script));
                Ok(())
            }
            Cmd::Enroll(args) => enroll_cmd::run(args).await,
            Cmd::Quickstart(args) => quickstart::run(args).await,
            Cmd::Version => {
                outln!("weft {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(errors::exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec![
            "weft",
            "controller",
            "run",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:1",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map(|c| c.cmd) {
            Ok(Cmd::Controller {
                cmd: ControllerCmd::Run(args),
            }) => args,
            Ok(_) => panic!("not controller run"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn limit_flags_default_to_the_controllers_defaults_and_reach_its_options() {
        assert_eq!(run_args(&[]).options().limits, Limits::default());
        let limits = run_args(&[
            "--max-body-bytes",
            "10",
            "--max-header-bytes",
            "2048",
            "--max-connections",
            "3",
            "--max-peer-connections",
            "4",
            "--max-connections-per-ip",
            "0",
            "--login-failures-per-ip",
            "5",
            "--login-failure-window-secs",
            "7",
        ])
        .options()
        .limits;
        assert_eq!(
            limits,
            Limits {
                max_body_bytes: 10,
                max_header_bytes: 2048,
                max_connections: 3,
                max_peer_connections: 4,
                max_connections_per_ip: 0,
                login_failures: 5,
                login_failure_window: Duration::from_secs(7),
            }
        );
    }
}
