//! HTTP plumbing shared by every route: request ids, the JSON body extractor with its
//! size limit, query parsing for lists, success envelopes, and per-route metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::{Envelope, ErrorCode, Meta, Pagination};
use weft_model::entity::ListQuery;
use weft_model::filter::{Filter, FilterError, Sort};

use crate::error::ApiError;

/// Largest body accepted when no [`BodyLimit`] is set (bigger bodies get 413 before they
/// are read whole). The controller's router sets `--max-body-bytes` (the same by default).
pub const MAX_BODY: usize = crate::limits::DEFAULT_MAX_BODY_BYTES;

/// Request extension (set by the controller's router for every request): the largest
/// body [`JsonBody`], [`OptionalJsonBody`] and [`RawBody`] accept, from
/// `limits::Limits::max_body_bytes`. Without it, [`MAX_BODY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);
/// Placeholder replaced by the real request id in [`request_id`].
pub const PENDING_REQUEST_ID: &str = "-";

/// The id of the request being served (an extension set by [`request_id`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware: gives every request an id, puts it in `X-Request-Id`, fills it into
/// error envelopes, and records `weft_http_requests_total{route,method,status}`.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = weft_model::new_id();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        let headers = resp.headers().clone();
        resp = err.into_response_with_id(&id);
        for (k, v) in headers.iter() {
            if k != "content-length" && k != "content-type" {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(weft_api::REQUEST_ID_HEADER, v);
    }
    let status = resp.status().as_u16().to_string();
    metrics::counter!("weft_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("weft_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Middleware: reads what a handler left of the request body (at most the request's
/// [`BodyLimit`], for at most [`DRAIN_TIME`]) before the answer goes out.
///
/// A request can be refused before its body is read: no credential (401), no such route
/// (404), a method the route does not take (405), a bad header. hyper then reads what
/// has already arrived and, if the body is not complete, closes the connection after the
/// answer, so a client that sent the body a moment after the head, and reuses the
/// connection, sees a reset or an EOF instead of its next answer. Reading the rest keeps
/// the connection usable. A body beyond the limit is not read: that connection closes.
pub async fn finish_body(req: Request, next: Next) -> Response {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(MAX_BODY, |l| l.0);
    let (parts, body) = req.into_parts();
    let shared = SharedBody(std::sync::Arc::new(std::sync::Mutex::new(Some(body))));
    let resp = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    let rest = shared.take();
    if let Some(rest) = rest {
        use hyper::body::Body as _;
        if !rest.is_end_stream() {
            discard(rest, limit).await;
        }
    }
    resp
}

/// A request body the handler reads through a handle, so that [`finish_body`] can take
/// back what the handler left once it is done.
#[derive(Clone)]
struct SharedBody(std::sync::Arc<std::sync::Mutex<Option<Body>>>);

impl SharedBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Body>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body, from now on no longer readable through the handle.
    fn take(&self) -> Option<Body> {
        self.lock().take()
    }
}

impl hyper::body::Body for SharedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.lock().as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.lock()
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Reads and throws away up to `limit` bytes of `body`, for at most [`DRAIN_TIME`].
async fn discard(mut body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > limit {
                    break;
                }
            }
        }
    })
    .await;
}

