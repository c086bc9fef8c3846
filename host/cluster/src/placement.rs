//! Where a new activation goes: the one pluggable place that chooses a
//! host for an actor no live host owns. The memory-aware placer (issue
//! 17) and the locality repartitioner (issue 18) replace or steer it.
//!
//! The choice is a hint, never a guarantee: the chosen host claims the
//! actor in the shared directory, and the claim decides (a host that
//! loses a race forwards to the winner).

use std::hash::{Hash, Hasher};

use quark_core::id::ActorId;

/// Chooses the host of a new activation.
pub trait Placement: Send + Sync + std::fmt::Debug {
    /// One of `hosts` (the live hosts accepting new activations, never
    /// empty) for `actor`; `this` is the deciding host's id (it is in
    /// `hosts` unless it is leaving).
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[&'a str]) -> &'a str;
}

/// Rendezvous (highest-random-weight) hashing of the actor id over the
/// live hosts: every host computes the same choice without talking to the
/// others, actors spread evenly, and a host that joins or leaves moves
/// only its share (Dapr places actors by a hash ring; Orleans' default is
/// random). The default.
#[derive(Debug, Default, Clone, Copy)]
pub struct HashPlacement;

impl Placement for HashPlacement {
    fn place<'a>(&self, actor: &ActorId, this: &'a str, hosts: &[&'a str]) -> &'a str {
        hosts.iter().copied().max_by_key(|host| weight(actor, host)).unwrap_or(this)
    }
}

/// The host that first sees a message for the actor activates it
/// (Orleans' `PreferLocalPlacement`): no forwarding for actors called
/// through the host they live on.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalPlacement;

impl Placement for LocalPlacement {
    fn place<'a>(&self, _actor: &ActorId, this: &'a str, hosts: &[&'a str]) -> &'a str {
        if hosts.contains(&this) { this } else { hosts.first().copied().unwrap_or(this) }
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
        other => Err(format!("unknown placement {other:?}: `hash` (spread by actor id) or `local` (the calling host)")),
    }
}
