"""The Glue Data Catalog table over the archive, so Athena (or Spark, or Trino) queries it without DDL.

One definition per layout, all partitioned by `dt` with partition projection (no partition is ever
added; a new day is queryable the moment its files are written):

- `per_message` and `ndjson_gzip`: JSON text read with the OpenX JSON SerDe. Its reader in Athena
  (Trino's OpenXJsonDeserializer) gives a `string` column the JSON text of an object or array, so the
  message and its history, status and audit are JSON text whatever their mapping. The Hive JSON SerDe
  refuses a non-scalar value in a `string` column, so it cannot be used here.
- `parquet`: the Parquet files' own columns (`parquet.COLUMNS`).

A table is created when missing and brought back to this definition when it drifted, but only a table
this package created (its `es_export.layout` parameter says so) at the same location and with the same
layout: any other table is refused, never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from es_export import parquet
from es_export.config import ExportConfig, Layout
from es_export.errors import ConfigError

MARKER = "es_export.layout"
# The first day partition projection offers; days before it are not queryable through the table.
PROJECTION_START = "2000-01-01"
JSON_COLUMNS = (("message_id", "string"), ("message", "string"),
                *((section, "string") for section in parquet.SECTIONS),
                ("export", "struct<job_id:bigint,batch_id:bigint,run_id:string,exported_at:string>"))
OPENX_SERDE = "org.openx.data.jsonserde.JsonSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"


@dataclass(frozen=True)
class TableName:
    database: str
    table: str

    @classmethod
    def of(cls, cfg: ExportConfig) -> TableName | None:
        """The configured table, or None when the catalog is off (glue_database/glue_table unset)."""
        if cfg.glue_database is None or cfg.glue_table is None:
            return None
        return cls(cfg.glue_database, cfg.glue_table)

    def __str__(self) -> str:
        return f"{self.database}.{self.table}"


def location(cfg: ExportConfig) -> str:
    return f"s3://{cfg.bucket}/{cfg.prefix}/"


def table_input(cfg: ExportConfig, name: str) -> dict[str, Any]:
    """The Glue TableInput of the table over `cfg`'s archive."""
    is_parquet = cfg.layout is Layout.PARQUET
    columns = parquet.COLUMNS if is_parquet else JSON_COLUMNS
    return {
        "Name": name,
        "Description": f"Messages exported from Elasticsearch by es_export (layout {cfg.layout.value}); "
                       "the message, history, status and audit columns hold JSON text.",
        "TableType": "EXTERNAL_TABLE",
        "PartitionKeys": [{"Name": "dt", "Type": "string"}],
        "StorageDescriptor": {
            "Columns": [{"Name": column, "Type": kind} for column, kind in columns],
            "Location": location(cfg),
            "InputFormat": PARQUET_INPUT if is_parquet else TEXT_INPUT,
            "OutputFormat": PARQUET_OUTPUT if is_parquet else TEXT_OUTPUT,
            "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE if is_parquet else OPENX_SERDE,
                          "Parameters": {"serialization.format": "1"}},
        },
        "Parameters": {
            "EXTERNAL": "TRUE",
            "classification": "parquet" if is_parquet else "json",
            MARKER: cfg.layout.value,
            "projection.enabled": "true",
            "projection.dt.type": "date",
            "projection.dt.format": "yyyy-MM-dd",
            "projection.dt.range": f"{PROJECTION_START},NOW",
            "projection.dt.interval": "1",
            "projection.dt.interval.unit": "DAYS",
            "storage.location.template": f"{location(cfg)}dt=${{dt}}/",
        },
    }


def ensure_table(glue: Any, cfg: ExportConfig) -> str:
    """Create the configured table (and its database) when missing, or bring this package's own table back
    to the definition; returns "created", "updated", "unchanged" or "off". `glue` is a boto3 Glue client."""
    name = TableName.of(cfg)
    if name is None:
        return "off"
    wanted = table_input(cfg, name.table)
    _ensure_database(glue, name.database)
    try:
        current = glue.get_table(DatabaseName=name.database, Name=name.table)["Table"]
    except glue.exceptions.EntityNotFoundException:
        try:
            glue.create_table(DatabaseName=name.database, TableInput=wanted)
            return "created"
        except glue.exceptions.AlreadyExistsException:  # another run (a backfill's) created it just now
            current = glue.get_table(DatabaseName=name.database, Name=name.table)["Table"]
    refuse_other(current, wanted, name)
    if _shape(current) == _shape(wanted):
        return "unchanged"
    glue.update_table(DatabaseName=name.database, TableInput=wanted)
    return "updated"


