//! A cluster of real `weft controller run` processes that tests can kill (`SIGKILL`),
//! stop (`SIGTERM`), freeze (`SIGSTOP`), thaw (`SIGCONT`) and restart.
//!
//! Node `i` (0-based) listens on `127.0.0.{i+1}:PORT`; every node of one cluster uses the
//! same port on its own loopback address, and that port is reserved for the cluster's
//! lifetime (a lock file per port under the system temp dir, plus a bind probe), so
//! clusters in parallel test threads and in other test binaries do not clash.
//!
//! **Partitions** ([`ProcessCluster::start_partitionable`]): node `i` listens on
//! `127.0.0.{i+11}:PORT` and is advertised (`--advertise`) at
//! `https://127.0.0.{i+11}:PROXY_PORT`, where a [`PeerProxy`] relays to it. Members reach
//! each other only through the proxy, and each node's peer connections leave from its own
//! address, so the proxy can cut any pair of nodes ([`ProcessCluster::proxy`]); clients,
//! on `127.0.0.1`, are never cut (see [`crate::netproxy`]). [`ProcessCluster::url`] is
//! then the advertised URL (what members and clients learn from the cluster) and
//! [`ProcessCluster::direct_url`] the listen address, which the harness's own probes use.
//!
//! Node 0 is started with `--bootstrap --admin-password ...`; every other node with
//! `--join URL0 --join-token T` (a fresh token per node, made by the admin through
//! `POST /fabric/v1/cluster/join-token`). A restart passes only `--data-dir` and
//! `--listen` (and the tuning flags a partitionable cluster was started with, on every
//! start), as an operator would.
//!
//! Each node's stdout and stderr go to `weft.log` in its data dir (the harness writes a
//! marker line before every spawn). Every wait is bounded; when one fails, its error
//! carries the tail of every node's log. Dropping the cluster kills every child (thawing
//! frozen ones first), also when the test panics or returns an error; a test that passed
//! ends with [`ProcessCluster::finish`], otherwise the drop prints the log tails.
//! Set `WEFT_TEST_KEEP=1` to keep the data dirs (their path is printed).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::client::{Reply, TestClient};
use crate::netproxy::PeerProxy;

/// User name of the admin created at bootstrap.
pub const ADMIN_USER: &str = "admin";
/// Password of the admin created at bootstrap.
pub const ADMIN_PASSWORD: &str = "weft-test-admin-password";
/// Most nodes one cluster can hold (loopback addresses `127.0.0.1` to `127.0.0.8`, or
/// `127.0.0.11` to `127.0.0.18` for a partitionable cluster).
pub const MAX_NODES: usize = 8;
/// Last byte of node 0's address in a plain cluster.
const PLAIN_BASE: u8 = 1;
/// Last byte of node 0's address in a partitionable cluster (clients stay on `.1`).
const PROXIED_BASE: u8 = 11;

/// Bounds of every start-up wait (a node's first start, a join, a restart).
const START_TIMEOUT: Duration = Duration::from_secs(45);
/// How long `stop` waits for a process to exit after `SIGTERM`.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each log shown in failure messages.
const TAIL_LINES: usize = 40;

/// Ports handed out to clusters: below Linux's default ephemeral range (32768-60999),
/// so outgoing connections never occupy them.
const PORT_LOW: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;

/// A reserved port: a lock file naming this process, removed on drop.
struct PortLock {
    path: PathBuf,
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn try_lock(path: &Path) -> Option<PortLock> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .ok()
            .map(|mut f| {
                let _ = write!(f, "{}", std::process::id());
                PortLock {
                    path: path.to_owned(),
                }
            })
    };
    if let Some(l) = create() {
        return Some(l);
    }
    // Taken: by a live process (skip), or left behind by one that died (take over).
    let owner = std::fs::read_to_string(path).ok()?;
    match owner.trim().parse::<u32>() {
        Ok(pid) if pid_alive(pid) => None,
        // A lock being written right now reads empty: leave it alone.
        Err(_) if owner.is_empty() => None,
        _ => {
            let _ = std::fs::remove_file(path);
            create()
        }
    }
}

fn loopback(base: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, base + i as u8))
}

