//! The API document against a real `weft` controller. `GET /openapi.json` (any session)
//! is an OpenAPI 3 document; walking every operation in it, with a stand-in for each path
//! parameter and a minimal body built from the request schema, shows that:
//! - without a credential, only the public allow-list answers; everything else is 401
//!   `UNAUTHORIZED` with `WWW-Authenticate`;
//! - a non-admin session gets 403 `FORBIDDEN` from every management and cluster operation
//!   (and from every other admin one), and is let through by the client API;
//! - an admin session is refused (401/403) by no operation that takes a session;
//! - every answer is documented: its status among the operation's responses, its error
//!   code among that status's codes, its JSON body valid against the documented schema.
//!
//! A new route is in the document by construction, so this walk covers it too.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Context};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};

/// The only operations that answer without a credential. `enroll` (the client API's
/// enrollment) belongs here when it is served.
const PUBLIC: [(&str, &str); 5] = [
    ("POST", "/edge/client/v1/authenticate"),
    ("POST", "/edge/management/v1/authenticate"),
    ("POST", "/edge/client/v1/enroll"),
    ("GET", "/version"),
    ("GET", "/health-checks"),
];

/// One operation of the document.
struct Operation {
    method: String,
    path: String,
    op: Value,
}

impl Operation {
    fn auth(&self) -> &str {
        self.op["x-weft-auth"].as_str().unwrap_or("")
    }

    fn is_public(&self) -> bool {
        PUBLIC.contains(&(self.method.as_str(), self.path.as_str()))
    }

    /// Under the management or cluster API, which need an admin (but for logging in and
    /// the calls of a joining controller, which take a join token).
    fn in_admin_area(&self) -> bool {
        let join = self.path == "/fabric/v1/cluster/join"
            || self.path.starts_with("/fabric/v1/cluster/join/");
        (self.path.starts_with("/edge/management/v1/")
            || self.path.starts_with("/fabric/v1/cluster/"))
            && !self.is_public()
            && !join
    }

    fn takes_a_session(&self) -> bool {
        matches!(self.auth(), "session" | "admin")
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(
            doc,
            doc.pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
        ),
        None => v,
    }
}

/// Checks `v` against `schema`: the keywords the document uses (`$ref`, `allOf`, `type`,
/// `enum`, `properties`, `required`, `additionalProperties: false`, `items`).
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            conforms(doc, s, v, at, errs);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let fits = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "null" => v.is_null(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| fits(t)) {
        errs.push(format!("{at}: {v} is not {types:?}"));
        return;
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(v) {
            errs.push(format!("{at}: {v} is not one of {choices:?}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                errs.push(format!("{at}: required field {r} is missing"));
            }
        }
        for (k, fv) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(doc, s, fv, &format!("{at}.{k}"), errs),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{at}: field {k} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The smallest value the schema accepts: required fields only, first choices.
fn minimal(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    {
        return first.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.first().and_then(Value::as_str).unwrap_or(""),
        _ => "",
    };
    match ty {
        "string" => json!("x"),
        "boolean" => json!(true),
        "integer" | "number" => json!(1),
        "array" => json!([]),
        _ => {
            let mut out = serde_json::Map::new();
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap_or_default();
                let prop = &schema["properties"][r];
                out.insert(r.to_owned(), minimal(doc, prop));
            }
            Value::Object(out)
        }
    }
}

/// The document's operations, reads first and the caller's own logout last (so that a
/// walk keeps its session to the end).
fn operations(doc: &Value) -> anyhow::Result<Vec<Operation>> {
    let paths = doc["paths"].as_object().context("no paths")?;
    ensure!(!paths.is_empty(), "the document has no paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        let mut n = 0;
        for m in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(m) {
                ensure!(op["operationId"].is_string(), "{m} {path}: no operationId");
                ensure!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{m} {path}: no responses"
                );
                out.push(Operation {
                    method: m.to_uppercase(),
                    path: path.clone(),
                    op: op.clone(),
                });
                n += 1;
            }
        }
        ensure!(n > 0, "{path} has no operation");
    }
    let rank = |o: &Operation| {
        let logout = o.method == "DELETE" && o.path.ends_with("/current-api-session");
        let m = ["GET", "POST", "PATCH", "DELETE"]
            .iter()
            .position(|m| *m == o.method)
            .unwrap_or(4);
        (logout, m)
    };
    out.sort_by_key(|o| rank(o));
    Ok(out)
}

