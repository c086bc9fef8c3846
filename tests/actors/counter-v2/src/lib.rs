//! Version 2 of the sample counter, for hot-swap tests: same state format,
//! plus a `version` method that version 1 does not have.
use quark_sdk::{Deserialize, Result, state};

#[derive(Deserialize)]
struct Increment {
    by: i64,
}

struct CounterV2;

impl CounterV2 {
    fn increment(Increment { by }: Increment) -> Result<i64> {
        let value = state::get::<i64>("value")?.unwrap_or(0) + by;
        state::set("value", &value)?;
        Ok(value)
    }

    fn get(_: ()) -> Result<i64> {
        Ok(state::get("value")?.unwrap_or(0))
    }

    fn version(_: ()) -> Result<u32> {
        Ok(2)
    }
}

quark_sdk::actor!(CounterV2 { increment, get, version });
