//! Exactly-once writes across retries: the records behind the `Idempotency-Key` header.
//!
//! A client that timed out cannot know whether its write happened; it retries, maybe on
//! another controller. The request carries a key, and the controller proposes
//! [`Command::Idempotent`](crate::Command::Idempotent) around the write. Apply, the one
//! place every node agrees on, decides:
//! - the key has no live record: apply the inner command and store its result (a success
//!   or a refusal: a retry must get the same answer either way) under the key, in the same
//!   transaction as the command's effect, so a write and its record exist together or not
//!   at all;
//! - the key has a live record with the same fingerprint (method, path and body): answer
//!   the stored result ([`Outcome::Replayed`]) and apply nothing;
//! - the key has a live record with another fingerprint: refuse
//!   ([`DomainError::IdempotencyKeyReused`]).
//!
//! Keys are scoped to the caller (`scope`, the session's subject), so two callers never
//! see each other's results. A record lives [`TTL_MS`] after the command that made it,
//! measured against later commands' proposer times (`at`), never a clock read here.
//! Expired records are pruned by later idempotent commands, oldest first and at most
//! [`PRUNE_AT_MOST`] per command, through a time-ordered index, so an apply's work is
//! bounded however many records there are.
//!
//! Rows (both are replicated state, so snapshots carry them):
//! * `idempotency`, key [`record_key`]: the [`Record`] (JSON);
//! * `idempotency.by-time`, key `<at, 20 digits>/<record key>`: empty; its order is the
//!   records' age order.

use serde::{Deserialize, Serialize};

use crate::{Command, DomainError, Outcome, StateRead, StateWrite, StorageFault, UnixMs};

/// How long a record lives after the command that made it (at least the ten minutes a
/// client may take to retry).
pub const TTL_MS: UnixMs = weft_api::IDEMPOTENCY_TTL_SECS as UnixMs * 1000;

/// Most expired records one command prunes.
pub const PRUNE_AT_MOST: usize = 64;

/// The records, by [`record_key`].
const RECORDS: &str = "idempotency";
/// The records in age order (see the module doc).
const BY_TIME: &str = "idempotency.by-time";

/// What is remembered about one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The fingerprint of the request that used the key first.
    pub fingerprint: String,
    /// That request's result, answered again to every retry.
    pub outcome: Result<Outcome, DomainError>,
    /// When that request was proposed.
    pub at: UnixMs,
}

impl Record {
    /// Whether the record still counts at time `now` (a proposer's time).
    pub fn live_at(&self, now: UnixMs) -> bool {
        now <= self.at.saturating_add(TTL_MS)
    }
}

/// The row key of `key` in `scope`: the scope's length first, so no pair of scope and key
/// can spell another pair's row.
pub fn record_key(scope: &str, key: &str) -> String {
    format!("{}:{scope}/{key}", scope.len())
}

/// The age-order row of the record `record_key` made at `at`.
fn time_key(at: UnixMs, record_key: &str) -> String {
    format!("{:020}/{record_key}", at.max(0))
}

fn decode(bytes: &[u8]) -> Result<Record, StorageFault> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageFault(format!("corrupt idempotency record: {e}")))
}

/// The live record of `key` in `scope` at time `now`, if any. Handlers use it to answer a
/// retry from local state without proposing; apply's own check is the authoritative one.
pub fn lookup(
    st: &dyn StateRead,
    scope: &str,
    key: &str,
    now: UnixMs,
) -> Result<Option<Record>, StorageFault> {
    Ok(st
        .get(RECORDS, &record_key(scope, key))?
        .map(|b| decode(&b))
        .transpose()?
        .filter(|r| r.live_at(now)))
}

