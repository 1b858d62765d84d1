//! Replicated commands and the state machine's [`apply`].
//!
//! Besides entities, the replicated state holds what makes the cluster one trust domain:
//! the cluster CA, the admin account, every controller's token-signing public key and
//! the revoked sessions. Keeping these in raft is what lets a token issued by one
//! controller be accepted by every other one, and a logout take effect everywhere.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entity::{self, EntityKind};
use crate::index;
use crate::{rfc3339, DomainError, StateRead, StateWrite, StorageFault, UnixMs};

const CLUSTER: &str = "cluster";
const ADMINS: &str = "admins";
const NODE_KEYS: &str = "node-keys";
const REVOKED: &str = "revoked-sessions";
/// API sessions as `api-sessions` lists them (recorded after login, not before it).
const SESSIONS: &str = "api-sessions";

/// A change to the replicated state. Everything non-deterministic (ids, times, key
/// material) is decided by the proposer and carried here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Command {
    /// The first entry of a new cluster: its CA and its admin.
    Bootstrap {
        ca_cert_pem: String,
        ca_key_pem: String,
        admin_username: String,
        admin_password_hash: String,
    },
    /// A controller's token-signing public key (hex), committed when it joins.
    RegisterNodeKey {
        node_id: u64,
        public_key_hex: String,
    },
    /// Create an entity; `record` is its whole JSON form, id and times included.
    Create { kind: EntityKind, record: Value },
    /// Replace top-level fields of an entity.
    Update {
        kind: EntityKind,
        id: String,
        patch: Map<String, Value>,
        at: UnixMs,
        /// Compare-and-set (`If-Match`): apply only if the entity is at this version, else
        /// [`DomainError::VersionMismatch`]. Checked here, in apply, so two racing
        /// compare-and-sets cannot both win. Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
    },
    /// Delete an entity.
    Delete {
        kind: EntityKind,
        id: String,
        /// Compare-and-set, as for [`Command::Update`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
    },
    /// Revoke an API session everywhere (logout, admin revocation). `now` prunes
    /// revocations of sessions that expired anyway.
    RevokeSession {
        session_id: String,
        expires_at: UnixMs,
        now: UnixMs,
    },
    /// Record (or, after a refresh, update) an API session for `api-sessions`. Proposed
    /// after the login has been answered: a login never waits for raft. `now` prunes the
    /// records of expired sessions.
    RecordSession { session: Value, now: UnixMs },
    /// Several creates, all or none (an identity with its enrollment, say). The outcome is
    /// the first entity.
    CreateAll { records: Vec<(EntityKind, Value)> },
    /// Use an enrollment token: see [`crate::enrollment`].
    Enroll(crate::enrollment::Enroll),
    /// `inner`, at most once per idempotency key (see [`crate::idempotency`]): the first
    /// time it is applied and its result stored under the key, in the same transaction;
    /// later with the same fingerprint the stored result is answered
    /// ([`Outcome::Replayed`]) and nothing is applied; with another fingerprint it is
    /// refused ([`DomainError::IdempotencyKeyReused`]).
    Idempotent {
        /// Whose key it is (the caller's subject): keys of different callers never meet.
        scope: String,
        /// The `Idempotency-Key` the caller chose.
        key: String,
        /// What the request was (method, path, body), hashed by the proposer: the same key
        /// for another request is refused.
        fingerprint: String,
        /// When it was proposed: the record's birth, and what older records expire against.
        at: UnixMs,
        /// The command the request stands for.
        inner: Box<Command>,
    },
}

/// What a successfully applied command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The entity as it is after the command (for deletes: as it was).
    Entity(Value),
    /// Nothing to return.
    Done,
    /// The stored result of the first command with the same idempotency key: nothing was
    /// applied this time (see [`Command::Idempotent`]).
    Replayed(Box<Result<Outcome, DomainError>>),
}

/// The cluster CA as stored in replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The admin account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Admin {
    pub username: String,
    pub password_hash: String,
}

