//! The network model's entities against a real `weft` process: identities, edge routers,
//! config types (JSON Schema) and configs, services with configs, the three policy kinds
//! with `#attribute`/`@id`/`#all` roles, references that must exist, and deletes refused
//! while something still refers to the entity.

mod common;

use anyhow::ensure;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use weft_testkit::client::{Reply, TestClient};

/// POSTs `body` to the collection and returns the reply.
async fn post(c: &TestClient, base: &str, coll: &str, body: Value) -> anyhow::Result<Reply> {
    c.post(&format!("{base}{MGMT}/{coll}"), &body).await
}

/// Creates an entity, expecting 201; returns its id.
/// Expects an error reply with this status and code; returns `error.cause`.
fn refused(what: &str, r: &Reply, status: u16, code: &str) -> anyhow::Result<String> {
    ensure!(
        r.status == status && r.code() == Some(code),
        "{what}: expected HTTP {status} {code}, got HTTP {} {}",
        r.status,
        r.body
    );
    Ok(r.body["error"]["cause"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_validate_references_and_refuse_deleting_what_is_referenced() {
    bounded("entities_validate_references_and_refuse_deleting_what_is_referenced", async {
        let cluster = start(1).await?;
        let c = cluster.client().await?;
        let b = cluster.url(0);
        let b = b.as_str();

        // Identities and routers, with defaults filled in.
        let alice = create_id(&c, b, "identities", json!({"name": "alice", "roleAttributes": ["dev"]})).await?;
        let r = c.get(&format!("{b}{MGMT}/identities/{alice}")).await?;
        ensure!(
            r.data()["type"] == "User" && r.data()["isAdmin"] == false,
            "identity defaults: {}",
            r.body
        );
        create_id(&c, b, "identities", json!({"name": "laptop", "type": "Device"})).await?;
        let router = create_id(&c, b, "edge-routers", json!({"name": "er1", "roleAttributes": ["eu"]})).await?;
        let r = post(&c, b, "identities", json!({"name": "x", "type": "Robot"})).await?;
        refused("identity of an unknown type", &r, 400, "COULD_NOT_PARSE_BODY")?;
        let r = post(&c, b, "identities", json!({"name": "y", "favouriteColour": "red"})).await?;
        refused("unknown field", &r, 400, "COULD_NOT_PARSE_BODY")?;

        // Config types carry a JSON Schema; configs must satisfy it.
        let schema = json!({
            "type": "object",
            "required": ["address", "port"],
            "properties": {
                "address": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535}
            },
            "additionalProperties": false
        });
        let host_v1 = create_id(&c, b, "config-types", json!({"name": "host.v1", "schema": schema})).await?;
        let r = post(&c, b, "config-types", json!({"name": "bad", "schema": {"type": "whatever"}})).await?;
        refused("config type with a bad schema", &r, 400, "INVALID_FIELD")?;
        let cfg = create_id(
            &c,
            b,
            "configs",
            json!({"name": "web-host", "configTypeId": host_v1, "data": {"address": "localhost", "port": 8080}}),
        )
        .await?;
        let r = post(
            &c,
            b,
            "configs",
            json!({"name": "bad-port", "configTypeId": host_v1, "data": {"address": "a", "port": 70000}}),
        )
        .await?;
        let cause = refused("config that breaks its schema", &r, 400, "INVALID_FIELD")?;
        ensure!(cause.contains("data/port"), "the cause names the field: {cause}");
        let r = post(&c, b, "configs", json!({"name": "orphan", "configTypeId": "nope", "data": {}})).await?;
        refused("config of an unknown type", &r, 400, "INVALID_FIELD")?;
        let r = c
            .send(
                Method::PATCH,
                &format!("{b}{MGMT}/config-types/{host_v1}"),
                Some(br#"{"schema": {"type": "object", "required": ["tls"]}}"#),
            )
            .await?;
        refused("schema change that existing configs fail", &r, 400, "INVALID_FIELD")?;

        // Services take configs (one per type).
        let web = create_id(
            &c,
            b,
            "services",
            json!({"name": "web", "roleAttributes": ["web"], "configs": [cfg]}),
        )
        .await?;
        let r = c.get(&format!("{b}{MGMT}/services/{web}")).await?;
        ensure!(
            r.data()["encryptionRequired"] == true
                && r.data()["terminatorStrategy"] == "smartrouting",
            "service defaults: {}",
            r.body
        );
        let cfg2 = create_id(
            &c,
            b,
            "configs",
            json!({"name": "web-host-2", "configTypeId": host_v1, "data": {"address": "b", "port": 1}}),
        )
        .await?;
        let r = post(&c, b, "services", json!({"name": "two", "configs": [cfg, cfg2]})).await?;
        refused("two configs of one type", &r, 400, "INVALID_FIELD")?;

        // Policies: roles must be #attr, @id (of an existing entity of the right kind) or #all.
        let dial = create_id(
            &c,
            b,
            "service-policies",
            json!({"name": "alice-dials-web", "type": "Dial", "identityRoles": [format!("@{alice}")], "serviceRoles": ["#web"]}),
        )
        .await?;
        for (what, body) in [
            ("role without # or @", json!({"name": "p1", "identityRoles": ["dev"]})),
            ("@id of nothing", json!({"name": "p2", "identityRoles": ["@nobody"]})),
            ("@id of the wrong kind", json!({"name": "p3", "serviceRoles": [format!("@{alice}")]})),
            ("unknown semantic", json!({"name": "p4", "semantic": "SomeOf"})),
        ] {
            let r = post(&c, b, "service-policies", body).await?;
            ensure!(r.status == 400, "{what}: HTTP {} {}", r.status, r.body);
        }
        let erp = create_id(
            &c,
            b,
            "edge-router-policies",
            json!({"name": "all-to-er1", "identityRoles": ["#all"], "edgeRouterRoles": [format!("@{router}")]}),
        )
        .await?;
        create_id(
            &c,
            b,
            "service-edge-router-policies",
            json!({"name": "web-on-eu", "serviceRoles": [format!("@{web}")], "edgeRouterRoles": ["#eu"], "semantic": "AnyOf"}),
        )
        .await?;

        // Lists of the new kinds take filters too.
        let r = c
            .get(&format!("{b}{MGMT}/identities?filter=type%20%3D%20%22Device%22"))
            .await?;
        ensure!(
            r.data().as_array().map(Vec::len) == Some(1) && r.data()[0]["name"] == "laptop",
            "identities filtered by type: {}",
            r.body
        );

        // What the policies grant alice, and why.
        let r = c.get(&format!("{b}{MGMT}/identities/{alice}/services")).await?;
        ensure!(
            r.status == 200
                && r.data().as_array().map(Vec::len) == Some(1)
                && r.data()[0]["name"] == "web"
                && r.data()[0]["permissions"] == json!(["Dial"]),
            "alice's services: {}",
            r.body
        );
        let r = c.get(&format!("{b}{MGMT}/identities/{alice}/edge-routers")).await?;
        ensure!(
            r.status == 200 && r.data()[0]["id"] == router.as_str(),
            "alice's edge routers: {}",
            r.body
        );
        let r = c
            .get(&format!("{b}{MGMT}/identities/{alice}/policy-advice/{web}"))
            .await?;
        ensure!(
            r.status == 200
                && r.data()["isDialable"] == true
                && r.data()["isBindable"] == false
                && r.data()["dialPolicies"][0]["id"] == dial.as_str()
                && r.data()["commonEdgeRouters"][0]["id"] == router.as_str(),
            "policy advice: {}",
            r.body
        );
        let r = c
            .get(&format!("{b}{MGMT}/identities/{alice}/policy-advice/nope"))
            .await?;
        refused("advice for an unknown service", &r, 404, "NOT_FOUND")?;

        // Deleting what something refers to is refused, and nothing changes.
        for (coll, id) in [
            ("identities", alice.as_str()),
            ("edge-routers", router.as_str()),
            ("services", web.as_str()),
            ("config-types", host_v1.as_str()),
            ("configs", cfg.as_str()),
        ] {
            let r = c.send(Method::DELETE, &format!("{b}{MGMT}/{coll}/{id}"), None).await?;
            refused(&format!("delete referenced {coll}"), &r, 409, "CAN_NOT_DELETE_REFERENCED_ENTITY")?;
            let r = c.get(&format!("{b}{MGMT}/{coll}/{id}")).await?;
            ensure!(r.status == 200, "{coll} {id} still there: HTTP {}", r.status);
        }
        // Once the reference is gone, the delete goes through.
        let r = c.send(Method::DELETE, &format!("{b}{MGMT}/service-policies/{dial}"), None).await?;
        ensure!(r.status == 200, "delete policy: HTTP {} {}", r.status, r.body);
        let r = c.send(Method::DELETE, &format!("{b}{MGMT}/identities/{alice}"), None).await?;
        ensure!(r.status == 200, "delete alice: HTTP {} {}", r.status, r.body);
        let r = c.send(Method::DELETE, &format!("{b}{MGMT}/edge-router-policies/{erp}"), None).await?;
        ensure!(r.status == 200, "delete edge router policy: HTTP {}", r.status);
        let r = c.send(Method::DELETE, &format!("{b}{MGMT}/edge-routers/{router}"), None).await?;
        ensure!(r.status == 200, "delete er1: HTTP {} {}", r.status, r.body);
        cluster.finish();
        Ok(())
    })
    .await;
}
