//! Feeds a JSON body, as a client sends it, to everything that decodes one:
//! `weft_controller::http::parse_json` into every REST request model of `weft_api::models`
//! and of the cluster API (create and patch bodies, logins, enrollment, cluster
//! membership, joins), `EntityKind::validate` of every kind (the domain check that every
//! record passes before it is written, including a config type's schema and a config's
//! data against it), and the SDK's identity-file parser (`IdentityFile::parse`, what
//! `weft enroll` writes and every later login reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use weft_api::models as m;
use weft_controller::cluster_api::{JoinCertificate, JoinCertificateRequest, JoinRequest};
use weft_controller::http::parse_json;
use weft_model::EntityKind;

fn body<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = parse_json::<T>(bytes, false);
}

fn bodies(bytes: &[u8]) {
    body::<m::ServiceCreate>(bytes);
    body::<m::ServicePatch>(bytes);
    body::<m::IdentityCreate>(bytes);
    body::<m::IdentityPatch>(bytes);
    body::<m::AuthPolicyCreate>(bytes);
    body::<m::AuthPolicyPatch>(bytes);
    body::<m::EdgeRouterCreate>(bytes);
    body::<m::EdgeRouterPatch>(bytes);
    body::<m::ConfigTypeCreate>(bytes);
    body::<m::ConfigTypePatch>(bytes);
    body::<m::ConfigCreate>(bytes);
    body::<m::ConfigPatch>(bytes);
    body::<m::ServicePolicyCreate>(bytes);
    body::<m::ServicePolicyPatch>(bytes);
    body::<m::EdgeRouterPolicyCreate>(bytes);
    body::<m::EdgeRouterPolicyPatch>(bytes);
    body::<m::ServiceEdgeRouterPolicyCreate>(bytes);
    body::<m::ServiceEdgeRouterPolicyPatch>(bytes);
    body::<m::AuthenticatorCreate>(bytes);
    body::<m::AuthenticatorPatch>(bytes);
    body::<m::EnrollmentCreate>(bytes);
    body::<m::EnrollmentPatch>(bytes);
    body::<m::EnrollRequest>(bytes);
    body::<m::PasswordLogin>(bytes);
    body::<m::AddMember>(bytes);
    body::<m::RemoveMember>(bytes);
    body::<m::TransferLeadership>(bytes);
    body::<JoinCertificateRequest>(bytes);
    body::<JoinRequest>(bytes);
    body::<JoinCertificate>(bytes);
    let _ = parse_json::<m::TransferLeadership>(bytes, true);
}

fuzz_target!(|data: &[u8]| {
    bodies(data);
    if let Ok(record) = serde_json::from_slice::<serde_json::Value>(data) {
        for kind in EntityKind::ALL {
            let _ = kind.validate(&record);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = weft_sdk::IdentityFile::parse(text);
    }
});
