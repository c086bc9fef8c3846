//! A durable counter: `increment {"by": N}` returns the new value, `get` returns it.
use quark_sdk::{Deserialize, Result, state};

#[derive(Deserialize)]
struct Increment {
    by: i64,
}

struct Counter;

impl Counter {
    fn increment(Increment { by }: Increment) -> Result<i64> {
        let value = state::get::<i64>("value")?.unwrap_or(0) + by;
        state::set("value", &value)?;
        Ok(value)
    }

    fn get(_: ()) -> Result<i64> {
        Ok(state::get("value")?.unwrap_or(0))
    }
}

quark_sdk::actor!(Counter { increment, get });
