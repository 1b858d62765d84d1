//! `weft cluster ...`: the cluster API from the command line, through the SDK (so it
//! fails over between controllers like every other command).
//!
//! It runs on the stored profile (`weft login`), or on connection flags
//! (`--controller URL --ca FILE -u USER -p PASSWORD`, for scripts and for the first steps
//! of a cluster, before anyone logged in): giving any of `--controller`, `--ca` or
//! `--password` selects the flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use weft_sdk::Client;

use crate::connect::{self, Connected, Global};
use crate::errors::{sdk, session_expired, usage};
use crate::output::{self, Format};

/// Where the flags form connects when `--controller` is not given.
const DEFAULT_CONTROLLER: &str = "https://127.0.0.1:7001";

/// Connection flags shared by the cluster commands.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Controller URL (repeatable; default https://127.0.0.1:7001 when --ca or -p is
    /// given). Without --controller, --ca and -p, the stored profile is used.
    #[arg(long, env = "WEFT_CONTROLLER", value_delimiter = ',')]
    pub controller: Vec<String>,
    /// The cluster CA certificate (DIR/ca.pem of any controller).
    #[arg(long, env = "WEFT_CA")]
    pub ca: Option<PathBuf>,
    /// Admin user name.
    #[arg(long, short = 'u', env = "WEFT_USERNAME", default_value = "admin")]
    pub username: String,
    /// Admin password.
    #[arg(long, short = 'p', env = "WEFT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Output format of `list`.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// The operation.
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

/// The cluster operations.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// List the members and how the answering controller sees them.
    List,
    /// Add a controller that waits with `--join-token` at ADDRESS.
    Add {
        /// The new controller's URL.
        address: String,
        /// Add as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by id.
    Remove {
        /// The member's node id.
        id: String,
    },
    /// Hand leadership to ID (or to the best other voter).
    TransferLeadership {
        /// The new leader's node id.
        id: Option<String>,
    },
    /// Make a join token for a new controller.
    JoinToken,
}

/// A client for the cluster command: from the flags if any is given, else the profile.
async fn client(g: &Global, args: &ClusterArgs) -> anyhow::Result<(Client, Option<Connected>)> {
    let flags = !args.controller.is_empty() || args.ca.is_some() || args.password.is_some();
    if !flags {
        let conn = Connected::open(g).await?;
        return Ok((conn.client.clone(), Some(conn)));
    }
    let ca = args
        .ca
        .as_ref()
        .ok_or_else(|| usage("--ca is needed with --controller or -p (or use a profile)"))?;
    let password = args
        .password
        .as_ref()
        .ok_or_else(|| usage("-p is needed with --controller or --ca (or use a profile)"))?;
    let ca = connect::read_ca(ca)?;
    let urls = if args.controller.is_empty() {
        vec![DEFAULT_CONTROLLER.to_owned()]
    } else {
        args.controller.clone()
    };
    let c = connect::with_password(g, &urls, &ca, &args.username, password).await?;
    Ok((c, None))
}

/// Runs one cluster command.
pub async fn run(g: &Global, args: ClusterArgs) -> anyhow::Result<()> {
    let (c, conn) = client(g, &args).await?;
    let result = call(&c, &args).await;
    if let Some(conn) = &conn {
        conn.save_session();
        return result.map_err(session_expired);
    }
    // The flags form logged in just for this command: end that session.
    let _ = c.logout().await;
    result
}

async fn call(c: &Client, args: &ClusterArgs) -> anyhow::Result<()> {
    const BASE: &str = "/fabric/v1/cluster";
    match &args.cmd {
        ClusterCmd::List => {
            let members = c.show(&format!("{BASE}/list-members")).await.map_err(sdk)?;
            if args.output != Format::Table {
                out!("{}", output::document(&members, args.output));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = members
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    [
                        "id",
                        "address",
                        "voter",
                        "leader",
                        "connected",
                        "lastContactMs",
                        "appliedIndex",
                    ]
                    .iter()
                    .map(|k| output::cell(&m[*k]))
                    .collect()
                })
                .collect();
            out!(
                "{}",
                output::table(
                    &[
                        "ID",
                        "ADDRESS",
                        "VOTER",
                        "LEADER",
                        "CONNECTED",
                        "CONTACT_MS",
                        "APPLIED"
                    ],
                    &rows
                )
            );
        }
        ClusterCmd::Add { address, learner } => {
            let d = c
                .create(
                    &format!("{BASE}/add-member"),
                    json!({"address": address, "isVoter": !learner}),
                )
                .await
                .map_err(sdk)?;
            outln!("added {}", text(&d, "id"));
        }
        ClusterCmd::Remove { id } => {
            c.create(&format!("{BASE}/remove-member"), json!({ "id": id }))
                .await
                .map_err(sdk)?;
            outln!("removed {id}");
        }
        ClusterCmd::TransferLeadership { id } => {
            let d = c
                .create(
                    &format!("{BASE}/transfer-leadership"),
                    json!({ "newLeaderId": id }),
                )
                .await
                .map_err(sdk)?;
            outln!("leader is now {}", text(&d, "leaderId"));
        }
        ClusterCmd::JoinToken => {
            let d = join_token(c).await?;
            outln!("{}", text(&d, "token"));
            eprintln!("expires at {}", text(&d, "expiresAt"));
        }
    }
    Ok(())
}

/// `POST /fabric/v1/cluster/join-token`: `{token, expiresAt}` (also used by quickstart).
pub async fn join_token(c: &Client) -> anyhow::Result<Value> {
    c.create("/fabric/v1/cluster/join-token", json!({}))
        .await
        .map_err(sdk)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("?")
}
