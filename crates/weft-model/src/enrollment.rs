//! Enrollment: an identity (`ott`) or an edge router (`erott`) trades a one-time token for
//! a certificate signed by the cluster CA.
//!
//! The controller that receives the request checks the token and signs the CSR; the raft
//! command [`Command::Enroll`](crate::Command::Enroll) then *consumes* the token. Apply is
//! what decides, so two nodes racing with the same token cannot both succeed: the first
//! entry marks the enrollment completed, the second finds it completed (410). For `ott` it
//! creates the identity's `cert` authenticator (whose name is the certificate's
//! fingerprint, so login finds it through the name index); for `erott` it marks the router
//! verified and records its certificate's fingerprint.

use serde_json::{json, Map, Value};

use crate::entity::{self, EntityKind};
use crate::{rfc3339, DomainError, StateRead, StateWrite, StorageFault, UnixMs};

/// What an enroll command carries: everything non-deterministic, chosen by the proposer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enroll {
    /// The enrollment being used.
    pub enrollment_id: String,
    /// Its token, as presented (checked again here against the committed record).
    pub token: String,
    /// SHA-256 fingerprint (lowercase hex) of the certificate the controller signed.
    pub fingerprint: String,
    /// That certificate (PEM).
    pub cert_pem: String,
    /// Id of the `cert` authenticator to create (`ott`).
    pub authenticator_id: String,
    /// When the request was made (expiry is judged against it).
    pub at: UnixMs,
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The name of the open enrollment of `method` for `target` (an identity or router id):
/// names are unique, so a target has at most one open enrollment per method, and the name
/// index finds it without a scan.
pub fn open_name(method: &str, target: &str) -> String {
    format!("{method}:{target}")
}

/// The name a used enrollment is renamed to: frees [`open_name`] for a later enrollment
/// and keeps the token findable, so its reuse is answered 410, not 400.
pub fn used_name(token: &str) -> String {
    format!("used:{token}")
}

/// The field naming an enrollment's target, and the target's kind.
pub fn target_of(method: &str) -> (&'static str, EntityKind) {
    if method == "erott" {
        ("edgeRouterId", EntityKind::EdgeRouter)
    } else {
        ("identityId", EntityKind::Identity)
    }
}

/// The enrollment `token` was issued for (`method` of `target`), open or used, if any.
pub fn find(
    st: &dyn StateRead,
    method: &str,
    target: &str,
    token: &str,
) -> Result<Option<Value>, StorageFault> {
    for name in [open_name(method, target), used_name(token)] {
        if let Some(id) = entity::id_by_name(st, EntityKind::Enrollment, &name)? {
            if let Some(e) = entity::get(st, EntityKind::Enrollment, &id)? {
                if str_of(&e, "token") == token {
                    return Ok(Some(e));
                }
            }
        }
    }
    Ok(None)
}

/// The open enrollment of `method` for `target`, if any (for showing its JWT).
pub fn open(st: &dyn StateRead, method: &str, target: &str) -> Result<Option<Value>, StorageFault> {
    match entity::id_by_name(st, EntityKind::Enrollment, &open_name(method, target))? {
        Some(id) => entity::get(st, EntityKind::Enrollment, &id),
        None => Ok(None),
    }
}

/// Whether `enrollment` can be used at `now`, and if not, why (the same verdicts apply
/// gives, so the controller can refuse before signing anything).
pub fn check(enrollment: &Value, method: &str, now: UnixMs) -> Result<(), DomainError> {
    if str_of(enrollment, "method") != method {
        return Err(DomainError::InvalidEnrollment(format!(
            "the token is for enrollment method {:?}, not {method:?}",
            str_of(enrollment, "method")
        )));
    }
    if let Some(at) = enrollment.get("completedAt").and_then(Value::as_str) {
        return Err(DomainError::AlreadyEnrolled(at.to_owned()));
    }
    let exp = enrollment
        .get("expiresAtMs")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if now >= exp {
        return Err(DomainError::EnrollmentExpired(
            str_of(enrollment, "expiresAt").to_owned(),
        ));
    }
    Ok(())
}

