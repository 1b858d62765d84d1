//! A fault-injecting TCP proxy for the peer traffic of real controller processes, so
//! tests can partition a cluster of `weft` processes on one machine without root.
//!
//! How it works (see [`crate::process`] for the addresses):
//!
//! * Each node listens on its own loopback address (`127.0.0.11`, `.12`, ...) but is
//!   **advertised** at a proxy port on that same address (`--advertise
//!   https://127.0.0.11:PROXY_PORT`). Members know each other by the advertised URL, so
//!   every peer connection (raft streams, snapshots, probes, writes forwarded to the
//!   leader) goes through the proxy, which relays the bytes untouched (TLS end to end;
//!   the certificate's SAN is the address, which the proxy shares).
//! * A controller whose listen address is a specific IP named by its advertised URL
//!   opens its peer connections from that IP (`local_address`; the controller's
//!   `server::peer_source`), so the proxy knows which node a connection comes from by
//!   its source address, and which node it goes to by the port it arrived on.
//! * Clients (tests, the SDK) connect from `127.0.0.1`, which is no node's address:
//!   their connections are never cut, so a test can still talk to a node in a minority
//!   (and must get 421 from it).
//! * A cut between two nodes applies to every connection between them, both ways, in
//!   one of two [`CutMode`]s: `Refuse` resets existing connections and new ones at once
//!   (like a firewall's REJECT: callers fail fast), `Blackhole` stops relaying bytes on
//!   existing connections and holds new ones unanswered (like DROP: callers time out).
//!   When a blackhole is lifted, connections that were open before it resume (delayed
//!   bytes arrive, as TCP would retransmit them) and the ones opened during it are reset.
//!
//! The same partitions can be made with iptables when a test runs as root: one rule per
//! cut pair, `-s NODE_A -d NODE_B -j REJECT` (or `DROP`) both ways on the `lo` interface.
//! The proxy needs no privileges and cuts existing connections too, hence this choice.
//!
//! The proxy runs on its own small tokio runtime (one worker thread), so a test that
//! keeps its own runtime busy (a checker, say) does not stall the cluster's traffic.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How a cut between two nodes behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CutMode {
    /// Connections are reset at once (a firewall's REJECT).
    Refuse,
    /// Bytes stop flowing and new connections get no answer (a firewall's DROP).
    Blackhole,
}

/// The cuts in force: unordered node pairs `(low, high)` and how each is cut.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rules {
    /// Cut pairs and their mode.
    cuts: BTreeMap<(usize, usize), CutMode>,
}

impl Rules {
    fn verdict(&self, a: usize, b: usize) -> Option<CutMode> {
        self.cuts.get(&(a.min(b), a.max(b))).copied()
    }
}

/// Counters of what the proxy did, for test reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted from nodes (peer traffic).
    pub peer_connections: u64,
    /// Connections accepted from clients (anything but a node's address).
    pub client_connections: u64,
    /// Connections reset because of a `Refuse` cut (new or existing).
    pub refused: u64,
    /// New connections held because of a `Blackhole` cut.
    pub blackholed: u64,
    /// Connections reset because the node behind the proxy could not be reached.
    pub upstream_failures: u64,
}

/// The live counters behind [`ProxyStats`] (fields as there).
#[derive(Default)]
struct Counters {
    peer_connections: AtomicU64,
    client_connections: AtomicU64,
    refused: AtomicU64,
    blackholed: AtomicU64,
    upstream_failures: AtomicU64,
}

/// The proxy of one cluster (see the module doc). Dropping it stops it and closes every
/// connection it relays.
pub struct PeerProxy {
    /// The proxy's own runtime (taken on drop to shut it down).
    runtime: Option<tokio::runtime::Runtime>,
    /// The cuts in force; every relayed peer connection watches them.
    rules: watch::Sender<Rules>,
    /// Node index by its address (the source of its peer connections).
    nodes: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Where peers connect to each node (its advertised address).
    fronts: Mutex<BTreeMap<usize, SocketAddr>>,
    /// What the proxy did.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PeerProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProxy")
            .field("fronts", &self.fronts)
            .field("cuts", &self.rules.borrow().cuts)
            .finish_non_exhaustive()
    }
}

