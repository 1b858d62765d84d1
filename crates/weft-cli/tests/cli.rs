//! The `weft` CLI end to end: the real binary against a real 3-node cluster of `weft`
//! processes. Login stores a private profile; `weft edge` creates, lists (table, JSON,
//! YAML), shows, updates and deletes entities, in bulk too; refusals print the code and
//! the request id and exit 1, usage errors exit 2; a profile whose first controller is
//! dead still works; `status` shows the leader; after `logout` the session is refused
//! everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::*;
use serde_json::Value;
use weft_testkit::process::{ADMIN_PASSWORD, ADMIN_USER};

/// Bound of one CLI run (its SDK calls retry within 30 s).
const RUN_BOUND: Duration = Duration::from_secs(60);

/// What one run of the binary did.
#[derive(Debug)]
struct Out {
    /// Exit code (-1 if killed by a signal).
    code: i32,
    /// What it printed on stdout.
    stdout: String,
    /// What it printed on stderr.
    stderr: String,
}

impl Out {
    fn ok(&self) -> anyhow::Result<&Self> {
        ensure!(self.code == 0, "expected success, got {self:#?}");
        Ok(self)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("stdout is not JSON: {self:#?}"))
    }
}

/// Runs the CLI with its own config dir and none of the user's WEFT_* settings.
struct Weft {
    /// `WEFT_CONFIG_DIR` of every run (where profiles go).
    config: PathBuf,
    /// The working directory of every run (where relative files go).
    work: PathBuf,
}

impl Weft {
    fn new(root: &Path) -> anyhow::Result<Weft> {
        let w = Weft {
            config: root.join("config"),
            work: root.join("work"),
        };
        std::fs::create_dir_all(&w.work)?;
        Ok(w)
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Out> {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.work)
            .env("WEFT_CONFIG_DIR", &self.config)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for k in [
            "WEFT_PROFILE",
            "WEFT_CA",
            "WEFT_USERNAME",
            "WEFT_PASSWORD",
            "WEFT_CONTROLLER",
            "WEFT_LOG",
        ] {
            cmd.env_remove(k);
        }
        let o = tokio::time::timeout(RUN_BOUND, cmd.output())
            .await
            .with_context(|| format!("weft {args:?} did not finish within {RUN_BOUND:?}"))??;
        let out = Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        eprintln!("$ weft {} -> {}", args.join(" "), out.code);
        Ok(out)
    }

