//! Proof under faults: concurrent SDK clients read, write and compare-and-set a few
//! entities of a 3-node cluster of real `weft` processes while a nemesis kills,
//! freezes, partitions, removes and re-adds nodes and moves the leadership; then every
//! fault is healed, the replicas must converge (same applied index and state hash on
//! every node) within 10 s, and the recorded history must be linearizable.
//!
//! * **Workload.** `CLIENTS` clients, each its own `weft_sdk::Client` (failover,
//!   retries, an `Idempotency-Key` per mutating call), on `ENTITIES` services. The
//!   register under test is a service's tag `v` together with the service's `version`:
//!   a read is `GET ?consistency=linearizable` (value and version), a write a `PATCH`
//!   of the tag (answers the new version), a compare-and-set the same `PATCH` with
//!   `If-Match: <version the client last saw>` (the new version, or 412 with
//!   `error.data.version`). Every operation is recorded with its invocation and
//!   completion instants; one the SDK gave up on (`Error::Unavailable`: its deadline
//!   passed) is indeterminate: it may or may not have happened, and may still happen
//!   later (one client is impatient, so there are such operations). Any other error
//!   fails the test.
//! * **Nemesis**, in a seeded order that goes through every kind before repeating one:
//!   kill -9 and restart a node; SIGSTOP and SIGCONT one; isolate the leader; isolate a
//!   follower; split the cluster 1/2; a bridge (two nodes cut from each other, both
//!   still reaching the third); remove a member and add it back (emptied, with a fresh
//!   join token, as an operator would); transfer the leadership. Partitions go through
//!   the test kit's peer proxy (see `weft_testkit::netproxy`), in `Refuse` or
//!   `Blackhole` mode; while one holds, the node in the minority must answer a
//!   linearizable read with 421.
//! * **Checks.** After the run, a final linearizable read of every entity is added to
//!   the history; the history of each entity must be linearizable (Wing-Gong-Lowe
//!   checker, `weft_testkit::linearizability`, with a minimal counter-example
//!   otherwise); no acknowledged write may be missing from the final state; the nodes
//!   must converge within 10 s of the last heal.
//!
//! `cargo test` runs 60 seconds with a fixed seed. `WEFT_CHAOS_SECONDS` and
//! `WEFT_CHAOS_SEED` change both (`bench/chaos.sh --minutes N --seed S` sets them).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use weft_sdk::{Client, Error, Request, Stats};
use weft_testkit::linearizability::{
    self, Operation, RegisterInput, RegisterOutput, RegisterState, Verdict, VersionedRegister,
};
use weft_testkit::netproxy::CutMode;
use weft_testkit::process::{ProcessCluster, ADMIN_PASSWORD, ADMIN_USER};

use common::{BIN, MGMT};

/// The seed of `cargo test` runs.
const DEFAULT_SEED: u64 = 0x5eed_c4a0;
/// The length of `cargo test` runs.
const DEFAULT_RUN: Duration = Duration::from_secs(60);
/// Concurrent clients.
const CLIENTS: usize = 5;
/// Entities (services) they share.
const ENTITIES: usize = 5;
/// The replicas must agree this soon after the last fault is healed.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(10);
/// Bound of the cluster's recovery between two faults (a liveness failure otherwise).
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// SDK: one HTTP exchange. Shorter than a write can take while a leader is replaced,
/// so retries race their first attempt (and the idempotency key must keep them from
/// applying twice).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// SDK: one call with all its retries. Shorter than the longest faults, so some calls
/// end indeterminate.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Client 0 is impatient: its calls give up after this (attempts after a third of it),
/// so under faults many of its operations end indeterminate, some of them to take
/// effect after it stopped waiting.
const IMPATIENT_CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest fault timeline printed when every check passed.
const MAX_TIMELINE: usize = 60;
/// The client number of the final reads in the history.
const FINAL_READER: usize = 99;
/// Flags of every node: snapshots (and log compaction) every 1,000 entries, so a run
/// installs snapshots on nodes that fell behind or were re-added.
const NODE_ARGS: &[&str] = &["--snapshot-logs", "1000"];

/// One operation of the history: keyed by entity number.
type Op = Operation<usize, RegisterInput, RegisterOutput>;

/// How long and with which seed to run.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Seeds the clients' choices and the nemesis.
    seed: u64,
    /// How long the clients and the nemesis run.
    run: Duration,
}

