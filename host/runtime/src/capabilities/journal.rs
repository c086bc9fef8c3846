//! `quark:actor/journal`: append-only events per actor, buffered in the
//! turn and committed with it.

use super::bindings::quark::actor::journal::Host;
use super::{GuestError, GuestEvent, GuestRecordedEvent};
use crate::turn::InstanceState;
use crate::storage::EventRecord;

/// Most events one `read` returns: a bigger history is read in pages.
const MAX_READ: u32 = 1000;

impl Host for InstanceState {
    async fn append(&mut self, events: Vec<GuestEvent>) -> Result<u64, GuestError> {
        Ok(self.journal_append(events).await?)
    }

    async fn version(&mut self) -> Result<u64, GuestError> {
        self.execution.allows_unless_workflow("read a journal")?;
        Ok(self.journal_version().await?)
    }

    async fn read(&mut self, from: u64, max: u32) -> Result<Vec<GuestRecordedEvent>, GuestError> {
        self.execution.allows("read the live journal")?;
        let events = self
            .host()?
            .store()
            .read_events(&self.actor, from.max(1), max.min(MAX_READ) as usize)
            .await
            .map_err(|e| GuestError::Unavailable(format!("reading the journal of {}: {e}", self.actor)))?;
        Ok(events.into_iter().map(to_guest).collect())
    }

    fn request_snapshot(&mut self) {
        self.journal_request_snapshot();
    }
}

/// A stored event as the guest sees it.
pub(crate) fn to_guest(e: EventRecord) -> GuestRecordedEvent {
    GuestRecordedEvent {
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        data: e.data,
        recorded_at: e.recorded_at_ms.max(0) as u64,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
        caller: e.caller,
        method: e.method,
    }
}
