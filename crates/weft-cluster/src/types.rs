//! The openraft type configuration. Nothing outside `weft-cluster` sees these types.

use std::io::Cursor;

use weft_model::{Command, DomainError, Outcome};

/// What applying one entry produced: the user's error is a result, not a fault.
pub type ApplyResult = Result<Outcome, DomainError>;

/// Node ids are random `u64`s chosen when a data directory is first initialised.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// weft's raft types: commands of `weft-model`, nodes addressed by their API URL.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Snapshot payload: the serialized state table (see `weft_store::Store::export_state`).
pub type SnapshotData = Cursor<Vec<u8>>;

pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
pub type Entry = openraft::Entry<
    <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as openraft::vote::RaftLeaderId>::Committed,
    openraft::EntryPayload<Command, u64, openraft::BasicNode>,
>;
