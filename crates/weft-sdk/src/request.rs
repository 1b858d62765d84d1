//! What a call sends ([`Request`]) and what it gets back ([`Response`], [`Page`]).

use serde_json::Value;

/// The HTTP methods the REST API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read.
    Get,
    /// Create (or an action such as `authenticate`).
    Post,
    /// Update some fields.
    Patch,
    /// Replace.
    Put,
    /// Delete.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// Whether the method changes state, and so carries an `Idempotency-Key`.
    pub fn is_mutating(self) -> bool {
        !matches!(self, Method::Get)
    }

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Patch => reqwest::Method::PATCH,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API call: method, path below the controller URL, query, body and the headers
/// that make retries safe. Build it with [`Request::get`] and friends.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The HTTP method.
    pub method: Method,
    /// The path, e.g. `/edge/management/v1/services`; the same on every controller.
    pub path: String,
    /// Query pairs, sent in order (URL-encoded by the client).
    pub query: Vec<(String, String)>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// `If-Match`: the entity `version` the change is based on (optimistic locking).
    pub if_match: Option<u64>,
    /// `Idempotency-Key` for a mutating call; when `None`, `send` makes a random one and
    /// reuses it on every retry of that call.
    pub idempotency_key: Option<String>,
}

impl Request {
    fn new(method: Method, path: impl Into<String>, body: Option<Value>) -> Request {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            body,
            if_match: None,
            idempotency_key: None,
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::Get, path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(path: impl Into<String>, body: Value) -> Request {
        Request::new(Method::Post, path, Some(body))
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(path: impl Into<String>, body: Value) -> Request {
        Request::new(Method::Patch, path, Some(body))
    }

    /// `PUT path` with a JSON body.
    pub fn put(path: impl Into<String>, body: Value) -> Request {
        Request::new(Method::Put, path, Some(body))
    }

    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Request {
        Request::new(Method::Delete, path, None)
    }

    /// Adds a query pair (`filter`, `limit`, `consistency`...).
    pub fn query(mut self, k: impl Into<String>, v: impl Into<String>) -> Request {
        self.query.push((k.into(), v.into()));
        self
    }

    /// Sends `If-Match: version`: the server refuses with 412 if the entity changed.
    pub fn if_match(mut self, version: u64) -> Request {
        self.if_match = Some(version);
        self
    }

    /// Uses this `Idempotency-Key` instead of a random one (e.g. to resume a call the
    /// caller already made once).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Request {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The whole envelope (`{"data", "meta"}`), `Null` for an empty body.
    pub body: Value,
    /// `X-Request-Id`, for support requests.
    pub request_id: Option<String>,
    /// `X-Weft-Stale: true`: a local read from a controller that may lag behind.
    pub stale: bool,
    /// `Idempotent-Replayed: true`: the server answered a retry with the first
    /// attempt's stored result.
    pub replayed: bool,
    /// The controller URL that answered.
    pub controller: String,
}

impl Response {
    /// The envelope's `data` (`Null` if absent).
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The entities on this page.
    pub items: Vec<Value>,
    /// How many entities match in all (`meta.pagination.totalCount`).
    pub total: u64,
    /// Offset of the first item.
    pub offset: u64,
    /// The page size the server applied.
    pub limit: u64,
}

/// An API session, for storing in a CLI profile and resuming with
/// [`ClientBuilder::session`](crate::ClientBuilder::session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token sent as `zt-session`.
    pub token: String,
    /// When it expires (RFC 3339), if known.
    pub expires_at: Option<String>,
}

/// Counters of what a client did, for reports such as the nemesis test's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls made by the user (`send` and the helpers), not internal ones.
    pub calls: u64,
    /// Retries after 421 CONTROLLER_NOT_IN_QUORUM (switched controller).
    pub retries_not_in_quorum: u64,
    /// Retries after 503 CLUSTER_NO_LEADER (backed off).
    pub retries_no_leader: u64,
    /// Retries after 503 TIMEOUT (backed off).
    pub retries_timeout: u64,
    /// Retries after 429 SERVER_TOO_MANY_REQUESTS (backed off).
    pub retries_too_many: u64,
    /// Retries after a connect, TLS, reset or timeout failure (switched controller).
    pub retries_transport: u64,
    /// Logins made again after a 401 on a token that had been valid.
    pub relogins: u64,
    /// Tokens refreshed before they expired.
    pub refreshes: u64,
    /// Successful answers the server marked `Idempotent-Replayed` (a retry whose
    /// first attempt had been applied).
    pub replays: u64,
}
