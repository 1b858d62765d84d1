//! `weft login`, `weft logout` and `weft status`: the stored profile's life.
//!
//! `login` authenticates with a password once and stores the session token (never the
//! password) in the profile; every later command resumes that session. `logout` revokes
//! it on the cluster (every controller rejects it from then on) and removes the profile.
//! `status` shows the profile, the session's expiry and each controller with whether it
//! answers and which one leads.

use std::io::BufRead;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};
use weft_sdk::Request;

use crate::connect::{self, Connected, Global};
use crate::errors::{sdk, session_expired, usage, CliError};
use crate::output::{self, Format};
use crate::profile::{self, Profile};

/// `weft login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Controller URLs (any members of the cluster; more give failover from the start).
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// The cluster CA certificate (DIR/ca.pem of any controller); copied into the profile.
    #[arg(long, env = "WEFT_CA")]
    pub ca: PathBuf,
    /// User name.
    #[arg(long, short = 'u', env = "WEFT_USERNAME", default_value = "admin")]
    pub username: String,
    /// Password (prompted for without echo when omitted; read from standard input when
    /// that is not a terminal).
    #[arg(long, short = 'p', env = "WEFT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// `weft status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// `https://h:1/` and `https://h:1` are the same controller.
fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// `first` followed by the URLs of `more` it lacks.
pub fn merge_urls(first: &[String], more: &[String]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for u in first.iter().chain(more) {
        let u = normalize(u);
        if !u.is_empty() && !all.contains(&u) {
            all.push(u);
        }
    }
    all
}

/// Runs `weft login`.
pub async fn login(g: &Global, args: LoginArgs) -> anyhow::Result<()> {
    profile::check_name(&g.profile)?;
    let ca = connect::read_ca(&args.ca)?;
    let password = match args.password {
        Some(p) => p,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            crate::edge::prompt_password(&format!("password for {}: ", args.username), "-p")?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| usage(format!("reading the password from standard input: {e}")))?;
            let p = line.trim_end_matches(['\r', '\n']).to_owned();
            if p.is_empty() {
                return Err(usage("no password: give -p or pipe it on standard input"));
            }
            p
        }
    };
    let urls: Vec<String> = args.urls.iter().map(|u| normalize(u)).collect();
    let client = connect::with_password(g, &urls, &ca, &args.username, &password).await?;
    let session = client.session().ok_or_else(|| {
        anyhow::anyhow!("the controller answered the login without a session token")
    })?;
    let p = Profile {
        controllers: merge_urls(&urls, &client.controllers()),
        ca_pem: ca,
        username: args.username.clone(),
        token: session.token,
        expires_at: session.expires_at,
    };
    let path = profile::save(&g.profile, &p)?;
    outln!(
        "logged in as {} ({} controller{}); profile {:?} saved to {}",
        args.username,
        p.controllers.len(),
        if p.controllers.len() == 1 { "" } else { "s" },
        g.profile,
        path.display()
    );
    Ok(())
}

/// Runs `weft logout`.
pub async fn logout(g: &Global) -> anyhow::Result<()> {
    let revoked = match Connected::open(g).await {
        Ok(conn) => conn
            .client
            .logout()
            .await
            .map_err(sdk)
            .map_err(session_expired)
            .map(|()| true),
        Err(e) => Err(e),
    };
    match revoked {
        Ok(_) => {}
        // Nothing left to revoke: still forget the profile.
        Err(e)
            if matches!(
                e.downcast_ref::<CliError>(),
                Some(CliError::SessionExpired(_))
            ) =>
        {
            eprintln!("the session had already ended");
        }
        Err(e) => return Err(e),
    }
    profile::remove(&g.profile)?;
    outln!("logged out; profile {:?} removed", g.profile);
    Ok(())
}

