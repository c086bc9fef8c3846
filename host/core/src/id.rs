//! Actor addresses.

use std::fmt;
use std::sync::Arc;

use crate::error::ActorError;

/// Longest actor type name or key accepted, in bytes: ids are stored as keys
/// in every backend and shown in URLs.
pub const MAX_ID_PART_LEN: usize = 256;

/// An actor's address, `type/key`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(Arc<str>, usize);

impl ActorId {
    /// Builds an id from a type name and a key, checking both.
    pub fn new(actor_type: &str, key: &str) -> Result<Self, ActorError> {
        validate_type_name(actor_type)?;
        if key.is_empty() || key.len() > MAX_ID_PART_LEN || key.chars().any(char::is_control) {
            return Err(ActorError::bad_request(format!(
                "bad actor key {key:?}: it must be 1..={MAX_ID_PART_LEN} bytes without control characters"
            )));
        }
        Ok(ActorId(format!("{actor_type}/{key}").into(), actor_type.len()))
    }

    /// Parses `type/key`; the key may itself contain `/`.
    pub fn parse(id: &str) -> Result<Self, ActorError> {
        let (actor_type, key) = id
            .split_once('/')
            .ok_or_else(|| ActorError::bad_request(format!("bad actor id {id:?}: expected `type/key`")))?;
        Self::new(actor_type, key)
    }

    /// The actor type, e.g. `counter`.
    #[inline]
    pub fn actor_type(&self) -> &str {
        &self.0[..self.1]
    }

    /// The key within the type, e.g. `alice`.
    #[inline]
    pub fn key(&self) -> &str {
        &self.0[self.1 + 1..]
    }

    /// The whole id, `type/key`.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an actor type name: lowercase letters, digits and `-`, starting with a letter.
pub fn validate_type_name(name: &str) -> Result<(), ActorError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ID_PART_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ActorError::bad_request(format!(
            "bad actor type {name:?}: use lowercase letters, digits, `-` or `_`, starting with a letter"
        )))
    }
}

/// A call chain's id: every call a request causes, across actors and hosts,
/// carries it, so an actor called back on its own chain re-enters instead
/// of deadlocking. 128 bits: this process's random 64-bit nonce, then a
/// counter, so ids from different hosts (and restarts) do not collide.
/// (Two `u64`s rather than a `u128`, so it keeps every `Request` 8-aligned.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainId {
    nonce: u64,
    seq: u64,
}

impl ChainId {
    /// No chain (a turn not started by a request).
    pub const NONE: ChainId = ChainId { nonce: 0, seq: 0 };

    /// A new chain, unique across hosts.
    #[inline]
    pub fn fresh() -> ChainId {
        use std::hash::{BuildHasher, RandomState};
        use std::sync::atomic::{AtomicU64, Ordering};
        static NONCE: std::sync::LazyLock<u64> =
            std::sync::LazyLock::new(|| RandomState::new().hash_one((std::process::id(), crate::time::now_ms())) | 1);
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ChainId { nonce: *NONCE, seq: NEXT.fetch_add(1, Ordering::Relaxed) }
    }

    /// The counter half: differs between any two chains of one host, so it
    /// rules out most mismatches with one 64-bit compare.
    #[inline]
    pub fn seq(self) -> u64 {
        self.seq
    }

    /// The id as a number (for the wire).
    #[inline]
    pub fn as_u128(self) -> u128 {
        (u128::from(self.nonce) << 64) | u128::from(self.seq)
    }

    /// The id from [`as_u128`](Self::as_u128).
    #[inline]
    pub fn from_u128(id: u128) -> ChainId {
        ChainId { nonce: (id >> 64) as u64, seq: id as u64 }
    }
}

impl fmt::Display for ChainId {
    /// 32 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.nonce, self.seq)
    }
}
