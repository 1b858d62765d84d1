//! The response envelopes: `{"data", "meta"}` on success, `{"error", "meta"}` on failure.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// A successful response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default)]
    pub meta: Meta,
}

impl<T> Envelope<T> {
    /// A response with empty `meta`.
    pub fn new(data: T) -> Self {
        Envelope {
            data,
            meta: Meta::default(),
        }
    }
}

/// Response metadata. Lists carry `pagination`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pagination: Option<Pagination>,
}

/// Paging of a list response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub limit: u32,
    pub offset: u64,
    pub total_count: u64,
}

/// A failed response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    #[serde(default)]
    pub meta: Meta,
}

/// The `error` object. `data` carries machine-readable details, such as the other
/// controllers' URLs for `CONTROLLER_NOT_IN_QUORUM`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<String>,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<serde_json::Value>,
}
