#!/usr/bin/env bash
# Prints the Python interpreter the project's virtualenv is built with: MWAA 3.3.1 runs Python 3.12,
# so 3.12 wherever this machine has one that works (on PATH, or one pyenv installed), else python3
# with one line on stderr saying so. PYTHON=/path/to/python overrides the choice.
set -euo pipefail
if [ -n "${PYTHON:-}" ]; then
  command -v "$PYTHON"
  exit 0
fi
works() { "$1" -c 'import ssl, sqlite3, venv' >/dev/null 2>&1; }
pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
# A pyenv shim named python3.12 fails unless 3.12 is pyenv's active version, hence `works`.
for candidate in python3.12 "$pyenv_root"/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
  found="$(command -v "$candidate" 2>/dev/null)" || continue
  if works "$found"; then
    echo "$found"
    exit 0
  fi
done
fallback="$(command -v python3)"
echo "python: no working Python 3.12 on this machine (MWAA 3.3.1 runs 3.12); using $("$fallback" --version 2>&1) at $fallback" >&2
echo "$fallback"
