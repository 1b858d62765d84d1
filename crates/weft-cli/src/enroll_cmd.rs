//! `weft enroll TOKEN_FILE --out identity.json`: trades an enrollment JWT for a
//! certificate and writes the identity file (key, certificate, CA, controller URLs).
//!
//! Nothing is trusted before the cluster is authenticated: the JWT is read without
//! checking it (we hold no cluster key yet), and the token is sent only over a TLS
//! connection whose server chain holds a CA with the JWT's fingerprint (`caFp`) that
//! issued the server's certificate for its host name. The CA in the answer must have that
//! fingerprint too. The private key never leaves this machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use weft_controller::{pki, tls, tokens};

/// `weft enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The enrollment token file (the JWT an admin got when creating the enrollment).
    pub token_file: PathBuf,
    /// Where to write the identity file (created with mode 0600; never overwritten).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Host names or IPs for the certificate (routers only: the CA ignores them for
    /// identities). Repeatable.
    #[arg(long = "san")]
    pub sans: Vec<String>,
}

/// How long one controller gets for each call.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `weft enroll`.
pub async fn run(args: EnrollArgs) -> anyhow::Result<()> {
    let jwt = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let jwt = jwt.trim();
    let claims = tokens::peek_enrollment(jwt).context(
        "the token file does not hold an enrollment JWT (three base64url parts, alg EdDSA)",
    )?;
    if args.out.exists() {
        bail!(
            "{} already exists; choose another --out (an identity file is never overwritten)",
            args.out.display()
        );
    }
    let key_pem = pki::generate_key_pem()?;
    let hosts = if args.sans.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        args.sans.clone()
    };
    let csr = pki::make_csr(&key_pem, &hosts).context("making the CSR")?;
    let mut urls = claims.ctrls.clone();
    if urls.is_empty() {
        urls.push(claims.iss.clone());
    }
    let mut failures = Vec::new();
    for url in &urls {
        let url = url.trim_end_matches('/');
        match enroll_at(url, &claims, jwt, &csr).await {
            Ok(Outcome::Enrolled { cert, ca }) => {
                write_identity(&args.out, url, &urls, &key_pem, &cert, &ca)?;
                outln!(
                    "enrolled {} {}; identity written to {}",
                    if claims.em == "erott" {
                        "edge router"
                    } else {
                        "identity"
                    },
                    claims.sub,
                    args.out.display()
                );
                return Ok(());
            }
            // The cluster answered: another controller would answer the same.
            Ok(Outcome::Refused(e)) => return Err(e),
            Err(e) => failures.push(format!("{url}: {e:#}")),
        }
    }
    bail!(
        "no controller could enroll us:\n  {}",
        failures.join("\n  ")
    )
}

enum Outcome {
    Enrolled { cert: String, ca: String },
    Refused(anyhow::Error),
}

/// One attempt at one controller. `Err`: try the next one (unreachable, CA mismatch,
/// no quorum); `Refused`: a final answer about the token or the CSR.
async fn enroll_at(
    url: &str,
    claims: &tokens::EnrollmentClaims,
    jwt: &str,
    csr: &str,
) -> anyhow::Result<Outcome> {
    let http = tls::pinned_http_client(&claims.ca_fp, TIMEOUT)?;
    let resp = http
        .post(format!(
            "{url}/edge/client/v1/enroll?method={}&token={jwt}",
            claims.em
        ))
        .header("content-type", "application/x-pem-file")
        .body(csr.to_owned())
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        let text = |k: &str| -> anyhow::Result<String> {
            Ok(v["data"][k]
                .as_str()
                .with_context(|| format!("no {k} in the answer"))?
                .to_owned())
        };
        let (cert, ca) = (text("cert")?, text("ca")?);
        if pki::ca_fingerprint(&ca).ok().as_deref() != Some(claims.ca_fp.as_str()) {
            bail!("the CA in the answer does not have the token's fingerprint");
        }
        return Ok(Outcome::Enrolled { cert, ca });
    }
    let e = &v["error"];
    let err = anyhow::anyhow!(
        "{} {}: {} (request {})",
        status.as_u16(),
        e["code"].as_str().unwrap_or("?"),
        e["message"].as_str().unwrap_or("?"),
        e["requestId"].as_str().unwrap_or("?")
    );
    // 421/429/503: this controller cannot act now; another one may.
    if matches!(status.as_u16(), 421 | 429 | 503) {
        return Err(err);
    }
    Ok(Outcome::Refused(err))
}

/// Writes the identity file in OpenZiti's layout (`ztAPI`, `ztAPIs`, `id.{key,cert,ca}` with
/// `pem:` prefixes), created new with mode 0600 so the key is never readable by others,
/// not even for a moment.
fn write_identity(
    out: &Path,
    url: &str,
    urls: &[String],
    key: &str,
    cert: &str,
    ca: &str,
) -> anyhow::Result<()> {
    let doc = json!({
        "ztAPI": url,
        "ztAPIs": urls,
        "id": {
            "key": format!("pem:{key}"),
            "cert": format!("pem:{cert}"),
            "ca": format!("pem:{ca}"),
        },
    });
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.write_all(serde_json::to_string_pretty(&doc)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}
