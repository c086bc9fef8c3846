//! Write Quark actors in Rust.
//!
//! An actor is a type with one associated function per method. Each method
//! takes a request that deserializes from JSON and returns a
//! [`Result`] of something that serializes to JSON:
//!
//! ```ignore
//! use quark_sdk::{state, Deserialize, Result};
//!
//! #[derive(Deserialize)]
//! struct Increment { by: i64 }
//!
//! struct Counter;
//!
//! impl Counter {
//!     fn increment(Increment { by }: Increment) -> Result<i64> {
//!         let value = state::get::<i64>("value")?.unwrap_or(0) + by;
//!         state::set("value", &value)?;
//!         Ok(value)
//!     }
//!     fn get(_: ()) -> Result<i64> {
//!         Ok(state::get("value")?.unwrap_or(0))
//!     }
//! }
//!
//! quark_sdk::actor!(Counter { increment, get });
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` and deploy the `.wasm`
//! with `quark deploy`.

pub use serde::{Deserialize, Serialize, de::DeserializeOwned};
pub use serde_json::{self, Value, json};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "actor",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "quark_sdk::bindings",
    });
}

/// Bindings for the `aggregate-export` world: the `aggregate` export an
/// event-sourced actor adds to the `actor` world (types shared with
/// [`bindings`]). Only [`event_sourced!`] exports through it.
#[doc(hidden)]
pub mod es_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "aggregate-export",
        pub_export_macro: true,
        export_macro_name: "export_aggregate",
        default_bindings_module: "quark_sdk::es_bindings",
        with: {
            "quark:actor/types@0.1.0": crate::bindings::quark::actor::types,
            "quark:actor/journal@0.1.0": crate::bindings::quark::actor::journal,
        },
    });
}

/// Bindings for the `durable-workflow` world: the `workflow` import and the
/// `workflow-run` export (types and logging shared with [`bindings`]).
/// Only [`workflow!`] exports through it.
#[doc(hidden)]
pub mod wf_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "durable-workflow",
        pub_export_macro: true,
        export_macro_name: "export_workflow",
        default_bindings_module: "quark_sdk::wf_bindings",
        with: {
            "quark:actor/types@0.1.0": crate::bindings::quark::actor::types,
            "quark:actor/log@0.1.0": crate::bindings::quark::actor::log,
        },
    });
}

pub mod workflow;

/// The error every capability and handler returns; the WIT `error` variant.
pub use bindings::quark::actor::types::Error;

/// The result of a handler or a capability call.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// The request was valid and the actor refused it (a business rule):
    /// shown to the caller as a 422 `rejected`.
    pub fn rejected(message: impl Into<String>) -> Self {
        Error::Rejected(message.into())
    }

    /// The caller sent something wrong (a payload that does not decode, a
    /// missing or malformed field): shown as a 400 `bad-request`. On the wire
    /// it is `rejected` with a message starting `bad request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        if message.starts_with("bad request") { Error::Rejected(message) } else { Error::Rejected(format!("bad request: {message}")) }
    }

    /// Something is missing: shown to the caller as a 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// A dependency is unavailable; retrying later may work (jobs retry it).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable(message.into())
    }

    /// A bug or unexpected failure inside the actor.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}


/// Durable per-actor key/value state, committed with the turn.
pub mod state {
    use super::{DeserializeOwned, Error, Result, Serialize, bindings::quark::actor::state};

    /// Reads and decodes the JSON value under `key`.
    pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        match state::get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::internal(format!("state `{key}` is not valid JSON for this type: {e}"))),
        }
    }

    /// Encodes `value` as JSON and stores it under `key`.
    pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::internal(format!("encoding state `{key}`: {e}")))?;
        state::set(key, &bytes)
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<()> {
        state::delete(key)
    }

    /// Every key of this actor.
    pub fn keys() -> Result<Vec<String>> {
        state::keys()
    }

    /// Raw bytes under `key`, without JSON decoding.
    pub fn get_raw(key: &str) -> Result<Option<Vec<u8>>> {
        state::get(key)
    }

    /// Stores raw bytes under `key`, without JSON encoding.
    pub fn set_raw(key: &str, value: &[u8]) -> Result<()> {
        state::set(key, value)
    }
}

/// The actor's journal: append-only events, committed with the turn.
///
/// Any actor may append events (an audit trail). An event-sourced actor
/// (see [`EventSourced`]) appends through [`emit`](crate::emit), which also
/// folds the event into its state.
pub mod journal {
    use super::{Error, Result, Serialize, bindings::quark::actor::journal};