/// Reserves one port that is free on every loopback address a cluster may use.
fn reserve_port() -> anyhow::Result<(u16, PortLock)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("weft-testkit-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pid = std::process::id();
    let start = pid.wrapping_mul(2_654_435_761) % u32::from(PORT_SPAN);
    for _ in 0..2_000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_LOW + ((start + k.wrapping_mul(7)) % u32::from(PORT_SPAN)) as u16;
        let Some(lock) = try_lock(&dir.join(port.to_string())) else {
            continue;
        };
        let free = [PLAIN_BASE, PROXIED_BASE].iter().all(|&base| {
            (0..MAX_NODES).all(|i| {
                std::net::TcpListener::bind(SocketAddr::new(loopback(base, i), port)).is_ok()
            })
        });
        if free {
            return Ok((port, lock));
        }
    }
    bail!("found no free port in {PORT_LOW}..{}", PORT_LOW + PORT_SPAN)
}

/// One node slot: its address, data dir, log and (while running) its process.
struct Proc {
    listen: SocketAddr,
    /// The URL members and clients know it by (the proxy's, in a partitionable cluster).
    url: String,
    /// `https://` + its listen address.
    direct: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
    spawns: u32,
}

/// Sends a signal to a process with `/bin/kill` (no unsafe code, no extra crate).
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let pid = pid.to_string();
    let run = |kill: &str| Command::new(kill).args(["-s", sig, &pid]).status();
    let status = run("/bin/kill")
        .or_else(|_| run("kill"))
        .with_context(|| format!("running kill -s {sig} {pid}"))?;
    anyhow::ensure!(status.success(), "kill -s {sig} {pid} failed: {status}");
    Ok(())
}

/// The state letter of a process in `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the command may contain spaces, so look after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The last `lines` lines of a file (or why it could not be read).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A cluster of `weft controller run` processes on loopback (see the module doc).
pub struct ProcessCluster {
    bin: PathBuf,
    port: u16,
    /// Last byte of node 0's address.
    base: u8,
    /// The peer proxy and the port it listens on (partitionable clusters only).
    proxy: Option<(PeerProxy, u16)>,
    /// Flags passed to every start of every node.
    node_args: Vec<String>,
    nodes: Vec<Proc>,
    ca_pem: String,
    /// Short-timeout client for `/health-checks` polling (once the CA is known).
    probe: Option<TestClient>,
    root: Option<tempfile::TempDir>,
    /// Set by [`ProcessCluster::finish`]: the test passed, drop quietly.
    finished: bool,
    /// Set once a failure message carried the logs (no need to print them again).
    reported: AtomicBool,
    _port: PortLock,
    /// The proxy's port reservation.
    _proxy_port: Option<PortLock>,
}

impl ProcessCluster {
    /// Starts `n` nodes (1 to [`MAX_NODES`]) of the `weft` binary at `bin`: node 0
    /// bootstraps, the others join it one after the other. Returns once every node runs,
    /// is a member, and the cluster has a leader with every node in quorum.
    pub async fn start(bin: impl AsRef<Path>, n: usize) -> anyhow::Result<ProcessCluster> {
        ProcessCluster::start_with(bin, n, &[]).await
    }

    /// [`ProcessCluster::start`], passing `node_args` (e.g. `--max-connections 4`) to
    /// every `weft controller run` of every node, restarts included.
    pub async fn start_with(
        bin: impl AsRef<Path>,
        n: usize,
        node_args: &[&str],
    ) -> anyhow::Result<ProcessCluster> {
        Self::start_inner(bin, n, false, node_args).await
    }

    /// Like [`Self::start`], with every node's peer traffic through a [`PeerProxy`] that
    /// the test can cut (see the module doc), and `node_args` (tuning flags such as
    /// `--snapshot-logs=500`) passed to every start of every node.
    pub async fn start_partitionable(
        bin: impl AsRef<Path>,
        n: usize,
        node_args: &[&str],
    ) -> anyhow::Result<ProcessCluster> {
        Self::start_inner(bin, n, true, node_args).await
    }

