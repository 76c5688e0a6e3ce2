"""The export's `catalog` task: the Glue table over the archive (`es_export.catalog`), through the amazon
provider's Glue catalog hook and the `aws_default` connection."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import task

from es_export import catalog
from es_export_airflow.connections import AWS_CONN_ID
from es_export_airflow.failures import failing_fast
from es_export_airflow.settings import load_config

log = logging.getLogger(__name__)


def ensure_table() -> dict[str, str]:
    """Create or check the configured table; off (nothing asked of Glue) without glue_database/glue_table.
    A table of another shape fails the task without retries, and the run with it (the export itself
    goes on: the archive does not wait for its catalog)."""
    with failing_fast():
        cfg = load_config()
        name = catalog.TableName.of(cfg)
        if name is None:
            log.info("no Glue table configured (glue_database, glue_table): nothing to do")
            return {"table": "", "outcome": "off"}
        from airflow.providers.amazon.aws.hooks.glue_catalog import GlueCatalogHook

        outcome = catalog.ensure_table(GlueCatalogHook(aws_conn_id=AWS_CONN_ID).get_conn(), cfg)
    log.info("Glue table %s over %s (layout %s): %s", name, catalog.location(cfg), cfg.layout.value, outcome)
    return {"table": str(name), "outcome": outcome}


def catalog_task() -> Any:
    """The `catalog` task of the export DAG."""

    @task(task_id="catalog", multiple_outputs=False)
    def catalog() -> dict[str, str]:
        """Create or check the Glue table over the archive (glue_database, glue_table); off when unset."""
        return ensure_table()

    return catalog()
