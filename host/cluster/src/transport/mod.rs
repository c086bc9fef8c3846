//! The host-to-host transport: one multiplexed TCP connection per peer
//! ([`link`]), length-delimited postcard frames ([`crate::wire`]), and the
//! listener that runs peers' calls here ([`server`]).
//!
//! Why this and not gRPC or HTTP/2: a call is one small frame each way
//! with nothing to negotiate, and both ends are Quark; a frame codec from
//! tokio-util plus serde is the smallest well-kept stack that multiplexes
//! many calls on one connection, and it lets a quiet connection's frame
//! go straight to the socket while a busy one's go in one write
//! ([`writer`]).
//! BENCHMARKS.md has the remote ask against a raw loopback round trip of
//! the same bytes.

pub(crate) mod link;
pub(crate) mod server;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use quark_store::cluster::{Member, MemberState};

use self::link::Link;

/// Another host as this one reaches it.
pub(crate) struct PeerHost {
    /// Its id.
    pub(crate) id: String,
    /// Its incarnation when last read.
    incarnation: i64,
    /// Where it listens for peers.
    addr: String,
    /// The current connection (a new one replaces one that broke).
    link: Mutex<Option<Arc<Link>>>,
    /// Alive and serving as of the last read of the members.
    alive: AtomicBool,
    /// Its heartbeat when a connection to it was refused (-1: none was):
    /// it counts as unreachable until it beats again.
    refused_at_heartbeat: AtomicI64,
    /// Its heartbeat as last read.
    heartbeat_ms: AtomicI64,
}

impl PeerHost {
    /// The connection to it, opened again if the last one broke.
    pub(crate) fn link(&self) -> Arc<Link> {
        let mut link = self.link.lock();
        match &*link {
            Some(open) if !open.is_closed() => open.clone(),
            _ => {
                let open = Link::open(self.addr.clone());
                *link = Some(open.clone());
                open
            }
        }
    }

    /// Worth sending to: alive as last read, and not refusing connections.
    pub(crate) fn usable(&self) -> bool {
        self.alive.load(Ordering::Acquire) && self.refused_at_heartbeat.load(Ordering::Acquire) < 0
    }

    /// A connection to it was refused: not usable until its next heartbeat.
    pub(crate) fn refused(&self) {
        self.refused_at_heartbeat.store(self.heartbeat_ms.load(Ordering::Acquire), Ordering::Release);
    }

    /// It said it is leaving: place nothing there any more.
    pub(crate) fn leaving(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Its incarnation as last read.
    pub(crate) fn incarnation(&self) -> i64 {
        self.incarnation
    }
}

/// Every other host this one knows, by id.
#[derive(Default)]
pub(crate) struct Peers {
    hosts: RwLock<HashMap<String, Arc<PeerHost>>>,
}

impl Peers {
    /// The host `id`, if it is a member with a peer address.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<PeerHost>> {
        self.hosts.read().get(id).cloned()
    }

    /// Whether `id` is worth placing an actor on.
    pub(crate) fn reachable(&self, id: &str) -> bool {
        self.get(id).is_some_and(|p| p.usable())
    }

    /// Matches the known hosts to `members` (as just read): new members
    /// are added, a member that restarted (a new incarnation or address)
    /// gets a new connection, members that are gone are forgotten.
    pub(crate) fn update(&self, this: &str, members: &[Member]) {
        let mut hosts = self.hosts.write();
        let mut seen = std::collections::HashSet::new();
        for member in members.iter().filter(|m| m.host.id != this && !m.host.peer.is_empty()) {
            seen.insert(member.host.id.as_str());
            let alive = member.is_alive() && !matches!(member.state, MemberState::Leaving | MemberState::Dead);
            match hosts.get(&member.host.id) {
                Some(known) if known.incarnation == member.incarnation && known.addr == member.host.peer => {
                    known.alive.store(alive, Ordering::Release);
                    known.heartbeat_ms.store(member.heartbeat_ms, Ordering::Release);
                    if known.refused_at_heartbeat.load(Ordering::Acquire) >= 0
                        && member.heartbeat_ms > known.refused_at_heartbeat.load(Ordering::Acquire)
                    {
                        known.refused_at_heartbeat.store(-1, Ordering::Release);
                    }
                }
                _ => {
                    let peer = PeerHost {
                        id: member.host.id.clone(),
                        incarnation: member.incarnation,
                        addr: member.host.peer.clone(),
                        link: Mutex::new(None),
                        alive: AtomicBool::new(alive),
                        refused_at_heartbeat: AtomicI64::new(-1),
                        heartbeat_ms: AtomicI64::new(member.heartbeat_ms),
                    };
                    hosts.insert(member.host.id.clone(), Arc::new(peer));
                }
            }
        }
        hosts.retain(|id, _| seen.contains(id.as_str()));
    }

    /// Every peer worth sending to.
    pub(crate) fn usable(&self) -> Vec<Arc<PeerHost>> {
        self.hosts.read().values().filter(|p| p.usable()).cloned().collect()
    }
}
