//! Who owns which actor, as this host last learned it: the router's fast
//! path. An entry for this host is exact for as long as the host keeps
//! its incarnation (no other host may take its actors before it is
//! declared dead); an entry for another host is a hint, corrected by a
//! `moved` answer or a broken connection.

use std::collections::HashMap;
use std::hash::BuildHasher;

use parking_lot::Mutex;
use quark_core::id::ActorId;

/// Shards: enough that two cores rarely contend.
const SHARDS: usize = 32;

/// Entries per shard past which the shard forgets the other hosts'
/// actors (hints) and, if still full, everything (a claim of an actor
/// this host owns already is a read).
const MAX_PER_SHARD: usize = 1 << 16;

/// An actor's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This host, under this incarnation and epoch.
    Here { incarnation: i64, epoch: u64 },
    /// Another host.
    There { host: String },
}

/// The cache, sharded by actor id.
pub(crate) struct Owners {
    shards: Box<[Mutex<HashMap<ActorId, Owner>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Owners {
    fn default() -> Self {
        Owners { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: Default::default() }
    }
}

impl Owners {
    fn shard(&self, actor: &ActorId) -> &Mutex<HashMap<ActorId, Owner>> {
        &self.shards[(self.hasher.hash_one(actor) as usize) % SHARDS]
    }

    pub(crate) fn get(&self, actor: &ActorId) -> Option<Owner> {
        self.shard(actor).lock().get(actor).cloned()
    }

    pub(crate) fn insert(&self, actor: ActorId, owner: Owner) {
        let mut shard = self.shard(&actor).lock();
        if shard.len() >= MAX_PER_SHARD {
            shard.retain(|_, o| matches!(o, Owner::Here { .. }));
            if shard.len() >= MAX_PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(actor, owner);
    }

    /// Forgets `actor`'s entry if it names `host`.
    pub(crate) fn forget(&self, actor: &ActorId, host: &str) {
        let mut shard = self.shard(actor).lock();
        if matches!(shard.get(actor), Some(Owner::There { host: h }) if h == host) {
            shard.remove(actor);
        }
    }

    /// Forgets `actor`'s entry, whoever it names.
    pub(crate) fn remove(&self, actor: &ActorId) {
        self.shard(actor).lock().remove(actor);
    }

    /// Forgets every entry naming `host` (it left, or cannot be reached).
    pub(crate) fn forget_host(&self, host: &str) {
        for shard in self.shards.iter() {
            shard.lock().retain(|_, o| !matches!(o, Owner::There { host: h } if h == host));
        }
    }
}
