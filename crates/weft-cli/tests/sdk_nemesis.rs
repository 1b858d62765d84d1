//! The SDK against a real 3-node cluster under a nemesis: 8 concurrent tasks share one
//! `weft_sdk::Client` (all 3 URLs) for 5,000 operations paced over about 30 s (creates of
//! uniquely named services, `If-Match` patches and deletes of services the task created,
//! lists, shows), while another task kills -9 the leader and restarts it, freezes a
//! follower and thaws it, and stops and restarts nodes. Attempts time out after 1 s, less
//! than a write can take while a leader is replaced, so retries race their first attempt.
//!
//! The SDK's promise is that the caller sees no error it did not cause: every retryable
//! failure is retried, and a retry of a write whose first attempt was applied (a timeout,
//! a reset, a killed leader) is answered by the server's idempotency record instead of
//! being applied twice. So this test allows no error at all except those it causes on
//! purpose (shows of ids that do not exist, which must be 404). In particular a 409 on a
//! create or a 412 on a patch would mean a retry was applied twice. At the end every node
//! must hold every acknowledged create (not deleted later) once, with the value of its
//! last acknowledged patch, and none of the deleted ones.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use weft_sdk::{Client, Error, Request};
use weft_testkit::process::{ProcessCluster, ADMIN_PASSWORD, ADMIN_USER};

use common::{bounded, list_services, name_counts, MGMT, WAIT};

/// Operations in total, over all tasks.
const OPERATIONS: usize = 5_000;
/// Concurrent tasks sharing the client.
const TASKS: usize = 8;
/// Operations start at most this often (over all tasks), so the 5,000 take about
/// 30 s and the nemesis gets through several rounds of each fault meanwhile.
const PACE: Duration = Duration::from_millis(6);
/// Name prefix of this test's services.
const PREFIX: &str = "nem-";

/// A service a task created and still owns.
#[derive(Debug, Clone)]
struct Owned {
    id: String,
    name: String,
    /// Its `version`, for `If-Match`.
    version: Option<u64>,
}

/// What the tasks were told by the SDK, to check against the cluster at the end.
#[derive(Debug, Default)]
struct Ledger {
    /// Acknowledged creates: name -> id.
    created: HashMap<String, String>,
    /// Ids whose delete was acknowledged.
    deleted: HashSet<String>,
    /// The tag value of each id's last acknowledged patch.
    patched: HashMap<String, String>,
    /// Ids whose fate is unknown because a change of them failed (then `errors` is not
    /// empty and the test fails anyway; this only keeps the loss report accurate).
    uncertain: HashSet<String>,
    /// Operations done, by kind.
    ops: BTreeMap<&'static str, usize>,
    /// Errors the test caused on purpose and got back as expected.
    expected_errors: usize,
    /// Every other error: must stay empty.
    errors: Vec<String>,
}

impl Ledger {
    fn count(&mut self, kind: &'static str) {
        *self.ops.entry(kind).or_insert(0) += 1;
    }
}

/// The entity's `version` (every record shows one), for `If-Match`.
fn version_of(data: &Value) -> Option<u64> {
    data["version"].as_u64()
}

