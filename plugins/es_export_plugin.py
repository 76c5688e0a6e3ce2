"""Airflow plugin of the export package: the job_runs listener and the status page.

On MWAA plugins.zip (`make mwaa-bundle`) holds this file and the packages es_export and
es_export_airflow: Airflow puts the plugins folder on sys.path in every component (the DAGs folder
only while parsing), so that is where the modules it loads come from.
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
