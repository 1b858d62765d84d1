//! A linearizability checker: given a history of concurrent operations (each with its
//! invocation instant, and its completion instant and output if it completed) and a
//! sequential model of the object, it decides whether some total order of the operations
//! (a) respects real time: an operation that completed before another was invoked comes
//! first, and (b) is a valid run of the model producing every observed output.
//!
//! The algorithm is Wing and Gong's depth-first search, with Lowe's memoization of
//! `(set of operations linearized, model state)` (the set as a 128-bit Zobrist hash),
//! as in porcupine and knossos: events
//! (invocations and completions, by time) form a linked list; the search linearizes one
//! pending operation at a time, lifting its two events out of the list, and backtracks
//! when it reaches a completion whose operation could not be linearized before it.
//!
//! Histories are checked per key (P-compositionality: a history is linearizable if and
//! only if its restriction to each independent object is), which keeps each search small.
//!
//! **Indeterminate operations** (the client gave up: a timeout, a dropped connection)
//! have no completion: they may have taken effect at any moment after their invocation,
//! even after the client stopped waiting, or never. They are given a completion at
//! infinity and an unknown output, which the model accepts whatever it would have
//! produced; linearizing one after everything else is the same as "never happened".
//! Indeterminate operations that change nothing ([`Model::is_read_only`]) are left out.
//!
//! **Counter-examples.** When a key's history is not linearizable, the report is made
//! small and readable: the history is cut at the earliest completion instant `T` such
//! that everything known at `T` is already not linearizable (operations invoked by `T`;
//! those still running at `T` become indeterminate; later ones are left out: this cut is
//! monotone, so a binary search finds it), then read-only operations are dropped one by
//! one while the rest stays non-linearizable. Both reductions are sound: if the full
//! history were linearizable, so would be every such reduced one. The operation whose
//! completion is `T` is named as the one that failed.
//!
//! Every search has a step budget; a search that exhausts it reports
//! [`Verdict::Unknown`] instead of running for hours (callers treat it as a failure).

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;

/// A sequential specification of an object: its initial state and how each operation
/// changes it and what it returns.
pub trait Model {
    /// The object's state (kept in the search's memo table, so cheap to hash and clone).
    type State: Clone + Eq + Hash + Debug;
    /// What a caller asked (read, write x, compare-and-set...).
    type Input: Debug;
    /// What the object answered.
    type Output: Debug;

    /// The state before the first operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`: the state after it if the operation, run alone on
    /// `state`, would answer `output`, else `None`. An unknown output (`None`: the
    /// operation is indeterminate) must be accepted (`Some`), whatever the operation
    /// would answer: the checker relies on it to place indeterminate operations last.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether this operation never changes any state (a read, a refused
    /// compare-and-set), whatever the state. Such operations can be left out of a
    /// counter-example, and indeterminate ones out of the search. Default: no.
    fn is_read_only(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// A state standing for any state (over-approximating: every operation that some
    /// state would accept is accepted from it), if the model has one. It lets a
    /// counter-example start after a quiescent instant instead of at the beginning.
    /// Default: none.
    fn unknown(&self) -> Option<Self::State> {
        None
    }

    /// A measure of progress that no operation decreases (a version, a counter), if the
    /// model has one: the search then abandons a branch as soon as the state has gone
    /// past what some operation still to be placed needs ([`Model::rank_bound`]), instead
    /// of trying every order of the indeterminate operations first. Default: none.
    fn rank(&self, _state: &Self::State) -> Option<u64> {
        None
    }

    /// The highest [`Model::rank`] of a state this completed operation can be applied
    /// to, if bounded. Default: none.
    fn rank_bound(&self, _input: &Self::Input, _output: &Self::Output) -> Option<u64> {
        None
    }
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation<K, I, O> {
    /// The object it acted on (histories are checked per key).
    pub key: K,
    /// Who ran it (only shown in reports).
    pub client: usize,
    /// What was asked.
    pub input: I,
    /// When it was invoked, in nanoseconds from any origin common to the whole history.
    pub call: u64,
    /// When it completed and what it answered; `None` if the outcome is unknown (the
    /// operation may take effect at any time after `call`, or never).
    pub completed: Option<(u64, O)>,
}

impl<K, I, O> Operation<K, I, O> {
    /// The completion instant, or `u64::MAX` for an indeterminate operation.
    fn ret(&self) -> u64 {
        self.completed.as_ref().map_or(u64::MAX, |(t, _)| *t)
    }

    fn output(&self) -> Option<&O> {
        self.completed.as_ref().map(|(_, o)| o)
    }
}

/// An operation of a history of model `M`'s objects.
pub type ModelOp<K, M> = Operation<K, <M as Model>::Input, <M as Model>::Output>;

/// The outcome of checking one key's history.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Some order of the operations is a valid sequential run.
    Linearizable,
    /// None is; the counter-example shows a small set of operations that already
    /// cannot be ordered.
    NotLinearizable(CounterExample),
    /// The search ran out of its step budget before deciding.
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

/// A small non-linearizable sub-history of one key, rendered for people.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterExample {
    /// Indices (into the key's operations as given to the checker) of the operations in
    /// the counter-example, in invocation order.
    pub ops: Vec<usize>,
    /// The operation whose completion made the history non-linearizable (index into
    /// the key's operations).
    pub failing: usize,
    /// The operations, one per line, with their times (milliseconds from the history's
    /// origin, so they can be matched with other logs of the run).
    pub text: String,
}

impl fmt::Display for CounterExample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyReport<K> {
    /// The key.
    pub key: K,
    /// Operations of this key in the history (indeterminate read-only ones included).
    pub operations: usize,
    /// Of which indeterminate.
    pub indeterminate: usize,
    /// The verdict.
    pub verdict: Verdict,
}

/// Default step budget of one search: far more than a sane history of a few thousand
/// operations per key needs (each step is a model call and a hash lookup), small enough
/// that a pathological one ends in a few minutes at worst.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Checks a history per key with [`DEFAULT_BUDGET`]; `model` gives each key's model
/// (its initial state may differ per key). Reports come in key order.
pub fn check<K, M>(
    history: &[Operation<K, M::Input, M::Output>],
    model: impl Fn(&K) -> M,
) -> Vec<KeyReport<K>>
where
    K: Ord + Clone + Debug,
    M: Model,
{
    check_with_budget(history, model, DEFAULT_BUDGET)
}

/// [`check`] with an explicit step budget per search.
pub fn check_with_budget<K, M>(
    history: &[Operation<K, M::Input, M::Output>],
    model: impl Fn(&K) -> M,
    budget: u64,
) -> Vec<KeyReport<K>>
where
    K: Ord + Clone + Debug,
    M: Model,
{
    let mut by_key: BTreeMap<&K, Vec<&ModelOp<K, M>>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| {
            let m = model(key);
            KeyReport {
                key: key.clone(),
                operations: ops.len(),
                indeterminate: ops.iter().filter(|o| o.completed.is_none()).count(),
                verdict: check_key(&m, &ops, budget),
            }
        })
        .collect()
}

