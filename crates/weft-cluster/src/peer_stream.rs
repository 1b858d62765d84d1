//! The raft fast path: each of openraft's replication and vote connections keeps one
//! long-lived HTTPS connection to its peer, upgraded (HTTP 101) from
//! `GET /fabric/v1/peer-stream` to a plain request/reply protocol of framed JSON.
//!
//! Why: every raft write waits for one append round trip to a follower. As ordinary
//! HTTP/1.1 requests through the pooled client and the API's router and middleware, that
//! round trip cost about 0.25 ms more on loopback than the follower spent serving it,
//! a quarter of a single client's write latency. On the stream the calling task writes
//! the frame itself and the peer's connection task hands it straight to raft.
//!
//! The stream carries the same messages as the HTTP route, `POST /fabric/v1/peer/{rpc}`,
//! which stays for snapshots, probes and requests for the leader. It is opened with the
//! same client (so the same cluster certificate) and accepted by the same TLS listener,
//! so the peer check is the same. One request is in flight per stream: openraft calls a
//! connection's methods one at a time.
//!
//! Frame: `u32` big-endian length of what follows, one tag byte, the JSON payload.
//! Requests are tagged with the RPC ([`RpcKind::tag`]); replies with [`REPLY_OK`] (the
//! payload is the RPC's wire result) or [`REPLY_BAD_REQUEST`] (the payload is the error
//! text).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::faults::RpcKind;
use crate::peer::PeerError;

/// Path of the upgrade request.
pub const STREAM_PATH: &str = "/fabric/v1/peer-stream";
/// The `Upgrade` protocol token; a peer that does not know it refuses the upgrade.
pub const PROTOCOL: &str = "weft-peer/1";
/// Largest frame either side accepts (snapshots do not use the stream).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Reply tag: the payload is the RPC's JSON wire result.
pub const REPLY_OK: u8 = 0;
/// Reply tag: the request could not be decoded; the payload is the reason.
pub const REPLY_BAD_REQUEST: u8 = 1;

impl RpcKind {
    /// The request tag of this RPC on the stream.
    pub fn tag(self) -> u8 {
        match self {
            RpcKind::Append => 1,
            RpcKind::Vote => 2,
            RpcKind::Snapshot => 3,
            RpcKind::TransferLeader => 4,
            RpcKind::Probe => 5,
            RpcKind::Leader => 6,
        }
    }

    /// The RPC a request tag names.
    pub fn from_tag(tag: u8) -> Option<RpcKind> {
        RpcKind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// Writes one frame and flushes it (one write call: TLS sends it as one record).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: u8,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len() + 1)
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "peer frame too large"))?;
    let mut buf = Vec::with_capacity(payload.len() + 5);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(tag);
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame: its tag and payload. `Ok(None)` when the other side closed the
/// stream cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes"),
        ));
    }
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag).await?;
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).await?;
    Ok(Some((tag[0], payload)))
}

/// The client end of one stream.
pub(crate) struct StreamClient {
    io: reqwest::Upgraded,
}

impl StreamClient {
    /// Opens a stream to the peer at `base_url` with `http` (which presents this node's
    /// cluster certificate). A refused connection is [`PeerError::Unreachable`].
    pub(crate) async fn open(
        http: &reqwest::Client,
        base_url: &str,
        timeout: Duration,
    ) -> Result<StreamClient, PeerError> {
        let url = format!("{}{STREAM_PATH}", base_url.trim_end_matches('/'));
        let open = async {
            let resp = http
                .get(&url)
                .header("connection", "upgrade")
                .header("upgrade", PROTOCOL)
                .send()
                .await
                .map_err(|e| crate::peer::classify(&url, e))?;
            if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
                return Err(PeerError::BadReply(format!(
                    "{url}: upgrade refused with HTTP {}",
                    resp.status()
                )));
            }
            resp.upgrade()
                .await
                .map_err(|e| PeerError::Timeout(format!("{url}: upgrade: {e}")))
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(io) => Ok(StreamClient { io: io? }),
            Err(_) => Err(PeerError::Timeout(format!(
                "{url}: opening the stream timed out"
            ))),
        }
    }

    /// Sends one request and reads its reply. Any error leaves the stream unusable (the
    /// caller drops it): a late reply would otherwise be read as the next one's.
    pub(crate) async fn call(&mut self, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>, PeerError> {
        let io_err = |e: io::Error| PeerError::Timeout(format!("peer stream: {e}"));
        write_frame(&mut self.io, kind.tag(), body)
            .await
            .map_err(io_err)?;
        match read_frame(&mut self.io).await.map_err(io_err)? {
            Some((REPLY_OK, payload)) => Ok(payload),
            Some((REPLY_BAD_REQUEST, payload)) => Err(PeerError::BadReply(format!(
                "peer refused the message: {}",
                String::from_utf8_lossy(&payload)
            ))),
            Some((tag, _)) => Err(PeerError::BadReply(format!("unknown reply tag {tag}"))),
            None => Err(PeerError::Timeout("peer closed the stream".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_clean_close_is_none() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, RpcKind::Append.tag(), b"{\"x\":1}")
            .await
            .unwrap();
        write_frame(&mut a, REPLY_OK, b"").await.unwrap();
        drop(a);
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            Some((1, b"{\"x\":1}".to_vec()))
        );
        assert_eq!(read_frame(&mut b).await.unwrap(), Some((REPLY_OK, vec![])));
        assert_eq!(read_frame(&mut b).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_or_empty_frames_are_refused_without_allocating() {
        for len in [0u32, (MAX_FRAME + 1) as u32, u32::MAX] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(&len.to_be_bytes()).await.unwrap();
            let err = read_frame(&mut b).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{len}");
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_error_not_a_close() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(&[1, b'{']).await.unwrap();
        drop(a);
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn every_rpc_has_a_distinct_tag_that_maps_back() {
        let mut tags = std::collections::BTreeSet::new();
        for k in RpcKind::ALL {
            assert!(tags.insert(k.tag()), "{k:?} shares its tag");
            assert_eq!(RpcKind::from_tag(k.tag()), Some(k));
            assert_ne!(k.tag(), REPLY_OK);
        }
        assert_eq!(RpcKind::from_tag(0), None);
        assert_eq!(RpcKind::from_tag(200), None);
    }
}
