//! Bad input against a cluster of real processes: every malformed, oversized,
//! unauthenticated or conflicting request gets its documented status and code, an error
//! envelope whose `requestId` is the `X-Request-Id` header, and changes nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use common::*;
use reqwest::Method;
use serde_json::json;
use weft_testkit::client::{Reply, TestClient};

/// Checks status, `error.code` and the envelope of an error reply.
fn expect(what: &str, r: &Reply, status: u16, codes: &[&str]) -> anyhow::Result<()> {
    ensure!(
        r.status == status && r.code().is_some_and(|c| codes.contains(&c)),
        "{what}: expected HTTP {status} {codes:?}, got HTTP {} {}",
        r.status,
        r.body
    );
    let rid = r.body["error"]["requestId"].as_str();
    ensure!(
        rid.is_some_and(|id| !id.is_empty() && id != "-"),
        "{what}: no requestId in {}",
        r.body
    );
    ensure!(
        rid == r.header("x-request-id"),
        "{what}: requestId {rid:?} differs from x-request-id {:?}",
        r.header("x-request-id")
    );
    ensure!(
        r.body["error"]["message"].is_string(),
        "{what}: no error.message in {}",
        r.body
    );
    ensure!(
        r.body.get("data").is_none(),
        "{what}: error with data: {}",
        r.body
    );
    Ok(())
}

