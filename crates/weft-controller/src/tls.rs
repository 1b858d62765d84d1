//! TLS plumbing: rustls configurations, HTTPS clients and the HTTPS serving loop.
//!
//! All controller traffic (REST API and Raft RPCs between peers) is HTTPS on one port.
//! This module owns how that TLS is set up so every caller gets the same policy:
//!
//! * only the `ring` crypto provider is used, passed explicitly to every config;
//! * servers present their node certificate followed by the cluster CA certificate, and
//!   *optionally* accept a client certificate, which, when presented, must chain to the
//!   cluster CA. A verified certificate whose CN is `weft-node-<id>` identifies the
//!   calling peer, exposed to handlers as the [`PeerNode`] request extension;
//! * clients trust only the cluster CA and check host names normally. A joining node has
//!   no CA file yet but a join token naming the CA's fingerprint: [`pinned_http_client`]
//!   trusts the CA the server presents only when its fingerprint is that one, so the join
//!   token is never sent to a server that is not a member of that cluster.
//!   [`insecure_http_client`] accepts any server; it only talks to a controller waiting
//!   to be added (`add-member`), which proves nothing by its certificate and receives
//!   nothing secret.
//!
//! [`serve`] is a small accept loop (tokio-rustls + hyper-util HTTP/1.1 + axum) with
//! handshake timeouts, graceful shutdown and the connection and request-head limits of
//! [`crate::limits`]. The server certificate can be swapped at runtime through
//! [`ReloadableServerCert`], returned by [`server_config_reloadable`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::limits::{Admission, ConnectionBudget, Limits, Refusal};
use crate::pki::{der_fingerprint, node_id_from_cert_der};

/// How long a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection refused after its handshake gets to receive the TLS close.
const REFUSED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long in-flight connections may keep running after shutdown was requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Upper bound on the TCP+TLS connect timeout of clients from [`http_client`].
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled client connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Errors from building TLS configurations or HTTPS clients.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The input held no usable PEM block of the expected kind.
    #[error("invalid PEM: expected {0}")]
    Pem(&'static str),
    /// rustls rejected a certificate, key or configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no usable CA).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// reqwest failed to build a client.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Installs ring as the process-wide default rustls crypto provider.
///
/// Idempotent: does nothing if a provider is already installed. The configs built in
/// this module name ring explicitly and do not depend on this; it is for any other
/// rustls user in the process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Server configuration presenting `cert_pem` (leaf first, chain may follow) with
/// `key_pem`; client certificates are optional but, when presented, must chain to a
/// certificate in `ca_pem`. ALPN offers only `http/1.1`.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(server_config_reloadable(ca_pem, cert_pem, key_pem)?.0)
}

