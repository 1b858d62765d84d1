//! Helpers shared by the process-level integration tests: starting a cluster of the
//! `weft` binary under test, bounding a whole test, paging through services.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};
use weft_testkit::process::ProcessCluster;

/// The `weft` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_weft");

/// Management API base path.
pub const MGMT: &str = "/edge/management/v1";

/// Hard bound of one whole test: a hang becomes a failure instead of a stuck CI job.
pub const TEST_BOUND: Duration = Duration::from_secs(150);

/// Generous bound of one wait inside a test (the machine may be slow and shared).
pub const WAIT: Duration = Duration::from_secs(45);

/// Runs a test body with [`TEST_BOUND`], printing how long it took; panics on error.
pub async fn bounded<F>(name: &str, body: F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let r = tokio::time::timeout(TEST_BOUND, body).await;
    eprintln!("[{name}] took {:.1} s", started.elapsed().as_secs_f64());
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name} failed: {e:?}"),
        Err(_) => panic!("{name} did not finish within {TEST_BOUND:?}"),
    }
}

/// Starts `n` processes of the binary under test.
pub async fn start(n: usize) -> anyhow::Result<ProcessCluster> {
    ProcessCluster::start(BIN, n).await
}

/// Creates an entity of collection `coll` on `base`; fails unless the answer is 201.
/// Returns the record as answered.
pub async fn create(c: &TestClient, base: &str, coll: &str, body: Value) -> anyhow::Result<Value> {
    let r = c.post(&format!("{base}{MGMT}/{coll}"), &body).await?;
    anyhow::ensure!(
        r.status == 201,
        "create {coll} {body}: HTTP {} {}",
        r.status,
        r.body
    );
    Ok(r.data().clone())
}

/// [`create`], returning the new entity's id.
pub async fn create_id(
    c: &TestClient,
    base: &str,
    coll: &str,
    body: Value,
) -> anyhow::Result<String> {
    let record = create(c, base, coll, body).await?;
    record["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {record}"))
}

/// `POST /services {"name": name}` on `base`.
pub async fn create_service(c: &TestClient, base: &str, name: &str) -> anyhow::Result<Reply> {
    c.post(&format!("{base}{MGMT}/services"), &json!({ "name": name }))
        .await
}

/// Creates a service on `base`, retrying (bounded) while the cluster answers a
/// retryable "not now" (503 CLUSTER_NO_LEADER, 421, 429). Fails on anything else but 201.
pub async fn create_service_retrying(
    c: &TestClient,
    base: &str,
    name: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = create_service(c, base, name).await?;
        match (r.status, r.code()) {
            (201, _) => return Ok(r.data().clone()),
            (503, Some("CLUSTER_NO_LEADER")) | (421, _) | (429, _) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            _ => anyhow::bail!("creating {name} on {base}: HTTP {} {}", r.status, r.body),
        }
    }
}

/// Every service `base` holds locally (no linearizable read), paging with limit=500.
/// Checks that each page's `totalCount` agrees.
pub async fn list_services(c: &TestClient, base: &str) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut total: Option<u64> = None;
    loop {
        let url = format!("{base}{MGMT}/services?limit=500&offset={}", all.len());
        let r = c.get(&url).await?;
        anyhow::ensure!(r.status == 200, "GET {url}: HTTP {} {}", r.status, r.body);
        let page = r
            .data()
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("GET {url}: data is not a list: {}", r.body))?
            .clone();
        let t = r.body["meta"]["pagination"]["totalCount"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("GET {url}: no meta.pagination.totalCount"))?;
        if let Some(prev) = total {
            anyhow::ensure!(prev == t, "totalCount changed while paging ({prev} -> {t})");
        }
        total = Some(t);
        let n = page.len();
        all.extend(page);
        if n == 0 || all.len() as u64 >= t {
            break;
        }
    }
    anyhow::ensure!(
        all.len() as u64 == total.unwrap_or(0),
        "paging {base} gave {} services but totalCount is {:?}",
        all.len(),
        total
    );
    Ok(all)
}

/// How often each service name occurs in `services`.
pub fn name_counts(services: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in services {
        let name = s["name"].as_str().unwrap_or("<no name>").to_owned();
        *m.entry(name).or_insert(0) += 1;
    }
    m
}

/// `GET /fabric/v1/cluster/list-members` on `base`.
pub async fn list_members(c: &TestClient, base: &str) -> anyhow::Result<Vec<Value>> {
    let r = c
        .get(&format!("{base}/fabric/v1/cluster/list-members"))
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "list-members on {base}: HTTP {} {}",
        r.status,
        r.body
    );
    r.data()
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("list-members: data is not a list: {}", r.body))
}
