"""The status page: recent export jobs, their batch progress, and failed and dead messages with
their reasons, read from the tracking tables. A FastAPI app that the plugin in plugins/ mounts on
Airflow's api-server at /es-export; the UI shows it under Browse as "Export status".

Only signed-in Airflow users see it (the UI's JWT cookie or a bearer token), and each sees only the
jobs, batches and messages of the DAGs Airflow's auth manager lets them read. Someone who may read
neither DAG gets 403 and the reason.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user, requires_authenticated
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import HTMLResponse

from es_export import tracking
from es_export_airflow.connections import MYSQL_CONN_ID, mysql_connection
from es_export_airflow.run_mirror import DAG_IDS
from es_export_airflow.settings import BATCH_POOL_SLOTS, batch_pool, extract_pool

URL_PREFIX = "/es-export"
NO_READABLE_DAG = (f"You may read none of the export DAGs ({', '.join(sorted(DAG_IDS))}) and their runs, so this "
                   "page has nothing to show you: ask an Airflow admin for read access to them.")

app = FastAPI(title="es_message_export status", dependencies=[Depends(requires_authenticated())])


def readable_dag_ids(user: Annotated[BaseUser, Depends(get_user)]) -> set[str]:
    """The export DAGs whose runs the signed-in user may read: the page shows run ids and errors, so it asks
    the auth manager what Airflow's own `GET /api/v2/dags/{dag_id}` and `.../dagRuns` ask (the DAG, and its
    runs), and agrees with the UI under any auth manager."""
    auth_manager = get_auth_manager()

    def may_read(dag_id: str, entity: DagAccessEntity | None) -> bool:
        details = DagDetails(id=dag_id, team_name=_team_name(dag_id))
        return auth_manager.is_authorized_dag(method="GET", access_entity=entity, details=details, user=user)

    return {dag_id for dag_id in DAG_IDS if may_read(dag_id, None) and may_read(dag_id, DagAccessEntity.RUN)}


def _team_name(dag_id: str) -> str | None:
    """The DAG's team in multi-team mode (the auth manager checks the user's teams), else None."""
    if not conf.getboolean("core", "multi_team"):
        return None
    from airflow.models.dag import DagModel

    return DagModel.get_team_name(dag_id)


ReadableDagIds = Annotated[set[str], Depends(readable_dag_ids)]


class Unavailable(Exception):
    """The tracking tables cannot be shown: the page says why and what to do (HTTP 503)."""


def snapshot(limit: int, job_id: int | None, dag_ids: set[str]) -> dict[str, Any]:
    """The jobs, one job's batches and the failed and dead messages, of the DAGs `dag_ids` only.

    Read-only, with the quick timeouts: a web request never changes the schema (the DAGs' first task
    migrates it) and never waits minutes on a database that hangs. A user with SELECT alone will do.
    """
    try:
        with mysql_connection(quick=True) as conn:
            version = tracking.schema_version(conn)
            if version < tracking.LATEST_VERSION:
                raise Unavailable(
                    f"The tracking database's schema is at version {version}, and this version of the package "
                    f"needs {tracking.LATEST_VERSION}. The first task of every es_message_export or "
                    "es_message_retry run migrates it: trigger one, or run `python -m es_export.migrate` as a "
                    "user who may alter the tables. This page only reads.")
            data = _read(conn, limit, job_id, dag_ids)
    except Unavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error: the page says it and stays up
        raise Unavailable(f"The tracking database (connection {MYSQL_CONN_ID}) cannot be read: "
                          f"{type(exc).__name__}: {exc}") from exc
    return data | {"missing_pools": missing_pools()}


def missing_pools() -> list[str]:
    """The pools the DAGs' tasks run in that do not exist. Airflow says nothing when a DAG is parsed: its
    scheduler leaves every task of a missing pool `scheduled` for ever, so the page says it instead."""
    from airflow.models.pool import Pool

    return [name for name in sorted({batch_pool(), extract_pool()}) if Pool.get_pool(name) is None]


def _read(conn: Any, limit: int, job_id: int | None, dag_ids: set[str]) -> dict[str, Any]:
    return {"dag_ids": sorted(dag_ids),
            "jobs": tracking.recent_jobs(conn, limit, dag_ids=dag_ids),
            "batches": tracking.job_batches(conn, job_id, dag_ids=dag_ids) if job_id is not None else [],
            "problems": tracking.problem_messages(conn, 100, job_id=job_id, dag_ids=dag_ids),
            "freshness": tracking.freshness(conn)}


@app.get("/jobs.json")
def jobs_json(dag_ids: ReadableDagIds, limit: int = Query(25, ge=1, le=500),
              job_id: int | None = None) -> dict[str, Any]:
    if not dag_ids:
        raise HTTPException(status.HTTP_403_FORBIDDEN, NO_READABLE_DAG)
    try:
        return snapshot(limit, job_id, dag_ids)
    except Unavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


@app.get("/", response_class=HTMLResponse)
def status_html(dag_ids: ReadableDagIds, limit: int = Query(25, ge=1, le=500),
                job_id: int | None = None) -> HTMLResponse:
    if not dag_ids:  # a page, not JSON: the UI shows this in its iframe
        return HTMLResponse(render_refusal(), status_code=status.HTTP_403_FORBIDDEN)
    try:
        data = snapshot(limit, job_id, dag_ids)
    except Unavailable as exc:
        return HTMLResponse(render_refusal(str(exc)), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return HTMLResponse(render(data, job_id))


def _cell(value: Any) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _status_cell(status: Any) -> str:
    """A status, coloured by the page's s-<status> classes."""
    text = html.escape(str(status))
    return f'<td class="s-{text}">{text}</td>'


