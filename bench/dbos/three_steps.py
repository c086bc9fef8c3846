"""DBOS Transact, the peer of Quark's workflows bench: the same 3-step
workflow (each step a durable counter increment, committed in
PostgreSQL), 300 one after another, then 64 clients; p50/p99 and
workflows/s. Its best settings: connection pools as large as PostgreSQL's
connection limit allows, logging at WARNING, no OTLP. Run by `run.sh`."""

import os
import statistics
import sys
import threading
import time
import uuid

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SetWorkflowID

URL = os.environ.get("DBOS_BENCH_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dbos_bench")
CLIENTS = int(os.environ.get("CLIENTS", "64"))
SEQUENTIAL = int(os.environ.get("SEQUENTIAL", "300"))
TOTAL = int(os.environ.get("TOTAL", "3000"))
# Connections in each of its two pools (the system database's, the
# steps'): both together stay under PostgreSQL's 100 here.
POOL = int(os.environ.get("POOL", "40"))

config: DBOSConfig = {
    "name": "quark-bench",
    "system_database_url": URL,
    "sys_db_pool_size": POOL,
    "log_level": "WARNING",
}
DBOS(config=config)
app = sa.create_engine(URL, pool_size=POOL, max_overflow=0)


@DBOS.step()
def increment(key: str) -> int:
    with app.begin() as c:
        return c.execute(
            sa.text("INSERT INTO counters (key, value) VALUES (:k, 1) ON CONFLICT (key) DO UPDATE SET value = counters.value + 1 RETURNING value"),
            {"k": key},
        ).scalar_one()


@DBOS.workflow()
def three_steps(key: str) -> int:
    last = 0
    for i in range(3):
        last = increment(f"{key}-{i}")
    return last


def one(key: str) -> float:
    started = time.perf_counter()
    with SetWorkflowID(key):  # like Quark's `--id`: idempotent by id
        assert three_steps(key) == 1
    return time.perf_counter() - started


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main():
    DBOS.launch()
    with app.begin() as c:
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value BIGINT NOT NULL)"))
    run = uuid.uuid4().hex[:8]
    for i in range(20):  # warm the pools
        one(f"warm-{run}-{i}")
    seq = [one(f"seq-{run}-{i}") for i in range(SEQUENTIAL)]
    print(f"dbos: 3-step workflow, {SEQUENTIAL} one after another: p50 {pct(seq, 0.5):.2f} ms, p99 {pct(seq, 0.99):.2f} ms")

    lock = threading.Lock()
    next_i = [0]
    lat = []

    def client():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= TOTAL:
                return
            d = one(f"par-{run}-{i}")
            with lock:
                lat.append(d)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    print(
        f"dbos: 3-step workflows, {CLIENTS} clients: {TOTAL / elapsed:.0f} workflows/s ({3 * TOTAL / elapsed:.0f} steps/s), "
        f"p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms"
    )
    DBOS.destroy()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
