// graphile-worker's side of the job-drain comparison in BENCHMARKS.md:
// enqueue JOBS no-op jobs in bulk (add_jobs, 10,000 per call), time until
// the last one completes, then time LATENCY single jobs from add_job to the
// start of their task on an idle worker.
//
//   MODE=best (default): the settings graphile-worker's performance page
//   uses (24 concurrent jobs, a 25-connection pool, a local queue of 500,
//   batched completion). MODE=default: its defaults (concurrency 1).
import { run, makeWorkerUtils, Logger } from "graphile-worker";
import pg from "pg";

const connectionString = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const total = Number(process.env.JOBS ?? 100000);
const latencyRuns = Number(process.env.LATENCY ?? 200);
const mode = process.env.MODE ?? "best";
const schema = "graphile_worker_bench";

// CONCURRENCY and LOCAL_QUEUE change the best settings (64 and 2,000 drain
// fastest on 2 cores; the performance page's are 24 and 500).
const concurrency = Number(process.env.CONCURRENCY ?? 24);
const localQueue = Number(process.env.LOCAL_QUEUE ?? 500);
const worker =
  mode === "best"
    ? { concurrentJobs: concurrency, maxPoolSize: concurrency + 1, localQueue: { size: localQueue }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
    : {};
const preset = { worker: { connectionString, schema, pollInterval: 1000, ...worker } };

// A fresh schema per run, as Quark's bench uses one: no bloat from earlier runs.
const admin = new pg.Client({ connectionString });
await admin.connect();
await admin.query(`drop schema if exists ${schema} cascade`);
await admin.end();

// Its default logger prints a line per job, which alone caps throughput.
const logger = new Logger(() => () => {});
const utils = await makeWorkerUtils({ preset, logger });
await utils.migrate();

let done = 0;
let onStart = null;
let finished = null;
const taskList = {
  noop: async () => {
    done += 1;
    if (done === total && finished) finished();
  },
  timed: async (payload) => {
    if (onStart) onStart(payload.n, process.hrtime.bigint());
  },
};
const runner = await run({ preset, taskList, logger, noHandleSignals: true });

// Drain: from the first insert to the last completion.
const allDone = new Promise((resolve) => (finished = resolve));
const start = process.hrtime.bigint();
for (let i = 0; i < total; i += 10000) {
  const specs = [];
  for (let j = i; j < Math.min(total, i + 10000); j++) specs.push({ identifier: "noop", payload: {} });
  await utils.addJobs(specs);
}
const enqueued = Number(process.hrtime.bigint() - start) / 1e9;
await allDone;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(
  `graphile-worker 0.18.0 (${mode}, concurrency ${concurrency}, local queue ${localQueue}): enqueued ${total} in ${enqueued.toFixed(2)} s (${Math.round(total / enqueued)} jobs/s); ` +
    `drained in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} jobs/s`,
);

// add_job one at a time (each its own transaction), as fast as it goes.
const singles = Number(process.env.SINGLES ?? 2000);
let t = process.hrtime.bigint();
for (let n = 0; n < singles; n++) await utils.addJob("noop", {});
console.log(`graphile-worker 0.18.0 (${mode}): add_job one at a time ${Math.round(singles / (Number(process.hrtime.bigint() - t) / 1e9))} jobs/s`);

// add_job to task start, one job at a time on an idle worker.
const lat = [];
for (let n = 0; n < latencyRuns; n++) {
  await new Promise((r) => setTimeout(r, 2));
  const started = new Promise((resolve) => (onStart = (m, at) => m === n && resolve(at)));
  const t0 = process.hrtime.bigint();
  await utils.addJob("timed", { n });
  lat.push(Number((await started) - t0) / 1e6);
}
lat.sort((a, b) => a - b);
const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2);
console.log(`graphile-worker 0.18.0 (${mode}): add_job to start p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms`);

await runner.stop();
await utils.release();
