//! An event-sourced test actor for the journal's failure paths: a list of
//! notes, with methods that fail after appending and an `apply` that can
//! be armed to trap during the next rebuild.
use quark_sdk::{Deserialize, Error, EventSourced, Result, Serialize, Value, emit, journal, state};

#[derive(Default, Serialize, Deserialize)]
pub struct Ledger {
    notes: Vec<String>,
    /// Large notes (`big:…`) are counted, not kept: their events are big,
    /// the state stays small.
    #[serde(default)]
    big: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerEvent {
    Recorded { note: String },
}

impl EventSourced for Ledger {
    type Event = LedgerEvent;
    const SCHEMA_VERSION: u32 = 2;

    /// Schema 1 called the note `text`: `{"recorded": {"text": "…"}}`.
    fn upcast(event_type: &str, schema_version: u32, mut data: Value) -> Result<Value> {
        if event_type == "recorded" && schema_version == 1 {
            if let Some(body) = data.get_mut("recorded").and_then(Value::as_object_mut) {
                if let Some(text) = body.remove("text") {
                    body.insert("note".into(), text);
                }
            }
        }
        Ok(data)
    }

    fn apply(&mut self, event: LedgerEvent) {
        match event {
            LedgerEvent::Recorded { note } => {
                // A note `poison…` makes apply trap once `arm_poison` committed.
                if note.starts_with("poison") && state::get::<bool>("poison").ok().flatten() == Some(true) {
                    panic!("apply was armed to fail on {note:?}");
                }
                if note.starts_with("big:") {
                    self.big += 1;
                } else {
                    self.notes.push(note)
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Big {
    bytes: usize,
    count: usize,
}

#[derive(Deserialize)]
struct Note {
    note: String,
}

#[derive(Deserialize)]
struct Count {
    count: usize,
    note: Option<String>,
}

impl Ledger {
    fn record(&mut self, Note { note }: Note) -> Result<u64> {
        emit(self, LedgerEvent::Recorded { note })
    }

    fn record_many(&mut self, Count { count, note }: Count) -> Result<u64> {
        let note = note.unwrap_or_default();
        let mut version = 0;
        for _ in 0..count {
            version = emit(self, LedgerEvent::Recorded { note: note.clone() })?;
        }
        Ok(version)
    }

    fn notes(&mut self, _: ()) -> Result<Vec<String>> {
        Ok(self.notes.clone())
    }

    fn version(&mut self, _: ()) -> Result<u64> {
        journal::version()
    }

    fn fail_after_record(&mut self, Note { note }: Note) -> Result<u64> {
        emit(self, LedgerEvent::Recorded { note })?;
        Err(Error::rejected("refused after recording"))
    }

    fn trap_after_record(&mut self, Note { note }: Note) -> Result<u64> {
        emit(self, LedgerEvent::Recorded { note })?;
        panic!("trapped after recording");
    }

    fn arm_poison(&mut self, _: ()) -> Result<()> {
        state::set("poison", &true)
    }

    fn disarm(&mut self, _: ()) -> Result<()> {
        state::delete("poison")
    }

    /// Appends `count` events of about `bytes` bytes each; returns how many
    /// large notes there are.
    fn record_big(&mut self, Big { bytes, count }: Big) -> Result<u64> {
        for _ in 0..count {
            emit(self, LedgerEvent::Recorded { note: format!("big:{}", "x".repeat(bytes)) })?;
        }
        Ok(self.big)
    }

    fn big(&mut self, _: ()) -> Result<u64> {
        Ok(self.big)
    }

    fn snapshot_now(&mut self, _: ()) -> Result<()> {
        journal::request_snapshot();
        Ok(())
    }

    fn call_self(&mut self, _: ()) -> Result<u64> {
        quark_sdk::call(&quark_sdk::self_id(), "version", &())
    }
}

quark_sdk::event_sourced!(Ledger { record, record_many, record_big, big, notes, version, fail_after_record, trap_after_record, arm_poison, disarm, snapshot_now, call_self });
