"""Every DAG file loads without errors, fast, and without touching connections or Variables."""

import time
from pathlib import Path
from unittest import mock

import pytest

pytestmark = pytest.mark.unit

DAGS = Path(__file__).resolve().parents[2] / "dags"
PARSE_BUDGET_SECONDS = 10


@pytest.fixture(scope="module")
def dagbag_and_lookups():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Connection, Variable

    with mock.patch.object(Connection, "get") as conn_get, mock.patch.object(Variable, "get") as var_get:
        started = time.monotonic()
        bag = DagBag(dag_folder=str(DAGS))
        elapsed = time.monotonic() - started
    return bag, conn_get.call_count + var_get.call_count, elapsed


def test_no_import_errors(dagbag_and_lookups):
    bag, _, _ = dagbag_and_lookups
    assert bag.import_errors == {}
    assert "es_message_export" in bag.dags


def test_no_connection_or_variable_lookup_at_parse_time(dagbag_and_lookups):
    assert dagbag_and_lookups[1] == 0


def test_parse_time_budget(dagbag_and_lookups):
    assert dagbag_and_lookups[2] < PARSE_BUDGET_SECONDS


def test_export_dag_contract(dagbag_and_lookups):
    dag = dagbag_and_lookups[0].dags["es_message_export"]
    assert set(dag.params) == {"start", "end", "dispatch", "batch_size", "reprocess", "extract_slices"}
    assert dag.params["dispatch"] == "local" and dag.params["batch_size"] == 500
    assert dag.params["reprocess"] is False
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.catchup is False
    order = [t.task_id for t in dag.topological_sort() if t.task_id != "catalog"]
    assert order == ["settle", "start_job", "extract_slices", "extract", "plan", "process", "reconcile"]
    # The Glue table is kept beside the export: after the params are checked, and nothing waits for it.
    catalog = dag.get_task("catalog")
    assert catalog.upstream_task_ids == {"start_job"} and catalog.downstream_task_ids == set()
    assert dag.get_task("process").map_index_template
    # reconcile waits for every extract slice itself: plan is upstream_failed as soon as one slice fails.
    assert {"extract", "process"} <= dag.get_task("reconcile").upstream_task_ids


def test_retry_dag_contract(dagbag_and_lookups):
    dag = dagbag_and_lookups[0].dags["es_message_retry"]
    assert set(dag.params) == {"job_id", "start", "end", "revive_dead", "dispatch", "batch_size"}
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    order = [t.task_id for t in dag.topological_sort()]
    assert [t for t in order if t != "purge_tracking"] == ["start_job", "plan", "process", "summarize"]
    purge = dag.get_task("purge_tracking")  # housekeeping, apart from the retry
    assert purge.upstream_task_ids == set() and purge.downstream_task_ids == set()


def test_refresh_dag_contract(dagbag_and_lookups):
    dag = dagbag_and_lookups[0].dags["es_message_refresh"]
    assert set(dag.params) == {"since", "dispatch", "batch_size"}
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and dag.timetable.expression == "0 * * * *"
    assert [t.task_id for t in dag.topological_sort()] == ["start_job", "find_changes", "plan", "process", "summarize"]
    assert dag.get_task("summarize").upstream_task_ids == {"start_job", "find_changes", "process"}


def test_the_refresh_schedule_can_be_turned_off(monkeypatch):
    from support import parse_dag

    monkeypatch.setenv("ES_REFRESH_SCHEDULE", "off")
    assert type(parse_dag("es_message_refresh").timetable).__name__ == "NullTimetable"


@pytest.mark.parametrize("dag_id", ["es_message_export", "es_message_retry", "es_message_refresh"])
def test_batches_and_only_batches_run_in_the_batch_pool(dagbag_and_lookups, dag_id):
    from es_export_airflow.settings import BATCH_POOL

    dag = dagbag_and_lookups[0].dags[dag_id]
    pools = {t.task_id: t.pool for t in dag.tasks}
    assert pools.pop("process") == BATCH_POOL == "es_export_batches"
    if dag_id == "es_message_export":  # each slice holds a point-in-time context: capped with the batches
        assert pools.pop("extract") == BATCH_POOL
        assert dag.get_task("extract").pool_slots == 1
    assert set(pools.values()) == {"default_pool"}, pools
    assert dag.get_task("process").pool_slots == 1


@pytest.mark.parametrize("dag_id", ["es_message_export", "es_message_retry"])
def test_the_batch_pool_is_named_by_the_environment_at_parse_time(monkeypatch, dag_id):
    from support import parse_dag

    monkeypatch.setenv("ES_EXPORT_BATCH_POOL", "search_guard")
    dag = parse_dag(dag_id)
    assert dag.get_task("process").pool == "search_guard"
    if dag_id == "es_message_export":
        assert dag.get_task("extract").pool == "search_guard"


def test_the_extract_can_have_a_pool_of_its_own(monkeypatch):
    from support import parse_dag

    monkeypatch.setenv("ES_EXPORT_BATCH_POOL", "search_guard")
    monkeypatch.setenv("ES_EXPORT_EXTRACT_POOL", "search_scans")
    dag = parse_dag("es_message_export")
    assert (dag.get_task("extract").pool, dag.get_task("process").pool) == ("search_scans", "search_guard")


def test_make_airflow_creates_the_pool_the_tasks_use():
    from es_export_airflow.settings import BATCH_POOL, BATCH_POOL_SLOTS

    script = (DAGS.parent / "devstack" / "airflow.sh").read_text()
    assert f'instance_setting ES_EXPORT_BATCH_POOL {BATCH_POOL})"' in script
    assert f'instance_setting ES_EXPORT_BATCH_POOL_SLOTS {BATCH_POOL_SLOTS})"' in script
    assert script.count("ensure_batch_pool") == 3  # defined, after startup, and on an Airflow already running


@pytest.mark.parametrize(("value", "ok"), [
    ("2024-10-01", True), ("2024-10-01T06:00:00Z", True), ("2024-10-01 06:00", True),
    ("2024-10-01T06:00:00.5+02:00", True), ("yesterday", False), ("2024-10-1", False), ("", False),
])
def test_trigger_form_date_pattern(value, ok):
    import re

    from es_export_airflow.settings import DATE_OR_DATETIME

    assert bool(re.match(DATE_OR_DATETIME, value)) is ok


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_a_dag_file_is_wiring(path):
    """Each task body is a few lines calling the edge (es_export_airflow): no function in a DAG file is
    over 25 lines, except the DAG function, which stays under 45."""
    import ast

    functions = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
    dag_function = path.stem
    assert dag_function in {f.name for f in functions}
    too_long = {f.name: f.end_lineno - f.lineno + 1 for f in functions
                if f.end_lineno - f.lineno + 1 > (44 if f.name == dag_function else 25)}
    assert too_long == {}
