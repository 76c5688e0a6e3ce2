"""The status page: recent export jobs, their batch progress, and failed and dead messages with
their reasons, read from the tracking tables. A FastAPI app that the plugin in plugins/ mounts on
Airflow's api-server at /es-export; the UI shows it under Browse as "Export status".

Only signed-in Airflow users see it (the UI's JWT cookie or a bearer token).
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse

from es_export import tracking
from es_export_airflow import mysql_connection

URL_PREFIX = "/es-export"


def _signed_in() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return requires_authenticated()


app = FastAPI(title="es_message_export status", dependencies=[Depends(_signed_in())])


def snapshot(limit: int, job_id: int | None) -> dict[str, Any]:
    with mysql_connection() as conn:
        tracking.migrate(conn)  # a fresh install shows empty tables instead of an error
        return {"jobs": tracking.recent_jobs(conn, limit),
                "batches": tracking.job_batches(conn, job_id) if job_id is not None else [],
                "problems": tracking.problem_messages(conn, 100, job_id=job_id)}


@app.get("/jobs.json")
def jobs_json(limit: int = Query(25, ge=1, le=500), job_id: int | None = None) -> dict[str, Any]:
    return snapshot(limit, job_id)


@app.get("/", response_class=HTMLResponse)
def status_html(limit: int = Query(25, ge=1, le=500), job_id: int | None = None) -> str:
    return render(snapshot(limit, job_id), job_id)


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
            + _cell(j["to_export"]) + _cell(j["batch_completed"]) + _cell(j["batch_failed"])
            + _cell(j["bytes_written"]) + _cell(j["last_error"])
            + f'<td><a href="?job_id={j["id"]}">batches, failures</a></td></tr>')


def _batch_row(b: dict[str, Any]) -> str:
    return ("<tr>" + _cell(b["batch_no"]) + _cell(b["id"])
            + _status_cell(b["status"])
            + "".join(_cell(b[k]) for k in ("total", "completed", "failed", "attempts", "bytes_written",
                                             "started_at", "finished_at", "last_error")) + "</tr>")


def _problem_row(m: dict[str, Any]) -> str:
    return ("<tr>" + _cell(m["message_id"]) + _status_cell(m["status"])
            + _cell(m["attempts"]) + _cell(m["job_id"]) + _cell(m["batch_id"]) + _cell(m["last_error"])
            + _cell(m["next_attempt_at"]) + "</tr>")


STYLE = """body{font-family:system-ui,sans-serif;margin:1rem;color:#1a202c}table{border-collapse:collapse;
width:100%;font-size:13px;margin-bottom:2rem}th,td{border:1px solid #cbd5e0;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#edf2f7}.s-completed,.s-success{color:#276749}.s-failed,.s-dead{color:#c53030;
font-weight:600}.s-running{color:#2b6cb0}"""


def render(data: dict[str, Any], job_id: int | None) -> str:
    jobs = "".join(_job_row(j) for j in data["jobs"]) or '<tr><td colspan="15">no jobs yet</td></tr>'
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
<h2>Recent jobs</h2>
<table id="jobs"><tr><th>job</th><th>DAG</th><th>Airflow run</th><th>interval (UTC)</th><th>status</th>
<th>Airflow state</th><th>try</th><th>dispatch</th><th>batches done</th><th>to export</th><th>exported</th>
<th>failed</th><th>bytes</th><th>last error</th><th></th></tr>{jobs}</table>
{batches}
<h2>Failed and dead messages ({html.escape(scope)}{' · <a href="?">all jobs</a>' if job_id is not None else ''})</h2>
<table id="problems"><tr><th>message id</th><th>status</th><th>attempts</th><th>job</th><th>batch</th>
<th>reason</th><th>next attempt</th></tr>{problems}</table>
</body></html>"""
