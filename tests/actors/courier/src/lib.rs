//! A test actor for the outbox: it sends messages (one or many in a turn,
//! oversized, or from a turn that then fails) and records what it receives,
//! with the message id and sender, so tests can check exactly-once and
//! order. A received message can ask it to fail.
use quark_sdk::{Deserialize, Error, Result, Serialize, Value, outbox, state};

#[derive(Deserialize)]
struct Send {
    #[serde(default)]
    to: String,
    /// Send to this sink instead (CloudEvents type `test.event`).
    sink: Option<String>,
    #[serde(default = "receive")]
    method: String,
    #[serde(default)]
    payload: Value,
    id: Option<String>,
    /// Send this many (payload `{"n": i}`, or the given object with `"n": i`
    /// added), in order.
    count: Option<u32>,
    /// Fail the turn after sending: nothing may be sent.
    #[serde(default)]
    fail: bool,
    /// Pad the payload to this many bytes.
    bytes: Option<usize>,
}

fn receive() -> String {
    "receive".into()
}

#[derive(Serialize, Deserialize)]
struct Received {
    id: String,
    sender: String,
    payload: Value,
}

struct Courier;

impl Courier {
    fn send(request: Send) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        match (request.count, request.bytes) {
            (Some(n), _) => {
                for i in 0..n {
                    let mut payload = if request.payload.is_null() { serde_json::json!({"n": i}) } else { request.payload.clone() };
                    if let Some(object) = payload.as_object_mut() {
                        object.insert("n".into(), i.into());
                    }
                    let message = match &request.sink {
                        Some(sink) => outbox::to_sink(sink, &payload)?,
                        None => outbox::to_actor(&request.to, &request.method, &payload)?,
                    };
                    ids.push(message.send()?);
                }
            }
            (None, Some(bytes)) => ids.push(outbox::to_actor(&request.to, &request.method, &"x".repeat(bytes))?.send()?),
            (None, None) => {
                let mut message = match &request.sink {
                    Some(sink) => outbox::to_sink(sink, &request.payload)?.event_type("test.event"),
                    None => outbox::to_actor(&request.to, &request.method, &request.payload)?,
                };
                if let Some(id) = &request.id {
                    message = message.id(id);
                }
                ids.push(message.send()?);
            }
        }
        let sent: u64 = state::get("sent")?.unwrap_or(0);
        state::set("sent", &(sent + ids.len() as u64))?;
        if request.fail {
            return Err(Error::rejected("failing after sending"));
        }
        Ok(ids)
    }

    /// Records the message; `{"fail": true}` fails every delivery with an
    /// error, `{"trap": true}` traps, `{"sleep_ms": N}` takes N ms first,
    /// and `{"n": N, "fail_n": N}` fails the first delivery of message N
    /// (once per instance).
    fn receive(payload: Value) -> Result<u64> {
        static FAILED_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if payload.get("fail_n").is_some_and(|f| Some(f) == payload.get("n")) && !FAILED_ONCE.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::internal("failing this message's first delivery on purpose"));
        }
        if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if payload.get("fail").and_then(Value::as_bool) == Some(true) {
            return Err(Error::internal("this receiver fails on purpose"));
        }
        if payload.get("trap").and_then(Value::as_bool) == Some(true) {
            panic!("this receiver traps on purpose");
        }
        let (id, sender) = outbox::current().unwrap_or_default();
        let mut received: Vec<Received> = state::get("received")?.unwrap_or_default();
        received.push(Received { id, sender, payload });
        state::set("received", &received)?;
        Ok(received.len() as u64)
    }

    fn received(_: ()) -> Result<Vec<Received>> {
        Ok(state::get("received")?.unwrap_or_default())
    }
}

quark_sdk::actor!(Courier { send, receive, received });
