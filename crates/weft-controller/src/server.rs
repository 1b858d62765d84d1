//! Starting and stopping a controller: the data directory, the three ways a node comes
//! to be (bootstrap, join through a member, wait to be added), and restart.
//!
//! Data directory layout (all written atomically; secrets mode 0600):
//! - `node.json`: this node's id and advertised URL; its presence means "a member lives here".
//! - `ca.pem`: the cluster CA certificate (what clients trust).
//! - `node-cert.pem`, `node-key.pem`: this node's cluster certificate (server and peer client).
//! - `signing-key`: the seed of this node's token-signing key.
//! - `raft.redb`: vote, purge point, snapshot records and other raft metadata;
//!   `raft.redb.wal/`: the raft log (write-ahead log segments);
//!   `raft.redb.snapshot-N`: the current snapshot image (checksummed). The replicated state
//!   itself is in memory, rebuilt at start from the snapshot and the log.
//! - `bootstrap.json`, `join.json`: an unfinished bootstrap or join, resumed on restart.
//! - `admin-password`: the generated admin password, when none was given.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_cluster::{ClusterError, Faults, Node, NodeConfig, PeerClient, Store, Timing};
use weft_model::Command;

use crate::app::{self, AppState};
use crate::cluster_api::{JoinCertificate, JoinCertificateRequest, JoinRequest, PendingNode};
use crate::limits::{Limits, LimitsError};
use crate::login_limit::LoginLimiter;
use crate::{pki, tls, tokens};

/// How a controller is started.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The URL others use to reach this node (default `https://` + listen).
    pub advertise: Option<String>,
    /// Create a new cluster on an empty data dir.
    pub bootstrap: bool,
    /// A member to ask for admission.
    pub join: Option<String>,
    /// The join token (with `join`, or alone to wait for an admin's add-member).
    pub join_token: Option<String>,
    pub admin_user: String,
    pub admin_password: Option<String>,
    pub session_ttl: Duration,
    pub timing: Timing,
    /// Fault injection for peer traffic (empty outside tests).
    pub faults: Arc<Faults>,
    /// Request, connection and login limits (see [`crate::limits`]).
    pub limits: Limits,
}

