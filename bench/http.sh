#!/usr/bin/env bash
# HTTP load on a release `quark serve` with wrk: volatile asks (counter.get)
# and durable turns (counter.increment) over 1,000 actors, with the host's
# CPU share. Run by `make bench` after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
QUARK=./target/release/quark
DURATION=${QUARK_BENCH_HTTP_SECONDS:-10}
PORT=${QUARK_BENCH_PORT:-7979}
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT

if ! command -v wrk >/dev/null; then
  echo ">> installing wrk (apt-get install wrk)"
  (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)) >/dev/null
fi

QUARK_LOG=warn $QUARK serve --data-dir "$DATA" --listen 127.0.0.1:$PORT --deploy counter=target/samples/counter.wasm >/dev/null &
PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done

cat > "$DATA/req.lua" <<LUA
local method = os.getenv("QUARK_METHOD")
local body = os.getenv("QUARK_BODY")
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/actors/counter/k" .. (counter % 1000) .. "/" .. method, {["Content-Type"] = "application/json"}, body)
end
LUA

cpu_ticks() { awk '{print $14 + $15}' /proc/$PID/stat; }
run() {
  local label=$1 method=$2 body=$3
  # warm up: activate the 1,000 actors
  QUARK_METHOD=$method QUARK_BODY=$body wrk -t2 -c64 -d2s -s "$DATA/req.lua" http://127.0.0.1:$PORT >/dev/null
  local t0 c0 t1 c1 out
  t0=$(date +%s.%N); c0=$(cpu_ticks)
  out=$(QUARK_METHOD=$method QUARK_BODY=$body wrk -t2 -c64 -d${DURATION}s --latency -s "$DATA/req.lua" http://127.0.0.1:$PORT)
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  local rps p50 p99 cpu
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  cpu=$(echo "$c0 $c1 $t0 $t1 $(getconf CLK_TCK) $(nproc)" | awk '{printf "%.0f", 100 * ($2 - $1) / $5 / ($4 - $3) / $6}')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $4}')
  echo "HTTP $label, 1000 actors, wrk -t2 -c64 ${DURATION}s: ${rps} req/s, p50 ${p50}, p99 ${p99}, host CPU ${cpu}% of $(nproc) cores${errors:+, NON-2XX: $errors}"
}
run "volatile asks (counter.get)" get ''
run "durable turns (counter.increment)" increment '{"by":1}'
