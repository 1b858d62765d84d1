//! [`ClusterError`]: why a cluster operation did not happen, in terms of the status
//! table (the controller maps each variant to exactly one status and code). It is
//! serializable because a leader sends it back to the follower that forwarded a request.

use serde::{Deserialize, Serialize};
use weft_model::DomainError;

/// The failure of a write, a linearizable read or a membership operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// No leader while this node can reach a quorum (an election is running).
    #[error("the cluster has no leader; an election is in progress")]
    NoLeader,
    /// This node cannot reach a quorum of voters (partitioned, removed, not joined).
    #[error("this controller cannot reach a quorum of the cluster")]
    NotInQuorum {
        /// API URLs of the other members this node knows, so clients can go there.
        controllers: Vec<String>,
    },
    /// Forwarding or applying took longer than the configured limit. The operation may
    /// or may not have happened.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The leader's write queue is full.
    #[error("the leader's write queue is full")]
    TooManyRequests,
    /// The state machine refused the command (the user's error).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The membership change makes no sense (unknown member, removing the last voter...).
    #[error("invalid membership change: {0}")]
    InvalidMembership(String),
    /// A fault of this node (storage, raft core stopped): a bug or a broken disk.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<weft_store::StoreError> for ClusterError {
    fn from(e: weft_store::StoreError) -> Self {
        ClusterError::Internal(format!("storage: {e}"))
    }
}

impl From<weft_model::StorageFault> for ClusterError {
    fn from(e: weft_model::StorageFault) -> Self {
        ClusterError::Internal(e.to_string())
    }
}