impl ControllerOptions {
    /// Options with defaults for everything but the data dir and listen address.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ControllerOptions {
            data_dir: data_dir.into(),
            listen,
            advertise: None,
            bootstrap: false,
            join: None,
            join_token: None,
            admin_user: "admin".into(),
            admin_password: None,
            session_ttl: Duration::from_secs(30 * 60),
            timing: Timing::default(),
            faults: Arc::new(Faults::default()),
            limits: Limits::default(),
        }
    }
}

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error("data directory {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("joining the cluster failed: {0}")]
    Join(String),
    /// A limit flag that would refuse every request or connection.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Token(#[from] tokens::TokenError),
    #[error(transparent)]
    Store(#[from] weft_store::StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeFile {
    id: u64,
    advertise_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapFile {
    ca_cert_pem: String,
    ca_key_pem: String,
    admin_username: String,
    admin_password_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinFile {
    url: String,
    token: String,
}

/// A running controller.
pub struct Controller {
    pub node: Node,
    pub url: String,
    pub data_dir: PathBuf,
    /// The admin password, when this start generated it (printed once by the CLI).
    pub generated_password: Option<String>,
    stop: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a file atomically (temp file, fsync, rename, fsync dir), mode 0600 if `secret`.
pub fn write_file(path: &Path, data: &[u8], secret: bool) -> Result<(), StartError> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StartError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StartError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_text(path: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

fn new_node_id() -> u64 {
    use rand::Rng;
    // Below 2^53 so that ids survive JSON number handling in any client.
    rand::thread_rng().gen_range(1..(1u64 << 53))
}

fn random_password() -> String {
    use rand::Rng;
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect()
}

fn cert_hosts(advertise: &str, listen: SocketAddr) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some(h) = pki::host_of_url(advertise) {
        hosts.push(h);
    }
    let ip = listen.ip();
    if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
        hosts.push(ip.to_string());
    }
    hosts
}

/// The address this node's peer connections (raft, probes, forwarded writes) leave from:
/// its listen IP when that is a specific address and the advertised URL names the same
/// IP, so that peers, and any firewall rule or fault-injecting proxy between nodes, see
/// a node's peer traffic come from the address it is known by (the test kit's
/// partitions of real processes tell nodes apart this way). Otherwise (listening on
/// `0.0.0.0` or `::`, or advertised under a DNS name or another address, as behind NAT
/// or a load balancer) the kernel chooses, as for any client.
fn peer_source(listen: SocketAddr, advertise: &str) -> Option<IpAddr> {
    let ip = listen.ip();
    let advertised: IpAddr = pki::host_of_url(advertise)?.parse().ok()?;
    (!ip.is_unspecified() && advertised == ip).then_some(ip)
}

impl Controller {
    /// Starts a controller according to `opts` (see the module doc).
    pub async fn start(opts: ControllerOptions) -> Result<Controller, StartError> {
        tls::install_crypto_provider();
        opts.limits.validate()?;
        let dir = opts.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: opts.listen,
                    source,
                })?;
        let mut generated_password = None;
        let node_path = dir.join("node.json");
        let mut listener = Some(listener);
        if read_json::<NodeFile>(&node_path)?.is_none() {
            let advertise = opts
                .advertise
                .clone()
                .unwrap_or_else(|| format!("https://{}", opts.listen));
            if opts.bootstrap {
                generated_password = prepare_bootstrap(&opts, &advertise)?;
            } else if let (Some(url), Some(token)) = (&opts.join, &opts.join_token) {
                prepare_join(&opts, &advertise, url, token).await?;
            } else if let Some(token) = &opts.join_token {
                // Serve a temporary endpoint until an admin's add-member hands us a certificate.
                let l = listener
                    .take()
                    .ok_or_else(|| StartError::Usage("listener".into()))?;
                wait_to_be_added(&opts, &advertise, token, l).await?;
                listener = Some(TcpListener::bind(opts.listen).await.map_err(|source| {
                    StartError::Listen {
                        addr: opts.listen,
                        source,
                    }
                })?);
            } else {
                return Err(StartError::Usage(format!(
                    "{} holds no cluster member: pass --bootstrap to create a cluster, \
                     --join URL --join-token TOKEN to join one, or --join-token TOKEN to wait \
                     for an admin's add-member",
                    dir.display()
                )));
            }
        }
        let NodeFile { id, advertise_url } = read_json(&node_path)?
            .ok_or_else(|| StartError::Usage("node.json missing after setup".into()))?;
        let ca_pem = read_text(&dir.join("ca.pem"))?;
        let cert_pem = read_text(&dir.join("node-cert.pem"))?;
        let key_pem = read_text(&dir.join("node-key.pem"))?;
        let signer = Arc::new(tokens::NodeSigner::load_or_create(
            &dir.join("signing-key"),
            id,
        )?);

        let http = tls::http_client_from(
            &ca_pem,
            Some((&cert_pem, &key_pem)),
            Duration::from_secs(10),
            peer_source(opts.listen, &advertise_url),
        )?;
        let peers = PeerClient::new(http, id, opts.faults.clone());
        let store = Store::open(&dir.join("raft.redb"))?;
        let node = Node::start(
            NodeConfig {
                id,
                advertise_url: advertise_url.clone(),
                timing: opts.timing.clone(),
            },
            store,
            peers,
        )
        .await?;
        let state = Arc::new(AppState {
            node: node.clone(),
            signer: signer.clone(),
            session_ttl: opts.session_ttl,
            ca_pem: ca_pem.clone(),
            verified: Default::default(),
            limits: opts.limits.clone(),
            logins: LoginLimiter::new(opts.limits.login_failures, opts.limits.login_failure_window),
        });
        let _ = app::prometheus();
        let tls_config = tls::server_config(&ca_pem, &cert_pem, &key_pem)?;
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let listener = listener.ok_or_else(|| StartError::Usage("listener".into()))?;
        let limits = opts.limits.clone();
        let server = tokio::spawn(async move {
            tls::serve_limited(
                listener,
                tls_config,
                app::router(state),
                &limits,
                async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                },
            )
            .await
        });
        let controller = Controller {
            node,
            url: advertise_url,
            data_dir: dir.clone(),
            generated_password,
            stop,
            server,
        };
        controller.finish_setup(&signer).await?;
        Ok(controller)
    }

    /// Completes an interrupted bootstrap or join (also the normal path right after one).
    async fn finish_setup(&self, signer: &tokens::NodeSigner) -> Result<(), StartError> {
        let dir = &self.data_dir;
        let boot_path = dir.join("bootstrap.json");
        if let Some(boot) = read_json::<BootstrapFile>(&boot_path)? {
            if !self.node.is_initialized().await? {
                self.node.initialize().await?;
            }
            self.write_retrying(Command::Bootstrap {
                ca_cert_pem: boot.ca_cert_pem,
                ca_key_pem: boot.ca_key_pem,
                admin_username: boot.admin_username,
                admin_password_hash: boot.admin_password_hash,
            })
            .await?;
            self.write_retrying(Command::RegisterNodeKey {
                node_id: signer.node_id,
                public_key_hex: signer.public_key_hex(),
            })
            .await?;
            std::fs::remove_file(&boot_path).map_err(io_err(&boot_path))?;
        }
        let join_path = dir.join("join.json");
        if let Some(join) = read_json::<JoinFile>(&join_path)? {
            let ca_pem = read_text(&dir.join("ca.pem"))?;
            let client = tls::http_client(&ca_pem, None, Duration::from_secs(120))?;
            let req = JoinRequest {
                node_id: signer.node_id.to_string(),
                address: self.url.clone(),
                public_key_hex: signer.public_key_hex(),
            };
            post_retrying::<_, serde_json::Value>(
                &client,
                &format!("{}/fabric/v1/cluster/join", join.url),
                &join.token,
                &req,
            )
            .await?;
            std::fs::remove_file(&join_path).map_err(io_err(&join_path))?;
        }
        Ok(())
    }

    async fn write_retrying(&self, cmd: Command) -> Result<(), StartError> {
        let mut last = None;
        for _ in 0..50 {
            match self.node.write(cmd.clone()).await {
                Ok(_) => return Ok(()),
                Err(e @ ClusterError::Domain(_)) => return Err(e.into()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or(ClusterError::NoLeader).into())
    }

    /// Stops serving and shuts raft down.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.node.shutdown().await;
    }
}

fn prepare_bootstrap(
    opts: &ControllerOptions,
    advertise: &str,
) -> Result<Option<String>, StartError> {
    let dir = &opts.data_dir;
    let id = new_node_id();
    let ca = pki::generate_ca("weft")?;
    let (cert, key) = pki::issue_node_cert(&ca, &cert_hosts(advertise, opts.listen), id)?;
    let (password, generated) = match &opts.admin_password {
        Some(p) if !p.is_empty() => (p.clone(), None),
        Some(_) => {
            return Err(StartError::Usage(
                "--admin-password must not be empty".into(),
            ))
        }
        None => {
            let p = random_password();
            write_file(
                &dir.join("admin-password"),
                format!("{p}\n").as_bytes(),
                true,
            )?;
            (p.clone(), Some(p))
        }
    };
    let boot = BootstrapFile {
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        admin_username: opts.admin_user.clone(),
        admin_password_hash: tokens::hash_password(&password)?,
    };
    write_file(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    write_file(&dir.join("node-cert.pem"), cert.as_bytes(), false)?;
    write_file(&dir.join("node-key.pem"), key.as_bytes(), true)?;
    write_file(&dir.join("bootstrap.json"), &to_json(&boot), true)?;
    write_node_file(dir, id, advertise)?;
    Ok(generated)
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

fn write_node_file(dir: &Path, id: u64, advertise: &str) -> Result<(), StartError> {
    let nf = NodeFile {
        id,
        advertise_url: advertise.to_owned(),
    };
    write_file(&dir.join("node.json"), &to_json(&nf), false)
}

/// An error with its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// POSTs a join call (`token`: the join token) until it is answered, or refused for good.
async fn post_retrying<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    req: &Req,
) -> Result<Resp, StartError> {
    let mut last = String::new();
    for attempt in 0..30u32 {
        match client.post(url).bearer_auth(token).json(req).send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    let env: weft_api::Envelope<Resp> = serde_json::from_str(&text)
                        .map_err(|e| StartError::Join(format!("{url}: {e}")))?;
                    return Ok(env.data);
                }
                last = format!("{url}: HTTP {status}: {text}");
                // Refusals of the request itself will not change by retrying.
                if status.is_client_error() && status.as_u16() != 421 && status.as_u16() != 429 {
                    return Err(StartError::Join(last));
                }
            }
            Err(e) => last = format!("{url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10) + 1))).await;
    }
    Err(StartError::Join(last))
}

async fn prepare_join(
    opts: &ControllerOptions,
    advertise: &str,
    url: &str,
    token: &str,
) -> Result<(), StartError> {
    let dir = &opts.data_dir;
    let url = url.trim_end_matches('/');
    let claims =
        tokens::peek_join(token).map_err(|e| StartError::Join(format!("join token: {e}")))?;
    let id = new_node_id();
    let key = pki::generate_key_pem()?;
    let csr = pki::make_csr(&key, &cert_hosts(advertise, opts.listen))?;
    // The token is sent only to a server that proves, in the TLS handshake, a certificate
    // from the CA the token names. One plain call first, so that a server of another
    // cluster (or none) is a clear error at once, not retried.
    let client = tls::pinned_http_client(&claims.ca, Duration::from_secs(10))?;
    client
        .get(format!("{url}/version"))
        .send()
        .await
        .map_err(|e| StartError::Join(format!("{url}: {}", error_chain(&e))))?;
    let req = JoinCertificateRequest {
        node_id: id.to_string(),
        csr_pem: csr,
    };
    let cert: JoinCertificate = post_retrying(
        &client,
        &format!("{url}/fabric/v1/cluster/join/certificate"),
        token,
        &req,
    )
    .await?;
    let ca_pem = cert.ca_pem;
    let fp = pki::ca_fingerprint(&ca_pem)?;
    if fp != claims.ca {
        return Err(StartError::Join(format!(
            "{url} answered with a CA that does not match the join token (fingerprint {fp})"
        )));
    }
    write_file(&dir.join("ca.pem"), ca_pem.as_bytes(), false)?;
    write_file(&dir.join("node-cert.pem"), cert.cert_pem.as_bytes(), false)?;
    write_file(&dir.join("node-key.pem"), key.as_bytes(), true)?;
    let jf = JoinFile {
        url: url.to_owned(),
        token: token.to_owned(),
    };
    write_file(&dir.join("join.json"), &to_json(&jf), true)?;
    write_node_file(dir, id, advertise)
}

async fn wait_to_be_added(
    opts: &ControllerOptions,
    advertise: &str,
    token: &str,
    listener: TcpListener,
) -> Result<(), StartError> {
    use axum::extract::State;
    use axum::routing::{get, post};

    let claims =
        tokens::peek_join(token).map_err(|e| StartError::Join(format!("join token: {e}")))?;
    let dir = opts.data_dir.clone();
    let id = new_node_id();
    let key = pki::generate_key_pem()?;
    let hosts = cert_hosts(advertise, opts.listen);
    let csr = pki::make_csr(&key, &hosts)?;
    let signer = tokens::NodeSigner::load_or_create(&dir.join("signing-key"), id)?;
    // A throwaway CA for the waiting endpoint: the adding member does not verify it.
    let temp_ca = pki::generate_ca("weft-pending")?;
    let (tcert, tkey) = pki::issue_node_cert(&temp_ca, &hosts, id)?;
    let tls_config = tls::server_config(&temp_ca.cert_pem, &tcert, &tkey)?;

    struct Pending {
        info: PendingNode,
        ca_fp: String,
        key: String,
        done: tokio::sync::watch::Sender<Option<JoinCertificate>>,
    }
    let (done, mut done_rx) = tokio::sync::watch::channel(None);
    let pending = Arc::new(Pending {
        info: PendingNode {
            node_id: id.to_string(),
            csr_pem: csr,
            public_key_hex: signer.public_key_hex(),
        },
        ca_fp: claims.ca,
        key: key.clone(),
        done,
    });
    async fn info(State(p): State<Arc<Pending>>) -> axum::response::Response {
        crate::http::ok(p.info.clone())
    }
    async fn accept(
        State(p): State<Arc<Pending>>,
        crate::http::JsonBody(cert): crate::http::JsonBody<JoinCertificate>,
    ) -> Result<axum::response::Response, crate::error::ApiError> {
        let refuse =
            |m: String| crate::error::ApiError::new(weft_api::ErrorCode::InvalidJoinToken, m);
        let fp = pki::ca_fingerprint(&cert.ca_pem).map_err(|e| refuse(e.to_string()))?;
        if fp != p.ca_fp {
            return Err(refuse("the CA does not match the join token".into()));
        }
        // The certificate must chain to that CA and fit our key: building a TLS config
        // with it checks the key pair; the handshake of peers checks the chain.
        tls::server_config(&cert.ca_pem, &cert.cert_pem, &p.key)
            .map_err(|e| refuse(e.to_string()))?;
        let _ = p.done.send(Some(cert));
        Ok(crate::http::ok(serde_json::json!({})))
    }
    let router = axum::Router::new()
        .route("/fabric/v1/cluster/pending", get(info))
        .route("/fabric/v1/cluster/pending/accept", post(accept))
        .with_state(pending.clone());
    tracing::info!(listen = %opts.listen, node_id = id, "waiting for an admin's add-member");
    let mut rx2 = done_rx.clone();
    tls::serve_limited(listener, tls_config, router, &opts.limits, async move {
        let _ = rx2.wait_for(|c| c.is_some()).await;
    })
    .await
    .map_err(|e| StartError::Join(e.to_string()))?;
    let cert = done_rx
        .borrow_and_update()
        .clone()
        .ok_or_else(|| StartError::Join("stopped before being added".into()))?;
    write_file(&dir.join("ca.pem"), cert.ca_pem.as_bytes(), false)?;
    write_file(&dir.join("node-cert.pem"), cert.cert_pem.as_bytes(), false)?;
    write_file(&dir.join("node-key.pem"), key.as_bytes(), true)?;
    write_node_file(&dir, id, advertise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_traffic_leaves_from_the_advertised_listen_address_only() {
        let listen: SocketAddr = "127.0.0.12:7001".parse().unwrap();
        let ip: IpAddr = "127.0.0.12".parse().unwrap();
        assert_eq!(peer_source(listen, "https://127.0.0.12:7001"), Some(ip));
        // Advertised at another port of the same address (a proxy in front): the same.
        assert_eq!(peer_source(listen, "https://127.0.0.12:9001/"), Some(ip));
        // Another address, a name, or a wildcard listen: the kernel chooses.
        assert_eq!(peer_source(listen, "https://10.1.2.3:7001"), None);
        assert_eq!(peer_source(listen, "https://ctrl1.example.com:7001"), None);
        let any: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        assert_eq!(peer_source(any, "https://0.0.0.0:7001"), None);
        let v6: SocketAddr = "[::1]:7001".parse().unwrap();
        assert_eq!(
            peer_source(v6, "https://[::1]:7001"),
            Some("::1".parse().unwrap())
        );
    }
}