/// Applies [`Command::Idempotent`] (see the module doc).
pub(crate) fn apply(
    st: &mut dyn StateWrite,
    scope: &str,
    key: &str,
    fingerprint: &str,
    at: UnixMs,
    inner: &Command,
) -> Result<Result<Outcome, DomainError>, StorageFault> {
    prune(st, at)?;
    let rk = record_key(scope, key);
    if let Some(old) = st.get(RECORDS, &rk)?.map(|b| decode(&b)).transpose()? {
        if old.live_at(at) {
            if old.fingerprint == fingerprint {
                return Ok(Ok(Outcome::Replayed(Box::new(old.outcome))));
            }
            return Ok(Err(DomainError::IdempotencyKeyReused { key: key.into() }));
        }
        // Expired but not pruned yet: the key is free again.
        st.delete(BY_TIME, &time_key(old.at, &rk))?;
    }
    let outcome = crate::apply(st, inner)?;
    let record = Record {
        fingerprint: fingerprint.into(),
        outcome: outcome.clone(),
        at,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| StorageFault(e.to_string()))?;
    st.put(RECORDS, &rk, &bytes)?;
    st.put(BY_TIME, &time_key(at, &rk), b"")?;
    Ok(outcome)
}

/// Deletes the oldest records that have expired at `now`, at most [`PRUNE_AT_MOST`].
fn prune(st: &mut dyn StateWrite, now: UnixMs) -> Result<(), StorageFault> {
    for tk in st.first_keys(BY_TIME, PRUNE_AT_MOST)? {
        let Some((at, rk)) = tk.split_once('/') else {
            st.delete(BY_TIME, &tk)?;
            continue;
        };
        let at: UnixMs = at.parse().unwrap_or(0);
        if now <= at.saturating_add(TTL_MS) {
            break; // the rest are younger
        }
        // The record may have been made again since (then its time row is another one).
        let current = st.get(RECORDS, rk)?.map(|b| decode(&b)).transpose()?;
        if current.is_some_and(|r| r.at.max(0) == at) {
            st.delete(RECORDS, rk)?;
        }
        st.delete(BY_TIME, &tk)?;
    }
    Ok(())
}

