//! The activities of the order saga (`samples/order-saga`): a shop that
//! reserves stock, charges cards and ships orders, and undoes the first
//! two. Each method runs once per workflow step (the inbox sees to it);
//! `ledger` counts what ran, so a test can check that nothing ran twice.
use quark_sdk::{Deserialize, Error, Result, Value, json, state};

#[derive(Deserialize)]
struct Reserve {
    order: String,
    item: String,
    #[serde(default = "one")]
    qty: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct Charge {
    order: String,
    amount: i64,
}

#[derive(Deserialize)]
struct OrderRef {
    order: String,
}

#[derive(Deserialize)]
struct Notify {
    to: String,
    message: String,
}

#[derive(Deserialize)]
struct Price {
    item: u32,
}

/// Counts one run of `operation` for `order`.
fn record(operation: &str, order: &str) -> Result<u64> {
    let key = format!("ran/{operation}");
    let count = state::get::<u64>(&key)?.unwrap_or(0) + 1;
    state::set(&key, &count)?;
    let mut log = state::get::<Vec<String>>("log")?.unwrap_or_default();
    log.push(format!("{operation} {order}"));
    state::set("log", &log)?;
    Ok(count)
}

struct Shop;

impl Shop {
    fn reserve(Reserve { order, item, qty }: Reserve) -> Result<Value> {
        if item == "unobtainium" {
            return Err(Error::rejected(format!("{item} is out of stock")));
        }
        record("reserve", &order)?;
        Ok(json!({ "order": order, "item": item, "reserved": qty }))
    }

    fn release(OrderRef { order }: OrderRef) -> Result<Value> {
        record("release", &order)?;
        Ok(json!({ "order": order, "released": true }))
    }

    fn charge(Charge { order, amount }: Charge) -> Result<Value> {
        if amount > 1000 {
            return Err(Error::rejected(format!("card declined: {amount} is over the limit of 1000")));
        }
        record("charge", &order)?;
        Ok(json!({ "order": order, "charged": amount }))
    }

    fn refund(OrderRef { order }: OrderRef) -> Result<Value> {
        record("refund", &order)?;
        Ok(json!({ "order": order, "refunded": true }))
    }

    fn ship(OrderRef { order }: OrderRef) -> Result<Value> {
        record("ship", &order)?;
        Ok(json!({ "order": order, "shipped": true }))
    }

    /// Sends a person a message (here: keeps it in the log).
    fn notify(Notify { to, message }: Notify) -> Result<Value> {
        record("notify", &format!("{to}: {message}"))?;
        Ok(json!({ "notified": to }))
    }

    /// The price of item `item` (no state: a pure lookup).
    fn price(Price { item }: Price) -> Result<u64> {
        Ok(u64::from(item) * 7 % 100 + 1)
    }

    fn ledger(_: ()) -> Result<Value> {
        let mut ran = serde_json::Map::new();
        for key in state::keys()? {
            if let Some(operation) = key.strip_prefix("ran/") {
                ran.insert(operation.to_string(), json!(state::get::<u64>(&key)?.unwrap_or(0)));
            }
        }
        Ok(json!({ "ran": ran, "log": state::get::<Vec<String>>("log")?.unwrap_or_default() }))
    }
}

quark_sdk::actor!(Shop { reserve, release, charge, refund, ship, notify, price, ledger });
