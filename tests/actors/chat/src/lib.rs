//! A chat test actor for the locality repartitioner (issue 18), deployed
//! twice: as `room` (members join it; what one says it tells every
//! member) and as `user` (posts to its room, counts what it hears in
//! memory).
use quark_sdk::{Deserialize, Result, Serialize, Value, state};

#[derive(Deserialize)]
struct Join {
    user: String,
}

#[derive(Deserialize, Serialize)]
struct Say {
    from: String,
    seq: u64,
}

#[derive(Deserialize)]
struct Post {
    room: String,
}

struct Chat;

/// Messages this instance heard.
static HEARD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Chat {
    /// A room: adds `user` to its members (once).
    fn join(Join { user }: Join) -> Result<usize> {
        let mut members: Vec<String> = state::get("members")?.unwrap_or_default();
        if !members.contains(&user) {
            members.push(user);
            state::set("members", &members)?;
        }
        Ok(members.len())
    }

    /// A room: tells every member what `from` said.
    fn say(say: Say) -> Result<usize> {
        let members: Vec<String> = state::get("members")?.unwrap_or_default();
        for member in &members {
            quark_sdk::tell(member, "hear", &say)?;
        }
        Ok(members.len())
    }

    /// A user: joins `room` and says the next message there; answers its
    /// sequence number.
    fn post(Post { room }: Post) -> Result<u64> {
        let me = quark_sdk::self_id();
        let seq: u64 = state::get("sent")?.unwrap_or(0) + 1;
        if seq == 1 {
            quark_sdk::call::<_, Value>(&room, "join", &serde_json::json!({ "user": me }))?;
        }
        quark_sdk::call::<_, Value>(&room, "say", &Say { from: me, seq })?;
        state::set("sent", &seq)?;
        Ok(seq)
    }

    /// A user: counts a message heard, in this instance's memory only (a
    /// presence feed, not a history): a turn that writes nothing commits
    /// nothing, so the fan-out costs calls, not store writes.
    fn hear(_said: Value) -> Result<()> {
        HEARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A user: how many it sent (durable) and this instance heard.
    fn stats(_: ()) -> Result<Value> {
        let sent: u64 = state::get("sent")?.unwrap_or(0);
        let heard = HEARD.load(std::sync::atomic::Ordering::Relaxed);
        Ok(serde_json::json!({ "sent": sent, "heard_by_this_instance": heard }))
    }
}

quark_sdk::actor!(Chat { join, say, post, hear, stats });