/// One operation as the search sees it.
struct Op<'a, I, O> {
    /// What was asked.
    input: &'a I,
    /// What was answered; `None`: indeterminate.
    output: Option<&'a O>,
    /// Invocation instant.
    call: u64,
    /// Completion instant (`u64::MAX` if indeterminate).
    ret: u64,
}

/// One operation of a sub-history, with its index in the key's operations.
type Sub<'a, I, O> = Vec<(usize, Op<'a, I, O>)>;

/// Checks the operations of one key.
fn check_key<K, M: Model>(
    model: &M,
    ops: &[&Operation<K, M::Input, M::Output>],
    budget: u64,
) -> Verdict {
    // Indeterminate read-only operations change nothing and answer nothing: leave them out.
    let relevant: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].completed.is_some() || !model.is_read_only(&ops[i].input, None))
        .collect();
    let mut steps = 0u64;
    let init = model.init();
    let whole: Vec<Op<'_, M::Input, M::Output>> = relevant
        .iter()
        .map(|&i| Op {
            input: &ops[i].input,
            output: ops[i].output(),
            call: ops[i].call,
            ret: ops[i].ret(),
        })
        .collect();
    match search(model, &init, &whole, budget, &mut steps) {
        Some(true) => return Verdict::Linearizable,
        Some(false) => {}
        None => return Verdict::Unknown { steps },
    }

    // The sub-history known at instant `t` (see the module doc), without the operations
    // completed before the quiescent instant `from` (if any) and without `dropped` ones.
    let sub =
        |t: u64, from: Option<u64>, dropped: &HashSet<usize>| -> Sub<'_, M::Input, M::Output> {
            relevant
                .iter()
                .copied()
                .filter(|&i| ops[i].call <= t && !dropped.contains(&i))
                .filter_map(|i| {
                    let o = &ops[i];
                    let done = o.ret() <= t;
                    if let Some(w) = from {
                        if o.call < w && done {
                            return None;
                        }
                    }
                    let op = Op {
                        input: &o.input,
                        output: if done { o.output() } else { None },
                        call: o.call,
                        ret: if done { o.ret() } else { u64::MAX },
                    };
                    // A read-only operation still running at `t` tells nothing.
                    (op.output.is_some() || !model.is_read_only(&o.input, None)).then_some((i, op))
                })
                .collect()
        };
    let none = HashSet::new();
    let mut fails = |t: u64, from: Option<u64>, dropped: &HashSet<usize>| -> Option<bool> {
        let start = match from {
            Some(_) => model.unknown()?,
            None => init.clone(),
        };
        let s: Vec<_> = sub(t, from, dropped)
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        search(model, &start, &s, budget, &mut steps).map(|ok| !ok)
    };

    // 1. The earliest cut that fails. Invariant: the cut at ends[hi] fails (the last one
    // is the whole history but for indeterminate operations invoked after the last
    // completion, which can be linearized last, as if they never happened).
    let mut ends: Vec<u64> = relevant
        .iter()
        .filter_map(|&i| ops[i].completed.as_ref().map(|(t, _)| *t))
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let (mut lo, mut hi) = (0usize, ends.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match fails(ends[mid], None, &none) {
            Some(true) => hi = mid,
            Some(false) => lo = mid + 1,
            None => return Verdict::Unknown { steps },
        }
    }
    let t = ends.get(hi).copied().unwrap_or(u64::MAX);
    let failing = relevant
        .iter()
        .copied()
        .filter(|&i| ops[i].ret() == t)
        .max_by_key(|&i| ops[i].call)
        .unwrap_or(0);

    // 2. Cut the past away: the latest quiescent instant `w` (no operation completed by
    // `t` is running at `w`) from which the rest, started in an unknown state, still
    // fails. Everything completed before `w` precedes everything invoked after it in any
    // linearization, so it only decided which state the rest starts in.
    let mut from = None;
    if model.unknown().is_some() {
        let cut = sub(t, None, &none);
        let mut spans: Vec<(u64, u64)> = cut
            .iter()
            .filter(|(_, op)| op.ret != u64::MAX)
            .map(|(_, op)| (op.call, op.ret))
            .collect();
        spans.sort_unstable();
        let mut quiescent = Vec::new();
        let mut reach: Option<u64> = None;
        for &(call, ret) in &spans {
            if reach.is_some_and(|r| r < call) && call <= ops[failing].call {
                quiescent.push(call);
            }
            reach = Some(reach.map_or(ret, |r| r.max(ret)));
        }
        for &w in quiescent.iter().rev().take(MAX_WINDOWS) {
            if fails(t, Some(w), &none) == Some(true) {
                from = Some(w);
                break;
            }
        }
    }

    // 3. Drop read-only operations one by one (latest first) while the rest still fails.
    let mut dropped: HashSet<usize> = HashSet::new();
    let mut candidates: Vec<usize> = sub(t, from, &none)
        .into_iter()
        .map(|(i, _)| i)
        .filter(|&i| {
            ops[i].completed.is_some() && model.is_read_only(&ops[i].input, ops[i].output())
        })
        .collect();
    candidates.sort_by_key(|&i| std::cmp::Reverse(ops[i].call));
    for i in candidates {
        dropped.insert(i);
        if fails(t, from, &dropped) != Some(true) {
            dropped.remove(&i);
        }
    }
    let mut kept: Vec<usize> = sub(t, from, &dropped).into_iter().map(|(i, _)| i).collect();
    kept.sort_by_key(|&i| (ops[i].call, i));
    let failing = if kept.contains(&failing) {
        failing
    } else {
        kept.iter()
            .copied()
            .filter(|&i| ops[i].ret() <= t)
            .max_by_key(|&i| ops[i].ret())
            .unwrap_or(failing)
    };
    let ms = |at: u64| at as f64 / 1e6;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "  starting from {}, these {} operations cannot be linearized \
         (times in ms from the history's origin):",
        if from.is_some() {
            "any state (older operations cut away)".to_owned()
        } else {
            format!("{init:?}")
        },
        kept.len()
    );
    for &i in &kept {
        let o = ops[i];
        let (end, out) = match &o.completed {
            Some((r, out)) if *r <= t => (format!("{:>10.3} ms", ms(*r)), format!("{out:?}")),
            Some(_) => ("  (running)  ".to_owned(), "? (completed later)".to_owned()),
            None => ("    (never)  ".to_owned(), "? (indeterminate)".to_owned()),
        };
        let _ = writeln!(
            text,
            "  {mark} op {i:<5} client {:<3} [{:>10.3} ms .. {end}]  {:?} -> {out}",
            o.client,
            ms(o.call),
            o.input,
            mark = if i == failing { "=>" } else { "  " },
        );
    }
    Verdict::NotLinearizable(CounterExample {
        ops: kept,
        failing,
        text,
    })
}

