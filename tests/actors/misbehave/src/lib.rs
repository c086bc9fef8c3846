//! A test actor that fails on purpose, one method per failure path.
use quark_sdk::{Deserialize, Error, Result, Value, state};

#[derive(Deserialize)]
struct Alloc {
    mib: usize,
}

#[derive(Deserialize)]
struct Put {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
struct Forward {
    target: String,
    method: String,
    payload: Value,
}

#[derive(Deserialize)]
struct Tell {
    target: String,
    method: String,
    payload: Value,
    fail: bool,
    /// Also write state, so the turn has a commit to wait for.
    #[serde(default)]
    write: bool,
}

#[derive(Deserialize)]
struct Flood {
    count: usize,
    bytes: usize,
    /// Write the same key every time instead of `count` keys.
    #[serde(default)]
    same_key: bool,
}

#[derive(Deserialize)]
struct Hold {
    ms: u64,
}

#[derive(Deserialize)]
struct Audit {
    note: String,
    fail: bool,
}

struct Misbehave;

impl Misbehave {
    /// Panics after writing state: the write must not be committed.
    fn panic(_: ()) -> Result<()> {
        state::set("written-before-panic", &true)?;
        panic!("misbehave: panic on purpose");
    }

    /// Loops forever after writing state: the turn time limit must stop it.
    fn spin(_: ()) -> Result<()> {
        state::set("written-before-spin", &true)?;
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    /// Allocates and touches `mib` MiB of linear memory.
    fn alloc(Alloc { mib }: Alloc) -> Result<usize> {
        let mut buffers = Vec::new();
        for _ in 0..mib {
            buffers.push(vec![1u8; 1 << 20]);
        }
        Ok(std::hint::black_box(buffers).iter().map(Vec::len).sum())
    }

    /// Writes state, then returns an error: the write must not be committed.
    fn write_then_fail(_: ()) -> Result<()> {
        state::set("written-before-error", &true)?;
        Err(Error::rejected("misbehave: refused on purpose"))
    }

    /// Stores `value` under `key`.
    fn put(Put { key, value }: Put) -> Result<()> {
        state::set(&key, &value)
    }

    /// Every key and value of this actor.
    fn dump(_: ()) -> Result<Value> {
        let mut map = serde_json::Map::new();
        for key in state::keys()? {
            map.insert(key.clone(), state::get(&key)?.unwrap_or(Value::Null));
        }
        Ok(Value::Object(map))
    }

    /// Echoes its request.
    fn echo(value: Value) -> Result<Value> {
        Ok(value)
    }

    /// Writes `count` values of `bytes` bytes (to one key, or to as many):
    /// what a turn buffers for its commit is bounded.
    fn flood(Flood { count, bytes, same_key }: Flood) -> Result<usize> {
        let value = "x".repeat(bytes);
        for i in 0..count {
            let key = if same_key { "flood".to_string() } else { format!("flood-{i}") };
            state::set(&key, &value)?;
        }
        Ok(count)
    }

    /// Tells another actor, then succeeds or fails: a failed turn's tells
    /// must never be sent.
    fn tell(Tell { target, method, payload, fail, write }: Tell) -> Result<()> {
        quark_sdk::tell(&target, &method, &payload)?;
        if write {
            let told: u64 = state::get("told")?.unwrap_or(0);
            state::set("told", &(told + 1))?;
        }
        if fail { Err(Error::rejected("misbehave: failing after a tell")) } else { Ok(()) }
    }

    /// A plain actor's audit trail: appends an event, then fails if asked
    /// (the event must then not be committed). Returns the new version.
    fn audit(Audit { note, fail }: Audit) -> Result<u64> {
        let version = quark_sdk::journal::append("noted", 2, &note)?;
        state::set("last_note", &note)?;
        if fail { Err(Error::rejected("misbehave: failing after an append")) } else { Ok(version) }
    }

    /// Stays busy for `ms` milliseconds (yielding to the host's epochs),
    /// then answers with a token unique to this instance: concurrent calls
    /// that answer with different tokens ran on different activations.
    fn hold(Hold { ms }: Hold) -> Result<u64> {
        static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let token = *TOKEN.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0u8)
        });
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(token)
    }

    /// Sleeps `ms` milliseconds (WASI's monotonic clock: a turn that is
    /// busy without burning a core), then answers how many naps this
    /// actor has taken, this one included (a committed count).
    fn nap(Hold { ms }: Hold) -> Result<u64> {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let naps: u64 = state::get("naps")?.unwrap_or(0) + 1;
        state::set("naps", &naps)?;
        Ok(naps)
    }

    /// Calls another actor and returns its reply.
    fn forward(Forward { target, method, payload }: Forward) -> Result<Value> {
        quark_sdk::call(&target, &method, &payload)
    }
}

quark_sdk::actor!(Misbehave { flood, panic, spin, alloc, write_then_fail, put, dump, echo, forward, tell, audit, hold, nap });
