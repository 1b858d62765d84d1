//! [`Client`] and its builder: one call's journey through the failover rules.
//!
//! Every call has a deadline (`call_timeout`, default 30 s) covering all its attempts.
//! An attempt goes to the current controller of the pool (the known controllers in a
//! stable order: seed URLs, then members learned later; those marked down are skipped
//! until their mark ends, and a failover moves the current one on) and its answer
//! decides what happens next:
//!
//! | answer | what the client does |
//! |---|---|
//! | 2xx | returns it |
//! | 421 `CONTROLLER_NOT_IN_QUORUM` | marks that controller down, switches at once to one of `error.data.controllers`, refreshes the member list in the background |
//! | 503 `CLUSTER_NO_LEADER`, 503 `TIMEOUT`, 429 `SERVER_TOO_MANY_REQUESTS` | waits (exponential backoff, full jitter, at least `Retry-After`), same controller |
//! | connect refused, TLS failure, reset, timeout; a 502/503/504 that is not the API's envelope | marks that controller down, tries the next one at once (waits only when all are down) |
//! | 401 on a token that had been valid | logs in again once (shared by concurrent calls), retries; a second 401 is returned |
//! | anything else (429 `RATE_LIMITED` too: too many failed logins, a wait of a window) | [`Error::Api`] with the envelope's code, message and request id |
//!
//! When the next wait would pass the deadline, the call ends with
//! [`Error::Unavailable`]. Every attempt of one mutating call carries the same
//! `Idempotency-Key`, so a retry after a timeout whose first attempt was applied gets
//! that attempt's result from the server instead of applying twice. Tokens are
//! refreshed when less than a third of their lifetime is left, by one call at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde_json::{json, Value};
use weft_api::{ErrorCode, Pagination};

use crate::identity::IdentityFile;
use crate::pool::{backoff, normalize, Pool};
use crate::request::{Page, Request, Response, Session, Stats};
use crate::{tls, Error};

/// Default deadline of one call, retries included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit of one HTTP exchange. Above the controllers' own write timeout (5 s),
/// so a slow write is answered (503 TIMEOUT) rather than abandoned.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of the TCP and TLS connect of one exchange.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default first backoff ceiling; it doubles per wait up to [`DEFAULT_BACKOFF_CAP`].
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Default largest backoff ceiling.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Default time a controller that failed at the connection level (or answered 421) is
/// skipped.
pub const DEFAULT_DOWN_FOR: Duration = Duration::from_secs(2);

/// Page size of [`Client::list_all`] (the API's maximum).
const LIST_ALL_PAGE: u64 = 500;
/// The client API base path.
const CLIENT_API: &str = "/edge/client/v1";

/// A callback receiving one line per HTTP exchange.
type TraceFn = Arc<dyn Fn(&str) + Send + Sync>;

/// How the client proves who it is when it must log in (again).
#[derive(Clone)]
enum Credentials {
    /// Only a resumed session: a 401 is final.
    None,
    /// `authenticate?method=password`.
    Password { username: String, password: String },
    /// `authenticate?method=cert` with the identity file's certificate.
    Cert,
}

/// The timing knobs of a client (see the builder's methods).
#[derive(Debug, Clone, Copy)]
struct Timing {
    call_timeout: Duration,
    attempt_timeout: Duration,
    connect_timeout: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
    down_for: Duration,
}