    /// An event as the journal holds it, with its audit fields.
    pub use super::bindings::quark::actor::journal::RecordedEvent;

    /// Appends one event whose body is `data` encoded as JSON; returns its version.
    pub fn append<T: Serialize + ?Sized>(event_type: &str, schema_version: u32, data: &T) -> Result<u64> {
        let data = serde_json::to_vec(data).map_err(|e| Error::internal(format!("encoding event `{event_type}`: {e}")))?;
        append_raw(event_type, schema_version, &data)
    }

    /// Appends one event with a raw body; returns its version.
    pub fn append_raw(event_type: &str, schema_version: u32, data: &[u8]) -> Result<u64> {
        journal::append(&[journal::Event { event_type: event_type.to_string(), schema_version, data: data.to_vec() }])
    }

    /// This actor's version: committed events plus this turn's.
    pub fn version() -> Result<u64> {
        journal::version()
    }

    /// Up to `max` committed events from version `from` on.
    pub fn read(from: u64, max: u32) -> Result<Vec<RecordedEvent>> {
        journal::read(from, max)
    }

    /// Asks the host to snapshot this (event-sourced) actor after this turn.
    pub fn request_snapshot() {
        journal::request_snapshot()
    }
}

/// An event-sourced actor's state: always the fold of its events.
///
/// Commands (the methods listed in [`event_sourced!`]) validate and call
/// [`emit`]; only `apply` changes the state. The host rebuilds the state
/// on activation from the latest snapshot (this type as JSON) plus the
/// events after it.
pub trait EventSourced: Default + Serialize + DeserializeOwned + 'static {
    /// The events, stored as JSON. An enum's variant name is the event type.
    type Event: Serialize + DeserializeOwned;

    /// Version of the events' shape. Bump it when a field changes, and
    /// convert older events in [`EventSourced::upcast`].
    const SCHEMA_VERSION: u32 = 1;

    /// Folds one event into the state. It must accept every event that
    /// [`emit`] recorded: the journal cannot be changed afterwards.
    fn apply(&mut self, event: Self::Event);

    /// Turns the JSON of an event written with an older `schema_version`
    /// into the current shape. The default keeps it as it is.
    fn upcast(event_type: &str, schema_version: u32, data: Value) -> Result<Value> {
        let _ = (event_type, schema_version);
        Ok(data)
    }
}

/// Records `event` in the journal (committed with this turn) and folds it
/// into `state`; returns the actor's new version.
pub fn emit<S: EventSourced>(state: &mut S, event: S::Event) -> Result<u64> {
    let value = serde_json::to_value(&event).map_err(|e| Error::internal(format!("encoding an event: {e}")))?;
    let event_type = event_type_of::<S::Event>(&value);
    let data = serde_json::to_vec(&value).map_err(|e| Error::internal(format!("encoding event `{event_type}`: {e}")))?;
    let version = journal::append_raw(&event_type, S::SCHEMA_VERSION, &data)?;
    state.apply(event);
    Ok(version)
}

