//! A workflow for the tests: `{"mode": …}` picks what it does. The `v2`
//! feature (package `wf-probe-v2`) changes `two-steps` and `clock` the way
//! a careless new version would: a reordered step, an added clock read.
use std::time::Duration;

use quark_sdk::workflow::{self, Saga};
use quark_sdk::{Deserialize, Error, Result, Value, json};

#[derive(Deserialize)]
struct Input {
    mode: String,
    /// The counter actors' key prefix (activities are `counter/{key}-…`).
    #[serde(default)]
    key: String,
    #[serde(default)]
    n: u32,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    iteration: u32,
    /// Millions of rounds of busy work after each `paced` activity: it
    /// widens the window between an activity's commit and the workflow's.
    #[serde(default)]
    spin: u32,
    /// `steps`: then wait for the signal `go` (to time a replay).
    #[serde(default)]
    wait: bool,
}

/// Deterministic busy work (no clock, no host call).
fn spin(millions: u32) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..u64::from(millions) * 1_000_000 {
        x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(0x100_0000_01b3);
    }
    x
}

fn bump(target: &str) -> Result<i64> {
    workflow::call(target, "increment", &json!({ "by": 1 }))
}

struct Probe;

impl Probe {
    fn run(input: Input) -> Result<Value> {
        let key = &input.key;
        match input.mode.as_str() {
            // n activities one after the other.
            "steps" => {
                let mut last = 0;
                for i in 0..input.n {
                    workflow::set_status(&json!({ "step": i }));
                    last = bump(&format!("counter/{key}-{i}"))?;
                }
                if input.wait {
                    workflow::wait_signal::<Value>("go", None)?;
                }
                Ok(json!({ "steps": input.n, "last": last }))
            }
            // n activities at once, then their sum.
            "fan-out" => {
                let handles = (0..input.n)
                    .map(|i| workflow::start(&format!("counter/{key}-{i}"), "increment", &json!({ "by": i })))
                    .collect::<Result<Vec<_>>>()?;
                let replies: Vec<Result<i64>> = workflow::wait_all(&handles);
                let sum: i64 = replies.into_iter().collect::<Result<Vec<i64>>>()?.iter().sum();
                Ok(json!({ "sum": sum }))
            }
            // A durable timer between two activities.
            "sleep" => {
                bump(&format!("counter/{key}-before"))?;
                workflow::sleep(Duration::from_millis(input.ms))?;
                bump(&format!("counter/{key}-after"))?;
                Ok(json!({ "slept": input.ms }))
            }
            // A sleep, then a wait: a signal sent during the sleep is
            // taken when the wait starts.
            "late-wait" => {
                workflow::sleep(Duration::from_millis(input.ms))?;
                let payload = workflow::wait_signal::<Value>("go", None)?;
                Ok(json!({ "signal": payload }))
            }
            // n activities, each followed by a timer: every step boundary
            // is a commit (what the kill -9 loop aims at).
            "paced" => {
                for i in 0..input.n {
                    workflow::set_status(&json!({ "step": i }));
                    bump(&format!("counter/{key}-{i}"))?;
                    spin(input.spin);
                    workflow::sleep(Duration::from_millis(input.ms))?;
                }
                Ok(json!({ "steps": input.n }))
            }
            // A signal, or a timeout.
            "signal" => {
                let timeout = (input.ms > 0).then(|| Duration::from_millis(input.ms));
                match workflow::wait_signal::<Value>("go", timeout)? {
                    Some(payload) => Ok(json!({ "signal": payload })),
                    None => Ok(json!({ "signal": "timed out" })),
                }
            }
            // WASI's clocks and random read directly (not through the SDK),
            // shown in the status, then a sleep: after it the code runs
            // again from the start and must read the same values.
            "clock" => {
                if cfg!(feature = "v2") {
                    workflow::now_ms();
                }
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                let mono = std::time::Instant::now();
                use std::hash::BuildHasher;
                let random = std::collections::hash_map::RandomState::new().hash_one(42u8);
                let seen = json!({ "wall": wall, "random": random.to_string(), "sdk_now": workflow::now_ms() });
                workflow::set_status(&seen);
                workflow::sleep(Duration::from_millis(input.ms))?;
                let _ = mono.elapsed();
                Ok(seen)
            }
            // Two activities and a wait; v2 swaps them.
            "two-steps" => {
                let (a, b) = (format!("counter/{key}-a"), format!("counter/{key}-b"));
                if cfg!(feature = "v2") {
                    bump(&b)?;
                    bump(&a)?;
                } else {
                    bump(&a)?;
                    bump(&b)?;
                }
                workflow::wait_signal::<Value>("go", None)?;
                Ok(json!({ "done": true }))
            }
            // A child workflow (`steps`; `fail` when n is 0; `cancel`, a
            // long sleep, when ms is set).
            "child" => {
                let child_mode = if input.ms > 0 { "cancel" } else if input.n == 0 { "fail" } else { "steps" };
                let child = workflow::start_child("wf-probe", &format!("{}-child", workflow::id()), &json!({ "mode": child_mode, "key": key, "n": input.n }))?;
                let reply: Value = workflow::wait(child)?;
                Ok(json!({ "child": reply }))
            }
            // A child, an activity unless already cancelled, the wait for
            // the child; once cancelled, 300 clock reads (past a checkpoint,
            // so the next turn replays the run after the cancellation).
            "cancel-replay" => {
                let child = workflow::start_child("wf-probe", &format!("{}-child", workflow::id()), &json!({ "mode": "cancel", "key": key }))?;
                if !workflow::is_cancelled() {
                    bump(&format!("counter/{key}-x"))?;
                }
                if let Err(e) = workflow::wait::<Value>(child) {
                    for _ in 0..300 {
                        workflow::now_ms();
                    }
                    return Err(e);
                }
                Ok(json!({ "cancelled": false }))
            }
            "fail" => Err(Error::rejected("the probe failed on purpose")),
            // One activity per run; continue-as-new until n runs.
            "forever" => {
                bump(&format!("counter/{key}"))?;
                if input.iteration + 1 < input.n {
                    workflow::continue_as_new(&json!({ "mode": "forever", "key": key, "n": input.n, "iteration": input.iteration + 1 }))?;
                }
                Ok(json!({ "runs": input.n }))
            }
            // A long sleep; cancelled, it compensates and fails.
            "cancel" => {
                let mut saga = Saga::new();
                bump(&format!("counter/{key}-did"))?;
                saga.on_failure(&format!("counter/{key}-undid"), "increment", &json!({ "by": 1 }))?;
                if let Err(e) = workflow::sleep(Duration::from_secs(3600)) {
                    assert!(workflow::is_cancelled());
                    saga.compensate();
                    return Err(e);
                }
                Ok(json!({ "slept": true }))
            }
            other => Err(Error::bad_request(format!("no mode `{other}`"))),
        }
    }
}

quark_sdk::workflow!(Probe);
