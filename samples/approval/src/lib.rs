//! A request that waits for a person: the `decision` signal
//! (`{"approved": true, "by": "ada"}`), for at most `timeout_ms`; without
//! one it escalates (notifies `escalate_to`) and waits as long again, then
//! gives up. The instance need not stay in memory while it waits: a
//! durable timer wakes it.
//!
//! `quark workflow start approval --id r-1 '{"request": "new laptop", "approver": "ada", "escalate_to": "grace", "timeout_ms": 60000}'`
//! `quark workflow signal r-1 decision '{"approved": true, "by": "ada"}'`
use std::time::Duration;

use quark_sdk::workflow;
use quark_sdk::{Deserialize, Error, Result, Value, json};

#[derive(Deserialize)]
struct Request {
    request: String,
    approver: String,
    escalate_to: String,
    /// How long each of the two waits lasts (default a day).
    #[serde(default = "a_day")]
    timeout_ms: u64,
    /// The actor that sends notifications.
    #[serde(default = "default_notifier")]
    notifier: String,
}

fn a_day() -> u64 {
    24 * 3600 * 1000
}

fn default_notifier() -> String {
    "shop/main".into()
}

#[derive(Deserialize)]
struct Decision {
    approved: bool,
    by: String,
}

struct Approval;

impl Approval {
    fn run(r: Request) -> Result<Value> {
        let wait = Duration::from_millis(r.timeout_ms);
        let notify = |to: &str, message: String| workflow::call::<_, Value>(&r.notifier, "notify", &json!({ "to": to, "message": message }));
        notify(&r.approver, format!("please decide on: {}", r.request))?;
        for (round, asked) in [r.approver.as_str(), r.escalate_to.as_str()].into_iter().enumerate() {
            workflow::set_status(&json!({ "waiting_for": asked, "since": workflow::now_ms() }));
            if let Some(d) = workflow::wait_signal::<Decision>("decision", Some(wait))? {
                return Ok(json!({ "request": r.request, "approved": d.approved, "by": d.by, "escalated": round > 0 }));
            }
            if round == 0 {
                notify(&r.escalate_to, format!("{} did not decide on {} in time: please decide", r.approver, r.request))?;
            }
        }
        Err(Error::rejected(format!("no decision on {} from {} or {}", r.request, r.approver, r.escalate_to)))
    }
}

quark_sdk::workflow!(Approval);