/// `record` (an identity or edge router, already [`EntityKind::public`]) with its open
/// enrollment shown the way OpenZiti shows it: an identity's `enrollment.ott` (id, token,
/// jwt, expiresAt); an edge router's `enrollmentJwt`, `enrollmentToken`,
/// `enrollmentExpiresAt` (null once enrolled), `isVerified` and `fingerprint` (null until
/// enrolled). An enrollment shows every field, null when not set. Other kinds: unchanged.
pub fn present(
    st: &dyn StateRead,
    kind: EntityKind,
    mut record: Value,
) -> Result<Value, StorageFault> {
    let id = str_of(&record, "id").to_owned();
    let Some(obj) = record.as_object_mut() else {
        return Ok(record);
    };
    match kind {
        EntityKind::Identity => {
            let mut enrollment = Map::new();
            if let Some(e) = open(st, "ott", &id)? {
                enrollment.insert(
                    "ott".into(),
                    json!({
                        "id": e["id"],
                        "token": e["token"],
                        "jwt": e["jwt"],
                        "expiresAt": e["expiresAt"],
                    }),
                );
            }
            obj.insert("enrollment".into(), Value::Object(enrollment));
        }
        EntityKind::EdgeRouter => {
            let e = open(st, "erott", &id)?.unwrap_or(Value::Null);
            obj.insert("enrollmentJwt".into(), e["jwt"].clone());
            obj.insert("enrollmentToken".into(), e["token"].clone());
            obj.insert("enrollmentExpiresAt".into(), e["expiresAt"].clone());
            obj.entry("isVerified").or_insert(Value::Bool(false));
            obj.entry("fingerprint").or_insert(Value::Null);
        }
        EntityKind::Enrollment => {
            for k in [
                "identityId",
                "edgeRouterId",
                "completedAt",
                "certFingerprint",
            ] {
                obj.entry(k).or_insert(Value::Null);
            }
        }
        _ => {}
    }
    Ok(record)
}

