#!/usr/bin/env bash
# Builds the project's virtualenv (VENV, default .venv) from requirements/dev.lock with the interpreter
# devstack/python.sh chooses (Python 3.12, as on MWAA, where this machine has it). A venv built by
# another interpreter, or from another lock, is rebuilt or updated, never reused silently.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
python="$(bash "$ROOT/devstack/python.sh")"
version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
want="python $(version "$python"), $(sha256sum "$ROOT/requirements/dev.lock" | cut -c1-16)"
stamp="$VENV/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ -x "$VENV/bin/python" ] && [ "$(version "$VENV/bin/python")" != "$(version "$python")" ]; then
  echo "venv: $VENV has Python $(version "$VENV/bin/python"); rebuilding it with Python $(version "$python") ($python)"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "venv: creating $VENV with Python $(version "$python") ($python)"
  "$python" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip==26.3"
"$VENV/bin/python" -m pip install -q -r "$ROOT/requirements/dev.lock"
echo "$want" >"$stamp"
