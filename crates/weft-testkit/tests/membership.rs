//! Membership changes through the REST API on an in-process cluster: removing a member,
//! and the refusals for ids that are not members.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::json;
use weft_testkit::inproc::Cluster;

const SETTLE: Duration = Duration::from_secs(15);

/// A removed controller is out of the quorum: it answers writes with 421 (pointing at
/// the others), and the remaining two keep accepting writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_member_answers_421_and_the_rest_keep_writing() -> anyhow::Result<()> {
    let c = Cluster::start(3).await?;
    let leader = c.wait_leader(SETTLE).await?;
    let f = (0..3).find(|i| *i != leader).context("no follower")?;
    let client = c.client();
    let r = client
        .post(
            &format!("{}/fabric/v1/cluster/remove-member", c.url(leader)),
            &json!({ "id": c.node_id(f).to_string() }),
        )
        .await?;
    ensure!(r.status == 200, "remove-member: {} {}", r.status, r.body);

    let members = client
        .get(&format!("{}/fabric/v1/cluster/list-members", c.url(leader)))
        .await?;
    let ids: Vec<&str> = members
        .data()
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&c.node_id(f).to_string().as_str()));

    // The removed node notices within a few probe rounds.
    let deadline = Instant::now() + SETTLE;
    loop {
        let r = c
            .create_service(
                f,
                &format!("on-removed-{}", Instant::now().elapsed().as_nanos()),
            )
            .await?;
        if r.status == 421 {
            assert_eq!(r.code(), Some("CONTROLLER_NOT_IN_QUORUM"));
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "removed node still answers {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in (0..3).filter(|i| *i != f) {
        let r = c.create_service(i, &format!("after-removal-{i}")).await?;
        assert_eq!(r.status, 201, "node {i}: {}", r.body);
    }
    c.shutdown().await;
    Ok(())
}

/// Removing something that is not a member, or with a malformed id, is a 400 and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_non_member_is_refused() -> anyhow::Result<()> {
    let c = Cluster::start(3).await?;
    let leader = c.wait_leader(SETTLE).await?;
    let client = c.client();
    let url = format!("{}/fabric/v1/cluster/remove-member", c.url(leader));
    let r = client.post(&url, &json!({ "id": "12345" })).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("INVALID_MEMBERSHIP_CHANGE")),
        "{}",
        r.body
    );
    let r = client.post(&url, &json!({ "id": "not-a-number" })).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("INVALID_FIELD")),
        "{}",
        r.body
    );
    let r = client.post(&url, &json!({ "node": "x" })).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("COULD_NOT_PARSE_BODY")),
        "{}",
        r.body
    );
    let members = client
        .get(&format!("{}/fabric/v1/cluster/list-members", c.url(leader)))
        .await?;
    assert_eq!(members.data().as_array().map(Vec::len), Some(3));
    c.shutdown().await;
    Ok(())
}