/// Most quiescent instants tried when cutting the past away from a counter-example.
const MAX_WINDOWS: usize = 64;

/// A 128-bit Zobrist key of operation `i`: the memo table keys a set of linearized
/// operations by the XOR of its members' keys, so a search step costs O(1) instead of
/// copying a bit set of the whole history (histories of long runs have tens of
/// thousands of operations per key). Two different sets share a key with probability
/// about 2^-128 per pair: negligible.
fn zobrist(i: usize) -> u128 {
    // splitmix64, twice.
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let seed = (i as u64)
        .wrapping_mul(2)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (u128::from(mix(seed)) << 64) | u128::from(mix(seed ^ 0xdead_beef_cafe_f00d))
}

/// Where the search looks for the next operation to linearize.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// A node of the list of events of completed operations.
    Main(usize),
    /// A position in the list of pending indeterminate operations, which may be
    /// linearized only if invoked by `boundary` (the first completion still ahead).
    Pending { pos: usize, boundary: u64 },
}

/// One choice made by the search, to undo when backtracking.
struct Choice<S> {
    /// The operation linearized.
    op: usize,
    /// The state before it.
    state: S,
    /// Where the scan resumes after undoing it.
    resume: Cursor,
}

/// Wing-Gong-Lowe search over `ops`: `Some(true)` if linearizable, `Some(false)` if not,
/// `None` if `budget` steps were not enough. `steps` accumulates across calls.
///
/// Completed operations form the classic event list (calls and completions by time).
/// Indeterminate ones sit in a list of their own, by invocation: at each point they are
/// tried after the completed candidates, among those invoked before the first completion
/// still ahead. The search succeeds once every completed operation is linearized: the
/// indeterminate ones left can go last, as if they never happened (a model accepts any
/// operation whose output is unknown). For the same reason an indeterminate operation
/// is never linearized where it would change nothing (it may as well never happen), nor
/// first from the unknown state (that state already stands for the one after it).
fn search<M: Model>(
    model: &M,
    init: &M::State,
    ops: &[Op<'_, M::Input, M::Output>],
    budget: u64,
    steps: &mut u64,
) -> Option<bool> {
    let n = ops.len();
    // Events of the completed operations: sorted by time, calls first at equal times
    // (touching intervals count as concurrent). Node 0 is the head sentinel, the last
    // node the tail; event e is node e + 1.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| op.output.is_some()) {
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let len = events.len() + 2;
    let tail = len - 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|k| k.saturating_sub(1)).collect();
    next[tail] = tail;
    let mut call_node = vec![0usize; n];
    let mut ret_node = vec![0usize; n];
    let mut node_op = vec![(0usize, false); len];
    for (e, &(_, is_ret, i)) in events.iter().enumerate() {
        let node = e + 1;
        node_op[node] = (i, is_ret);
        if is_ret {
            ret_node[i] = node;
        } else {
            call_node[i] = node;
        }
    }
    // The pending indeterminate operations, by invocation: position 0 is the head,
    // the last one the tail, operation `pending[p - 1]` is at position p.
    let mut pending: Vec<usize> = (0..n).filter(|&i| ops[i].output.is_none()).collect();
    pending.sort_by_key(|&i| (ops[i].call, i));
    let plen = pending.len() + 2;
    let ptail = plen - 1;
    let mut pnext: Vec<usize> = (1..=plen).collect();
    let mut pprev: Vec<usize> = (0..plen).map(|k| k.saturating_sub(1)).collect();
    pnext[ptail] = ptail;
    let mut pos_of = vec![0usize; n];
    for (k, &i) in pending.iter().enumerate() {
        pos_of[i] = k + 1;
    }
    let unlink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        let (p, q) = (prev[node], next[node]);
        next[p] = node;
        prev[q] = node;
    };

    // The rank bounds of the completed operations not linearized yet (bound -> count).
    let bound: Vec<Option<u64>> = ops
        .iter()
        .map(|op| op.output.and_then(|out| model.rank_bound(op.input, out)))
        .collect();
    let mut bounds: BTreeMap<u64, usize> = BTreeMap::new();
    let add = |bounds: &mut BTreeMap<u64, usize>, b: Option<u64>| {
        if let Some(b) = b {
            *bounds.entry(b).or_insert(0) += 1;
        }
    };
    let remove = |bounds: &mut BTreeMap<u64, usize>, b: Option<u64>| {
        if let Some(b) = b {
            if let Some(c) = bounds.get_mut(&b) {
                *c -= 1;
                if *c == 0 {
                    bounds.remove(&b);
                }
            }
        }
    };
    for &b in &bound {
        add(&mut bounds, b);
    }
    let unknown = model.unknown();
    let keys: Vec<u128> = (0..n).map(zobrist).collect();
    let mut cache: HashSet<(u128, M::State)> = HashSet::new();
    let mut linearized: u128 = 0;
    let mut state = init.clone();
    let mut stack: Vec<Choice<M::State>> = Vec::new();
    let mut cursor = Cursor::Main(next[0]);
    while next[0] != tail {
        *steps += 1;
        if *steps > budget {
            return None;
        }
        // The candidate at the cursor, and where to look next if it does not fit.
        let (i, onwards) = match cursor {
            Cursor::Main(node) => {
                let (i, is_ret) = node_op[node];
                if is_ret {
                    // No completed candidate fits before this completion: try the
                    // indeterminate operations invoked by then.
                    cursor = Cursor::Pending {
                        pos: pnext[0],
                        boundary: ops[i].ret,
                    };
                    continue;
                }
                (i, Cursor::Main(next[node]))
            }
            Cursor::Pending { pos, boundary } => {
                if pos == ptail || ops[pending[pos - 1]].call > boundary {
                    // Nothing fits here: undo the last choice.
                    let Some(c) = stack.pop() else {
                        return Some(false);
                    };
                    state = c.state;
                    add(&mut bounds, bound[c.op]);
                    linearized ^= keys[c.op];
                    if ops[c.op].output.is_some() {
                        relink(&mut next, &mut prev, ret_node[c.op]);
                        relink(&mut next, &mut prev, call_node[c.op]);
                    } else {
                        relink(&mut pnext, &mut pprev, pos_of[c.op]);
                    }
                    cursor = c.resume;
                    continue;
                }
                (
                    pending[pos - 1],
                    Cursor::Pending {
                        pos: pnext[pos],
                        boundary,
                    },
                )
            }
        };
        let op = &ops[i];
        let indeterminate = op.output.is_none();
        let fits = if indeterminate && unknown.as_ref() == Some(&state) {
            None
        } else {
            model
                .step(&state, op.input, op.output)
                .filter(|s| !indeterminate || *s != state)
        };
        if let Some(new_state) = fits {
            remove(&mut bounds, bound[i]);
            // Gone past what a remaining operation needs: a dead end.
            let dead = match (model.rank(&new_state), bounds.first_key_value()) {
                (Some(r), Some((&b, _))) => r > b,
                _ => false,
            };
            if !dead && cache.insert((linearized ^ keys[i], new_state.clone())) {
                linearized ^= keys[i];
                stack.push(Choice {
                    op: i,
                    state: std::mem::replace(&mut state, new_state),
                    resume: onwards,
                });
                if indeterminate {
                    unlink(&mut pnext, &mut pprev, pos_of[i]);
                } else {
                    unlink(&mut next, &mut prev, call_node[i]);
                    unlink(&mut next, &mut prev, ret_node[i]);
                }
                cursor = Cursor::Main(next[0]);
                continue;
            }
            add(&mut bounds, bound[i]);
        }
        cursor = onwards;
    }
    Some(true)
}