/// Applies one command. The outer error is a storage fault (the node must stop applying);
/// the inner one is the user's error, replicated as the command's result.
pub fn apply(
    st: &mut dyn StateWrite,
    cmd: &Command,
) -> Result<Result<Outcome, DomainError>, StorageFault> {
    let entity = |r: Result<Value, DomainError>| r.map(Outcome::Entity);
    // A state from a version without the policy index gets it before its first command
    // here (a no-op lookup of one row afterwards).
    index::ensure(st)?;
    match cmd {
        Command::Bootstrap {
            ca_cert_pem,
            ca_key_pem,
            admin_username,
            admin_password_hash,
        } => {
            let ca = ClusterCa {
                cert_pem: ca_cert_pem.clone(),
                key_pem: ca_key_pem.clone(),
            };
            st.put(CLUSTER, "ca", &to_bytes(&ca))?;
            let admin = Admin {
                username: admin_username.clone(),
                password_hash: admin_password_hash.clone(),
            };
            st.put(ADMINS, admin_username, &to_bytes(&admin))?;
            Ok(Ok(Outcome::Done))
        }
        Command::RegisterNodeKey {
            node_id,
            public_key_hex,
        } => {
            st.put(NODE_KEYS, &node_id.to_string(), public_key_hex.as_bytes())?;
            Ok(Ok(Outcome::Done))
        }
        Command::Create { kind, record } => Ok(entity(entity::create(st, *kind, record)?)),
        Command::Update {
            kind,
            id,
            patch,
            at,
            expected_version,
        } => Ok(entity(entity::update(
            st,
            *kind,
            id,
            patch,
            &rfc3339(*at),
            *expected_version,
        )?)),
        Command::Delete {
            kind,
            id,
            expected_version,
        } => Ok(entity(entity::delete(st, *kind, id, *expected_version)?)),
        Command::Idempotent {
            scope,
            key,
            fingerprint,
            at,
            inner,
        } => crate::idempotency::apply(st, scope, key, fingerprint, *at, inner),
        Command::CreateAll { records } => {
            let mut first = None;
            for (i, (kind, record)) in records.iter().enumerate() {
                match entity::create(st, *kind, record)? {
                    Ok(v) => {
                        first.get_or_insert(v);
                    }
                    Err(e) => {
                        // Undo the ones already made, newest first (later ones may refer
                        // to earlier ones).
                        for (kind, record) in records[..i].iter().rev() {
                            let id = record.get("id").and_then(Value::as_str).unwrap_or("");
                            let _ = entity::delete(st, *kind, id, None)?;
                        }
                        return Ok(Err(e));
                    }
                }
            }
            Ok(Ok(first.map_or(Outcome::Done, Outcome::Entity)))
        }
        Command::Enroll(e) => Ok(entity(crate::enrollment::apply(st, e)?)),
        Command::RevokeSession {
            session_id,
            expires_at,
            now,
        } => {
            for (sid, exp) in st.scan(REVOKED)? {
                if parse_ms(&exp) < *now {
                    st.delete(REVOKED, &sid)?;
                }
            }
            st.put(REVOKED, session_id, expires_at.to_string().as_bytes())?;
            st.delete(SESSIONS, session_id)?;
            Ok(Ok(Outcome::Done))
        }
        Command::RecordSession { session, now } => {
            prune_sessions(st, *now)?;
            let id = session
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if id.is_empty() || st.get(REVOKED, id)?.is_some() {
                // Logged out before its record was committed: nothing to list.
                return Ok(Ok(Outcome::Done));
            }
            st.put(SESSIONS, id, &to_bytes(session))?;
            Ok(Ok(Outcome::Done))
        }
    }
}

/// Most expired session records deleted by one command (keeps every apply short).
const PRUNE_AT_MOST: usize = 64;

fn prune_sessions(st: &mut dyn StateWrite, now: UnixMs) -> Result<(), StorageFault> {
    let mut pruned = 0;
    for (sid, bytes) in st.scan(SESSIONS)? {
        if pruned >= PRUNE_AT_MOST {
            break;
        }
        if session_expires_at(&bytes) < now {
            st.delete(SESSIONS, &sid)?;
            pruned += 1;
        }
    }
    Ok(())
}

/// The `expiresAtMs` of a stored session record (0 if unreadable: pruned first).
fn session_expires_at(bytes: &[u8]) -> UnixMs {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("expiresAtMs").and_then(Value::as_i64))
        .unwrap_or(0)
}

/// The recorded API sessions that have not expired by `now`, oldest first.
pub fn api_sessions(st: &dyn StateRead, now: UnixMs) -> Result<Vec<Value>, StorageFault> {
    let mut out: Vec<Value> = Vec::new();
    for (_, bytes) in st.scan(SESSIONS)? {
        if session_expires_at(&bytes) >= now {
            out.push(serde_json::from_slice(&bytes).map_err(|e| StorageFault(e.to_string()))?);
        }
    }
    out.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v.get("createdAt")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                v.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(out)
}

