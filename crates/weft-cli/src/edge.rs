//! `weft edge list|show|create|update|delete <entity>`: the management API's entities
//! from the command line, on the stored profile's session.
//!
//! Entities are named by name or id: a name is resolved with a `name="..."` filter query,
//! and what matches no name is taken as an id. Role lists resolve their `@name` entries
//! the same way (`--service-roles @web`). `create <entity> --from-file FILE` creates many,
//! each item with an idempotency key derived from its body, so running the same file
//! again after a crash or a failure does not create anything twice.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use sha2::{Digest, Sha256};
use weft_sdk::{Client, Request};

use crate::bodies::{CreateCmd, Draft, RefKind, UpdateArgs};
use crate::connect::{Connected, Global};
use crate::errors::{describe, sdk, session_expired, usage, CliError};
use crate::kinds::{self, Kind};
use crate::output::{self, Format};
use crate::progress::Progress;

/// `weft edge`.
#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// Output format of records.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// The operation.
    #[command(subcommand)]
    pub cmd: EdgeCmd,
}

/// The `weft edge` operations.
#[derive(Subcommand, Debug)]
pub enum EdgeCmd {
    /// List entities: `weft edge list services ['name contains "web"'] [--limit N]`.
    List(ListArgs),
    /// Show one entity: `weft edge show service web`.
    Show(ShowArgs),
    /// Create an entity (`weft edge create service --help`), or many with --from-file.
    Create {
        /// What to create.
        #[command(subcommand)]
        what: CreateCmd,
    },
    /// Change fields of an entity: `weft edge update service web --role-attributes a,b`.
    Update(UpdateArgs),
    /// Delete entities: `weft edge delete service web api`.
    Delete(DeleteArgs),
}

/// `weft edge list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// The kind: services, identities, edge-routers, service-policies, edge-router-policies,
    /// service-edge-router-policies, config-types, configs, authenticators, enrollments,
    /// auth-policies, api-sessions.
    pub entity: String,
    /// A filter, e.g. 'name contains "web" and roleAttributes = "eng"'.
    pub filter: Option<String>,
    /// Show one page of at most this many (default: every entity).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Skip this many (with --limit).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

/// `weft edge show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The kind (see `weft edge list --help`).
    pub entity: String,
    /// The entity, by name or id.
    pub name_or_id: String,
}

/// `weft edge delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The kind (see `weft edge list --help`).
    pub entity: String,
    /// The entities, by name or id.
    #[arg(required = true)]
    pub names_or_ids: Vec<String>,
    /// Only delete if its version is still VERSION (optimistic concurrency).
    #[arg(long, value_name = "VERSION")]
    pub if_match: Option<u64>,
}

/// Runs one `weft edge` command on the profile's session.
pub async fn run(g: &Global, args: EdgeArgs) -> anyhow::Result<()> {
    // Usage errors first: a wrong kind fails before any network call.
    let kind = match &args.cmd {
        EdgeCmd::List(a) => Some(kind(&a.entity)?),
        EdgeCmd::Show(a) => Some(kind(&a.entity)?),
        EdgeCmd::Update(a) => Some(kind(&a.entity)?),
        EdgeCmd::Delete(a) => Some(kind(&a.entity)?),
        EdgeCmd::Create { .. } => None,
    };
    let conn = Connected::open(g).await?;
    let c = &conn.client;
    let out = args.output;
    let result = match (args.cmd, kind) {
        (EdgeCmd::List(a), Some(k)) => list(c, k, a, out).await,
        (EdgeCmd::Show(a), Some(k)) => show(c, k, &a.name_or_id, out).await,
        (EdgeCmd::Update(a), Some(k)) => update(c, k, a, out).await,
        (EdgeCmd::Delete(a), Some(k)) => delete(c, k, a).await,
        (EdgeCmd::Create { what }, _) => create(c, what, out).await,
        _ => Ok(()),
    };
    conn.save_session();
    result.map_err(session_expired)
}

