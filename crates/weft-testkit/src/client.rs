//! A small REST client for tests: trusts the cluster CA, keeps a token, and returns
//! status, headers and JSON body of every call without judging them.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// `error.code`, if this is an error envelope.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    /// `data`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client for one cluster (any node).
#[derive(Clone)]
pub struct TestClient {
    pub http: reqwest::Client,
    pub token: Option<String>,
}

impl TestClient {
    /// A client trusting `ca_pem`, with a per-request timeout.
    pub fn new(ca_pem: &str, timeout: Duration) -> anyhow::Result<Self> {
        weft_controller::tls::install_crypto_provider();
        let http = weft_controller::tls::http_client(ca_pem, None, timeout)?;
        Ok(TestClient { http, token: None })
    }

    /// Like [`TestClient::new`], with connections from the local address `local` (e.g.
    /// `127.0.0.9`): the controller sees that source address, so tests of per-address
    /// limits can act as several clients from one machine.
    pub fn bound(ca_pem: &str, timeout: Duration, local: std::net::IpAddr) -> anyhow::Result<Self> {
        weft_controller::tls::install_crypto_provider();
        let config = weft_controller::tls::client_config(ca_pem, None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .no_proxy()
            .http1_only()
            .timeout(timeout)
            .local_address(local)
            .build()?;
        Ok(TestClient { http, token: None })
    }

    /// Sends a request with the current token (if any); `raw` bodies are sent as they are.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Reply> {
        self.send_with(method, url, body, &[]).await
    }

    /// [`TestClient::send`] with extra request headers (`If-Match`, `Idempotency-Key`...).
    pub async fn send_with(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            req = req.header("zt-session", t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_vec());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("sending to {url}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// GET.
    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, None).await
    }

    /// POST JSON.
    pub async fn post(&self, url: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(Method::POST, url, Some(&serde_json::to_vec(body)?))
            .await
    }

    /// Logs in as `user` on `base` and keeps the token.
    pub async fn login(
        &mut self,
        base: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        let r = self
            .post(
                &format!("{base}/edge/client/v1/authenticate?method=password"),
                &serde_json::json!({"username": user, "password": password}),
            )
            .await?;
        anyhow::ensure!(r.status == 200, "login failed: {} {}", r.status, r.body);
        let token = r.data()["token"].as_str().context("no token")?.to_owned();
        self.token = Some(token.clone());
        Ok(token)
    }
}
