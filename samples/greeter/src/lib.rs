//! Greets people and counts visits by calling a `counter` actor of the same key.
use quark_sdk::{Deserialize, Result, Serialize, json, state};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
    visits: i64,
}

struct Greeter;

impl Greeter {
    /// `greet {"name": "Ada"}`: bumps `counter/<my key>` and greets.
    fn greet(Greet { name }: Greet) -> Result<Greeting> {
        let counter = format!("counter/{}", quark_sdk::self_key());
        let visits: i64 = quark_sdk::call(&counter, "increment", &json!({ "by": 1 }))?;
        state::set("last", &name)?;
        Ok(Greeting { message: format!("Hello, {name}!"), visits })
    }

    /// `last`: the last name greeted, or null.
    fn last(_: ()) -> Result<Option<String>> {
        state::get("last")
    }
}

quark_sdk::actor!(Greeter { greet, last });
