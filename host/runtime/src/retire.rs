//! Retiring an activation so that another host can serve its actor (a
//! migration, issue 17): the caller first stops new messages from reaching
//! it (the cluster holds them while the actor is *moving*), then this lets
//! what is already queued run and commit here, and removes the activation
//! once it is quiet. Its state is durable, so the next host reads it all
//! from the store.
//!
//! Draining here rather than handing the queued messages over keeps each
//! waiting caller's reply where it is and costs the queue nothing extra:
//! those messages were accepted here and run at this host's speed; only
//! messages that arrive after the move starts wait for the new owner.

use std::time::{Duration, Instant};

use crate::{ActorError, Host};
use crate::id::ActorId;

/// How often a drain looks again whether the activation is quiet.
const DRAIN_POLL: Duration = Duration::from_millis(1);

impl Host {
    /// Lets `actor`'s activation finish what is queued on it (every turn
    /// run and committed), then removes it from this host. `Ok(true)` once
    /// removed; `Ok(false)` when it was not active here; `timeout` (and the
    /// activation stays) when it is still busy after `within`. The caller
    /// keeps new messages away meanwhile; any that still arrive are run
    /// first. A stateless worker type is refused: its activations are per
    /// host and have nothing to move.
    pub async fn retire(&self, actor: &ActorId, within: Duration) -> Result<bool, ActorError> {
        if self.registry().stateless_workers(actor.actor_type()) > 0 {
            return Err(ActorError::bad_request(format!("{actor} is a stateless worker: each host runs its own, there is nothing to move")));
        }
        let until = Instant::now() + within;
        loop {
            match self.0.table.remove_if_quiet(actor) {
                None => return Ok(false),
                Some(true) => return Ok(true),
                Some(false) if Instant::now() >= until => {
                    return Err(ActorError::timeout(format!("{actor} was still busy after {within:?}; it stays on this host")));
                }
                Some(false) => tokio::time::sleep(DRAIN_POLL).await,
            }
        }
    }
}
