//! A chat test actor for the locality repartitioner (issue 18), deployed
//! twice: as `room` (members join it; what one says it tells every
//! member) and as `user` (posts to its room, counts what it hears).
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

#[derive(Deserialize)]
struct Hear {
    from: String,
    seq: u64,
}

struct Chat;

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

    /// A user: counts a message heard (the last sequence per sender).
    fn hear(Hear { from, seq }: Hear) -> Result<()> {
        let heard: u64 = state::get("heard")?.unwrap_or(0);
        state::set("heard", &(heard + 1))?;
        let key = format!("last:{from}");
        let last: u64 = state::get(&key)?.unwrap_or(0);
        if seq > last {
            state::set(&key, &seq)?;
        }
        Ok(())
    }

    /// A user: how many it sent and heard.
    fn stats(_: ()) -> Result<Value> {
        let sent: u64 = state::get("sent")?.unwrap_or(0);
        let heard: u64 = state::get("heard")?.unwrap_or(0);
        Ok(serde_json::json!({ "sent": sent, "heard": heard }))
    }
}

quark_sdk::actor!(Chat { join, say, post, hear, stats });
