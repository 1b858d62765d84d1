//! Hostile-input limits against real `weft` processes (see `weft_controller::limits`):
//! request bodies over `--max-body-bytes` on every route that reads one, request heads
//! over `--max-header-bytes`, connections over `--max-connections` and
//! `--max-connections-per-ip` (with the other controllers spared), and failed logins
//! over `--login-failures-per-ip`.
//!
//! Distinct clients are distinct loopback source addresses (`127.0.0.9` and up, which no
//! node and no harness client uses): each connection binds its local address.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{ensure, Context};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};
use weft_testkit::process::{ProcessCluster, ADMIN_PASSWORD, ADMIN_USER};
use weft_testkit::raw::RawConnection;

/// The loopback source address of test client `k` (127.0.0.9 and up).
fn client_ip(k: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9 + k))
}

/// `POST base/edge/{api}/v1/authenticate?method=password` as `user`.
async fn login(c: &TestClient, base: &str, api: &str, user: &str, password: &str) -> Reply {
    let url = format!("{base}/edge/{api}/v1/authenticate?method=password");
    c.post(&url, &json!({ "username": user, "password": password }))
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:#}"))
}

/// Checks an error answer: status, code, and an envelope whose request id is the header's.
fn expect_error(what: &str, r: &Reply, status: u16, code: &str) -> anyhow::Result<()> {
    ensure!(
        r.status == status && r.code() == Some(code),
        "{what}: expected HTTP {status} {code}, got HTTP {} {}",
        r.status,
        r.body
    );
    ensure!(
        r.body["error"]["requestId"].as_str() == r.header("x-request-id"),
        "{what}: requestId differs from X-Request-Id: {}",
        r.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_from_one_address_get_429_until_the_window_passes() {
    bounded(
        "failed_logins_from_one_address_get_429_until_the_window_passes",
        async {
            const K: usize = 3;
            const WINDOW_SECS: u64 = 4;
            let cluster = ProcessCluster::start_with(
                BIN,
                1,
                &[
                    "--login-failures-per-ip",
                    &K.to_string(),
                    "--login-failure-window-secs",
                    &WINDOW_SECS.to_string(),
                ],
            )
            .await?;
            let base = cluster.url(0);
            let timeout = Duration::from_secs(20);
            let a = TestClient::bound(cluster.ca_pem(), timeout, client_ip(0))?;
            let b = TestClient::bound(cluster.ca_pem(), timeout, client_ip(1))?;

            for k in 0..K {
                let r = login(&a, &base, "client", ADMIN_USER, "not-the-password").await;
                expect_error(&format!("wrong password #{k}"), &r, 401, "INVALID_AUTH")?;
            }
            // Closed now, even for the right password, on both login routes.
            let mut retry_after = 0;
            for api in ["client", "management"] {
                let r = login(&a, &base, api, ADMIN_USER, ADMIN_PASSWORD).await;
                expect_error(
                    &format!("{api} login after {K} failures"),
                    &r,
                    429,
                    "RATE_LIMITED",
                )?;
                retry_after = r
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .with_context(|| format!("429 without a Retry-After: {:?}", r.headers))?;
                ensure!(
                    (1..=WINDOW_SECS).contains(&retry_after),
                    "Retry-After {retry_after} is outside 1..={WINDOW_SECS}"
                );
            }
            // Another address is not affected, for a success as for a failure.
            let r = login(&b, &base, "client", ADMIN_USER, ADMIN_PASSWORD).await;
            ensure!(r.status == 200, "other address, right password: {}", r.body);
            let r = login(&b, &base, "client", ADMIN_USER, "not-the-password").await;
            expect_error("other address, wrong password", &r, 401, "INVALID_AUTH")?;
            // The refused calls did not extend the wait: after Retry-After, logins work.
            tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(300)).await;
            let r = login(&a, &base, "client", ADMIN_USER, ADMIN_PASSWORD).await;
            ensure!(
                r.status == 200,
                "right password after the window: HTTP {} {}",
                r.status,
                r.body
            );
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_kb_header_gets_431_and_other_connections_keep_working() {
    bounded(
        "a_100_kb_header_gets_431_and_other_connections_keep_working",
        async {
            let cluster = start(1).await?;
            let url = cluster.url(0);
            let ca = cluster.ca_pem();
            let mut bystander = RawConnection::open(&url, ca, Some(client_ip(0))).await?;
            ensure!(bystander.get("/version", &[]).await?.status == 200);

            let mut big = RawConnection::open(&url, ca, Some(client_ip(1))).await?;
            let header = format!("X-Big: {}", "a".repeat(100 * 1024));
            let r = big.get("/version", &[header]).await?;
            ensure!(r.status == 431, "100 KB header: {} {}", r.status, r.head);
            ensure!(
                big.get("/version", &[]).await.is_err(),
                "the connection of the 431 stays open"
            );
            let mut many = RawConnection::open(&url, ca, Some(client_ip(1))).await?;
            let headers: Vec<String> = (0..=100).map(|i| format!("X-H{i}: v")).collect();
            let r = many.get("/version", &headers).await?;
            ensure!(r.status == 431, "101 headers: {} {}", r.status, r.head);

            // Others are served: the open connection and a new one from the same address.
            ensure!(bystander.get("/version", &[]).await?.status == 200);
            let mut fresh = RawConnection::open(&url, ca, Some(client_ip(1))).await?;
            let r = fresh
                .get("/version", &[format!("X-Fits: {}", "a".repeat(32 * 1024))])
                .await?;
            ensure!(r.status == 200, "a 32 KB header: {} {}", r.status, r.head);
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

/// A request refused before its body was read (no credential, no such route, a method
/// the route does not take) must leave its connection usable, also when the body arrives
/// after the refusal: the next request on the same connection is answered. (A server that
/// stops reading closes the connection instead, and a client that reuses it sees a reset
/// or an EOF where an answer should be.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_body_was_read_leaves_the_connection_usable() {
    bounded(
        "a_request_refused_before_its_body_was_read_leaves_the_connection_usable",
        async {
            let cluster = start(1).await?;
            let url = cluster.url(0);
            let body = br#"{"name": "never-created"}"#;
            let json = ["Content-Type: application/json".to_owned()];
            for (method, path, status) in [
                ("POST", format!("{MGMT}/services"), 401),
                ("POST", "/no/such/route".to_owned(), 404),
                ("PUT", "/version".to_owned(), 405),
            ] {
                let mut conn = RawConnection::open(&url, cluster.ca_pem(), None).await?;
                for round in 0..3 {
                    let r = conn
                        .send(method, &path, &json, body, Duration::from_millis(200))
                        .await
                        .with_context(|| format!("{method} {path}, round {round}"))?;
                    ensure!(
                        r.status == status,
                        "{method} {path}: HTTP {} {}",
                        r.status,
                        r.body
                    );
                    let r = conn
                        .get("/version", &[])
                        .await
                        .with_context(|| format!("GET /version after {method} {path}"))?;
                    ensure!(r.status == 200, "GET /version: {}", r.status);
                }
            }
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

/// The stand-in of a path parameter in [`every_route_that_reads_a_body_refuses_one_over_the_cap`].
fn fill_path(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_that_reads_a_body_refuses_one_over_the_cap() {
    bounded(
        "every_route_that_reads_a_body_refuses_one_over_the_cap",
        async {
            const CAP: usize = 4096;
            let cluster = ProcessCluster::start_with(BIN, 1, &["--max-body-bytes", "4096"]).await?;
            let base = cluster.url(0);
            let admin = cluster.client().await?;
            let doc = admin.get(&format!("{base}/openapi.json")).await?;
            ensure!(doc.status == 200, "GET /openapi.json: {}", doc.status);
            let join_token = cluster.join_token().await?;
            let over = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * CAP)).into_bytes();

            let mut checked = Vec::new();
            for (path, item) in doc.body["paths"].as_object().context("no paths")? {
                for (method, op) in item.as_object().context("path item")? {
                    if op.get("requestBody").is_none() {
                        continue;
                    }
                    let here = format!("{} {path}", method.to_uppercase());
                    let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
                    let mut url = format!("{base}{}", fill_path(path));
                    if path.ends_with("/enroll") {
                        url.push_str("?method=ott&token=x");
                    } else if path.ends_with("/authenticate") {
                        url.push_str("?method=password");
                    }
                    let r = match op["x-weft-auth"].as_str().unwrap_or_default() {
                        // Checked below: these take a controller's certificate.
                        "cluster-certificate" => continue,
                        "join-token" => {
                            let auth = format!("Bearer {join_token}");
                            let anon = cluster.plain_client(Duration::from_secs(20))?;
                            anon.send_with(method, &url, Some(&over), &[("authorization", &auth)])
                                .await?
                        }
                        _ => admin.send(method, &url, Some(&over)).await?,
                    };
                    expect_error(&here, &r, 413, "REQUEST_ENTITY_TOO_LARGE")?;
                    checked.push(here);
                }
            }
            ensure!(checked.len() >= 10, "only {checked:?} take a body");

            // The cap itself is allowed: exactly CAP bytes (JSON may end in blanks).
            let mut at_cap = br#"{"name": "at-the-cap"}"#.to_vec();
            at_cap.resize(CAP, b' ');
            let services = format!("{base}{MGMT}/services");
            let r = admin.send(Method::POST, &services, Some(&at_cap)).await?;
            ensure!(
                r.status == 201,
                "a body of exactly the cap: {} {}",
                r.status,
                r.body
            );
            at_cap.push(b' ');
            let r = admin.send(Method::POST, &services, Some(&at_cap)).await?;
            expect_error("one byte over the cap", &r, 413, "REQUEST_ENTITY_TOO_LARGE")?;

            // Peer routes: without a controller's certificate, refused before the body is
            // read; with one, the client cap does not apply (they have their own).
            let peer_url = format!("{base}/fabric/v1/peer/no-such-rpc");
            let r = admin.send(Method::POST, &peer_url, Some(&over)).await?;
            expect_error("peer route without a certificate", &r, 401, "UNAUTHORIZED")?;
            let dir = cluster.data_dir(0);
            let cert = std::fs::read_to_string(dir.join("node-cert.pem"))?;
            let key = std::fs::read_to_string(dir.join("node-key.pem"))?;
            let peer = TestClient {
                http: weft_controller::tls::http_client(
                    cluster.ca_pem(),
                    Some((&cert, &key)),
                    Duration::from_secs(20),
                )?,
                token: None,
            };
            let r = peer.send(Method::POST, &peer_url, Some(&over)).await?;
            expect_error("peer route with a certificate", &r, 404, "NOT_FOUND")?;
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

/// Opens a connection from `ip` and checks that it is served (`GET /version`).
async fn served(url: &str, ca: &str, ip: IpAddr) -> anyhow::Result<RawConnection> {
    let mut c = RawConnection::open(url, ca, Some(ip)).await?;
    let r = c.get("/version", &[]).await?;
    ensure!(r.status == 200, "GET /version: {} {}", r.status, r.body);
    Ok(c)
}

/// [`served`], retried (bounded) while refused: the server frees a closed connection's
/// place when it notices the close, a moment after the client closed it.
async fn served_soon(url: &str, ca: &str, ip: IpAddr) -> anyhow::Result<RawConnection> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match served(url, ca, ip).await {
            Ok(conn) => return Ok(conn),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e.context(format!("still refused after {WAIT:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether a new connection from `ip` is refused: closed before or right after its
/// handshake, without an answer.
async fn refused(url: &str, ca: &str, ip: IpAddr) -> bool {
    match RawConnection::open(url, ca, Some(ip)).await {
        Err(_) => true,
        Ok(mut c) => c.get("/version", &[]).await.is_err(),
    }
}

/// Opens connections to `url`, each from a new address (`client_ip(*next_ip)`, then the
/// next), into `conns` until one is refused; fails if more than `max` get in.
async fn fill(
    url: &str,
    ca: &str,
    next_ip: &mut u8,
    conns: &mut Vec<RawConnection>,
    max: usize,
) -> anyhow::Result<()> {
    for _ in 0..=max {
        match served(url, ca, client_ip(*next_ip)).await {
            Ok(conn) => {
                conns.push(conn);
                *next_ip += 1;
            }
            Err(_) => return Ok(()),
        }
    }
    anyhow::bail!("{} connections got in with a limit of {max}", conns.len())
}

/// `GET /version` on each connection in `open`; all must answer.
async fn all_served(open: &mut [RawConnection]) -> anyhow::Result<()> {
    for (k, c) in open.iter_mut().enumerate() {
        let r = c
            .get("/version", &[])
            .await
            .with_context(|| format!("connection {k}"))?;
        ensure!(r.status == 200, "connection {k}: {}", r.status);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_refused_and_controllers_still_get_in() {
    bounded(
        "connections_over_the_limits_are_refused_and_controllers_still_get_in",
        async {
            const MAX: usize = 12;
            const PER_IP: usize = 5;
            let mut cluster = ProcessCluster::start_with(
                BIN,
                3,
                &[
                    "--max-connections",
                    &MAX.to_string(),
                    "--max-connections-per-ip",
                    &PER_IP.to_string(),
                ],
            )
            .await?;
            let c = cluster.client().await?;
            let url = cluster.url(0);
            let ca = cluster.ca_pem().to_owned();

            // One address: PER_IP connections, then refused; another address still gets in.
            let mut first = Vec::new();
            for _ in 0..PER_IP {
                first.push(served(&url, &ca, client_ip(0)).await?);
            }
            ensure!(
                refused(&url, &ca, client_ip(0)).await,
                "connection {} from one address got in",
                PER_IP + 1
            );
            all_served(&mut first).await?;
            first.pop();
            let again = served_soon(&url, &ca, client_ip(0))
                .await
                .context("a new connection after one from the same address closed")?;
            first.push(again);

            // The listener: more connections, each from an address of its own, until
            // refused. The harness holds a few connections of its own (from 127.0.0.1),
            // so the refusal comes at MAX or before, never after.
            let mut others = Vec::new();
            let mut next_ip = 1u8;
            fill(&url, &ca, &mut next_ip, &mut others, MAX).await?;
            let held = first.len() + others.len();
            eprintln!("node 0 refused a client after {held} of ours (limit {MAX})");
            ensure!(
                held <= MAX,
                "{held} connections got in with --max-connections {MAX}"
            );
            all_served(&mut first).await?;
            all_served(&mut others).await?;

            // The other controllers are not starved: node 1 comes back as a new process
            // (new connections) and, with node 2 down, the cluster needs node 0 to hear
            // it (a write through node 1 is forwarded to node 0, or node 1 leads and
            // appends to node 0) while node 0's clients' budget is used up. The places
            // of the killed nodes' connections are taken by clients first.
            cluster.kill9(2)?;
            cluster.kill9(1)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            fill(&url, &ca, &mut next_ip, &mut others, MAX).await?;
            cluster.restart(1).await?;
            let made = create_service_retrying(&c, &cluster.url(1), "after-restart").await?;
            ensure!(made["name"] == "after-restart", "{made}");
            all_served(&mut others).await?;
            let spare = client_ip(next_ip);
            ensure!(
                refused(&url, &ca, spare).await,
                "a client got in while the budget was used up"
            );

            // A closed client connection gives its place back.
            others.pop();
            served_soon(&url, &ca, spare)
                .await
                .context("no place after a connection closed")?;
            drop(first);
            drop(others);
            let v: Value = c.get(&format!("{url}/version")).await?.body;
            ensure!(v["data"].is_object(), "node 0 after the test: {v}");
            cluster.finish();
            Ok(())
        },
    )
    .await;
}
