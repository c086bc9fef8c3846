//! A test actor for durable jobs: it does work (failing on purpose on early
//! attempts when asked), schedules and cancels jobs, and reports progress.
use quark_sdk::{Deserialize, Error, Result, Serialize, Value, jobs, state};

#[derive(Deserialize, Default)]
struct Work {
    /// Fail every attempt before this one.
    #[serde(default)]
    fail_until: u32,
    /// Busy this long on attempt 1 only (a host that dies mid-job).
    #[serde(default)]
    slow_first_ms: u64,
    /// Busy this long on every attempt.
    #[serde(default)]
    slow_ms: u64,
}

#[derive(Deserialize)]
struct Schedule {
    target: String,
    method: String,
    #[serde(default)]
    payload: Value,
    delay_ms: Option<u64>,
    cron: Option<String>,
    key: Option<String>,
    max_attempts: Option<u32>,
    #[serde(default)]
    fail: bool,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Serialize)]
struct Runs {
    runs: u64,
    attempts: Vec<u32>,
}

fn busy(ms: u64) {
    let until = quark_sdk::now_ms() + ms;
    while quark_sdk::now_ms() < until {
        std::hint::spin_loop();
    }
}

struct Worker;

impl Worker {
    /// Counts a committed run; which attempt it was is kept too.
    fn work(request: Option<Work>) -> Result<u64> {
        let Work { fail_until, slow_first_ms, slow_ms } = request.unwrap_or_default();
        let attempt = jobs::current().map_or(0, |(_, attempt)| attempt);
        jobs::progress(50, "halfway");
        if attempt == 1 {
            busy(slow_first_ms);
        }
        busy(slow_ms);
        if attempt < fail_until {
            return Err(Error::internal(format!("failing attempt {attempt} on purpose")));
        }
        let runs = state::get::<u64>("runs")?.unwrap_or(0) + 1;
        state::set("runs", &runs)?;
        let mut attempts: Vec<u32> = state::get("attempts")?.unwrap_or_default();
        attempts.push(attempt);
        state::set("attempts", &attempts)?;
        Ok(runs)
    }

    fn trap(_: ()) -> Result<()> {
        panic!("this job always traps");
    }

    fn runs(_: ()) -> Result<Runs> {
        Ok(Runs { runs: state::get("runs")?.unwrap_or(0), attempts: state::get("attempts")?.unwrap_or_default() })
    }

    /// Schedules a job from inside a turn; with `fail`, the turn then fails
    /// (so the job must not exist).
    fn schedule(request: Schedule) -> Result<String> {
        let mut job = jobs::job(&request.target, &request.method, &request.payload)?;
        if let Some(ms) = request.delay_ms {
            job = job.after_ms(ms);
        }
        if let Some(cron) = &request.cron {
            job = job.cron(cron);
        }
        if let Some(key) = &request.key {
            job = job.key(key);
        }
        if let Some(n) = request.max_attempts {
            job = job.max_attempts(n).backoff_ms(10, 100);
        }
        let id = job.schedule()?;
        if request.fail {
            return Err(Error::rejected("failing after scheduling"));
        }
        Ok(id)
    }

    fn cancel(Id { id }: Id) -> Result<bool> {
        jobs::cancel(&id)
    }
}

quark_sdk::actor!(Worker { work, trap, runs, schedule, cancel });