fn settings() -> anyhow::Result<Settings> {
    let seed = match std::env::var("WEFT_CHAOS_SEED") {
        Ok(s) => parse_seed(&s).with_context(|| format!("WEFT_CHAOS_SEED={s:?}"))?,
        Err(_) => DEFAULT_SEED,
    };
    let run = match std::env::var("WEFT_CHAOS_SECONDS") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 10)
                .with_context(|| format!("WEFT_CHAOS_SECONDS={s:?}: a number of seconds >= 10"))?,
        ),
        Err(_) => DEFAULT_RUN,
    };
    Ok(Settings { seed, run })
}

/// A seed in decimal or `0x` hexadecimal.
fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One entity of the workload.
#[derive(Debug, Clone)]
struct Entity {
    /// Its API path (`/edge/management/v1/services/ID`).
    path: String,
    /// Its tag `v` and version before the run.
    initial: RegisterState,
}

/// What one client did, besides its history.
#[derive(Debug, Default)]
struct Tally {
    /// Linearizable reads answered.
    reads: usize,
    /// Unconditional writes acknowledged.
    writes: usize,
    /// Compare-and-sets that took effect.
    cas_ok: usize,
    /// Compare-and-sets refused with 412.
    cas_refused: usize,
    /// Operations whose outcome is unknown (the SDK gave up).
    indeterminate: usize,
    /// Errors the SDK should never return here (anything but `Unavailable` and 412).
    errors: Vec<String>,
    /// The SDK's own counters (retries, replays).
    stats: Stats,
}

/// Nanoseconds since `origin` (the history's clock).
fn now_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// The register as a read shows it, from a service record.
fn register_of(data: &Value) -> Option<(String, u64)> {
    Some((
        data["tags"]["v"].as_str()?.to_owned(),
        data["version"].as_u64()?,
    ))
}

/// One client: random reads, writes and compare-and-sets until `until`.
async fn client_loop(
    no: usize,
    client: Client,
    entities: Arc<Vec<Entity>>,
    origin: Instant,
    until: Instant,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Vec<Op>, Tally) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0xc11e_0000 + no as u64));
    let mut history = Vec::new();
    let mut tally = Tally::default();
    // The last version this client saw of each entity (for If-Match).
    let mut seen: Vec<u64> = entities
        .iter()
        .map(|e| e.initial.version.unwrap_or(1))
        .collect();
    let mut seq = 0usize;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
        let key = rng.gen_range(0..entities.len());
        let path = &entities[key].path;
        let roll = rng.gen_range(0..100);
        seq += 1;
        let value = format!("c{no}-{seq}");
        let call = now_ns(origin);
        let (input, outcome) = if roll < 40 {
            let req = Request::get(path.clone()).query("consistency", "linearizable");
            let r = client.send(req).await;
            let out = match r {
                Ok(resp) => match register_of(resp.data()) {
                    Some((value, version)) if !resp.stale => {
                        tally.reads += 1;
                        Outcome::Answered(RegisterOutput::Value { value, version })
                    }
                    _ => Outcome::Error(format!(
                        "read {path}: {} (stale: {})",
                        resp.body, resp.stale
                    )),
                },
                Err(e) => outcome_of(e),
            };
            (RegisterInput::Read, out)
        } else {
            let cas = roll >= 70;
            let expected = if rng.gen_range(0..100) < 80 {
                seen[key]
            } else {
                seen[key].saturating_sub(1).max(1)
            };
            let r = client
                .update(
                    path,
                    json!({ "tags": { "v": value } }),
                    cas.then_some(expected),
                )
                .await;
            let out = match r {
                Ok(data) => match register_of(&data) {
                    Some((v, version)) if v == value => {
                        if cas {
                            tally.cas_ok += 1;
                        } else {
                            tally.writes += 1;
                        }
                        Outcome::Answered(RegisterOutput::Done { version })
                    }
                    _ => Outcome::Error(format!("write {value} to {path} answered {data}")),
                },
                Err(Error::Api {
                    status: 412, data, ..
                }) if cas => match data.as_ref().and_then(|d| d["version"].as_u64()) {
                    Some(current) => {
                        tally.cas_refused += 1;
                        Outcome::Answered(RegisterOutput::Refused { current })
                    }
                    None => Outcome::Error(format!("412 without error.data.version: {data:?}")),
                },
                Err(e) => outcome_of(e),
            };
            let input = if cas {
                RegisterInput::Cas { expected, value }
            } else {
                RegisterInput::Write(value)
            };
            (input, out)
        };
        let ret = now_ns(origin);
        let completed = match outcome {
            Outcome::Answered(out) => {
                match &out {
                    RegisterOutput::Value { version, .. } | RegisterOutput::Done { version } => {
                        seen[key] = seen[key].max(*version)
                    }
                    RegisterOutput::Refused { current } => seen[key] = seen[key].max(*current),
                }
                Some((ret, out))
            }
            Outcome::Indeterminate => {
                tally.indeterminate += 1;
                None
            }
            Outcome::Error(e) => {
                tally
                    .errors
                    .push(format!("client {no} at {:.3} s: {e}", ret as f64 / 1e9));
                tally.indeterminate += 1;
                None
            }
        };
        history.push(Operation {
            key,
            client: no,
            input,
            call,
            completed,
        });
    }
    tally.stats = client.stats();
    (history, tally)
}

