"""The Glue table's definition per layout, its DDL twin, and which existing tables are refused."""

import re

import pytest

from es_export import catalog, parquet
from es_export.config import ExportConfig, Layout
from es_export.errors import ConfigError

pytestmark = pytest.mark.unit


def config(layout: Layout, **kw) -> ExportConfig:
    return ExportConfig(bucket="archive-bucket", prefix="exports/messages", layout=layout, glue_database="analytics",
                        glue_table="messages", **kw)


@pytest.mark.parametrize("layout", list(Layout), ids=lambda layout: layout.value)
def test_the_table_reads_where_the_export_writes_with_a_dt_projection(layout):
    table = catalog.table_input(config(layout), "messages")
    params = table["Parameters"]
    assert table["StorageDescriptor"]["Location"] == "s3://archive-bucket/exports/messages/"
    # The template names the folders sink.day_prefix writes.
    assert params["storage.location.template"] == "s3://archive-bucket/exports/messages/dt=${dt}/"
    assert (params["projection.enabled"], params["projection.dt.type"], params["projection.dt.format"]) == (
        "true", "date", "yyyy-MM-dd")
    assert table["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert params[catalog.MARKER] == layout.value


def test_parquet_columns_are_the_files_columns_and_json_layouts_use_openx():
    pq_table = catalog.table_input(config(Layout.PARQUET), "t")
    assert [(c["Name"], c["Type"]) for c in pq_table["StorageDescriptor"]["Columns"]] == list(parquet.COLUMNS)
    assert pq_table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == catalog.PARQUET_SERDE
    js = catalog.table_input(config(Layout.NDJSON_GZIP), "t")["StorageDescriptor"]
    assert js["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert [c["Name"] for c in js["Columns"]] == ["message_id", "message", "history", "status", "audit", "export"]


@pytest.mark.parametrize("layout", list(Layout), ids=lambda layout: layout.value)
def test_the_ddl_says_what_the_glue_table_says(layout):
    cfg = config(layout)
    ddl = catalog.athena_ddl(cfg)
    table = catalog.table_input(cfg, "messages")
    assert ddl.startswith("CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`messages` (")
    assert re.findall(r"^  `(\w+)` (\S+?),?$", ddl.split(")\nCOMMENT")[0], re.M) == [
        (c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert dict(re.findall(r"^  '([^']+)'='([^']*)',?$", ddl, re.M)) == {
        k: v for k, v in table["Parameters"].items() if k != "EXTERNAL"}
    for value in (table["StorageDescriptor"]["Location"], table["StorageDescriptor"]["InputFormat"],
                  table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"], "PARTITIONED BY (`dt` string)"):
        assert value in ddl


def test_the_catalog_is_off_unless_both_keys_are_set():
    assert catalog.TableName.of(ExportConfig()) is None
    with pytest.raises(ConfigError, match="glue_database and glue_table"):
        ExportConfig(glue_database="analytics")


@pytest.mark.parametrize(("change", "refusal"), [
    (lambda t: t["Parameters"].pop(catalog.MARKER), "was not created by es_export"),
    (lambda t: t["Parameters"].update({catalog.MARKER: "per_message"}), "layout 'per_message'"),
    (lambda t: t["StorageDescriptor"].update({"Location": "s3://other/place/"}), "reads 's3://other/place/'"),
])
def test_another_table_is_refused_and_named(change, refusal):
    wanted = catalog.table_input(config(Layout.PARQUET), "messages")
    current = catalog.table_input(config(Layout.PARQUET), "messages")
    change(current)
    with pytest.raises(ConfigError, match=refusal) as caught:
        catalog.refuse_other(current, wanted, catalog.TableName("analytics", "messages"))
    assert "analytics.messages" in str(caught.value) and "left as it is" in str(caught.value)


def test_the_ddl_command_prints_the_configured_table(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"bucket": "b", "layout": "parquet", "glue_database": "d", "glue_table": "t"}')
    assert catalog.main(["--config", str(path)]) == 0
    assert "`d`.`t`" in capsys.readouterr().out
    path.write_text('{"layout": "orc"}')
    assert catalog.main(["--config", str(path)]) == 2
    assert "layout must be one of" in capsys.readouterr().err