/// One task: a random mix of operations until the shared budget is spent.
async fn worker(
    task: usize,
    client: Client,
    budget: Arc<AtomicUsize>,
    ledger: Arc<Mutex<Ledger>>,
    started: tokio::time::Instant,
) {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + task as u64);
    let mut owned: Vec<Owned> = Vec::new();
    let mut seq = 0usize;
    let services = format!("{MGMT}/services");
    loop {
        let k = budget.fetch_add(1, Ordering::Relaxed);
        if k >= OPERATIONS {
            break;
        }
        tokio::time::sleep_until(started + PACE * k as u32).await;
        let roll = rng.gen_range(0..100);
        let fail = |what: String, e: Error| {
            ledger
                .lock()
                .unwrap()
                .errors
                .push(format!("task {task} {what}: {e}"));
        };
        if roll < 30 || owned.is_empty() {
            seq += 1;
            let name = format!("{PREFIX}{task}-{seq}");
            match client.create(&services, json!({ "name": name })).await {
                Ok(data) => {
                    let id = data["id"].as_str().unwrap_or_default().to_owned();
                    let mut l = ledger.lock().unwrap();
                    if version_of(&data).is_none() {
                        l.errors
                            .push(format!("task {task} create {name}: no version in {data}"));
                    }
                    l.count("create");
                    l.created.insert(name.clone(), id.clone());
                    owned.push(Owned {
                        id,
                        name,
                        version: version_of(&data),
                    });
                }
                Err(e) => fail(format!("create {name}"), e),
            }
        } else if roll < 55 {
            let k = rng.gen_range(0..owned.len());
            let o = &mut owned[k];
            let value = format!("v{}", rng.gen::<u32>());
            let path = format!("{services}/{}", o.id);
            match client
                .update(&path, json!({ "tags": { "v": value } }), o.version)
                .await
            {
                Ok(data) => {
                    let mut l = ledger.lock().unwrap();
                    match version_of(&data) {
                        Some(v) if Some(v) > o.version => {}
                        other => l.errors.push(format!(
                            "task {task} patch {}: version {other:?} after {:?}",
                            o.name, o.version
                        )),
                    }
                    o.version = version_of(&data);
                    l.count("patch");
                    l.patched.insert(o.id.clone(), value);
                }
                Err(e) => {
                    ledger.lock().unwrap().uncertain.insert(o.id.clone());
                    fail(format!("patch {} (If-Match {:?})", o.name, o.version), e)
                }
            }
        } else if roll < 65 {
            let k = rng.gen_range(0..owned.len());
            let o = owned.swap_remove(k);
            match client
                .delete(&format!("{services}/{}", o.id), o.version)
                .await
            {
                Ok(_) => {
                    let mut l = ledger.lock().unwrap();
                    l.count("delete");
                    l.deleted.insert(o.id);
                }
                Err(e) => {
                    ledger.lock().unwrap().uncertain.insert(o.id.clone());
                    fail(format!("delete {}", o.name), e)
                }
            }
        } else if roll < 80 {
            let filter = format!("name contains \"{PREFIX}{task}-\"");
            match client.list(&services, Some(&filter), 10, 0).await {
                Ok(page) => {
                    ledger.lock().unwrap().count("list");
                    if page.total < page.items.len() as u64 {
                        ledger
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("task {task} list: total {} < items", page.total));
                    }
                }
                Err(e) => fail("list".into(), e),
            }
        } else if roll < 97 {
            // A linearizable show of an owned service: it must be there.
            let o = &owned[rng.gen_range(0..owned.len())];
            let req =
                Request::get(format!("{services}/{}", o.id)).query("consistency", "linearizable");
            match client.send(req).await {
                Ok(r) if r.data()["name"] == o.name.as_str() => {
                    ledger.lock().unwrap().count("show");
                }
                Ok(r) => ledger.lock().unwrap().errors.push(format!(
                    "task {task} show {}: got {}",
                    o.name,
                    r.data()
                )),
                Err(e) => fail(format!("show {}", o.name), e),
            }
        } else {
            // The user's mistake: a service that does not exist. Must be 404, not retried.
            let path = format!("{services}/no-such-{task}-{seq}");
            match client.show(&path).await {
                Err(e) if e.code() == Some("NOT_FOUND") => {
                    let mut l = ledger.lock().unwrap();
                    l.count("show-missing");
                    l.expected_errors += 1;
                }
                Ok(v) => ledger.lock().unwrap().errors.push(format!(
                    "task {task} show of a missing service answered {v}"
                )),
                Err(e) => fail("show-missing".into(), e),
            }
        }
    }
}

