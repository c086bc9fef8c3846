//! Fan-out and fan-in: the price of `items` items, each an activity
//! (`shop/{n} price`, spread over `shops` shop actors so they run side by
//! side), started at once and summed. The history records each reply: a
//! crash halfway asks again only for those not recorded yet.
//!
//! `quark workflow start fan-out --id f-1 '{"items": 1000}'`
use quark_sdk::workflow;
use quark_sdk::{Deserialize, Result, Value, json};

#[derive(Deserialize)]
struct Batch {
    #[serde(default = "thousand")]
    items: u32,
    #[serde(default = "ten")]
    shops: u32,
}

fn thousand() -> u32 {
    1000
}

fn ten() -> u32 {
    10
}

struct FanOut;

impl FanOut {
    fn run(b: Batch) -> Result<Value> {
        let handles = (0..b.items)
            .map(|item| workflow::start(&format!("shop/{}", item % b.shops.max(1)), "price", &json!({ "item": item })))
            .collect::<Result<Vec<_>>>()?;
        let prices = workflow::wait_all::<u64>(&handles).into_iter().collect::<Result<Vec<u64>>>()?;
        Ok(json!({ "items": prices.len(), "total": prices.iter().sum::<u64>() }))
    }
}

quark_sdk::workflow!(FanOut);