/// A JSON body: at most [`BodyLimit`] bytes (413), valid JSON of the right shape (400
/// `COULD_NOT_PARSE_BODY`, the cause names the problem and its position).
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body means `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, ApiError> {
        read_json(req, false).await.map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, ApiError> {
        read_json(req, true).await.map(OptionalJsonBody)
    }
}

async fn read_json<T: DeserializeOwned>(req: Request<Body>, empty_ok: bool) -> Result<T, ApiError> {
    parse_json(&read_body(req).await?, empty_ok)
}

/// The whole body, refused with 413 beyond the request's [`BodyLimit`].
async fn read_body(req: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(MAX_BODY, |l| l.0);
    let too_large = || {
        ApiError::new(
            ErrorCode::RequestEntityTooLarge,
            format!("the body must be at most {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain(req.into_body()).await;
        return Err(too_large());
    }
    let mut body = req.into_body();
    match collect_limited(&mut body, limit).await {
        Some(b) => Ok(b),
        None => {
            drain(body).await;
            Err(too_large())
        }
    }
}

/// A body of at most [`BodyLimit`] bytes, for handlers that accept more than JSON (the
/// enroll endpoint takes a bare PEM CSR; certificate login takes no body).
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, ApiError> {
        read_body(req).await.map(RawBody)
    }
}

/// Parses a JSON body with the API's errors (400 `COULD_NOT_PARSE_BODY`, naming what
/// serde found). An empty body is `{}` when `empty_ok`, an error otherwise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], empty_ok: bool) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return serde_json::from_slice(b"{}").map_err(|e| {
                ApiError::new(ErrorCode::CouldNotParseBody, "a JSON body is required")
                    .with_cause(e.to_string())
            });
        }
        return Err(ApiError::new(
            ErrorCode::CouldNotParseBody,
            "a JSON body is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::CouldNotParseBody,
            "the body is not valid JSON for this request",
        )
        .with_cause(e.to_string())
    })
}

/// Reads at most `limit` bytes of `body`; `None` when it is longer.
async fn collect_limited(body: &mut Body, limit: usize) -> Option<bytes::Bytes> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Some(buf.freeze());
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return None;
            }
            buf.extend_from_slice(&data);
        }
    }
    Some(buf.freeze())
}

/// Most we read (and throw away) of a refused body, and for how long, so that the client
/// gets to read our 413 instead of a connection reset caused by unread data.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards what is left of a refused body (bounded in size and time).
async fn drain(body: Body) {
    discard(body, DRAIN_LIMIT).await;
}

/// `{"data": ...}` with 200.
pub fn ok<T: Serialize>(data: T) -> Response {
    (StatusCode::OK, axum::Json(Envelope::new(data))).into_response()
}

/// `{"data": ...}` with 201.
pub fn created<T: Serialize>(data: T) -> Response {
    (StatusCode::CREATED, axum::Json(Envelope::new(data))).into_response()
}

/// A list with `meta.pagination`.
pub fn page<T: Serialize>(items: Vec<T>, paging: Paging, total: u64) -> Response {
    let env = Envelope {
        data: items,
        meta: Meta {
            pagination: Some(Pagination {
                limit: paging.limit,
                offset: paging.offset,
                total_count: total,
            }),
        },
    };
    (StatusCode::OK, axum::Json(env)).into_response()
}

/// Marks a response as possibly stale (served by a node that is not in quorum).
pub fn mark_stale(mut resp: Response, stale: bool) -> Response {
    if stale {
        resp.headers_mut()
            .insert(weft_api::STALE_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

/// Default and maximum page size.
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 500;

/// Validated `limit`/`offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: u32,
    pub offset: u64,
}

/// The query string of a read: paging, filter, sort and consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadQuery {
    pub paging: Paging,
    /// `filter=` (see [`weft_model::filter`]).
    pub filter: Option<Filter>,
    /// `sort=`, e.g. `name asc` or `createdAt desc`; name ascending by default.
    pub sort: Sort,
    pub linearizable: bool,
}