/// Faults until `stop`: kill -9 the leader and restart it; freeze a follower and thaw
/// it; stop a node (SIGTERM) and restart it. Before each fault the cluster is healthy
/// again, so at most one node is out at a time. Returns the cluster and what it did.
async fn nemesis(
    mut cluster: ProcessCluster,
    stop: Arc<AtomicBool>,
) -> (
    ProcessCluster,
    anyhow::Result<BTreeMap<&'static str, usize>>,
) {
    let mut done: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(0x5eed_fa17);
    let mut round = 0usize;
    let result: anyhow::Result<()> = async {
        while !stop.load(Ordering::Relaxed) {
            let leader = cluster.wait_healthy(WAIT).await?;
            match round % 3 {
                0 => {
                    cluster.kill9(leader)?;
                    *done.entry("kill9 leader").or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    cluster.restart(leader).await?;
                }
                1 => {
                    let followers: Vec<usize> = cluster
                        .running()
                        .into_iter()
                        .filter(|&i| i != leader)
                        .collect();
                    let f = followers[rng.gen_range(0..followers.len())];
                    cluster.freeze(f)?;
                    *done.entry("freeze follower").or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    cluster.thaw(f)?;
                }
                _ => {
                    let n = rng.gen_range(0..cluster.len());
                    cluster.stop(n).await?;
                    *done.entry("stop+restart node").or_insert(0) += 1;
                    cluster.restart(n).await?;
                }
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }
    .await;
    (cluster, result.map(|()| done))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_gives_exactly_once_writes_under_a_nemesis() {
    bounded("sdk_nemesis", async {
        let cluster = common::start(3).await?;
        let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
        let client = Client::builder()
            .urls(urls.clone())
            .ca_pem(cluster.ca_pem())
            .password(ADMIN_USER, ADMIN_PASSWORD)
            // Shorter than a write can take while a leader is replaced (election wait,
            // forwarding to a dead leader): attempts time out while their write may
            // still be applied, and the retry must be answered by the idempotency record.
            .attempt_timeout(Duration::from_secs(1))
            .connect()
            .await
            .context("connecting the SDK client")?;
        anyhow::ensure!(
            client.controllers().len() == 3,
            "{:?}",
            client.controllers()
        );

        let stop = Arc::new(AtomicBool::new(false));
        let faults = tokio::spawn(nemesis(cluster, stop.clone()));
        let started = Instant::now();
        let paced = tokio::time::Instant::now();
        let budget = Arc::new(AtomicUsize::new(0));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                tokio::spawn(worker(
                    t,
                    client.clone(),
                    budget.clone(),
                    ledger.clone(),
                    paced,
                ))
            })
            .collect();
        for t in tasks {
            t.await.context("a worker panicked")?;
        }
        let ops_time = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (mut cluster, faults) = faults.await.context("the nemesis panicked")?;
        let faults = faults?;
        for i in 0..cluster.len() {
            if !cluster.is_running(i) {
                cluster.restart(i).await?;
            }
        }
        cluster.wait_healthy(WAIT).await?;
        cluster.wait_caught_up(WAIT).await?;

        // What every node holds.
        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        let check = cluster.client().await?;
        let mut duplicates = 0usize;
        let mut lost = Vec::new();
        let mut resurrected = Vec::new();
        for i in 0..cluster.len() {
            let all = list_services(&check, &cluster.url(i)).await?;
            let ours: Vec<Value> = all
                .into_iter()
                .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(PREFIX)))
                .collect();
            duplicates += name_counts(&ours).values().filter(|&&n| n > 1).count();
            let by_id: HashMap<&str, &Value> = ours
                .iter()
                .filter_map(|s| s["id"].as_str().map(|id| (id, s)))
                .collect();
            for (name, id) in &ledger.created {
                if ledger.uncertain.contains(id) {
                    continue;
                }
                let deleted = ledger.deleted.contains(id);
                match (by_id.get(id.as_str()), deleted) {
                    (None, false) => lost.push(format!("node {i}: create of {name} ({id})")),
                    (Some(_), true) => resurrected.push(format!("node {i}: {name} ({id})")),
                    (Some(s), false) => {
                        if s["name"] != name.as_str() {
                            lost.push(format!("node {i}: {id} is named {}", s["name"]));
                        }
                        if let Some(v) = ledger.patched.get(id) {
                            if s["tags"]["v"] != v.as_str() {
                                lost.push(format!(
                                    "node {i}: patch of {name} to {v} (holds {})",
                                    s["tags"]["v"]
                                ));
                            }
                        }
                    }
                    (None, true) => {}
                }
            }
        }
        let stats = client.stats();
        let ops: usize = ledger.ops.values().sum();
        eprintln!(
            "[sdk_nemesis] {ops} operations in {:.1} s ({:?}); faults {:?}",
            ops_time.as_secs_f64(),
            ledger.ops,
            faults
        );
        eprintln!(
            "[sdk_nemesis] SDK: {} calls; retries: not-in-quorum {}, no-leader {}, timeout {}, \
             too-many {}, transport {}; relogins {}, refreshes {}, idempotent replays {}",
            stats.calls,
            stats.retries_not_in_quorum,
            stats.retries_no_leader,
            stats.retries_timeout,
            stats.retries_too_many,
            stats.retries_transport,
            stats.relogins,
            stats.refreshes,
            stats.replays
        );
        eprintln!(
            "[sdk_nemesis] errors {} (expected 404s {}), duplicates {duplicates}, lost {}, \
             deleted but present {}",
            ledger.errors.len(),
            ledger.expected_errors,
            lost.len(),
            resurrected.len()
        );
        anyhow::ensure!(
            ledger.errors.is_empty(),
            "the SDK returned errors the caller did not cause:\n  {}",
            ledger.errors.join("\n  ")
        );
        anyhow::ensure!(duplicates == 0, "{duplicates} service names appear twice");
        anyhow::ensure!(lost.is_empty(), "lost:\n  {}", lost.join("\n  "));
        anyhow::ensure!(
            resurrected.is_empty(),
            "deleted but present:\n  {}",
            resurrected.join("\n  ")
        );
        anyhow::ensure!(ops == OPERATIONS, "{ops} operations done of {OPERATIONS}");
        anyhow::ensure!(
            faults.get("kill9 leader").copied().unwrap_or(0) >= 1,
            "the nemesis killed no leader: {faults:?}"
        );
        cluster.finish();
        Ok(())
    })
    .await;
}