    async fn start_inner(
        bin: impl AsRef<Path>,
        n: usize,
        partitionable: bool,
        node_args: &[&str],
    ) -> anyhow::Result<ProcessCluster> {
        anyhow::ensure!(
            (1..=MAX_NODES).contains(&n),
            "a cluster has 1 to {MAX_NODES} nodes"
        );
        let bin = bin.as_ref().to_owned();
        anyhow::ensure!(bin.exists(), "no weft binary at {}", bin.display());
        let root = tempfile::Builder::new()
            .prefix("weft-cluster-")
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let (port, lock) = reserve_port()?;
        let (proxy, proxy_lock) = if partitionable {
            let (proxy_port, proxy_lock) = reserve_port()?;
            (Some((PeerProxy::new()?, proxy_port)), Some(proxy_lock))
        } else {
            (None, None)
        };
        let mut cluster = ProcessCluster {
            bin,
            port,
            base: if partitionable {
                PROXIED_BASE
            } else {
                PLAIN_BASE
            },
            proxy,
            node_args: node_args.iter().map(|a| a.to_string()).collect(),
            nodes: Vec::new(),
            ca_pem: String::new(),
            probe: None,
            root: Some(root),
            finished: false,
            reported: AtomicBool::new(false),
            _port: lock,
            _proxy_port: proxy_lock,
        };

        // Node 0: bootstrap. It prints "listening on" once its setup writes (the admin,
        // its token-signing key) are committed, so logins and their tokens work from then.
        let i0 = cluster.add_slot()?;
        cluster.spawn(i0, &["--bootstrap", "--admin-password", ADMIN_PASSWORD])?;
        cluster
            .wait_log_line(i0, "listening on", START_TIMEOUT)
            .await?;
        let ca_path = cluster.nodes[i0].dir.join("ca.pem");
        cluster.ca_pem = std::fs::read_to_string(&ca_path)
            .ok()
            .filter(|ca| !ca.trim().is_empty())
            .ok_or_else(|| cluster.failure(&format!("node 0 wrote no {}", ca_path.display())))?;
        cluster.probe = Some(TestClient::new(&cluster.ca_pem, Duration::from_secs(3))?);

        // The others: join node 0 one at a time (membership changes are serialized anyway).
        for _ in 1..n {
            let token = cluster.join_token().await?;
            let i = cluster.add_slot()?;
            let join = cluster.direct_url(i0);
            cluster.spawn(i, &["--join", &join, "--join-token", &token])?;
            cluster
                .wait_log_line(i, "listening on", START_TIMEOUT)
                .await?;
        }
        cluster.wait_healthy(START_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Number of node slots (running or not), including ones added by [`Self::spawn_node`].
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node slot (never true after [`Self::start`]).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The port every node of this cluster listens on (each on its own address).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The API URL of node `i` as members and clients know it: `https://127.0.0.{i+1}:PORT`,
    /// or its proxy's URL in a partitionable cluster.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url.clone()
    }

    /// `https://` + node `i`'s listen address (the same as [`Self::url`] unless the
    /// cluster is partitionable).
    pub fn direct_url(&self, i: usize) -> String {
        self.nodes[i].direct.clone()
    }

    /// The URL node slot `i` would have, also for a slot not created yet (for example
    /// the address to pass to `add-member` for a node about to be spawned).
    pub fn url_of_slot(&self, i: usize) -> String {
        let ip = loopback(self.base, i);
        let port = self.proxy.as_ref().map_or(self.port, |(_, p)| *p);
        format!("https://{}", SocketAddr::new(ip, port))
    }

    /// The peer proxy of a partitionable cluster (none otherwise).
    pub fn proxy(&self) -> Option<&PeerProxy> {
        self.proxy.as_ref().map(|(p, _)| p)
    }

    /// The listen address of node `i`.
    pub fn listen(&self, i: usize) -> SocketAddr {
        self.nodes[i].listen
    }

    /// The data dir of node `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    /// The log file (stdout and stderr of every run) of node `i`.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.nodes[i].log, lines)
    }