impl ReadQuery {
    /// What to ask the entity layer for.
    pub fn list_query(&self) -> ListQuery {
        ListQuery {
            offset: self.paging.offset,
            limit: self.paging.limit,
            filter: self.filter.clone(),
            sort: self.sort,
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` query value (`+` is a space, `%XX` a
/// byte); `None` when it is not valid percent-encoded UTF-8.
fn form_decode(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = v.get(i + 1..i + 3)?;
                // Two hex digits exactly: `from_str_radix` alone would take "+A" as 0x0A.
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The decoded value of query parameter `name` (the first one), if present; a value that
/// is not valid percent-encoding is a 400 naming the parameter.
pub fn query_param(raw: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    for pair in raw.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return form_decode(v)
                .map(Some)
                .ok_or_else(|| ApiError::field(name, "is not valid percent-encoded UTF-8"));
        }
    }
    Ok(None)
}

fn filter_error(param: &str, e: FilterError) -> ApiError {
    ApiError::new(ErrorCode::InvalidFilter, format!("invalid {param}: {e}"))
        .with_cause(format!("{param}: {e}"))
        .with_data(serde_json::json!({ "parameter": param, "position": e.position }))
}

/// Parses `limit`, `offset`, `filter`, `sort` and `consistency` from a raw query string.
pub fn parse_read_query(raw: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut q = ReadQuery {
        paging: Paging {
            limit: DEFAULT_LIMIT,
            offset: 0,
        },
        filter: None,
        sort: Sort::default(),
        linearizable: false,
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "filter" | "sort" => {
                let text = form_decode(v).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidFilter,
                        format!("{k} is not valid percent-encoded UTF-8"),
                    )
                })?;
                if k == "filter" {
                    q.filter = Some(Filter::parse(&text).map_err(|e| filter_error(k, e))?);
                } else {
                    q.sort = Sort::parse(&text).map_err(|e| filter_error(k, e))?;
                }
            }
            "limit" => {
                let n: u32 = v.parse().map_err(|_| {
                    ApiError::field("limit", format!("{v:?} is not a whole number"))
                })?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(ApiError::field(
                        "limit",
                        format!("must be 1 to {MAX_LIMIT}"),
                    ));
                }
                q.paging.limit = n;
            }
            "offset" => {
                q.paging.offset = v.parse().map_err(|_| {
                    ApiError::field("offset", format!("{v:?} is not a whole number >= 0"))
                })?;
            }
            "consistency" => match v {
                "linearizable" => q.linearizable = true,
                "local" | "" => q.linearizable = false,
                other => {
                    return Err(ApiError::field(
                        "consistency",
                        format!("{other:?}: use local or linearizable"),
                    ))
                }
            },
            _ => {}
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_and_sort_are_decoded_and_parsed() {
        let q = parse_read_query(Some(
            "filter=name+%3D+%22caf%C3%A9%22+and+tags.env%3D'prod'&sort=createdAt%20desc",
        ))
        .unwrap();
        let f = q.filter.expect("filter");
        assert!(f.matches(&serde_json::json!({"name": "café", "tags": {"env": "prod"}})));
        assert!(!f.matches(&serde_json::json!({"name": "cafe", "tags": {"env": "prod"}})));
        assert_eq!(q.sort, Sort::parse("createdAt desc").unwrap());
        assert_eq!(parse_read_query(None).unwrap().sort, Sort::default());

        for (bad, position) in [
            ("filter=name+%3D", 6),
            ("filter=name+~+1", 5),
            ("sort=size", 0),
        ] {
            let e = parse_read_query(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidFilter, "{bad}");
            assert_eq!(e.data.as_ref().unwrap()["position"], position, "{bad}");
        }
        for bad in [
            "filter=%",
            "filter=%4",
            "filter=%zz",
            "filter=%FF",
            "sort=%C3",
        ] {
            let e = parse_read_query(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidFilter, "{bad}");
        }
    }

    #[test]
    fn form_decode_handles_plus_percent_and_utf8() {
        assert_eq!(form_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(form_decode("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("%2B").as_deref(), Some("+"));
        assert_eq!(form_decode("%"), None);
        assert_eq!(form_decode("%G0"), None);
        assert_eq!(form_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn form_decode_refuses_a_sign_in_a_percent_escape() {
        // `u8::from_str_radix` accepts a leading "+": "%+A" used to decode to a newline.
        assert_eq!(form_decode("%+A"), None);
        assert_eq!(form_decode("a%+0b"), None);
        let e = parse_read_query(Some("filter=name%3D%22a%+A%22")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidFilter);
        assert_eq!(
            parse_read_query(Some("filter=name%3D%22a%0A%22"))
                .unwrap()
                .filter,
            Some(Filter::parse("name=\"a\n\"").unwrap())
        );
    }

    #[test]
    fn paging_defaults_and_bounds() {
        let q = parse_read_query(None).unwrap();
        assert_eq!(
            q.paging,
            Paging {
                limit: 10,
                offset: 0
            }
        );
        let q = parse_read_query(Some("limit=500&offset=3&consistency=linearizable")).unwrap();
        assert_eq!(
            q.paging,
            Paging {
                limit: 500,
                offset: 3
            }
        );
        assert!(q.linearizable);
        for bad in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=x",
            "offset=-2",
            "offset=1.5",
            "consistency=eventual",
        ] {
            let e = parse_read_query(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{bad}");
        }
    }
}
