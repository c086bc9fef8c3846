//! `quark:actor/jobs`: durable jobs scheduled and cancelled with the turn.

use super::GuestError;
use super::bindings::quark::actor::jobs::{CatchUp as GuestCatchUp, Host, Job, When as GuestWhen};
use crate::id::ActorId;
use crate::jobs::{JobRequest, When};
use crate::runtime::turn::TurnState;
use crate::storage::jobs::CatchUp;

impl Host for TurnState {
    fn schedule(&mut self, job: Job) -> Result<String, GuestError> {
        let request = JobRequest {
            target: ActorId::parse(&job.target)?,
            method: job.method,
            payload: job.payload,
            when: match job.when {
                GuestWhen::At(ms) => When::At(ms.min(i64::MAX as u64) as i64),
                GuestWhen::Delay(ms) => When::Delay(ms),
                GuestWhen::Cron(expr) => When::Cron(expr),
            },
            time_zone: job.time_zone,
            max_attempts: job.max_attempts,
            backoff_ms: job.backoff_ms,
            max_backoff_ms: job.max_backoff_ms,
            timeout_ms: job.timeout_ms,
            priority: job.priority,
            queue: job.queue,
            idempotency_key: job.idempotency_key,
            catch_up: match job.catch_up {
                None | Some(GuestCatchUp::Once) => CatchUp::Once,
                Some(GuestCatchUp::All) => CatchUp::All,
                Some(GuestCatchUp::Skip) => CatchUp::Skip,
            },
        };
        Ok(self.schedule_job(request)?)
    }

    async fn cancel(&mut self, id: String) -> Result<bool, GuestError> {
        Ok(self.cancel_job(id).await?)
    }

    fn current(&mut self) -> Option<(String, u32)> {
        self.scope.job.as_ref().map(|(id, attempt, _)| (id.clone(), *attempt))
    }

    fn progress(&mut self, percent: u8, note: String) {
        let Some((id, _, lease)) = self.scope.job.clone() else { return };
        let Ok(host) = self.host() else { return };
        let store = host.store().clone();
        // Progress is a report, not an effect: visible at once, not rolled back.
        tokio::spawn(async move {
            if let Some(jobs) = store.job_store()
                && let Err(e) = jobs.set_job_progress(&id, &lease, percent, &note).await
            {
                tracing::debug!(job = %id, error = %e, "recording job progress failed");
            }
        });
    }
}
