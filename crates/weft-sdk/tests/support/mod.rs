//! A scripted HTTPS "cluster" for the SDK's failover tests: a few servers on
//! `127.0.0.1`, each with a certificate from one test CA, answering a programmed sequence
//! of replies so every failover rule can be checked deterministically.
//!
//! Each server takes the first scripted [`Action`] whose path filter is part of the
//! request's path; without one, it answers by default: `authenticate` and
//! `current-api-session/refresh` issue a new token (`tok-N`, lifetime [`Fake::set_ttl`]),
//! `controllers` lists every server, a logout answers `{}`, and anything else echoes which
//! server answered. Every request is recorded (method, path, headers, body, arrival time,
//! server index) in one log shared by the servers.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer this.
    Reply(Reply),
    /// Never answer (the client's attempt times out).
    Hang,
    /// Close the connection without answering (a reset, as a killed server).
    Close,
}

/// A scripted HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    /// 200 with `{"data": data}`.
    pub fn ok(data: Value) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: json!({ "data": data, "meta": {} }),
        }
    }

    /// An error envelope with a fresh request id (also as `X-Request-Id`).
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        let rid = format!("rid-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Reply {
            status,
            headers: vec![("x-request-id".into(), rid.clone())],
            body: json!({ "error": { "code": code, "message": message, "requestId": rid },
                "meta": {} }),
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    /// Sets `error.data`.
    pub fn error_data(mut self, data: Value) -> Reply {
        self.body["error"]["data"] = data;
        self
    }

    /// Wraps it as an [`Action`].
    pub fn act(self) -> Action {
        Action::Reply(self)
    }
}

/// Numbers for tokens and request ids, unique in the test binary.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// One request as a server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Index of the server that got it.
    pub server: usize,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
    /// Whether the TLS handshake carried a client certificate the CA issued.
    pub client_cert: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the servers share: scripts, the request log, token settings, the member list.
struct Shared {
    scripts: Vec<Mutex<VecDeque<(String, Action)>>>,
    log: Mutex<Vec<Seen>>,
    ttl: Mutex<Duration>,
    urls: Mutex<Vec<String>>,
    /// Tokens answered with 401 INVALID_AUTH (revoked sessions).
    rejected: Mutex<Vec<String>>,
}

/// The test CA and the scripted servers.
pub struct Fake {
    /// The CA (PEM) the client must trust.
    pub ca_pem: String,
    /// A client certificate (PEM) the CA issued, for identity files.
    pub client_cert_pem: String,
    /// Its key (PEM).
    pub client_key_pem: String,
    /// The servers' URLs, by index.
    pub urls: Vec<String>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// PEM material of the test PKI.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A test CA, a server certificate for 127.0.0.1 / localhost and a client certificate,
/// both issued by it.
fn certificates() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "sdk test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    leaf.distinguished_name
        .push(DnType::CommonName, "sdk test server");
    let cert = leaf.signed_by(&key, &issuer).expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::default();
    client
        .distinguished_name
        .push(DnType::CommonName, "sdk test identity");
    let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");
    Pki {
        ca: ca_cert.pem(),
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// An address nothing listens on (bound and released), for "connection refused".
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("https://127.0.0.1:{port}")
}

impl Fake {
    /// Starts `n` servers.
    pub async fn start(n: usize) -> Fake {
        let pki = certificates();
        let pem_certs = |pem: &str| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert pem")
        };
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&pki.ca) {
            roots.add(c).expect("root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(pem_certs(&pki.server_cert), key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let shared = Arc::new(Shared {
            scripts: (0..n).map(|_| Mutex::new(VecDeque::new())).collect(),
            log: Mutex::new(Vec::new()),
            ttl: Mutex::new(Duration::from_secs(1800)),
            urls: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
        });
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            urls.push(format!("https://127.0.0.1:{}", addr.port()));
            tasks.push(tokio::spawn(serve(
                i,
                listener,
                acceptor.clone(),
                shared.clone(),
            )));
        }
        *shared.urls.lock().unwrap() = urls.clone();
        Fake {
            ca_pem: pki.ca,
            client_cert_pem: pki.client_cert,
            client_key_pem: pki.client_key,
            urls,
            shared,
            tasks,
        }
    }

    /// Queues `action` on server `i` for the next request whose path contains `path`.
    pub fn script(&self, i: usize, path: &str, action: Action) {
        self.shared.scripts[i]
            .lock()
            .unwrap()
            .push_back((path.to_owned(), action));
    }

    /// Lifetime of the tokens issued from now on.
    pub fn set_ttl(&self, ttl: Duration) {
        *self.shared.ttl.lock().unwrap() = ttl;
    }

    /// The member list `controllers` answers (default: every server).
    pub fn set_members(&self, urls: Vec<String>) {
        *self.shared.urls.lock().unwrap() = urls;
    }

    /// From now on, requests bearing `token` get 401 INVALID_AUTH (outside logins).
    pub fn reject_token(&self, token: &str) {
        self.shared.rejected.lock().unwrap().push(token.to_owned());
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests so far whose path contains `path`.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains(path))
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// A builder for these servers (all URLs unless `urls` is given), trusting the test
    /// CA, logging in with a password, with short timeouts so tests stay fast.
    pub fn builder(&self, urls: Option<Vec<String>>) -> weft_sdk::ClientBuilder {
        weft_sdk::Client::builder()
            .urls(urls.unwrap_or_else(|| self.urls.clone()))
            .ca_pem(self.ca_pem.clone())
            .password("admin", "secret")
            .attempt_timeout(Duration::from_secs(2))
            .call_timeout(Duration::from_secs(10))
    }
}

