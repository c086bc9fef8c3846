//! The queues' parts of the benchmark: durable jobs, and the outbox
//! (actor to actor, to a sink, and under a steady load), on each store.

use super::*;

/// Waits until `succeeded` job attempts have finished (the host's own
/// counter, so the wait puts no load on the store), then until the store
/// has no job left to run (their completions written).
async fn drained(host: &Node, store: &Arc<dyn Store>, succeeded: u64) {
    let counted = || -> u64 {
        host.metrics_text().lines().find_map(|l| l.strip_prefix("quark_jobs_succeeded_total ").and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    };
    while counted() < succeeded {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let jobs = store.job_store().unwrap();
    while jobs.next_job_due().await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Enqueue rates, draining 100,000 no-op jobs (a turn each, over 1,000
/// actors), interactive asks while they drain, and enqueue-to-done latency.
pub(crate) async fn jobs_bench(store: Arc<dyn Store>, dir: &std::path::Path, backend: &str) {
    let mut config = NodeConfig::new(dir);
    if let Some(n) = std::env::var("QUARK_BENCH_JOB_CONCURRENCY").ok().and_then(|n| n.parse().ok()) {
        config.jobs.concurrency = n;
    }
    println!("jobs on {backend}: {} at once per host", config.jobs.concurrency);
    let host = host_with(store.clone(), config).await;
    let n = scale(100_000);
    // Enqueue one at a time (each its own transaction), then in bulk.
    let single = scale(2_000);
    let s = Instant::now();
    for i in 0..single {
        host.jobs().add(vec![job_request(format!("counter/j{}", i % 1000), "get")]).await.unwrap();
    }
    let single_rate = single as f64 / s.elapsed().as_secs_f64();
    drained(&host, &store, single as u64).await;
    // The same, due in an hour: the enqueue alone, the runner idle (then
    // cancelled, so the drains below do not wait for them).
    let s = Instant::now();
    let mut later = Vec::with_capacity(single);
    for i in 0..single {
        let mut request = job_request(format!("counter/l{}", i % 1000), "get");
        request.when = quark::jobs::When::Delay(3_600_000);
        later.extend(host.jobs().add(vec![request]).await.unwrap());
    }
    let later_rate = single as f64 / s.elapsed().as_secs_f64();
    for job in later {
        host.jobs().cancel(&job.id).await.unwrap();
    }
    let s = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        host.jobs().add(chunk.iter().map(|i| job_request(format!("counter/j{}", i % 1000), "get")).collect()).await.unwrap();
    }
    let bulk_rate = n as f64 / s.elapsed().as_secs_f64();
    // They started draining while the bulk insert ran; time the whole drain from the first insert.
    drained(&host, &store, (single + n) as u64).await;
    let drain = s.elapsed();
    let metric = |name: &str| -> f64 {
        host.metrics_text().lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    };
    println!(
        "jobs on {backend}: {:.0} group commits, {:.1} turns per commit",
        metric("quark_commit_batches_total "),
        metric("quark_commit_turns_total ") / metric("quark_commit_batches_total ").max(1.0)
    );
    println!(
        "jobs on {backend}: enqueue {single_rate:.0} jobs/s one by one (each run at once), {later_rate:.0} jobs/s one by one \
         (due later: the enqueue alone), {bulk_rate:.0} jobs/s in bulk; \
         {n} no-op jobs enqueued and drained through turns in {drain:?} = {:.0} jobs/s",
        n as f64 / drain.as_secs_f64()
    );

    // Interactive asks alone (after a warm-up that activates the actors),
    // then while 100,000 jobs drain.
    throughput(&host, "get", b"null", 1000, scale(20_000), 16).await;
    let (_, _, alone_p99) = throughput(&host, "get", b"null", 1000, scale(100_000), 16).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        host.jobs().add(chunk.iter().map(|i| job_request(format!("counter/d{}", i % 1000), "get")).collect()).await.unwrap();
    }
    let (_, _, busy_p99) = throughput(&host, "get", b"null", 1000, scale(100_000), 16).await;
    drained(&host, &store, (single + 2 * n) as u64).await;
    println!("interactive asks (counter.get, 16 callers) on {backend}: p99 {alone_p99:?} alone, {busy_p99:?} while {n} jobs drain");

    // Enqueue to start and to done, one job at a time on an idle runner.
    let mut starts = host.jobs().starts();
    let (mut to_start, mut to_done) = (Vec::new(), Vec::new());
    for _ in 0..scale(200) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let s = Instant::now();
        let job = host.jobs().add(vec![job_request("counter/latency".into(), "get")]).await.unwrap().remove(0);
        loop {
            let started = starts.recv().await.unwrap();
            if started.id == job.id {
                to_start.push(started.at - s);
                break;
            }
        }
        loop {
            let status = host.jobs().get(&job.id).await.unwrap().status;
            if status == quark::storage::jobs::JobStatus::Succeeded {
                break;
            }
            assert_ne!(status, quark::storage::jobs::JobStatus::Dead, "the latency job failed");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        to_done.push(s.elapsed());
    }
    to_start.sort();
    to_done.sort();
    println!(
        "enqueue to start (idle runner) on {backend}: p50 {:?}, p99 {:?}; to done (its durable turn): p50 {:?}, p99 {:?}",
        percentile(&to_start, 0.5),
        percentile(&to_start, 0.99),
        percentile(&to_done, 0.5),
        percentile(&to_done, 0.99)
    );
}

/// The host's count of delivered outbox messages.
fn delivered(host: &Node) -> u64 {
    metric(host, "quark_messages_delivered_total") as u64
}

/// A metric's value from the host's exposition (0 if absent).
fn metric(host: &Node, name: &str) -> f64 {
    host.metrics_text().lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Group commits so far: (transactions, turns, seconds in them).
fn commits(host: &Node) -> (f64, f64, f64) {
    (metric(host, "quark_commit_batches_total"), metric(host, "quark_commit_turns_total"), metric(host, "quark_commit_duration_seconds_sum"))
}

/// The group commits since `before` ([`commits`]), over `elapsed`: how
/// many, their size, their time and how busy the committer was.
fn commits_since(host: &Node, before: (f64, f64, f64), elapsed: Duration) -> String {
    let after = commits(host);
    let (batches, turns, busy) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    format!(
        "{batches} group commits of {:.0} turns on average, {:.1} ms each, busy {:.0}% of the time",
        turns / batches.max(1.0),
        busy * 1000.0 / batches.max(1.0),
        busy * 100.0 / elapsed.as_secs_f64()
    )
}

/// Outbox delivery to a Redis stream sink: 100 senders x 100 messages.
pub(crate) async fn sink_bench(dir: &std::path::Path) {
    let redis_url = redis_url();
    let stream = format!("quark_bench_stream_{}", std::process::id());
    let mut config = NodeConfig::new(dir);
    config.outbox.sinks.insert("stream".into(), format!("redis:{redis_url}#{stream}").parse().unwrap());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("sink.db")).await.unwrap());
    let host = host_with(store, config).await;
    host.host().deploy("courier", component("courier"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
    let (senders, per) = (scale(100), 100);
    let s = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..senders {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"sink": "stream", "payload": {{"order": {i}}}, "count": {per}}}"#);
            host.host().ask(id(format!("courier/s{i}")), "send", body.into_bytes()).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (senders * per) as u64;
    while delivered(&host) < total {
        if s.elapsed() > Duration::from_secs(120) {
            println!("SKIP outbox to a Redis stream: only {} of {total} delivered in 120 s (is Redis up?)", delivered(&host));
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = s.elapsed();
    println!(
        "outbox to a Redis stream sink (SQLite store): {total} CloudEvents ({senders} senders x {per}) in {elapsed:?} = {:.0} messages/s",
        total as f64 / elapsed.as_secs_f64()
    );
    if let Ok(mut conn) = redis::Client::open(redis_url).and_then(|c| c.get_connection()) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&stream).query(&mut conn);
    }
}

/// A steady load of `rate` messages/s for 3 s: 200 senders, one message
/// per turn, spread evenly. Two delays per message: from the send inside the
/// sending turn (ms resolution, includes that turn's commit), and from the
/// sending turn's commit (its reply, which goes out once the commit is
/// durable) to the delivery.
async fn steady_load(host: &Node, backend: &str, rate: u64) {
    let (tasks_n, seconds) = (200usize, if quick() { 1 } else { 3 });
    let mut deliveries = host.outbox().deliveries();
    let committed: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let before = commits(host);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let host = host.clone();
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_secs_f64(tasks_n as f64 / rate as f64);
            // Staggered, so the sends are spread over each period rather
            // than all 200 at its start (which made the load a burst every
            // 40 ms at 5,000/s).
            let offset = every.mul_f64(t as f64 / tasks_n as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(seconds) {
                tick.tick().await;
                n += 1;
                let message = format!("steady{rate}-{t}-{n}");
                let body = format!(r#"{{"to": "counter/steady{t}", "method": "increment", "payload": {{"by": 1}}, "id": "{message}"}}"#);
                host.host().ask(id(format!("courier/steady-s{t}")), "send", body.into_bytes()).await.unwrap();
                committed.lock().insert(message, Instant::now());
            }
        }));
    }
    let mut steady = Vec::new();
    let mut delivered_at = Vec::new();
    let collect_until = Instant::now() + Duration::from_secs(seconds + 2);
    while Instant::now() < collect_until {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(100), deliveries.recv()).await {
            steady.push(Duration::from_millis(d.delay_ms as u64));
            delivered_at.push((d.id, Instant::now()));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    steady.sort();
    let committed = committed.lock();
    let mut from_commit: Vec<Duration> = delivered_at
        .iter()
        .filter_map(|(message, at)| committed.get(message).map(|c| at.saturating_duration_since(*c)))
        .collect();
    from_commit.sort();
    println!(
        "outbox on {backend}: at a steady {rate} messages/s ({} delivered): send to delivered (ms resolution) p50 {:?}, p99 {:?}; \
         sender's commit (its reply) to delivered p50 {:?}, p99 {:?}",
        steady.len(),
        percentile(&steady, 0.5),
        percentile(&steady, 0.99),
        percentile(&from_commit, 0.5),
        percentile(&from_commit, 0.99)
    );
    println!("outbox on {backend}: steady load: {}", commits_since(host, before, start.elapsed()));
}

/// Actor-to-actor outbox delivery: 1,000 senders each send 100 messages
/// to their own receiver (`counter.increment`, one sending turn each), and
/// the time until every one ran as a committed turn of its receiver; then the latency from a sending
/// turn's reply (its commit) to the delivery, one message at a time.
pub(crate) async fn outbox_bench(store: Arc<dyn Store>, dir: &std::path::Path, backend: &str) {
    let mut config = NodeConfig::new(dir);
    if let Some(n) = std::env::var("QUARK_BENCH_MESSAGE_CONCURRENCY").ok().and_then(|n| n.parse().ok()) {
        config.outbox.concurrency = n;
    }
    println!("outbox on {backend}: {} lanes at once per host", config.outbox.concurrency);
    let host = host_with(store, config).await;
    host.host().deploy("courier", component("courier"), Manifest::parse(Some("16MiB"), None).unwrap()).await.unwrap();
    // QUARK_BENCH_OUTBOX_BURST=0 skips the burst (for the steady load alone).
    let burst = std::env::var("QUARK_BENCH_OUTBOX_BURST").map_or(true, |b| b != "0");
    if burst {
    let (senders, per) = (scale(1000), 100);
    // Send-to-delivery delays under this load, from the host's own stream.
    let mut deliveries = host.outbox().deliveries();
    let delays = tokio::spawn(async move {
        let mut delays = Vec::new();
        loop {
            match deliveries.recv().await {
                Ok(d) => delays.push(Duration::from_millis(d.delay_ms as u64)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
            if delays.len() as u64 >= (scale(1000) * 100) as u64 {
                break;
            }
        }
        delays
    });
    let before = commits(&host);
    let s = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..senders {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"to": "counter/r{i}", "method": "increment", "payload": {{"by": 1}}, "count": {per}}}"#);
            host.host().ask(id(format!("courier/s{i}")), "send", body.into_bytes()).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = s.elapsed();
    let delivered_while_sending = delivered(&host);
    let total = (senders * per) as u64;
    while delivered(&host) < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = s.elapsed();
    println!("outbox on {backend}: burst: {}", commits_since(&host, before, elapsed));
    println!(
        "outbox on {backend}: {total} messages ({senders} senders x {per}, sent in {sent:?}) delivered as receiver turns in {elapsed:?} = {:.0} messages/s \
         from the first send; {:.0} messages/s once the sends were done",
        total as f64 / elapsed.as_secs_f64(),
        (total - delivered_while_sending) as f64 / (elapsed - sent).as_secs_f64()
    );
    if let Ok(Ok(mut delays)) = tokio::time::timeout(Duration::from_secs(5), delays).await {
        delays.sort();
        println!(
            "outbox on {backend}: send to delivered under that load ({} of {total} sampled, ms resolution): p50 {:?}, p99 {:?}",
            delays.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.99)
        );
    }
    }
    // Steady loads: at the issue's 5,000 messages/s, and at 10,000 (past
    // it). QUARK_BENCH_STEADY_RATE=R[,R...] sets the rates.
    let rates = std::env::var("QUARK_BENCH_STEADY_RATE").unwrap_or_else(|_| "5000,10000".into());
    for rate in rates.split(',').filter_map(|r| r.trim().parse::<u64>().ok()) {
        steady_load(&host, backend, rate).await;
    }
    let mut lat = Vec::new();
    for i in 0..scale(200) {
        let before = delivered(&host);
        let body = format!(r#"{{"to": "courier/lat{}", "payload": {i}}}"#, i % 10);
        host.host().ask(id("courier/lat-sender".into()), "send", body.into_bytes()).await.unwrap();
        let s = Instant::now();
        while delivered(&host) == before {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        lat.push(s.elapsed());
    }
    lat.sort();
    println!(
        "outbox on {backend}: commit to delivered (the receiver's turn committed), one at a time: p50 {:?}, p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}