/// A register with a version, the model of one weft entity's field under the chaos
/// workload: every change sets the value and bumps the version by one; a
/// compare-and-set names the version it expects (`If-Match`) and is refused with the
/// current version when another one is there (412 `PRECONDITION_FAILED`).
#[derive(Debug, Clone)]
pub struct VersionedRegister {
    /// The value and version the entity had before the history began.
    pub initial: RegisterState,
}

/// The state of a [`VersionedRegister`]; a field is `None` where the checker does not
/// know it (see [`Model::unknown`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegisterState {
    /// The current value.
    pub value: Option<String>,
    /// The current version.
    pub version: Option<u64>,
}

impl RegisterState {
    /// A state with a known value and version.
    pub fn known(value: impl Into<String>, version: u64) -> RegisterState {
        RegisterState {
            value: Some(value.into()),
            version: Some(version),
        }
    }
}

impl Debug for RegisterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{v:?}")?,
            None => write!(f, "?")?,
        }
        match self.version {
            Some(v) => write!(f, " @v{v}"),
            None => write!(f, " @v?"),
        }
    }
}

/// What a caller asks a [`VersionedRegister`].
#[derive(Clone, PartialEq, Eq)]
pub enum RegisterInput {
    /// Read value and version.
    Read,
    /// Set the value unconditionally.
    Write(String),
    /// Set the value if the version is `expected`.
    Cas {
        /// The version the caller saw (`If-Match`).
        expected: u64,
        /// The new value.
        value: String,
    },
}