/// How one operation ended.
enum Outcome {
    /// The cluster answered.
    Answered(RegisterOutput),
    /// The SDK gave up (`Error::Unavailable`): it may or may not have happened.
    Indeterminate,
    /// Anything else: reported (and, for the checker, indeterminate too).
    Error(String),
}

/// An SDK error as an [`Outcome`].
fn outcome_of(e: Error) -> Outcome {
    match e {
        Error::Unavailable { .. } => Outcome::Indeterminate,
        e => Outcome::Error(e.to_string()),
    }
}

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill9,
    Freeze,
    IsolateLeader,
    IsolateFollower,
    Split,
    Bridge,
    RemoveReadd,
    TransferLeadership,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::Kill9,
        Fault::Freeze,
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::Split,
        Fault::Bridge,
        Fault::RemoveReadd,
        Fault::TransferLeadership,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill -9 + restart",
            Fault::Freeze => "SIGSTOP + SIGCONT",
            Fault::IsolateLeader => "isolate leader",
            Fault::IsolateFollower => "isolate follower",
            Fault::Split => "split 1/2",
            Fault::Bridge => "bridge",
            Fault::RemoveReadd => "remove + re-add member",
            Fault::TransferLeadership => "transfer leadership",
        }
    }
}

/// One fault as injected, for the summary and to match anomalies with faults.
#[derive(Debug, Clone)]
struct FaultRecord {
    /// Which fault.
    kind: Fault,
    /// What exactly (nodes, mode).
    detail: String,
    /// When it began and when it was healed, in milliseconds from the history's origin.
    from_ms: u64,
    to_ms: u64,
}

/// What the nemesis did.
#[derive(Debug, Default)]
struct NemesisReport {
    faults: Vec<FaultRecord>,
    /// Minority nodes checked to answer 421 while partitioned.
    minority_421: usize,
    /// When the last fault was healed.
    healed_at: Option<Instant>,
}

fn ms_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Sleeps `d`, or less if the run ends first.
async fn hold(d: Duration, until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    tokio::time::sleep(d.min(left)).await;
}

