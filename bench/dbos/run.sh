#!/usr/bin/env bash
# Installs DBOS Transact (pip, into bench/dbos/.venv, not committed) and
# runs three_steps.py against the local PostgreSQL (database dbos_bench,
# created if missing): the peer of `QUARK_BENCH_ONLY=workflows`.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.installed 2>/dev/null)" != "$(cat requirements.txt)" ]; then
  echo ">> installing $(tr '\n' ' ' < requirements.txt)into bench/dbos/.venv (python3 -m venv, pip)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.installed
fi
psql -h 127.0.0.1 -U postgres -d test -tAc "SELECT 1 FROM pg_database WHERE datname = 'dbos_bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE dbos_bench"
.venv/bin/python three_steps.py
