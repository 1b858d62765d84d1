//! In-process cluster harness: N controllers in this process, each with its own temporary
//! data directory and its own loopback address, all obeying ONE shared [`Faults`] set, so
//! a test can partition, delay or drop peer traffic (by node or by kind of RPC) and then
//! talk to every node over real HTTPS.
//!
//! Nodes are addressed by their index `0..n` in the order they were started: index 0
//! bootstraps the cluster, the others join through it. Every node listens on the same
//! port but on its own address `127.A.B.(index+1)`, where `A.B` is chosen at random per
//! cluster (so clusters of parallel tests never share an address).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use weft_testkit::inproc::Cluster;
//! let mut c = Cluster::start(3).await?;
//! let leader = c.wait_leader(Duration::from_secs(5)).await?;
//! let r = c.create_service(leader, "svc-1").await?;
//! assert_eq!(r.status, 201);
//! c.crash(1).await?;
//! c.restart(1).await?;
//! c.wait_applied_equal(Duration::from_secs(10)).await?;
//! c.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Every wait takes a limit and fails with a message that shows what each node reported.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rand::Rng;
use serde_json::{json, Value};
use weft_cluster::{Faults, Node, NodeId, NodeStatus, Timing};
use weft_controller::{Controller, ControllerOptions};

use crate::client::{Reply, TestClient};

/// The admin user of every harness cluster.
pub const ADMIN_USER: &str = "admin";
/// The admin password of every harness cluster.
pub const ADMIN_PASSWORD: &str = "inproc-admin-password";
/// Base path of the management API.
pub const MGMT: &str = "/edge/management/v1";

/// How long starting one controller (bootstrap, join, restart) may take.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Per-request timeout of the clients this harness hands out.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period of the waits.
const POLL: Duration = Duration::from_millis(20);

/// Test-friendly timing: fast heartbeats and elections, short limits, so that each row
/// of the status table shows up within a second or two. Snapshot settings are the
/// defaults (override `snapshot_logs` / `logs_to_keep` for snapshot tests).
pub fn test_timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(300),
        election_max: Duration::from_millis(600),
        probe_interval: Duration::from_millis(100),
        contact_timeout: Duration::from_millis(700),
        election_wait: Duration::from_millis(1500),
        write_timeout: Duration::from_secs(3),
        ..Timing::default()
    }
}

/// One node of the harness: where it lives, and the controller when it runs.
struct Slot {
    dir: PathBuf,
    listen: SocketAddr,
    url: String,
    id: NodeId,
    ctl: Option<Controller>,
}

/// A cluster of controllers running in this process (see the module doc).
pub struct Cluster {
    // Dropped last (after the controllers): the data directories.
    slots: Vec<Slot>,
    faults: Arc<Faults>,
    timing: Timing,
    ca_pem: String,
    client: TestClient,
    _root: tempfile::TempDir,
}

/// Picks `n` loopback addresses `127.A.B.1..=n` sharing one free port.
fn pick_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    ensure!(
        (1..=250).contains(&n),
        "a harness cluster has 1 to 250 nodes, not {n}"
    );
    let mut rng = rand::thread_rng();
    'attempt: for _ in 0..50 {
        let (a, b) = (rng.gen_range(1..=254u8), rng.gen_range(0..=254u8));
        let ip = |k: usize| Ipv4Addr::new(127, a, b, (k + 1) as u8);
        let Ok(first) = StdListener::bind(SocketAddrV4::new(ip(0), 0)) else {
            continue;
        };
        let port = first.local_addr()?.port();
        let mut held = vec![first];
        for k in 1..n {
            match StdListener::bind(SocketAddrV4::new(ip(k), port)) {
                Ok(l) => held.push(l),
                Err(_) => continue 'attempt,
            }
        }
        // The listeners are dropped here; the controllers bind the same addresses at once.
        return Ok((0..n)
            .map(|k| SocketAddr::V4(SocketAddrV4::new(ip(k), port)))
            .collect());
    }
    bail!("found no free loopback address/port for {n} nodes in 50 attempts")
}

fn describe(s: &NodeStatus) -> String {
    format!(
        "id={} role={} leader={:?} term={} applied={:?} in_quorum={}",
        s.id, s.role, s.leader, s.term, s.applied, s.in_quorum
    )
}