/// Polls node `i` with a linearizable read until it answers 421 (it is in a minority
/// and must know it); fails after `limit`.
async fn expect_421(
    cluster: &ProcessCluster,
    admin: &weft_testkit::client::TestClient,
    i: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let url = format!(
        "{}{MGMT}/services?limit=1&consistency=linearizable",
        cluster.direct_url(i)
    );
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match admin.get(&url).await {
            Ok(r) if r.status == 421 && r.code() == Some("CONTROLLER_NOT_IN_QUORUM") => {
                return Ok(())
            }
            Ok(r) => last = format!("HTTP {} {}", r.status, r.body),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(cluster.failure(&format!(
        "node {i} in a minority did not answer 421 within {limit:?}; last: {last}"
    )))
}

/// Faults until `until`, one at a time, each on a healthy cluster; the last one is
/// healed at (or just after) `until`. Returns the cluster, whatever happened.
async fn nemesis(
    mut cluster: ProcessCluster,
    origin: Instant,
    until: Instant,
    seed: u64,
) -> (ProcessCluster, anyhow::Result<NemesisReport>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_fa17);
    let mut report = NemesisReport::default();
    let result: anyhow::Result<()> = async {
        let admin = cluster.client().await?;
        let mut order: Vec<Fault> = Vec::new();
        while Instant::now() < until {
            let leader = cluster.wait_healthy(RECOVERY_LIMIT).await?;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..800))).await;
            if Instant::now() >= until {
                break;
            }
            if order.is_empty() {
                order = Fault::ALL.to_vec();
                order.shuffle(&mut rng);
            }
            let kind = order.remove(0);
            let n = cluster.len();
            let others = |x: usize| (0..n).filter(move |&j| j != x);
            let pick = |rng: &mut StdRng, v: Vec<usize>| v[rng.gen_range(0..v.len())];
            let mode = if rng.gen_bool(0.5) {
                CutMode::Refuse
            } else {
                CutMode::Blackhole
            };
            let hold_for = Duration::from_millis(rng.gen_range(1_500..3_500));
            let from_ms = ms_since(origin);
            let detail = match kind {
                Fault::Kill9 => {
                    let i = if rng.gen_bool(0.5) {
                        leader
                    } else {
                        rng.gen_range(0..n)
                    };
                    cluster.kill9(i)?;
                    hold(hold_for, until).await;
                    report.healed_at = Some(Instant::now());
                    cluster.restart(i).await?;
                    format!("node {i}{}", if i == leader { " (leader)" } else { "" })
                }
                Fault::Freeze => {
                    let i = if rng.gen_bool(0.5) {
                        leader
                    } else {
                        rng.gen_range(0..n)
                    };
                    cluster.freeze(i)?;
                    hold(hold_for, until).await;
                    cluster.thaw(i)?;
                    report.healed_at = Some(Instant::now());
                    format!("node {i}{}", if i == leader { " (leader)" } else { "" })
                }
                Fault::IsolateLeader | Fault::IsolateFollower | Fault::Split => {
                    let i = match kind {
                        Fault::IsolateLeader => leader,
                        Fault::IsolateFollower => pick(&mut rng, others(leader).collect()),
                        _ => rng.gen_range(0..n),
                    };
                    let majority: Vec<usize> = others(i).collect();
                    cluster
                        .proxy()
                        .context("the cluster has no proxy")?
                        .partition(&[vec![i], majority.clone()], mode);
                    let started = Instant::now();
                    expect_421(&cluster, &admin, i, Duration::from_secs(10)).await?;
                    report.minority_421 += 1;
                    hold(hold_for.saturating_sub(started.elapsed()), until).await;
                    cluster.proxy().context("the cluster has no proxy")?.heal();
                    report.healed_at = Some(Instant::now());
                    format!("{{{i}}} | {majority:?}, {mode:?}")
                }
                Fault::Bridge => {
                    let bridge = rng.gen_range(0..n);
                    let ends: Vec<usize> = others(bridge).collect();
                    cluster
                        .proxy()
                        .context("the cluster has no proxy")?
                        .cut(ends[0], ends[1], mode);
                    hold(hold_for, until).await;
                    cluster.proxy().context("the cluster has no proxy")?.heal();
                    report.healed_at = Some(Instant::now());
                    format!("{} x {} cut, {bridge} bridges, {mode:?}", ends[0], ends[1])
                }
                Fault::RemoveReadd => {
                    let i = if rng.gen_bool(0.3) {
                        leader
                    } else {
                        rng.gen_range(0..n)
                    };
                    cluster.remove_member(i, RECOVERY_LIMIT).await?;
                    // Removed but still running: it must know it is out.
                    expect_421(&cluster, &admin, i, Duration::from_secs(10)).await?;
                    report.minority_421 += 1;
                    cluster.kill9(i)?;
                    cluster.rejoin(i).await?;
                    report.healed_at = Some(Instant::now());
                    format!(
                        "node {i}{}, back as a new member",
                        if i == leader { " (leader)" } else { "" }
                    )
                }
                Fault::TransferLeadership => {
                    let to = pick(&mut rng, others(leader).collect());
                    let now = cluster
                        .transfer_leadership(Some(to), RECOVERY_LIMIT)
                        .await?;
                    anyhow::ensure!(now == to, "leadership went to {now}, not {to}");
                    report.healed_at = Some(Instant::now());
                    format!("{leader} -> {to}")
                }
            };
            report.faults.push(FaultRecord {
                kind,
                detail,
                from_ms,
                to_ms: ms_since(origin),
            });
        }
        Ok(())
    }
    .await;
    // Whatever happened: nothing stays cut, frozen or down.
    if let Some(p) = cluster.proxy() {
        p.heal();
    }
    for i in 0..cluster.len() {
        if cluster.is_running(i) {
            let _ = cluster.thaw(i);
        }
    }
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            if let Err(e) = cluster.restart(i).await {
                return (cluster, Err(e));
            }
        }
    }
    (cluster, result.map(|()| report))
}

