//! Enrollment against real `weft` processes: an identity created with an `ott` enrollment
//! runs `weft enroll`, gets a certificate from the cluster CA, and logs in with it over mTLS
//! on every controller; a used, expired, deleted, forged or mismatched token is refused with
//! its own code; an edge router enrolls with `erott` and becomes verified.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};

/// Runs `weft enroll TOKEN_FILE --out OUT`; (success, stdout + stderr).
fn weft_enroll(dir: &std::path::Path, jwt: &str, out: &str) -> anyhow::Result<(bool, String)> {
    let token_file = dir.join(format!("{out}.jwt"));
    std::fs::write(&token_file, jwt)?;
    let o = std::process::Command::new(BIN)
        .arg("enroll")
        .arg(&token_file)
        .arg("--out")
        .arg(dir.join(out))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok((o.status.success(), text))
}

/// A client presenting the identity file's certificate.
fn cert_client(identity: &Value) -> anyhow::Result<reqwest::Client> {
    let pem = |k: &str| -> anyhow::Result<String> {
        Ok(identity["id"][k]
            .as_str()
            .and_then(|s| s.strip_prefix("pem:"))
            .with_context(|| format!("id.{k}"))?
            .to_owned())
    };
    let (cert, key, ca) = (pem("cert")?, pem("key")?, pem("ca")?);
    Ok(weft_controller::tls::http_client(
        &ca,
        Some((&cert, &key)),
        WAIT,
    )?)
}

