//! Exactly-once writes and compare-and-set against a cluster of real `weft` processes:
//! - a create retried with the same `Idempotency-Key` on another controller answers the
//!   first result (same id, `Idempotent-Replayed: true`) and creates nothing; sent to
//!   every controller at once, it still creates one entity; the key with another body is
//!   422; keys are the caller's own; a refused request is refused again the same way;
//! - `If-Match` on PATCH, PUT and DELETE: a stale version is 412 with the current one and
//!   changes nothing, the right one (bare, quoted or `*`) applies and bumps `version`
//!   (also `ETag`), and of two compare-and-sets racing on one version exactly one wins;
//! - malformed header values are 400 `INVALID_FIELD` naming the header.

mod common;

use anyhow::{ensure, Context};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};

/// Sends `method url` with a JSON body (if any) and extra headers.
async fn send(
    c: &TestClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let bytes = body.map(serde_json::to_vec).transpose()?;
    c.send_with(method, url, bytes.as_deref(), headers).await
}

/// Fails unless `r` is an error with this status and code.
fn expect_error(what: &str, r: &Reply, status: u16, code: &str) -> anyhow::Result<()> {
    ensure!(
        r.status == status && r.code() == Some(code),
        "{what}: expected HTTP {status} {code}, got HTTP {} {}",
        r.status,
        r.body
    );
    Ok(())
}

/// The services named `name`, as `base` sees them after a linearizable read.
async fn named(c: &TestClient, base: &str, name: &str) -> anyhow::Result<Vec<Value>> {
    let filter = format!("name = \"{name}\"")
        .replace(' ', "%20")
        .replace('"', "%22");
    let r = c
        .get(&format!(
            "{base}{MGMT}/services?filter={filter}&consistency=linearizable"
        ))
        .await?;
    ensure!(r.status == 200, "list {name}: HTTP {} {}", r.status, r.body);
    Ok(r.data().as_array().cloned().unwrap_or_default())
}

