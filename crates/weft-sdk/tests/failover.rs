//! The SDK's failover rules, each against scripted HTTPS servers (see `support`), so
//! every answer sequence is exact: which server got each attempt, when, and with which
//! headers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{dead_url, Action, Fake, Reply};
use weft_sdk::{Error, IdentityFile, Request};

const SERVICES: &str = "/edge/management/v1/services";

/// Collects trace lines.
fn tracer() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&str) + Send + Sync + 'static,
) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |l: &str| {
        sink.lock().unwrap().push(l.to_owned())
    })
}

#[tokio::test]
async fn login_learns_the_members_and_sends_the_token() {
    let fake = Fake::start(3).await;
    let (lines, trace) = tracer();
    let client = fake
        .builder(Some(vec![fake.urls[0].clone()]))
        .trace(trace)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        client.controllers(),
        fake.urls,
        "the member list is learned"
    );
    let logins = fake.seen_at("/authenticate");
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].query, "method=password");
    assert_eq!(
        logins[0].body,
        json!({"username": "admin", "password": "secret"})
    );
    let token = client.session().unwrap().token;
    let resp = client
        .send(Request::post(SERVICES, json!({"name": "a"})))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.controller, fake.urls[0]);
    let seen = fake.seen_at(SERVICES);
    assert_eq!(seen[0].header("zt-session"), Some(token.as_str()));
    assert_eq!(seen[0].body, json!({"name": "a"}));
    let lines = lines.lock().unwrap().clone();
    let post = format!("> POST {}{SERVICES}", fake.urls[0]);
    assert!(lines.contains(&post), "{lines:?}");
    let answer = format!("< 201 {}{SERVICES} ", fake.urls[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&answer) && l.contains("ms")),
        "{lines:?}"
    );
    assert_eq!(client.stats().calls, 1);
}

#[tokio::test]
async fn not_in_quorum_switches_at_once_to_a_controller_the_answer_names() {
    let fake = Fake::start(3).await;
    let client = fake.builder(None).connect().await.unwrap();
    fake.clear();
    // Server 0 names server 2 (not the next in order, 1). A Retry-After on the 421 must
    // not cause a wait either.
    fake.script(
        0,
        SERVICES,
        Reply::error(421, "CONTROLLER_NOT_IN_QUORUM", "no quorum")
            .error_data(json!({"controllers": [fake.urls[2]]}))
            .header("retry-after", "2")
            .act(),
    );
    let resp = client
        .send(Request::post(SERVICES, json!({"name": "x"})))
        .await
        .unwrap();
    assert_eq!(resp.controller, fake.urls[2]);
    let seen = fake.seen_at(SERVICES);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].server, seen[1].server), (0, 2));
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap < Duration::from_millis(1000),
        "the switch waited {gap:?}"
    );
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
    assert_eq!(client.stats().retries_not_in_quorum, 1);
    // Server 0 is marked down; the client stays with server 2.
    client.show(&format!("{SERVICES}/x")).await.unwrap();
    assert_eq!(fake.seen_at(SERVICES).last().unwrap().server, 2);
}

#[tokio::test]
async fn a_421_naming_an_unknown_controller_adds_it() {
    let fake = Fake::start(3).await;
    // The member list names servers 0 and 1 only; server 2 is learned from the 421.
    fake.set_members(fake.urls[..2].to_vec());
    let client = fake
        .builder(Some(vec![fake.urls[0].clone()]))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.controllers(), fake.urls[..2].to_vec());
    fake.script(
        0,
        SERVICES,
        Reply::error(421, "CONTROLLER_NOT_IN_QUORUM", "no quorum")
            .error_data(json!({"controllers": [fake.urls[2]]}))
            .act(),
    );
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 2);
    assert_eq!(client.controllers(), fake.urls);
    // The 421 also made the client fetch the member list again (in the background).
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.seen_at("/controllers").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.seen_at("/controllers").len(), 2);
}

