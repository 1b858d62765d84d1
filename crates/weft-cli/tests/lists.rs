//! List queries against a real `weft` process: `filter` (OpenZiti's filter language
//! subset), `sort`, and paging over the filtered result; a bad filter or sort is a 400
//! `INVALID_FILTER` that says where it went wrong.

mod common;

use anyhow::{ensure, Context};
use common::*;
use serde_json::{json, Value};
use weft_testkit::client::TestClient;

/// Percent-encodes a query value (everything but unreserved characters).
fn enc(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /services?<query>`: the names of the page, and `totalCount`.
async fn names(c: &TestClient, base: &str, query: &str) -> anyhow::Result<(Vec<String>, u64)> {
    let r = c.get(&format!("{base}{MGMT}/services?{query}")).await?;
    ensure!(r.status == 200, "{query}: HTTP {} {}", r.status, r.body);
    let items = r.data().as_array().context("data is not a list")?;
    let names = items
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let total = r.body["meta"]["pagination"]["totalCount"]
        .as_u64()
        .context("no totalCount")?;
    Ok((names, total))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_sort_and_paging_select_the_documented_services() {
    bounded(
        "filter_sort_and_paging_select_the_documented_services",
        async {
            let cluster = start(1).await?;
            let c = cluster.client().await?;
            let base = cluster.url(0);
            let specs: [(&str, &[&str], Value); 5] = [
                ("web-eu", &["prod", "eu"], json!({"env": "prod", "tier": 1})),
                ("web-us", &["prod", "us"], json!({"env": "prod", "tier": 2})),
                ("db", &["prod", "eu"], json!({"env": "prod", "tier": 3})),
                ("staging-web", &["staging"], json!({"env": "staging"})),
                ("Quote \"q\"", &[], json!({})),
            ];
            for (name, roles, tags) in &specs {
                let r = c
                    .post(
                        &format!("{base}{MGMT}/services"),
                        &json!({"name": name, "roleAttributes": roles, "tags": tags}),
                    )
                    .await?;
                ensure!(
                    r.status == 201,
                    "create {name}: HTTP {} {}",
                    r.status,
                    r.body
                );
            }
            let all: Vec<String> = {
                let mut v: Vec<String> = specs.iter().map(|(n, _, _)| n.to_string()).collect();
                v.sort();
                v
            };

            let cases: [(&str, &[&str]); 9] = [
                (r#"name = "db""#, &["db"]),
                (
                    r#"name contains "web""#,
                    &["staging-web", "web-eu", "web-us"],
                ),
                (
                    r#"name startswith "web" and roleAttributes contains "eu""#,
                    &["web-eu"],
                ),
                (
                    r#"tags.env = "prod" and not (name = "db")"#,
                    &["web-eu", "web-us"],
                ),
                (
                    r#"tags.tier >= 2 or tags.env = "staging""#,
                    &["db", "staging-web", "web-us"],
                ),
                (
                    r#"roleAttributes contains "eu" or name = 'Quote "q"'"#,
                    &["Quote \"q\"", "db", "web-eu"],
                ),
                (r#"NAME = "db""#, &[]),
                (
                    r#"name icontains "WEB" AND tags.env != "prod""#,
                    &["staging-web"],
                ),
                (
                    r#"tags.missing = null"#,
                    &["Quote \"q\"", "db", "staging-web", "web-eu", "web-us"],
                ),
            ];
            for (filter, want) in cases {
                let (got, total) =
                    names(&c, &base, &format!("limit=500&filter={}", enc(filter))).await?;
                ensure!(got == want, "filter {filter}: got {got:?}, want {want:?}");
                ensure!(
                    total == want.len() as u64,
                    "filter {filter}: totalCount {total}"
                );
            }

            // Sort, and paging over a filtered, sorted result (totalCount counts every match).
            let (got, _) =
                names(&c, &base, &format!("limit=500&sort={}", enc("name desc"))).await?;
            let mut desc = all.clone();
            desc.reverse();
            ensure!(got == desc, "sort name desc: {got:?}");
            let (got, _) = names(
                &c,
                &base,
                &format!("limit=500&sort={}", enc("createdAt asc")),
            )
            .await?;
            let created: Vec<String> = specs.iter().map(|(n, _, _)| n.to_string()).collect();
            ensure!(got == created, "sort createdAt asc: {got:?}");
            let q = format!(
                "filter={}&sort={}&limit=2&offset=1",
                enc(r#"tags.env = "prod""#),
                enc("createdAt desc")
            );
            let (got, total) = names(&c, &base, &q).await?;
            ensure!(
                got == ["web-us", "web-eu"] && total == 3,
                "paged: {got:?} of {total}"
            );

            // Bad filters and sorts: 400 INVALID_FILTER with the position, nothing else.
            for (param, text, position) in [
                ("filter", r#"name = "unterminated"#, 7u64),
                ("filter", r#"name == "x""#, 6),
                ("filter", r#"(name = "x""#, 11),
                ("filter", "", 0),
                ("sort", "size asc", 0),
                ("sort", "name sideways", 5),
            ] {
                let r = c
                    .get(&format!("{base}{MGMT}/services?{param}={}", enc(text)))
                    .await?;
                ensure!(
                    r.status == 400 && r.code() == Some("INVALID_FILTER"),
                    "{param}={text:?}: HTTP {} {}",
                    r.status,
                    r.body
                );
                ensure!(
                    r.body["error"]["data"]["position"].as_u64() == Some(position)
                        && r.body["error"]["data"]["parameter"] == param,
                    "{param}={text:?}: expected position {position}: {}",
                    r.body
                );
            }
            let r = c.get(&format!("{base}{MGMT}/services?filter=%ZZ")).await?;
            ensure!(
                r.status == 400 && r.code() == Some("INVALID_FILTER"),
                "bad percent-encoding: {}",
                r.body
            );
            let r = c.get(&format!("{base}{MGMT}/services?limit=501")).await?;
            ensure!(
                r.status == 400 && r.code() == Some("INVALID_FIELD"),
                "limit 501: {}",
                r.body
            );
            cluster.finish();
            Ok(())
        },
    )
    .await;
}