/// How many records the state holds (live or not yet pruned), for tests and metrics.
pub fn count(st: &dyn StateRead) -> Result<usize, StorageFault> {
    Ok(st.keys(RECORDS)?.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::entity::{self, EntityKind, ListQuery};
    use crate::state::MemState;

    fn svc(id: &str, name: &str) -> Command {
        Command::Create {
            kind: EntityKind::Service,
            record: json!({"id": id, "name": name, "roleAttributes": [], "tags": {},
                           "createdAt": "t0", "updatedAt": "t0"}),
        }
    }

    fn idem(key: &str, fp: &str, at: UnixMs, inner: Command) -> Command {
        Command::Idempotent {
            scope: "admin".into(),
            key: key.into(),
            fingerprint: fp.into(),
            at,
            inner: Box::new(inner),
        }
    }

    fn services(st: &MemState) -> u64 {
        entity::list(st, EntityKind::Service, &ListQuery::page(0, 100))
            .unwrap()
            .total
    }

    #[test]
    fn a_retry_answers_the_first_result_and_creates_nothing() {
        let mut st = MemState::default();
        let first = crate::apply(&mut st, &idem("k", "f", 1_000, svc("a", "web")))
            .unwrap()
            .unwrap();
        let Outcome::Entity(created) = &first else {
            panic!("{first:?}")
        };
        assert_eq!(created["id"], "a");
        // The retry was proposed elsewhere, with another id: it is not applied.
        let before = st.map.clone();
        let again = crate::apply(&mut st, &idem("k", "f", 2_000, svc("b", "web")))
            .unwrap()
            .unwrap();
        assert_eq!(again, Outcome::Replayed(Box::new(Ok(first))));
        assert_eq!(st.map, before, "a replay changes nothing");
        assert_eq!(services(&st), 1);
    }

    #[test]
    fn the_same_key_for_another_request_is_refused() {
        let mut st = MemState::default();
        crate::apply(&mut st, &idem("k", "f", 1_000, svc("a", "web")))
            .unwrap()
            .unwrap();
        let before = st.map.clone();
        let err = crate::apply(&mut st, &idem("k", "other", 1_500, svc("b", "db")))
            .unwrap()
            .unwrap_err();
        assert_eq!(err, DomainError::IdempotencyKeyReused { key: "k".into() });
        assert_eq!(st.map, before);
        // Another caller's key of the same name is another key.
        let other = Command::Idempotent {
            scope: "bob".into(),
            key: "k".into(),
            fingerprint: "other".into(),
            at: 1_500,
            inner: Box::new(svc("b", "db")),
        };
        assert!(matches!(
            crate::apply(&mut st, &other).unwrap(),
            Ok(Outcome::Entity(_))
        ));
    }

    #[test]
    fn a_refusal_is_stored_and_answered_again() {
        let mut st = MemState::default();
        crate::apply(&mut st, &svc("x", "web")).unwrap().unwrap();
        let first = crate::apply(&mut st, &idem("k", "f", 1_000, svc("a", "web")))
            .unwrap()
            .unwrap_err();
        assert!(matches!(first, DomainError::NameTaken { .. }));
        // The name is free now, but the retry gets the first answer.
        crate::apply(
            &mut st,
            &Command::Delete {
                kind: EntityKind::Service,
                id: "x".into(),
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap();
        let again = crate::apply(&mut st, &idem("k", "f", 2_000, svc("b", "web")))
            .unwrap()
            .unwrap();
        assert_eq!(again, Outcome::Replayed(Box::new(Err(first))));
        assert_eq!(services(&st), 0);
    }

    #[test]
    fn records_expire_and_are_pruned_oldest_first_in_bounded_steps() {
        let mut st = MemState::default();
        let n = PRUNE_AT_MOST + 10;
        for i in 0..n {
            let cmd = idem(
                &format!("k{i}"),
                "f",
                i as UnixMs,
                svc(&format!("s{i}"), &format!("n{i}")),
            );
            crate::apply(&mut st, &cmd).unwrap().unwrap();
        }
        assert_eq!(count(&st).unwrap(), n);
        assert!(lookup(&st, "admin", "k0", TTL_MS).unwrap().is_some());
        assert!(lookup(&st, "admin", "k0", TTL_MS + 1).unwrap().is_none());
        // Much later: one command prunes at most PRUNE_AT_MOST, the oldest ones.
        let late = 10 * TTL_MS;
        crate::apply(&mut st, &idem("new", "f", late, svc("z", "z")))
            .unwrap()
            .unwrap();
        assert_eq!(count(&st).unwrap(), n - PRUNE_AT_MOST + 1);
        assert!(st
            .get(RECORDS, &record_key("admin", "k0"))
            .unwrap()
            .is_none());
        let young = record_key("admin", &format!("k{}", n - 1));
        assert!(st.get(RECORDS, &young).unwrap().is_some());
        crate::apply(&mut st, &idem("new2", "f", late, svc("y", "y")))
            .unwrap()
            .unwrap();
        assert_eq!(count(&st).unwrap(), 2, "the rest pruned by the next one");
        assert_eq!(st.keys(BY_TIME).unwrap().len(), 2);
    }

    #[test]
    fn an_expired_key_is_free_again() {
        let mut st = MemState::default();
        crate::apply(&mut st, &idem("k", "f", 0, svc("a", "web")))
            .unwrap()
            .unwrap();
        // Another request with the same key after expiry is a new request.
        let r = crate::apply(&mut st, &idem("k", "g", TTL_MS + 1, svc("b", "db")))
            .unwrap()
            .unwrap();
        assert!(matches!(r, Outcome::Entity(_)));
        assert_eq!(services(&st), 2);
        assert_eq!(
            st.keys(BY_TIME).unwrap().len(),
            1,
            "one time row per record"
        );
        assert_eq!(
            lookup(&st, "admin", "k", TTL_MS + 1)
                .unwrap()
                .unwrap()
                .fingerprint,
            "g"
        );
    }

    #[test]
    fn scopes_and_keys_cannot_spell_each_other() {
        assert_ne!(record_key("a/b", "c"), record_key("a", "b/c"));
    }
}
