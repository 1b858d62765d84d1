//! Fault injection for peer traffic. Every outgoing peer RPC asks [`Faults::check`]
//! first, so tests can drop, delay or partition traffic between nodes of one process, by
//! kind of RPC (for example: block votes while probes pass, to hold a cluster leaderless
//! while every node still reaches a quorum). In production the set is empty and the
//! check is one uncontended lock.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

use crate::types::NodeId;

/// The kinds of peer RPC, so faults can target some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    Append,
    Vote,
    Snapshot,
    TransferLeader,
    /// Quorum-view probes (not raft traffic).
    Probe,
    /// Requests sent to the leader on behalf of a client (writes, read index, membership).
    Leader,
}

impl RpcKind {
    /// Every kind.
    pub const ALL: [RpcKind; 6] = [
        RpcKind::Append,
        RpcKind::Vote,
        RpcKind::Snapshot,
        RpcKind::TransferLeader,
        RpcKind::Probe,
        RpcKind::Leader,
    ];

    /// The path segment under `/fabric/v1/peer/`.
    pub fn path(self) -> &'static str {
        match self {
            RpcKind::Append => "append",
            RpcKind::Vote => "vote",
            RpcKind::Snapshot => "snapshot",
            RpcKind::TransferLeader => "transfer-leader",
            RpcKind::Probe => "probe",
            RpcKind::Leader => "leader",
        }
    }
}

/// What to do with one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, after this delay.
    Pass(Option<Duration>),
    /// Lose it (the caller sees it as unreachable).
    Drop,
}

#[derive(Debug, Default)]
struct State {
    isolated: HashSet<NodeId>,
    cut: HashSet<(NodeId, NodeId)>,
    blocked_kinds: HashSet<RpcKind>,
    delay: Option<Duration>,
    drop_per_mille: u32,
}

/// A shared, mutable set of network faults (one per test cluster).
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Cut every link to and from `node`.
    pub fn isolate(&self, node: NodeId) {
        self.with(|s| s.isolated.insert(node));
    }

    /// Cut the links between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.with(|s| {
            s.cut.insert((a, b));
            s.cut.insert((b, a));
        });
    }

    /// Drop every RPC of this kind, between every pair of nodes.
    pub fn block_kind(&self, kind: RpcKind) {
        self.with(|s| s.blocked_kinds.insert(kind));
    }

    /// Delay every RPC by `d` (None: no delay).
    pub fn set_delay(&self, d: Option<Duration>) {
        self.with(|s| s.delay = d);
    }

    /// Drop this share of RPCs at random (per mille, 0 to 1000).
    pub fn set_drop_per_mille(&self, p: u32) {
        self.with(|s| s.drop_per_mille = p.min(1000));
    }

    /// Remove every fault.
    pub fn heal(&self) {
        self.with(|s| *s = State::default());
    }

    /// The verdict for one RPC from `from` to `to`.
    pub fn check(&self, from: NodeId, to: NodeId, kind: RpcKind) -> Verdict {
        self.with(|s| {
            if s.isolated.contains(&from)
                || s.isolated.contains(&to)
                || s.cut.contains(&(from, to))
                || s.blocked_kinds.contains(&kind)
                || (s.drop_per_mille > 0
                    && rand::thread_rng().gen_range(0..1000) < s.drop_per_mille)
            {
                Verdict::Drop
            } else {
                Verdict::Pass(s.delay)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_cuts_both_directions_and_heals() {
        let f = Faults::default();
        f.isolate(2);
        assert_eq!(f.check(1, 2, RpcKind::Append), Verdict::Drop);
        assert_eq!(f.check(2, 3, RpcKind::Probe), Verdict::Drop);
        assert_eq!(f.check(1, 3, RpcKind::Append), Verdict::Pass(None));
        f.heal();
        assert_eq!(f.check(1, 2, RpcKind::Append), Verdict::Pass(None));
    }

    #[test]
    fn kinds_can_be_blocked_alone() {
        let f = Faults::default();
        f.block_kind(RpcKind::Vote);
        assert_eq!(f.check(1, 2, RpcKind::Vote), Verdict::Drop);
        assert_eq!(f.check(1, 2, RpcKind::Probe), Verdict::Pass(None));
    }

    #[test]
    fn cut_is_symmetric() {
        let f = Faults::default();
        f.cut(1, 2);
        assert_eq!(f.check(2, 1, RpcKind::Vote), Verdict::Drop);
        assert_eq!(f.check(1, 3, RpcKind::Vote), Verdict::Pass(None));
    }
}