    /// The whole log of node `i` (every run).
    pub fn log(&self, i: usize) -> String {
        std::fs::read(&self.nodes[i].log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The tails of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.nodes.iter().enumerate() {
            let state = match (&p.child, p.frozen) {
                (None, _) => "not running",
                (Some(c), _) if proc_state(c.id()) == Some('Z') => "exited, not reaped yet",
                (Some(_), true) => "frozen",
                (Some(_), false) => "running",
            };
            out.push_str(&format!(
                "\n----- node {i} ({}, {state}) last {TAIL_LINES} lines of {} -----\n{}\n",
                p.url,
                p.log.display(),
                tail(&p.log, TAIL_LINES)
            ));
        }
        out
    }

    /// An error with `msg` and the tail of every node's log.
    pub fn failure(&self, msg: &str) -> anyhow::Error {
        self.reported.store(true, Ordering::Relaxed);
        anyhow::anyhow!("{msg}\n{}", self.logs_tail())
    }

    /// Ends a test that passed: kills every process like dropping does, but without
    /// printing the logs. A cluster dropped without `finish` (the test returned an error
    /// or panicked) prints the tail of every node's log, unless a [`Self::failure`]
    /// message already carried them.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// The cluster CA certificate (PEM) clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client trusting the cluster CA, not logged in.
    pub fn plain_client(&self, timeout: Duration) -> anyhow::Result<TestClient> {
        TestClient::new(&self.ca_pem, timeout)
    }

    /// A client (20 s per request) logged in as the admin on the first running node
    /// that accepts the login.
    pub async fn client(&self) -> anyhow::Result<TestClient> {
        let mut last = None;
        for i in self.running() {
            let mut c = self.plain_client(Duration::from_secs(20))?;
            match c
                .login(&self.direct_url(i), ADMIN_USER, ADMIN_PASSWORD)
                .await
            {
                Ok(_) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(self.failure(&format!(
            "admin login failed on every running node: {:#}",
            last.unwrap_or_else(|| anyhow::anyhow!("no node is running"))
        )))
    }

    /// A fresh join token (`POST /fabric/v1/cluster/join-token` as the admin).
    pub async fn join_token(&self) -> anyhow::Result<String> {
        let c = self.client().await?;
        let mut last = String::new();
        for i in self.running() {
            match c
                .post(
                    &format!("{}/fabric/v1/cluster/join-token", self.direct_url(i)),
                    &Value::Null,
                )
                .await
            {
                Ok(r) if r.status == 200 => {
                    if let Some(t) = r.data()["token"].as_str() {
                        return Ok(t.to_owned());
                    }
                    last = format!("no data.token in {}", r.body);
                }
                Ok(r) => last = format!("HTTP {} {}", r.status, r.body),
                Err(e) => last = format!("{e:#}"),
            }
        }
        Err(self.failure(&format!("could not get a join token: {last}")))
    }

    /// Indices of the nodes whose process runs and is not frozen.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].frozen)
            .collect()
    }

    /// Whether node `i` has a process (frozen or not).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The pid of node `i`'s process, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Node `i`'s raft id, from `node.json` in its data dir (none before it has one).
    pub fn node_id(&self, i: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.nodes[i].dir.join("node.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        match &v["id"] {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The index of the node whose raft id is `id`.
    pub fn index_of_id(&self, id: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.node_id(i).as_deref() == Some(id))
    }

    fn add_slot(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        anyhow::ensure!(i < MAX_NODES, "a cluster has at most {MAX_NODES} nodes");
        let root = self
            .root
            .as_ref()
            .map(|r| r.path().to_owned())
            .context("the cluster's temp dir is gone")?;
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let listen = SocketAddr::new(loopback(self.base, i), self.port);
        if let Some((proxy, proxy_port)) = &self.proxy {
            proxy.add_node(i, SocketAddr::new(listen.ip(), *proxy_port), listen)?;
        }
        self.nodes.push(Proc {
            listen,
            url: self.url_of_slot(i),
            direct: format!("https://{listen}"),
            log: dir.join("weft.log"),
            dir,
            child: None,
            frozen: false,
            spawns: 0,
        });
        Ok(i)
    }

    /// Spawns `weft controller run --data-dir DIR --listen ADDR EXTRA...` for slot `i`.
    fn spawn(&mut self, i: usize, extra: &[&str]) -> anyhow::Result<()> {
        let p = &mut self.nodes[i];
        anyhow::ensure!(p.child.is_none(), "node {i} is already running");
        p.spawns += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .with_context(|| format!("opening {}", p.log.display()))?;
        let mut args: Vec<String> = vec![
            "controller".into(),
            "run".into(),
            "--data-dir".into(),
            p.dir.display().to_string(),
            "--listen".into(),
            p.listen.to_string(),
        ];
        args.extend(self.node_args.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        // A new member behind the proxy is advertised at the proxy (a member keeps the
        // URL it was created with; a restart passes only --data-dir and --listen).
        if self.proxy.is_some() && !p.dir.join("node.json").exists() {
            args.extend(["--advertise".to_owned(), p.url.clone()]);
        }
        // Join tokens are long: shorten them in the marker line.
        let shown: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(k, a)| match k.checked_sub(1).map(|p| args[p].as_str()) {
                Some("--join-token") if a.len() > 16 => format!("{}...", &a[..16]),
                _ => a.clone(),
            })
            .collect();
        writeln!(
            log,
            "===== [harness] spawn #{} of node {i}: weft {} =====",
            p.spawns,
            shown.join(" ")
        )?;
        let err: File = log.try_clone()?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .env("NO_COLOR", "1");
        // Only the flags the harness passes may configure the node.
        for var in [
            "WEFT_DATA_DIR",
            "WEFT_LISTEN",
            "WEFT_ADVERTISE",
            "WEFT_JOIN_TOKEN",
            "WEFT_ADMIN_PASSWORD",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        p.child = Some(child);
        p.frozen = false;
        Ok(())
    }

    /// Adds a node slot (`127.0.0.{len+1}`, its own data dir) and spawns
    /// `weft controller run --data-dir DIR --listen ADDR` plus `extra` in it, without
    /// waiting for anything. Returns its index.
    pub fn spawn_node(&mut self, extra: &[&str]) -> anyhow::Result<usize> {
        let i = self.add_slot()?;
        self.spawn(i, extra)?;
        Ok(i)
    }

    /// Fails (with the logs) if node `i`'s process has exited.
    fn check_alive(&mut self, i: usize, doing: &str) -> anyhow::Result<()> {
        let exited = match self.nodes[i].child.as_mut() {
            Some(c) => c.try_wait()?,
            None => bail!("node {i} is not running"),
        };
        if let Some(status) = exited {
            self.nodes[i].child = None;
            return Err(self.failure(&format!("node {i} exited ({status}) while {doing}")));
        }
        Ok(())
    }

    /// Waits until a line containing `needle` appears in node `i`'s log after its latest
    /// spawn marker (for example `"listening on"`, printed once the node has started).
    pub async fn wait_log_line(
        &mut self,
        i: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log(i);
            let latest = log
                .rfind("===== [harness] spawn #")
                .map(|at| &log[at..])
                .unwrap_or(&log);
            if latest.contains(needle) {
                return Ok(());
            }
            self.check_alive(i, &format!("waiting for {needle:?} in its log"))?;
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "node {i} did not log {needle:?} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `i`'s process exits and returns its status.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.nodes[i].child.as_mut() else {
                bail!("node {i} is not running");
            };
            if let Some(status) = child.try_wait()? {
                self.nodes[i].child = None;
                self.nodes[i].frozen = false;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("node {i} did not exit within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills node `i` with `SIGKILL` (thawing it first if frozen) and reaps it.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        let p = &mut self.nodes[i];
        let Some(mut child) = p.child.take() else {
            bail!("node {i} is not running");
        };
        if p.frozen {
            let _ = signal(child.id(), "CONT");
            p.frozen = false;
        }
        let _ = child.kill();
        child.wait().with_context(|| format!("reaping node {i}"))?;
        Ok(())
    }

    /// Stops node `i` with `SIGTERM` and waits (bounded) for it to exit; returns its exit
    /// status. A node that does not exit in time is killed and the call fails.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let pid = self
            .pid(i)
            .with_context(|| format!("node {i} is not running"))?;
        if self.nodes[i].frozen {
            self.thaw(i)?;
        }
        signal(pid, "TERM")?;
        match self.wait_exit(i, STOP_TIMEOUT).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.kill9(i);
                Err(e.context(format!("node {i} ignored SIGTERM for {STOP_TIMEOUT:?}")))
            }
        }
    }

    /// Freezes node `i` with `SIGSTOP` (it keeps its sockets but answers nothing).
    pub fn freeze(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self
            .pid(i)
            .with_context(|| format!("node {i} is not running"))?;
        signal(pid, "STOP")?;
        self.nodes[i].frozen = true;
        Ok(())
    }

    /// Thaws a frozen node `i` with `SIGCONT`.
    pub fn thaw(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self
            .pid(i)
            .with_context(|| format!("node {i} is not running"))?;
        signal(pid, "CONT")?;
        self.nodes[i].frozen = false;
        Ok(())
    }

    /// Starts node `i` again with only `--data-dir` and `--listen` (and the cluster's
    /// tuning flags, if any), and waits (bounded) until it answers `/health-checks` (not
    /// until it is in quorum: with the other nodes down it cannot be).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[i].child.is_none(),
            "node {i} is still running; kill9 or stop it first"
        );
        self.spawn(i, &[])?;
        self.wait_serving(i, START_TIMEOUT).await
    }