impl Debug for RegisterInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterInput::Read => write!(f, "read"),
            RegisterInput::Write(v) => write!(f, "write({v:?})"),
            RegisterInput::Cas { expected, value } => write!(f, "cas(if v{expected}, {value:?})"),
        }
    }
}

/// What a [`VersionedRegister`] answers.
#[derive(Clone, PartialEq, Eq)]
pub enum RegisterOutput {
    /// A read's value and version.
    Value {
        /// The value read.
        value: String,
        /// Its version.
        version: u64,
    },
    /// A write or compare-and-set took effect; the version it made.
    Done {
        /// The new version.
        version: u64,
    },
    /// A compare-and-set was refused; the version the register had.
    Refused {
        /// The current version (`error.data.version` of the 412).
        current: u64,
    },
}

impl Debug for RegisterOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOutput::Value { value, version } => write!(f, "{value:?} @v{version}"),
            RegisterOutput::Done { version } => write!(f, "ok @v{version}"),
            RegisterOutput::Refused { current } => write!(f, "412 (current v{current})"),
        }
    }
}

impl Model for VersionedRegister {
    type State = RegisterState;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> RegisterState {
        self.initial.clone()
    }

    fn step(
        &self,
        s: &RegisterState,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<RegisterState> {
        // Whether the current version is (or may be) `v`.
        let version_is = |v: u64| s.version.is_none_or(|cur| cur == v);
        let set = |value: &str, version: Option<u64>| RegisterState {
            value: Some(value.to_owned()),
            version,
        };
        let next = s.version.map(|v| v + 1);
        match (input, output) {
            (RegisterInput::Read, None) => Some(s.clone()),
            (RegisterInput::Read, Some(RegisterOutput::Value { value, version })) => {
                (s.value.as_ref().is_none_or(|cur| cur == value) && version_is(*version))
                    .then(|| RegisterState::known(value.clone(), *version))
            }
            (RegisterInput::Write(v), None) => Some(set(v, next)),
            (RegisterInput::Write(v), Some(RegisterOutput::Done { version })) => {
                (*version > 0 && version_is(version - 1)).then(|| set(v, Some(*version)))
            }
            (RegisterInput::Cas { expected, value }, None) => match s.version {
                Some(cur) if cur == *expected => Some(set(value, Some(cur + 1))),
                Some(_) => Some(s.clone()),
                // Unknown version: it may or may not have matched.
                None => Some(RegisterState {
                    value: None,
                    version: None,
                }),
            },
            (RegisterInput::Cas { expected, value }, Some(RegisterOutput::Done { version })) => {
                (*version == expected + 1 && version_is(*expected))
                    .then(|| set(value, Some(*version)))
            }
            (RegisterInput::Cas { expected, .. }, Some(RegisterOutput::Refused { current })) => {
                (current != expected && version_is(*current)).then(|| RegisterState {
                    value: s.value.clone(),
                    version: Some(*current),
                })
            }
            _ => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, _)
                | (
                    RegisterInput::Cas { .. },
                    Some(RegisterOutput::Refused { .. })
                )
        )
    }