fn kind(word: &str) -> anyhow::Result<&'static Kind> {
    kinds::find(word).ok_or_else(|| {
        usage(format!(
            "unknown entity type {word:?}; one of: {}",
            kinds::names()
        ))
    })
}

/// A filter matching the entity named exactly `name`.
pub fn name_filter(name: &str) -> String {
    format!(
        "name=\"{}\"",
        name.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The id of the `kind` entity named `name_or_id`, or `name_or_id` itself (taken as an id)
/// if no entity has that name.
pub async fn resolve(c: &Client, kind: &Kind, name_or_id: &str) -> anyhow::Result<String> {
    if kind.named {
        let page = c
            .list(&kind.path(), Some(&name_filter(name_or_id)), 2, 0)
            .await
            .map_err(sdk)
            .with_context(|| format!("looking up {} {name_or_id:?}", kind.singular))?;
        if let Some(id) = page.items.first().and_then(|r| r["id"].as_str()) {
            return Ok(id.to_owned());
        }
    }
    Ok(name_or_id.to_owned())
}

/// The draft's body with its references resolved to ids.
async fn resolve_refs(c: &Client, d: Draft) -> anyhow::Result<Value> {
    let Draft { mut body, refs } = d;
    for r in refs {
        let Some(kind) = kinds::find(r.collection) else {
            continue;
        };
        let Some(v) = body.get_mut(r.field) else {
            continue;
        };
        match v {
            Value::String(s) => {
                let id = resolve(c, kind, s).await?;
                *s = id;
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    let Value::String(s) = item else { continue };
                    match r.kind {
                        RefKind::Plain => {
                            let id = resolve(c, kind, s).await?;
                            *s = id;
                        }
                        RefKind::Roles => {
                            if let Some(name) = s.strip_prefix('@') {
                                let id = resolve(c, kind, name).await?;
                                *s = format!("@{id}");
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(body))
}

async fn list(c: &Client, k: &Kind, a: ListArgs, out: Format) -> anyhow::Result<()> {
    let filter = a.filter.as_deref();
    let (items, footer) = match a.limit {
        Some(limit) => {
            let page = c
                .list(&k.path(), filter, limit, a.offset)
                .await
                .map_err(sdk)?;
            let n = page.items.len() as u64;
            let footer = if n == 0 {
                format!("results: none of {}", page.total)
            } else {
                format!(
                    "results: {}-{} of {}",
                    page.offset + 1,
                    page.offset + n,
                    page.total
                )
            };
            (page.items, Some(footer))
        }
        None => (c.list_all(&k.path(), filter).await.map_err(sdk)?, None),
    };
    match out {
        Format::Table => {
            out!("{}", output::records_table(k.columns, &items));
            if let Some(f) = footer {
                eprintln!("{f}");
            }
        }
        _ => out!("{}", output::document(&Value::Array(items), out)),
    }
    Ok(())
}

async fn show(c: &Client, k: &Kind, name_or_id: &str, out: Format) -> anyhow::Result<()> {
    let id = resolve(c, k, name_or_id).await?;
    let record = c.show(&k.item_path(&id)).await.map_err(sdk)?;
    match out {
        Format::Table => out!("{}", output::record_fields(&record)),
        _ => out!("{}", output::document(&record, out)),
    }
    Ok(())
}

async fn update(c: &Client, k: &Kind, a: UpdateArgs, out: Format) -> anyhow::Result<()> {
    let draft = a.draft(k)?;
    let id = resolve(c, k, &a.name_or_id).await?;
    let body = resolve_refs(c, draft).await?;
    let record = c
        .update(&k.item_path(&id), body, a.if_match)
        .await
        .map_err(sdk)?;
    match out {
        Format::Table => outln!("updated {} {} (id {id})", k.singular, a.name_or_id),
        _ => out!("{}", output::document(&record, out)),
    }
    Ok(())
}

async fn delete(c: &Client, k: &Kind, a: DeleteArgs) -> anyhow::Result<()> {
    for name in &a.names_or_ids {
        let id = resolve(c, k, name).await?;
        c.delete(&k.item_path(&id), a.if_match)
            .await
            .map_err(sdk)
            .with_context(|| format!("deleting {} {name}", k.singular))?;
        outln!("deleted {} {name} (id {id})", k.singular);
    }
    Ok(())
}

async fn create(c: &Client, what: CreateCmd, out: Format) -> anyhow::Result<()> {
    let k = kind(what.collection())?;
    if let Some(file) = &what.common().from_file {
        return bulk_create(c, k, file, out).await;
    }
    let jwt_file = what.jwt_output_file().cloned();
    if let Some(f) = &jwt_file {
        if f.exists() {
            return Err(usage(format!(
                "{} already exists; choose another --jwt-output-file",
                f.display()
            )));
        }
    }
    let schema =
        match &what {
            CreateCmd::ConfigType(a) => match &a.schema {
                Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                    usage(format!("cannot read the schema file {}: {e}", p.display()))
                })?),
                None => None,
            },
            _ => None,
        };
    let password = match &what {
        CreateCmd::Authenticator(a) if a.password.is_none() => Some(prompt_password(
            "password for the new authenticator: ",
            "--password",
        )?),
        _ => None,
    };
    let draft = what.draft(password.as_deref(), schema.as_deref())?;
    let body = resolve_refs(c, draft).await?;
    let label = body["name"]
        .as_str()
        .or(body["username"].as_str())
        .unwrap_or("")
        .to_owned();
    let mut record = c.create(&k.path(), body).await.map_err(sdk)?;
    let id = record["id"].as_str().unwrap_or("?").to_owned();
    if let Some(f) = &jwt_file {
        let mut jwt = enrollment_jwt(&record);
        if jwt.is_none() {
            // An answer without the enrollment: read it back.
            record = c.show(&k.item_path(&id)).await.map_err(sdk)?;
            jwt = enrollment_jwt(&record);
        }
        let jwt = jwt.ok_or_else(|| {
            anyhow::anyhow!(
                "the {} was created but its answer holds no enrollment JWT",
                k.singular
            )
        })?;
        write_private(f, jwt.as_bytes())?;
    }
    match out {
        Format::Table => {
            let label = if label.is_empty() { id.clone() } else { label };
            outln!("created {} {label} (id {id})", k.singular);
            if let Some(f) = &jwt_file {
                outln!("enrollment JWT written to {}", f.display());
            }
        }
        _ => out!("{}", output::document(&record, out)),
    }
    Ok(())
}

/// The enrollment JWT in a created identity (`enrollment.ott.jwt`), edge router
/// (`enrollmentJwt`) or enrollment (`jwt`).
pub fn enrollment_jwt(record: &Value) -> Option<String> {
    [
        output::lookup(record, "enrollment.ott.jwt"),
        output::lookup(record, "enrollmentJwt"),
        output::lookup(record, "jwt"),
    ]
    .into_iter()
    .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
    .map(str::to_owned)
}

/// Creates `path` (never overwriting) with mode 0600 and writes `bytes` with a newline.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

/// Reads a password without echo from the terminal; without a terminal, `flag` must be
/// given instead.
pub fn prompt_password(prompt: &str, flag: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "no password: give {flag} (standard input is not a terminal to prompt on)"
        )));
    }
    let p = rpassword::prompt_password(prompt).context("reading the password")?;
    if p.is_empty() {
        return Err(usage("empty password"));
    }
    Ok(p)
}

