//! A projection (CQRS read model) over every `bank` account's events:
//! `total` is the sum of all balances, `top {"n": 3}` the richest accounts.
//!
//! Declare it with `quark projections add accounts-summary --source bank
//! --target accounts-summary/all`; the host then calls `project` with every
//! bank event, in order, exactly once.
use quark_sdk::{Deserialize, Result, Serialize, Value, state};

/// One batch of events, as the host delivers it.
#[derive(Deserialize)]
struct Batch {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    actor: String,
    data: Value,
}

/// The bank's events (the same JSON the `bank` sample writes).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BankEvent {
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

#[derive(Deserialize, Default)]
struct Top {
    n: Option<usize>,
}

#[derive(Serialize)]
struct Ranked {
    account: String,
    balance: i64,
}

const BALANCE: &str = "balance/";

struct Summary;

impl Summary {
    /// Folds a batch of bank events into per-account balances and the total.
    fn project(batch: Batch) -> Result<usize> {
        let mut total: i64 = state::get("total")?.unwrap_or(0);
        for event in &batch.events {
            let Ok(change) = serde_json::from_value::<BankEvent>(event.data.clone()) else { continue };
            let delta = match change {
                BankEvent::Deposited { amount } => amount,
                BankEvent::Withdrawn { amount } => -amount,
            };
            let account = event.actor.split_once('/').map_or(event.actor.as_str(), |(_, key)| key);
            let key = format!("{BALANCE}{account}");
            let balance: i64 = state::get(&key)?.unwrap_or(0);
            state::set(&key, &(balance + delta))?;
            total += delta;
        }
        state::set("total", &total)?;
        Ok(batch.events.len())
    }

    /// The sum of every account's balance.
    fn total(_: ()) -> Result<i64> {
        Ok(state::get("total")?.unwrap_or(0))
    }

    /// The `n` accounts with the highest balances (default 3).
    fn top(request: Option<Top>) -> Result<Vec<Ranked>> {
        let n = request.unwrap_or_default().n.unwrap_or(3);
        let mut ranked = Vec::new();
        for key in state::keys()? {
            if let Some(account) = key.strip_prefix(BALANCE) {
                ranked.push(Ranked { account: account.to_string(), balance: state::get(&key)?.unwrap_or(0) });
            }
        }
        ranked.sort_by(|a, b| b.balance.cmp(&a.balance).then_with(|| a.account.cmp(&b.account)));
        ranked.truncate(n);
        Ok(ranked)
    }
}

quark_sdk::actor!(Summary { project, total, top });
