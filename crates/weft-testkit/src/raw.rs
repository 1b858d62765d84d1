//! [`RawConnection`]: one TLS connection to a controller that speaks HTTP/1.1 by hand.
//!
//! A pooling client (reqwest) opens another connection when one was closed, which hides
//! exactly what tests of the connection limits look at. Here one value is one TCP
//! connection: a request either gets its answer on it or fails because it was closed. It
//! can connect from a chosen local address (`127.0.0.x`), so that the controller sees
//! distinct clients, and send any head (huge headers, many headers).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// Bound of a connect (TCP and TLS) and of one exchange.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One answer read off a [`RawConnection`].
#[derive(Debug, Clone)]
pub struct RawReply {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers), lower-cased.
    pub head: String,
    /// The body as text.
    pub body: String,
}

/// One TLS connection speaking HTTP/1.1 (see the module doc).
pub struct RawConnection {
    stream: TlsStream<TcpStream>,
    host: String,
}

impl RawConnection {
    /// Connects to `url` (`https://IP:PORT`) trusting `ca_pem`, from `local` if given.
    pub async fn open(url: &str, ca_pem: &str, local: Option<IpAddr>) -> anyhow::Result<Self> {
        weft_controller::tls::install_crypto_provider();
        let host = url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let addr: SocketAddr = host.parse().with_context(|| format!("address of {url}"))?;
        let config = weft_controller::tls::client_config(ca_pem, None)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let connect = async {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(ip) = local {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let tcp = socket.connect(addr).await?;
            let name = ServerName::from(addr.ip());
            connector.connect(name, tcp).await
        };
        let stream = tokio::time::timeout(TIMEOUT, connect)
            .await
            .with_context(|| format!("connecting to {url} timed out"))?
            .with_context(|| format!("connecting to {url}"))?;
        Ok(RawConnection { stream, host })
    }

    /// `GET path` with `headers` (each `Name: value`); fails if the connection was
    /// closed instead of answering.
    pub async fn get(&mut self, path: &str, headers: &[String]) -> anyhow::Result<RawReply> {
        self.send("GET", path, headers, &[], Duration::ZERO).await
    }

    /// `METHOD path` with `headers` and `body` (with its `Content-Length`), the body sent
    /// `pause` after the head (as a slow client's would arrive); fails if the connection
    /// was closed instead of answering.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[String],
        body: &[u8],
        pause: Duration,
    ) -> anyhow::Result<RawReply> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        tokio::time::timeout(TIMEOUT + pause, self.exchange(head.as_bytes(), body, pause))
            .await
            .context("no answer in time")?
    }

    async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        pause: Duration,
    ) -> anyhow::Result<RawReply> {
        self.stream.write_all(head).await?;
        self.stream.flush().await?;
        if !body.is_empty() {
            tokio::time::sleep(pause).await;
            // The server may answer (and stop reading) before the body: that is its
            // business, the answer is read below either way.
            if self.stream.write_all(body).await.is_ok() {
                let _ = self.stream.flush().await;
            }
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the connection was closed before an answer");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the connection was closed in the middle of an answer");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        Ok(RawReply { status, head, body })
    }
}
