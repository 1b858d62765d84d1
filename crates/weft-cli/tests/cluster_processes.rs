//! Clusters of real `weft controller run` processes: formation, kill -9 of the leader
//! under writes, frozen peers, full restarts, tokens across nodes, joining.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use common::*;
use serde_json::{json, Value};
use weft_testkit::client::TestClient;
use weft_testkit::process::ProcessCluster;

/// Looks at list-members on every running node: 3 voters, one leader (the same for all),
/// all connected, all at the same applied index, addresses and ids those of the nodes.
async fn formation_check(cluster: &ProcessCluster, c: &TestClient) -> Result<(), String> {
    let urls: BTreeSet<String> = (0..cluster.len()).map(|i| cluster.url(i)).collect();
    let ids: BTreeSet<String> = (0..cluster.len())
        .filter_map(|i| cluster.node_id(i))
        .collect();
    let mut leaders = BTreeSet::new();
    for i in 0..cluster.len() {
        let members = list_members(c, &cluster.url(i))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let shown = Value::Array(members.clone());
        if members.len() != cluster.len() {
            return Err(format!("node {i} lists {} members: {shown}", members.len()));
        }
        let addrs: BTreeSet<String> = members
            .iter()
            .filter_map(|m| m["address"].as_str().map(str::to_owned))
            .collect();
        if addrs != urls {
            return Err(format!("node {i}: addresses {addrs:?}, expected {urls:?}"));
        }
        let mids: BTreeSet<String> = members
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        if mids != ids {
            return Err(format!("node {i}: ids {mids:?}, expected {ids:?}"));
        }
        if !members.iter().all(|m| m["voter"] == true) {
            return Err(format!("node {i}: not all voters: {shown}"));
        }
        if !members.iter().all(|m| m["connected"] == true) {
            return Err(format!("node {i}: not all connected: {shown}"));
        }
        let lead: Vec<&Value> = members.iter().filter(|m| m["leader"] == true).collect();
        if lead.len() != 1 {
            return Err(format!("node {i}: {} leaders: {shown}", lead.len()));
        }
        leaders.insert(lead[0]["id"].as_str().unwrap_or_default().to_owned());
        let applied: BTreeSet<Option<u64>> =
            members.iter().map(|m| m["appliedIndex"].as_u64()).collect();
        if applied.len() != 1 || applied.contains(&None) {
            return Err(format!("node {i}: applied indexes differ: {shown}"));
        }
    }
    if leaders.len() != 1 {
        return Err(format!("nodes name different leaders: {leaders:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_two_joins_form_a_three_voter_cluster() {
    bounded(
        "bootstrap_and_two_joins_form_a_three_voter_cluster",
        async {
            let cluster = start(3).await?;
            let c = cluster.client().await?;
            let deadline = Instant::now() + WAIT;
            loop {
                match formation_check(&cluster, &c).await {
                    Ok(()) => break,
                    Err(why) if Instant::now() > deadline => {
                        return Err(cluster.failure(&format!("cluster never formed: {why}")))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            // Health agrees: one leader, every node in quorum, same applied index.
            let leader = cluster.wait_healthy(WAIT).await?;
            cluster.wait_applied_equal(WAIT).await?;
            let h = cluster.health(leader).await?;
            ensure!(
                h.data()["role"] == "leader",
                "health of the leader: {}",
                h.body
            );
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

/// What a writer saw.
#[derive(Default, Debug)]
struct WriteLog {
    /// The service exists: 201, or 409 on a retry after an indeterminate attempt.
    acked: Vec<String>,
    /// Acknowledged after the leader was killed.
    acked_after_kill: usize,
    /// Names whose first attempt was indeterminate and whose retry then settled it.
    resolved: usize,
    /// Still unknown when the writer stopped (503 TIMEOUT or a broken connection,
    /// with no settling retry yet).
    indeterminate: Vec<(String, String)>,
    /// Definitely not written (421, 503 CLUSTER_NO_LEADER, 429, connection refused),
    /// with no indeterminate attempt before.
    failed: Vec<(String, String)>,
    /// Answers the status table does not allow here (500s, 409 on a fresh name, ...).
    unexpected: Vec<(String, String)>,
}

fn is_connect_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
    })
}

/// How one create attempt ended.
enum Attempt {
    Created,
    /// 409 ENTITY_ALREADY_EXISTS.
    Exists,
    /// Definitely not written.
    Refused(String),
    /// May or may not have been written.
    Unknown(String),
    Unexpected(String),
}

async fn attempt(c: &TestClient, base: &str, name: &str) -> Attempt {
    match create_service(c, base, name).await {
        Ok(r) => match (r.status, r.code()) {
            (201, _) if r.data()["name"] == name => Attempt::Created,
            (409, Some("ENTITY_ALREADY_EXISTS")) => Attempt::Exists,
            (503, Some("TIMEOUT")) => Attempt::Unknown(r.body.to_string()),
            (503, Some("CLUSTER_NO_LEADER"))
            | (421, Some("CONTROLLER_NOT_IN_QUORUM"))
            | (429, Some("SERVER_TOO_MANY_REQUESTS")) => {
                Attempt::Refused(format!("{} {}", r.status, r.body))
            }
            _ => Attempt::Unexpected(format!("HTTP {} {}", r.status, r.body)),
        },
        Err(e) if is_connect_error(&e) => Attempt::Refused(format!("{e:#}")),
        Err(e) => Attempt::Unknown(format!("{e:#}")),
    }
}

/// Creates services with unique names through `base` until `stop` is set. A name whose
/// outcome is unknown is retried as it is (201 or 409 then settles it); only a
/// definitely refused name is given up for a fresh one.
async fn writer(
    c: TestClient,
    base: String,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> WriteLog {
    let mut log = WriteLog::default();
    let mut seq = 0u32;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let name = format!("w-{seq:05}");
        let mut unknown: Option<String> = None;
        loop {
            let after_kill = killed.load(Ordering::SeqCst);
            let ack = |log: &mut WriteLog, name: &str| {
                log.acked.push(name.to_owned());
                if after_kill {
                    log.acked_after_kill += 1;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            };
            match attempt(&c, &base, &name).await {
                Attempt::Created => {
                    ack(&mut log, &name);
                    log.resolved += usize::from(unknown.is_some());
                    break;
                }
                Attempt::Exists if unknown.is_some() => {
                    ack(&mut log, &name);
                    log.resolved += 1;
                    break;
                }
                Attempt::Exists => {
                    log.unexpected
                        .push((name.clone(), "409 for a name never sent before".into()));
                    break;
                }
                Attempt::Refused(why) if unknown.is_none() => {
                    log.failed.push((name.clone(), why));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Attempt::Refused(why) | Attempt::Unknown(why) => unknown = Some(why),
                Attempt::Unexpected(why) => {
                    log.unexpected.push((name.clone(), why));
                    break;
                }
            }
            // Only an unsettled name gets here: retry it, unless the test is over.
            if stop.load(Ordering::SeqCst) {
                log.indeterminate
                    .push((name.clone(), unknown.take().unwrap_or_default()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log
}

async fn wait_until(
    what: &str,
    cluster: &ProcessCluster,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return Err(cluster.failure(&format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leader_while_writing_through_follower_loses_no_acknowledged_write() {
    bounded(
        "kill9_leader_while_writing_through_follower_loses_no_acknowledged_write",
        async {
            let mut cluster = start(3).await?;
            let leader = cluster.wait_healthy(WAIT).await?;
            let follower = (0..3).find(|&i| i != leader).context("no follower")?;
            let c = cluster.client().await?;

            let stop = Arc::new(AtomicBool::new(false));
            let killed = Arc::new(AtomicBool::new(false));
            let acked = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn(writer(
                c.clone(),
                cluster.url(follower),
                stop.clone(),
                killed.clone(),
                acked.clone(),
            ));

            wait_until("20 acknowledged writes before the kill", &cluster, || {
                acked.load(Ordering::SeqCst) >= 20
            })
            .await?;
            cluster.kill9(leader)?;
            killed.store(true, Ordering::SeqCst);
            let at_kill = acked.load(Ordering::SeqCst);
            let killed_at = Instant::now();
            eprintln!("killed leader node {leader} after {at_kill} acknowledged writes");

            // Keep writing through the survivor: the cluster must elect and go on.
            wait_until("20 acknowledged writes after the kill", &cluster, || {
                acked.load(Ordering::SeqCst) >= at_kill + 20
            })
            .await?;
            let elapsed = killed_at.elapsed();
            if elapsed < Duration::from_secs(4) {
                tokio::time::sleep(Duration::from_secs(4) - elapsed).await;
            }
            cluster.restart(leader).await?;
            cluster.wait_healthy(WAIT).await?;
            let at_restart = acked.load(Ordering::SeqCst);
            wait_until("10 acknowledged writes after the restart", &cluster, || {
                acked.load(Ordering::SeqCst) >= at_restart + 10
            })
            .await?;
            stop.store(true, Ordering::SeqCst);
            let log = tokio::time::timeout(WAIT, task)
                .await
                .context("the writer did not stop")??;
            eprintln!(
                "acknowledged {} ({} after the kill, {} settled by a retry), \
                 indeterminate {}, refused {}, unexpected {}",
                log.acked.len(),
                log.acked_after_kill,
                log.resolved,
                log.indeterminate.len(),
                log.failed.len(),
                log.unexpected.len()
            );
            if !log.indeterminate.is_empty() {
                eprintln!("indeterminate outcomes: {:?}", log.indeterminate);
            }
            ensure!(
                log.unexpected.is_empty(),
                "answers outside the status table: {:?}",
                log.unexpected
            );
            ensure!(log.acked_after_kill > 0, "no write succeeded after the kill");

            cluster.wait_caught_up(WAIT).await?;
            let acked_set: BTreeSet<&str> = log.acked.iter().map(String::as_str).collect();
            let maybe: BTreeSet<&str> = log.indeterminate.iter().map(|(n, _)| n.as_str()).collect();
            for i in 0..3 {
                let services = list_services(&c, &cluster.url(i)).await?;
                let counts = name_counts(&services);
                let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
                ensure!(twice.is_empty(), "node {i}: names stored twice: {twice:?}");
                let missing: Vec<_> = acked_set
                    .iter()
                    .filter(|n| !counts.contains_key(**n))
                    .collect();
                ensure!(
                    missing.is_empty(),
                    "node {i} lost {} acknowledged writes: {missing:?}",
                    missing.len()
                );
                let phantom: Vec<_> = counts
                    .keys()
                    .filter(|n| !acked_set.contains(n.as_str()) && !maybe.contains(n.as_str()))
                    .collect();
                ensure!(
                    phantom.is_empty(),
                    "node {i} holds names that were refused or never sent: {phantom:?} (refusals: {:?})",
                    log.failed
                        .iter()
                        .filter(|(n, _)| phantom.contains(&n))
                        .collect::<Vec<_>>()
                );
            }
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_frozen_peers_answers_421() {
    bounded("node_with_frozen_peers_answers_421", async {
        let mut cluster = start(3).await?;
        let leader = cluster.wait_healthy(WAIT).await?;
        let c = cluster.client().await?;
        let follower = (0..3).find(|&i| i != leader).context("no follower")?;
        let mut seq = 0;
        // First the leader is left alone (it must not keep acting as one), then a follower.
        for alone in [leader, follower] {
            let others: Vec<usize> = (0..3).filter(|&i| i != alone).collect();
            let base = cluster.url(alone);
            for &o in &others {
                cluster.freeze(o)?;
            }
            let expected: BTreeSet<String> = others.iter().map(|&o| cluster.url(o)).collect();

            // Within a few seconds, writes are refused with 421 and the other members.
            let deadline = Instant::now() + WAIT;
            let refusal = loop {
                seq += 1;
                let r = create_service(&c, &base, &format!("frozen-{seq}")).await?;
                match (r.status, r.code()) {
                    (421, Some("CONTROLLER_NOT_IN_QUORUM")) => break r,
                    (503, _) if Instant::now() < deadline => {}
                    (s, _) => {
                        return Err(cluster.failure(&format!(
                            "node {alone} with frozen peers answered a write with HTTP {s} {} \
                             (expected 421 CONTROLLER_NOT_IN_QUORUM)",
                            r.body
                        )))
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let listed: BTreeSet<String> = refusal.body["error"]["data"]["controllers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ensure!(
                listed == expected,
                "421 lists controllers {listed:?}, expected {expected:?}: {}",
                refusal.body
            );
            ensure!(
                refusal.body["error"]["requestId"].as_str() == refusal.header("x-request-id"),
                "requestId differs from x-request-id: {}",
                refusal.body
            );

            // Reads are served locally, marked stale.
            let r = c.get(&format!("{base}{MGMT}/services?limit=5")).await?;
            ensure!(
                r.status == 200,
                "read with frozen peers: HTTP {} {}",
                r.status,
                r.body
            );
            ensure!(
                r.header("x-weft-stale") == Some("true"),
                "read with frozen peers is not marked stale: headers {:?}",
                r.headers
            );
            let h = cluster.health(alone).await?;
            ensure!(
                h.data()["inQuorum"] == false,
                "health says in quorum: {}",
                h.body
            );

            // Thaw: writes succeed again.
            for &o in &others {
                cluster.thaw(o)?;
            }
            let deadline = Instant::now() + WAIT;
            loop {
                seq += 1;
                let r = create_service(&c, &base, &format!("thawed-{seq}")).await?;
                match (r.status, r.code()) {
                    (201, _) => break,
                    (421, _) | (503, _) if Instant::now() < deadline => {}
                    (s, _) => {
                        return Err(cluster.failure(&format!(
                            "after thawing, a write on node {alone} answered HTTP {s} {}",
                            r.body
                        )))
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            cluster.wait_healthy(WAIT).await?;
            let r = c.get(&format!("{base}{MGMT}/services?limit=5")).await?;
            ensure!(
                r.status == 200,
                "read after thaw: HTTP {} {}",
                r.status,
                r.body
            );
            ensure!(
                r.header("x-weft-stale").is_none(),
                "read in quorum is marked stale: {:?}",
                r.headers
            );
        }
        cluster.finish();
        Ok(())
    })
    .await;
}

/// Every node holds exactly the names `expected` (plus nothing else), read locally.
async fn every_node_has(
    cluster: &ProcessCluster,
    c: &TestClient,
    expected: &BTreeSet<String>,
) -> anyhow::Result<()> {
    cluster.wait_caught_up(WAIT).await?;
    for i in 0..cluster.len() {
        let counts = name_counts(&list_services(c, &cluster.url(i)).await?);
        let names: BTreeSet<String> = counts.keys().cloned().collect();
        ensure!(
            counts.values().all(|n| *n == 1),
            "node {i}: duplicate names: {counts:?}"
        );
        ensure!(
            &names == expected,
            "node {i}: services {names:?}, expected {expected:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_every_node_keeps_data() {
    bounded("restart_of_every_node_keeps_data", async {
        let mut cluster = start(3).await?;
        let c = cluster.client().await?;
        let mut expected = BTreeSet::new();
        for k in 0..30 {
            let name = format!("keep-{k:02}");
            create_service_retrying(&c, &cluster.url(k % 3), &name).await?;
            expected.insert(name);
        }
        every_node_has(&cluster, &c, &expected).await?;

        for how in ["SIGTERM", "SIGKILL"] {
            for i in 0..3 {
                if how == "SIGTERM" {
                    let status = cluster.stop(i).await?;
                    if !status.success() {
                        return Err(
                            cluster.failure(&format!("node {i} exited with {status} on SIGTERM"))
                        );
                    }
                } else {
                    cluster.kill9(i)?;
                }
            }
            for i in 0..3 {
                cluster.restart(i).await?;
            }
            cluster.wait_healthy(WAIT).await?;
            // The session from before the restart still works (keys are persisted).
            every_node_has(&cluster, &c, &expected)
                .await
                .with_context(|| format!("after {how} of every node"))?;
            let name = format!("after-{how}");
            create_service_retrying(&c, &cluster.url(1), &name).await?;
            expected.insert(name);
            every_node_has(&cluster, &c, &expected).await?;
        }
        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_one_node_works_on_others_100_times_across_leader_kill() {
    bounded(
        "token_from_one_node_works_on_others_100_times_across_leader_kill",
        async {
            let mut cluster = start(3).await?;
            let leader = cluster.wait_healthy(WAIT).await?;
            // The token comes from the leader, whose process is then killed.
            let mut c = cluster.plain_client(Duration::from_secs(20))?;
            c.login(
                &cluster.url(leader),
                weft_testkit::process::ADMIN_USER,
                weft_testkit::process::ADMIN_PASSWORD,
            )
            .await?;
            let mut failures = Vec::new();
            let mut served_by: BTreeMap<usize, usize> = BTreeMap::new();
            let mut follower_after_kill = 0;
            for k in 0..100 {
                if k == 50 {
                    cluster.kill9(leader)?;
                }
                let live = cluster.running();
                let i = live[k % live.len()];
                let path = if k % 2 == 0 {
                    format!("{MGMT}/services?limit=1")
                } else {
                    "/edge/client/v1/current-api-session".to_owned()
                };
                match c.get(&format!("{}{path}", cluster.url(i))).await {
                    Ok(r) if r.status == 200 => {
                        *served_by.entry(i).or_default() += 1;
                        if k >= 50 {
                            let h = cluster.health(i).await?;
                            if h.data()["role"] != "leader" {
                                follower_after_kill += 1;
                            }
                        }
                    }
                    Ok(r) => failures.push(format!(
                        "#{k} node {i} {path}: HTTP {} {}",
                        r.status, r.body
                    )),
                    Err(e) => failures.push(format!("#{k} node {i} {path}: {e:#}")),
                }
            }
            ensure!(
                failures.is_empty(),
                "{} of 100 token uses failed: {failures:#?}",
                failures.len()
            );
            ensure!(
                served_by.len() == 3,
                "not every node was asked: {served_by:?}"
            );
            ensure!(
                follower_after_kill > 0,
                "no request after the kill was served by a follower"
            );

            cluster.restart(leader).await?;
            let r = c
                .get(&format!(
                    "{}/edge/client/v1/current-api-session",
                    cluster.url(leader)
                ))
                .await?;
            ensure!(
                r.status == 200,
                "token on the restarted node: HTTP {} {}",
                r.status,
                r.body
            );
            cluster.wait_healthy(WAIT).await?;
            let r = c
                .get(&format!("{}{MGMT}/services?limit=1", cluster.url(leader)))
                .await?;
            ensure!(
                r.status == 200,
                "token on the restarted node: HTTP {} {}",
                r.status,
                r.body
            );
            cluster.finish();
            Ok(())
        },
    )
    .await;
}

/// What a token poller saw on one node.
#[derive(Debug, Default)]
struct TokenPoll {
    ok: usize,
    not_yet: usize,
    unreachable: usize,
    refused: Vec<String>,
}

/// Uses `c`'s token on `base` every 20 ms until `done` is set and then until 5 answers
/// in a row were 200 (bounded). A 400/401 at any time is a refusal of a valid token,
/// which DESIGN.md section 5 rules out ("no window where another node answers 400/401
/// for a valid token"); connection errors (not serving yet) and 421/503 (not in quorum
/// yet) are only counted.
async fn poll_token(c: TestClient, base: String, done: Arc<AtomicBool>) -> TokenPoll {
    let mut poll = TokenPoll::default();
    let mut streak = 0;
    let deadline = Instant::now() + TEST_BOUND;
    while Instant::now() < deadline && !(done.load(Ordering::SeqCst) && streak >= 5) {
        match c
            .get(&format!("{base}/edge/client/v1/current-api-session"))
            .await
        {
            Ok(r) if r.status == 200 => {
                poll.ok += 1;
                streak += 1;
            }
            Ok(r) if r.status == 421 || r.status == 503 => {
                poll.not_yet += 1;
                streak = 0;
            }
            Ok(r) => {
                poll.refused.push(format!("HTTP {} {}", r.status, r.body));
                streak = 0;
            }
            Err(_) => {
                poll.unreachable += 1;
                streak = 0;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poll
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_only_node_is_added_by_admin_add_member() {
    bounded("join_token_only_node_is_added_by_admin_add_member", async {
        let mut cluster = start(3).await?;
        let c = cluster.client().await?;
        create_service_retrying(&c, &cluster.url(0), "before-add").await?;
        let token = cluster.join_token().await?;
        let new = cluster.spawn_node(&["--join-token", &token])?;
        let address = cluster.url(new);

        // add-member answers 400 until the waiting node listens; then 200 once added.
        let slow = {
            let mut s = cluster.plain_client(Duration::from_secs(60))?;
            s.token = c.token.clone();
            s
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let r = slow
                .post(
                    &format!("{}/fabric/v1/cluster/add-member", cluster.url(1)),
                    &json!({ "address": address, "isVoter": true }),
                )
                .await?;
            match (r.status, r.code()) {
                (200, _) => break,
                (400, Some("INVALID_FIELD")) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                (s, _) => {
                    return Err(cluster.failure(&format!("add-member answered HTTP {s} {}", r.body)))
                }
            }
        }
        let members = list_members(&c, &cluster.url(0)).await?;
        ensure!(
            members.len() == 4 && members.iter().all(|m| m["voter"] == true),
            "after add-member: {}",
            Value::Array(members)
        );
        ensure!(
            members.iter().any(|m| m["address"] == address.as_str()),
            "the new node is not listed: {}",
            Value::Array(members)
        );

        // The new node serves the API with a cluster certificate and has the data.
        cluster.wait_log_line(new, "listening on", WAIT).await?;
        cluster.wait_serving(new, WAIT).await?;
        let ca = std::fs::read_to_string(cluster.data_dir(new).join("ca.pem"))?;
        ensure!(ca == cluster.ca_pem(), "the new node holds another CA");
        // Once caught up (its first moments are `joining_node_never_refuses_a_valid_token`).
        cluster.wait_healthy(WAIT).await?;
        cluster.wait_caught_up(WAIT).await?;
        let names = name_counts(&list_services(&c, &address).await?);
        ensure!(
            names.contains_key("before-add"),
            "the new node does not have the data: {names:?}"
        );
        // Writes through it work and reach everyone.
        create_service_retrying(&c, &address, "via-new-node").await?;
        cluster.wait_caught_up(WAIT).await?;
        for i in 0..4 {
            let names = name_counts(&list_services(&c, &cluster.url(i)).await?);
            ensure!(
                names.contains_key("via-new-node") && names.contains_key("before-add"),
                "node {i} has {names:?}"
            );
        }
        cluster.finish();
        Ok(())
    })
    .await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Member ids as node `i` lists them.
async fn member_ids(
    cluster: &ProcessCluster,
    c: &TestClient,
    i: usize,
) -> anyhow::Result<BTreeSet<String>> {
    Ok(list_members(c, &cluster.url(i))
        .await?
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_foreign_join_token_is_refused() {
    bounded("expired_or_foreign_join_token_is_refused", async {
        use weft_controller::tokens::{JoinClaims, NodeSigner};

        let mut cluster = start(3).await?;
        let c = cluster.client().await?;
        let before = member_ids(&cluster, &c, 0).await?;
        let fp = weft_controller::pki::ca_fingerprint(cluster.ca_pem())?;

        // Expired: signed by a real member's key, for this cluster, but in the past.
        let id0: u64 = cluster.node_id(0).context("node 0 id")?.parse()?;
        let signer = NodeSigner::load_or_create(&cluster.data_dir(0).join("signing-key"), id0)?;
        let expired = signer.sign_join(&JoinClaims {
            ca: fp.clone(),
            exp: now_ms() - 60_000,
            kid: id0,
            nonce: "expired-test".into(),
        });
        // Forged: the right CA, signed by a key the cluster never registered.
        let forged = NodeSigner::generate(4_242_424_242).sign_join(&JoinClaims {
            ca: fp.clone(),
            exp: now_ms() + 3_600_000,
            kid: 4_242_424_242,
            nonce: "forged-test".into(),
        });
        // Foreign: a real token of another cluster.
        let foreign = {
            let other = start(1).await?;
            let token = other.join_token().await?;
            other.finish();
            token
        };

        let cases = [
            ("garbage", "garbage-token".to_owned(), "join token"),
            ("expired", expired, "expired"),
            ("forged", forged, "join token refused"),
            ("foreign", foreign, "does not match the join token"),
        ];
        let join = cluster.url(0);
        for (what, token, needle) in &cases {
            let i = cluster.spawn_node(&["--join", &join, "--join-token", token])?;
            let status = cluster.wait_exit(i, WAIT).await?;
            let log = cluster.log(i);
            ensure!(
                !status.success(),
                "a join with a {what} token exited successfully:\n{log}"
            );
            let error_line = log
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_default();
            ensure!(
                error_line.contains(needle),
                "a join with a {what} token: expected an error line mentioning {needle:?}, log:\n{log}"
            );
            eprintln!("{what} token refused: {error_line}");
            ensure!(
                !cluster.data_dir(i).join("node.json").exists(),
                "a refused join left a node.json in {}",
                cluster.data_dir(i).display()
            );
            for n in 0..3 {
                let now = member_ids(&cluster, &c, n).await?;
                ensure!(now == before, "after the {what} join, node {n} lists {now:?}, before {before:?}");
            }
        }
        cluster.wait_healthy(WAIT).await?;

        // Control: a valid token from the same cluster does join.
        let token = cluster.join_token().await?;
        let i = cluster.spawn_node(&["--join", &join, "--join-token", &token])?;
        cluster.wait_log_line(i, "listening on", WAIT).await?;
        cluster.wait_healthy(WAIT).await?;
        let after = member_ids(&cluster, &c, 0).await?;
        ensure!(
            after.len() == 4 && after.is_superset(&before),
            "the valid join gave members {after:?}"
        );
        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_node_never_refuses_a_valid_token() {
    bounded("joining_node_never_refuses_a_valid_token", async {
        let mut cluster = start(3).await?;
        let c = cluster.client().await?;
        let join = cluster.url(0);

        // Through --join: the admin's token is used on the node from its first moment.
        let token = cluster.join_token().await?;
        let done = Arc::new(AtomicBool::new(false));
        let address = cluster.url_of_slot(cluster.len());
        let poller = tokio::spawn(poll_token(c.clone(), address, done.clone()));
        let i = cluster.spawn_node(&["--join", &join, "--join-token", &token])?;
        cluster.wait_log_line(i, "listening on", WAIT).await?;
        cluster.wait_healthy(WAIT).await?;
        done.store(true, Ordering::SeqCst);
        let joined = poller.await?;
        eprintln!("token on the node joining with --join: {joined:?}");

        // Through add-member.
        let token = cluster.join_token().await?;
        let address = cluster.url_of_slot(cluster.len());
        let done = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(poll_token(c.clone(), address.clone(), done.clone()));
        let new = cluster.spawn_node(&["--join-token", &token])?;
        let mut slow = cluster.plain_client(Duration::from_secs(60))?;
        slow.token = c.token.clone();
        let deadline = Instant::now() + WAIT;
        loop {
            let r = slow
                .post(
                    &format!("{join}/fabric/v1/cluster/add-member"),
                    &json!({ "address": address, "isVoter": true }),
                )
                .await?;
            match (r.status, r.code()) {
                (200, _) => break,
                (400, Some("INVALID_FIELD")) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                (s, _) => {
                    return Err(cluster.failure(&format!("add-member answered HTTP {s} {}", r.body)))
                }
            }
        }
        cluster.wait_serving(new, WAIT).await?;
        cluster.wait_healthy(WAIT).await?;
        done.store(true, Ordering::SeqCst);
        let added = poller.await?;
        eprintln!("token on the node added by add-member: {added:?}");

        ensure!(
            joined.refused.is_empty() && added.refused.is_empty(),
            "valid token refused by the node joining with --join {} times: {:?}; \
             by the node added with add-member {} times: {:?}",
            joined.refused.len(),
            joined.refused,
            added.refused.len(),
            added.refused
        );
        cluster.finish();
        Ok(())
    })
    .await;
}