    /// Waits until node `i` answers `GET /health-checks` with 200 over a connection
    /// verified against the cluster CA.
    pub async fn wait_serving(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.health(i).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("HTTP {} {}", r.status, r.body),
                Err(e) => last = format!("{e:#}"),
            }
            self.check_alive(i, "starting")?;
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "node {i} did not serve /health-checks within {timeout:?}; last: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /health-checks` on node `i` (3 s timeout).
    pub async fn health(&self, i: usize) -> anyhow::Result<Reply> {
        let probe = self
            .probe
            .as_ref()
            .context("the cluster CA is not known yet")?;
        probe
            .get(&format!("{}/health-checks", self.nodes[i].direct))
            .await
    }

    /// The health (`data`) of every running, unfrozen node, asked in parallel.
    async fn health_all(&self) -> Vec<(usize, anyhow::Result<Value>)> {
        self.get_on_running(self.probe.clone(), "/health-checks")
            .await
    }

    /// `GET path` (its `data`) on every running, unfrozen node, in parallel, with
    /// `client` (`None`: every node answers "the cluster CA is not known yet"); sorted by
    /// node index.
    async fn get_on_running(
        &self,
        client: Option<TestClient>,
        path: &str,
    ) -> Vec<(usize, anyhow::Result<Value>)> {
        let mut set = tokio::task::JoinSet::new();
        for i in self.running() {
            let client = client.clone();
            let url = format!("{}{path}", self.nodes[i].direct);
            set.spawn(async move {
                let r = match client {
                    None => Err(anyhow::anyhow!("the cluster CA is not known yet")),
                    Some(c) => match c.get(&url).await {
                        Ok(r) if r.status == 200 => Ok(r.data().clone()),
                        Ok(r) => Err(anyhow::anyhow!("HTTP {} {}", r.status, r.body)),
                        Err(e) => Err(e),
                    },
                };
                (i, r)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => out.push(r),
                Err(e) => out.push((usize::MAX, Err(anyhow::anyhow!("{path} task failed: {e}")))),
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// The node that says it is the leader (`data.role == "leader"` on
    /// `/health-checks`), among the running, unfrozen nodes; with several, the one with
    /// the highest term.
    pub async fn leader(&self) -> Option<usize> {
        self.health_all()
            .await
            .into_iter()
            .filter_map(|(i, h)| h.ok().map(|h| (i, h)))
            .filter(|(_, h)| h["role"] == "leader")
            .max_by_key(|(_, h)| h["term"].as_u64().unwrap_or(0))
            .map(|(i, _)| i)
    }

    /// Waits (bounded) until some running node is the leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("no leader within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One look at whether every running, unfrozen node is in quorum and names the same
    /// leader, which is one of them and says so. Ok(leader index) or why not.
    async fn healthy_once(&self) -> Result<usize, String> {
        let all = self.health_all().await;
        if all.is_empty() {
            return Err("no node is running".into());
        }
        let mut leader_id: Option<String> = None;
        for (i, h) in &all {
            let h = h.as_ref().map_err(|e| format!("node {i}: {e:#}"))?;
            if h["inQuorum"] != true {
                return Err(format!("node {i} is not in quorum: {h}"));
            }
            let Some(l) = h["leaderId"].as_str() else {
                return Err(format!("node {i} knows no leader: {h}"));
            };
            match &leader_id {
                Some(prev) if prev != l => {
                    return Err(format!("nodes disagree on the leader ({prev} vs {l})"))
                }
                _ => leader_id = Some(l.to_owned()),
            }
        }
        let leader_id = leader_id.unwrap_or_default();
        all.iter()
            .find(|(_, h)| {
                h.as_ref()
                    .is_ok_and(|h| h["nodeId"] == leader_id.as_str() && h["role"] == "leader")
            })
            .map(|(i, _)| *i)
            .ok_or_else(|| format!("leader {leader_id} is not among the running nodes"))
    }

    /// Waits (bounded) until every running, unfrozen node is in quorum and all name the
    /// same leader, which is one of them; returns the leader's index.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.healthy_once().await {
                Ok(l) => return Ok(l),
                Err(why) if Instant::now() > deadline => {
                    return Err(
                        self.failure(&format!("cluster not healthy within {timeout:?}: {why}"))
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits (bounded) until every running, unfrozen node has applied everything the
    /// cluster committed before this call: a linearizable read
    /// (`GET /edge/management/v1/services?consistency=linearizable`, retried while the
    /// cluster answers 421/503) makes the node that serves it apply the leader's commit
    /// index, then every node must report that `appliedIndex` or more, all equal
    /// ([`Self::wait_applied_equal`]). Returns the index.
    ///
    /// Equal applied indexes alone are not enough after a restart of every node: they
    /// are all equal (and old) until the new leader's first entry commits.
    pub async fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let c = self.client().await?;
        let mut last = String::new();
        let floor = 'read: loop {
            for i in self.running() {
                let url = format!(
                    "{}/edge/management/v1/services?limit=1&consistency=linearizable",
                    self.direct_url(i)
                );
                match c.get(&url).await {
                    Ok(r) if r.status == 200 => {
                        if let Ok(h) = self.health(i).await {
                            if let Some(a) = h.data()["appliedIndex"].as_u64() {
                                break 'read a;
                            }
                        }
                    }
                    Ok(r) => last = format!("node {i}: HTTP {} {}", r.status, r.body),
                    Err(e) => last = format!("node {i}: {e:#}"),
                }
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "no linearizable read succeeded within {timeout:?}; last: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_applied_at_least(floor, left.max(Duration::from_secs(1)))
            .await
    }

    /// Waits (bounded) until every running, unfrozen node reports the same
    /// `appliedIndex` twice in a row (100 ms apart); returns it. See also
    /// [`Self::wait_caught_up`].
    pub async fn wait_applied_equal(&self, timeout: Duration) -> anyhow::Result<u64> {
        self.wait_applied_at_least(0, timeout).await
    }

    /// Like [`Self::wait_applied_equal`], with the common index at least `floor`.
    async fn wait_applied_at_least(&self, floor: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut previous: Option<u64> = None;
        loop {
            let all = self.health_all().await;
            let indexes: Vec<Option<u64>> = all
                .iter()
                .map(|(_, h)| h.as_ref().ok().and_then(|h| h["appliedIndex"].as_u64()))
                .collect();
            let same = match indexes.first() {
                Some(Some(first))
                    if *first >= floor && indexes.iter().all(|x| *x == Some(*first)) =>
                {
                    Some(*first)
                }
                _ => None,
            };
            match (same, previous) {
                (Some(now), Some(before)) if now == before => return Ok(now),
                _ => previous = same,
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = all
                    .iter()
                    .map(|(i, h)| match h {
                        Ok(h) => format!("node {i}: {}", h["appliedIndex"]),
                        Err(e) => format!("node {i}: {e:#}"),
                    })
                    .collect();
                return Err(self.failure(&format!(
                    "applied indexes did not converge at {floor} or more within {timeout:?}: {}",
                    shown.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What [`ProcessCluster::wait_converged`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// The applied index every node reported.
    pub applied_index: u64,
    /// The state hash every node reported.
    pub state_hash: String,
    /// How long it took from the call.
    pub elapsed: Duration,
}

/// Membership changes and replica comparison (`/fabric/v1/cluster/*` as the admin).
impl ProcessCluster {
    /// Removes node `i` from the membership (`remove-member` with its id, sent to the
    /// other running nodes in turn until one accepts, retried while the cluster answers
    /// "not now"), then waits (bounded) until the leader no longer lists it. Its process
    /// keeps running (it should then answer 421); see [`Self::rejoin`].
    pub async fn remove_member(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let id = self
            .node_id(i)
            .with_context(|| format!("node {i} has no id yet"))?;
        let c = self.client().await?;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            // Gone from the leader's list (a retry after a lost answer also ends here)?
            if let Some(l) = self.leader().await.filter(|&l| l != i) {
                let url = format!("{}/fabric/v1/cluster/list-members", self.direct_url(l));
                if let Ok(r) = c.get(&url).await {
                    let listed = r
                        .data()
                        .as_array()
                        .is_some_and(|ms| ms.iter().any(|m| m["id"].as_str() == Some(id.as_str())));
                    if r.status == 200 && !listed {
                        return Ok(());
                    }
                }
            }
            for j in self.running().into_iter().filter(|&j| j != i) {
                let url = format!("{}/fabric/v1/cluster/remove-member", self.direct_url(j));
                match c.post(&url, &serde_json::json!({ "id": id })).await {
                    Ok(r) if r.status == 200 => break,
                    Ok(r) => last = format!("node {j}: HTTP {} {}", r.status, r.body),
                    Err(e) => last = format!("node {j}: {e:#}"),
                }
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "node {i} ({id}) was not removed within {timeout:?}; last: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Brings a removed node `i` back as a new member, as an operator would: its process
    /// must be stopped; its data dir is emptied (its log file is kept) and it is started
    /// with `--join` (a running member) and a fresh join token. Returns once it says it is
    /// listening, that is once it was added and promoted to voter. It gets a new id.
    pub async fn rejoin(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[i].child.is_none(),
            "node {i} is still running; kill9 or stop it first"
        );
        let dir = self.nodes[i].dir.clone();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path == self.nodes[i].log {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
        let token = self.join_token().await?;
        let member = self
            .running()
            .into_iter()
            .find(|&j| j != i)
            .context("no running member to join through")?;
        let join = self.direct_url(member);
        self.spawn(i, &["--join", &join, "--join-token", &token])?;
        self.wait_log_line(i, "listening on", START_TIMEOUT).await
    }

    /// `transfer-leadership` to node `to` (or, with `None`, to the best other voter),
    /// sent to the running nodes in turn until one accepts; returns the index of the new
    /// leader as the answer names it.
    pub async fn transfer_leadership(
        &self,
        to: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let body = match to {
            Some(t) => serde_json::json!({
                "newLeaderId": self.node_id(t).with_context(|| format!("node {t} has no id"))?
            }),
            None => serde_json::json!({}),
        };
        let c = self.client().await?;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            for j in self.running() {
                let url = format!(
                    "{}/fabric/v1/cluster/transfer-leadership",
                    self.direct_url(j)
                );
                match c.post(&url, &body).await {
                    Ok(r) if r.status == 200 => {
                        let id = r.data()["leaderId"].as_str().unwrap_or_default().to_owned();
                        return self.index_of_id(&id).ok_or_else(|| {
                            self.failure(&format!("transfer-leadership named {id}: {}", r.body))
                        });
                    }
                    Ok(r) => last = format!("node {j}: HTTP {} {}", r.status, r.body),
                    Err(e) => last = format!("node {j}: {e:#}"),
                }
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "transfer-leadership to {to:?} failed for {timeout:?}; last: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /fabric/v1/cluster/state-hash` (`data`) on every running, unfrozen node, in
    /// parallel, with `admin` (a logged-in admin client).
    pub async fn state_hashes(&self, admin: &TestClient) -> Vec<(usize, anyhow::Result<Value>)> {
        self.get_on_running(Some(admin.clone()), "/fabric/v1/cluster/state-hash")
            .await
    }

    /// Waits (bounded) until every node slot runs, unfrozen, all are in quorum under one
    /// leader, and all report the same `appliedIndex` and `stateHash`: the replicas
    /// converged. Logs in once first (a login records its session with a raft write,
    /// which then has to reach every node too).
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<Converged> {
        let started = Instant::now();
        let deadline = started + timeout;
        let admin = self.client().await?;
        let mut why;
        loop {
            why = match self.healthy_once().await {
                Err(e) => e,
                Ok(_) if self.running().len() != self.nodes.len() => {
                    "not every node runs (or some are frozen)".to_owned()
                }
                Ok(_) => {
                    let all = self.state_hashes(&admin).await;
                    let seen: Vec<Option<(u64, String)>> = all
                        .iter()
                        .map(|(_, h)| {
                            let h = h.as_ref().ok()?;
                            Some((
                                h["appliedIndex"].as_u64()?,
                                h["stateHash"].as_str()?.to_owned(),
                            ))
                        })
                        .collect();
                    match seen.first() {
                        Some(Some(first)) if seen.iter().all(|x| x.as_ref() == Some(first)) => {
                            return Ok(Converged {
                                applied_index: first.0,
                                state_hash: first.1.clone(),
                                elapsed: started.elapsed(),
                            });
                        }
                        _ => all
                            .iter()
                            .map(|(i, h)| match h {
                                Ok(h) => format!(
                                    "node {i}: applied {} hash {}",
                                    h["appliedIndex"],
                                    h["stateHash"]
                                        .as_str()
                                        .map_or("?", |s| &s[..s.len().min(12)])
                                ),
                                Err(e) => format!("node {i}: {e:#}"),
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                }
            };
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "the replicas did not converge within {timeout:?}: {why}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        if !self.finished && !self.reported.load(Ordering::Relaxed) {
            eprintln!(
                "[weft-testkit] cluster dropped without finish() (the test failed?); node logs:{}",
                self.logs_tail()
            );
        }
        for p in &mut self.nodes {
            if let Some(mut child) = p.child.take() {
                if p.frozen {
                    let _ = signal(child.id(), "CONT");
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("WEFT_TEST_KEEP").is_some_and(|v| v != "0") {
            if let Some(root) = self.root.take() {
                let path = root.keep();
                eprintln!("[weft-testkit] kept cluster data in {}", path.display());
            }
        }
    }
}