/// The request for an operation: its URL (path parameters replaced by `ids`, required
/// query parameters filled in) and a minimal body when it takes one.
fn request(
    doc: &Value,
    base: &str,
    o: &Operation,
    ids: &BTreeMap<String, String>,
) -> (String, Option<Vec<u8>>) {
    let segments: Vec<&str> = o.path.split('/').collect();
    let mut path = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let value = match *seg {
            "{id}" => ids.get(segments[i - 1]).cloned(),
            "{service_id}" => ids.get("services").cloned(),
            "{rpc}" => Some("probe".to_owned()),
            s if s.starts_with('{') => None,
            s => Some(s.to_owned()),
        };
        path.push(value.unwrap_or_else(|| "no-such-id".to_owned()));
    }
    let mut url = format!("{base}{}", path.join("/"));
    let query: Vec<String> = o.op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query" && p["required"] == true)
        .map(|p| {
            let v = minimal(doc, &p["schema"]);
            format!(
                "{}={}",
                p["name"].as_str().unwrap_or(""),
                v.as_str().unwrap_or("x")
            )
        })
        .collect();
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let body = o.op.get("requestBody").map(|rb| {
        let schema = &rb["content"]["application/json"]["schema"];
        serde_json::to_vec(&minimal(doc, schema)).unwrap_or_default()
    });
    (url, body)
}

/// Checks that an answer is documented: its status is among the operation's responses,
/// its error code among that status's, and its JSON body valid against the schema.
fn documented(doc: &Value, o: &Operation, r: &Reply, who: &str) -> anyhow::Result<()> {
    let here = format!("{} as {who}: HTTP {} {}", o.name(), r.status, r.body);
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    ensure!(
        msg != "no such route" && r.status != 405,
        "documented but not routed: {here}"
    );
    let response = o.op["responses"]
        .get(r.status.to_string())
        .map(|resp| resolve(doc, resp))
        .with_context(|| format!("status not documented: {here}"))?;
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return Ok(()); // not JSON (metrics)
    };
    let mut errs = Vec::new();
    conforms(doc, schema, &r.body, "body", &mut errs);
    ensure!(
        errs.is_empty(),
        "answer not as documented: {errs:?}: {here}"
    );
    Ok(())
}

