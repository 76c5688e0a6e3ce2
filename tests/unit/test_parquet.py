"""The parquet layout's files: a row per message, every value of a tricky document kept exactly in its JSON
text columns, rows removed without touching the others."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_jsonio import TRICKY

from es_export import jsonio, parquet

pytestmark = pytest.mark.unit

TS = datetime(2025, 7, 1, 23, 59, 59, 999000, tzinfo=UTC)


def document(message_id: str, message: dict | None = None) -> dict:
    return {"message_id": message_id, "message": message if message is not None else jsonio.decode(TRICKY),
            "history": [{"event": "sent", "n": 123456789012345678901234567890}], "status": [],
            "audit": [{"who": "Grüße 🚀", "nested": [[{}]]}],
            "export": {"job_id": 7, "batch_id": 11, "run_id": "scheduled__2025-07-02", "exported_at":
                       "2025-07-02T01:00:00.123Z"}}


def test_a_tricky_document_survives_in_its_json_columns():
    doc = document("id with spaces  ")
    table = pq.read_table(pa.BufferReader(parquet.write([parquet.row(doc, TS)])))
    (row,) = table.to_pylist()
    assert row["message_id"] == "id with spaces  " and row["message_ts"] == TS
    assert row["exported_at"] == datetime(2025, 7, 2, 1, 0, 0, 123000, tzinfo=UTC)
    assert (row["job_id"], row["batch_id"], row["run_id"]) == (7, 11, "scheduled__2025-07-02")
    for column in ("message", "history", "status", "audit"):
        assert jsonio.decode(row[column]) == doc[column]  # big integers, -0.0, unicode, key order
        assert json.dumps(jsonio.decode(row[column])) == json.dumps(doc[column])
    assert row["message"].encode() == jsonio.encode(doc["message"])


def test_the_file_has_the_catalogs_columns_and_is_zstd_compressed():
    body = parquet.write([parquet.row(document("a"), TS)])
    meta = pq.ParquetFile(pa.BufferReader(body)).metadata
    assert [meta.schema.column(i).name for i in range(meta.num_columns)] == [name for name, _ in parquet.COLUMNS]
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}


def test_rows_are_removed_and_the_others_kept_as_they_were():
    rows = [parquet.row(document(mid, {"n": i}), TS) for i, mid in enumerate(["a", "b ", "c/ü", "d"])]
    body = parquet.write(rows)
    assert parquet.message_ids(body) == ["a", "b ", "c/ü", "d"]
    left = parquet.without(body, {"b ", "d", "not there"})
    assert parquet.message_ids(left) == ["a", "c/ü"]
    assert pq.read_table(pa.BufferReader(left)).to_pylist() == [rows[0], rows[2]]


def test_a_missing_message_id_is_refused_not_written_as_null():
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError)):
        parquet.write([{**parquet.row(document("a"), TS), "message_id": None}])