/// Builds a [`Client`]: where the controllers are, what to trust, how to log in.
#[must_use]
pub struct ClientBuilder {
    /// Seed controller URLs (the identity file's are added).
    urls: Vec<String>,
    /// The cluster CA (PEM).
    ca_pem: Option<String>,
    /// Username and password, if given.
    password: Option<(String, String)>,
    /// The enrolled identity, if given.
    identity: Option<IdentityFile>,
    /// A stored session to resume.
    session: Option<Session>,
    /// Timeouts, backoff and down marks.
    timing: Timing,
    /// Per-exchange trace callback.
    trace: Option<TraceFn>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("urls", &self.urls)
            .field("password", &self.password.as_ref().map(|(u, _)| u))
            .field("identity", &self.identity)
            .field("session", &self.session.is_some())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Adds controller URLs (`https://host:port`); any member is enough, the others are
    /// learned after login.
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The cluster CA (`DIR/ca.pem` of a controller) that servers must chain to.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Logs in with a username and password (the admin, or an identity's `updb`
    /// authenticator).
    pub fn password(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.password = Some((username.into(), password.into()));
        self
    }

    /// Uses the controller URLs, CA and client certificate of an identity file from
    /// `weft enroll`, and logs in with `method=cert`.
    pub fn identity(mut self, id: IdentityFile) -> Self {
        self.identity = Some(id);
        self
    }

    /// Resumes a stored session (CLI profiles) instead of logging in at connect. With
    /// credentials too, a 401 leads to a new login; without, it is returned as
    /// [`Error::Api`].
    pub fn session(mut self, token: impl Into<String>, expires_at: Option<String>) -> Self {
        self.session = Some(Session {
            token: token.into(),
            expires_at,
        });
        self
    }

    /// The deadline of one call, all retries included (default 30 s).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.timing.call_timeout = d;
        self
    }

    /// The limit of one HTTP exchange (default 10 s): a controller that does not answer
    /// within it is marked down and the call goes on elsewhere.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.timing.attempt_timeout = d;
        self
    }

    /// The limit of one TCP and TLS connect (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.timing.connect_timeout = d;
        self
    }

    /// The backoff schedule: the n-th wait of a call is uniform in
    /// `0..=min(cap, base * 2^n)`, but never shorter than `Retry-After`
    /// (default 50 ms, 2 s).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.timing.backoff_base = base;
        self.timing.backoff_cap = cap;
        self
    }

    /// How long a controller that failed at the connection level (or answered 421) is
    /// skipped (default 2 s).
    pub fn down_for(mut self, d: Duration) -> Self {
        self.timing.down_for = d;
        self
    }

    /// Receives one line per HTTP exchange (`> POST url`, `< 201 url 12ms request-id`),
    /// for `--verbose` output.
    pub fn trace(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.trace = Some(Arc::new(f));
        self
    }

    /// Builds the client, logs in (unless a session was given) and fetches the member
    /// list (`/edge/client/v1/controllers`).
    pub async fn connect(self) -> Result<Client, Error> {
        let mut urls: Vec<String> = self.urls.iter().map(|u| normalize(u)).collect();
        if let Some(id) = &self.identity {
            urls.extend(id.urls().iter().map(|u| normalize(u)));
        }
        urls.retain(|u| !u.is_empty());
        if urls.is_empty() {
            return Err(Error::Config("no controller URL given".into()));
        }
        for url in &urls {
            check_url(url)?;
        }
        let ca_pem = match (&self.ca_pem, &self.identity) {
            (Some(pem), _) => pem.clone(),
            (None, Some(id)) => id.ca_pem.clone(),
            (None, None) => return Err(Error::Config("no CA given (the cluster's ca.pem)".into())),
        };
        let cert = self
            .identity
            .as_ref()
            .map(|id| (id.cert_pem.as_str(), id.key_pem.as_str()));
        let http = tls::http_client(&ca_pem, cert, self.timing.connect_timeout)?;
        let creds = match (self.password, &self.identity) {
            (Some((username, password)), _) => Credentials::Password { username, password },
            (None, Some(_)) => Credentials::Cert,
            (None, None) => Credentials::None,
        };
        if matches!(creds, Credentials::None) && self.session.is_none() {
            return Err(Error::Config(
                "no credentials: give a password, an identity file or a session".into(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                http,
                creds,
                pool: Mutex::new(Pool::new(&urls)),
                auth: Mutex::new(AuthState::default()),
                auth_flight: tokio::sync::Mutex::new(()),
                members_refreshing: AtomicBool::new(false),
                stats: Counters::default(),
                timing: self.timing,
                trace: self.trace,
            }),
        };
        let deadline = Instant::now() + client.inner.timing.call_timeout;
        match self.session {
            Some(s) => client.set_token(s.token, s.expires_at),
            None => client.login(deadline).await?,
        }
        let deadline = Instant::now() + client.inner.timing.call_timeout;
        client.fetch_members(deadline).await?;
        Ok(client)
    }
}

