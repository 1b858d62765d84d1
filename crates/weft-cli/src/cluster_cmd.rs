//! `weft cluster ...`: the cluster API from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Connection flags shared by the cluster commands.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Controller URL.
    #[arg(
        long,
        env = "WEFT_CONTROLLER",
        default_value = "https://127.0.0.1:7001"
    )]
    pub controller: String,
    /// The cluster CA certificate (DIR/ca.pem of any controller).
    #[arg(long, env = "WEFT_CA")]
    pub ca: PathBuf,
    /// Admin user name.
    #[arg(long, short = 'u', env = "WEFT_USERNAME", default_value = "admin")]
    pub username: String,
    /// Admin password.
    #[arg(long, short = 'p', env = "WEFT_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

/// The cluster operations.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// List the members and how this controller sees them.
    List,
    /// Add a controller that waits with `--join-token` at ADDRESS.
    Add {
        address: String,
        /// Add as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by id.
    Remove { id: String },
    /// Hand leadership to ID (or to the best other voter).
    TransferLeadership { id: Option<String> },
    /// Make a join token for a new controller.
    JoinToken,
}

/// A logged-in API client: the one place CLI calls are made and errors printed.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    /// Logs in with a password.
    pub async fn login(
        base: &str,
        ca_pem: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let http = weft_controller::tls::http_client(ca_pem, None, Duration::from_secs(60))?;
        let mut c = ApiClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: String::new(),
        };
        let s = c
            .call(
                reqwest::Method::POST,
                "/edge/client/v1/authenticate?method=password",
                Some(json!({"username": user, "password": password})),
            )
            .await?;
        c.token = s["token"]
            .as_str()
            .context("no token in the answer")?
            .to_owned();
        Ok(c)
    }

    /// Calls the API; returns `data` or an error with code, message and request id.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.header("zt-session", &self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let e = &v["error"];
            bail!(
                "{} {}: {} (request {})",
                status.as_u16(),
                e["code"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?"),
                e["requestId"].as_str().unwrap_or("?")
            );
        }
        Ok(v["data"].clone())
    }
}

/// Runs one cluster command.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    weft_controller::tls::install_crypto_provider();
    let ca = std::fs::read_to_string(&args.ca)
        .with_context(|| format!("reading {}", args.ca.display()))?;
    let c = ApiClient::login(&args.controller, &ca, &args.username, &args.password).await?;
    let post = reqwest::Method::POST;
    match args.cmd {
        ClusterCmd::List => {
            let members = c
                .call(
                    reqwest::Method::GET,
                    "/fabric/v1/cluster/list-members",
                    None,
                )
                .await?;
            println!(
                "{:<18} {:<28} {:<6} {:<7} {:<10} {:>10} {:>8}",
                "ID", "ADDRESS", "VOTER", "LEADER", "CONNECTED", "CONTACT_MS", "APPLIED"
            );
            for m in members.as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<28} {:<6} {:<7} {:<10} {:>10} {:>8}",
                    m["id"].as_str().unwrap_or(""),
                    m["address"].as_str().unwrap_or(""),
                    m["voter"].to_string(),
                    m["leader"].to_string(),
                    m["connected"].to_string(),
                    m["lastContactMs"].to_string(),
                    m["appliedIndex"].to_string()
                );
            }
        }
        ClusterCmd::Add { address, learner } => {
            let d = c
                .call(
                    post,
                    "/fabric/v1/cluster/add-member",
                    Some(json!({"address": address, "isVoter": !learner})),
                )
                .await?;
            println!("added {}", d["id"].as_str().unwrap_or("?"));
        }
        ClusterCmd::Remove { id } => {
            c.call(
                post,
                "/fabric/v1/cluster/remove-member",
                Some(json!({"id": id})),
            )
            .await?;
            println!("removed {id}");
        }
        ClusterCmd::TransferLeadership { id } => {
            let d = c
                .call(
                    post,
                    "/fabric/v1/cluster/transfer-leadership",
                    Some(json!({"newLeaderId": id})),
                )
                .await?;
            println!("leader is now {}", d["leaderId"].as_str().unwrap_or("?"));
        }
        ClusterCmd::JoinToken => {
            let d = c.call(post, "/fabric/v1/cluster/join-token", None).await?;
            println!("{}", d["token"].as_str().unwrap_or(""));
            eprintln!("expires at {}", d["expiresAt"].as_str().unwrap_or("?"));
        }
    }
    Ok(())
}
