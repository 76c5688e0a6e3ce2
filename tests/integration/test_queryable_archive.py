"""The archive read back by real engines, in every layout: two days exported to the local S3 server, then
read by DuckDB (SQL over S3, through pyarrow's S3 filesystem: DuckDB's own S3 extension is downloaded
at run time, which this machine cannot do) and, for Parquet, by pyarrow's dataset reader with hive
partitioning. Every message exactly once, filtering by `dt` and `message_id`, and the JSON columns
equal to what Elasticsearch holds."""

import json
import uuid
from datetime import date, timedelta

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from fsspec.implementations.arrow import ArrowFSWrapper
from pyarrow import fs as pafs

import seed_data
import support
from es_export import source
from es_export.config import ExportConfig, Layout
from scenarios import export
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

SEED = SeedConfig(messages=90, days=2, start=date(2025, 8, 1), seed=29, large=0)
DAYS = [SEED.start, SEED.start + timedelta(days=1)]
DB = "tracking_test_queryable"
# What each layout's files are called; a day folder holds one layout's files only.
FILES = {Layout.PER_MESSAGE: "*.json", Layout.NDJSON_GZIP: "*.ndjson.gz", Layout.PARQUET: "*.parquet"}


# An id as Elasticsearch generates them about once in 64: a leading '_' (engines skip such files as hidden).
UNDERSCORED = "_Xq3bQpYBc1kR2vL8tN0e"


def ids_of(day: date) -> list[str]:
    return sorted([*seed_data.ids_for_day(SEED, day), *([UNDERSCORED] if day == DAYS[0] else [])])


class _S3(ArrowFSWrapper):
    protocol = "s3"


def s3_filesystem() -> pafs.S3FileSystem:
    endpoint = support.require_env("AWS_ENDPOINT_URL")
    return pafs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[1], scheme=endpoint.split("://", 1)[0],
                             access_key=support.require_env("AWS_ACCESS_KEY_ID"),
                             secret_key=support.require_env("AWS_SECRET_ACCESS_KEY"), region="us-east-1")


def duckdb_over_s3() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register_filesystem(_S3(s3_filesystem()))
    return con


def reader(cfg: ExportConfig) -> str:
    """The DuckDB table function over the whole archive of `cfg`, the dt folder as a column."""
    files = f"s3://{cfg.bucket}/{cfg.prefix}/dt=*/{FILES[cfg.layout]}"
    if cfg.layout is Layout.PARQUET:
        return f"read_parquet('{files}', hive_partitioning = true, hive_types = {{'dt': VARCHAR}})"
    return (f"read_json('{files}', format = 'newline_delimited', hive_partitioning = true, "
            "hive_types = {'dt': VARCHAR}, columns = {'message_id': 'VARCHAR', 'message': 'JSON', "
            "'history': 'JSON', 'status': 'JSON', 'audit': 'JSON'})")


@pytest.fixture(scope="module")
def indices(es):
    with support.own_indices(es, SEED, "qa") as names:
        es.index(index=names["messages_index"], id=UNDERSCORED, refresh=True,
                 document={"message_id": UNDERSCORED, "timestamp": f"{DAYS[0].isoformat()}T12:00:00Z",
                           "body": "an id that starts with '_'"})
        yield names


@pytest.fixture(scope="module", params=list(Layout), ids=lambda layout: layout.value)
def exported(request, es, s3, indices):
    """Both days exported in one layout, each into its own prefix of a fresh bucket."""
    cfg = ExportConfig(**indices, bucket=f"queryable-{uuid.uuid4().hex[:8]}", prefix="archive/messages",
                       layout=request.param)
    s3.create_bucket(Bucket=cfg.bucket)
    conn = support.new_tracking_database(DB)
    try:
        for day in DAYS:
            assert export(es, conn, s3, cfg, day, batch_size=40).report.status == "completed"
    finally:
        conn.close()
    return cfg


def test_every_message_of_each_day_is_read_once_with_what_elasticsearch_holds(es, exported):
    rows = duckdb_over_s3().sql(f"SELECT dt, message_id, message, history, status, audit "
                                f"FROM {reader(exported)}").fetchall()
    for day in DAYS:
        ids = [r[1] for r in rows if r[0] == day.isoformat()]
        assert sorted(ids) == ids_of(day)  # all of them, each once
    assert len(rows) == sum(len(ids_of(day)) for day in DAYS)
    details = source.fetch_details(es, exported, [r[1] for r in rows])
    for _, mid, message, history, status, audit in rows:
        held = details[mid]
        assert json.loads(message) == held.message, mid
        assert [json.loads(history), json.loads(status), json.loads(audit)] == [
            held.related["history"], held.related["status"], held.related["audit"]], mid