async fn call(
    c: &TestClient,
    doc: &Value,
    base: &str,
    o: &Operation,
    ids: &BTreeMap<String, String>,
) -> anyhow::Result<Reply> {
    let (url, body) = request(doc, base, o, ids);
    let method = Method::from_bytes(o.method.as_bytes())?;
    c.send(method, &url, body.as_deref()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_the_document_needs_its_credential() {
    bounded("every_operation_in_the_document_needs_its_credential", async {
        let cluster = start(1).await?;
        let b0 = cluster.url(0);
        let admin = cluster.client().await?;
        let anonymous = cluster.plain_client(WAIT)?;

        // The document itself needs a session.
        let r = anonymous.get(&format!("{b0}/openapi.json")).await?;
        ensure!(r.status == 401 && r.code() == Some("UNAUTHORIZED"), "openapi.json without a token: HTTP {} {}", r.status, r.body);
        let r = admin.get(&format!("{b0}/openapi.json")).await?;
        ensure!(r.status == 200, "openapi.json: HTTP {} {}", r.status, r.body);
        let doc = r.body;
        ensure!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "not OpenAPI 3: {}", doc["openapi"]);
        ensure!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "no info");
        let ops = operations(&doc)?;
        eprintln!("walking {} operations", ops.len());

        // An entity of every kind, whose ids stand in for `{id}`; bob is no admin.
        let mut ids = BTreeMap::new();
        let bob = create_id(&admin, &b0, "identities", json!({"name": "bob"})).await?;
        ids.insert("identities".to_owned(), bob.clone());
        let auth = create_id(&admin, &b0, "authenticators", json!({"method": "updb", "identityId": bob, "username": "bob", "password": "correct horse"})).await?;
        ids.insert("authenticators".into(), auth);
        ids.insert("services".into(), create_id(&admin, &b0, "services", json!({"name": "web"})).await?);
        ids.insert("edge-routers".into(), create_id(&admin, &b0, "edge-routers", json!({"name": "er1"})).await?);
        let ct = create_id(&admin, &b0, "config-types", json!({"name": "ct"})).await?;
        ids.insert("config-types".into(), ct.clone());
        ids.insert("configs".into(), create_id(&admin, &b0, "configs", json!({"name": "cfg", "configTypeId": ct, "data": {}})).await?);
        ids.insert("service-policies".into(), create_id(&admin, &b0, "service-policies", json!({"name": "sp", "identityRoles": ["#all"], "serviceRoles": ["#all"]})).await?);
        ids.insert("edge-router-policies".into(), create_id(&admin, &b0, "edge-router-policies", json!({"name": "erp", "identityRoles": ["#all"], "edgeRouterRoles": ["#all"]})).await?);
        ids.insert("auth-policies".into(), create_id(&admin, &b0, "auth-policies", json!({"name": "ap"})).await?);
        ids.insert("service-edge-router-policies".into(), create_id(&admin, &b0, "service-edge-router-policies", json!({"name": "serp", "serviceRoles": ["#all"], "edgeRouterRoles": ["#all"]})).await?);
        let mut bob_c = cluster.plain_client(WAIT)?;
        bob_c.login(&b0, "bob", "correct horse").await?;
        let r = bob_c.get(&format!("{b0}/edge/client/v1/current-api-session")).await?;
        ensure!(r.status == 200 && r.data()["isAdmin"] == false, "bob's session: {}", r.body);
        ids.insert("api-sessions".into(), r.data()["id"].as_str().context("session id")?.to_owned());

        // The public operations are exactly the allow-list.
        for o in &ops {
            ensure!((o.auth() == "public") == o.is_public(), "{} is marked {} in the document", o.name(), o.auth());
        }

        // Without a credential.
        for o in &ops {
            let r = call(&anonymous, &doc, &b0, o, &ids).await?;
            documented(&doc, o, &r, "nobody")?;
            if o.is_public() {
                ensure!(r.code() != Some("UNAUTHORIZED"), "{} needs a credential: {}", o.name(), r.body);
            } else {
                ensure!(
                    r.status == 401 && r.code() == Some("UNAUTHORIZED") && r.header("www-authenticate").is_some(),
                    "{} without a credential: HTTP {} {}",
                    o.name(),
                    r.status,
                    r.body
                );
            }
        }

        // A non-admin session.
        for o in &ops {
            let r = call(&bob_c, &doc, &b0, o, &ids).await?;
            documented(&doc, o, &r, "bob")?;
            if o.is_public() {
                continue;
            }
            if !o.takes_a_session() {
                // A join token or a client certificate: a session is not one.
                ensure!(r.status == 401, "{} with a session: HTTP {} {}", o.name(), r.status, r.body);
            } else if o.in_admin_area() || o.auth() == "admin" {
                ensure!(
                    r.status == 403 && r.code() == Some("FORBIDDEN"),
                    "{} as a non-admin: HTTP {} {}",
                    o.name(),
                    r.status,
                    r.body
                );
            } else {
                ensure!(!matches!(r.status, 401 | 403), "{} refused bob: HTTP {} {}", o.name(), r.status, r.body);
            }
        }

        // The admin: no operation that takes a session refuses it.
        for o in &ops {
            let r = call(&admin, &doc, &b0, o, &ids).await?;
            documented(&doc, o, &r, "the admin")?;
            if o.takes_a_session() {
                ensure!(!matches!(r.status, 401 | 403), "{} refused the admin: HTTP {} {}", o.name(), r.status, r.body);
            }
        }
        cluster.finish();
        Ok(())
    })
    .await;
}
