//! An order as a saga: reserve the stock, charge the card, ship; when a
//! step fails, undo the ones before it in reverse order. Each step is an
//! activity (a method of `shop/…`, see `samples/shop`) that takes effect
//! once however often the host crashes and replays the workflow.
//!
//! `quark workflow start order-saga --id o-42 '{"order":"o-42","item":"book","amount":30}'`
use quark_sdk::workflow::{self, Saga};
use quark_sdk::{Deserialize, Error, Result, Value, json};

#[derive(Deserialize)]
struct Order {
    order: String,
    item: String,
    amount: i64,
    /// The shop actor whose methods are the activities.
    #[serde(default = "default_shop")]
    shop: String,
}

fn default_shop() -> String {
    "shop/main".into()
}

struct OrderSaga;

impl OrderSaga {
    fn run(o: Order) -> Result<Value> {
        let order = json!({ "order": o.order });
        let mut saga = Saga::new();
        let steps: [(&str, Value, Option<&str>); 3] = [
            ("reserve", json!({ "order": o.order, "item": o.item }), Some("release")),
            ("charge", json!({ "order": o.order, "amount": o.amount }), Some("refund")),
            ("ship", order.clone(), None),
        ];
        for (method, request, undo) in steps {
            workflow::set_status(&json!({ "step": method }));
            match workflow::call::<_, Value>(&o.shop, method, &request) {
                Ok(_) => {
                    if let Some(undo) = undo {
                        saga.on_failure(&o.shop, undo, &order)?;
                    }
                }
                Err(e) => {
                    workflow::set_status(&json!({ "step": method, "compensating": true }));
                    let failed = saga.compensate();
                    let message = match e {
                        Error::Rejected(m) | Error::NotFound(m) | Error::Internal(m) | Error::Unavailable(m) | Error::Timeout(m) | Error::LimitExceeded(m) => m,
                    };
                    return Err(Error::rejected(format!(
                        "{method} failed ({message}); compensated{}",
                        if failed.is_empty() { String::new() } else { format!(", {} compensations failed", failed.len()) }
                    )));
                }
            }
        }
        workflow::set_status(&json!({ "step": "done" }));
        Ok(json!({ "order": o.order, "status": "shipped" }))
    }
}

quark_sdk::workflow!(OrderSaga);
