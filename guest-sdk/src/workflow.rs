//! Durable workflows: a `run` the host replays from its history after a
//! crash, a restart or a move, so each activity takes effect once.
//!
//! ```ignore
//! use quark_sdk::workflow::{self, Saga};
//! use quark_sdk::{Deserialize, Result, json};
//!
//! #[derive(Deserialize)]
//! struct Order { id: String, amount: i64 }
//!
//! struct OrderSaga;
//!
//! impl OrderSaga {
//!     fn run(order: Order) -> Result<String> {
//!         let mut saga = Saga::new();
//!         workflow::call::<_, ()>("stock/widgets", "reserve", &json!({ "order": order.id }))?;
//!         saga.on_failure("stock/widgets", "release", &json!({ "order": order.id }))?;
//!         if let Err(e) = workflow::call::<_, ()>("payments/acme", "charge", &json!({ "amount": order.amount })) {
//!             saga.compensate();
//!             return Err(e);
//!         }
//!         Ok("shipped".into())
//!     }
//! }
//!
//! quark_sdk::workflow!(OrderSaga);
//! ```
//!
//! Everything a workflow learns from outside goes through this module (or
//! WASI, which the host records too): calling the same functions in the
//! same order is what makes a replay reach the same point. Changing that
//! order for running instances is a new version: `quark workflow check`
//! says which histories the new code would break.

use std::time::Duration;

use super::{DeserializeOwned, Error, Result, Serialize, wf_bindings::quark::actor::workflow as wit};

/// A started activity or child workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(u32);

fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("encoding {what}: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let bytes = if bytes.is_empty() { b"null".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("{what} is not the expected JSON: {e}")))
}

/// Starts `method` of actor `target` with `request` as JSON; returns at
/// once. Wait for it with [`wait`], [`wait_all`] or [`wait_any`].
pub fn start<Req: Serialize + ?Sized>(target: &str, method: &str, request: &Req) -> Result<Handle> {
    Ok(Handle(wit::start_activity(target, method, &encode(request, "an activity's request")?)))
}

/// Calls `method` of actor `target` as an activity and waits for its reply.
pub fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(target: &str, method: &str, request: &Req) -> Result<Resp> {
    wait(start(target, method, request)?)
}

/// Starts the child workflow `id` of `workflow_type` with `input`.
pub fn start_child<In: Serialize + ?Sized>(workflow_type: &str, id: &str, input: &In) -> Result<Handle> {
    Ok(Handle(wit::start_child(workflow_type, id, &encode(input, "a child's input")?)))
}

/// Waits for one activity or child: its reply.
pub fn wait<Resp: DeserializeOwned>(handle: Handle) -> Result<Resp> {
    wait_all(&[handle]).pop().unwrap_or_else(|| Err(Error::internal("no reply")))
}

/// Waits for all of `handles` (they run at once): their replies, in order.
pub fn wait_all<Resp: DeserializeOwned>(handles: &[Handle]) -> Vec<Result<Resp>> {
    let ids: Vec<u32> = handles.iter().map(|h| h.0).collect();
    wit::await_all(&ids).into_iter().map(|r| r.and_then(|bytes| decode(&bytes, "a reply"))).collect()
}

/// Waits for the first of `handles` to finish: its position and reply.
pub fn wait_any<Resp: DeserializeOwned>(handles: &[Handle]) -> (usize, Result<Resp>) {
    let ids: Vec<u32> = handles.iter().map(|h| h.0).collect();
    let (i, r) = wit::await_any(&ids);
    (i as usize, r.and_then(|bytes| decode(&bytes, "a reply")))
}

/// Sleeps durably (a timer job wakes the workflow; it may be unloaded
/// meanwhile). An error once the workflow is cancelled.
pub fn sleep(duration: Duration) -> Result<()> {
    wit::sleep(duration.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// Waits for the signal `name`: its payload, or `None` after `timeout`.
pub fn wait_signal<T: DeserializeOwned>(name: &str, timeout: Option<Duration>) -> Result<Option<T>> {
    let timeout = timeout.map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64);
    match wit::wait_signal(name, timeout)? {
        Some(bytes) => decode(&bytes, "a signal").map(Some),
        None => Ok(None),
    }
}

/// Wall-clock ms since the Unix epoch, the same on every replay.
pub fn now_ms() -> u64 {
    wit::now()
}

/// A random number, the same on every replay.
pub fn random() -> u64 {
    wit::random()
}

/// Sets the status `GET /v1/workflows/{id}` shows (`custom_status`).
pub fn set_status<T: Serialize + ?Sized>(status: &T) {
    if let Ok(bytes) = serde_json::to_vec(status) {
        wit::set_status(&bytes);
    }
}

/// Ends this run and starts the next with `input` and an empty history.
pub fn continue_as_new<In: Serialize + ?Sized>(input: &In) -> Result<()> {
    wit::continue_as_new(&encode(input, "the next run's input")?);
    Err(Error::internal("continue-as-new returned"))
}

/// True once a wait of this run returned the cancellation error.
pub fn is_cancelled() -> bool {
    wit::is_cancelled()
}

/// This instance's id.
pub fn id() -> String {
    wit::id()
}

/// Compensations to run in reverse order when a later step fails (a saga).
#[derive(Debug, Default)]
pub struct Saga {
    steps: Vec<(String, String, Vec<u8>)>,
}

impl Saga {
    /// No compensations yet.
    pub fn new() -> Self {
        Saga::default()
    }

    /// Registers the call that undoes a step that just succeeded.
    pub fn on_failure<Req: Serialize + ?Sized>(&mut self, target: &str, method: &str, request: &Req) -> Result<()> {
        self.steps.push((target.to_string(), method.to_string(), encode(request, "a compensation")?));
        Ok(())
    }

    /// Runs every compensation, the last registered first, each once (they
    /// are activities); the errors of those that failed.
    pub fn compensate(self) -> Vec<Error> {
        let mut errors = Vec::new();
        for (target, method, payload) in self.steps.into_iter().rev() {
            let handle = Handle(wit::start_activity(&target, &method, &payload));
            if let Some(Err(e)) = wit::await_all(&[handle.0]).pop() {
                errors.push(e);
            }
        }
        errors
    }
}

/// Decodes the input, runs the workflow, encodes its output.
#[doc(hidden)]
pub fn run_with<In: DeserializeOwned, Out: Serialize>(input: &[u8], run: impl FnOnce(In) -> Result<Out>) -> Result<Vec<u8>> {
    let input = if input.is_empty() { b"null".as_slice() } else { input };
    let input = serde_json::from_slice(input).map_err(|e| Error::bad_request(format!("bad request for the workflow's input: {e}")))?;
    encode(&run(input)?, "the workflow's output")
}

/// Exports `Type` as a workflow: `quark_sdk::workflow!(OrderSaga);`, where
/// `OrderSaga::run(input: In) -> Result<Out>` with `In: Deserialize` and
/// `Out: Serialize`.
#[macro_export]
macro_rules! workflow {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct QuarkWorkflowExport;

        impl $crate::wf_bindings::exports::quark::actor::workflow_run::Guest for QuarkWorkflowExport {
            fn run(input: ::std::vec::Vec<u8>) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                $crate::workflow::run_with(&input, <$ty>::run)
            }
        }

        $crate::wf_bindings::export_workflow!(QuarkWorkflowExport with_types_in $crate::wf_bindings);
    };
}