#[tokio::test]
async fn no_leader_timeout_and_too_many_back_off_at_least_retry_after() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    for (status, code) in [
        (503, "CLUSTER_NO_LEADER"),
        (503, "TIMEOUT"),
        (429, "SERVER_TOO_MANY_REQUESTS"),
    ] {
        fake.clear();
        fake.script(
            0,
            SERVICES,
            Reply::error(status, code, "later")
                .header("retry-after", "1")
                .act(),
        );
        let resp = client
            .send(Request::post(SERVICES, json!({"name": code})))
            .await
            .unwrap();
        let seen = fake.seen_at(SERVICES);
        assert_eq!(seen.len(), 2, "{code}: {seen:?}");
        // Same controller (every one would say the same), after Retry-After.
        assert_eq!((seen[0].server, seen[1].server), (0, 0), "{code}");
        assert_eq!(resp.controller, fake.urls[0]);
        let gap = seen[1].at - seen[0].at;
        assert!(
            gap >= Duration::from_secs(1),
            "{code}: retried after {gap:?}"
        );
        assert_eq!(
            seen[0].header("idempotency-key"),
            seen[1].header("idempotency-key")
        );
    }
    let stats = client.stats();
    assert_eq!(
        (
            stats.retries_no_leader,
            stats.retries_timeout,
            stats.retries_too_many
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_login_rate_limit_is_returned_at_once_not_waited_out() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    fake.script(
        0,
        SERVICES,
        Reply::error(429, "RATE_LIMITED", "too many failed logins")
            .header("retry-after", "60")
            .act(),
    );
    let started = Instant::now();
    let err = client.show(SERVICES).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.code(), Some("RATE_LIMITED"));
    assert_eq!(fake.seen_at(SERVICES).len(), 1, "not retried");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(client.stats().retries_too_many, 0);
}

#[tokio::test]
async fn backoff_grows_with_jitter_until_the_answer_changes() {
    let fake = Fake::start(1).await;
    let client = fake
        .builder(None)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    for _ in 0..5 {
        fake.script(
            0,
            SERVICES,
            Reply::error(503, "CLUSTER_NO_LEADER", "election").act(),
        );
    }
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 0);
    assert_eq!(fake.seen_at(SERVICES).len(), 6);
    assert_eq!(client.stats().retries_no_leader, 5);
}

#[tokio::test]
async fn a_deadline_shorter_than_retry_after_gives_unavailable_without_waiting() {
    let fake = Fake::start(1).await;
    let client = fake
        .builder(None)
        .call_timeout(Duration::from_millis(600))
        .connect()
        .await
        .unwrap();
    fake.script(
        0,
        SERVICES,
        Reply::error(503, "CLUSTER_NO_LEADER", "election")
            .header("retry-after", "1")
            .act(),
    );
    let started = Instant::now();
    let err = client.show(SERVICES).await.unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::Unavailable { attempts, last } => {
            assert_eq!(*attempts, 1);
            assert!(last.contains("CLUSTER_NO_LEADER"), "{last}");
            assert!(last.contains(&fake.urls[0]), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(1),
        "it waited past its deadline: {took:?}"
    );
    assert_eq!(fake.seen_at(SERVICES).len(), 1);
}

#[tokio::test]
async fn connection_refused_moves_to_the_next_and_skips_the_dead_one_for_a_while() {
    let fake = Fake::start(2).await;
    let dead = dead_url();
    let (lines, trace) = tracer();
    let client = fake
        .builder(Some(vec![
            dead.clone(),
            fake.urls[0].clone(),
            fake.urls[1].clone(),
        ]))
        .down_for(Duration::from_secs(30))
        .trace(trace)
        .connect()
        .await
        .unwrap();
    // The login tried the dead one first, then went on to server 0 at once.
    assert_eq!(fake.seen_at("/authenticate")[0].server, 0);
    assert_eq!(client.stats().retries_transport, 1);
    for _ in 0..3 {
        client.show(SERVICES).await.unwrap();
    }
    let to_dead = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.starts_with("> ") && l.contains(&dead))
            .count()
    };
    assert_eq!(
        to_dead(&lines.lock().unwrap()),
        1,
        "the dead controller was tried again"
    );
    // When server 0 also fails, the next is server 1, not the dead one (still down).
    fake.script(0, SERVICES, Action::Close);
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 1);
    assert_eq!(to_dead(&lines.lock().unwrap()), 1);
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with(&format!("< ERR {dead}"))));
}