/// The accept loop of server `i`.
async fn serve(i: usize, listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let client_cert = tls.get_ref().1.peer_certificates().is_some();
            let svc = service_fn(move |req| handle(i, peer, client_cert, req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Why a scripted connection is closed without an answer.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted close")
    }
}

impl std::error::Error for Closed {}

fn respond(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(reply.status)
        .header("content-type", "application/json");
    for (k, v) in &reply.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(reply.body.to_string())))
        .expect("response")
}

fn new_token(shared: &Shared) -> Reply {
    let ttl = *shared.ttl.lock().unwrap();
    let exp = chrono::Utc::now() + chrono::Duration::from_std(ttl).expect("ttl");
    Reply::ok(json!({
        "token": format!("tok-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        "expiresAt": exp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

async fn handle(
    i: usize,
    _peer: SocketAddr,
    client_cert: bool,
    req: hyper::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Result<hyper::Response<Full<Bytes>>, Closed> {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let token = headers.get("zt-session").cloned();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    shared.log.lock().unwrap().push(Seen {
        server: i,
        method: method.clone(),
        path: path.clone(),
        query,
        headers,
        body,
        at,
        client_cert,
    });
    let scripted = {
        let mut q = shared.scripts[i].lock().unwrap();
        let pos = q.iter().position(|(p, _)| path.contains(p.as_str()));
        pos.and_then(|p| q.remove(p)).map(|(_, a)| a)
    };
    let login = path.ends_with("/authenticate");
    let rejected = !login && token.is_some_and(|t| shared.rejected.lock().unwrap().contains(&t));
    let action = match scripted {
        Some(a) => a,
        None if rejected => Reply::error(401, "INVALID_AUTH", "the session was revoked").act(),
        None if path.ends_with("/authenticate") || path.ends_with("/refresh") => {
            new_token(&shared).act()
        }
        None if path.ends_with("/controllers") => {
            let urls = shared.urls.lock().unwrap().clone();
            let items: Vec<Value> = urls
                .iter()
                .enumerate()
                .map(|(k, u)| json!({ "id": k.to_string(), "apiAddress": u, "isLeader": k == 0 }))
                .collect();
            Reply::ok(json!(items)).act()
        }
        None => {
            let mut r = Reply::ok(json!({ "server": i, "path": path }));
            if method == "POST" {
                r.status = 201;
            }
            r.act()
        }
    };
    match action {
        Action::Reply(r) => Ok(respond(r)),
        Action::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Err(Closed)
        }
        Action::Close => Err(Closed),
    }
}
