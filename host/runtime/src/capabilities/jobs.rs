//! `quark:actor/jobs`: durable jobs scheduled and cancelled with the turn.

use super::GuestError;
use super::bindings::quark::actor::jobs::{CatchUp as GuestCatchUp, Host, Job, When as GuestWhen};
use crate::id::ActorId;
use quark_core::jobs::{JobRequest, When};
use crate::turn::InstanceState;
use crate::storage::jobs::CatchUp;

impl Host for InstanceState {
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
        self.execution.allows_unless_workflow("cancel jobs")?;
        Ok(self.cancel_job(id).await?)
    }

    fn current(&mut self) -> Option<(String, u32)> {
        self.scope.job.as_ref().map(|job| (job.id.clone(), job.attempt))
    }

    fn progress(&mut self, percent: u8, note: String) {
        let Some(crate::turn::JobScope { id, lease, .. }) = self.scope.job.clone() else { return };
        let Ok(host) = self.host() else { return };
        // Progress is a report, not an effect: visible at once, not rolled
        // back. Reports coalesce: at most one write in flight per
        // instance, and it stores the latest report (a guest calling this
        // in a tight loop costs one slot, not a task and a write per call).
        let note: String = note.chars().take(MAX_PROGRESS_NOTE).collect();
        *self.progress.latest.lock() = Some(ProgressReport { id, lease, percent, note });
        if self.progress.writing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (store, slot) = (host.store().clone(), self.progress.clone());
        tokio::spawn(async move {
            loop {
                let next = slot.latest.lock().take();
                let Some(report) = next else {
                    slot.writing.store(false, std::sync::atomic::Ordering::Release);
                    // A report that came in meanwhile, and no writer for it.
                    if slot.latest.lock().is_some() && !slot.writing.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        continue;
                    }
                    return;
                };
                if let Some(jobs) = store.job_store()
                    && let Err(e) = jobs.set_job_progress(&report.id, &report.lease, report.percent, &report.note).await
                {
                    tracing::debug!(job = %report.id, error = %e, "recording job progress failed");
                }
            }
        });
    }
}

/// Longest progress note kept, in characters.
const MAX_PROGRESS_NOTE: usize = 1000;

/// A job's progress report, waiting to be written.
pub(crate) struct ProgressReport {
    id: String,
    lease: String,
    percent: u8,
    note: String,
}

/// An instance's progress reports: the latest one, and whether a write is
/// in flight (see `progress`).
#[derive(Default)]
pub(crate) struct ProgressSlot {
    latest: parking_lot::Mutex<Option<ProgressReport>>,
    writing: std::sync::atomic::AtomicBool,
}
