//! Raft glue for the controller cluster: openraft's type configuration, the durable
//! log and state machine on `weft-store`, the peer network (with a fault-injection hook
//! for tests), the quorum view built from each node's own probes, forwarding of writes to
//! the leader with read-your-writes, and membership operations.
//!
//! Nothing outside this crate sees openraft types: the controller talks to [`Node`] and
//! gets [`ClusterError`]s that say which row of the status table applies.
#![forbid(unsafe_code)]

pub mod error;
pub mod faults;
pub mod log_writer;
pub mod node;
pub mod peer;
pub mod peer_stream;
pub mod storage;
pub mod types;

pub use error::ClusterError;
pub use faults::{Faults, RpcKind};
pub use node::{MemberView, Node, NodeConfig, NodeStatus, PeerServeError, Timing};
pub use peer::PeerClient;
pub use storage::StateDigest;
pub use types::NodeId;
pub use weft_store::{StateView, Store};