/// One recorded API session.
pub fn api_session(st: &dyn StateRead, id: &str) -> Result<Option<Value>, StorageFault> {
    st.get(SESSIONS, id)?
        .map(|b| serde_json::from_slice(&b).map_err(|e| StorageFault(e.to_string())))
        .transpose()
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse_ms(b: &[u8]) -> UnixMs {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The cluster CA, once bootstrapped.
pub fn cluster_ca(st: &dyn StateRead) -> Result<Option<ClusterCa>, StorageFault> {
    st.get(CLUSTER, "ca")?
        .map(|b| serde_json::from_slice(&b).map_err(|e| StorageFault(e.to_string())))
        .transpose()
}

/// An admin account by user name.
pub fn admin(st: &dyn StateRead, username: &str) -> Result<Option<Admin>, StorageFault> {
    st.get(ADMINS, username)?
        .map(|b| serde_json::from_slice(&b).map_err(|e| StorageFault(e.to_string())))
        .transpose()
}

/// The token-signing public key (hex) of a controller.
pub fn node_key(st: &dyn StateRead, node_id: u64) -> Result<Option<String>, StorageFault> {
    Ok(st
        .get(NODE_KEYS, &node_id.to_string())?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Whether a session was revoked.
pub fn is_revoked(st: &dyn StateRead, session_id: &str) -> Result<bool, StorageFault> {
    Ok(st.get(REVOKED, session_id)?.is_some())
}

/// A short summary for logs. Never prints key material or password hashes.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Bootstrap { admin_username, .. } => {
                write!(f, "bootstrap(admin={admin_username})")
            }
            Command::RegisterNodeKey { node_id, .. } => write!(f, "register-node-key({node_id})"),
            Command::Create { kind, record } => write!(
                f,
                "create {}({})",
                kind.singular(),
                record.get("id").and_then(Value::as_str).unwrap_or("?")
            ),
            Command::Update { kind, id, .. } => write!(f, "update {}({id})", kind.singular()),
            Command::Delete { kind, id, .. } => write!(f, "delete {}({id})", kind.singular()),
            Command::Idempotent { inner, .. } => write!(f, "idempotent {inner}"),
            Command::RevokeSession { session_id, .. } => write!(f, "revoke-session({session_id})"),
            Command::RecordSession { session, .. } => write!(
                f,
                "record-session({})",
                session.get("id").and_then(Value::as_str).unwrap_or("?")
            ),
            Command::CreateAll { records } => write!(f, "create-all({} records)", records.len()),
            Command::Enroll(e) => write!(f, "enroll({})", e.enrollment_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use serde_json::json;

    #[test]
    fn session_records_are_listed_until_expired_or_revoked() {
        let mut st = MemState::default();
        let rec = |id: &str, exp: UnixMs| json!({"id": id, "identityId": "i", "createdAt": format!("t{id}"), "expiresAtMs": exp});
        for (id, exp) in [("a", 100), ("b", 1_000)] {
            let cmd = Command::RecordSession {
                session: rec(id, exp),
                now: 10,
            };
            apply(&mut st, &cmd).unwrap().unwrap();
        }
        assert_eq!(api_sessions(&st, 50).unwrap().len(), 2);
        assert_eq!(api_sessions(&st, 500).unwrap().len(), 1, "a expired");
        let revoke = Command::RevokeSession {
            session_id: "b".into(),
            expires_at: 1_000,
            now: 20,
        };
        apply(&mut st, &revoke).unwrap().unwrap();
        assert!(
            api_session(&st, "b").unwrap().is_none(),
            "revoked: record gone"
        );
        // A record arriving after its logout is not listed.
        let late = Command::RecordSession {
            session: rec("b", 1_000),
            now: 30,
        };
        apply(&mut st, &late).unwrap().unwrap();
        assert!(api_session(&st, "b").unwrap().is_none());
        // Expired records are pruned by later commands.
        let c = Command::RecordSession {
            session: rec("c", 5_000),
            now: 200,
        };
        apply(&mut st, &c).unwrap().unwrap();
        assert!(api_session(&st, "a").unwrap().is_none(), "a pruned");
    }

    fn svc(id: &str, name: &str) -> Command {
        Command::Create {
            kind: EntityKind::Service,
            record: json!({"id": id, "name": name, "roleAttributes": [], "tags": {},
                           "createdAt": "t0", "updatedAt": "t0"}),
        }
    }

    #[test]
    fn create_get_list_update_delete() {
        let mut st = MemState::default();
        apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        apply(&mut st, &svc("b", "db")).unwrap().unwrap();
        let page = entity::list(&st, EntityKind::Service, &entity::ListQuery::page(0, 10)).unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.items[0]["name"], "db", "ordered by name");
        let mut patch = Map::new();
        patch.insert("name".into(), json!("web2"));
        let out = apply(
            &mut st,
            &Command::Update {
                kind: EntityKind::Service,
                id: "a".into(),
                patch,
                at: 0,
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap();
        let Outcome::Entity(rec) = out else { panic!() };
        assert_eq!(rec["name"], "web2");
        assert_eq!(
            entity::id_by_name(&st, EntityKind::Service, "web").unwrap(),
            None
        );
        apply(&mut st, &svc("c", "web"))
            .unwrap()
            .expect("old name is free again");
        apply(
            &mut st,
            &Command::Delete {
                kind: EntityKind::Service,
                id: "a".into(),
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            entity::list(&st, EntityKind::Service, &entity::ListQuery::page(0, 10))
                .unwrap()
                .total,
            2
        );
    }

    #[test]
    fn identical_create_applied_twice_is_idempotent() {
        let mut st = MemState::default();
        let first = apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        let before = st.map.clone();
        let again = apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        assert_eq!(first, again);
        assert_eq!(before, st.map);
    }

    #[test]
    fn duplicate_name_is_refused_and_changes_nothing() {
        let mut st = MemState::default();
        apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        let before = st.map.clone();
        let err = apply(&mut st, &svc("b", "web")).unwrap().unwrap_err();
        assert!(matches!(err, DomainError::NameTaken { .. }));
        assert_eq!(before, st.map);
    }

    #[test]
    fn create_all_is_all_or_nothing() {
        let mut st = MemState::default();
        apply(&mut st, &svc("x", "taken")).unwrap().unwrap();
        let before = st.map.clone();
        let record = |c: Command| match c {
            Command::Create { kind, record } => (kind, record),
            _ => unreachable!(),
        };
        let cmd = Command::CreateAll {
            records: vec![record(svc("a", "first")), record(svc("b", "taken"))],
        };
        let err = apply(&mut st, &cmd).unwrap().unwrap_err();
        assert!(matches!(err, DomainError::NameTaken { .. }));
        assert_eq!(before, st.map, "the first create was undone");
        let cmd = Command::CreateAll {
            records: vec![record(svc("a", "first")), record(svc("b", "second"))],
        };
        let Outcome::Entity(first) = apply(&mut st, &cmd).unwrap().unwrap() else {
            panic!("no entity")
        };
        assert_eq!(first["id"], "a");
        assert!(entity::get(&st, EntityKind::Service, "b")
            .unwrap()
            .is_some());
    }

    #[test]
    fn invalid_patch_is_refused_and_changes_nothing() {
        let mut st = MemState::default();
        apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        let before = st.map.clone();
        let mut patch = Map::new();
        patch.insert("name".into(), json!(""));
        let err = apply(
            &mut st,
            &Command::Update {
                kind: EntityKind::Service,
                id: "a".into(),
                patch,
                at: 0,
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, DomainError::InvalidField { ref field, .. } if field == "name"));
        assert_eq!(before, st.map);
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut st = MemState::default();
        let err = apply(
            &mut st,
            &Command::Delete {
                kind: EntityKind::Service,
                id: "nope".into(),
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }));
    }

    fn patch_name(id: &str, name: &str, expected_version: Option<u64>) -> Command {
        let mut patch = Map::new();
        patch.insert("name".into(), json!(name));
        Command::Update {
            kind: EntityKind::Service,
            id: id.into(),
            patch,
            at: 5,
            expected_version,
        }
    }

    fn version(st: &MemState, id: &str) -> u64 {
        let rec = entity::get(st, EntityKind::Service, id).unwrap().unwrap();
        EntityKind::Service.public(rec)["version"].as_u64().unwrap()
    }

    #[test]
    fn every_change_increments_the_version() {
        let mut st = MemState::default();
        let Outcome::Entity(created) = apply(&mut st, &svc("a", "web")).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(created["version"], 1);
        for (i, name) in ["w1", "w2", "w3"].iter().enumerate() {
            let Outcome::Entity(rec) = apply(&mut st, &patch_name("a", name, None))
                .unwrap()
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(rec["version"], i as u64 + 2);
        }
        assert_eq!(version(&st, "a"), 4);
        // A refused change changes no version.
        apply(&mut st, &svc("b", "taken")).unwrap().unwrap();
        apply(&mut st, &patch_name("a", "taken", None))
            .unwrap()
            .unwrap_err();
        assert_eq!(version(&st, "a"), 4);
    }

    #[test]
    fn a_record_without_a_version_reads_as_1_and_becomes_2() {
        let mut st = MemState::default();
        // As a version without versions stored it.
        let old = json!({"id": "a", "name": "web", "roleAttributes": [], "tags": {},
                         "createdAt": "t0", "updatedAt": "t0"});
        st.put("services", "a", &serde_json::to_vec(&old).unwrap())
            .unwrap();
        st.put("services.by-name", "web", b"a").unwrap();
        assert_eq!(version(&st, "a"), 1);
        apply(&mut st, &patch_name("a", "web2", Some(1)))
            .unwrap()
            .unwrap();
        assert_eq!(version(&st, "a"), 2);
    }

    #[test]
    fn if_match_mismatch_is_refused_and_changes_nothing() {
        let mut st = MemState::default();
        apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        apply(&mut st, &patch_name("a", "web2", Some(1)))
            .unwrap()
            .expect("the right version");
        let before = st.map.clone();
        let err = apply(&mut st, &patch_name("a", "web3", Some(1)))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            DomainError::VersionMismatch {
                kind: "service".into(),
                id: "a".into(),
                expected: 1,
                current: 2
            }
        );
        let stale_delete = Command::Delete {
            kind: EntityKind::Service,
            id: "a".into(),
            expected_version: Some(1),
        };
        assert!(matches!(
            apply(&mut st, &stale_delete).unwrap(),
            Err(DomainError::VersionMismatch { current: 2, .. })
        ));
        assert_eq!(before, st.map, "nothing changed");
        // Not found stays not found, whatever the version.
        let missing = Command::Delete {
            kind: EntityKind::Service,
            id: "nope".into(),
            expected_version: Some(1),
        };
        assert!(matches!(
            apply(&mut st, &missing).unwrap(),
            Err(DomainError::NotFound { .. })
        ));
        let delete = Command::Delete {
            kind: EntityKind::Service,
            id: "a".into(),
            expected_version: Some(2),
        };
        apply(&mut st, &delete).unwrap().expect("the right version");
        assert!(entity::get(&st, EntityKind::Service, "a")
            .unwrap()
            .is_none());
    }

    #[test]
    fn two_compare_and_sets_on_one_version_cannot_both_win() {
        let mut st = MemState::default();
        apply(&mut st, &svc("a", "web")).unwrap().unwrap();
        let first = apply(&mut st, &patch_name("a", "mine", Some(1))).unwrap();
        let second = apply(&mut st, &patch_name("a", "yours", Some(1))).unwrap();
        assert!(first.is_ok());
        assert!(matches!(second, Err(DomainError::VersionMismatch { .. })));
        let rec = entity::get(&st, EntityKind::Service, "a").unwrap().unwrap();
        assert_eq!(rec["name"], "mine");
    }

    #[test]
    fn entries_written_before_versions_still_decode() {
        let update: Command = serde_json::from_value(json!({
            "op": "update", "kind": "service", "id": "a", "patch": {"name": "x"}, "at": 1
        }))
        .unwrap();
        assert!(matches!(
            update,
            Command::Update {
                expected_version: None,
                ..
            }
        ));
        let delete: Command =
            serde_json::from_value(json!({"op": "delete", "kind": "service", "id": "a"})).unwrap();
        assert!(matches!(
            delete,
            Command::Delete {
                expected_version: None,
                ..
            }
        ));
        // And a command without a precondition is written as before.
        let text = serde_json::to_string(&delete).unwrap();
        assert!(!text.contains("expected"), "{text}");
    }

    #[test]
    fn revocations_prune_expired_sessions() {
        let mut st = MemState::default();
        let revoke = |sid: &str, exp, now| Command::RevokeSession {
            session_id: sid.into(),
            expires_at: exp,
            now,
        };
        apply(&mut st, &revoke("s1", 100, 0)).unwrap().unwrap();
        assert!(is_revoked(&st, "s1").unwrap());
        apply(&mut st, &revoke("s2", 500, 200)).unwrap().unwrap();
        assert!(!is_revoked(&st, "s1").unwrap(), "expired anyway, pruned");
        assert!(is_revoked(&st, "s2").unwrap());
    }
}