/// Every service on `base`, by id, as (name, updatedAt).
async fn snapshot(
    c: &TestClient,
    base: &str,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    Ok(list_services(c, base)
        .await?
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_owned(),
                (
                    s["name"].as_str().unwrap_or_default().to_owned(),
                    s["updatedAt"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect())
}

/// POSTs a 20 MB service body.
async fn post_huge(c: &TestClient, url: &str) -> anyhow::Result<Reply> {
    let mut big = b"{\"name\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 20 * 1024 * 1024));
    big.extend(b"\"}");
    c.send(Method::POST, url, Some(&big)).await
}

/// Whether a client error is the server closing the connection under the request
/// (broken pipe, reset) rather than anything else.
fn is_reset(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_lowercase();
    text.contains("broken pipe") || text.contains("connection reset")
}

/// The 413 for an oversized body must reach the client every time, not only when the
/// client happens to read it before the server's close resets the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_always_gets_413() {
    bounded("oversized_body_always_gets_413", async {
        let cluster = start(1).await?;
        let c = cluster.client().await?;
        let url = format!("{}{MGMT}/services", cluster.url(0));
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            outcomes.push(match post_huge(&c, &url).await {
                Ok(r) => format!("HTTP {} {}", r.status, r.code().unwrap_or("-")),
                Err(e) => format!("{e:#}"),
            });
        }
        let bad: Vec<&String> = outcomes
            .iter()
            .filter(|o| !o.starts_with("HTTP 413 REQUEST_ENTITY_TOO_LARGE"))
            .collect();
        ensure!(
            bad.is_empty(),
            "{} of 20 oversized POSTs did not get the 413: {bad:#?}",
            bad.len()
        );
        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_status_and_changes_nothing() {
    bounded(
        "bad_input_gets_documented_status_and_changes_nothing",
        async {
            let cluster = start(3).await?;
            let c = cluster.client().await?;
            let url = |k: usize| cluster.url(k % 3);

            // What the valid requests create.
            let a = create_service_retrying(&c, &url(0), "valid-a").await?;
            let b = create_service_retrying(&c, &url(1), "valid-b").await?;
            let id_a = a["id"].as_str().unwrap_or_default().to_owned();
            let id_b = b["id"].as_str().unwrap_or_default().to_owned();
            cluster.wait_caught_up(WAIT).await?;
            let before = snapshot(&c, &url(0)).await?;
            ensure!(before.len() == 2, "expected 2 services, found {before:?}");

            let raw = |k: usize, method: Method, path: &str, body: Option<Vec<u8>>| {
                let c = c.clone();
                let u = format!("{}{path}", url(k));
                async move { c.send(method, &u, body.as_deref()).await }
            };
            let services = format!("{MGMT}/services");
            let mut k = 0usize;
            let mut next = || {
                k += 1;
                k
            };

            // Bodies that are not JSON of the right shape.
            for (what, body) in [
                ("malformed JSON", &b"{\"name\": "[..]),
                ("not JSON at all", &b"name=x"[..]),
                ("wrong type", &br#"{"name": 5}"#[..]),
                ("a list", &b"[]"[..]),
                ("null", &b"null"[..]),
                ("empty body", &b""[..]),
            ] {
                let r = raw(next(), Method::POST, &services, Some(body.to_vec())).await?;
                expect(what, &r, 400, &["COULD_NOT_PARSE_BODY"])?;
            }
            let r = raw(
                next(),
                Method::POST,
                &services,
                Some(br#"{"name": "x-unknown-field", "colour": "red"}"#.to_vec()),
            )
            .await?;
            expect(
                "unknown field",
                &r,
                400,
                &["COULD_NOT_PARSE_BODY", "INVALID_FIELD"],
            )?;
            ensure!(
                r.body["error"]["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("colour")),
                "unknown field: the cause does not name it: {}",
                r.body
            );

            // Invalid fields.
            for (what, name) in [
                ("empty name", String::new()),
                ("blank name", "   ".to_owned()),
                ("256-char name", "n".repeat(256)),
                ("control character", "a\u{7}b".to_owned()),
            ] {
                let r = c
                    .post(
                        &format!("{}{services}", url(next())),
                        &json!({ "name": name }),
                    )
                    .await?;
                expect(what, &r, 400, &["INVALID_FIELD"])?;
                ensure!(
                    r.body["error"]["cause"]
                        .as_str()
                        .is_some_and(|c| c.contains("name")),
                    "{what}: the cause does not name the field: {}",
                    r.body
                );
            }
            let r = c
                .post(
                    &format!("{}{services}", url(next())),
                    &json!({ "name": "x-bad-attr", "roleAttributes": ["#nope"] }),
                )
                .await?;
            expect("role attribute with #", &r, 400, &["INVALID_FIELD"])?;

            // Too large: 20 MB. The server answers before reading the body and then closes
            // the connection; the client may see that close (a reset, broken pipe) before
            // the 413 (a bug, see `oversized_body_always_gets_413`). Here the 413 must come
            // within 20 attempts and no other answer may: the status itself is checked.
            let huge = {
                let mut h = cluster.plain_client(Duration::from_secs(60))?;
                h.token = c.token.clone();
                h
            };
            let mut resets = Vec::new();
            let r = loop {
                match post_huge(&huge, &format!("{}{services}", url(next()))).await {
                    Ok(r) => break r,
                    Err(e) if resets.len() < 20 && is_reset(&e) => resets.push(format!("{e:#}")),
                    Err(e) => return Err(e.context(format!("earlier resets: {resets:?}"))),
                }
            };
            if !resets.is_empty() {
                eprintln!(
                    "20 MB body: {} connection resets before the 413: {resets:?}",
                    resets.len()
                );
            }
            expect("20 MB body", &r, 413, &["REQUEST_ENTITY_TOO_LARGE"])?;

            // Authentication.
            let anon = cluster.plain_client(Duration::from_secs(20))?;
            for (method, body) in [
                (Method::GET, None),
                (Method::POST, Some(br#"{"name":"x-anon"}"#.to_vec())),
            ] {
                let r = anon
                    .send(
                        method.clone(),
                        &format!("{}{services}", url(next())),
                        body.as_deref(),
                    )
                    .await?;
                expect(
                    &format!("{method} without a token"),
                    &r,
                    401,
                    &["UNAUTHORIZED"],
                )?;
                ensure!(
                    r.header("www-authenticate").is_some(),
                    "401 without WWW-Authenticate: {:?}",
                    r.headers
                );
            }
            for garbage in [
                "garbage",
                "wst1.AAAA.BBBB",
                "wjt1.e30.AAAA",
                &"x".repeat(5000),
            ] {
                let mut g = cluster.plain_client(Duration::from_secs(20))?;
                g.token = Some(garbage.to_owned());
                let r = g
                    .post(
                        &format!("{}{services}", url(next())),
                        &json!({ "name": "x-garbage" }),
                    )
                    .await?;
                expect("garbage token", &r, 401, &["INVALID_AUTH"])?;
                ensure!(
                    r.header("www-authenticate").is_some(),
                    "401 without WWW-Authenticate: {:?}",
                    r.headers
                );
            }

            // Unknown ids.
            let missing = format!("{services}/no-such-service");
            let r = raw(next(), Method::GET, &missing, None).await?;
            expect("GET unknown id", &r, 404, &["NOT_FOUND"])?;
            let r = raw(
                next(),
                Method::PATCH,
                &missing,
                Some(br#"{"name":"x-patched"}"#.to_vec()),
            )
            .await?;
            expect("PATCH unknown id", &r, 404, &["NOT_FOUND"])?;
            let r = raw(next(), Method::DELETE, &missing, None).await?;
            expect("DELETE unknown id", &r, 404, &["NOT_FOUND"])?;

            // Conflicts.
            let r = c
                .post(
                    &format!("{}{services}", url(next())),
                    &json!({ "name": "valid-a" }),
                )
                .await?;
            expect("duplicate name", &r, 409, &["ENTITY_ALREADY_EXISTS"])?;
            let r = raw(
                next(),
                Method::PATCH,
                &format!("{services}/{id_b}"),
                Some(br#"{"name":"valid-a"}"#.to_vec()),
            )
            .await?;
            expect(
                "rename onto a taken name",
                &r,
                409,
                &["ENTITY_ALREADY_EXISTS"],
            )?;

            // Bad patches of an existing service.
            let path_a = format!("{services}/{id_a}");
            for (what, body, codes) in [
                (
                    "PATCH wrong type",
                    &br#"{"name": 5}"#[..],
                    &["COULD_NOT_PARSE_BODY"][..],
                ),
                ("PATCH malformed", &b"{"[..], &["COULD_NOT_PARSE_BODY"][..]),
                (
                    "PATCH unknown field",
                    &br#"{"bogus": 1}"#[..],
                    &["COULD_NOT_PARSE_BODY", "INVALID_FIELD"][..],
                ),
                (
                    "PATCH empty name",
                    &br#"{"name": ""}"#[..],
                    &["INVALID_FIELD"][..],
                ),
            ] {
                let r = raw(next(), Method::PATCH, &path_a, Some(body.to_vec())).await?;
                expect(what, &r, 400, codes)?;
            }

            // Paging.
            for q in [
                "limit=0",
                "limit=501",
                "limit=abc",
                "offset=-1",
                "offset=abc",
                "consistency=maybe",
            ] {
                let r = raw(next(), Method::GET, &format!("{services}?{q}"), None).await?;
                expect(q, &r, 400, &["INVALID_FIELD"])?;
            }

            // Unknown routes.
            for path in [
                format!("{MGMT}/no-such-collection"),
                "/no/such/route".to_owned(),
            ] {
                let r = raw(next(), Method::GET, &path, None).await?;
                expect(&format!("GET {path}"), &r, 404, &["NOT_FOUND"])?;
            }

            // Nothing changed, on any node.
            cluster.wait_caught_up(WAIT).await?;
            for i in 0..3 {
                let now = snapshot(&c, &cluster.url(i)).await?;
                ensure!(
                    now == before,
                    "node {i}: services changed by refused requests: {now:?}, before {before:?}"
                );
            }
            // The documented answers were not just a lucky state: valid requests still work.
            let r = raw(next(), Method::GET, &format!("{services}/{id_a}"), None).await?;
            ensure!(
                r.status == 200 && r.data()["name"] == "valid-a",
                "GET valid-a: {}",
                r.body
            );
            cluster.finish();
            Ok(())
        },
    )
    .await;
}