def _ensure_database(glue: Any, database: str) -> None:
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        try:
            glue.create_database(DatabaseInput={"Name": database, "Description": "Created by es_export"})
        except glue.exceptions.AlreadyExistsException:
            pass  # another run created it just now


def refuse_other(current: dict[str, Any], wanted: dict[str, Any], name: TableName) -> None:
    """ConfigError when the existing table is not this package's table of the same layout and location."""
    layout = (current.get("Parameters") or {}).get(MARKER)
    where = (current.get("StorageDescriptor") or {}).get("Location")
    if layout is None:
        raise ConfigError(f"Glue table {name} exists and was not created by es_export (it has no {MARKER} "
                          f"parameter; its location is {where!r}); it is left as it is. Set glue_table to a new "
                          "name, or drop that table if it is yours to drop")
    if layout != wanted["Parameters"][MARKER]:
        raise ConfigError(f"Glue table {name} is the table of layout {layout!r}, and this export writes layout "
                          f"{wanted['Parameters'][MARKER]!r}; it is left as it is. Give each layout its own "
                          "glue_table (and its own prefix)")
    if where != wanted["StorageDescriptor"]["Location"]:
        raise ConfigError(f"Glue table {name} reads {where!r}, and this export writes "
                          f"{wanted['StorageDescriptor']['Location']!r}; it is left as it is. Set glue_table to "
                          "a new name for this bucket and prefix")


def _shape(table: dict[str, Any]) -> tuple[Any, ...]:
    """What this package defines of a table (Glue adds fields of its own to what get_table returns)."""
    storage = table.get("StorageDescriptor") or {}
    serde = storage.get("SerdeInfo") or {}
    params = table.get("Parameters") or {}
    return ([(c["Name"], c["Type"]) for c in storage.get("Columns", [])],
            [(k["Name"], k["Type"]) for k in table.get("PartitionKeys", [])],
            storage.get("Location"), storage.get("InputFormat"), storage.get("OutputFormat"),
            serde.get("SerializationLibrary"), table.get("TableType"),
            {k: v for k, v in params.items() if k in _OWN_PARAMETERS})


_OWN_PARAMETERS = set(table_input(ExportConfig(), "x")["Parameters"])


def athena_ddl(cfg: ExportConfig) -> str:
    """The `CREATE EXTERNAL TABLE` equivalent to `ensure_table`, for users without Glue rights."""
    name = TableName.of(cfg) or TableName("default", "es_messages")
    table = table_input(cfg, name.table)
    storage = table["StorageDescriptor"]
    columns = ",\n".join(f"  `{c['Name']}` {c['Type']}" for c in storage["Columns"])
    properties = ",\n".join(f"  '{k}'='{v}'" for k, v in table["Parameters"].items() if k != "EXTERNAL")
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS `{name.database}`.`{name.table}` (\n{columns}\n)\n"
            f"COMMENT '{table['Description']}'\n"
            "PARTITIONED BY (`dt` string)\n"
            f"ROW FORMAT SERDE '{storage['SerdeInfo']['SerializationLibrary']}'\n"
            f"STORED AS INPUTFORMAT '{storage['InputFormat']}'\n"
            f"OUTPUTFORMAT '{storage['OutputFormat']}'\n"
            f"LOCATION '{storage['Location']}'\n"
            f"TBLPROPERTIES (\n{properties}\n);\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m es_export.catalog [--config FILE]`: print the DDL of the configuration's table (FILE holds
    the es_message_export_config Variable's JSON; without it, the defaults)."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m es_export.catalog", description=main.__doc__)
    parser.add_argument("--config", help="a JSON file holding the es_message_export_config Variable")
    args = parser.parse_args(argv)
    values = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            values = json.load(f)
    try:
        cfg = ExportConfig.from_mapping(values)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(athena_ddl(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