/// `GET` one service, linearizable.
async fn show(c: &TestClient, base: &str, id: &str) -> anyhow::Result<Reply> {
    c.get(&format!(
        "{base}{MGMT}/services/{id}?consistency=linearizable"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_creates_happen_once_on_any_controller() {
    bounded("retried_creates_happen_once_on_any_controller", async {
        let cluster = start(3).await?;
        let c = cluster.client().await?;
        let url = |i: usize| format!("{}{MGMT}/services", cluster.url(i));
        let body = json!({"name": "exo-web", "roleAttributes": ["web"], "tags": {"a": 1, "b": 2}});

        // The first request, on node 0.
        let k1 = [("Idempotency-Key", "create-exo-web-1")];
        let first = send(&c, Method::POST, &url(0), Some(&body), &k1).await?;
        ensure!(first.status == 201, "create: HTTP {} {}", first.status, first.body);
        ensure!(first.header("idempotent-replayed").is_none(), "a first answer is no replay");
        let id = first.data()["id"].as_str().context("id")?.to_owned();
        ensure!(first.data()["version"] == 1, "a new entity is version 1: {}", first.body);
        ensure!(first.header("etag") == Some("\"1\""), "ETag: {:?}", first.header("etag"));

        // Its retry on node 1 (the client timed out there, say): the first answer.
        let again = send(&c, Method::POST, &url(1), Some(&body), &k1).await?;
        ensure!(again.status == 201, "retry: HTTP {} {}", again.status, again.body);
        ensure!(again.header("idempotent-replayed") == Some("true"), "retry not marked replayed: {:?}", again.headers);
        ensure!(again.data() == first.data(), "retry answered {} instead of {}", again.body, first.body);
        // On node 2, the same body written differently (key order, spacing).
        let respelled = br#" { "tags": {"b": 2, "a": 1}, "roleAttributes": ["web"], "name": "exo-web" } "#;
        let r = c.send_with(Method::POST, &url(2), Some(respelled), &k1).await?;
        ensure!(r.status == 201 && r.data()["id"] == id.as_str(), "respelled retry: HTTP {} {}", r.status, r.body);
        ensure!(r.header("idempotent-replayed") == Some("true"));
        for i in 0..3 {
            let found = named(&c, &cluster.url(i), "exo-web").await?;
            ensure!(found.len() == 1, "node {i} lists {} services named exo-web: {found:?}", found.len());
        }

        // The key with another body: refused, nothing created.
        let other = json!({"name": "exo-other"});
        let r = send(&c, Method::POST, &url(1), Some(&other), &k1).await?;
        expect_error("the key with another body", &r, 422, "IDEMPOTENCY_KEY_REUSED")?;
        // ... or on another path.
        let r = send(&c, Method::POST, &format!("{}{MGMT}/config-types", cluster.url(1)), Some(&other), &k1).await?;
        expect_error("the key on another path", &r, 422, "IDEMPOTENCY_KEY_REUSED")?;
        ensure!(named(&c, &cluster.url(0), "exo-other").await?.is_empty(), "a refused key created something");

        // The same keyed create sent to every controller at once: one entity, one id.
        let k2 = [("Idempotency-Key", "create-exo-burst")];
        let burst = json!({"name": "exo-burst"});
        let urls = [url(0), url(1), url(2)];
        let (a, b, d) = tokio::join!(
            send(&c, Method::POST, &urls[0], Some(&burst), &k2),
            send(&c, Method::POST, &urls[1], Some(&burst), &k2),
            send(&c, Method::POST, &urls[2], Some(&burst), &k2),
        );
        let answers = [a?, b?, d?];
        for r in &answers {
            ensure!(r.status == 201, "burst: HTTP {} {}", r.status, r.body);
            ensure!(r.data()["id"] == answers[0].data()["id"], "burst answered two ids: {} / {}", r.body, answers[0].body);
        }
        let replays = answers.iter().filter(|r| r.header("idempotent-replayed").is_some()).count();
        ensure!(replays == 2, "{replays} of 3 burst answers marked replayed");
        ensure!(named(&c, &cluster.url(2), "exo-burst").await?.len() == 1, "the burst created more than one");

        // A refusal is stored too: the retry is refused the same way, even once the name
        // is free again.
        let k3 = [("Idempotency-Key", "create-exo-web-dup")];
        let dup = send(&c, Method::POST, &url(0), Some(&body), &k3).await?;
        expect_error("a duplicate name", &dup, 409, "ENTITY_ALREADY_EXISTS")?;
        let r = send(&c, Method::PATCH, &format!("{}/{id}", url(0)), Some(&json!({"name": "exo-renamed"})), &[]).await?;
        ensure!(r.status == 200, "rename: HTTP {} {}", r.status, r.body);
        let r = send(&c, Method::POST, &url(1), Some(&body), &k3).await?;
        expect_error("the retried duplicate", &r, 409, "ENTITY_ALREADY_EXISTS")?;
        ensure!(r.header("idempotent-replayed") == Some("true"), "a replayed refusal is marked");
        ensure!(r.body["error"]["message"] == dup.body["error"]["message"], "{} vs {}", r.body, dup.body);
        ensure!(named(&c, &cluster.url(1), "exo-web").await?.is_empty());

        // Keys are the caller's own: another admin's request with the same key is its own.
        create(&c, &cluster.url(0), "identities", json!({"name": "ops", "isAdmin": true})).await?;
        let ops_id = named_identity(&c, &cluster.url(0), "ops").await?;
        create(&c, &cluster.url(0), "authenticators", json!({"method": "updb", "identityId": ops_id, "username": "ops", "password": "correct horse"})).await?;
        let mut ops = cluster.plain_client(WAIT)?;
        ops.login(&cluster.url(0), "ops", "correct horse").await?;
        let r = send(&ops, Method::POST, &url(1), Some(&json!({"name": "exo-ops"})), &k1).await?;
        ensure!(r.status == 201 && r.header("idempotent-replayed").is_none(), "another caller's key: HTTP {} {}", r.status, r.body);
        ensure!(r.data()["id"] != id.as_str());

        // Without a key, a repeated create is a new request (as before).
        let r = send(&c, Method::POST, &url(0), Some(&json!({"name": "exo-ops"})), &[]).await?;
        expect_error("an unkeyed duplicate", &r, 409, "ENTITY_ALREADY_EXISTS")?;
        cluster.finish();
        Ok(())
    })
    .await;
}

/// The id of the identity named `name`.
async fn named_identity(c: &TestClient, base: &str, name: &str) -> anyhow::Result<String> {
    let r = c
        .get(&format!(
            "{base}{MGMT}/identities?filter=name%20%3D%20%22{name}%22&consistency=linearizable"
        ))
        .await?;
    r.data()[0]["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no identity {name}: {}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_is_a_compare_and_set() {
    bounded("if_match_is_a_compare_and_set", async {
        let cluster = start(3).await?;
        let c = cluster.client().await?;
        let base = |i: usize| cluster.url(i);
        let svc = create(
            &c,
            &base(0),
            "services",
            json!({"name": "cas", "roleAttributes": ["a"]}),
        )
        .await?;
        let id = svc["id"].as_str().context("id")?.to_owned();
        let item = |i: usize| format!("{}{MGMT}/services/{id}", base(i));
        let r = show(&c, &base(1), &id).await?;
        ensure!(
            r.data()["version"] == 1 && r.header("etag") == Some("\"1\""),
            "GET: {} {:?}",
            r.body,
            r.header("etag")
        );

        // A stale version: 412 with the current one, nothing changed.
        let r = send(
            &c,
            Method::PATCH,
            &item(1),
            Some(&json!({"name": "stale"})),
            &[("If-Match", "5")],
        )
        .await?;
        expect_error("a stale If-Match", &r, 412, "PRECONDITION_FAILED")?;
        ensure!(
            r.body["error"]["data"]["version"] == 1,
            "412 without the current version: {}",
            r.body
        );
        let r = show(&c, &base(0), &id).await?;
        ensure!(
            r.data()["name"] == "cas" && r.data()["version"] == 1,
            "a failed compare-and-set changed it: {}",
            r.body
        );

        // The right one, quoted as ETag shows it, on another node: applied, version 2.
        let r = send(
            &c,
            Method::PATCH,
            &item(2),
            Some(&json!({"tags": {"env": "prod"}})),
            &[("If-Match", "\"1\"")],
        )
        .await?;
        ensure!(
            r.status == 200 && r.data()["version"] == 2,
            "PATCH at version 1: HTTP {} {}",
            r.status,
            r.body
        );
        ensure!(
            r.header("etag") == Some("\"2\""),
            "ETag after PATCH: {:?}",
            r.header("etag")
        );
        // Bare, and `*` (any version).
        let r = send(
            &c,
            Method::PATCH,
            &item(0),
            Some(&json!({"name": "cas2"})),
            &[("If-Match", "2")],
        )
        .await?;
        ensure!(
            r.status == 200 && r.data()["version"] == 3,
            "PATCH at version 2: HTTP {} {}",
            r.status,
            r.body
        );
        let r = send(
            &c,
            Method::PATCH,
            &item(0),
            Some(&json!({"name": "cas3"})),
            &[("If-Match", "*")],
        )
        .await?;
        ensure!(
            r.status == 200 && r.data()["version"] == 4,
            "PATCH with *: HTTP {} {}",
            r.status,
            r.body
        );

        // PUT sets every field: what it leaves out goes back to its default.
        let r = send(
            &c,
            Method::PUT,
            &item(1),
            Some(&json!({"name": "cas4"})),
            &[("If-Match", "3")],
        )
        .await?;
        expect_error("a stale PUT", &r, 412, "PRECONDITION_FAILED")?;
        let r = send(
            &c,
            Method::PUT,
            &item(1),
            Some(&json!({"name": "cas4"})),
            &[("If-Match", "4")],
        )
        .await?;
        ensure!(
            r.status == 200 && r.data()["version"] == 5,
            "PUT: HTTP {} {}",
            r.status,
            r.body
        );
        ensure!(
            r.data()["tags"] == json!({}) && r.data()["roleAttributes"] == json!([]),
            "PUT did not reset: {}",
            r.body
        );
        let r = send(&c, Method::PUT, &item(1), Some(&json!({"tags": {}})), &[]).await?;
        expect_error("a PUT without name", &r, 400, "INVALID_FIELD")?;
        ensure!(
            r.body["error"]["cause"]
                .as_str()
                .is_some_and(|c| c.starts_with("name:")),
            "{}",
            r.body
        );

        // Two compare-and-sets racing on one version, on two nodes: exactly one wins.
        for round in 0..5 {
            let v = show(&c, &base(0), &id).await?.data()["version"]
                .as_u64()
                .context("version")?;
            let tag = v.to_string();
            let h = [("If-Match", tag.as_str())];
            let (item1, item2) = (item(1), item(2));
            let (body_a, body_b) = (
                json!({"name": format!("race-{round}-a")}),
                json!({"name": format!("race-{round}-b")}),
            );
            let (a, b) = tokio::join!(
                send(&c, Method::PATCH, &item1, Some(&body_a), &h),
                send(&c, Method::PATCH, &item2, Some(&body_b), &h),
            );
            let (a, b) = (a?, b?);
            let mut statuses = [a.status, b.status];
            statuses.sort();
            ensure!(
                statuses == [200, 412],
                "round {round}: HTTP {} {} / HTTP {} {}",
                a.status,
                a.body,
                b.status,
                b.body
            );
            let winner = if a.status == 200 { &a } else { &b };
            let now = show(&c, &base(0), &id).await?;
            ensure!(
                now.data()["version"] == v + 1 && now.data()["name"] == winner.data()["name"],
                "round {round}: {}",
                now.body
            );
        }

        // DELETE with a stale version: refused, still there; with the right one, under a
        // key: gone, and its retry on another node answers the same.
        let v = show(&c, &base(0), &id).await?.data()["version"]
            .as_u64()
            .context("version")?;
        let stale = (v - 1).to_string();
        let r = send(
            &c,
            Method::DELETE,
            &item(0),
            None,
            &[("If-Match", stale.as_str())],
        )
        .await?;
        expect_error("a stale DELETE", &r, 412, "PRECONDITION_FAILED")?;
        ensure!(
            show(&c, &base(1), &id).await?.status == 200,
            "a refused delete deleted"
        );
        let right = v.to_string();
        let h = [
            ("If-Match", right.as_str()),
            ("Idempotency-Key", "delete-cas"),
        ];
        let r = send(&c, Method::DELETE, &item(0), None, &h).await?;
        ensure!(r.status == 200, "DELETE: HTTP {} {}", r.status, r.body);
        let r = send(&c, Method::DELETE, &item(2), None, &h).await?;
        ensure!(
            r.status == 200 && r.header("idempotent-replayed") == Some("true"),
            "retried DELETE: HTTP {} {}",
            r.status,
            r.body
        );
        expect_error(
            "the deleted entity",
            &show(&c, &base(1), &id).await?,
            404,
            "NOT_FOUND",
        )?;
        let r = send(&c, Method::DELETE, &item(2), None, &[]).await?;
        expect_error("an unkeyed second DELETE", &r, 404, "NOT_FOUND")?;
        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_are_refused_and_change_nothing() {
    bounded("malformed_headers_are_refused_and_change_nothing", async {
        let cluster = start(1).await?;
        let c = cluster.client().await?;
        let b0 = cluster.url(0);
        let svc = create(&c, &b0, "services", json!({"name": "hdr"})).await?;
        let id = svc["id"].as_str().context("id")?.to_owned();
        let coll = format!("{b0}{MGMT}/services");
        let item = format!("{coll}/{id}");
        let long = "k".repeat(201);
        let patch = json!({"name": "changed"});
        for (what, method, url, header, value) in [
            ("If-Match: abc", Method::PATCH, &item, "If-Match", "abc"),
            ("If-Match: -1", Method::DELETE, &item, "If-Match", "-1"),
            (
                "If-Match: a list",
                Method::PUT,
                &item,
                "If-Match",
                "\"1\", \"2\"",
            ),
            ("If-Match: W/", Method::PATCH, &item, "If-Match", "W/\"1\""),
            ("an empty key", Method::POST, &coll, "Idempotency-Key", ""),
            (
                "a key with a space",
                Method::PATCH,
                &item,
                "Idempotency-Key",
                "a b",
            ),
            (
                "a key of 201 characters",
                Method::DELETE,
                &item,
                "Idempotency-Key",
                long.as_str(),
            ),
        ] {
            let body = (method != Method::DELETE).then_some(&patch);
            let r = send(&c, method, url, body, &[(header, value)]).await?;
            expect_error(what, &r, 400, "INVALID_FIELD")?;
            let cause = r.body["error"]["cause"].as_str().unwrap_or_default();
            ensure!(
                cause.starts_with(&format!("{header}:")),
                "{what}: cause {cause:?} does not name {header}"
            );
        }
        // A key of exactly 200 visible characters is fine.
        let max = "~".repeat(200);
        let r = send(
            &c,
            Method::PATCH,
            &item,
            Some(&json!({"tags": {"k": 1}})),
            &[("Idempotency-Key", max.as_str())],
        )
        .await?;
        ensure!(
            r.status == 200,
            "a 200-character key: HTTP {} {}",
            r.status,
            r.body
        );
        let r = show(&c, &b0, &id).await?;
        ensure!(
            r.data()["name"] == "hdr" && r.data()["version"] == 2,
            "refused requests changed something: {}",
            r.body
        );
        ensure!(named(&c, &b0, "changed").await?.is_empty());
        cluster.finish();
        Ok(())
    })
    .await;
}