def test_a_day_and_one_message_are_found_by_their_filters(exported):
    day = DAYS[1]
    wanted = ids_of(day)[7]
    con = duckdb_over_s3()
    [(count,)] = con.execute(f"SELECT count(*) FROM {reader(exported)} WHERE dt = ?", [day.isoformat()]).fetchall()
    assert count == len(ids_of(day))
    found = con.execute(f"SELECT dt, message_id FROM {reader(exported)} WHERE dt = ? AND message_id = ?",
                        [day.isoformat(), wanted]).fetchall()
    assert found == [(day.isoformat(), wanted)]


@pytest.mark.parametrize("exported", [Layout.PARQUET], indirect=True, ids=["parquet"])
def test_pyarrow_reads_the_parquet_layout_as_a_hive_partitioned_dataset(exported):
    dataset = ds.dataset(f"{exported.bucket}/{exported.prefix}", filesystem=s3_filesystem(), format="parquet",
                         partitioning=ds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"))
    assert dataset.schema.field("message_ts").type == pa.timestamp("ms", tz="UTC")
    assert dataset.schema.field("job_id").type == pa.int64()
    table = dataset.to_table(columns=["dt", "message_id", "message_ts"])
    assert table.num_rows == len(set(table["message_id"].to_pylist())) == sum(
        len(ids_of(day)) for day in DAYS)
    day = DAYS[0]
    one_day = dataset.to_table(filter=ds.field("dt") == day.isoformat(), columns=["message_id", "message_ts"])
    assert sorted(one_day["message_id"].to_pylist()) == ids_of(day)
    assert {ts.date() for ts in one_day["message_ts"].to_pylist()} == {day}
    wanted = one_day["message_id"][3].as_py()
    hit = dataset.to_table(filter=(ds.field("dt") == day.isoformat()) & (ds.field("message_id") == wanted))
    assert hit["message_id"].to_pylist() == [wanted] and json.loads(hit["message"][0].as_py())


def test_a_rerun_of_a_day_leaves_each_message_once(es, s3, exported):
    """A reprocessing rerun writes new files and removes the old rows: the reader still sees each once."""
    cfg = exported
    conn = support.connect(DB)
    try:
        assert export(es, conn, s3, cfg, DAYS[0], reprocess=True, batch_size=25).report.status == "completed"
    finally:
        conn.close()
    rows = duckdb_over_s3().execute(f"SELECT message_id FROM {reader(cfg)} WHERE dt = ?",
                                    [DAYS[0].isoformat()]).fetchall()
    assert sorted(r[0] for r in rows) == ids_of(DAYS[0])


def test_the_glue_tables_columns_are_what_the_files_hold(s3, exported):
    """The table's columns against an object the export wrote: the JSON documents' keys (what the OpenX
    SerDe looks up by name), or the Parquet file's own schema, name by name and type by type."""
    import pyarrow.parquet as pq

    from es_export import catalog, sink

    key = next(sink.data_keys(s3, exported.bucket, sink.day_prefix(exported.prefix, DAYS[0])))
    columns = [(c["Name"], c["Type"]) for c in
               catalog.table_input(exported, "t")["StorageDescriptor"]["Columns"]]
    if exported.layout is Layout.PARQUET:
        body = s3.get_object(Bucket=exported.bucket, Key=key)["Body"].read()
        arrow = {"string": pa.string(), "bigint": pa.int64(), "timestamp": pa.timestamp("ms", tz="UTC")}
        schema = pq.read_schema(pa.BufferReader(body))
        assert [(f.name, f.type) for f in schema] == [(name, arrow[kind]) for name, kind in columns]
        return
    for document in support.archived_documents(s3, exported.bucket, key):
        assert list(document) == [name for name, _ in columns]
        assert set(document["export"]) == {"job_id", "batch_id", "run_id", "exported_at"}
        assert dict(columns)["export"] == "struct<job_id:bigint,batch_id:bigint,run_id:string,exported_at:string>"


@pytest.mark.parametrize("exported", [Layout.PER_MESSAGE], indirect=True, ids=["per_message"])
def test_no_message_object_is_a_hidden_file_to_a_reader(exported):
    """pyarrow's dataset reader, like Athena, Hive and Spark, skips files whose name starts with '_' or '.':
    it must still list one object per message, the one whose id starts with '_' included."""
    dataset = ds.dataset(f"{exported.bucket}/{exported.prefix}", filesystem=s3_filesystem(), format="json",
                         partitioning=ds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"))
    assert len(dataset.files) == sum(len(ids_of(day)) for day in DAYS)