#[tokio::test]
async fn a_dead_controller_is_tried_again_once_its_mark_expires() {
    let fake = Fake::start(1).await;
    let dead = dead_url();
    let (lines, trace) = tracer();
    let client = fake
        .builder(Some(vec![fake.urls[0].clone(), dead.clone()]))
        .down_for(Duration::from_millis(300))
        .trace(trace)
        .connect()
        .await
        .unwrap();
    // Server 0 resets: the dead one is next (refused), then, all being down, a backoff
    // and server 0 again.
    fake.script(0, SERVICES, Action::Close);
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 0);
    let lines = lines.lock().unwrap().clone();
    let exchanges: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("> GET") && l.contains(SERVICES))
        .collect();
    assert_eq!(exchanges.len(), 3, "{lines:?}");
    assert!(exchanges[0].contains(&fake.urls[0]), "{exchanges:?}");
    assert!(exchanges[1].contains(&dead), "{exchanges:?}");
    assert!(exchanges[2].contains(&fake.urls[0]), "{exchanges:?}");
    assert_eq!(client.stats().retries_transport, 2);
}

#[tokio::test]
async fn every_controller_down_gives_unavailable_with_the_attempt_count() {
    let fake = Fake::start(1).await;
    let (a, b) = (dead_url(), dead_url());
    let started = Instant::now();
    let err = fake
        .builder(Some(vec![a.clone(), b.clone()]))
        .call_timeout(Duration::from_millis(800))
        .down_for(Duration::from_millis(100))
        .backoff(Duration::from_millis(50), Duration::from_millis(100))
        .connect()
        .await
        .unwrap_err();
    match &err {
        Error::Unavailable { attempts, last } => {
            assert!(
                *attempts >= 3,
                "both were tried, then again after backoff: {attempts}"
            );
            assert!(last.contains("127.0.0.1"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn reset_and_timeout_retry_elsewhere_with_the_same_idempotency_key() {
    let fake = Fake::start(3).await;
    let client = fake
        .builder(None)
        .attempt_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    fake.clear();
    fake.script(0, SERVICES, Action::Close);
    fake.script(1, SERVICES, Action::Hang);
    let resp = client
        .send(Request::post(SERVICES, json!({"name": "once"})).if_match(7))
        .await
        .unwrap();
    assert_eq!(resp.controller, fake.urls[2]);
    let seen = fake.seen_at(SERVICES);
    let servers: Vec<usize> = seen.iter().map(|s| s.server).collect();
    assert_eq!(servers, vec![0, 1, 2]);
    let key = seen[0].header("idempotency-key").expect("a key").to_owned();
    assert!(key.len() >= 16);
    for s in &seen {
        assert_eq!(s.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(s.header("if-match"), Some("7"));
        assert_eq!(s.body, json!({"name": "once"}));
    }
    assert_eq!(client.stats().retries_transport, 2);
    // Another call gets another key; a caller's own key is used as given; reads carry none.
    client
        .send(Request::post(SERVICES, json!({"name": "twice"})))
        .await
        .unwrap();
    client
        .send(Request::patch(format!("{SERVICES}/s"), json!({})).idempotency_key("mine"))
        .await
        .unwrap();
    client.show(SERVICES).await.unwrap();
    let seen = fake.seen_at(SERVICES);
    let n = seen.len();
    let other = seen[n - 3].header("idempotency-key").unwrap();
    assert_ne!(other, key);
    assert_eq!(seen[n - 2].header("idempotency-key"), Some("mine"));
    assert_eq!(seen[n - 1].header("idempotency-key"), None);
}

#[tokio::test]
async fn a_replayed_answer_is_reported() {
    let fake = Fake::start(1).await;
    let client = fake.builder(None).connect().await.unwrap();
    let mut reply = Reply::ok(json!({"id": "s1"})).header("idempotent-replayed", "true");
    reply.status = 201;
    fake.script(0, SERVICES, reply.act());
    let resp = client
        .send(Request::post(SERVICES, json!({"name": "r"})))
        .await
        .unwrap();
    assert!(resp.replayed);
    assert_eq!(resp.data()["id"], "s1");
    assert_eq!(client.stats().replays, 1);
}

#[tokio::test]
async fn unauthorized_logs_in_again_once_then_retries() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    let old = client.session().unwrap().token;
    fake.reject_token(&old);
    let resp = client
        .send(Request::post(SERVICES, json!({"name": "after-401"})))
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    let seen = fake.seen_at(SERVICES);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("zt-session"), Some(old.as_str()));
    let new = client.session().unwrap().token;
    assert_ne!(new, old);
    assert_eq!(seen[1].header("zt-session"), Some(new.as_str()));
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
    assert_eq!(fake.seen_at("/authenticate").len(), 2);
    assert_eq!(client.stats().relogins, 1);
}

#[tokio::test]
async fn a_second_401_is_returned_instead_of_looping() {
    let fake = Fake::start(1).await;
    let client = fake.builder(None).connect().await.unwrap();
    for _ in 0..3 {
        fake.script(
            0,
            SERVICES,
            Reply::error(401, "INVALID_AUTH", "denied").act(),
        );
    }
    let err = client.show(SERVICES).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some("INVALID_AUTH"));
    assert!(err.request_id().is_some());
    assert_eq!(fake.seen_at(SERVICES).len(), 2, "one retry after one login");
    assert_eq!(fake.seen_at("/authenticate").len(), 2);
}

#[tokio::test]
async fn concurrent_401s_share_one_login() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    fake.reject_token(&client.session().unwrap().token);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.show(&format!("{SERVICES}/{i}")).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        fake.seen_at("/authenticate").len(),
        2,
        "connect, then one re-login"
    );
    assert_eq!(client.stats().relogins, 1);
}

#[tokio::test]
async fn a_stored_session_without_credentials_returns_401_at_once() {
    let fake = Fake::start(1).await;
    fake.reject_token("stale");
    let err = weft_sdk::Client::builder()
        .urls(fake.urls.clone())
        .ca_pem(fake.ca_pem.clone())
        .session("stale", None)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.seen_at("/authenticate").len(), 0);
    assert_eq!(fake.seen().len(), 1);
    // A valid stored session is used as it is, without a login.
    let client = weft_sdk::Client::builder()
        .urls(fake.urls.clone())
        .ca_pem(fake.ca_pem.clone())
        .session("good", Some("2999-01-01T00:00:00.000Z".into()))
        .connect()
        .await
        .unwrap();
    client.show(SERVICES).await.unwrap();
    assert_eq!(fake.seen_at(SERVICES)[0].header("zt-session"), Some("good"));
    assert_eq!(fake.seen_at("/authenticate").len(), 0);
}

