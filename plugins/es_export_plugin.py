"""Airflow plugin of the export package: the job_runs listener and the status page.

On MWAA this file is the content of plugins.zip (`make mwaa-bundle`); the modules it loads live in
the DAGs folder, which MWAA puts on every component's Python path.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from es_export_airflow import run_mirror, status_page


class EsExportPlugin(AirflowPlugin):
    name = "es_export"
    listeners = [run_mirror]
    fastapi_apps = [{"app": status_page.app, "url_prefix": status_page.URL_PREFIX, "name": "Export status"}]
    external_views = [{
        "name": "Export status",
        "href": status_page.URL_PREFIX + "/",
        "url_route": "es-export",
        "destination": "nav",
        "category": "browse",
    }]
