"""The package's settings in Airflow: the Variable es_message_export_config and the trigger params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Variable

from es_export.config import ExportConfig, RunParams

CONFIG_VARIABLE = "es_message_export_config"
# What the trigger forms accept for start and end: a date, or a date and time with an optional zone.
DATE_OR_DATETIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"


def load_config() -> ExportConfig:
    """The Variable `es_message_export_config` (JSON, every key optional) as an ExportConfig."""
    values = Variable.get(CONFIG_VARIABLE, default={}, deserialize_json=True)
    return ExportConfig.from_mapping(values)


def run_params(context: Mapping[str, Any], cfg: ExportConfig) -> RunParams:
    """The run's params, with the data interval where start or end is empty."""
    return RunParams.resolve(dict(context["params"]), context.get("data_interval_start"),
                             context.get("data_interval_end"), max_range_days=cfg.max_range_days,
                             extract_slices=cfg.extract_slices, max_batch_size=cfg.max_batch_size)