#[tokio::test]
async fn user_errors_come_back_with_code_message_and_request_id_without_retry() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    for (status, code) in [
        (404, "NOT_FOUND"),
        (409, "ENTITY_ALREADY_EXISTS"),
        (400, "INVALID_FIELD"),
        (412, "PRECONDITION_FAILED"),
        (500, "UNHANDLED"),
    ] {
        fake.clear();
        let mut reply = Reply::error(status, code, "you did that");
        reply.body["error"]["cause"] = json!("name");
        let rid = reply.body["error"]["requestId"]
            .as_str()
            .unwrap()
            .to_owned();
        fake.script(0, SERVICES, reply.act());
        let err = client
            .send(Request::post(SERVICES, json!({"name": "n"})))
            .await
            .unwrap_err();
        match err {
            Error::Api {
                status: s,
                code: c,
                message,
                request_id,
                cause,
                ..
            } => {
                assert_eq!((s, c.as_str()), (status, code));
                assert_eq!(message, "you did that");
                assert_eq!(request_id.as_deref(), Some(rid.as_str()));
                assert_eq!(cause, Some(json!("name")));
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(fake.seen_at(SERVICES).len(), 1, "{code} was retried");
    }
    let s = client.stats();
    assert_eq!(
        s.retries_not_in_quorum
            + s.retries_no_leader
            + s.retries_timeout
            + s.retries_too_many
            + s.retries_transport
            + s.relogins,
        0
    );
}

#[tokio::test]
async fn answers_that_are_not_the_envelope_are_protocol_errors() {
    let fake = Fake::start(2).await;
    let client = fake.builder(None).connect().await.unwrap();
    fake.script(
        0,
        SERVICES,
        Reply {
            status: 200,
            headers: vec![],
            body: json!("not an envelope"),
        }
        .act(),
    );
    let err = client.list(SERVICES, None, 10, 0).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    // A 502 from something in between is treated as that controller failing.
    fake.script(
        0,
        SERVICES,
        Reply {
            status: 502,
            headers: vec![],
            body: json!({"proxy": "bad gateway"}),
        }
        .act(),
    );
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 1);
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires_by_one_call() {
    let fake = Fake::start(1).await;
    fake.set_ttl(Duration::from_secs(3));
    let client = fake.builder(None).connect().await.unwrap();
    let first = client.session().unwrap();
    client.show(SERVICES).await.unwrap();
    assert_eq!(fake.seen_at("/refresh").len(), 0, "refreshed too early");
    // Two thirds of the lifetime: due.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.show(SERVICES).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let refreshes = fake.seen_at("/refresh");
    assert_eq!(refreshes.len(), 1, "one refresh for concurrent calls");
    assert_eq!(
        refreshes[0].header("zt-session"),
        Some(first.token.as_str())
    );
    let second = client.session().unwrap();
    assert_ne!(second.token, first.token);
    assert_ne!(second.expires_at, first.expires_at);
    let after: Vec<_> = fake
        .seen_at(SERVICES)
        .into_iter()
        .filter(|s| s.at > refreshes[0].at)
        .collect();
    assert_eq!(after.len(), 5);
    assert!(after
        .iter()
        .all(|s| s.header("zt-session") == Some(second.token.as_str())));
    assert_eq!(client.stats().refreshes, 1);
    assert_eq!(client.stats().relogins, 0);
}

#[tokio::test]
async fn an_identity_file_logs_in_with_its_certificate() {
    let fake = Fake::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.json");
    let doc = json!({
        "ztAPI": fake.urls[1],
        "ztAPIs": [fake.urls[1], fake.urls[0]],
        "id": {
            "key": format!("pem:{}", fake.client_key_pem),
            "cert": format!("pem:{}", fake.client_cert_pem),
            "ca": format!("pem:{}", fake.ca_pem),
        }
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let id = IdentityFile::load(&path).unwrap();
    let client = weft_sdk::Client::builder()
        .identity(id)
        .connect()
        .await
        .unwrap();
    let logins = fake.seen_at("/authenticate");
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].server, 1, "ztAPIs order");
    assert_eq!(logins[0].query, "method=cert");
    assert_eq!(logins[0].body, serde_json::Value::Null, "no body");
    assert!(logins[0].client_cert, "the certificate was presented");
    // A relogin after a 401 uses the certificate again.
    fake.reject_token(&client.session().unwrap().token);
    client.show(SERVICES).await.unwrap();
    let logins = fake.seen_at("/authenticate");
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[1].query, "method=cert");
}