/// Only `https://host[:port]` URLs: every controller listener is HTTPS.
fn check_url(url: &str) -> Result<(), Error> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::Config(format!("invalid controller URL {url:?}: {e}")))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() {
        return Err(Error::Config(format!(
            "invalid controller URL {url:?}: expected https://HOST:PORT"
        )));
    }
    Ok(())
}

/// The current token and when to refresh it.
#[derive(Debug, Default)]
struct AuthState {
    /// The token sent as `zt-session`.
    token: Option<String>,
    /// Its expiry as the server wrote it.
    expires_at: Option<String>,
    /// When to refresh it: two thirds into its lifetime.
    refresh_at: Option<Instant>,
    /// Bumped on every new token, so a call that saw a 401 can tell whether another call
    /// already logged in again since it sent its request.
    generation: u64,
}

/// Live counters behind [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    not_in_quorum: AtomicU64,
    no_leader: AtomicU64,
    timeout: AtomicU64,
    too_many: AtomicU64,
    transport: AtomicU64,
    relogins: AtomicU64,
    refreshes: AtomicU64,
    replays: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a client shares between its clones.
struct Inner {
    /// The pooled HTTPS client (cluster CA, client certificate if any).
    http: reqwest::Client,
    /// How to log in again.
    creds: Credentials,
    /// Known controllers, the current one, down marks.
    pool: Mutex<Pool>,
    /// The token.
    auth: Mutex<AuthState>,
    /// Held while logging in or refreshing, so concurrent calls do it once.
    auth_flight: tokio::sync::Mutex<()>,
    /// Set while a background member-list fetch runs (one at a time).
    members_refreshing: AtomicBool,
    /// Counters for [`Client::stats`].
    stats: Counters,
    /// Timeouts, backoff and down marks.
    timing: Timing,
    /// Per-exchange trace callback.
    trace: Option<TraceFn>,
}

/// A client of a weft controller cluster. Cheap to clone (the clones share the token,
/// the pool and the connections); `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("controllers", &self.controllers())
            .finish_non_exhaustive()
    }
}

/// What one internal call may do besides its exchange.
#[derive(Debug, Clone, Copy)]
struct CallOpts {
    /// Send the token.
    token: bool,
    /// Refresh the token first if it is due.
    refresh: bool,
    /// Log in again after a 401.
    relogin: bool,
    /// Count it in `Stats::calls` (a user's call).
    user: bool,
}

impl CallOpts {
    /// A user's call: everything.
    const USER: CallOpts = CallOpts {
        token: true,
        refresh: true,
        relogin: true,
        user: true,
    };
    /// An internal call with the token (member list).
    const INTERNAL: CallOpts = CallOpts {
        token: true,
        refresh: true,
        relogin: true,
        user: false,
    };
    /// A call made while holding the auth flight (refresh, logout): the token only.
    const TOKEN_ONLY: CallOpts = CallOpts {
        token: true,
        refresh: false,
        relogin: false,
        user: false,
    };
    /// A login: no token.
    const ANONYMOUS: CallOpts = CallOpts {
        token: false,
        refresh: false,
        relogin: false,
        user: false,
    };
}

/// The result of one HTTP exchange.
enum Outcome {
    /// The server answered.
    Answer(Answer),
    /// No answer: connect, TLS, reset, timeout, or a body cut short.
    Transport(String),
}

/// A server's answer.
struct Answer {
    status: u16,
    /// The parsed body (`Null` if empty); `Err` with a snippet if it is not JSON.
    body: Result<Value, String>,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    stale: bool,
    replayed: bool,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body.as_ref().ok()?["error"]["code"].as_str()
    }

    fn describe(&self, url: &str) -> String {
        match &self.body {
            Ok(b) => format!(
                "{url}: {} {}: {}",
                self.status,
                b["error"]["code"].as_str().unwrap_or("?"),
                b["error"]["message"].as_str().unwrap_or("")
            ),
            Err(text) => format!("{url}: {} {text}", self.status),
        }
    }
}

