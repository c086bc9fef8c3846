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

/// The error every capability and handler returns; the WIT `error` variant.
pub use bindings::quark::actor::types::Error;

/// The result of a handler or a capability call.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// The request was understood and refused: shown to the caller as a 4xx.
    pub fn rejected(message: impl Into<String>) -> Self {
        Error::Rejected(message.into())
    }

    /// Something is missing: shown to the caller as a 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
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
    let request = serde_json::from_slice(payload)
        .map_err(|e| Error::rejected(format!("bad request for `{name}`: {e}")))?;
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
