//! A test actor for call chains: reentrancy (A calls B calls A) and
//! deadlocking cycles (A and B call each other from separate requests).
use quark_sdk::{Deserialize, Result, state};

#[derive(Deserialize)]
struct Ping {
    peer: String,
    depth: u32,
}

#[derive(Deserialize)]
struct Cross {
    peer: String,
    spin_ms: u64,
}

struct PingPong;

impl PingPong {
    /// Counts the ping, then pings `peer` with `depth - 1` until depth is 0.
    /// Returns the ids of every actor on the chain, innermost last.
    fn ping(Ping { peer, depth }: Ping) -> Result<Vec<String>> {
        let pings = state::get::<u64>("pings")?.unwrap_or(0) + 1;
        state::set("pings", &pings)?;
        let mut chain = vec![quark_sdk::self_id()];
        if depth > 0 {
            let me = quark_sdk::self_id();
            let rest: Vec<String> =
                quark_sdk::call(&peer, "ping", &quark_sdk::json!({ "peer": me, "depth": depth - 1 }))?;
            chain.extend(rest);
        }
        Ok(chain)
    }

    /// The number of pings this actor has handled.
    fn pings(_: ()) -> Result<u64> {
        Ok(state::get("pings")?.unwrap_or(0))
    }

    /// Busy-waits `spin_ms`, then calls `peer`'s `pings`.
    fn cross(Cross { peer, spin_ms }: Cross) -> Result<u64> {
        let start = quark_sdk::now_ms();
        while quark_sdk::now_ms() < start + spin_ms {
            std::hint::spin_loop();
        }
        quark_sdk::call(&peer, "pings", &())
    }
}

quark_sdk::actor!(PingPong { ping, pings, cross });
