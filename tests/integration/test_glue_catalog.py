"""The Glue table created on the local server (moto implements the Glue API) and kept right: created with
its database, left alone when right, brought back when this package's own table drifted, and any other
table refused, never overwritten."""

import json
import uuid
from dataclasses import replace
from datetime import date

import boto3
import pytest

import support
from es_export import catalog, sink
from es_export.config import ExportConfig, Layout
from es_export.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture()
def glue():
    return boto3.client("glue", endpoint_url=support.require_env("AWS_ENDPOINT_URL"), region_name="us-east-1")


@pytest.fixture()
def cfg():
    suffix = uuid.uuid4().hex[:8]
    return ExportConfig(bucket=f"glue-{suffix}", prefix="exports/messages", layout=Layout.PARQUET,
                        glue_database=f"analytics_{suffix}", glue_table="messages")


def stored(glue, cfg):
    return glue.get_table(DatabaseName=cfg.glue_database, Name=cfg.glue_table)["Table"]


def test_the_table_is_created_with_its_database_and_then_left_alone(glue, cfg):
    assert catalog.ensure_table(glue, cfg) == "created"
    table = stored(glue, cfg)
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == [
        (name, kind) for name, kind in catalog.parquet.COLUMNS]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == catalog.PARQUET_SERDE
    template = table["Parameters"]["storage.location.template"]
    # Partition projection's template names exactly the folder the export writes a day into.
    day = date(2025, 8, 2)
    assert template.replace("${dt}", day.isoformat()) == sink.day_uri(cfg.bucket, cfg.prefix, day)
    assert catalog.ensure_table(glue, cfg) == "unchanged"
    assert stored(glue, cfg) == table  # not written again


def test_its_own_table_that_drifted_is_brought_back(glue, cfg):
    catalog.ensure_table(glue, cfg)
    drifted = catalog.table_input(cfg, cfg.glue_table)
    drifted["StorageDescriptor"]["Columns"] = drifted["StorageDescriptor"]["Columns"][:3]
    del drifted["Parameters"]["projection.enabled"]
    glue.update_table(DatabaseName=cfg.glue_database, TableInput=drifted)
    assert catalog.ensure_table(glue, cfg) == "updated"
    table = stored(glue, cfg)
    assert len(table["StorageDescriptor"]["Columns"]) == len(catalog.parquet.COLUMNS)
    assert table["Parameters"]["projection.enabled"] == "true"


@pytest.mark.parametrize("other", ["a table of its own", "another layout", "another location"])
def test_another_table_of_that_name_is_refused_and_kept(glue, cfg, other):
    if other == "a table of its own":
        glue.create_database(DatabaseInput={"Name": cfg.glue_database})
        glue.create_table(DatabaseName=cfg.glue_database, TableInput={
            "Name": cfg.glue_table, "StorageDescriptor": {"Columns": [{"Name": "x", "Type": "int"}],
                                                          "Location": catalog.location(cfg)}})
    else:
        changed = (replace(cfg, layout=Layout.NDJSON_GZIP) if other == "another layout"
                   else replace(cfg, prefix="elsewhere"))
        catalog.ensure_table(glue, changed)
    before = stored(glue, cfg)
    with pytest.raises(ConfigError, match=f"Glue table {cfg.glue_database}.messages") as caught:
        catalog.ensure_table(glue, cfg)
    assert "left as it is" in str(caught.value)
    after = stored(glue, cfg)
    assert after["StorageDescriptor"] == before["StorageDescriptor"]
    assert after.get("Parameters") == before.get("Parameters")


def test_the_mwaa_policy_grants_the_glue_calls_the_task_makes_and_no_others(glue, cfg):
    called: set[str] = set()
    glue.meta.events.register("before-call.glue.*", lambda model, **_: called.add(f"glue:{model.name}"))
    catalog.ensure_table(glue, cfg)  # database and table created
    drifted = catalog.table_input(cfg, cfg.glue_table)
    drifted["Parameters"]["projection.dt.range"] = "2024-01-01,NOW"
    glue.update_table(DatabaseName=cfg.glue_database, TableInput=drifted)
    called.discard("glue:UpdateTable")  # the test's own call
    assert catalog.ensure_table(glue, cfg) == "updated"
    statements = json.loads((support.ROOT / "deploy" / "iam-policy-mwaa.json").read_text())["Statement"]
    (granted,) = [s for s in statements if s["Sid"] == "GlueTableOverTheArchive"]
    assert set(granted["Action"]) == called
    assert granted["Resource"][-1].endswith(":table/GLUE_DATABASE/GLUE_TABLE")


class CreatedMeanwhile:
    """A Glue client that answers "not found" to the first look at the table and the database, as when two
    runs of a backfill start at once and the other one creates them in between."""

    def __init__(self, glue, cfg):
        self._glue, self.looked = glue, set()
        catalog.ensure_table(glue, cfg)  # the other run's

    def get_table(self, **kw):
        return self._first_look("table", self._glue.get_table, **kw)

    def get_database(self, **kw):
        return self._first_look("database", self._glue.get_database, **kw)

    def _first_look(self, what, call, **kw):
        if what not in self.looked:
            self.looked.add(what)
            raise self._glue.exceptions.EntityNotFoundException({"Error": {"Code": "EntityNotFoundException"}}, what)
        return call(**kw)

    def __getattr__(self, name):
        return getattr(self._glue, name)


def test_a_table_another_run_creates_meanwhile_is_taken_as_it_is(glue, cfg):
    assert catalog.ensure_table(CreatedMeanwhile(glue, cfg), cfg) == "unchanged"
