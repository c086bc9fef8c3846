//! The sampled call graph: how often each actor called each other actor,
//! counted on the calling side as the router routes the call, in a table
//! of bounded size.
//!
//! Every actor-to-actor call (ask, tell, outbox delivery) is counted;
//! a call counts as *remote* when its target runs on another host than
//! its caller. The table keeps at most `capacity` edges: when it holds
//! twice that, the lighter half goes (a space-saving sketch, amortised: no
//! scan per call). Each window the counts decay by half, so the table
//! follows the traffic of the last few windows, and the window's totals
//! give the remote-call fraction.

use std::collections::HashMap;

use parking_lot::Mutex;
use quark_core::id::ActorId;

/// Edges kept by default (Orleans' edge table holds 10,000).
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// One directed edge's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Calls, decayed by half each window.
    weight: f64,
    /// Calls in the current window.
    window: u64,
    /// Whether the last call crossed hosts.
    remote: bool,
}

/// A sampled edge as read out.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The calling actor.
    pub from: ActorId,
    /// The called actor.
    pub to: ActorId,
    /// Calls, decayed by half each window.
    pub weight: f64,
    /// Calls in the last full window.
    pub last_window: u64,
    /// Whether the last call crossed hosts.
    pub remote: bool,
}

/// The totals of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Actor-to-actor calls.
    pub calls: u64,
    /// Those that crossed hosts.
    pub remote: u64,
}

#[derive(Default)]
struct Table {
    edges: HashMap<(ActorId, ActorId), Counts>,
    /// Each edge's calls in the last full window.
    last: HashMap<(ActorId, ActorId), u64>,
    current: WindowTotals,
    previous: WindowTotals,
}

/// The call graph this host samples.
pub(crate) struct Edges {
    capacity: usize,
    table: Mutex<Table>,
}

impl Edges {
    pub(crate) fn new(capacity: usize) -> Self {
        Edges { capacity: capacity.max(16), table: Mutex::default() }
    }

    /// Counts one call from `from` to `to`.
    pub(crate) fn record(&self, from: &ActorId, to: &ActorId, remote: bool) {
        if from == to {
            return;
        }
        let mut table = self.table.lock();
        table.current.calls += 1;
        table.current.remote += u64::from(remote);
        let counts = table.edges.entry((from.clone(), to.clone())).or_default();
        counts.weight += 1.0;
        counts.window += 1;
        counts.remote = remote;
        if table.edges.len() >= 2 * self.capacity {
            let capacity = self.capacity;
            prune(&mut table.edges, capacity);
        }
    }

    /// Closes the window: its totals become the last window's, and every
    /// weight halves.
    pub(crate) fn roll(&self) {
        let mut table = self.table.lock();
        table.previous = std::mem::take(&mut table.current);
        let mut last = HashMap::new();
        table.edges.retain(|key, counts| {
            if counts.window > 0 {
                last.insert(key.clone(), counts.window);
            }
            counts.window = 0;
            counts.weight /= 2.0;
            counts.weight >= 0.25
        });
        table.last = last;
    }

    /// The last full window's totals.
    pub(crate) fn last_window(&self) -> WindowTotals {
        self.table.lock().previous
    }

    /// The edges, heaviest first, at most `limit`.
    pub(crate) fn heaviest(&self, limit: usize) -> Vec<Edge> {
        let table = self.table.lock();
        let mut edges: Vec<Edge> = table
            .edges
            .iter()
            .map(|((from, to), c)| Edge {
                from: from.clone(),
                to: to.clone(),
                weight: c.weight,
                last_window: table.last.get(&(from.clone(), to.clone())).copied().unwrap_or(0),
                remote: c.remote,
            })
            .collect();
        edges.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        edges.truncate(limit);
        edges
    }

    /// Forgets the edges of `actors` (they just moved: their old figures
    /// say where they were).
    pub(crate) fn forget(&self, actors: &std::collections::HashSet<ActorId>) {
        self.table.lock().edges.retain(|(from, to), _| !actors.contains(from) && !actors.contains(to));
    }
}

/// Keeps the `capacity` heaviest edges.
fn prune(edges: &mut HashMap<(ActorId, ActorId), Counts>, capacity: usize) {
    let mut weights: Vec<f64> = edges.values().map(|c| c.weight).collect();
    let cut = weights.len() - capacity;
    let (_, &mut threshold, _) = weights.select_nth_unstable_by(cut, f64::total_cmp);
    let mut over = edges.len() - capacity;
    edges.retain(|_, c| {
        if over > 0 && c.weight <= threshold {
            over -= 1;
            false
        } else {
            true
        }
    });
}
