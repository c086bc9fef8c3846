#!/usr/bin/env bash
# The first hour, timed: a fresh clone of this repository, `make run` until
# it serves, then `make test`; prints the seconds and the size of target/.
# Usage: bash bench/first-hour.sh [DIR]   (DIR: where to clone; default a temp dir)
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$(mktemp -d)/fresh}
git clone -q "$repo" "$dir" && cd "$dir" || exit 1
echo ">> fresh clone in $dir ($(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'))"
start=$(date +%s)
# Each line of run.log is stamped with the seconds since the start, so the
# phases (guests, host build, start) can be read off afterwards.
setsid bash -c 'make run 2>&1 | while IFS= read -r l; do echo "$(( $(date +%s) - '$start' )) $l"; done' > run.log &
pid=$!
until grep -q "quark serving on" run.log; do
  sleep 2
  kill -0 $pid 2>/dev/null || { echo "make run stopped:"; tail -20 run.log; exit 1; }
done
served=$(date +%s)
kill -- -$pid 2>/dev/null; sleep 1; pkill -f "quark serve --data-dir ./quark-data" || true
echo "make run until serving: $((served - start)) s; target/ $(du -sh target | cut -f1)"
echo "phases (seconds from the start):"; grep " >> " run.log
t0=$(date +%s)
QUARK_REQUIRE_BACKENDS=${QUARK_REQUIRE_BACKENDS:-1} make test > test.log 2>&1
rc=$?
t1=$(date +%s)
echo "make test after it: $((t1 - t0)) s (exit $rc); target/ $(du -sh target | cut -f1)"
grep "test result" test.log
echo "both: $((t1 - start)) s"