    fn profile_path(&self, name: &str) -> PathBuf {
        self.config.join("profiles").join(format!("{name}.json"))
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("stat {}", p.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The names in a `-o json` list.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// The stdout line of a table whose first cell after the id column is `name`.
fn table_row<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
}

/// Asserts that a refusal printed `error: CODE: ... (request id R)` and exited 1.
fn assert_refused(out: &Out, code: &str) -> anyhow::Result<()> {
    ensure!(out.code == 1, "expected exit 1, got {out:#?}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .with_context(|| format!("no error line: {out:#?}"))?;
    ensure!(line.contains(&format!("{code}: ")), "{line}");
    let rid = line
        .rsplit_once("(request id ")
        .map(|(_, r)| r.trim_end_matches(')'))
        .unwrap_or("");
    ensure!(
        !rid.is_empty() && rid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "no request id in {line:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_entities_on_a_cluster_with_failover_and_logout() {
    bounded("cli_manages_entities_on_a_cluster_with_failover_and_logout", async {
        let mut cluster = start(3).await?;
        let root = tempfile::tempdir()?;
        let weft = Weft::new(root.path())?;
        let ca = cluster.data_dir(0).join("ca.pem");
        let ca = ca.to_str().context("CA path")?;
        let (u0, u1, u2) = (cluster.url(0), cluster.url(1), cluster.url(2));

        // A wrong password is refused (exit 1, with the request id) and stores nothing.
        let wrong = weft
            .run(&["--profile", "wrong", "login", &u0, "--ca", ca, "-p", "not-the-password"])
            .await?;
        assert_refused(&wrong, "INVALID_AUTH")?;
        ensure!(!weft.profile_path("wrong").exists(), "no profile after a refused login");

        // Login stores a private profile with the token, the CA copy and every URL.
        weft.run(&["login", &u0, &u1, &u2, "--ca", ca, "-u", ADMIN_USER, "-p", ADMIN_PASSWORD])
            .await?
            .ok()?;
        let profile_file = weft.profile_path("default");
        #[cfg(unix)]
        ensure!(mode(&profile_file)? == 0o600, "profile mode");
        let text = std::fs::read_to_string(&profile_file)?;
        ensure!(!text.contains(ADMIN_PASSWORD), "the password is not stored");
        let profile: Value = serde_json::from_str(&text)?;
        ensure!(profile["controllers"][0] == u0.as_str(), "{profile}");
        ensure!(profile["controllers"].as_array().map(Vec::len) == Some(3), "{profile}");
        ensure!(profile["token"].as_str().is_some_and(|t| !t.is_empty()), "{profile}");
        ensure!(profile["caPem"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")));

        // An identity with its enrollment JWT in a private file.
        weft.run(&[
            "edge", "create", "identity", "alice", "--role-attributes", "eng", "--type", "User",
            "--jwt-output-file", "alice.jwt",
        ])
        .await?
        .ok()?;
        let jwt_file = weft.work.join("alice.jwt");
        #[cfg(unix)]
        ensure!(mode(&jwt_file)? == 0o600, "JWT file mode");
        let jwt = std::fs::read_to_string(&jwt_file)?;
        ensure!(jwt.trim().split('.').count() == 3, "not a JWT: {jwt}");

        // A service and policies from flags; `@web` resolves to the service's id.
        weft.run(&["edge", "create", "service", "web", "--role-attributes", "demo"])
            .await?
            .ok()?;
        weft.run(&[
            "edge", "create", "service-policy", "web-dial", "Dial", "--identity-roles", "#eng",
            "--service-roles", "@web", "--semantic", "AnyOf",
        ])
        .await?
        .ok()?;
        weft.run(&[
            "edge", "create", "edge-router-policy", "erp", "--edge-router-roles", "#all",
            "--identity-roles", "#eng",
        ])
        .await?
        .ok()?;
        let web = weft.run(&["edge", "show", "service", "web", "-o", "json"]).await?;
        let web = web.ok()?.json()?;
        let web_id = web["id"].as_str().context("service id")?.to_owned();
        let policy = weft
            .run(&["edge", "show", "service-policy", "web-dial", "-o", "json"])
            .await?
            .ok()?
            .json()?;
        ensure!(policy["serviceRoles"][0] == format!("@{web_id}").as_str(), "{policy}");
        ensure!(policy["identityRoles"][0] == "#eng" && policy["semantic"] == "AnyOf");
        ensure!(policy["type"] == "Dial", "{policy}");

        // Lists: an aligned table, JSON, YAML; --verbose traces the HTTP exchanges.
        let table = weft.run(&["--verbose", "edge", "list", "services"]).await?;
        table.ok()?;
        let header = table.stdout.lines().next().unwrap_or("");
        ensure!(header.starts_with("ID") && header.contains("NAME"), "{table:#?}");
        let row = table_row(&table.stdout, "web").with_context(|| format!("{table:#?}"))?;
        ensure!(row.starts_with(&web_id) && row.contains("demo"), "{row}");
        let name_at = row.len() - row[web_id.len()..].trim_start().len();
        ensure!(header.find("NAME") == Some(name_at), "columns align: {table:#?}");
        ensure!(table.stderr.contains("> GET "), "verbose: {table:#?}");
        let json = weft.run(&["edge", "list", "identities", "-o", "json"]).await?;
        ensure!(names(&json.ok()?.json()?).contains(&"alice".to_owned()));
        let yaml = weft.run(&["edge", "list", "services", "-o", "yaml"]).await?;
        ensure!(yaml.ok()?.stdout.contains("\n  name: web\n"), "{yaml:#?}");
        ensure!(yaml.stdout.starts_with("- "), "{yaml:#?}");

        // Update, then show.
        weft.run(&["edge", "update", "service", "web", "--role-attributes", "a,b"])
            .await?
            .ok()?;
        let shown = weft.run(&["edge", "show", "service", web_id.as_str(), "-o", "json"]).await?;
        let shown = shown.ok()?.json()?;
        ensure!(shown["roleAttributes"] == serde_json::json!(["a", "b"]), "{shown}");

        // A refusal: code, message, request id, exit 1. Usage errors: exit 2.
        let dup = weft.run(&["edge", "create", "service", "web"]).await?;
        assert_refused(&dup, "ENTITY_ALREADY_EXISTS")?;
        let unknown = weft.run(&["edge", "list", "widgets"]).await?;
        ensure!(unknown.code == 2 && unknown.stderr.contains("unknown entity type"), "{unknown:#?}");
        let missing = weft.run(&["edge", "create", "service"]).await?;
        ensure!(missing.code == 2, "{missing:#?}");
        let bad_json = weft.run(&["edge", "create", "service", "x", "--tags-json", "[]"]).await?;
        ensure!(bad_json.code == 2, "{bad_json:#?}");

        // Bulk create from JSON lines: one line per item without a terminal.
        let bulk = weft.work.join("services.jsonl");
        std::fs::write(
            &bulk,
            "{\"name\": \"bulk-1\"}\n{\"name\": \"bulk-2\", \"roleAttributes\": [\"x\"]}\n{\"name\": \"bulk-3\"}\n",
        )?;
        let created = weft.run(&["edge", "create", "service", "--from-file", "services.jsonl"]).await?;
        created.ok()?;
        ensure!(
            created.stdout.lines().filter(|l| l.contains("created service bulk-")).count() == 3,
            "{created:#?}"
        );
        ensure!(created.stdout.contains("[3/3]"), "{created:#?}");
        let all = weft.run(&["edge", "list", "services", "-o", "json"]).await?;
        let all = names(&all.ok()?.json()?);
        for n in ["bulk-1", "bulk-2", "bulk-3", "web"] {
            ensure!(all.contains(&n.to_owned()), "{n} missing from {all:?}");
        }
        // A failing item is reported and makes the run fail; the others still go in.
        std::fs::write(&bulk, "[{\"name\": \"bulk-4\"}, {\"name\": \"web\"}]")?;
        let partial = weft.run(&["edge", "create", "service", "--from-file", "services.jsonl"]).await?;
        ensure!(partial.code == 1, "{partial:#?}");
        ensure!(partial.stderr.contains("ENTITY_ALREADY_EXISTS"), "{partial:#?}");
        ensure!(partial.stdout.contains("created service bulk-4"), "{partial:#?}");

        // Delete by name; the deleted one is then not found.
        weft.run(&["edge", "delete", "service", "bulk-1", "bulk-2"]).await?.ok()?;
        let gone = weft.run(&["edge", "show", "service", "bulk-1"]).await?;
        assert_refused(&gone, "NOT_FOUND")?;

        // Status: every controller reachable, the leader marked.
        let leader = cluster.wait_leader(WAIT).await?;
        let status = weft.run(&["status", "-o", "json"]).await?.ok()?.json()?;
        let rows = status["controllers"].as_array().cloned().unwrap_or_default();
        ensure!(rows.len() == 3, "{status}");
        ensure!(rows.iter().all(|r| r["reachable"] == true), "{status}");
        let leaders: Vec<&str> = rows
            .iter()
            .filter(|r| r["leader"] == true)
            .filter_map(|r| r["url"].as_str())
            .collect();
        ensure!(leaders == [cluster.url(leader).as_str()], "{status}");
        let table = weft.run(&["status"]).await?;
        let leader_row = table
            .ok()?
            .stdout
            .lines()
            .find(|l| l.starts_with(&cluster.url(leader)))
            .with_context(|| format!("{table:#?}"))?;
        ensure!(leader_row.contains("leader") && leader_row.trim_end().ends_with('*'));

        // Failover: the profile's first URL is dead; reads and writes still work.
        cluster.kill9(0)?;
        let listed = weft.run(&["edge", "list", "services", "-o", "json"]).await?;
        ensure!(names(&listed.ok()?.json()?).contains(&"web".to_owned()));
        weft.run(&["edge", "create", "service", "after-failover"]).await?.ok()?;
        let status = weft.run(&["status", "-o", "json"]).await?.ok()?.json()?;
        let dead = status["controllers"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["url"] == u0.as_str()))
            .with_context(|| format!("{status}"))?;
        ensure!(dead["reachable"] == false, "{status}");

        // Logout revokes the session on the cluster and removes the profile: a copy of
        // the profile is refused ("session expired", exit 1); the default one is gone
        // (exit 2: log in first).
        std::fs::copy(&profile_file, weft.profile_path("copy"))?;
        weft.run(&["logout"]).await?.ok()?;
        ensure!(!profile_file.exists(), "logout removes the profile");
        let after = weft.run(&["--profile", "copy", "edge", "list", "services"]).await?;
        ensure!(after.code == 1, "{after:#?}");
        ensure!(after.stderr.contains("session expired: run weft login"), "{after:#?}");
        let none = weft.run(&["edge", "list", "services"]).await?;
        ensure!(none.code == 2 && none.stderr.contains("weft login"), "{none:#?}");

        cluster.finish();
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_usage_errors_and_completions_need_no_cluster() {
    bounded("cli_usage_errors_and_completions_need_no_cluster", async {
        let root = tempfile::tempdir()?;
        let weft = Weft::new(root.path())?;
        let bash = weft.run(&["completions", "bash"]).await?;
        ensure!(bash.ok()?.stdout.contains("_weft()"), "{bash:#?}");
        ensure!(bash.stdout.contains("login") && bash.stdout.contains("edge"));
        for shell in ["zsh", "fish"] {
            let s = weft.run(&["completions", shell]).await?;
            ensure!(s.ok()?.stdout.contains("weft"), "{s:#?}");
        }
        for args in [
            &["edge", "list", "services"][..],
            &["status"][..],
            &["--profile", "../etc", "status"][..],
            &["edge", "frobnicate"][..],
            &["completions", "tcsh"][..],
            &[
                "login",
                "--ca",
                "no-such-file.pem",
                "https://127.0.0.1:1",
                "-p",
                "x",
            ][..],
        ] {
            let out = weft.run(args).await?;
            ensure!(out.code == 2, "{args:?}: {out:#?}");
            ensure!(out.stderr.starts_with("error"), "{args:?}: {out:#?}");
        }
        Ok(())
    })
    .await;
}

/// `weft ... | head`: output into a pipe whose reader has gone ends the program quietly
/// (exit 0, no panic message), as SIGPIPE ends other Unix tools.
#[test]
fn closed_stdout_ends_quietly_without_a_panic() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["completions", "bash"])
        .env("WEFT_CONFIG_DIR", root.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!stderr.contains("panicked"), "{stderr}");
    ensure!(out.status.code() == Some(0), "{:?}: {stderr}", out.status);
    Ok(())
}