/// What `weft status` learns about one controller.
fn probe_row(url: &str, health: Option<&Value>) -> Value {
    match health {
        Some(h) => json!({
            "url": url,
            "reachable": true,
            "nodeId": h["nodeId"],
            "role": h["role"],
            "leader": h["role"] == "leader",
            "leaderId": h["leaderId"],
            "inQuorum": h["inQuorum"],
        }),
        None => json!({"url": url, "reachable": false, "leader": false}),
    }
}

/// Runs `weft status`.
pub async fn status(g: &Global, args: StatusArgs) -> anyhow::Result<()> {
    let conn = Connected::open(g).await?;
    let identity = conn
        .client
        .show("/edge/client/v1/current-api-session")
        .await
        .map_err(sdk)
        .map_err(session_expired)?;
    let session = conn.client.session();
    let (token, expires_at) = match &session {
        Some(s) => (s.token.clone(), s.expires_at.clone()),
        None => (conn.profile.token.clone(), conn.profile.expires_at.clone()),
    };
    let urls = merge_urls(&conn.profile.controllers, &conn.client.controllers());
    let mut probes = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let (g, p, url, token, exp) = (
            g.clone(),
            conn.profile.clone(),
            url.clone(),
            token.clone(),
            expires_at.clone(),
        );
        probes.spawn(async move {
            let health = match connect::one_controller(&g, &p, &url, &token, exp).await {
                // Only this controller's own answer counts (the client may have failed
                // over to another member it learned of).
                Ok(c) => c
                    .send(Request::get("/health-checks"))
                    .await
                    .ok()
                    .filter(|r| normalize(&r.controller) == url)
                    .map(|r| r.data().clone()),
                Err(_) => None,
            };
            (i, probe_row(&url, health.as_ref()))
        });
    }
    let mut rows = vec![Value::Null; urls.len()];
    while let Some(joined) = probes.join_next().await {
        if let Ok((i, row)) = joined {
            if let Some(slot) = rows.get_mut(i) {
                *slot = row;
            }
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        if row.is_null() {
            *row = probe_row(&urls[i], None);
        }
    }
    conn.save_session();
    let doc = json!({
        "profile": conn.name,
        "username": conn.profile.username,
        "identityId": identity["identity"],
        "isAdmin": identity["isAdmin"],
        "expiresAt": expires_at,
        "controllers": rows,
    });
    if args.output != Format::Table {
        out!("{}", output::document(&doc, args.output));
        return Ok(());
    }
    let path = profile::path(&conn.name)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    outln!("profile:  {} ({path})", conn.name);
    outln!(
        "user:     {}{}",
        conn.profile.username,
        if identity["isAdmin"] == true {
            " (admin)"
        } else {
            ""
        }
    );
    outln!(
        "session:  expires {}",
        expires_at.as_deref().unwrap_or("(unknown)")
    );
    outln!();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                output::cell(&r["url"]),
                if r["reachable"] == true { "yes" } else { "no" }.to_owned(),
                output::cell(&r["nodeId"]),
                output::cell(&r["role"]),
                if r["leader"] == true { "*" } else { "" }.to_owned(),
            ]
        })
        .collect();
    out!(
        "{}",
        output::table(
            &["CONTROLLER", "REACHABLE", "NODE", "ROLE", "LEADER"],
            &table_rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_merge_without_duplicates_keeping_the_given_order() {
        let given = vec!["https://b:1/".to_owned(), "https://a:1".to_owned()];
        let known = vec![
            "https://a:1".to_owned(),
            "https://c:1".to_owned(),
            "https://b:1".to_owned(),
        ];
        assert_eq!(
            merge_urls(&given, &known),
            vec!["https://b:1", "https://a:1", "https://c:1"]
        );
    }

    #[test]
    fn probes_mark_the_leader() {
        let h = json!({"nodeId": "n1", "role": "leader", "inQuorum": true});
        assert_eq!(probe_row("u", Some(&h))["leader"], true);
        let f = json!({"nodeId": "n2", "role": "follower"});
        assert_eq!(probe_row("u", Some(&f))["leader"], false);
        assert_eq!(probe_row("u", None)["reachable"], false);
    }
}