/// The request bodies in a bulk file: a JSON array of objects, or objects one after the
/// other (JSON lines).
pub fn parse_items(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    let items: Vec<Value> = if trimmed.starts_with('[') {
        match serde_json::from_str(text) {
            Ok(Value::Array(a)) => a,
            Ok(_) => return Err("expected a JSON array".into()),
            Err(e) => return Err(format!("line {}: {e}", e.line())),
        }
    } else {
        let mut v = Vec::new();
        for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            v.push(item.map_err(|e| format!("line {}: {e}", e.line()))?);
        }
        v
    };
    if let Some(i) = items.iter().position(|v| !v.is_object()) {
        return Err(format!("item {} is not a JSON object", i + 1));
    }
    if items.is_empty() {
        return Err("no items".into());
    }
    Ok(items)
}

/// The idempotency key of one bulk item: derived from the collection and the body, so the
/// same item sent again (a re-run of the same file) carries the same key.
pub fn item_key(collection: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(collection.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("weft-bulk-{hex}")
}

async fn bulk_create(c: &Client, k: &Kind, file: &Path, out: Format) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?
    };
    let items = parse_items(&text).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    let total = items.len();
    let mut progress = Progress::new(total as u64, &format!("creating {}", k.collection));
    let mut created = Vec::new();
    let mut failed = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        let label = item["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let key = item_key(k.collection, &item);
        match c
            .send(Request::post(k.path(), item).idempotency_key(key))
            .await
        {
            Ok(resp) => {
                let id = resp.data()["id"].as_str().unwrap_or("?").to_owned();
                progress.ok(&format!("created {} {label} (id {id})", k.singular));
                created.push(resp.data().clone());
            }
            Err(e) if e.status() == Some(401) => {
                progress.finish();
                return Err(sdk(e));
            }
            Err(e) => {
                failed += 1;
                progress.failed(&format!("{} {label}: {}", k.singular, describe(&e)));
            }
        }
    }
    progress.finish();
    if out != Format::Table {
        out!("{}", output::document(&Value::Array(created.clone()), out));
    }
    eprintln!(
        "created {} of {total} {}{}",
        created.len(),
        k.collection,
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        return Err(CliError::Bulk { failed, total }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_in_filters_are_quoted_and_escaped() {
        assert_eq!(name_filter("web"), r#"name="web""#);
        assert_eq!(name_filter(r#"a"b\c"#), r#"name="a\"b\\c""#);
    }

    #[test]
    fn bulk_files_are_arrays_or_json_lines() {
        let a = parse_items(r#" [{"name": "a"}, {"name": "b"}] "#);
        assert_eq!(a, Ok(vec![json!({"name": "a"}), json!({"name": "b"})]));
        let l = parse_items("{\"name\": \"a\"}\n\n{\"name\": \"b\"}\n");
        assert_eq!(l, Ok(vec![json!({"name": "a"}), json!({"name": "b"})]));
        assert!(parse_items("[1]").is_err());
        assert!(parse_items("").is_err());
        let bad = parse_items("{\"name\": \"a\"}\n{oops}\n");
        assert!(
            bad.as_ref().is_err_and(|e| e.starts_with("line 2")),
            "{bad:?}"
        );
    }

    #[test]
    fn item_keys_follow_the_body() {
        let a = item_key("services", &json!({"name": "a"}));
        assert_eq!(a, item_key("services", &json!({"name": "a"})));
        assert_ne!(a, item_key("services", &json!({"name": "b"})));
        assert_ne!(a, item_key("identities", &json!({"name": "a"})));
        assert!(a.starts_with("weft-bulk-") && a.len() == 42, "{a}");
    }

    #[test]
    fn enrollment_jwts_are_found_in_every_kind_of_answer() {
        let id = json!({"enrollment": {"ott": {"jwt": "j1"}}});
        assert_eq!(enrollment_jwt(&id).as_deref(), Some("j1"));
        assert_eq!(
            enrollment_jwt(&json!({"enrollmentJwt": "j2"})).as_deref(),
            Some("j2")
        );
        assert_eq!(enrollment_jwt(&json!({"jwt": "j3"})).as_deref(), Some("j3"));
        assert_eq!(enrollment_jwt(&json!({"enrollmentJwt": null})), None);
    }
}