/// Applies an enroll command; the outcome is the completed enrollment.
pub(crate) fn apply(
    st: &mut dyn StateWrite,
    cmd: &Enroll,
) -> Result<Result<Value, DomainError>, StorageFault> {
    let Some(enrollment) = entity::get(st, EntityKind::Enrollment, &cmd.enrollment_id)? else {
        return Ok(Err(DomainError::InvalidEnrollment(
            "no such enrollment (deleted?)".into(),
        )));
    };
    if str_of(&enrollment, "token") != cmd.token {
        return Ok(Err(DomainError::InvalidEnrollment("token mismatch".into())));
    }
    let method = str_of(&enrollment, "method").to_owned();
    if let Err(e) = check(&enrollment, &method, cmd.at) {
        return Ok(Err(e));
    }
    if !entity::is_fingerprint(&cmd.fingerprint) {
        return Ok(Err(DomainError::InvalidField {
            field: "fingerprint".into(),
            reason: "must be 64 lowercase hex digits".into(),
        }));
    }
    let at = rfc3339(cmd.at);
    let done = match method.as_str() {
        "ott" => {
            let authenticator = json!({
                "id": cmd.authenticator_id,
                "name": cmd.fingerprint,
                "method": "cert",
                "identityId": str_of(&enrollment, "identityId"),
                "certFingerprint": cmd.fingerprint,
                "certPem": cmd.cert_pem,
                "tags": {},
                "createdAt": at,
                "updatedAt": at,
            });
            entity::create(st, EntityKind::Authenticator, &authenticator)?
        }
        _ => {
            let mut patch = Map::new();
            patch.insert("isVerified".into(), Value::Bool(true));
            patch.insert("fingerprint".into(), Value::String(cmd.fingerprint.clone()));
            let router = str_of(&enrollment, "edgeRouterId").to_owned();
            entity::update(st, EntityKind::EdgeRouter, &router, &patch, &at, None)?
        }
    };
    if let Err(e) = done {
        return Ok(Err(e));
    }
    let mut patch = Map::new();
    patch.insert("name".into(), Value::String(used_name(&cmd.token)));
    patch.insert("completedAt".into(), Value::String(at.clone()));
    patch.insert(
        "certFingerprint".into(),
        Value::String(cmd.fingerprint.clone()),
    );
    entity::update(
        st,
        EntityKind::Enrollment,
        &cmd.enrollment_id,
        &patch,
        &at,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use crate::{apply as apply_cmd, Command, Outcome};

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn create(st: &mut MemState, kind: EntityKind, record: Value) {
        let r = apply_cmd(st, &Command::Create { kind, record }).unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    fn setup(method: &str, expires_ms: i64) -> MemState {
        let mut st = MemState::default();
        let t = rfc3339(0);
        create(
            &mut st,
            EntityKind::Identity,
            json!({"id":"i1","name":"alice","type":"User","isAdmin":false,"roleAttributes":[],"tags":{},"createdAt":t,"updatedAt":t}),
        );
        create(
            &mut st,
            EntityKind::EdgeRouter,
            json!({"id":"r1","name":"er1","roleAttributes":[],"isTunnelerEnabled":false,"isVerified":false,"tags":{},"createdAt":t,"updatedAt":t}),
        );
        let target = if method == "ott" {
            ("identityId", "i1")
        } else {
            ("edgeRouterId", "r1")
        };
        let target_id = target.1;
        let mut e = json!({"id":"e1","name":open_name(method, target_id),"method":method,"token":"tok-0123456789abcdef","jwt":"x.y.z",
            "expiresAt":rfc3339(expires_ms),"expiresAtMs":expires_ms,"tags":{},"createdAt":t,"updatedAt":t});
        e[target.0] = json!(target.1);
        create(&mut st, EntityKind::Enrollment, e);
        st
    }

    fn enroll(st: &mut MemState, token: &str, at: i64) -> Result<Outcome, DomainError> {
        apply_cmd(
            st,
            &Command::Enroll(Enroll {
                enrollment_id: "e1".into(),
                token: token.into(),
                fingerprint: FP.into(),
                cert_pem: "-----BEGIN CERTIFICATE-----".into(),
                authenticator_id: "a1".into(),
                at,
            }),
        )
        .unwrap()
    }

    #[test]
    fn ott_creates_a_cert_authenticator_once() {
        let mut st = setup("ott", 1000);
        enroll(&mut st, "tok-0123456789abcdef", 10).unwrap();
        let a = entity::get(&st, EntityKind::Authenticator, "a1")
            .unwrap()
            .unwrap();
        assert_eq!(a["method"], "cert");
        assert_eq!(a["identityId"], "i1");
        assert_eq!(
            entity::id_by_name(&st, EntityKind::Authenticator, FP)
                .unwrap()
                .as_deref(),
            Some("a1")
        );
        // The second use is told apart from a bad token.
        let used = find(&st, "ott", "i1", "tok-0123456789abcdef")
            .unwrap()
            .unwrap();
        assert!(used["completedAt"].is_string());
        assert!(open(&st, "ott", "i1").unwrap().is_none());
        assert!(matches!(
            enroll(&mut st, "tok-0123456789abcdef", 11),
            Err(DomainError::AlreadyEnrolled(_))
        ));
    }

    #[test]
    fn erott_verifies_the_router() {
        let mut st = setup("erott", 1000);
        let r = entity::get(&st, EntityKind::EdgeRouter, "r1")
            .unwrap()
            .unwrap();
        let shown = present(&st, EntityKind::EdgeRouter, r).unwrap();
        assert_eq!(shown["enrollmentJwt"], "x.y.z");
        assert_eq!(shown["isVerified"], false);
        enroll(&mut st, "tok-0123456789abcdef", 10).unwrap();
        let r = entity::get(&st, EntityKind::EdgeRouter, "r1")
            .unwrap()
            .unwrap();
        assert!(present(&st, EntityKind::EdgeRouter, r).unwrap()["enrollmentJwt"].is_null());
        let r = entity::get(&st, EntityKind::EdgeRouter, "r1")
            .unwrap()
            .unwrap();
        assert_eq!(r["isVerified"], true);
        assert_eq!(r["fingerprint"], FP);
        assert_eq!(r["version"], 2, "enrolling changed the router");
    }

    #[test]
    fn expired_and_wrong_tokens_are_refused_and_change_nothing() {
        let mut st = setup("ott", 1000);
        let before = st.clone();
        assert!(matches!(
            enroll(&mut st, "tok-0123456789abcdef", 1000),
            Err(DomainError::EnrollmentExpired(_))
        ));
        assert!(matches!(
            enroll(&mut st, "another-token-000000", 10),
            Err(DomainError::InvalidEnrollment(_))
        ));
        assert_eq!(st.map, before.map);
    }

    #[test]
    fn deleting_the_identity_deletes_its_enrollment() {
        let mut st = setup("ott", 1000);
        apply_cmd(
            &mut st,
            &Command::Delete {
                kind: EntityKind::Identity,
                id: "i1".into(),
                expected_version: None,
            },
        )
        .unwrap()
        .unwrap();
        assert!(entity::get(&st, EntityKind::Enrollment, "e1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn enrollment_must_name_an_existing_target() {
        let mut st = setup("ott", 1000);
        let t = rfc3339(0);
        let r = apply_cmd(
            &mut st,
            &Command::Create {
                kind: EntityKind::Enrollment,
                record: json!({"id":"e2","name":"ott:nobody","method":"ott","identityId":"nobody","token":"tok-0123456789abcdeX","jwt":"x",
                    "expiresAt":t,"expiresAtMs":5,"tags":{},"createdAt":t,"updatedAt":t}),
            },
        )
        .unwrap();
        assert!(matches!(r, Err(DomainError::InvalidField { field, .. }) if field == "identityId"));
    }
}
