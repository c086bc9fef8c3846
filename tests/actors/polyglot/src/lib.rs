//! The Rust third of the three-language call chain (with `polyglot-py` and
//! `polyglot-js`, which have the same `hop` and `hops`).
use quark_sdk::{Deserialize, Result, Serialize, state};

#[derive(Deserialize)]
struct Hop {
    /// The actors still to visit, in order.
    path: Vec<String>,
}

/// One actor's part of the chain's reply.
#[derive(Serialize, Deserialize)]
struct Visit {
    actor: String,
    language: String,
    hops: i64,
    caller: Option<String>,
}

struct Polyglot;

impl Polyglot {
    /// Counts this visit in state, then calls the next actor on the path
    /// with the rest of it; returns every visit from here on.
    fn hop(Hop { path }: Hop) -> Result<Vec<Visit>> {
        let hops = state::get::<i64>("hops")?.unwrap_or(0) + 1;
        state::set("hops", &hops)?;
        let mut visits =
            vec![Visit { actor: quark_sdk::self_id(), language: "rust".into(), hops, caller: quark_sdk::caller() }];
        if let Some((next, rest)) = path.split_first() {
            visits.extend(quark_sdk::call::<_, Vec<Visit>>(next, "hop", &quark_sdk::json!({ "path": rest }))?);
        }
        Ok(visits)
    }

    fn hops(_: ()) -> Result<i64> {
        Ok(state::get("hops")?.unwrap_or(0))
    }
}

quark_sdk::actor!(Polyglot { hop, hops });