/// Like [`server_config`], also returning a handle that swaps the served certificate
/// for all new handshakes (existing connections keep theirs).
pub fn server_config_reloadable(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Arc<ServerConfig>, Arc<ReloadableServerCert>), TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let ca_chain = parse_certs(ca_pem)?;
    let resolver = Arc::new(ReloadableServerCert {
        current: RwLock::new(certified_key(cert_pem, key_pem, &ca_chain, &provider)?),
        ca_chain,
        provider: provider.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok((Arc::new(config), resolver))
}

/// The certificate a server config from [`server_config_reloadable`] presents; call
/// [`ReloadableServerCert::replace`] to rotate it without restarting the listener.
pub struct ReloadableServerCert {
    current: RwLock<Arc<CertifiedKey>>,
    /// Presented after the node certificate (see the module doc).
    ca_chain: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ReloadableServerCert {
    /// Replaces the served certificate chain and key. The new pair is validated
    /// (parsed, key matches certificate) before anything changes.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let new = certified_key(cert_pem, key_pem, &self.ca_chain, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }
}

impl std::fmt::Debug for ReloadableServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableServerCert")
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Client configuration trusting ONLY the CA(s) in `ca_pem`, with normal host-name
/// verification, optionally presenting `identity = (cert_pem, key_pem)` as client
/// certificate. ALPN offers only `http/1.1`.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            builder.with_client_auth_cert(parse_certs(cert_pem)?, parse_key(key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// HTTPS client built on [`client_config`]: HTTP/1.1 only, no proxy, overall request
/// timeout `timeout`, connect timeout `min(timeout, 2s)`, idle connections pooled.
pub fn http_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<reqwest::Client, TlsError> {
    build_client(client_config(ca_pem, identity)?, timeout)
}

/// HTTPS client for a node that joins with a join token: it trusts a server whose chain
/// holds a CA certificate with SHA-256 fingerprint `ca_fingerprint` (lowercase hex, as in
/// the token) and whose certificate that CA issued for the host name (normal checks).
pub fn pinned_http_client(
    ca_fingerprint: &str,
    timeout: Duration,
) -> Result<reqwest::Client, TlsError> {
    checked_client(Some(ca_fingerprint.to_ascii_lowercase()), timeout)
}

/// HTTPS client that accepts ANY server certificate for any host name.
///
/// Only for talking to a controller that waits to be added (`add-member`), which has no
/// cluster certificate yet and is sent nothing secret. Handshake signatures are still
/// checked, so the server must hold the key of the certificate it presents.
pub fn insecure_http_client(timeout: Duration) -> Result<reqwest::Client, TlsError> {
    checked_client(None, timeout)
}

/// A client whose server check is [`ServerCheck`] with this pin.
fn checked_client(pin: Option<String>, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerCheck { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    build_client(config, timeout)
}

/// [`http_client`] whose connections leave from the address `local` (when given): the
/// peer client, so that peers see a node's traffic come from the address it is known by
/// (see `server::peer_source`).
pub fn http_client_from(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    timeout: Duration,
    local: Option<std::net::IpAddr>,
) -> Result<reqwest::Client, TlsError> {
    Ok(client_builder(client_config(ca_pem, identity)?, timeout)
        .local_address(local)
        .build()?)
}

fn build_client(config: ClientConfig, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    Ok(client_builder(config, timeout).build()?)
}

/// The settings every client of this module shares (see [`http_client`]).
fn client_builder(config: ClientConfig, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .no_proxy()
        .http1_only()
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
}

/// Why a pinned [`ServerCheck`] refuses a server: none of its certificates is the pinned
/// CA. (rustls shows it with `Debug`, hence the same text there.)
#[derive(thiserror::Error)]
#[error("the server's CA does not match the join token")]
struct NotThePinnedCa;

impl std::fmt::Debug for NotThePinnedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The server check of the clients that hold no CA yet. With a pin (see
/// [`pinned_http_client`]): the server's chain must hold a CA certificate of that
/// fingerprint, which must have issued the server's certificate for the host name.
/// Without one (see [`insecure_http_client`]): any certificate. Either way the handshake
/// signatures are checked, so the server holds the key of what it presents.
#[derive(Debug)]
struct ServerCheck {
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let ca = intermediates
            .iter()
            .find(|c| crate::pki::der_fingerprint(c) == *pin)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(NotThePinnedCa)),
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem("CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("CERTIFICATE"));
    }
    Ok(certs)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::Pem("PRIVATE KEY"))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The served chain: `cert_pem`'s certificates, then those of `ca_chain` it lacks.
fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    ca_chain: &[CertificateDer<'static>],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut chain = parse_certs(cert_pem)?;
    for ca in ca_chain {
        if !chain.contains(ca) {
            chain.push(ca.clone());
        }
    }
    let key = CertifiedKey::from_der(chain, parse_key(key_pem)?, provider)?;
    Ok(Arc::new(key))
}

/// Request extension set by [`serve`] on every request: the cluster node id from the
/// verified client certificate (CN `weft-node-<id>`), or `None` if the client sent no
/// certificate or one that does not name a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerNode(pub Option<u64>);

/// Request extension set by [`serve`] on every request: the SHA-256 fingerprint (lowercase
/// hex) of the client certificate the TLS handshake verified against the cluster CA, or
/// `None` without one. Certificate login (`authenticate?method=cert`) looks it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert(pub Option<Arc<str>>);

/// [`serve_limited`] with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_limited(listener, tls, app, &Limits::default(), shutdown).await
}

/// Request extension set by [`serve`] on every request: the connection's place in its
/// listener's [`ConnectionBudget`]. A handler that takes the connection over (the peer
/// stream's upgrade) keeps a clone for as long as it uses the connection, so that the
/// place is not given back while the connection is still open.
#[derive(Clone, Debug)]
pub struct ConnectionSlot(pub Arc<Admission>);

/// Serves `app` over HTTPS on `listener` until `shutdown` resolves.
///
/// Each accepted connection takes a place in a [`ConnectionBudget`] of `limits` (or is
/// closed at once, see [`crate::limits`]) and gets its own task: a TLS handshake bounded
/// by [`HANDSHAKE_TIMEOUT`] (failures are logged at debug level and the connection
/// dropped), the move into the clients' or the controllers' budget (a TLS close when
/// that is used up), then HTTP/1.1 via hyper, with request heads of at most
/// `limits.max_header_bytes` (431 beyond), and [`PeerNode`], [`ClientCert`] and axum's
/// `ConnectInfo<SocketAddr>` inserted into every request's extensions. Accept errors
/// are logged and retried after a short pause, never returned. Every refused connection
/// counts in `weft_http_connections_refused_total{reason}`.
///
/// When `shutdown` resolves the listener is closed, idle keep-alive connections are
/// closed, and in-flight requests get up to [`SHUTDOWN_GRACE`] to finish before the
/// remaining connections are aborted. Returns after that.
pub async fn serve_limited(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let budget = ConnectionBudget::new(limits);
    let max_header_bytes = limits.max_header_bytes;
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::warn!(error = %e, "connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => match budget.admit(remote.ip()) {
                    Ok(admission) => {
                        conns.spawn(serve_connection(
                            tcp,
                            Accepted {
                                remote,
                                admission,
                                max_header_bytes,
                            },
                            acceptor.clone(),
                            app.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    // Dropping the stream closes it before any TLS work is done.
                    Err(refusal) => refused(remote, refusal),
                },
                Err(e) if is_per_connection_error(&e) => {
                    tracing::debug!(error = %e, "accept failed for one connection");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = conns.len(),
            of = open,
            "shutdown grace period over; aborting connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Logs and counts a connection closed by its budget.
fn refused(remote: SocketAddr, refusal: Refusal) {
    tracing::debug!(%remote, reason = refusal.as_str(), "connection refused by the connection limits");
    metrics::counter!("weft_http_connections_refused_total", "reason" => refusal.as_str())
        .increment(1);
}

/// What the accept loop hands a connection's task besides the stream.
struct Accepted {
    /// The client's address.
    remote: SocketAddr,
    /// Its place in the listener's budget, held until the connection ends.
    admission: Admission,
    /// The request-head limit (431 beyond).
    max_header_bytes: usize,
}

async fn serve_connection(
    tcp: TcpStream,
    accepted: Accepted,
    acceptor: TlsAcceptor,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let Accepted {
        remote,
        mut admission,
        max_header_bytes,
    } = accepted;
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|stopped| *stopped) => return,
    };

    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let peer = PeerNode(leaf.and_then(|leaf| node_id_from_cert_der(leaf)));
    let client_cert = ClientCert(leaf.map(|leaf| Arc::from(der_fingerprint(leaf))));
    if let Err(refusal) = admission.settle(peer.0.is_some()) {
        refused(remote, refusal);
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSED_CLOSE_TIMEOUT, stream.shutdown()).await;
        return;
    }
    let slot = ConnectionSlot(Arc::new(admission));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer);
        req.extensions_mut().insert(client_cert.clone());
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(max_header_bytes);
    // Upgrades: the peer stream (`/fabric/v1/peer-stream`) leaves HTTP after its 101.
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);

    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with error");
            }
            return;
        }
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with error during shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_HEADERS;
    use crate::pki::{generate_ca, issue_node_cert, CaMaterial};
    use axum::routing::get;
    use axum::Extension;
    use tokio::sync::oneshot;

    const TIMEOUT: Duration = Duration::from_secs(5);

    struct Node {
        cert: String,
        key: String,
    }

    fn node(ca: &CaMaterial, host: &str, id: u64) -> Node {
        let (cert, key) = issue_node_cert(ca, &[host.to_string()], id).unwrap();
        Node { cert, key }
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route(
                "/whoami",
                get(
                    |Extension(peer): Extension<PeerNode>,
                     ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                        format!("{:?} {}", peer.0, addr.ip())
                    },
                ),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            )
    }

    struct Server {
        url: String,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Server {
        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    async fn start(tls: Arc<ServerConfig>) -> Server {
        start_limited(tls, Limits::default()).await
    }

    async fn start_limited(tls: Arc<ServerConfig>, limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_limited(listener, tls, app(), &limits, async {
                let _ = rx.await;
            })
            .await
        });
        Server {
            url: format!("https://127.0.0.1:{}", addr.port()),
            stop: Some(tx),
            task,
        }
    }

    async fn whoami(client: &reqwest::Client, url: &str) -> reqwest::Result<String> {
        client
            .get(format!("{url}/whoami"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    #[tokio::test]
    async fn anonymous_client_is_peer_none() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "None 127.0.0.1"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn node_identity_is_peer_some() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let peer = node(&ca, "peer.example", 7);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&ca.cert_pem, Some((&peer.cert, &peer.key)), TIMEOUT).unwrap();
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "Some(7) 127.0.0.1"
        );
        // The pooled connection is reused and keeps its identity.
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "Some(7) 127.0.0.1"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn client_trusting_other_ca_fails() {
        let ca = generate_ca("t").unwrap();
        let other = generate_ca("other").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&other.cert_pem, None, TIMEOUT).unwrap();
        let err = whoami(&client, &server.url).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn hostname_mismatch_fails() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.2", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        let err = whoami(&client, &server.url).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn client_cert_from_other_ca_is_rejected() {
        let ca = generate_ca("t").unwrap();
        let other = generate_ca("other").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let rogue = node(&other, "rogue.example", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&ca.cert_pem, Some((&rogue.cert, &rogue.key)), TIMEOUT).unwrap();
        assert!(whoami(&client, &server.url).await.is_err());
        // The server keeps working for good clients.
        let good = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        assert_eq!(whoami(&good, &server.url).await.unwrap(), "None 127.0.0.1");
        server.stop().await;
    }

    #[tokio::test]
    async fn pinned_client_trusts_only_the_pinned_ca_and_checks_the_host() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let pin = crate::pki::ca_fingerprint(&ca.cert_pem).unwrap();
        let good = pinned_http_client(&pin, TIMEOUT).unwrap();
        assert_eq!(whoami(&good, &server.url).await.unwrap(), "None 127.0.0.1");
        // Another cluster's fingerprint: refused.
        let other = generate_ca("other").unwrap();
        let other_pin = crate::pki::ca_fingerprint(&other.cert_pem).unwrap();
        let bad = pinned_http_client(&other_pin, TIMEOUT).unwrap();
        assert!(whoami(&bad, &server.url).await.is_err());
        server.stop().await;
        // The pinned CA, but a certificate for another host name: refused.
        let wrong_host = node(&ca, "127.0.0.9", 2);
        let server =
            start(server_config(&ca.cert_pem, &wrong_host.cert, &wrong_host.key).unwrap()).await;
        assert!(whoami(&good, &server.url).await.is_err());
        server.stop().await;
    }

    #[tokio::test]
    async fn insecure_client_accepts_any_server_cert() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.2", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = insecure_http_client(TIMEOUT).unwrap();
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "None 127.0.0.1"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn bad_connections_do_not_stop_the_server() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let addr = server.url.trim_start_matches("https://").to_string();
        // Plain HTTP on the TLS port, and a connection closed right away.
        let mut plain = TcpStream::connect(&addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        drop(TcpStream::connect(&addr).await.unwrap());
        let client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "None 127.0.0.1"
        );
        drop(plain);
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let mut server = start(server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap()).await;
        let client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        // An idle keep-alive connection must not hold shutdown up.
        whoami(&client, &server.url).await.unwrap();
        let slow_client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        let url = server.url.clone();
        let slow = tokio::spawn(async move {
            slow_client
                .get(format!("{url}/slow"))
                .send()
                .await?
                .text()
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let _ = server.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(3), &mut server.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < SHUTDOWN_GRACE);
        assert_eq!(slow.await.unwrap().unwrap(), "done");
        let fresh = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        assert!(whoami(&fresh, &server.url).await.is_err());
    }

    #[tokio::test]
    async fn reloading_swaps_the_server_certificate() {
        let ca = generate_ca("t").unwrap();
        let wrong = node(&ca, "127.0.0.2", 1);
        let right = node(&ca, "127.0.0.1", 1);
        let (config, handle) =
            server_config_reloadable(&ca.cert_pem, &wrong.cert, &wrong.key).unwrap();
        let server = start(config).await;
        let client = http_client(&ca.cert_pem, None, TIMEOUT).unwrap();
        assert!(whoami(&client, &server.url).await.is_err());
        assert!(handle.replace(&right.cert, &wrong.key).is_err());
        assert!(handle.replace("junk", &right.key).is_err());
        handle.replace(&right.cert, &right.key).unwrap();
        assert_eq!(
            whoami(&client, &server.url).await.unwrap(),
            "None 127.0.0.1"
        );
        server.stop().await;
    }

    /// One TLS connection speaking HTTP/1.1 by hand, so that a test knows which
    /// connection each request used (a pooling client would quietly open another).
    struct RawConn(tokio_rustls::client::TlsStream<TcpStream>);

    impl RawConn {
        /// Connects to `server` trusting `ca`, presenting `identity` if given.
        async fn open(server: &Server, ca: &str, identity: Option<&Node>) -> io::Result<RawConn> {
            let config = client_config(ca, identity.map(|n| (n.cert.as_str(), n.key.as_str())))
                .map_err(io::Error::other)?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = TcpStream::connect(server.url.trim_start_matches("https://")).await?;
            let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
            let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(io::Error::other)??;
            Ok(RawConn(tls))
        }

        /// `GET path` with `headers` (each line ending in CRLF); the answer's status, or
        /// an error when the connection was closed instead.
        async fn get(&mut self, path: &str, headers: &str) -> io::Result<u16> {
            use tokio::io::AsyncReadExt;
            let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
            let exchange = async {
                self.0.write_all(head.as_bytes()).await?;
                self.0.flush().await?;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    let n = self.0.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let text = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let status: u16 = text
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("no status in {text:?}")))?;
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = self.0.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok(status)
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .map_err(io::Error::other)?
        }
    }

    /// Opens a connection and checks that it is served.
    async fn served(server: &Server, ca: &str, identity: Option<&Node>) -> RawConn {
        let mut c = RawConn::open(server, ca, identity).await.unwrap();
        assert_eq!(c.get("/whoami", "").await.unwrap(), 200);
        c
    }

    /// Whether a new connection is refused: closed before or right after its handshake.
    async fn refused(server: &Server, ca: &str, identity: Option<&Node>) -> bool {
        match RawConn::open(server, ca, identity).await {
            Err(_) => true,
            Ok(mut c) => c.get("/whoami", "").await.is_err(),
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_a_freed_place_is_reused() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let limits = Limits {
            max_connections: 3,
            max_peer_connections: 2,
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        let server = start_limited(
            server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap(),
            limits,
        )
        .await;
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(served(&server, &ca.cert_pem, None).await);
        }
        assert!(
            refused(&server, &ca.cert_pem, None).await,
            "a 4th client got in"
        );
        // The existing connections still work, each on its own.
        for c in &mut open {
            assert_eq!(c.get("/whoami", "").await.unwrap(), 200);
        }
        // Another controller gets in: it has a budget of its own.
        let peer = node(&ca, "peer.example", 7);
        let mut p = served(&server, &ca.cert_pem, Some(&peer)).await;
        assert_eq!(p.get("/whoami", "").await.unwrap(), 200);
        // A closed connection gives its place back.
        drop(open.pop());
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut again = loop {
            if let Ok(mut c) = RawConn::open(&server, &ca.cert_pem, None).await {
                if c.get("/whoami", "").await.is_ok() {
                    break c;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the freed place was not given to a new connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(again.get("/whoami", "").await.unwrap(), 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn controllers_beyond_their_own_budget_are_closed_too() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let limits = Limits {
            max_connections: 1,
            max_peer_connections: 1,
            ..Limits::default()
        };
        let server = start_limited(
            server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap(),
            limits,
        )
        .await;
        let peer = node(&ca, "peer.example", 7);
        let _p = served(&server, &ca.cert_pem, Some(&peer)).await;
        // The client budget is still free.
        let _c = served(&server, &ca.cert_pem, None).await;
        assert!(refused(&server, &ca.cert_pem, Some(&peer)).await);
        server.stop().await;
    }

    #[tokio::test]
    async fn a_too_large_request_head_gets_431_and_spares_other_connections() {
        let ca = generate_ca("t").unwrap();
        let srv = node(&ca, "127.0.0.1", 1);
        let limits = Limits {
            max_header_bytes: 8 * 1024,
            ..Limits::default()
        };
        let server = start_limited(
            server_config(&ca.cert_pem, &srv.cert, &srv.key).unwrap(),
            limits,
        )
        .await;
        let mut bystander = served(&server, &ca.cert_pem, None).await;
        // One header of 100 KB.
        let mut big = RawConn::open(&server, &ca.cert_pem, None).await.unwrap();
        let header = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
        assert_eq!(big.get("/whoami", &header).await.unwrap(), 431);
        // Then the server closes that connection.
        assert!(big.get("/whoami", "").await.is_err());
        // Within the size, but more than MAX_HEADERS headers.
        let mut many = RawConn::open(&server, &ca.cert_pem, None).await.unwrap();
        let headers: String = (0..=MAX_HEADERS)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        assert_eq!(many.get("/whoami", &headers).await.unwrap(), 431);
        // Just under the size: served.
        let mut fits = RawConn::open(&server, &ca.cert_pem, None).await.unwrap();
        let header = format!("X-Fits: {}\r\n", "a".repeat(6 * 1024));
        assert_eq!(fits.get("/whoami", &header).await.unwrap(), 200);
        assert_eq!(bystander.get("/whoami", "").await.unwrap(), 200);
        server.stop().await;
    }

    #[test]
    fn configs_reject_bad_pem() {
        let ca = generate_ca("t").unwrap();
        let n = node(&ca, "127.0.0.1", 1);
        assert!(matches!(
            server_config("junk", &n.cert, &n.key),
            Err(TlsError::Pem(_))
        ));
        assert!(matches!(
            server_config(&ca.cert_pem, "", &n.key),
            Err(TlsError::Pem(_))
        ));
        assert!(matches!(
            server_config(&ca.cert_pem, &n.cert, "nope"),
            Err(TlsError::Pem(_))
        ));
        let other = node(&ca, "127.0.0.1", 2);
        assert!(server_config(&ca.cert_pem, &n.cert, &other.key).is_err());
        assert!(client_config("", None).is_err());
        assert!(client_config(&ca.cert_pem, Some((&n.cert, "x"))).is_err());
        let cfg = client_config(&ca.cert_pem, Some((&n.cert, &n.key))).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn install_crypto_provider_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }
}