#[tokio::test]
async fn lists_page_through_and_logout_forgets_the_session() {
    let fake = Fake::start(1).await;
    let client = fake.builder(None).connect().await.unwrap();
    let page = |items: Vec<serde_json::Value>, offset: u64, total: u64| {
        let mut r = Reply::ok(json!(items));
        r.body["meta"] =
            json!({"pagination": {"limit": 500, "offset": offset, "totalCount": total}});
        r.act()
    };
    let first: Vec<_> = (0..500).map(|i| json!({"id": i})).collect();
    fake.script(0, SERVICES, page(first, 0, 502));
    fake.script(
        0,
        SERVICES,
        page(vec![json!({"id": 500}), json!({"id": 501})], 500, 502),
    );
    let all = client
        .list_all(SERVICES, Some("name = \"x\""))
        .await
        .unwrap();
    assert_eq!(all.len(), 502);
    let seen = fake.seen_at(SERVICES);
    assert_eq!(seen.len(), 2);
    assert!(seen[1].query.contains("offset=500"), "{}", seen[1].query);
    assert!(seen[0].query.contains("filter=name"), "{}", seen[0].query);
    client.logout().await.unwrap();
    let out = fake.seen_at("/current-api-session");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method, "DELETE");
    assert_eq!(client.session(), None);
}

#[tokio::test]
async fn a_refresh_refused_as_expired_logs_in_again() {
    let fake = Fake::start(1).await;
    fake.set_ttl(Duration::from_secs(1));
    let client = fake.builder(None).connect().await.unwrap();
    let old = client.session().unwrap().token;
    // The token expired while the client was idle: the server refuses it, refresh too.
    fake.reject_token(&old);
    fake.set_ttl(Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let resp = client.show(SERVICES).await.unwrap();
    assert_eq!(resp["server"], 0);
    let refreshes = fake.seen_at("/refresh");
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].header("zt-session"), Some(old.as_str()));
    assert_eq!(fake.seen_at("/authenticate").len(), 2);
    let seen = fake.seen_at(SERVICES);
    assert_eq!(seen.len(), 1, "the call went out once, with the new token");
    assert_ne!(seen[0].header("zt-session"), Some(old.as_str()));
    let stats = client.stats();
    assert_eq!((stats.relogins, stats.refreshes), (1, 1));
}