/// A random idempotency key (128 bits, hex).
fn new_key() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// The local instant at which a token expiring at `expires_at` (RFC 3339) should be
/// refreshed: when a third of its remaining lifetime is left.
fn refresh_instant(expires_at: &str, now: Instant) -> Option<Instant> {
    let exp = chrono::DateTime::parse_from_rfc3339(expires_at).ok()?;
    let exp = SystemTime::UNIX_EPOCH + Duration::from_millis(exp.timestamp_millis().max(0) as u64);
    let left = exp
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(now + left * 2 / 3)
}

/// The cause of a reqwest failure with its sources ("connection refused" is a source).
fn describe_transport(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            urls: Vec::new(),
            ca_pem: None,
            password: None,
            identity: None,
            session: None,
            timing: Timing {
                call_timeout: DEFAULT_CALL_TIMEOUT,
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                backoff_base: DEFAULT_BACKOFF_BASE,
                backoff_cap: DEFAULT_BACKOFF_CAP,
                down_for: DEFAULT_DOWN_FOR,
            },
            trace: None,
        }
    }

    /// Sends one request under all the failover rules (see the module doc); a 2xx
    /// answer is returned, anything else the caller must handle is an [`Error`].
    pub async fn send(&self, req: Request) -> Result<Response, Error> {
        let deadline = Instant::now() + self.inner.timing.call_timeout;
        self.execute(&req, CallOpts::USER, deadline).await
    }

    /// `GET path`, returning `data`.
    pub async fn show(&self, path: &str) -> Result<Value, Error> {
        Ok(self.send(Request::get(path)).await?.data().clone())
    }

    /// One page of a list: `GET path?limit&offset[&filter]`.
    pub async fn list(
        &self,
        path: &str,
        filter: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<Page, Error> {
        let mut req = Request::get(path)
            .query("limit", limit.to_string())
            .query("offset", offset.to_string());
        if let Some(f) = filter {
            req = req.query("filter", f);
        }
        let resp = self.send(req).await?;
        let items = match resp.data() {
            Value::Array(items) => items.clone(),
            other => {
                return Err(Error::Protocol(format!(
                    "{}: a list answered data that is not an array: {other}",
                    resp.controller
                )))
            }
        };
        let pagination: Option<Pagination> =
            serde_json::from_value(resp.body["meta"]["pagination"].clone()).ok();
        Ok(match pagination {
            Some(p) => Page {
                items,
                total: p.total_count,
                offset: p.offset,
                limit: u64::from(p.limit),
            },
            None => Page {
                total: offset + items.len() as u64,
                items,
                offset,
                limit,
            },
        })
    }

    /// Every entity of a list, page by page (500 a page).
    pub async fn list_all(&self, path: &str, filter: Option<&str>) -> Result<Vec<Value>, Error> {
        let mut all = Vec::new();
        loop {
            let page = self
                .list(path, filter, LIST_ALL_PAGE, all.len() as u64)
                .await?;
            let got = page.items.len();
            all.extend(page.items);
            if got == 0 || all.len() as u64 >= page.total {
                return Ok(all);
            }
        }
    }

    /// `POST path body`, returning `data` (the created entity).
    pub async fn create(&self, path: &str, body: Value) -> Result<Value, Error> {
        Ok(self.send(Request::post(path, body)).await?.data().clone())
    }

    /// `PATCH path body`, with `If-Match` when given; returns `data`.
    pub async fn update(
        &self,
        path: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> Result<Value, Error> {
        let mut req = Request::patch(path, body);
        req.if_match = if_match;
        Ok(self.send(req).await?.data().clone())
    }

    /// `DELETE path`, with `If-Match` when given; returns `data`.
    pub async fn delete(&self, path: &str, if_match: Option<u64>) -> Result<Value, Error> {
        let mut req = Request::delete(path);
        req.if_match = if_match;
        Ok(self.send(req).await?.data().clone())
    }

    /// Ends the session on the cluster (`DELETE /edge/client/v1/current-api-session`)
    /// and forgets the token. A token the cluster already rejects counts as logged out.
    pub async fn logout(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.timing.call_timeout;
        let req = Request::delete(format!("{CLIENT_API}/current-api-session"));
        let r = self.execute(&req, CallOpts::TOKEN_ONLY, deadline).await;
        match r {
            Ok(_) => {}
            Err(e) if e.status() == Some(401) => {}
            Err(e) => return Err(e),
        }
        let mut auth = self.auth();
        *auth = AuthState {
            generation: auth.generation + 1,
            ..AuthState::default()
        };
        Ok(())
    }

    /// The current session, to store in a CLI profile (`None` after logout).
    pub fn session(&self) -> Option<Session> {
        let auth = self.auth();
        auth.token.as_ref().map(|t| Session {
            token: t.clone(),
            expires_at: auth.expires_at.clone(),
        })
    }

    /// The known controller API URLs, in the order they are tried.
    pub fn controllers(&self) -> Vec<String> {
        self.pool().urls()
    }

    /// What the client did so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            calls: get(&c.calls),
            retries_not_in_quorum: get(&c.not_in_quorum),
            retries_no_leader: get(&c.no_leader),
            retries_timeout: get(&c.timeout),
            retries_too_many: get(&c.too_many),
            retries_transport: get(&c.transport),
            relogins: get(&c.relogins),
            refreshes: get(&c.refreshes),
            replays: get(&c.replays),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn auth(&self) -> MutexGuard<'_, AuthState> {
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trace(&self, line: &str) {
        tracing::debug!(target: "weft_sdk", "{line}");
        if let Some(f) = &self.inner.trace {
            f(line);
        }
    }

    /// Installs a new token (login, refresh, resumed session).
    fn set_token(&self, token: String, expires_at: Option<String>) {
        let refresh_at = expires_at
            .as_deref()
            .and_then(|e| refresh_instant(e, Instant::now()));
        let mut auth = self.auth();
        auth.token = Some(token);
        auth.expires_at = expires_at;
        auth.refresh_at = refresh_at;
        auth.generation += 1;
    }

    /// The token to send and its generation.
    fn token(&self) -> (Option<String>, u64) {
        let auth = self.auth();
        (auth.token.clone(), auth.generation)
    }

    /// Logs in with the credentials (the caller holds the auth flight or is `connect`).
    async fn login(&self, deadline: Instant) -> Result<(), Error> {
        let path = format!("{CLIENT_API}/authenticate");
        let req = match &self.inner.creds {
            Credentials::Password { username, password } => {
                Request::post(path, json!({ "username": username, "password": password }))
                    .query("method", "password")
            }
            Credentials::Cert => Request {
                body: None,
                ..Request::post(path, Value::Null)
            }
            .query("method", "cert"),
            Credentials::None => {
                return Err(Error::Config("no credentials to log in with".into()));
            }
        };
        let resp = self.execute(&req, CallOpts::ANONYMOUS, deadline).await?;
        self.take_session(&resp)
    }

    /// Installs the token of a login or refresh answer.
    fn take_session(&self, resp: &Response) -> Result<(), Error> {
        let data = resp.data();
        let token = data["token"].as_str().ok_or_else(|| {
            Error::Protocol(format!("{}: no data.token in the answer", resp.controller))
        })?;
        let expires_at = data["expiresAt"].as_str().map(str::to_owned);
        self.set_token(token.to_owned(), expires_at);
        Ok(())
    }

    /// After a 401 on the token of generation `seen`: logs in again, unless another
    /// call already did since (then its token is used).
    async fn relogin(&self, seen: u64, deadline: Instant) -> Result<(), Error> {
        let _flight = self.inner.auth_flight.lock().await;
        if self.auth().generation != seen {
            return Ok(());
        }
        self.login(deadline).await?;
        bump(&self.inner.stats.relogins);
        self.spawn_member_refresh();
        Ok(())
    }

    /// Refreshes the token if two thirds of its lifetime have passed; one call does it
    /// while the others wait and then use the new token. A failed refresh is logged and
    /// the old token kept (it is still valid; a 401 later leads to a login).
    async fn refresh_if_due(&self, deadline: Instant) {
        let (due, seen) = {
            let auth = self.auth();
            let due = auth.token.is_some() && auth.refresh_at.is_some_and(|t| Instant::now() >= t);
            (due, auth.generation)
        };
        if !due {
            return;
        }
        let _flight = self.inner.auth_flight.lock().await;
        if self.auth().generation != seen {
            return;
        }
        let req = Request {
            body: None,
            ..Request::post(
                format!("{CLIENT_API}/current-api-session/refresh"),
                Value::Null,
            )
        };
        let result = match self.execute(&req, CallOpts::TOKEN_ONLY, deadline).await {
            Ok(resp) => self.take_session(&resp),
            // The token is no longer valid: log in again if we can.
            Err(e) if e.status() == Some(401) && !matches!(self.inner.creds, Credentials::None) => {
                self.login(deadline).await.map(|()| {
                    bump(&self.inner.stats.relogins);
                })
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => bump(&self.inner.stats.refreshes),
            Err(e) => tracing::warn!(target: "weft_sdk", error = %e, "token refresh failed"),
        }
    }

    /// Fetches `/edge/client/v1/controllers` and adds the members not yet known.
    async fn fetch_members(&self, deadline: Instant) -> Result<(), Error> {
        let req = Request::get(format!("{CLIENT_API}/controllers"));
        let resp = self.execute(&req, CallOpts::INTERNAL, deadline).await?;
        let Some(items) = resp.data().as_array() else {
            return Err(Error::Protocol(format!(
                "{}: the controller list is not an array",
                resp.controller
            )));
        };
        let urls: Vec<&str> = items
            .iter()
            .filter_map(|m| m["apiAddress"].as_str())
            .filter(|u| check_url(u).is_ok())
            .collect();
        self.pool().add(urls);
        Ok(())
    }

    /// Refreshes the member list in the background (at most one fetch at a time).
    fn spawn_member_refresh(&self) {
        if self.inner.members_refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.inner
                .members_refreshing
                .store(false, Ordering::Release);
            return;
        };
        rt.spawn(async move {
            let deadline = Instant::now() + client.inner.timing.attempt_timeout;
            if let Err(e) = client.fetch_members(deadline).await {
                tracing::debug!(target: "weft_sdk", error = %e, "member list refresh failed");
            }
            client
                .inner
                .members_refreshing
                .store(false, Ordering::Release);
        });
    }

    /// Waits before retry number `n`, or fails with [`Error::Unavailable`] if the wait
    /// would pass the deadline.
    async fn wait(
        &self,
        n: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
        attempts: u32,
        last: &str,
    ) -> Result<(), Error> {
        let t = &self.inner.timing;
        let d = backoff(n, t.backoff_base, t.backoff_cap, retry_after);
        if Instant::now() + d >= deadline {
            return Err(Error::Unavailable {
                attempts,
                last: last.to_owned(),
            });
        }
        tokio::time::sleep(d).await;
        Ok(())
    }

    /// One call under the failover rules (see the module doc).
    async fn execute(
        &self,
        req: &Request,
        opts: CallOpts,
        deadline: Instant,
    ) -> Result<Response, Error> {
        if opts.user {
            bump(&self.inner.stats.calls);
        }
        let key = req
            .method
            .is_mutating()
            .then(|| req.idempotency_key.clone().unwrap_or_else(new_key));
        let stats = &self.inner.stats;
        let unavailable = |attempts: u32, last: &str| Error::Unavailable {
            attempts,
            last: last.to_owned(),
        };
        let mut attempts = 0u32;
        let mut waits = 0u32;
        let mut relogged = false;
        let mut last = String::from("no attempt was made");
        loop {
            if opts.refresh {
                Box::pin(self.refresh_if_due(deadline)).await;
            }
            if Instant::now() >= deadline {
                return Err(unavailable(attempts, &last));
            }
            let picked = self.pool().pick(Instant::now());
            let url = match picked {
                Some(url) => url,
                None => {
                    // Every controller is marked down: wait, then try the one whose
                    // mark ends first.
                    self.wait(waits, None, deadline, attempts, &last).await?;
                    waits += 1;
                    let mut pool = self.pool();
                    match pool.pick(Instant::now()).or_else(|| pool.pick_soonest()) {
                        Some(url) => url,
                        None => return Err(Error::Config("no controller URL".into())),
                    }
                }
            };
            let (token, generation) = if opts.token { self.token() } else { (None, 0) };
            attempts += 1;
            let outcome = self
                .exchange(&url, req, key.as_deref(), token.as_deref(), deadline)
                .await;
            let answer = match outcome {
                Outcome::Transport(cause) => {
                    last = format!("{url}: {cause}");
                    self.mark_down(&url);
                    bump(&stats.transport);
                    continue;
                }
                Outcome::Answer(a) => a,
            };
            let status = answer.status;
            if (200..300).contains(&status) {
                self.pool().mark_up(&url);
                let body = answer.body.map_err(|text| {
                    Error::Protocol(format!(
                        "{url}: HTTP {status} with a body that is not JSON: {text}"
                    ))
                })?;
                if answer.replayed {
                    bump(&stats.replays);
                }
                return Ok(Response {
                    status,
                    body,
                    request_id: answer.request_id,
                    stale: answer.stale,
                    replayed: answer.replayed,
                    controller: url,
                });
            }
            let code = answer.code().map(str::to_owned);
            let code = code.as_deref();
            let is = |c: ErrorCode| code == Some(c.as_str());
            if status == 421 && is(ErrorCode::ControllerNotInQuorum) {
                last = answer.describe(&url);
                self.mark_down(&url);
                bump(&stats.not_in_quorum);
                self.prefer_other(&answer, &url);
                self.spawn_member_refresh();
                continue;
            }
            let backoff_counter = match (status, code) {
                (503, _) if is(ErrorCode::ClusterNoLeader) => Some(&stats.no_leader),
                (503, _) if is(ErrorCode::Timeout) => Some(&stats.timeout),
                // A login rate limit lasts its window: waiting inside one call would
                // only hide it; the caller sees RATE_LIMITED and its Retry-After.
                (429, _) if is(ErrorCode::RateLimited) => None,
                (429, _) => Some(&stats.too_many),
                _ => None,
            };
            if let Some(counter) = backoff_counter {
                last = answer.describe(&url);
                self.wait(waits, answer.retry_after, deadline, attempts, &last)
                    .await?;
                waits += 1;
                bump(counter);
                continue;
            }
            if matches!(status, 502..=504) && code.is_none() {
                // Not the API's envelope: something between us and the controller
                // failed; treat it as the connection failing.
                last = answer.describe(&url);
                self.mark_down(&url);
                bump(&stats.transport);
                continue;
            }
            if status == 401
                && opts.relogin
                && !relogged
                && !matches!(self.inner.creds, Credentials::None)
            {
                relogged = true;
                last = answer.describe(&url);
                Box::pin(self.relogin(generation, deadline)).await?;
                continue;
            }
            return Err(match answer.body {
                Ok(body) if body["error"].is_object() => {
                    Error::from_envelope(status, &body, answer.request_id)
                }
                Ok(body) => Error::Protocol(format!(
                    "{url}: HTTP {status} without an error envelope: {body}"
                )),
                Err(text) => Error::Protocol(format!(
                    "{url}: HTTP {status} with a body that is not JSON: {text}"
                )),
            });
        }
    }

    /// Marks `url` down for the configured time.
    fn mark_down(&self, url: &str) {
        let until = Instant::now() + self.inner.timing.down_for;
        self.pool().mark_down(url, until);
    }

    /// After a 421 from `url`: learns the controllers its `error.data.controllers` names
    /// and makes the first one not marked down current.
    fn prefer_other(&self, answer: &Answer, url: &str) {
        let Ok(body) = &answer.body else { return };
        let Some(list) = body["error"]["data"]["controllers"].as_array() else {
            return;
        };
        let now = Instant::now();
        let mut pool = self.pool();
        for other in list.iter().filter_map(Value::as_str) {
            if normalize(other) != url && check_url(other).is_ok() && pool.prefer(other, now) {
                return;
            }
        }
    }

    /// One HTTP exchange with `url`, bounded by the attempt timeout and the deadline.
    async fn exchange(
        &self,
        url: &str,
        req: &Request,
        key: Option<&str>,
        token: Option<&str>,
        deadline: Instant,
    ) -> Outcome {
        let timing = &self.inner.timing;
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .min(timing.attempt_timeout);
        let mut rb = self
            .inner
            .http
            .request(req.method.to_reqwest(), format!("{url}{}", req.path))
            .timeout(limit);
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(body) = &req.body {
            rb = rb.json(body);
        }
        if let Some(v) = req.if_match {
            rb = rb.header(weft_api::IF_MATCH_HEADER, v.to_string());
        }
        if let Some(k) = key {
            rb = rb.header(weft_api::IDEMPOTENCY_KEY_HEADER, k);
        }
        if let Some(t) = token {
            rb = rb.header(weft_api::SESSION_HEADER, t);
        }
        let request = match rb.build() {
            Ok(r) => r,
            Err(e) => return Outcome::Transport(format!("building the request: {e}")),
        };
        let shown = request.url().to_string();
        self.trace(&format!("> {} {shown}", req.method));
        let started = Instant::now();
        let ms = |s: Instant| s.elapsed().as_millis();
        let resp = match self.inner.http.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                let cause = describe_transport(&e);
                self.trace(&format!("< ERR {shown} {}ms {cause}", ms(started)));
                return Outcome::Transport(cause);
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header(weft_api::REQUEST_ID_HEADER);
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let flag = |name: &str| header(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let stale = flag(weft_api::STALE_HEADER);
        let replayed = flag(weft_api::IDEMPOTENT_REPLAYED_HEADER);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let cause = describe_transport(&e);
                self.trace(&format!(
                    "< ERR {shown} {}ms reading the body: {cause}",
                    ms(started)
                ));
                return Outcome::Transport(format!("reading the body: {cause}"));
            }
        };
        self.trace(&format!(
            "< {status} {shown} {}ms {}",
            ms(started),
            request_id.as_deref().unwrap_or("-")
        ));
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                let text = String::from_utf8_lossy(&bytes);
                text.chars().take(200).collect::<String>()
            })
        };
        Outcome::Answer(Answer {
            status,
            body,
            request_id,
            retry_after,
            stale,
            replayed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_two_thirds_into_the_lifetime() {
        let now = Instant::now();
        let exp = chrono::Utc::now() + chrono::Duration::seconds(300);
        let text = exp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let at = refresh_instant(&text, now).unwrap();
        let after = at.duration_since(now);
        assert!(
            after > Duration::from_secs(195) && after <= Duration::from_secs(200),
            "{after:?}"
        );
        let past = refresh_instant("2000-01-01T00:00:00.000Z", now).unwrap();
        assert_eq!(past, now);
        assert_eq!(refresh_instant("yesterday", now), None);
    }

    #[test]
    fn urls_must_be_https() {
        assert!(check_url("https://127.0.0.1:1280").is_ok());
        assert!(matches!(check_url("http://h:1"), Err(Error::Config(_))));
        assert!(matches!(check_url("h:1"), Err(Error::Config(_))));
    }

    #[test]
    fn clients_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<Client>();
    }

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[tokio::test]
    async fn connect_needs_urls_a_ca_and_credentials() {
        let e = Client::builder().connect().await.err();
        assert!(matches!(e, Some(Error::Config(m)) if m.contains("URL")));
        let e = Client::builder()
            .urls(["https://a:1"])
            .connect()
            .await
            .err();
        assert!(matches!(e, Some(Error::Config(m)) if m.contains("CA")));
        let e = Client::builder()
            .urls(["ftp://a:1"])
            .ca_pem("x")
            .connect()
            .await
            .err();
        assert!(matches!(e, Some(Error::Config(m)) if m.contains("https")));
    }
}