impl Cluster {
    /// Starts `n` controllers with [`test_timing`]; see [`Cluster::start_with`].
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, test_timing()).await
    }

    /// Starts `n` controllers with `timing` (which also carries the snapshot settings):
    /// node 0 bootstraps (admin password [`ADMIN_PASSWORD`]), the others join through
    /// node 0 with a fresh join token each. Returns once every node runs, a leader is
    /// known to all, every node is in quorum and all have applied the same index.
    pub async fn start_with(n: usize, timing: Timing) -> anyhow::Result<Cluster> {
        weft_controller::tls::install_crypto_provider();
        let root = tempfile::Builder::new()
            .prefix("weft-inproc-")
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let faults = Arc::new(Faults::default());
        let addrs = pick_addrs(n)?;
        let options = |k: usize| {
            let mut o = ControllerOptions::new(root.path().join(format!("node-{k}")), addrs[k]);
            o.timing = timing.clone();
            o.faults = faults.clone();
            o.admin_user = ADMIN_USER.into();
            o
        };

        let mut first = options(0);
        first.bootstrap = true;
        first.admin_password = Some(ADMIN_PASSWORD.into());
        let c0 = start_controller(first)
            .await
            .context("bootstrapping node 0")?;
        let ca_pem = std::fs::read_to_string(c0.data_dir.join("ca.pem"))
            .context("reading node 0's ca.pem")?;
        let mut client = TestClient::new(&ca_pem, CLIENT_TIMEOUT)?;
        client.login(&c0.url, ADMIN_USER, ADMIN_PASSWORD).await?;
        let seed_url = c0.url.clone();
        let mut slots = vec![slot_of(c0, addrs[0])];

        for (k, addr) in addrs.iter().enumerate().skip(1) {
            let r = client
                .post(
                    &format!("{seed_url}/fabric/v1/cluster/join-token"),
                    &json!({}),
                )
                .await?;
            ensure!(
                r.status == 200,
                "join-token for node {k}: {} {}",
                r.status,
                r.body
            );
            let token = r.data()["token"]
                .as_str()
                .context("join-token answer without data.token")?
                .to_owned();
            let mut o = options(k);
            o.join = Some(seed_url.clone());
            o.join_token = Some(token);
            let c = start_controller(o)
                .await
                .with_context(|| format!("joining node {k}"))?;
            slots.push(slot_of(c, *addr));
        }

        let cluster = Cluster {
            slots,
            faults,
            timing,
            ca_pem,
            client,
            _root: root,
        };
        let settle = Duration::from_secs(20);
        cluster.wait_leader(settle).await?;
        cluster.wait_all_in_quorum(settle).await?;
        cluster.wait_applied_equal(settle).await?;
        Ok(cluster)
    }

    /// Number of nodes (running or crashed).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cluster has no nodes (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The timing every node runs with.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    fn slot(&self, i: usize) -> &Slot {
        assert!(
            i < self.slots.len(),
            "no node {i} (cluster of {})",
            self.slots.len()
        );
        &self.slots[i]
    }

    /// The API base URL of node `i` (`https://127.A.B.(i+1):PORT`), also while it is crashed.
    pub fn url(&self, i: usize) -> &str {
        &self.slot(i).url
    }

    /// The raft node id of node `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.slot(i).id
    }

    /// The index of the node with raft id `id`, if it is one of ours.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.slot(i).dir
    }

    /// Whether node `i` runs (not crashed).
    pub fn is_running(&self, i: usize) -> bool {
        self.slot(i).ctl.is_some()
    }

    /// Indices of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| self.is_running(*i))
            .collect()
    }

    /// The raft member of running node `i` (for in-process checks such as `status()`).
    ///
    /// Panics if node `i` is crashed.
    pub fn node(&self, i: usize) -> &Node {
        match &self.slot(i).ctl {
            Some(c) => &c.node,
            None => panic!("node {i} is not running"),
        }
    }

    /// The status node `i` reports about itself, or `None` if it is crashed.
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        self.slot(i).ctl.as_ref().map(|c| c.node.status())
    }

    /// The fault set shared by every node's peer traffic.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// A client logged in as the admin (the session was opened on node 0 and, like every
    /// session, is accepted by every node).
    pub fn client(&self) -> TestClient {
        self.client.clone()
    }

    /// A client trusting the cluster CA, without a token.
    pub fn anonymous_client(&self) -> TestClient {
        let mut c = self.client.clone();
        c.token = None;
        c
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `POST /edge/management/v1/services {"name": name}` on node `i` as the admin.
    pub async fn create_service(&self, i: usize, name: &str) -> anyhow::Result<Reply> {
        self.client
            .post(
                &format!("{}{MGMT}/services", self.url(i)),
                &json!({ "name": name }),
            )
            .await
    }

    /// Every service as node `i` sees it locally (pages through `GET /services`), as
    /// `(id, name)` pairs; fails unless every page is a 200.
    pub async fn list_services_local(&self, i: usize) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        loop {
            let url = format!(
                "{}{MGMT}/services?limit=500&offset={}",
                self.url(i),
                out.len()
            );
            let r = self.client.get(&url).await?;
            ensure!(r.status == 200, "GET {url}: {} {}", r.status, r.body);
            let items = r.data().as_array().context("list data is not an array")?;
            for it in items {
                out.push((
                    it["id"].as_str().unwrap_or_default().to_owned(),
                    it["name"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            let total = r.body["meta"]["pagination"]["totalCount"]
                .as_u64()
                .context("list without meta.pagination.totalCount")?;
            if items.is_empty() || out.len() as u64 >= total {
                return Ok(out);
            }
        }
    }

    /// `GET /health-checks` on node `i` (over HTTPS).
    pub async fn health(&self, i: usize) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(&format!("{}/health-checks", self.url(i)))
            .await?;
        ensure!(
            r.status == 200,
            "health-checks on node {i}: {} {}",
            r.status,
            r.body
        );
        Ok(r.data().clone())
    }

    fn statuses(&self, among: &[usize]) -> String {
        among
            .iter()
            .map(|i| match self.status(*i) {
                Some(s) => format!("\n  node {i}: {}", describe(&s)),
                None => format!("\n  node {i}: crashed"),
            })
            .collect()
    }

    /// Polls `check` until it gives `Some`, or fails after `limit` with `what` and the
    /// status of every node.
    async fn poll<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Cluster) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {} ms waiting for {what}; nodes:{}",
                    limit.as_millis(),
                    self.statuses(&(0..self.slots.len()).collect::<Vec<_>>())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every running node names the same leader, which is one of them and
    /// considers itself the leader; returns the leader's index.
    pub async fn wait_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        let among = self.running();
        self.wait_leader_among(&among, limit).await
    }

    /// Like [`Cluster::wait_leader`], but only the nodes in `among` must agree (and the
    /// leader must be one of them): for partitions, where the cut-off side may still
    /// believe in an old leader.
    pub async fn wait_leader_among(
        &self,
        among: &[usize],
        limit: Duration,
    ) -> anyhow::Result<usize> {
        let what = format!("one leader agreed on by nodes {among:?}");
        self.poll(limit, &what, |c| {
            let mut leader = None;
            for i in among {
                let s = c.status(*i)?;
                let l = s.leader?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            let idx = c.index_of(leader?)?;
            let s = c.status(idx)?;
            (among.contains(&idx) && s.role == "leader").then_some(idx)
        })
        .await
    }

    /// Waits until every running node reports that it reaches a quorum.
    pub async fn wait_all_in_quorum(&self, limit: Duration) -> anyhow::Result<()> {
        self.poll(limit, "every running node in quorum", |c| {
            c.running()
                .iter()
                .all(|i| c.status(*i).is_some_and(|s| s.in_quorum))
                .then_some(())
        })
        .await
    }

    /// Waits until node `i` reports `in_quorum == want`.
    pub async fn wait_in_quorum(
        &self,
        i: usize,
        want: bool,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("node {i} to report in_quorum={want}");
        self.poll(limit, &what, |c| {
            c.status(i)
                .is_some_and(|s| s.in_quorum == want)
                .then_some(())
        })
        .await
    }

    /// Waits until every running node has applied the same (non-empty) log index, and
    /// that index is at least what the leader (if any) had committed when the wait began.
    /// Returns the index.
    pub async fn wait_applied_equal(&self, limit: Duration) -> anyhow::Result<u64> {
        let floor = self
            .running()
            .iter()
            .filter_map(|i| self.status(*i))
            .filter(|s| s.role == "leader")
            .filter_map(|s| s.applied)
            .max()
            .unwrap_or(0);
        let what = format!("every running node to apply the same index (>= {floor})");
        self.poll(limit, &what, |c| {
            let mut applied = None;
            for i in c.running() {
                let a = c.status(i)?.applied?;
                if applied.is_some_and(|x| x != a) {
                    return None;
                }
                applied = Some(a);
            }
            applied.filter(|a| *a >= floor)
        })
        .await
    }

    /// Stops node `i` (server and raft) and keeps its data directory, as after a crash
    /// that lost nothing acknowledged. Its address stays reserved for [`Cluster::restart`].
    pub async fn crash(&mut self, i: usize) -> anyhow::Result<()> {
        let ctl = self.slots[i]
            .ctl
            .take()
            .with_context(|| format!("node {i} is already crashed"))?;
        tokio::time::timeout(Duration::from_secs(30), ctl.stop())
            .await
            .with_context(|| format!("node {i} did not stop within 30 s"))?;
        Ok(())
    }

    /// Starts crashed node `i` again on its data directory and address, with nothing but
    /// the data dir and listen address (plus the harness's timing and fault set) as
    /// options: the node resumes from its own state.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let s = &self.slots[i];
        ensure!(s.ctl.is_none(), "node {i} is running; crash it first");
        let mut o = ControllerOptions::new(s.dir.clone(), s.listen);
        o.timing = self.timing.clone();
        o.faults = self.faults.clone();
        let c = start_controller(o)
            .await
            .with_context(|| format!("restarting node {i}"))?;
        ensure!(
            c.node.id() == s.id && c.url == s.url,
            "node {i} came back as {} at {} (was {} at {})",
            c.node.id(),
            c.url,
            s.id,
            s.url
        );
        self.slots[i].ctl = Some(c);
        Ok(())
    }

    /// Stops every running node (the data directories go when the cluster is dropped).
    pub async fn shutdown(mut self) {
        for i in 0..self.slots.len() {
            if let Some(c) = self.slots[i].ctl.take() {
                let _ = tokio::time::timeout(Duration::from_secs(30), c.stop()).await;
            }
        }
    }
}

