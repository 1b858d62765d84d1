//! The entity kinds `weft edge` knows: the words that name them on the command line,
//! their collection under `/edge/management/v1`, the columns of their table, and which
//! fields `weft edge update` flags may set.

use crate::output::{col, Column};

/// Management API base path.
pub const MGMT: &str = "/edge/management/v1";

/// One entity kind of the management API.
#[derive(Debug)]
pub struct Kind {
    /// The singular word (`service-policy`); also what messages call it.
    pub singular: &'static str,
    /// The collection, which is also the plural word (`service-policies`).
    pub collection: &'static str,
    /// Whether records have a unique `name` a user may type instead of the id.
    pub named: bool,
    /// The columns of `weft edge list`.
    pub columns: &'static [Column],
    /// The fields a PATCH accepts (besides `tags`); `None`: no PATCH route.
    pub patch_fields: Option<&'static [&'static str]>,
}

impl Kind {
    /// `/edge/management/v1/<collection>`.
    pub fn path(&self) -> String {
        format!("{MGMT}/{}", self.collection)
    }

    /// `/edge/management/v1/<collection>/<id>`.
    pub fn item_path(&self, id: &str) -> String {
        format!("{MGMT}/{}/{id}", self.collection)
    }
}

/// Every kind, in the order `--help` lists them.
pub const KINDS: &[Kind] = &[
    Kind {
        singular: "service",
        collection: "services",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("ROLE ATTRIBUTES", "roleAttributes"),
            col("CONFIGS", "configs"),
            col("ENCRYPTION", "encryptionRequired"),
        ],
        patch_fields: Some(&[
            "name",
            "roleAttributes",
            "configs",
            "encryptionRequired",
            "terminatorStrategy",
        ]),
    },
    Kind {
        singular: "identity",
        collection: "identities",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("TYPE", "type"),
            col("ADMIN", "isAdmin"),
            col("ROLE ATTRIBUTES", "roleAttributes"),
            col("AUTH POLICY", "authPolicyId"),
        ],
        patch_fields: Some(&["name", "type", "isAdmin", "roleAttributes", "authPolicyId"]),
    },
    Kind {
        singular: "edge-router",
        collection: "edge-routers",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("VERIFIED", "isVerified"),
            col("TUNNELER", "isTunnelerEnabled"),
            col("ROLE ATTRIBUTES", "roleAttributes"),
        ],
        patch_fields: Some(&["name", "roleAttributes", "isTunnelerEnabled"]),
    },
    Kind {
        singular: "service-policy",
        collection: "service-policies",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("TYPE", "type"),
            col("SEMANTIC", "semantic"),
            col("IDENTITY ROLES", "identityRoles"),
            col("SERVICE ROLES", "serviceRoles"),
        ],
        patch_fields: Some(&["name", "type", "semantic", "identityRoles", "serviceRoles"]),
    },
    Kind {
        singular: "edge-router-policy",
        collection: "edge-router-policies",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("SEMANTIC", "semantic"),
            col("IDENTITY ROLES", "identityRoles"),
            col("EDGE ROUTER ROLES", "edgeRouterRoles"),
        ],
        patch_fields: Some(&["name", "semantic", "identityRoles", "edgeRouterRoles"]),
    },
    Kind {
        singular: "service-edge-router-policy",
        collection: "service-edge-router-policies",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("SEMANTIC", "semantic"),
            col("SERVICE ROLES", "serviceRoles"),
            col("EDGE ROUTER ROLES", "edgeRouterRoles"),
        ],
        patch_fields: Some(&["name", "semantic", "serviceRoles", "edgeRouterRoles"]),
    },
    Kind {
        singular: "config-type",
        collection: "config-types",
        named: true,
        columns: &[col("ID", "id"), col("NAME", "name")],
        patch_fields: Some(&["name", "schema"]),
    },
    Kind {
        singular: "config",
        collection: "configs",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("CONFIG TYPE", "configTypeId"),
        ],
        patch_fields: Some(&["name", "configTypeId", "data"]),
    },
    Kind {
        singular: "authenticator",
        collection: "authenticators",
        named: true,
        columns: &[
            col("ID", "id"),
            col("USERNAME", "name"),
            col("METHOD", "method"),
            col("IDENTITY", "identityId"),
        ],
        patch_fields: Some(&["username", "password"]),
    },
    Kind {
        singular: "enrollment",
        collection: "enrollments",
        named: false,
        columns: &[
            col("ID", "id"),
            col("METHOD", "method"),
            col("IDENTITY", "identityId"),
            col("EDGE ROUTER", "edgeRouterId"),
            col("EXPIRES", "expiresAt"),
            col("COMPLETED", "completedAt"),
        ],
        patch_fields: Some(&[]),
    },
    Kind {
        singular: "auth-policy",
        collection: "auth-policies",
        named: true,
        columns: &[
            col("ID", "id"),
            col("NAME", "name"),
            col("CERT", "primary.cert.allowed"),
            col("UPDB", "primary.updb.allowed"),
        ],
        patch_fields: Some(&["name", "primary"]),
    },
    Kind {
        singular: "api-session",
        collection: "api-sessions",
        named: false,
        columns: &[
            col("ID", "id"),
            col("IDENTITY", "identityId"),
            col("ADMIN", "isAdmin"),
            col("CREATED", "createdAt"),
            col("EXPIRES", "expiresAt"),
        ],
        patch_fields: None,
    },
];

/// The kind a word names: singular or plural, with `-`, `_` or nothing between words,
/// any case (`service-policy`, `service_policies`, `ServicePolicies`).
pub fn find(word: &str) -> Option<&'static Kind> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = squash(word);
    KINDS
        .iter()
        .find(|k| squash(k.singular) == w || squash(k.collection) == w)
}

/// The words `find` accepts, for error messages.
pub fn names() -> String {
    KINDS
        .iter()
        .map(|k| k.collection)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_find_their_kind() {
        let f = |w: &str| find(w).map(|k| k.collection);
        assert_eq!(f("service"), Some("services"));
        assert_eq!(f("services"), Some("services"));
        assert_eq!(f("identity"), Some("identities"));
        assert_eq!(f("Edge-Routers"), Some("edge-routers"));
        assert_eq!(
            f("service_edge_router_policy"),
            Some("service-edge-router-policies")
        );
        assert_eq!(f("ServicePolicies"), Some("service-policies"));
        assert_eq!(f("api-sessions"), Some("api-sessions"));
        assert_eq!(f("widgets"), None);
    }

    #[test]
    fn every_kind_has_id_first_and_distinct_words() {
        for k in KINDS {
            assert_eq!(k.columns[0].path, "id", "{}", k.singular);
            assert_eq!(find(k.singular).map(|x| x.collection), Some(k.collection));
        }
    }
}