/// Acknowledged changes missing from the final state: a write or compare-and-set that
/// answered version `v` with value `x` is lost if the entity's final version is below
/// `v`, or is `v` with another value.
fn lost_writes(history: &[Op], finals: &[(String, u64)]) -> Vec<String> {
    let mut lost = Vec::new();
    for op in history {
        let (
            Some((_, RegisterOutput::Done { version })),
            RegisterInput::Write(x) | RegisterInput::Cas { value: x, .. },
        ) = (&op.completed, &op.input)
        else {
            continue;
        };
        let (final_value, final_version) = &finals[op.key];
        if final_version < version || (final_version == version && final_value != x) {
            lost.push(format!(
                "entity {}: {:?} acknowledged at v{version}, final state {final_value:?} @v{final_version}",
                op.key, op.input
            ));
        }
    }
    lost
}

async fn chaos(settings: Settings) -> anyhow::Result<()> {
    let Settings { seed, run } = settings;
    eprintln!(
        "[chaos] seed {seed:#x}, {} s, {CLIENTS} clients, {ENTITIES} entities",
        run.as_secs()
    );
    let cluster = ProcessCluster::start_partitionable(BIN, 3, NODE_ARGS).await?;
    let urls: Vec<String> = (0..cluster.len()).map(|i| cluster.url(i)).collect();
    let ca = cluster.ca_pem().to_owned();
    let connect_with = |attempt: Duration, call: Duration| {
        Client::builder()
            .urls(urls.clone())
            .ca_pem(ca.clone())
            .password(ADMIN_USER, ADMIN_PASSWORD)
            .attempt_timeout(attempt)
            .call_timeout(call)
            .connect()
    };
    let connect = || connect_with(ATTEMPT_TIMEOUT, CALL_TIMEOUT);

    // The entities, each a register "init" at its first version.
    let setup = connect().await.context("connecting the set-up client")?;
    let mut entities = Vec::new();
    for k in 0..ENTITIES {
        let data = setup
            .create(
                &format!("{MGMT}/services"),
                json!({ "name": format!("chaos-{seed:x}-{k}"), "tags": { "v": "init" } }),
            )
            .await
            .with_context(|| format!("creating entity {k}"))?;
        let (value, version) =
            register_of(&data).with_context(|| format!("entity {k} answered {data}"))?;
        let id = data["id"].as_str().context("no id")?;
        entities.push(Entity {
            path: format!("{MGMT}/services/{id}"),
            initial: RegisterState::known(value, version),
        });
    }
    let entities = Arc::new(entities);
    let mut clients = Vec::new();
    for no in 0..CLIENTS {
        let c = if no == 0 {
            // Its login is as impatient as its calls: try a few times.
            let mut tries = 0;
            loop {
                tries += 1;
                match connect_with(IMPATIENT_CALL_TIMEOUT / 3, IMPATIENT_CALL_TIMEOUT).await {
                    Err(Error::Unavailable { .. }) if tries < 20 => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    other => break other,
                }
            }
        } else {
            connect().await
        };
        clients.push(c.with_context(|| format!("connecting client {no}"))?);
    }

    // The run.
    let origin = Instant::now();
    let until = origin + run;
    let stop = Arc::new(AtomicBool::new(false));
    let faults = tokio::spawn(nemesis(cluster, origin, until, seed));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(no, c)| {
            tokio::spawn(client_loop(
                no,
                c,
                entities.clone(),
                origin,
                until,
                stop.clone(),
                seed,
            ))
        })
        .collect();
    let (cluster, nemesis_result) = faults.await.context("the nemesis panicked")?;
    if nemesis_result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let mut history: Vec<Op> = Vec::new();
    let mut tally = Tally::default();
    for w in workers {
        let (h, t) = w.await.context("a client panicked")?;
        history.extend(h);
        tally.reads += t.reads;
        tally.writes += t.writes;
        tally.cas_ok += t.cas_ok;
        tally.cas_refused += t.cas_refused;
        tally.indeterminate += t.indeterminate;
        tally.errors.extend(t.errors);
        let s = &mut tally.stats;
        s.calls += t.stats.calls;
        s.retries_not_in_quorum += t.stats.retries_not_in_quorum;
        s.retries_no_leader += t.stats.retries_no_leader;
        s.retries_timeout += t.stats.retries_timeout;
        s.retries_too_many += t.stats.retries_too_many;
        s.retries_transport += t.stats.retries_transport;
        s.relogins += t.stats.relogins;
        s.replays += t.stats.replays;
    }
    let report = nemesis_result?;

    // Convergence, timed from the last heal.
    let healed_at = report.healed_at.unwrap_or_else(Instant::now);
    let left = CONVERGENCE_LIMIT.saturating_sub(healed_at.elapsed());
    let converged = cluster.wait_converged(left).await?;
    let convergence_ms = healed_at.elapsed().as_millis();

    // Final reads: linearizable through the SDK (added to the history), then every
    // node's local copy must show the same.
    let checker = connect().await.context("connecting the final reader")?;
    let admin = cluster.client().await?;
    let mut finals: Vec<(String, u64)> = Vec::new();
    for (key, e) in entities.iter().enumerate() {
        let call = now_ns(origin);
        let resp = checker
            .send(Request::get(e.path.clone()).query("consistency", "linearizable"))
            .await
            .with_context(|| format!("final read of entity {key}"))?;
        let ret = now_ns(origin);
        let (value, version) =
            register_of(resp.data()).with_context(|| format!("final read: {}", resp.body))?;
        history.push(Operation {
            key,
            client: FINAL_READER,
            input: RegisterInput::Read,
            call,
            completed: Some((
                ret,
                RegisterOutput::Value {
                    value: value.clone(),
                    version,
                },
            )),
        });
        for i in 0..cluster.len() {
            let r = admin
                .get(&format!("{}{}", cluster.direct_url(i), e.path))
                .await?;
            anyhow::ensure!(
                r.status == 200 && register_of(r.data()) == Some((value.clone(), version)),
                "node {i} holds entity {key} as {} (HTTP {}), the cluster read {value:?} @v{version}",
                r.data(),
                r.status
            );
        }
        finals.push((value, version));
    }

    // The checks.
    let lost = lost_writes(&history, &finals);
    let initial: Vec<RegisterState> = entities.iter().map(|e| e.initial.clone()).collect();
    let checked = {
        let h = history.clone();
        // Long runs have long histories: a budget that grows with them.
        let budget = linearizability::DEFAULT_BUDGET.max(2_000 * h.len() as u64);
        tokio::task::spawn_blocking(move || {
            linearizability::check_with_budget(
                &h,
                |k: &usize| VersionedRegister {
                    initial: initial[*k].clone(),
                },
                budget,
            )
        })
        .await
        .context("the checker panicked")?
    };
    // The checker itself must see a planted anomaly: a read after everything that
    // shows an entity's initial state although a change of it was acknowledged.
    let planted = {
        let changed = history
            .iter()
            .find(|op| matches!(op.completed, Some((_, RegisterOutput::Done { .. }))));
        match changed {
            Some(op) => {
                let key = op.key;
                let mut h: Vec<Op> = history.iter().filter(|o| o.key == key).cloned().collect();
                let end = now_ns(origin);
                let init = entities[key].initial.clone();
                h.push(Operation {
                    key,
                    client: FINAL_READER,
                    input: RegisterInput::Read,
                    call: end,
                    completed: Some((
                        end + 1,
                        RegisterOutput::Value {
                            value: init.value.clone().unwrap_or_default(),
                            version: init.version.unwrap_or(1),
                        },
                    )),
                });
                let r = tokio::task::spawn_blocking(move || {
                    linearizability::check(&h, |_: &usize| VersionedRegister {
                        initial: init.clone(),
                    })
                })
                .await
                .context("the checker panicked")?;
                matches!(
                    r.first().map(|r| &r.verdict),
                    Some(Verdict::NotLinearizable(_))
                )
            }
            None => false,
        }
    };
    anyhow::ensure!(planted, "the checker did not catch a planted stale read");
    let mut anomalies = Vec::new();
    let mut undecided = Vec::new();
    for r in &checked {
        match &r.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(c) => anomalies.push(format!(
                "entity {} ({} operations, {} indeterminate) is not linearizable:\n{c}",
                r.key, r.operations, r.indeterminate
            )),
            Verdict::Unknown { steps } => undecided.push(format!(
                "entity {}: undecided after {steps} steps ({} operations, {} indeterminate)",
                r.key, r.operations, r.indeterminate
            )),
        }
    }

    // The summary.
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &report.faults {
        *by_kind.entry(f.kind.name()).or_insert(0) += 1;
    }
    let ops = tally.reads + tally.writes + tally.cas_ok + tally.cas_refused + tally.indeterminate;
    let proxy = cluster.proxy().map(|p| p.stats()).unwrap_or_default();
    eprintln!(
        "[chaos] operations: {ops} (reads {}, writes {}, cas {} ok + {} refused, indeterminate {})",
        tally.reads, tally.writes, tally.cas_ok, tally.cas_refused, tally.indeterminate
    );
    eprintln!(
        "[chaos] faults injected: {} {by_kind:?}; minority nodes answering 421: {}",
        report.faults.len(),
        report.minority_421
    );
    // The timeline, to match anomalies with faults (long runs: only when a check failed).
    let failed = !(anomalies.is_empty()
        && undecided.is_empty()
        && lost.is_empty()
        && tally.errors.is_empty());
    if failed || report.faults.len() <= MAX_TIMELINE {
        for f in &report.faults {
            eprintln!(
                "[chaos]   {:>7} .. {:>7} ms  {:<24} {}",
                f.from_ms,
                f.to_ms,
                f.kind.name(),
                f.detail
            );
        }
    } else {
        eprintln!("[chaos]   (the timeline of the faults is shown when a check fails)");
    }
    let s = &tally.stats;
    eprintln!(
        "[chaos] SDK: {} calls; retries: not-in-quorum {}, no-leader {}, timeout {}, too-many {}, \
         transport {}; relogins {}, idempotent replays {}",
        s.calls,
        s.retries_not_in_quorum,
        s.retries_no_leader,
        s.retries_timeout,
        s.retries_too_many,
        s.retries_transport,
        s.relogins,
        s.replays
    );
    eprintln!(
        "[chaos] proxy: {} peer connections, {} refused, {} blackholed, {} upstream failures",
        proxy.peer_connections, proxy.refused, proxy.blackholed, proxy.upstream_failures
    );
    eprintln!(
        "[chaos] anomalies: {}, undecided: {}, lost acknowledged writes: {}, unexpected errors: {}",
        anomalies.len(),
        undecided.len(),
        lost.len(),
        tally.errors.len()
    );
    eprintln!(
        "[chaos] convergence: {convergence_ms} ms after the last heal (applied index {}, state hash {})",
        converged.applied_index,
        &converged.state_hash[..16.min(converged.state_hash.len())]
    );

    anyhow::ensure!(
        anomalies.is_empty(),
        "seed {seed:#x}: {} anomalies:\n{}",
        anomalies.len(),
        anomalies.join("\n")
    );
    anyhow::ensure!(undecided.is_empty(), "{}", undecided.join("\n"));
    anyhow::ensure!(
        lost.is_empty(),
        "lost acknowledged writes:\n  {}",
        lost.join("\n  ")
    );
    anyhow::ensure!(
        tally.errors.is_empty(),
        "errors the SDK should not have returned:\n  {}",
        tally.errors.join("\n  ")
    );
    anyhow::ensure!(
        tally.reads > 0 && tally.writes > 0 && tally.cas_ok > 0,
        "the workload did too little: {tally:?}"
    );
    if run >= DEFAULT_RUN {
        let missing: Vec<&str> = Fault::ALL
            .iter()
            .filter(|f| !report.faults.iter().any(|r| r.kind == **f))
            .map(|f| f.name())
            .collect();
        anyhow::ensure!(missing.is_empty(), "faults never injected: {missing:?}");
    }
    cluster.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_faults_is_linearizable() {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => panic!("{e:#}"),
    };
    // Start-up, the run, convergence and the checks, with room for a slow machine.
    let bound = settings.run + Duration::from_secs(150);
    let started = Instant::now();
    let r = tokio::time::timeout(bound, chaos(settings)).await;
    eprintln!("[chaos] took {:.1} s", started.elapsed().as_secs_f64());
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("chaos failed (seed {:#x}): {e:?}", settings.seed),
        Err(_) => panic!(
            "chaos did not finish within {bound:?} (seed {:#x})",
            settings.seed
        ),
    }
}