fn slot_of(c: Controller, listen: SocketAddr) -> Slot {
    Slot {
        dir: c.data_dir.clone(),
        listen,
        url: c.url.clone(),
        id: c.node.id(),
        ctl: Some(c),
    }
}

/// Starts a controller, retrying for a while when the previous incarnation of the same
/// data directory or address is still being released (the raft store of a node that was
/// just stopped closes when its last background task ends).
async fn start_controller(opts: ControllerOptions) -> anyhow::Result<Controller> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(left, Controller::start(opts.clone())).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("did not start within {} s", START_LIMIT.as_secs()),
        };
        // Only a store or socket still held by the previous run is worth waiting for.
        let transient = err.contains("already open")
            || err.contains("cannot listen")
            || err.contains("Database");
        if !transient || Instant::now() >= deadline {
            bail!("starting the controller at {} failed: {err}", opts.listen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counting (and optionally printing) the log events of `weft_*` and `openraft` code, to
/// observe things the API does not show (a snapshot being installed, say). The capture
/// is process-wide, so a test that counts events should run in its own test binary or
/// only count events no other test of the binary can produce.
pub mod events {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::sync::{Mutex, Once, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    fn counts() -> &'static Mutex<HashMap<String, usize>> {
        static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
        COUNTS.get_or_init(Default::default)
    }

    struct Capture {
        print: bool,
    }

    #[derive(Default)]
    struct Fields {
        message: String,
        rest: String,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.message = format!("{value:?}");
            } else {
                let _ = write!(self.rest, " {}={value:?}", field.name());
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            m.is_event()
                && *m.level() <= Level::INFO
                && (m.target().starts_with("weft") || m.target().starts_with("openraft"))
        }
        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::INFO)
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut f = Fields::default();
            e.record(&mut f);
            if self.print {
                let m = e.metadata();
                eprintln!("[{} {}] {}{}", m.level(), m.target(), f.message, f.rest);
            }
            let mut g = counts().lock().unwrap_or_else(|p| p.into_inner());
            *g.entry(f.message).or_default() += 1;
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Installs the capture as the global tracing subscriber (once per process; a no-op
    /// if another subscriber was installed first). With `WEFT_TEST_LOG` set in the
    /// environment, every captured event is also printed to stderr.
    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let print = std::env::var_os("WEFT_TEST_LOG").is_some();
            let _ = tracing::subscriber::set_global_default(Capture { print });
        });
    }

    /// How many events with exactly this message were captured so far (info level or
    /// above, from `weft*` or `openraft` targets), in the whole process.
    pub fn count(message: &str) -> usize {
        let g = counts().lock().unwrap_or_else(|p| p.into_inner());
        g.get(message).copied().unwrap_or(0)
    }
}
