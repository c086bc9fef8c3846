//! Where a new activation goes: the one pluggable place that chooses a
//! host for an actor no live host owns. The memory-aware placer (issue
//! 17) and the locality repartitioner (issue 18) replace or steer it.
//!
//! The choice is a hint, never a guarantee: the chosen host claims the
//! actor in the shared directory, and the claim decides (a host that
//! loses a race forwards to the winner).

use std::hash::{Hash, Hasher};

use quark_core::id::ActorId;

/// A host a new activation may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: &'a str,
    /// What is left of its memory budget to reserve, bytes: live for the
    /// deciding host, as of the last heartbeat (less what this host
    /// placed there since) for the others.
    pub free: u64,
}

/// Chooses the host of a new activation.
///
/// The router first keeps the hosts where the activation fits (its
/// type's reservation is at most their free memory); only when it fits
/// nowhere does it offer every host, and the chosen one sheds idle
/// activations to make room or refuses with `limit-exceeded`.
pub trait Placement: Send + Sync + std::fmt::Debug {
    /// One of `hosts` (live hosts accepting new activations, never empty)
    /// for `actor`; `this` is the deciding host's id (it is in `hosts`
    /// unless it is leaving, or full while others are not).
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[Candidate<'a>]) -> &'a str;

    /// Whether the router offers only the hosts where the activation fits
    /// (true, every placement here). A placement that says false is
    /// offered every live host, and places by its own rule alone: by
    /// count, as Dapr's hash ring and Orleans' random placement do (the
    /// oversubscription benchmark's baseline).
    fn by_fit(&self) -> bool {
        true
    }
}

/// Rendezvous (highest-random-weight) hashing of the actor id over the
/// live hosts: every host computes the same choice without talking to the
/// others, actors spread evenly, and a host that joins or leaves moves
/// only its share (Dapr places actors by a hash ring; Orleans' default is
/// random). The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct HashPlacement;

impl Placement for HashPlacement {
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[Candidate<'a>]) -> &'a str {
        hosts.iter().max_by_key(|host| weight(actor, host.id)).map_or(this, |host| host.id)
    }
}

/// The host that first sees a message for the actor activates it
/// (Orleans' `PreferLocalPlacement`): no forwarding for actors called
/// through the host they live on.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalPlacement;

impl Placement for LocalPlacement {
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[Candidate<'a>]) -> &'a str {
        if hosts.iter().any(|host| host.id == this) { this } else { HashPlacement.place(actor, this, hosts) }
    }
}

/// The host with the most free memory (ties broken by the rendezvous
/// hash, so that hosts deciding at once on equal figures agree): fills
/// hosts evenly by what their activations reserve, not by their count.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryPlacement;

impl Placement for MemoryPlacement {
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[Candidate<'a>]) -> &'a str {
        hosts.iter().max_by_key(|host| (host.free, weight(actor, host.id))).map_or(this, |host| host.id)
    }
}

/// The rendezvous weight of `host` for `actor`: a hash both depend on,
/// the same in every process of one build (`DefaultHasher::new` has fixed
/// keys).
fn weight(actor: &ActorId, host: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    actor.as_str().hash(&mut hasher);
    host.hash(&mut hasher);
    hasher.finish()
}

/// The placement named on the command line (`--placement`).
pub fn by_name(name: &str) -> Result<Box<dyn Placement>, String> {
    match name {
        "hash" => Ok(Box::new(HashPlacement)),
        "local" => Ok(Box::new(LocalPlacement)),
        "memory" => Ok(Box::new(MemoryPlacement)),
        other => Err(format!(
            "unknown placement {other:?}: `hash` (spread by actor id), `local` (the calling host) or `memory` (the most free memory)"
        )),
    }
}

