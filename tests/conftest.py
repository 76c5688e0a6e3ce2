"""Shared test setup: the settings of the local stack (`make up` writes .local/stack.env)."""

import os
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK_ENV = ROOT / ".local" / "stack.env"


def load_stack_env() -> dict[str, str]:
    values = {}
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, _, raw = line.partition("=")
                values[key] = shlex.split(raw)[0] if raw else ""
    return values


# Before anything imports Airflow: its home, no examples, the stack's connections.
for _key, _value in load_stack_env().items():
    os.environ.setdefault(_key, _value)
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".local" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# dag.test() cannot run a DAG with a deadline in Airflow 3.3.1 (see es_export_airflow.alerts); the
# deadline is tested in the running Airflow, which sets its own.
os.environ.setdefault("ES_EXPORT_DEADLINE_SECONDS", "off")
