"""Source data in the shapes real clusters have, on the real node: date_nanos timestamps, related
documents naming their message by number, by array (one document, several messages) or by a dotted
path, and related indices whose message_id was mapped dynamically (text + .keyword)."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

import support
from es_export import pipeline, source
from es_export.config import ExportConfig, RunParams
from es_export.errors import SourceError

pytestmark = pytest.mark.integration

DB = "tracking_test_shapes"
IDS = ["100", "101", "Msg/A b", "msg:ü"]


@pytest.fixture()
def cfg(es, s3):
    suffix = uuid.uuid4().hex[:8]
    cfg = ExportConfig(messages_index=f"sh-messages-{suffix}", history_index=f"sh-history-{suffix}",
                       status_index=f"sh-status-{suffix}", audit_index=f"sh-audit-{suffix}",
                       bucket=f"shapes-{suffix}")
    es.indices.create(index=cfg.messages_index, mappings={"properties": {"timestamp": {"type": "date_nanos"}}})
    es.indices.create(index=cfg.audit_index, mappings={"properties": {"message_id": {"type": "long"}}})
    for i, mid in enumerate(IDS):
        es.index(index=cfg.messages_index, id=mid, document={"timestamp": f"2025-07-01T10:00:00.12345678{i}Z"})
    # history is mapped dynamically: message_id becomes text with a .keyword sub-field.
    es.index(index=cfg.history_index, document={"message_id": ["Msg/A b", "msg:ü"], "event": "both"})
    es.index(index=cfg.history_index, document={"message_id": "Msg/A b", "event": "one"})
    es.index(index=cfg.status_index, document={"message_id": "101", "status": "sent"})
    es.index(index=cfg.audit_index, document={"message_id": 100, "action": "read"})
    es.indices.refresh(index=",".join([cfg.messages_index, cfg.history_index, cfg.status_index, cfg.audit_index]))
    s3.create_bucket(Bucket=cfg.bucket)
    yield cfg
    es.indices.delete(index=",".join([cfg.messages_index, cfg.history_index, cfg.status_index, cfg.audit_index]))


def test_a_day_of_date_nanos_messages_and_awkward_related_documents_exports_exactly(es, s3, cfg):
    support.reset_database(DB)
    conn = support.connect(DB)
    start = datetime(2025, 7, 1, tzinfo=UTC)
    params = RunParams(start=start, end=datetime(2025, 7, 2, tzinfo=UTC))
    job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex[:6]}", params=params)
    assert pipeline.extract(es, conn, cfg, job).ids_found == len(IDS)
    (batch,) = pipeline.plan(conn, cfg, job, params)
    assert pipeline.process_batch(es, conn, s3, cfg, batch, run_id=job.run_id).completed == len(IDS)
    assert pipeline.reconcile(es, conn, s3, cfg, job).status == "completed"
    details = source.fetch_details(es, cfg, IDS)
    assert [d["event"] for d in details["Msg/A b"].related["history"]] == ["both", "one"]
    assert [d["event"] for d in details["msg:ü"].related["history"]] == ["both"]
    assert details["101"].related["status"] == [{"message_id": "101", "status": "sent"}]
    assert details["100"].related["audit"] == [{"message_id": 100, "action": "read"}]
    assert details["101"].related["history"] == [] and details["100"].related["status"] == []
    conn.close()


def test_a_dotted_message_id_field_links_nested_documents(es, cfg):
    dotted = replace(cfg, message_id_field="meta.message_id")
    es.index(index=cfg.status_index, document={"meta": {"message_id": "Msg/A b"}, "status": "nested"},
             refresh=True)
    details = source.fetch_details(es, dotted, ["Msg/A b"])
    assert details["Msg/A b"].related["status"] == [{"meta": {"message_id": "Msg/A b"}, "status": "nested"}]


def test_a_text_message_id_without_keyword_is_refused_naming_index_and_field(es, cfg):
    index = f"sh-text-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=index, mappings={"properties": {"message_id": {"type": "text"}}})
    try:
        with pytest.raises(SourceError, match=f"field 'message_id' of index '{index}' is mapped as 'text' without"):
            source.fetch_details(es, replace(cfg, history_index=index), IDS)
    finally:
        es.indices.delete(index=index)


def test_daily_indices_read_through_a_pattern_fetch_each_message_from_its_own_index(es, s3, cfg):
    """messages-YYYY.MM.DD read as `messages-*`: _mget needs the concrete index, which the extract keeps."""
    base = f"sh-daily-{uuid.uuid4().hex[:6]}"
    for day, ids in (("2025.07.01", ["d1-a", "d1-b"]), ("2025.07.02", ["d2-a"])):
        for mid in ids:
            es.index(index=f"{base}-{day}", id=mid, document={"timestamp": f"{day.replace('.', '-')}T23:00:00Z"})
    es.indices.refresh(index=f"{base}-*")
    daily = replace(cfg, messages_index=f"{base}-*")
    support.reset_database(DB)
    conn = support.connect(DB)
    try:
        params = RunParams(start=datetime(2025, 7, 1, tzinfo=UTC), end=datetime(2025, 7, 3, tzinfo=UTC))
        job = pipeline.open_job(conn, dag_id="t", run_id=f"r-{uuid.uuid4().hex[:6]}", params=params)
        assert pipeline.extract(es, conn, daily, job).ids_found == 3
        assert sorted(support.query(DB, "SELECT message_id, source_index FROM message_tracking")) == [
            ("d1-a", f"{base}-2025.07.01"), ("d1-b", f"{base}-2025.07.01"), ("d2-a", f"{base}-2025.07.02")]
        (batch,) = pipeline.plan(conn, daily, job, params)
        result = pipeline.process_batch(es, conn, s3, daily, batch, run_id=job.run_id)
        assert (result.completed, result.failed) == (3, 0)
        assert pipeline.reconcile(es, conn, s3, daily, job).status == "completed"
    finally:
        conn.close()
        es.indices.delete(index=f"{base}-*")
