#!/usr/bin/env bash
# Installs graphile-worker 0.18.0 here (npm, node_modules is not committed)
# and runs drain.mjs against the local PostgreSQL. `MODE=default` for its defaults.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/graphile-worker ]; then
  echo ">> installing graphile-worker 0.18.0 with npm into bench/graphile-worker/node_modules"
  npm install --no-audit --no-fund --silent
fi
node drain.mjs
