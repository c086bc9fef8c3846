//! A register for the linearizability test: `read` answers the value (or
//! null), `write {"value": V}` sets it, `cas {"from": A, "to": B}` sets it
//! to B only if it is A (null: unset) and answers whether it did.
use quark_sdk::{Deserialize, Result, state};

#[derive(Deserialize)]
struct Write {
    value: i64,
}

#[derive(Deserialize)]
struct Cas {
    from: Option<i64>,
    to: i64,
}

struct Register;

impl Register {
    fn read(_: ()) -> Result<Option<i64>> {
        state::get("value")
    }

    fn write(Write { value }: Write) -> Result<()> {
        state::set("value", &value)
    }

    fn cas(Cas { from, to }: Cas) -> Result<bool> {
        if state::get::<i64>("value")? != from {
            return Ok(false);
        }
        state::set("value", &to)?;
        Ok(true)
    }
}

quark_sdk::actor!(Register { read, write, cas });