/// `POST authenticate?method=cert` with `http`; (status, body).
async fn cert_login(http: &reqwest::Client, base: &str) -> anyhow::Result<(u16, Value)> {
    let r = http
        .post(format!("{base}/edge/client/v1/authenticate?method=cert"))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// `POST /edge/client/v1/enroll?method=M&token=T` with `body` (no session).
async fn enroll_raw(
    c: &TestClient,
    base: &str,
    method: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<Reply> {
    let anon = TestClient {
        http: c.http.clone(),
        token: None,
    };
    anon.send(
        Method::POST,
        &format!("{base}/edge/client/v1/enroll?method={method}&token={token}"),
        Some(body.as_bytes()),
    )
    .await
}

fn new_csr(hosts: &[&str]) -> anyhow::Result<String> {
    let key = weft_controller::pki::generate_key_pem()?;
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    Ok(weft_controller::pki::make_csr(&key, &hosts)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_enrolls_with_ott_and_logs_in_with_its_certificate_everywhere() {
    bounded(
        "identity_enrolls_with_ott_and_logs_in_with_its_certificate_everywhere",
        async {
            let cluster = start(3).await?;
            let admin = cluster.client().await?;
            let b0 = cluster.url(0);
            let dir = tempfile::tempdir()?;

            let carol = create(
                &admin,
                &b0,
                "identities",
                json!({"name": "carol", "roleAttributes": ["dev"], "enrollment": {"ott": true}}),
            )
            .await?;
            let carol_id = carol["id"].as_str().context("id")?.to_owned();
            let jwt = carol["enrollment"]["ott"]["jwt"]
                .as_str()
                .with_context(|| format!("no enrollment.ott.jwt in {carol}"))?
                .to_owned();
            ensure!(carol.get("passwordHash").is_none());
            // Another node shows the same open enrollment.
            let r = admin
                .get(&format!(
                    "{}{MGMT}/identities/{carol_id}?consistency=linearizable",
                    cluster.url(1)
                ))
                .await?;
            ensure!(
                r.data()["enrollment"]["ott"]["jwt"] == jwt.as_str(),
                "{}",
                r.body
            );

            let (ok, out) = weft_enroll(dir.path(), &jwt, "carol.json")?;
            ensure!(ok, "weft enroll failed: {out}");
            let path = dir.path().join("carol.json");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
                ensure!(mode == 0o600, "identity file mode {mode:o}");
            }
            let identity: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            ensure!(
                identity["ztAPIs"].as_array().map(Vec::len) == Some(3),
                "controller URLs: {identity}"
            );
            for k in ["key", "cert", "ca"] {
                ensure!(
                    identity["id"][k]
                        .as_str()
                        .is_some_and(|s| s.starts_with("pem:-----BEGIN")),
                    "id.{k}"
                );
            }

            // The token is spent: a second enrollment is 410, and an existing file is never
            // overwritten.
            let (ok, out) = weft_enroll(dir.path(), &jwt, "again.json")?;
            ensure!(
                !ok && out.contains("410") && out.contains("INVALID_ENROLLMENT_ALREADY_ENROLLED"),
                "{out}"
            );
            let (ok, out) = weft_enroll(dir.path(), &jwt, "carol.json")?;
            ensure!(!ok && out.contains("already exists"), "{out}");

            // Certificate login works on every controller, as carol.
            let http = cert_client(&identity)?;
            for i in 0..3 {
                let (status, body) = cert_login(&http, &cluster.url(i)).await?;
                ensure!(status == 200, "cert login on node {i}: {status} {body}");
                let token = body["data"]["token"].as_str().context("token")?;
                let me: Value = http
                    .get(format!(
                        "{}/edge/client/v1/current-identity",
                        cluster.url(i)
                    ))
                    .header("zt-session", token)
                    .send()
                    .await?
                    .json()
                    .await?;
                ensure!(me["data"]["id"] == carol_id.as_str(), "{me}");
                // A non-admin: the management API is closed to it.
                let s = http
                    .get(format!("{}{MGMT}/identities", cluster.url(i)))
                    .header("zt-session", token)
                    .send()
                    .await?
                    .status()
                    .as_u16();
                ensure!(s == 403, "management API as carol: {s}");
            }
            // No client certificate, no certificate login.
            let r = admin
                .post(
                    &format!("{b0}/edge/client/v1/authenticate?method=cert"),
                    &json!({}),
                )
                .await?;
            ensure!(
                r.status == 401 && r.code() == Some("INVALID_AUTH"),
                "{} {}",
                r.status,
                r.body
            );

            // The enrollment is used; the cert authenticator exists; deleting it ends logins.
            let r = admin
                .get(&format!("{b0}{MGMT}/identities/{carol_id}"))
                .await?;
            ensure!(r.data()["enrollment"] == json!({}), "{}", r.body);
            let r = admin
                .get(&format!(
                    "{b0}{MGMT}/authenticators?filter=method%20%3D%20%22cert%22"
                ))
                .await?;
            let auths = r.data().as_array().context("list")?.clone();
            ensure!(
                auths.len() == 1 && auths[0]["identityId"] == carol_id.as_str(),
                "{}",
                r.body
            );
            let auth_id = auths[0]["id"].as_str().context("id")?;
            let r = admin
                .send(
                    Method::DELETE,
                    &format!("{b0}{MGMT}/authenticators/{auth_id}"),
                    None,
                )
                .await?;
            ensure!(r.status == 200, "{} {}", r.status, r.body);
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..3 {
                let (status, body) = cert_login(&http, &cluster.url(i)).await?;
                ensure!(
                    status == 401,
                    "cert login after delete on node {i}: {status} {body}"
                );
            }
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_refused_when_used_expired_deleted_forged_or_mismatched() {
    bounded(
        "enrollment_tokens_refused_when_used_expired_deleted_forged_or_mismatched",
        async {
            let cluster = start(1).await?;
            let admin = cluster.client().await?;
            let b0 = cluster.url(0);

            let dave = create(&admin, &b0, "identities", json!({"name": "dave"})).await?;
            let dave_id = dave["id"].as_str().context("id")?.to_owned();
            ensure!(dave["enrollment"] == json!({}), "no enrollment asked: {dave}");

            // Bad enrollment creates.
            let soon = weft_model::rfc3339(weft_model::now_ms() + 3_000);
            for (body, code) in [
                (json!({"method": "ott"}), "INVALID_FIELD"),
                (json!({"method": "ott", "identityId": "nobody"}), "INVALID_FIELD"),
                (json!({"method": "updb", "identityId": dave_id}), "INVALID_FIELD"),
                (json!({"method": "ott", "identityId": dave_id, "expiresAt": "2001-01-01T00:00:00Z"}), "INVALID_FIELD"),
                (json!({"method": "ott", "identityId": dave_id, "expiresAt": "tomorrow"}), "INVALID_FIELD"),
            ] {
                let r = admin.post(&format!("{b0}{MGMT}/enrollments"), &body).await?;
                ensure!(r.status == 400 && r.code() == Some(code), "{body}: {} {}", r.status, r.body);
            }
            // One that expires in 3 s; a second open one for the same identity is a conflict.
            let e = create(
                &admin,
                &b0,
                "enrollments",
                json!({"method": "ott", "identityId": dave_id, "expiresAt": soon}),
            )
            .await?;
            let jwt = e["jwt"].as_str().context("jwt")?.to_owned();
            let r = admin
                .post(&format!("{b0}{MGMT}/enrollments"), &json!({"method": "ott", "identityId": dave_id}))
                .await?;
            ensure!(r.status == 409, "second open enrollment: {} {}", r.status, r.body);

            // Shape errors: no token, not a JWT, forged JWT, wrong method, no CSR.
            let csr = new_csr(&["localhost"])?;
            let mut forged: Vec<String> = jwt.split('.').map(str::to_owned).collect();
            forged[2] = forged[2].chars().rev().collect();
            let forged = forged.join(".");
            for (method, token, body, status, code) in [
                ("ott", "", csr.as_str(), 400, "INVALID_ENROLLMENT_TOKEN"),
                ("ott", "garbage", csr.as_str(), 400, "INVALID_ENROLLMENT_TOKEN"),
                ("ott", forged.as_str(), csr.as_str(), 400, "INVALID_ENROLLMENT_TOKEN"),
                ("erott", jwt.as_str(), csr.as_str(), 400, "INVALID_ENROLLMENT_TOKEN"),
                ("nope", jwt.as_str(), csr.as_str(), 400, "INVALID_FIELD"),
                ("ott", jwt.as_str(), "not a csr", 400, "COULD_NOT_PROCESS_CSR"),
                ("ott", jwt.as_str(), "", 400, "COULD_NOT_PROCESS_CSR"),
            ] {
                let r = enroll_raw(&admin, &b0, method, token, body).await?;
                ensure!(
                    r.status == status && r.code() == Some(code),
                    "{method} {token:.12} {body:.12}: {} {}",
                    r.status,
                    r.body
                );
            }
            // Expired: refused with its own code, and nothing is created.
            tokio::time::sleep(Duration::from_millis(3_500)).await;
            let r = enroll_raw(&admin, &b0, "ott", &jwt, &csr).await?;
            ensure!(r.status == 400 && r.code() == Some("ENROLLMENT_EXPIRED"), "{} {}", r.status, r.body);

            // Deleted: the token is withdrawn.
            let eid = e["id"].as_str().context("id")?;
            let r = admin.send(Method::DELETE, &format!("{b0}{MGMT}/enrollments/{eid}"), None).await?;
            ensure!(r.status == 200, "{}", r.body);
            let e2 = create(&admin, &b0, "enrollments", json!({"method": "ott", "identityId": dave_id})).await?;
            let r = enroll_raw(&admin, &b0, "ott", &jwt, &csr).await?;
            ensure!(r.status == 400 && r.code() == Some("INVALID_ENROLLMENT_TOKEN"), "{} {}", r.status, r.body);
            // The new one works once (JSON body form), then is 410.
            let jwt2 = e2["jwt"].as_str().context("jwt")?;
            let body = serde_json::to_string(&json!({ "csr": csr }))?;
            let r = enroll_raw(&admin, &b0, "ott", jwt2, &body).await?;
            ensure!(r.status == 200, "{} {}", r.status, r.body);
            ensure!(r.data()["identityId"] == dave_id.as_str() && r.data()["cert"].as_str().is_some_and(|c| c.contains("BEGIN CERTIFICATE")), "{}", r.body);
            let r = enroll_raw(&admin, &b0, "ott", jwt2, &body).await?;
            ensure!(r.status == 410 && r.code() == Some("INVALID_ENROLLMENT_ALREADY_ENROLLED"), "{} {}", r.status, r.body);

            // An edge router comes with its erott enrollment and is verified by using it.
            let er = create(&admin, &b0, "edge-routers", json!({"name": "er1"})).await?;
            ensure!(er["isVerified"] == false, "{er}");
            let er_jwt = er["enrollmentJwt"].as_str().with_context(|| format!("{er}"))?;
            let er_id = er["id"].as_str().context("id")?;
            let r = enroll_raw(&admin, &b0, "erott", er_jwt, &new_csr(&["er1.example", "127.0.0.9"])?).await?;
            ensure!(r.status == 200 && r.data()["edgeRouterId"] == er_id, "{} {}", r.status, r.body);
            let r = admin.get(&format!("{b0}{MGMT}/edge-routers/{er_id}")).await?;
            ensure!(
                r.data()["isVerified"] == true && r.data()["enrollmentJwt"].is_null()
                    && r.data()["fingerprint"].as_str().is_some_and(|f| f.len() == 64),
                "{}",
                r.body
            );
            // isVerified is the enrollment's to set, not a body field.
            let r = admin
                .send(Method::PATCH, &format!("{b0}{MGMT}/edge-routers/{er_id}"), Some(br#"{"isVerified": false}"#))
                .await?;
            ensure!(r.status == 400, "{} {}", r.status, r.body);

            // The enrollments list filters.
            let r = admin
                .get(&format!("{b0}{MGMT}/enrollments?filter=method%20%3D%20%22erott%22"))
                .await?;
            ensure!(r.data().as_array().map(Vec::len) == Some(1), "{}", r.body);
            // Deleting the identity takes its enrollments with it.
            let r = admin.send(Method::DELETE, &format!("{b0}{MGMT}/identities/{dave_id}"), None).await?;
            ensure!(r.status == 200, "{}", r.body);
            let r = admin
                .get(&format!("{b0}{MGMT}/enrollments?filter=method%20%3D%20%22ott%22"))
                .await?;
            ensure!(r.data().as_array().map(Vec::len) == Some(0), "{}", r.body);
            cluster.finish();
            Ok(())
        },
    )
    .await;
}