/// An event's type name from its JSON: the variant of an enum (externally
/// tagged or `#[serde(tag = "type")]`), else the Rust type's name.
fn event_type_of<E>(value: &Value) -> String {
    match value {
        Value::String(unit_variant) => unit_variant.clone(),
        Value::Object(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
        Value::Object(map) if map.get("type").is_some_and(Value::is_string) => map["type"].as_str().unwrap_or_default().to_string(),
        _ => core::any::type_name::<E>().rsplit("::").next().unwrap_or("event").to_string(),
    }
}

/// Folds recorded events into `state`, upcasting old schema versions.
#[doc(hidden)]
pub fn apply_recorded<S: EventSourced>(state: &mut S, events: Vec<journal::RecordedEvent>) -> Result<()> {
    for recorded in events {
        let value: Value = serde_json::from_slice(&recorded.data).map_err(|e| {
            Error::internal(format!("event {} (`{}`) is not JSON: {e}", recorded.version, recorded.event_type))
        })?;
        let value = if recorded.schema_version == S::SCHEMA_VERSION {
            value
        } else {
            S::upcast(&recorded.event_type, recorded.schema_version, value)?
        };
        let event: S::Event = serde_json::from_value(value).map_err(|e| {
            Error::internal(format!(
                "event {} (`{}`, schema {}) does not decode as this actor's events: {e}; \
                 convert old shapes in `EventSourced::upcast`",
                recorded.version, recorded.event_type, recorded.schema_version
            ))
        })?;
        state.apply(event);
    }
    Ok(())
}

/// Durable jobs: work delivered later as a turn of an actor, retried until
/// it succeeds. Scheduling and cancelling commit with the current turn.
///
/// ```ignore
/// let id = quark_sdk::jobs::job("reports/acme", "nightly", &json!({}))?
///     .cron("0 2 * * *")
///     .time_zone("Europe/Paris")
///     .key("nightly-acme")
///     .schedule()?;
/// ```
pub mod jobs {
    use super::{Error, Result, Serialize, bindings::quark::actor::jobs};

    pub use super::bindings::quark::actor::jobs::{CatchUp, Job, When};

    /// A job being described; [`JobBuilder::schedule`] schedules it.
    #[derive(Debug, Clone)]
    pub struct JobBuilder {
        job: Job,
    }

    /// Starts describing a job that calls `method` of `target` with `payload`
    /// as JSON, as soon as this turn commits (change it with `at`, `after_ms`
    /// or `cron`).
    pub fn job<T: Serialize + ?Sized>(target: &str, method: &str, payload: &T) -> Result<JobBuilder> {
        let payload = serde_json::to_vec(payload).map_err(|e| Error::internal(format!("encoding the job's payload: {e}")))?;
        Ok(JobBuilder {
            job: Job {
                target: target.to_string(),
                method: method.to_string(),
                payload,
                when: When::Delay(0),
                time_zone: None,
                max_attempts: None,
                backoff_ms: None,
                max_backoff_ms: None,
                timeout_ms: None,
                priority: 0,
                queue: None,
                idempotency_key: None,
                catch_up: None,
            },
        })
    }

    impl JobBuilder {
        /// Runs at this time (ms since the Unix epoch).
        pub fn at(mut self, ms: u64) -> Self {
            self.job.when = When::At(ms);
            self
        }
        /// Runs this many ms after the turn commits.
        pub fn after_ms(mut self, ms: u64) -> Self {
            self.job.when = When::Delay(ms);
            self
        }
        /// Runs on every tick of a cron expression (UTC unless `time_zone`).
        pub fn cron(mut self, expression: &str) -> Self {
            self.job.when = When::Cron(expression.to_string());
            self
        }
        /// The cron expression's IANA time zone.
        pub fn time_zone(mut self, zone: &str) -> Self {
            self.job.time_zone = Some(zone.to_string());
            self
        }
        /// Attempts before the dead-letter list (default 5).
        pub fn max_attempts(mut self, attempts: u32) -> Self {
            self.job.max_attempts = Some(attempts);
            self
        }
        /// First retry delay and the longest one, in ms.
        pub fn backoff_ms(mut self, first: u64, longest: u64) -> Self {
            self.job.backoff_ms = Some(first);
            self.job.max_backoff_ms = Some(longest);
            self
        }
        /// Longest one attempt may run, in ms.
        pub fn timeout_ms(mut self, ms: u64) -> Self {
            self.job.timeout_ms = Some(ms);
            self
        }
        /// Higher runs first (default 0).
        pub fn priority(mut self, priority: i32) -> Self {
            self.job.priority = priority;
            self
        }
        /// The queue whose concurrency limit it counts against.
        pub fn queue(mut self, queue: &str) -> Self {
            self.job.queue = Some(queue.to_string());
            self
        }
        /// An idempotency key: scheduling the same key twice yields one job.
        pub fn key(mut self, key: &str) -> Self {
            self.job.idempotency_key = Some(key.to_string());
            self
        }
        /// What a recurring job does about missed ticks.
        pub fn catch_up(mut self, policy: CatchUp) -> Self {
            self.job.catch_up = Some(policy);
            self
        }
        /// Schedules it (committed with this turn); returns its id.
        pub fn schedule(self) -> Result<String> {
            jobs::schedule(&self.job)
        }
    }

    /// Cancels a job (committed with this turn); false if there is none.
    pub fn cancel(id: &str) -> Result<bool> {
        jobs::cancel(id)
    }

    /// The job this turn runs, if any: its id and attempt (1, 2, …).
    pub fn current() -> Option<(String, u32)> {
        jobs::current()
    }

    /// Reports progress of the job this turn runs.
    pub fn progress(percent: u8, note: &str) {
        jobs::progress(percent, note)
    }
}

/// The outbox: messages sent with this turn, delivered after it commits.
///
/// ```ignore
/// outbox::to_actor("bank/bob", "credit", &Credit { amount: 10 })?.id("transfer-17").send()?;
/// ```
pub mod outbox {
    use super::{Error, Result, Serialize, bindings::quark::actor::outbox};

    pub use super::bindings::quark::actor::outbox::{ActorMethod, Destination, Message};

    /// A message being described; [`MessageBuilder::send`] sends it.
    #[derive(Debug, Clone)]
    pub struct MessageBuilder {
        message: Message,
    }

    fn builder<T: Serialize + ?Sized>(destination: Destination, payload: &T) -> Result<MessageBuilder> {
        let payload = serde_json::to_vec(payload).map_err(|e| Error::internal(format!("encoding the message: {e}")))?;
        Ok(MessageBuilder { message: Message { destination, payload, id: None, event_type: None } })
    }

    /// A message that runs `method` of `actor` with `payload` as JSON, once.
    pub fn to_actor<T: Serialize + ?Sized>(actor: &str, method: &str, payload: &T) -> Result<MessageBuilder> {
        builder(Destination::Actor(ActorMethod { actor: actor.to_string(), method: method.to_string() }), payload)
    }

    /// A message to the sink `name` of the host's config, as a CloudEvent.
    pub fn to_sink<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<MessageBuilder> {
        builder(Destination::Sink(name.to_string()), payload)
    }

    impl MessageBuilder {
        /// Its id (the receiver dedups by it); a fresh one by default.
        pub fn id(mut self, id: &str) -> Self {
            self.message.id = Some(id.to_string());
            self
        }
        /// The CloudEvents `type` a sink sees.
        pub fn event_type(mut self, event_type: &str) -> Self {
            self.message.event_type = Some(event_type.to_string());
            self
        }
        /// Sends it (committed with this turn); returns its id.
        pub fn send(self) -> Result<String> {
            outbox::send(&self.message)
        }
    }

    /// The message this turn handles, if it is a delivery: its id and sender.
    pub fn current() -> Option<(String, String)> {
        outbox::current()
    }
}

/// Logging into the host's log, tagged with this actor's id.
pub mod log {
    use super::bindings::quark::actor::log::{Level, log};

    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
}

use bindings::quark::actor::runtime;

/// Calls `method` of actor `target` (`type/key`) with `request` as JSON and
/// decodes its JSON reply. This actor waits; the host does not.
pub fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(target: &str, method: &str, request: &Req) -> Result<Resp> {
    let payload = serde_json::to_vec(request).map_err(|e| Error::internal(format!("encoding request: {e}")))?;
    let reply = runtime::call(target, method, &payload)?;
    serde_json::from_slice(&reply).map_err(|e| Error::internal(format!("reply of {target} {method} is not the expected JSON: {e}")))
}

/// Sends `request` to `method` of `target` without waiting for it to run.
pub fn tell<Req: Serialize + ?Sized>(target: &str, method: &str, request: &Req) -> Result<()> {
    let payload = serde_json::to_vec(request).map_err(|e| Error::internal(format!("encoding request: {e}")))?;
    runtime::tell(target, method, &payload)
}

/// This actor's id, `type/key`.
pub fn self_id() -> String {
    runtime::self_id()
}

/// The key part of this actor's id (`alice` in `counter/alice`).
pub fn self_key() -> String {
    let id = runtime::self_id();
    id.split_once('/').map(|(_, key)| key.to_string()).unwrap_or(id)
}

/// The actor that called this turn, or `None` for an outside request.
pub fn caller() -> Option<String> {
    runtime::caller()
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    runtime::now()
}

/// Decodes `payload` (empty means JSON `null`), runs `method`, encodes its reply.
#[doc(hidden)]
pub fn dispatch<Req: DeserializeOwned, Resp: Serialize>(
    name: &str,
    payload: &[u8],
    method: impl FnOnce(Req) -> Result<Resp>,
) -> Result<Vec<u8>> {
    let payload = if payload.is_empty() { b"null".as_slice() } else { payload };
    // The same words as the Python and JavaScript SDKs: without serde's
    // "at line 1 column 12" (the request is one line anyway).
    let bad = |e: serde_json::Error| {
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
        Error::bad_request(format!("bad request for `{name}`: {message}"))
    };
    let request = match serde_json::from_slice(payload) {
        Ok(request) => request,
        // A method that takes nothing (`()`) accepts `{}` as well as `null`
        // and an empty body: `{}` is what most callers send for "nothing".
        Err(e) => match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(serde_json::Value::Object(fields)) if fields.is_empty() => serde_json::from_value(serde_json::Value::Null).map_err(|_| bad(e))?,
            _ => return Err(bad(e)),
        },
    };
    let response = method(request)?;
    serde_json::to_vec(&response).map_err(|e| Error::internal(format!("encoding reply of `{name}`: {e}")))
}

