//! Nightly reports per tenant, with durable jobs: `setup` schedules a
//! recurring `nightly` job for this tenant (`reports/<tenant>`); each night
//! schedules a one-shot `render` step that is flaky (it fails on its first
//! attempts, like a call to a slow service) and is retried with backoff
//! until it succeeds. Every scheduling commits with the turn that does it,
//! and an idempotency key makes each night's step a single job.
use quark_sdk::{Deserialize, Error, Result, Serialize, jobs, state};

#[derive(Deserialize, Default)]
struct Setup {
    /// Cron expression (default: 02:00 every day).
    cron: Option<String>,
    /// IANA time zone of the cron expression (default UTC).
    time_zone: Option<String>,
    /// Attempts the render step fails before it succeeds (default 2).
    flaky_attempts: Option<u32>,
}

#[derive(Deserialize, Default)]
struct Render {
    night: u64,
    fail_first: u32,
}

#[derive(Serialize)]
struct Status {
    nightly_job: Option<String>,
    nights: u64,
    rendered: Vec<u64>,
}

struct Reports;

impl Reports {
    /// Schedules this tenant's nightly job (once, whatever the number of calls).
    fn setup(request: Option<Setup>) -> Result<String> {
        let setup = request.unwrap_or_default();
        let tenant = quark_sdk::self_key();
        state::set("flaky_attempts", &setup.flaky_attempts.unwrap_or(2))?;
        let mut job = jobs::job(&quark_sdk::self_id(), "nightly", &())?
            .cron(setup.cron.as_deref().unwrap_or("0 2 * * *"))
            .key(&format!("nightly-{tenant}"));
        if let Some(zone) = &setup.time_zone {
            job = job.time_zone(zone);
        }
        let id = job.schedule()?;
        state::set("nightly_job", &id)?;
        Ok(id)
    }

    /// One night: schedules the render step, retried until it succeeds.
    fn nightly(_: ()) -> Result<u64> {
        let night = state::get::<u64>("nights")?.unwrap_or(0) + 1;
        state::set("nights", &night)?;
        let fail_first = state::get::<u32>("flaky_attempts")?.unwrap_or(2);
        jobs::job(&quark_sdk::self_id(), "render", &serde_json::json!({"night": night, "fail_first": fail_first}))?
            .max_attempts(5)
            .backoff_ms(200, 5_000)
            .key(&format!("render-{}-{night}", quark_sdk::self_key()))
            .schedule()?;
        Ok(night)
    }

    /// The flaky step: fails its first attempts, then records the report.
    fn render(Render { night, fail_first }: Render) -> Result<u64> {
        let attempt = jobs::current().map_or(1, |(_, attempt)| attempt);
        jobs::progress(((attempt * 100) / (fail_first + 1)).min(100) as u8, &format!("attempt {attempt}"));
        if attempt <= fail_first {
            return Err(Error::unavailable(format!("the rendering service timed out (attempt {attempt}); retrying")));
        }
        let mut rendered: Vec<u64> = state::get("rendered")?.unwrap_or_default();
        rendered.push(night);
        state::set("rendered", &rendered)?;
        Ok(night)
    }

    /// The nightly job's id, nights run and nights rendered.
    fn status(_: ()) -> Result<Status> {
        Ok(Status {
            nightly_job: state::get("nightly_job")?,
            nights: state::get("nights")?.unwrap_or(0),
            rendered: state::get("rendered")?.unwrap_or_default(),
        })
    }
}

quark_sdk::actor!(Reports { setup, nightly, render, status });
