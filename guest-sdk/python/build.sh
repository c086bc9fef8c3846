#!/usr/bin/env bash
# Builds a Python actor into a wasm component:
#   bash guest-sdk/python/build.sh samples/counter-py target/samples/counter-py.wasm
# The folder holds `app.py`, which assigns `Handler = quark.export(...)`
# (an actor) or `WorkflowRun = quark.workflow.export(run)` (a workflow).
#
# componentize-py is installed on first use into guest-sdk/python/.venv
# (pip, pinned in requirements.txt). When it cannot be installed (no
# python3, no registry) this prints SKIP and succeeds, so the rest of the
# build goes on; tests that need the component then skip. Under
# QUARK_REQUIRE_BACKENDS=1 (CI) it fails instead. A component newer than
# its sources is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$1" out="$2"
venv="$here/.venv"
tool="$venv/bin/componentize-py"
want="$(cat "$here/requirements.txt")"

if [ ! -x "$tool" ] || [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
  echo ">> installing $want into guest-sdk/python/.venv (python3 -m venv, pip)"
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"; }; then
    echo "SKIP: could not install $want (is python3 with venv and pip present, and PyPI reachable?); $out is not built"
    [ "${QUARK_REQUIRE_BACKENDS:-}" = 1 ] && { echo "QUARK_REQUIRE_BACKENDS=1: failing instead"; exit 1; }
    exit 0
  fi
  echo "$want" > "$venv/.installed"
fi

if [ -f "$out" ] && [ -z "$(find "$src" "$here/quark" "$root/wit" -newer "$out" -type f -print -quit)" ]; then
  exit 0
fi
# An app that exports `Aggregate` (quark.export_event_sourced) is built
# against the `event-sourced` world, one that exports `WorkflowRun`
# (quark.workflow.export) against `durable-workflow`, any other against `actor`.
world=actor
grep -Eq '^[^#]*\bAggregate\b.*=' "$src/app.py" && world=event-sourced
grep -Eq '^[^#]*\bWorkflowRun\b *=' "$src/app.py" && world=durable-workflow
echo ">> building $out from $src/app.py (componentize-py, world $world)"
mkdir -p "$(dirname "$out")"
"$tool" -d "$root/wit" -w "$world" componentize app -p "$src" -p "$here" -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
