#!/usr/bin/env bash
# Builds a JavaScript actor into a wasm component:
#   bash guest-sdk/js/build.sh samples/counter-js target/samples/counter-js.wasm
# The folder holds `app.js`, which exports `handler = actor({...})` (an
# actor) or `workflowRun = workflow(run)` (a workflow, from 'quark/workflow').
#
# componentize-js and rolldown are installed on first use into
# guest-sdk/js/node_modules (npm ci, pinned in package-lock.json). When they
# cannot be installed (no node/npm, no registry) this prints SKIP and
# succeeds, so the rest of the build goes on; tests that need the component
# then skip. Under QUARK_REQUIRE_BACKENDS=1 (CI) it fails instead. A
# component newer than its sources is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$1" out="$2"

if [ ! -f "$here/node_modules/.package-lock.json" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo ">> installing componentize-js and rolldown into guest-sdk/js/node_modules (npm ci)"
  if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "SKIP: could not install the JavaScript build tools (are node and npm present, and the npm registry reachable?); $out is not built"
    [ "${QUARK_REQUIRE_BACKENDS:-}" = 1 ] && { echo "QUARK_REQUIRE_BACKENDS=1: failing instead"; exit 1; }
    exit 0
  fi
fi

if [ -f "$out" ] && [ -z "$(find "$src" "$here/quark.js" "$here/errors.js" "$here/workflow.js" "$here/build.mjs" "$root/wit" -newer "$out" -type f -print -quit)" ]; then
  exit 0
fi
# An app that exports `aggregate` (eventSourced) is built against the
# `event-sourced` world, one that exports `workflowRun` (a workflow, with
# 'quark/workflow') against `durable-workflow`, any other against `actor`.
world=actor
grep -Eq '^export .*\baggregate\b' "$src/app.js" && world=event-sourced
grep -Eq '^export .*\bworkflowRun\b' "$src/app.js" && world=durable-workflow
echo ">> building $out from $src/app.js (componentize-js, world $world)"
mkdir -p "$(dirname "$out")"
node "$here/build.mjs" "$src/app.js" "$out.tmp" "$world"
mv "$out.tmp" "$out"
