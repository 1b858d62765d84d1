//! REST request and response bodies. Request bodies reject unknown fields so that a typo
//! is a 400 instead of a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Free-form tags on an entity.
pub type Tags = BTreeMap<String, serde_json::Value>;

/// A service as the management API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub id: String,
    pub name: String,
    pub role_attributes: Vec<String>,
    pub tags: Tags,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /edge/management/v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceCreate {
    pub name: String,
    #[serde(default)]
    pub role_attributes: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

/// `PATCH /edge/management/v1/services/{id}`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_attributes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// Answer of a create: the new entity's id (OpenZiti style), plus the entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created<T> {
    pub id: String,
    #[serde(flatten)]
    pub entity: T,
}

/// `POST /edge/client/v1/authenticate?method=password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordLogin {
    pub username: String,
    pub password: String,
}

/// An API session (the answer of authenticate, refresh and `current-api-session`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSession {
    pub id: String,
    pub token: String,
    pub expires_at: String,
    pub identity: String,
    pub is_admin: bool,
}

/// One member of the controller cluster (`GET /fabric/v1/cluster/list-members`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub id: String,
    pub address: String,
    pub voter: bool,
    pub leader: bool,
    pub connected: bool,
    pub last_contact_ms: Option<u64>,
    pub applied_index: Option<u64>,
}

/// `POST /fabric/v1/cluster/add-member`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    pub address: String,
    #[serde(default = "default_true")]
    pub is_voter: bool,
}

fn default_true() -> bool {
    true
}

/// `POST /fabric/v1/cluster/remove-member`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveMember {
    pub id: String,
}

/// `POST /fabric/v1/cluster/transfer-leadership`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferLeadership {
    #[serde(default)]
    pub new_leader_id: Option<String>,
}

/// Answer of transfer-leadership: the leader now in office.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInOffice {
    pub leader_id: String,
}

/// `POST /fabric/v1/cluster/join-token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub token: String,
    pub expires_at: String,
}

/// `GET /health-checks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub node_id: String,
    pub role: String,
    pub leader_id: Option<String>,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub in_quorum: bool,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub build_date: Option<String>,
    pub api_versions: BTreeMap<String, BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rejects_unknown_fields() {
        let err = serde_json::from_str::<ServiceCreate>(r#"{"name":"a","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn patch_accepts_partial_bodies() {
        let p: ServicePatch = serde_json::from_str(r#"{"tags":{"k":"v"}}"#).unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.tags.unwrap()["k"], "v");
    }
}