def _job_row(j: dict[str, Any]) -> str:
    run = html.escape(j["run_id"])
    link = f'<a href="{html.escape(j["airflow_url"])}" target="_top">{run}</a>' if j.get("airflow_url") else run
    progress = f"{j['batches_done']}/{j['batches']}" if j["batches"] else "-"
    return ("<tr>" + _cell(j["id"]) + _cell(j["dag_id"]) + f"<td>{link}</td>"
            + _cell(f"{j['interval_start']} → {j['interval_end']}")
            + _status_cell(j["status"])
            + _cell(j["airflow_state"]) + _cell(j["airflow_try"]) + _cell(j["dispatch"]) + _cell(progress)
            + _cell(j["to_export"]) + _cell(j["batch_completed"]) + _cell(j.get("exported_by_others"))
            + _cell(j["batch_failed"])
            + _cell(j["bytes_written"]) + _cell(j["last_error"])
            + f'<td><a href="?job_id={j["id"]}">batches, failures</a></td></tr>')


def _batch_row(b: dict[str, Any]) -> str:
    return ("<tr>" + _cell(b["batch_no"]) + _cell(b["id"])
            + _status_cell(b["status"])
            + "".join(_cell(b[k]) for k in ("total", "completed", "failed", "attempts", "bytes_written",
                                             "started_at", "finished_at", "last_error")) + "</tr>")


def _freshness(data: dict[str, Any]) -> str:
    """The refresh watermark(s), and per day when its objects were last brought up to date."""
    fresh = data.get("freshness") or {"watermarks": [], "days": []}
    marks = "; ".join(f"{m['dag_id']}: up to date to {m['watermark']}" for m in fresh["watermarks"]) \
        or "no refresh has finished yet"
    rows = "".join("<tr>" + _cell(d["day"]) + _cell(d["refreshed_at"]) + _cell(d["rewritten"]) + _cell(d["job_id"])
                   + "</tr>" for d in fresh["days"]) or '<tr><td colspan="4">none yet</td></tr>'
    return (f"<h2>Freshness</h2><p id=\"watermark\">{html.escape(marks)}</p><table id=\"freshness\">"
            "<tr><th>day</th><th>last brought up to date</th><th>messages the last refresh rewrote</th><th>job</th>"
            f"</tr>{rows}</table>")


def _problem_row(m: dict[str, Any]) -> str:
    return ("<tr>" + _cell(m["message_id"]) + _status_cell(m["status"])
            + _cell(m["attempts"]) + _cell(m["job_id"]) + _cell(m["batch_id"]) + _cell(m["last_error"])
            + _cell(m["next_attempt_at"]) + "</tr>")


STYLE = """body{font-family:system-ui,sans-serif;margin:1rem;color:#1a202c}table{border-collapse:collapse;
width:100%;font-size:13px;margin-bottom:2rem}th,td{border:1px solid #cbd5e0;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#edf2f7}.s-completed,.s-success{color:#276749}.s-failed,.s-dead{color:#c53030;
font-weight:600}.s-running{color:#2b6cb0}"""


def render_refusal(reason: str = NO_READABLE_DAG) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Export status</title>
<style>{STYLE}</style></head><body>
<h1>Elasticsearch → S3 export status</h1>
<p class="s-failed">{html.escape(reason)}</p>
</body></html>"""


def render(data: dict[str, Any], job_id: int | None) -> str:
    jobs = "".join(_job_row(j) for j in data["jobs"]) or '<tr><td colspan="15">no jobs yet</td></tr>'
    shown = data.get("dag_ids")
    note = ("" if shown is None or set(shown) >= DAG_IDS else
            f"<p>Only the jobs of {html.escape(', '.join(shown))} are shown: you may not read the other export"
            " DAGs.</p>")
    pools = "".join(f'<p class="s-failed">The Airflow pool {html.escape(name)} does not exist: every task in it '
                    'stays scheduled and never runs. Create it: <code>airflow pools set '
                    f'{html.escape(name)} {BATCH_POOL_SLOTS} "es-message-export"</code> (or Admin → Pools).</p>'
                    for name in data.get("missing_pools", []))
    problems = "".join(_problem_row(m) for m in data["problems"]) or '<tr><td colspan="7">none</td></tr>'
    scope = f"job {job_id}" if job_id is not None else "all jobs"
    batches = ""
    if job_id is not None:
        rows = "".join(_batch_row(b) for b in data.get("batches", [])) or '<tr><td colspan="11">none</td></tr>'
        batches = (f"<h2>Batches of job {job_id}</h2><table id=\"batches\"><tr><th>batch</th><th>id</th>"
                   "<th>status</th><th>messages</th><th>exported</th><th>failed</th><th>attempts</th><th>bytes</th>"
                   f"<th>started</th><th>finished</th><th>last error</th></tr>{rows}</table>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Export status</title>
<style>{STYLE}</style></head><body>
<h1>Elasticsearch → S3 export status</h1>
{pools}
{note}
<h2>Recent jobs</h2>
<table id="jobs"><tr><th>job</th><th>DAG</th><th>Airflow run</th><th>interval (UTC)</th><th>status</th>
<th>Airflow state</th><th>try</th><th>dispatch</th><th>batches done</th><th>to export</th><th>exported</th>
<th>exported by other runs</th><th>failed</th><th>bytes</th><th>last error</th><th></th></tr>{jobs}</table>
{batches}
{_freshness(data)}
<h2>Failed and dead messages ({html.escape(scope)}{' · <a href="?">all jobs</a>' if job_id is not None else ''})</h2>
<table id="problems"><tr><th>message id</th><th>status</th><th>attempts</th><th>job</th><th>batch</th>
<th>reason</th><th>next attempt</th></tr>{problems}</table>
</body></html>"""
