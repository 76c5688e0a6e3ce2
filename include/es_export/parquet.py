"""Parquet files of the `parquet` layout: a row per message, the source's documents as JSON text columns.

The message, history, status and audit are JSON text, not nested columns: any mapping of the source
fits one fixed schema, and Athena's JSON functions (`json_extract_scalar`) read them. pyarrow is
imported when a file is written or read, so the Lambda package, which has no pyarrow, still loads
the sink.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from es_export import jsonio
from es_export.errors import ConfigError

SUFFIX = ".parquet"
CONTENT_TYPE = "application/vnd.apache.parquet"
# The related sections, in the order of ExportConfig.related_indices().
SECTIONS = ("history", "status", "audit")
# (name, Glue/Athena type) of every column, in file order; the table over the layout uses the same.
COLUMNS = (("message_id", "string"), ("message_ts", "timestamp"), ("exported_at", "timestamp"),
           ("job_id", "bigint"), ("batch_id", "bigint"), ("run_id", "string"), ("message", "string"),
           *((section, "string") for section in SECTIONS))
# zstd level 3: 5% smaller files than pyarrow's default level at the same CPU (levels 6 and 9: 3x and 5x
# the CPU for 7% and 13% less); Athena, Spark, DuckDB and pyarrow read it. Dictionaries and min/max
# statistics only where they serve: run_id repeats, the other columns are (nearly) unique, and the
# statistics of the scalar columns let a reader skip files when it filters on them.
WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd", "compression_level": 3, "use_dictionary": ["run_id"],
    "write_statistics": ["message_id", "message_ts", "exported_at", "job_id", "batch_id", "run_id"],
}


def require() -> Any:
    """pyarrow, or a ConfigError that says how to install it."""
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401 - loads the submodules used as pa.compute and pa.parquet
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError("layout 'parquet' needs pyarrow, which is not installed here: on MWAA add the line "
                          "pyarrow==25.0.0 (the version of MWAA's constraint file) to requirements.txt; the "
                          "processing Lambda's package has no pyarrow, so parquet exports run with "
                          "dispatch=local") from None
    return pyarrow


def schema() -> Any:
    pa = require()
    types = {"string": pa.string(), "timestamp": pa.timestamp("ms", tz="UTC"), "bigint": pa.int64()}
    return pa.schema([pa.field(name, types[kind], nullable=name not in ("message_id", "message_ts"))
                      for name, kind in COLUMNS])


def row(document: dict[str, Any], message_ts: datetime) -> dict[str, Any]:
    """The row of one exported document (`process.build_document`'s shape)."""
    export = document["export"]
    return {
        "message_id": document["message_id"],
        "message_ts": message_ts,
        "exported_at": datetime.fromisoformat(export["exported_at"]),
        "job_id": export["job_id"],
        "batch_id": export["batch_id"],
        "run_id": export["run_id"],
        "message": _json_text(document["message"]),
        **{section: _json_text(document.get(section, [])) for section in SECTIONS},
    }


def _json_text(value: Any) -> str:
    return jsonio.encode(value).decode("utf-8")


def write(rows: Iterable[dict[str, Any]]) -> bytes:
    """One zstd Parquet file of `rows`."""
    pa = require()
    table = pa.Table.from_pylist(list(rows), schema=schema())
    out = io.BytesIO()
    pa.parquet.write_table(table, out, **WRITE_OPTIONS)
    return out.getvalue()


def message_ids(body: bytes) -> list[str]:
    """The message ids of a file's rows, in order (only that column is read)."""
    pa = require()
    return [str(v) for v in pa.parquet.read_table(pa.BufferReader(body), columns=["message_id"])["message_id"]
            .to_pylist()]


def without(body: bytes, remove: set[str]) -> bytes:
    """The file without the rows of the messages in `remove` (the others as they were)."""
    pa = require()
    table = pa.parquet.read_table(pa.BufferReader(body))
    removed = pa.compute.is_in(table["message_id"], value_set=pa.array(sorted(remove), pa.string()))
    kept = table.filter(pa.compute.invert(removed))
    out = io.BytesIO()
    pa.parquet.write_table(kept, out, **WRITE_OPTIONS)
    return out.getvalue()
