//! Which actors two hosts should swap so that fewer calls cross between
//! them: a greedy, heap-based exchange over the pair's sampled call graph
//! (the ActOp heuristic Orleans' repartitioner uses), within a balance
//! tolerance and each host's memory room.
//!
//! An actor's **gain** from moving to the other host is the weight of its
//! edges to actors there less the weight of its edges to actors where it
//! is (edges to actors on third hosts do not change). The planner keeps
//! one max-heap of candidates per host, takes the best move either host
//! may make without passing the balance tolerance, applies it, updates
//! the gains of its neighbours, and repeats until no move gains enough or
//! the round's bound is reached. Each actor moves at most once a round.
//! A move must gain at least [`MIN_GAIN`] calls and a [`MIN_GAIN_SHARE`]
//! of the actor's own traffic, so that noise (uniform traffic, where an
//! actor talks to every host alike) moves nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use petgraph::graphmap::UnGraphMap;

/// The smallest gain worth a move, in (decayed) calls.
pub const MIN_GAIN: f64 = 2.0;
/// The smallest gain worth a move, as a share of the actor's traffic.
pub const MIN_GAIN_SHARE: f64 = 0.25;
/// How far apart the two hosts' activation counts may end up, as a share
/// of their total (or as far as they were, if further; never under two).
pub const BALANCE_TOLERANCE: f64 = 0.10;

/// An actor in the pair's graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Vertex {
    /// `Some(0)` or `Some(1)`: on that host of the pair; `None`: on a
    /// third host, or not active (it stays where it is).
    pub side: Option<usize>,
    /// What it reserves of its host's memory budget, bytes.
    pub reserved: u64,
    /// False for an actor that moved recently (anchored for a while).
    pub movable: bool,
}

/// The pair as the planner weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Activations on each host.
    pub activations: [usize; 2],
    /// Bytes each host may still take below its high watermark.
    pub room: [u64; 2],
}

/// A gain in a heap: ordered by gain, then by vertex for determinism.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    gain: f64,
    vertex: u32,
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain.total_cmp(&other.gain).then(other.vertex.cmp(&self.vertex))
    }
}

/// The moves: `[from host 0 to host 1, from host 1 to host 0]`, as
/// indices into `vertices`.
pub fn plan(vertices: &[Vertex], edges: &[(usize, usize, f64)], pair: &Pair, max_moves: usize) -> [Vec<usize>; 2] {
    let mut graph: UnGraphMap<u32, f64> = UnGraphMap::with_capacity(vertices.len(), edges.len());
    for &(a, b, w) in edges {
        if a == b || a >= vertices.len() || b >= vertices.len() {
            continue;
        }
        let (a, b) = (a as u32, b as u32);
        match graph.edge_weight_mut(a, b) {
            Some(weight) => *weight += w,
            None => {
                graph.add_edge(a, b, w);
            }
        }
    }
    let mut side: Vec<Option<usize>> = vertices.iter().map(|v| v.side).collect();
    let gain = |side: &[Option<usize>], u: u32| -> (f64, f64) {
        let Some(s) = side[u as usize] else { return (f64::MIN, 0.0) };
        let (mut gain, mut total) = (0.0, 0.0);
        for (_, v, &w) in graph.edges(u) {
            total += w;
            match side[v as usize] {
                Some(t) if t == s => gain -= w,
                Some(_) => gain += w,
                None => {}
            }
        }
        (gain, total)
    };
    let mut moved = vec![false; vertices.len()];
    let mut heaps: [BinaryHeap<Candidate>; 2] = [BinaryHeap::new(), BinaryHeap::new()];
    for (u, vertex) in vertices.iter().enumerate() {
        if let (Some(s), true) = (vertex.side, vertex.movable)
            && graph.contains_node(u as u32)
        {
            heaps[s].push(Candidate { gain: gain(&side, u as u32).0, vertex: u as u32 });
        }
    }
    let mut counts = pair.activations;
    let mut room = pair.room;
    let total = (counts[0] + counts[1]) as f64;
    // Never under 2: from even counts, one move and its answer in the other direction.
    let allowed = (counts[0].abs_diff(counts[1]) as f64).max(total * BALANCE_TOLERANCE).max(2.0);
    let balanced_after = |counts: &[usize; 2], from: usize| {
        let mut after = *counts;
        after[from] = after[from].saturating_sub(1);
        after[1 - from] += 1;
        after[0].abs_diff(after[1]) as f64 <= allowed
    };
    let mut out: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    while out[0].len() + out[1].len() < max_moves {
        // The true best of each heap: stale entries are refreshed.
        let mut best: Option<(Candidate, usize)> = None;
        for (s, heap) in heaps.iter_mut().enumerate() {
            if !balanced_after(&counts, s) {
                continue;
            }
            while let Some(&top) = heap.peek() {
                let u = top.vertex as usize;
                if moved[u] || side[u] != Some(s) {
                    heap.pop();
                    continue;
                }
                let now = gain(&side, top.vertex).0;
                if now != top.gain {
                    heap.pop();
                    heap.push(Candidate { gain: now, vertex: top.vertex });
                    continue;
                }
                if best.is_none_or(|(b, _)| top > b) {
                    best = Some((top, s));
                }
                break;
            }
        }
        let Some((top, s)) = best else { break };
        if top.gain < MIN_GAIN {
            break;
        }
        heaps[s].pop();
        let u = top.vertex as usize;
        let (_, traffic) = gain(&side, top.vertex);
        if top.gain < MIN_GAIN_SHARE * traffic || room[1 - s] < vertices[u].reserved {
            continue;
        }
        side[u] = Some(1 - s);
        moved[u] = true;
        counts[s] = counts[s].saturating_sub(1);
        counts[1 - s] += 1;
        room[1 - s] -= vertices[u].reserved;
        room[s] += vertices[u].reserved;
        out[s].push(u);
        for v in graph.neighbors(top.vertex) {
            let vi = v as usize;
            if let (Some(t), false, true) = (side[vi], moved[vi], vertices[vi].movable) {
                heaps[t].push(Candidate { gain: gain(&side, v).0, vertex: v });
            }
        }
    }
    out
}