    fn unknown(&self) -> Option<RegisterState> {
        Some(RegisterState {
            value: None,
            version: None,
        })
    }

    fn rank(&self, state: &RegisterState) -> Option<u64> {
        state.version
    }

    fn rank_bound(&self, input: &RegisterInput, output: &RegisterOutput) -> Option<u64> {
        match (input, output) {
            (_, RegisterOutput::Value { version, .. }) => Some(*version),
            (_, RegisterOutput::Done { version }) => Some(version.saturating_sub(1)),
            (_, RegisterOutput::Refused { current }) => Some(*current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    type RegOp = Operation<&'static str, RegisterInput, RegisterOutput>;

    fn reg(value: &str, version: u64) -> VersionedRegister {
        VersionedRegister {
            initial: RegisterState::known(value, version),
        }
    }

    fn op(
        client: usize,
        call: u64,
        ret: Option<u64>,
        input: RegisterInput,
        out: RegisterOutput,
    ) -> RegOp {
        Operation {
            key: "k",
            client,
            input,
            call,
            completed: ret.map(|r| (r, out)),
        }
    }

    fn read(client: usize, call: u64, ret: u64, value: &str, version: u64) -> RegOp {
        op(
            client,
            call,
            Some(ret),
            RegisterInput::Read,
            RegisterOutput::Value {
                value: value.into(),
                version,
            },
        )
    }

    fn write(client: usize, call: u64, ret: Option<u64>, value: &str, version: u64) -> RegOp {
        op(
            client,
            call,
            ret,
            RegisterInput::Write(value.into()),
            RegisterOutput::Done { version },
        )
    }

    fn cas(
        client: usize,
        call: u64,
        ret: Option<u64>,
        expected: u64,
        value: &str,
        out: RegisterOutput,
    ) -> RegOp {
        op(
            client,
            call,
            ret,
            RegisterInput::Cas {
                expected,
                value: value.into(),
            },
            out,
        )
    }

    fn verdict(history: &[RegOp]) -> Verdict {
        let reports = check(history, |_| reg("init", 1));
        assert_eq!(reports.len(), 1);
        reports[0].verdict.clone()
    }

    fn counter_example(history: &[RegOp]) -> CounterExample {
        match verdict(history) {
            Verdict::NotLinearizable(c) => c,
            other => panic!("expected a counter-example, got {other:?}"),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            read(0, 0, 1, "init", 1),
            write(0, 2, Some(3), "a", 2),
            read(1, 4, 5, "a", 2),
            cas(1, 6, Some(7), 2, "b", RegisterOutput::Done { version: 3 }),
            cas(
                0,
                8,
                Some(9),
                2,
                "c",
                RegisterOutput::Refused { current: 3 },
            ),
            read(0, 10, 11, "b", 3),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        // The write spans both reads: one sees the old value, the other the new, in
        // either order of invocation as long as the new one is not before the old.
        let h = vec![
            write(0, 0, Some(100), "a", 2),
            read(1, 10, 20, "a", 2),
            read(2, 30, 40, "a", 2),
            read(3, 5, 50, "init", 1),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            read(2, 0, 1, "init", 1),
            write(0, 10, Some(20), "a", 2),
            read(1, 30, 40, "init", 1),
            read(2, 50, 60, "a", 2),
        ];
        let c = counter_example(&h);
        // The cut ends with the stale read; the first read is not needed.
        assert_eq!(c.failing, 2, "{c}");
        assert_eq!(c.ops, vec![1, 2], "{c}");
        assert!(c.text.contains("=> op 2"), "{c}");
    }

    #[test]
    fn a_read_going_back_in_time_is_caught() {
        // Two reads concurrent with a write, in sequence: new then old.
        let h = vec![
            write(0, 0, Some(100), "a", 2),
            read(1, 10, 20, "a", 2),
            read(1, 30, 40, "init", 1),
        ];
        let c = counter_example(&h);
        assert_eq!(c.failing, 2, "{c}");
    }

    #[test]
    fn two_cas_on_the_same_version_cannot_both_succeed() {
        let h = vec![
            cas(0, 0, Some(50), 1, "a", RegisterOutput::Done { version: 2 }),
            cas(1, 10, Some(40), 1, "b", RegisterOutput::Done { version: 2 }),
        ];
        let c = counter_example(&h);
        assert_eq!(c.ops.len(), 2, "{c}");
    }

    #[test]
    fn a_refused_cas_must_name_the_version_of_the_moment() {
        // Refused with current v1 although the write to v2 completed before it began.
        let h = vec![
            write(0, 0, Some(10), "a", 2),
            cas(
                1,
                20,
                Some(30),
                5,
                "b",
                RegisterOutput::Refused { current: 1 },
            ),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
        // Concurrent with the write, it may have happened before it.
        let h = vec![
            write(0, 0, Some(40), "a", 2),
            cas(
                1,
                20,
                Some(30),
                5,
                "b",
                RegisterOutput::Refused { current: 1 },
            ),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        // Both writes acknowledged, then a read shows only the first: the second is lost.
        let h = vec![
            write(0, 0, Some(10), "a", 2),
            write(1, 20, Some(30), "b", 3),
            read(2, 40, 50, "a", 2),
        ];
        let c = counter_example(&h);
        assert_eq!(c.failing, 2, "{c}");
        // The first write is cut away: the second one alone rules the read out.
        assert_eq!(c.ops, vec![1, 2], "{c}");
    }

    #[test]
    fn versions_must_match_the_order_of_writes() {
        // Two acknowledged, sequential writes both claiming version 2.
        let h = vec![
            write(0, 0, Some(10), "a", 2),
            write(1, 20, Some(30), "b", 2),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_indeterminate_write_may_have_happened() {
        // The write timed out, but a later read sees it: it happened.
        let h = vec![write(0, 0, None, "a", 0), read(1, 100, 110, "a", 2)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_indeterminate_write_may_not_have_happened() {
        let h = vec![
            write(0, 0, None, "a", 0),
            read(1, 100, 110, "init", 1),
            write(1, 120, Some(130), "b", 2),
            read(1, 140, 150, "b", 2),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_after_its_client_gave_up() {
        // Invoked at 0, abandoned; other operations see it only much later.
        let h = vec![
            write(0, 0, None, "a", 0),
            read(1, 100, 110, "init", 1),
            read(1, 200, 210, "a", 2),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_indeterminate_write_cannot_happen_before_its_invocation() {
        let h = vec![read(1, 0, 10, "a", 2), write(0, 20, None, "a", 0)];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_indeterminate_write_cannot_happen_twice() {
        let h = vec![
            write(0, 0, None, "a", 0),
            read(1, 10, 20, "a", 2),
            write(1, 30, Some(40), "b", 3),
            read(1, 50, 60, "a", 4),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn an_indeterminate_cas_takes_effect_only_on_its_version() {
        // Version 1 expected: it may have happened (the read shows it).
        let h = vec![
            cas(0, 0, None, 1, "a", RegisterOutput::Done { version: 0 }),
            read(1, 10, 20, "a", 2),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // Version 7 expected while the register is at 1: it cannot have.
        let h = vec![
            cas(0, 0, None, 7, "a", RegisterOutput::Done { version: 0 }),
            read(1, 10, 20, "a", 2),
        ];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn indeterminate_reads_are_left_out() {
        let h = vec![
            op(
                0,
                0,
                None,
                RegisterInput::Read,
                RegisterOutput::Done { version: 0 },
            ),
            read(1, 10, 20, "init", 1),
        ];
        let r = check(&h, |_| reg("init", 1));
        assert_eq!(r[0].verdict, Verdict::Linearizable);
        assert_eq!((r[0].operations, r[0].indeterminate), (2, 1));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![write(0, 0, Some(10), "a", 2), read(1, 20, 30, "a", 2)];
        let mut other = write(0, 0, Some(10), "x", 2);
        other.key = "j";
        h.push(other);
        let mut stale = read(1, 20, 30, "init", 1);
        stale.key = "j";
        h.push(stale);
        let reports = check(&h, |_| reg("init", 1));
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].key, "j");
        assert!(matches!(reports[0].verdict, Verdict::NotLinearizable(_)));
        assert_eq!(reports[1].verdict, Verdict::Linearizable);
    }

    #[test]
    fn a_tiny_budget_gives_unknown_not_a_wrong_answer() {
        let h: Vec<RegOp> = (0..20)
            .map(|k| write(k, 0, Some(1000), "a", 2 + k as u64))
            .collect();
        let r = check_with_budget(&h, |_| reg("init", 1), 5);
        assert!(
            matches!(r[0].verdict, Verdict::Unknown { .. }),
            "{:?}",
            r[0].verdict
        );
    }

    /// A random history made from a real sequential run: each operation gets a
    /// linearization point, its interval is stretched around it at random (so many
    /// overlap), its output is what the run produced. Some operations are made
    /// indeterminate, whether they took effect (they are in the run) or not (they are
    /// not). Every such history is linearizable by construction.
    fn random_linearizable(rng: &mut StdRng, n: usize, stretch: u64) -> Vec<RegOp> {
        random_linearizable_with(rng, n, stretch, 5, 3)
    }

    /// [`random_linearizable`] with `indeterminate`% of the operations indeterminate
    /// (they took effect) and `lost`% more indeterminate writes that never did.
    fn random_linearizable_with(
        rng: &mut StdRng,
        n: usize,
        stretch: u64,
        indeterminate: u32,
        lost: u32,
    ) -> Vec<RegOp> {
        let (mut value, mut version) = ("init".to_owned(), 1u64);
        let mut h = Vec::new();
        for k in 0..n {
            let point = 1_000 * (k as u64 + 1);
            let call = point - rng.gen_range(0..stretch).min(point);
            let ret = point + rng.gen_range(0..stretch);
            let client = rng.gen_range(0..6);
            let new = format!("v{k}");
            let roll = rng.gen_range(0..100);
            let (input, output) = if roll < 40 {
                (
                    RegisterInput::Read,
                    RegisterOutput::Value {
                        value: value.clone(),
                        version,
                    },
                )
            } else if roll < 65 {
                (value, version) = (new.clone(), version + 1);
                (RegisterInput::Write(new), RegisterOutput::Done { version })
            } else {
                // Expect the current version most of the time, an older one otherwise.
                let expected = if rng.gen_bool(0.7) {
                    version
                } else {
                    version.saturating_sub(rng.gen_range(1..3))
                };
                let out = if expected == version {
                    (value, version) = (new.clone(), version + 1);
                    RegisterOutput::Done { version }
                } else {
                    RegisterOutput::Refused { current: version }
                };
                (
                    RegisterInput::Cas {
                        expected,
                        value: new,
                    },
                    out,
                )
            };
            let unknown = rng.gen_range(0..100) < indeterminate;
            h.push(Operation {
                key: "k",
                client,
                input,
                call,
                completed: (!unknown).then_some((ret, output)),
            });
            // Now and then an indeterminate write that never took effect.
            if rng.gen_range(0..100) < lost {
                h.push(Operation {
                    key: "k",
                    client,
                    input: RegisterInput::Write(format!("lost{k}")),
                    call: point.saturating_sub(500),
                    completed: None,
                });
            }
        }
        h
    }

    #[test]
    fn random_histories_of_real_runs_are_linearizable() {
        let mut rng = StdRng::seed_from_u64(0x11ea_1234);
        for round in 0..200 {
            let h = random_linearizable(&mut rng, 150, 8_000);
            let v = verdict(&h);
            assert_eq!(v, Verdict::Linearizable, "round {round}: {v:?}");
        }
    }

    #[test]
    fn a_long_history_is_decided_within_the_default_budget() {
        // As long as a half-hour chaos run gives one key, with a few hundred
        // indeterminate operations (most of which took effect), all pending to the end.
        let mut rng = StdRng::seed_from_u64(30);
        let h = random_linearizable_with(&mut rng, 40_000, 3_000, 1, 1);
        let started = std::time::Instant::now();
        let r = check(&h, |_| reg("init", 1));
        assert_eq!(r[0].verdict, Verdict::Linearizable);
        eprintln!(
            "{} operations ({} indeterminate) checked in {:?}",
            r[0].operations,
            r[0].indeterminate,
            started.elapsed()
        );
    }

    #[test]
    fn a_corrupted_read_in_a_long_history_is_reported_small() {
        // A long valid history (with quiescent instants now and then), then one read
        // after everything that names a version overwritten long ago.
        let mut rng = StdRng::seed_from_u64(7);
        let mut h: Vec<RegOp> = random_linearizable(&mut rng, 300, 600);
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let end = h
            .iter()
            .filter_map(|o| o.completed.as_ref().map(|c| c.0))
            .max()
            .unwrap_or(0);
        h.push(read(9, end + 10, end + 20, "init", 1));
        let c = counter_example(&h);
        assert_eq!(c.failing, h.len() - 1, "{c}");
        // The stale read and one operation that saw or made a later version are enough
        // (besides the indeterminate operations invoked earlier, which may have taken
        // effect at any time since, so they stay).
        let completed = c.ops.iter().filter(|&&i| h[i].completed.is_some()).count();
        assert!(completed <= 3, "not minimal:\n{c}");
        assert!(c.text.contains("any state"), "{c}");
    }
}
