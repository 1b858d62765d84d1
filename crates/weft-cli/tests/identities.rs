//! Identities that log in, against real `weft` processes: a `updb` authenticator gives an
//! identity a password login on every controller; a non-admin session is refused by the
//! management API (403) but sees its own identity and services on the client API; the
//! password hash is never shown nor filterable; a password reset and an identity's
//! deletion take effect.

mod common;

use anyhow::{ensure, Context};
use common::*;
use reqwest::Method;
use serde_json::json;
use weft_testkit::client::{Reply, TestClient};

/// Logs in on `base` with a fresh client; the reply of authenticate.
async fn login(
    cluster_ca: &str,
    base: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<(TestClient, Reply)> {
    let mut c = TestClient::new(cluster_ca, WAIT)?;
    let r = c
        .post(
            &format!("{base}/edge/client/v1/authenticate?method=password"),
            &json!({"username": user, "password": password}),
        )
        .await?;
    if r.status == 200 {
        c.login(base, user, password).await?;
    }
    Ok((c, r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_log_in_with_updb_and_see_only_what_policies_grant() {
    bounded("identities_log_in_with_updb_and_see_only_what_policies_grant", async {
        let cluster = start(3).await?;
        let admin = cluster.client().await?;
        let ca = cluster.ca_pem().to_owned();
        let b0 = cluster.url(0);

        let bob = create(&admin, &b0, "identities", json!({"name": "bob", "roleAttributes": ["dev"]})).await?;
        let bob_id = bob["id"].as_str().context("id")?.to_owned();
        let web = create(&admin, &b0, "services", json!({"name": "web", "roleAttributes": ["web"]})).await?;
        create(&admin, &b0, "services", json!({"name": "secret-db"})).await?;
        create(
            &admin,
            &b0,
            "service-policies",
            json!({"name": "devs-dial-web", "type": "Dial", "identityRoles": ["#dev"], "serviceRoles": ["#web"]}),
        )
        .await?;
        let auth = create(
            &admin,
            &b0,
            "authenticators",
            json!({"method": "updb", "identityId": bob_id, "username": "bob", "password": "correct horse"}),
        )
        .await?;
        ensure!(auth.get("passwordHash").is_none() && auth.get("password").is_none(), "secret shown: {auth}");
        let auth_id = auth["id"].as_str().context("id")?.to_owned();

        // Bad authenticators: short password, unknown identity, the admin's user name.
        for (what, body, code) in [
            ("short password", json!({"method": "updb", "identityId": bob_id, "username": "b2", "password": "short"}), "INVALID_FIELD"),
            ("unknown identity", json!({"method": "updb", "identityId": "nope", "username": "b3", "password": "long enough"}), "INVALID_FIELD"),
            ("admin's name", json!({"method": "updb", "identityId": bob_id, "username": "admin", "password": "long enough"}), "INVALID_FIELD"),
            ("unknown method", json!({"method": "cert2", "identityId": bob_id, "username": "b4", "password": "long enough"}), "INVALID_FIELD"),
            ("duplicate user name", json!({"method": "updb", "identityId": bob_id, "username": "bob", "password": "long enough"}), "ENTITY_ALREADY_EXISTS"),
        ] {
            let r = admin.post(&format!("{b0}{MGMT}/authenticators"), &body).await?;
            ensure!(r.code() == Some(code), "{what}: HTTP {} {}", r.status, r.body);
        }

        // The hash can be neither read nor probed with a filter.
        let r = admin.get(&format!("{b0}{MGMT}/authenticators/{auth_id}")).await?;
        ensure!(r.status == 200 && r.data().get("passwordHash").is_none(), "GET shows the hash: {}", r.body);
        let r = admin
            .get(&format!("{b0}{MGMT}/authenticators?filter=passwordHash%20startswith%20%22%24argon2%22"))
            .await?;
        ensure!(r.status == 200 && r.data().as_array().map(Vec::len) == Some(0), "hash filterable: {}", r.body);

        // Bob logs in on every node (the authenticator is replicated).
        cluster.wait_caught_up(WAIT).await?;
        for k in 0..3 {
            let (_, r) = login(&ca, &cluster.url(k), "bob", "correct horse").await?;
            ensure!(r.status == 200 && r.data()["isAdmin"] == false, "bob on node {k}: {}", r.body);
            ensure!(r.data()["identity"] == bob_id.as_str(), "session identity: {}", r.body);
        }
        let (_, r) = login(&ca, &b0, "bob", "wrong password").await?;
        ensure!(r.status == 401 && r.code() == Some("INVALID_AUTH"), "wrong password: {}", r.body);

        // A non-admin: 403 on the management API, its own view on the client API.
        let (bob_c, _) = login(&ca, &cluster.url(1), "bob", "correct horse").await?;
        let b1 = cluster.url(1);
        for (method, path) in [
            (Method::GET, format!("{MGMT}/services")),
            (Method::POST, format!("{MGMT}/identities")),
            (Method::GET, format!("{MGMT}/identities/{bob_id}/services")),
            (Method::GET, "/fabric/v1/cluster/list-members".to_owned()),
        ] {
            let r = bob_c.send(method.clone(), &format!("{b1}{path}"), Some(b"{}")).await?;
            ensure!(r.status == 403 && r.code() == Some("FORBIDDEN"), "{method} {path} as bob: HTTP {} {}", r.status, r.body);
        }
        let r = bob_c.get(&format!("{b1}/edge/client/v1/current-identity")).await?;
        ensure!(r.status == 200 && r.data()["name"] == "bob", "current-identity: {}", r.body);
        let r = bob_c.get(&format!("{b1}/edge/client/v1/services")).await?;
        ensure!(
            r.status == 200
                && r.data().as_array().map(Vec::len) == Some(1)
                && r.data()[0]["id"] == web["id"]
                && r.data()[0]["permissions"] == json!(["Dial"]),
            "bob's services: {}",
            r.body
        );
        let r = bob_c.get(&format!("{b1}/edge/client/v1/controllers")).await?;
        ensure!(r.status == 200 && r.data().as_array().map(Vec::len) == Some(3), "controllers: {}", r.body);

        // Admins see bob's session (recorded in the background after login) and can revoke
        // it: his token then fails on every node.
        let bob_sid = bob_c
            .get(&format!("{b1}/edge/client/v1/current-api-session"))
            .await?
            .data()["id"]
            .as_str()
            .context("session id")?
            .to_owned();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let r = admin
                .get(&format!("{b0}{MGMT}/api-sessions?limit=500&filter=identityId%20%3D%20%22{bob_id}%22"))
                .await?;
            ensure!(r.status == 200, "api-sessions: HTTP {} {}", r.status, r.body);
            let listed = r.data().as_array().is_some_and(|a| a.iter().any(|s| s["id"] == bob_sid.as_str()));
            if listed {
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "bob's session never listed: {}", r.body);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let r = admin.send(Method::DELETE, &format!("{b0}{MGMT}/api-sessions/{bob_sid}"), None).await?;
        ensure!(r.status == 200, "revoke bob's session: HTTP {} {}", r.status, r.body);
        cluster.wait_caught_up(WAIT).await?;
        for k in 0..3 {
            let r = bob_c.get(&format!("{}/edge/client/v1/current-identity", cluster.url(k))).await?;
            ensure!(r.status == 401, "revoked session on node {k}: HTTP {} {}", r.status, r.body);
        }
        let r = admin.get(&format!("{b0}{MGMT}/api-sessions/{bob_sid}")).await?;
        ensure!(r.status == 404, "revoked session still listed: HTTP {}", r.status);
        let (bob_c, _) = login(&ca, &b1, "bob", "correct horse").await?;

        // An admin resets the password: the old one stops working, the new one works.
        let r = admin
            .send(
                Method::PATCH,
                &format!("{b0}{MGMT}/authenticators/{auth_id}"),
                Some(br#"{"password": "battery staple"}"#),
            )
            .await?;
        ensure!(r.status == 200, "reset: HTTP {} {}", r.status, r.body);
        let (_, r) = login(&ca, &b0, "bob", "correct horse").await?;
        ensure!(r.status == 401, "old password after reset: {}", r.body);
        let (_, r) = login(&ca, &b0, "bob", "battery staple").await?;
        ensure!(r.status == 200, "new password: {}", r.body);

        // Deleting the identity deletes its authenticator: bob can no longer log in, and his
        // open session no longer resolves to an identity.
        let r = admin.send(Method::DELETE, &format!("{b0}{MGMT}/identities/{bob_id}"), None).await?;
        ensure!(r.status == 200, "delete bob: HTTP {} {}", r.status, r.body);
        let r = admin.get(&format!("{b0}{MGMT}/authenticators/{auth_id}")).await?;
        ensure!(r.status == 404, "authenticator after its identity: HTTP {}", r.status);
        let (_, r) = login(&ca, &b0, "bob", "battery staple").await?;
        ensure!(r.status == 401, "login after delete: {}", r.body);
        cluster.wait_caught_up(WAIT).await?;
        let r = bob_c.get(&format!("{b1}/edge/client/v1/current-identity")).await?;
        ensure!(r.status == 401, "current-identity after delete: HTTP {} {}", r.status, r.body);
        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_policies_decide_which_login_methods_an_identity_may_use() {
    bounded("auth_policies_decide_which_login_methods_an_identity_may_use", async {
        let cluster = start(1).await?;
        let admin = cluster.client().await?;
        let ca = cluster.ca_pem().to_owned();
        let b0 = cluster.url(0);

        let no_pw = create(
            &admin,
            &b0,
            "auth-policies",
            json!({"name": "cert-only", "primary": {"updb": {"allowed": false}}}),
        )
        .await?;
        ensure!(no_pw["primary"]["cert"]["allowed"] == true, "omitted methods are allowed: {no_pw}");
        let pid = no_pw["id"].as_str().context("id")?.to_owned();
        let eve = create(&admin, &b0, "identities", json!({"name": "eve", "authPolicyId": pid})).await?;
        ensure!(eve["authPolicyId"] == pid.as_str(), "{eve}");
        let eve_id = eve["id"].as_str().context("id")?.to_owned();
        let plain = create(&admin, &b0, "identities", json!({"name": "frank"})).await?;
        ensure!(plain["authPolicyId"] == "default", "{plain}");
        create(
            &admin,
            &b0,
            "authenticators",
            json!({"method": "updb", "identityId": eve_id, "username": "eve", "password": "long enough"}),
        )
        .await?;

        // The policy forbids passwords: the right password is refused like a wrong one.
        let (_, r) = login(&ca, &b0, "eve", "long enough").await?;
        ensure!(r.status == 401 && r.code() == Some("INVALID_AUTH"), "{} {}", r.status, r.body);
        // Back to the default policy: the same login works.
        let r = admin
            .send(
                Method::PATCH,
                &format!("{b0}{MGMT}/identities/{eve_id}"),
                Some(br#"{"authPolicyId": "default"}"#),
            )
            .await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);
        let (_, r) = login(&ca, &b0, "eve", "long enough").await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);

        // Bad references, and deleting a policy an identity uses.
        for (body, what) in [
            (json!({"name": "g", "authPolicyId": "nope"}), "unknown policy"),
            (json!({"name": "h", "authPolicyId": ""}), "empty policy id"),
        ] {
            let r = admin.post(&format!("{b0}{MGMT}/identities"), &body).await?;
            ensure!(r.status == 400 && r.code() == Some("INVALID_FIELD"), "{what}: {} {}", r.status, r.body);
        }
        let r = admin
            .post(&format!("{b0}{MGMT}/auth-policies"), &json!({"name": "x", "primary": {"totp": {}}}))
            .await?;
        ensure!(r.status == 400, "unknown method: {} {}", r.status, r.body);
        let r = admin
            .send(
                Method::PATCH,
                &format!("{b0}{MGMT}/identities/{eve_id}"),
                Some(format!(r#"{{"authPolicyId": "{pid}"}}"#).as_bytes()),
            )
            .await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);
        let r = admin.send(Method::DELETE, &format!("{b0}{MGMT}/auth-policies/{pid}"), None).await?;
        ensure!(r.status == 409 && r.code() == Some("CAN_NOT_DELETE_REFERENCED_ENTITY"), "{} {}", r.status, r.body);
        cluster.finish();
        Ok(())
    })
    .await;
}
