//! Making an SDK client for a command: from a stored profile (`--profile`), or from
//! connection flags (`weft cluster --controller ... --ca ... -p ...`, `weft login`).

use std::time::Duration;

use anyhow::Context;
use weft_sdk::Client;

use crate::errors::{sdk, session_expired, usage};
use crate::profile::{self, Profile};

/// The global flags every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    /// The profile to use (`--profile`, `WEFT_PROFILE`).
    pub profile: String,
    /// Print each HTTP exchange to stderr (`--verbose`).
    pub verbose: bool,
}

impl Global {
    /// A client builder with `--verbose` tracing set up.
    pub fn builder(&self) -> weft_sdk::ClientBuilder {
        let b = Client::builder();
        if self.verbose {
            b.trace(|line| eprintln!("* {line}"))
        } else {
            b
        }
    }
}

/// A client resumed from a stored profile.
pub struct Connected {
    /// The client, holding the profile's session.
    pub client: Client,
    /// The profile as loaded.
    pub profile: Profile,
    /// The profile's name.
    pub name: String,
}

impl Connected {
    /// Loads the profile and resumes its session (no login: a stored profile holds a
    /// token, never a password). An expired or revoked session fails with "session
    /// expired: run weft login".
    pub async fn open(g: &Global) -> anyhow::Result<Connected> {
        let p = profile::load(&g.profile)?;
        if p.expired() {
            return Err(crate::errors::CliError::SessionExpired(None).into());
        }
        let client = g
            .builder()
            .urls(p.controllers.clone())
            .ca_pem(p.ca_pem.clone())
            .session(p.token.clone(), p.expires_at.clone())
            .connect()
            .await
            .map_err(sdk)
            .map_err(session_expired)?;
        Ok(Connected {
            client,
            profile: p,
            name: g.profile.clone(),
        })
    }

    /// Writes the session back to the profile if the SDK refreshed it, so the next
    /// command uses the new token. Best effort: a failure is only reported.
    pub fn save_session(&self) {
        let Some(s) = self.client.session() else {
            return;
        };
        if s.token == self.profile.token {
            return;
        }
        let mut p = self.profile.clone();
        p.token = s.token;
        p.expires_at = s.expires_at;
        if let Err(e) = profile::save(&self.name, &p) {
            eprintln!("warning: could not store the refreshed session: {e}");
        }
    }
}

/// Logs in with a password: the flags form of `weft cluster` and `weft login`.
pub async fn with_password(
    g: &Global,
    urls: &[String],
    ca_pem: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<Client> {
    if urls.is_empty() {
        return Err(usage("no controller URL given"));
    }
    g.builder()
        .urls(urls.iter().cloned())
        .ca_pem(ca_pem.to_owned())
        .password(username.to_owned(), password.to_owned())
        .connect()
        .await
        .map_err(sdk)
}

/// Reads a CA certificate file given on the command line.
pub fn read_ca(path: &std::path::Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read the CA file {}: {e}", path.display())))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(usage(format!(
            "{} holds no PEM certificate (use the cluster's ca.pem)",
            path.display()
        )));
    }
    Ok(pem)
}

/// A client for exactly one controller (for `weft status`' probes), sharing the
/// profile's session, with a short deadline.
pub async fn one_controller(
    g: &Global,
    p: &Profile,
    url: &str,
    token: &str,
    expires_at: Option<String>,
) -> anyhow::Result<Client> {
    g.builder()
        .urls([url.to_owned()])
        .ca_pem(p.ca_pem.clone())
        .session(token.to_owned(), expires_at)
        .call_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(sdk)
        .with_context(|| format!("reaching {url}"))
}