impl PeerProxy {
    /// A proxy with no nodes yet, on its own runtime.
    pub fn new() -> anyhow::Result<PeerProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-peer-proxy")
            .enable_all()
            .build()
            .context("starting the proxy's runtime")?;
        Ok(PeerProxy {
            runtime: Some(runtime),
            rules: watch::Sender::new(Rules::default()),
            nodes: Arc::new(Mutex::new(HashMap::new())),
            fronts: Mutex::new(BTreeMap::new()),
            counters: Arc::new(Counters::default()),
        })
    }

    /// Puts node `index` behind the proxy: listens on `front` and relays to `back`;
    /// connections whose source address is `front`'s IP count as node `index`'s.
    pub fn add_node(
        &self,
        index: usize,
        front: SocketAddr,
        back: SocketAddr,
    ) -> anyhow::Result<()> {
        let runtime = self.runtime.as_ref().context("the proxy is stopped")?;
        let std_listener = std::net::TcpListener::bind(front)
            .with_context(|| format!("proxy: binding {front}"))?;
        std_listener.set_nonblocking(true)?;
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        lock(&self.nodes).insert(front.ip(), index);
        lock(&self.fronts).insert(index, front);
        runtime.spawn(accept_loop(
            listener,
            index,
            back,
            self.nodes.clone(),
            self.rules.subscribe(),
            self.counters.clone(),
        ));
        Ok(())
    }

    /// The address peers reach node `index` at, if it is behind the proxy.
    pub fn front(&self, index: usize) -> Option<SocketAddr> {
        lock(&self.fronts).get(&index).copied()
    }

    /// Cuts the link between nodes `a` and `b` (both ways).
    pub fn cut(&self, a: usize, b: usize, mode: CutMode) {
        if a != b {
            self.rules.send_modify(|r| {
                r.cuts.insert((a.min(b), a.max(b)), mode);
            });
        }
    }

    /// Cuts node `i` from every other node.
    pub fn isolate(&self, i: usize, mode: CutMode) {
        let others: Vec<usize> = lock(&self.fronts).keys().copied().collect();
        self.rules.send_modify(|r| {
            for j in others.into_iter().filter(|&j| j != i) {
                r.cuts.insert((i.min(j), i.max(j)), mode);
            }
        });
    }

    /// Cuts every link between two nodes of different groups (a node in no group is
    /// cut from every group's nodes, and from other such nodes).
    pub fn partition(&self, groups: &[Vec<usize>], mode: CutMode) {
        let all: Vec<usize> = lock(&self.fronts).keys().copied().collect();
        let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
        self.rules.send_modify(|r| {
            for &a in &all {
                for &b in all.iter().filter(|&&b| b > a) {
                    let same = matches!((group_of(a), group_of(b)), (Some(x), Some(y)) if x == y);
                    if !same {
                        r.cuts.insert((a, b), mode);
                    }
                }
            }
        });
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.rules.send_modify(|r| r.cuts.clear());
    }

    /// The cuts in force, as `(a, b, mode)` with `a < b`.
    pub fn cuts(&self) -> Vec<(usize, usize, CutMode)> {
        self.rules
            .borrow()
            .cuts
            .iter()
            .map(|(&(a, b), &m)| (a, b, m))
            .collect()
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            peer_connections: c.peer_connections.load(Ordering::Relaxed),
            client_connections: c.client_connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            blackholed: c.blackholed.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Allowed from inside another runtime (a plain drop is not).
            rt.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resets a connection (RST instead of FIN) when its socket is closed.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn accept_loop(
    listener: TcpListener,
    to: usize,
    back: SocketAddr,
    nodes: Arc<Mutex<HashMap<IpAddr, usize>>>,
    rules: watch::Receiver<Rules>,
    counters: Arc<Counters>,
) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of file descriptors or similar: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let from = lock(&nodes).get(&peer.ip()).copied().filter(|&f| f != to);
        let counter = if from.is_some() {
            &counters.peer_connections
        } else {
            &counters.client_connections
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let gate = from.map(|f| Gate {
            rx: rules.clone(),
            a: f,
            b: to,
        });
        tokio::spawn(relay(sock, back, gate, counters.clone()));
    }
}