/// Exports `Type` as a Quark actor whose methods are the listed associated
/// functions: `quark_sdk::actor!(Counter { increment, get });`.
///
/// Each function has the shape `fn(Req) -> Result<Resp>` with `Req:
/// Deserialize` and `Resp: Serialize`; use `()` for no request. A method
/// name that is not listed is answered with `not-found`.
#[macro_export]
macro_rules! actor {
    ($ty:ty { $($method:ident),* $(,)? }) => {
        #[doc(hidden)]
        pub struct QuarkActorExport;

        impl $crate::bindings::exports::quark::actor::handler::Guest for QuarkActorExport {
            fn handle(method: ::std::string::String, payload: ::std::vec::Vec<u8>)
                -> ::core::result::Result<::std::vec::Vec<u8>, $crate::Error>
            {
                match method.as_str() {
                    $( stringify!($method) => $crate::dispatch(stringify!($method), &payload, <$ty>::$method), )*
                    other => ::core::result::Result::Err($crate::Error::NotFound(
                        ::std::format!("unknown method `{}` (this actor has: {})", other, [$(stringify!($method)),*].join(", ")),
                    )),
                }
            }
        }

        $crate::bindings::export!(QuarkActorExport with_types_in $crate::bindings);
    };
}

/// Exports `Type` (an [`EventSourced`] state) as an event-sourced Quark
/// actor whose commands are the listed methods:
/// `quark_sdk::event_sourced!(Account { deposit, withdraw, balance });`.
///
/// Each method has the shape `fn(&mut self, Req) -> Result<Resp>`; it
/// validates the request and calls [`emit`] for what happened. The host
/// calls `apply`, `snapshot` and `restore` to rebuild the state from the
/// journal.
#[macro_export]
macro_rules! event_sourced {
    ($ty:ty { $($method:ident),* $(,)? }) => {
        ::std::thread_local! {
            static QUARK_STATE: ::core::cell::RefCell<$ty> = ::core::cell::RefCell::new(<$ty as ::core::default::Default>::default());
        }

        #[doc(hidden)]
        pub struct QuarkActorExport;

        impl $crate::bindings::exports::quark::actor::handler::Guest for QuarkActorExport {
            fn handle(method: ::std::string::String, payload: ::std::vec::Vec<u8>)
                -> ::core::result::Result<::std::vec::Vec<u8>, $crate::Error>
            {
                QUARK_STATE.with(|cell| {
                    let mut state = cell.borrow_mut();
                    match method.as_str() {
                        $( stringify!($method) => $crate::dispatch(stringify!($method), &payload, |request| <$ty>::$method(&mut *state, request)), )*
                        other => ::core::result::Result::Err($crate::Error::NotFound(
                            ::std::format!("unknown method `{}` (this actor has: {})", other, [$(stringify!($method)),*].join(", ")),
                        )),
                    }
                })
            }
        }

        impl $crate::es_bindings::exports::quark::actor::aggregate::Guest for QuarkActorExport {
            fn apply(events: ::std::vec::Vec<$crate::journal::RecordedEvent>) -> ::core::result::Result<(), $crate::Error> {
                QUARK_STATE.with(|cell| $crate::apply_recorded(&mut *cell.borrow_mut(), events))
            }

            fn snapshot() -> ::core::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                QUARK_STATE.with(|cell| {
                    $crate::serde_json::to_vec(&*cell.borrow())
                        .map_err(|e| $crate::Error::internal(::std::format!("encoding the snapshot: {e}")))
                })
            }

            fn restore(snapshot: ::std::vec::Vec<u8>) -> ::core::result::Result<(), $crate::Error> {
                let state: $ty = $crate::serde_json::from_slice(&snapshot)
                    .map_err(|e| $crate::Error::rejected(::std::format!("the snapshot does not decode as this actor's state: {e}")))?;
                QUARK_STATE.with(|cell| *cell.borrow_mut() = state);
                ::core::result::Result::Ok(())
            }
        }

        $crate::bindings::export!(QuarkActorExport with_types_in $crate::bindings);
        $crate::es_bindings::export_aggregate!(QuarkActorExport with_types_in $crate::es_bindings);
    };
}