/// The rules as they apply to one connection between nodes `a` and `b`.
#[derive(Clone)]
struct Gate {
    /// The rules, as they change.
    rx: watch::Receiver<Rules>,
    /// The two nodes the connection joins.
    a: usize,
    b: usize,
}

impl Gate {
    fn verdict(&mut self) -> Option<CutMode> {
        self.rx.borrow_and_update().verdict(self.a, self.b)
    }

    /// Waits while the link is blackholed; false if it is refused (or the proxy stops).
    async fn wait_open(&mut self) -> bool {
        loop {
            match self.verdict() {
                None => return true,
                Some(CutMode::Refuse) => return false,
                Some(CutMode::Blackhole) => {
                    if self.rx.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

/// How one direction of a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side cleanly (passed on as a half-close).
    Eof,
    /// A read or write failed: reset the whole connection.
    Failed,
    /// A `Refuse` cut: reset the whole connection.
    Refused,
}

/// Relays one accepted connection to `back`, obeying the rules if it is peer traffic.
async fn relay(
    mut client: TcpStream,
    back: SocketAddr,
    mut gate: Option<Gate>,
    counters: Arc<Counters>,
) {
    let _ = client.set_nodelay(true);
    if let Some(g) = gate.as_mut() {
        let blackholed = g.verdict() == Some(CutMode::Blackhole);
        if blackholed {
            counters.blackholed.fetch_add(1, Ordering::Relaxed);
        }
        let open = g.wait_open().await;
        if !open || blackholed {
            // Refused; or opened during a blackhole, whose caller has given up by now.
            if !open {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            reset(&client);
            return;
        }
    }
    let mut upstream = match TcpStream::connect(back).await {
        Ok(u) => u,
        Err(_) => {
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let up = pump(&mut cr, &mut uw, gate.clone());
        let down = pump(&mut ur, &mut cw, gate);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
            };
            if end != End::Eof {
                break end;
            }
            if up_done && down_done {
                break End::Eof;
            }
        }
    };
    if outcome != End::Eof {
        if outcome == End::Refused {
            counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        reset(&client);
        reset(&upstream);
    }
}

/// Copies bytes from `r` to `w` until end of stream (then half-closes `w`), an error,
/// or a `Refuse` cut; pauses while a `Blackhole` cut is in force.
async fn pump(r: &mut ReadHalf<'_>, w: &mut WriteHalf<'_>, mut gate: Option<Gate>) -> End {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = match gate.as_mut() {
            Some(g) => {
                if !g.wait_open().await {
                    return End::Refused;
                }
                tokio::select! {
                    changed = g.rx.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return End::Failed,
                    },
                    n = r.read(&mut buf) => n,
                }
            }
            None => r.read(&mut buf).await,
        };
        let n = match read {
            Ok(0) => {
                let _ = w.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Failed,
        };
        // Bytes already read are delivered (they were on the wire), unless the link is
        // refused meanwhile.
        let written = match gate.as_mut() {
            Some(g) => {
                let write = w.write_all(&buf[..n]);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        done = &mut write => break done.map_err(|_| End::Failed),
                        changed = g.rx.changed() => {
                            if changed.is_err() {
                                break Err(End::Failed);
                            }
                            if g.verdict() == Some(CutMode::Refuse) {
                                break Err(End::Refused);
                            }
                        }
                    }
                }
            }
            None => w.write_all(&buf[..n]).await.map_err(|_| End::Failed),
        };
        if let Err(end) = written {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on `addr` (a stand-in for a node), run on `rt`.
    fn echo(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> SocketAddr {
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let at = l.local_addr().unwrap();
        let _inside = rt.enter();
        let l = TcpListener::from_std(l).unwrap();
        rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        at
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Connects from `from` to `to` and sends `msg`; the echo within `limit`, or why not.
    async fn roundtrip(
        from: IpAddr,
        to: SocketAddr,
        msg: &[u8],
        limit: Duration,
    ) -> Result<Vec<u8>, String> {
        let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.bind(SocketAddr::new(from, 0))
            .map_err(|e| e.to_string())?;
        let go = async {
            let mut s = sock
                .connect(to)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            Ok(buf)
        };
        tokio::time::timeout(limit, go)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    #[tokio::test]
    async fn cuts_apply_to_node_pairs_and_never_to_clients() {
        let proxy = PeerProxy::new().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Three "nodes" on 127.0.0.21-23; each echo server listens on a free port.
        let mut fronts = Vec::new();
        for i in 0..3u8 {
            let back = echo(&rt, SocketAddr::new(ip(21 + i), 0));
            let probe = std::net::TcpListener::bind(SocketAddr::new(ip(21 + i), 0)).unwrap();
            let front = probe.local_addr().unwrap();
            drop(probe);
            proxy.add_node(i as usize, front, back).unwrap();
            fronts.push(front);
        }
        let short = Duration::from_millis(500);
        let client = ip(1);
        assert_eq!(
            roundtrip(ip(21), fronts[1], b"hello", short).await,
            Ok(b"hello".to_vec())
        );

        // Refuse: 0 <-> 1 reset at once, both ways; 0 <-> 2 and clients unaffected.
        proxy.cut(0, 1, CutMode::Refuse);
        let r = roundtrip(ip(21), fronts[1], b"x", short).await;
        assert!(r.as_ref().is_err_and(|e| e != "timed out"), "{r:?}");
        assert!(roundtrip(ip(22), fronts[0], b"x", short).await.is_err());
        assert_eq!(
            roundtrip(ip(21), fronts[2], b"ok", short).await,
            Ok(b"ok".to_vec())
        );
        assert_eq!(
            roundtrip(client, fronts[1], b"ok", short).await,
            Ok(b"ok".to_vec())
        );
        assert_eq!(proxy.cuts(), vec![(0, 1, CutMode::Refuse)]);

        // An open connection is reset when a refuse cut starts.
        proxy.heal();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ip(23), 0)).unwrap();
        let mut open = sock.connect(fronts[0]).await.unwrap();
        open.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.isolate(0, CutMode::Refuse);
        let mut rest = Vec::new();
        let r = tokio::time::timeout(short, open.read_to_end(&mut rest)).await;
        assert!(matches!(r, Ok(Err(_)) | Ok(Ok(0))), "{r:?}");
        assert_eq!(proxy.cuts().len(), 2);

        // Blackhole: no answer (a timeout, not a reset); an open connection stalls and
        // resumes after healing, delivering what was sent meanwhile.
        proxy.heal();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ip(23), 0)).unwrap();
        let mut open = sock.connect(fronts[1]).await.unwrap();
        open.write_all(b"a").await.unwrap();
        open.read_exact(&mut one).await.unwrap();
        proxy.partition(&[vec![0, 1], vec![2]], CutMode::Blackhole);
        assert_eq!(
            roundtrip(ip(23), fronts[0], b"x", short).await,
            Err("timed out".into())
        );
        assert_eq!(
            roundtrip(ip(21), fronts[1], b"in", short).await,
            Ok(b"in".to_vec())
        );
        open.write_all(b"b").await.unwrap();
        let stalled = tokio::time::timeout(short, open.read_exact(&mut one)).await;
        assert!(stalled.is_err(), "bytes crossed a blackhole");
        proxy.heal();
        tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&one, b"b");
        let stats = proxy.stats();
        assert!(stats.refused >= 3 && stats.blackholed >= 1, "{stats:?}");
        assert!(stats.client_connections >= 1, "{stats:?}");
        rt.shutdown_background();
    }
}
