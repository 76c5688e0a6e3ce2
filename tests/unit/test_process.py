"""The process step's documents do not depend on how a batch's details are fetched: in one request or
in parts, the next fetched while the current one is serialised."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from es_export import search
from es_export.config import ExportConfig
from es_export.errors import TransientError
from es_export.model import Batch, BatchAttempt, TrackedMessage
from es_export.pipeline import process

pytestmark = pytest.mark.unit

CFG = ExportConfig()
TS = datetime(2024, 10, 1, 12, tzinfo=UTC)
IDS = [f"m-{i}" for i in range(7)]
GONE = "m-3"  # no longer in the messages index
BAD = "m-5"  # its details request fails with an error splitting the batch isolates


class InMemory(search.SearchClient):
    """A cluster holding IDS (but GONE) and one history document per message."""

    def __init__(self, fail_mget_with: Exception | None = None) -> None:
        self.fail_mget_with, self.mgets = fail_mget_with, 0

    def exists(self, index):
        return True

    def field_mapping(self, index, field):
        return {index: {"mappings": {field: {"full_name": field, "mapping": {field: {"type": "keyword"}}}}}}

    def mget(self, docs):
        self.mgets += 1
        if self.fail_mget_with is not None and self.mgets > 1:
            raise self.fail_mget_with
        if any(d["_id"] == BAD for d in docs):
            raise ValueError("a related document Python cannot handle")
        return [{"_id": d["_id"], "found": d["_id"] != GONE,
                 **({"_source": {"timestamp": TS.isoformat(), "text": f"ü {d['_id']}"}} if d["_id"] != GONE else {})}
                for d in docs]

    def msearch(self, searches):
        out = []
        for header, body in zip(searches[::2], searches[1::2], strict=True):
            ids = body["query"]["terms"]["message_id"]
            hits = [{"_source": {"message_id": i, "timestamp": TS.isoformat(), "index": header["index"]}}
                    for i in ids] if header["index"] == CFG.history_index else []
            out.append({"hits": {"hits": hits, "total": {"value": len(hits)}}})
        return out


def documents(client, monkeypatch, part_size):
    monkeypatch.setattr(process, "FETCH_PART_SIZE", part_size)
    messages = [TrackedMessage(row, mid, TS) for row, mid in enumerate(IDS)]
    attempt = BatchAttempt(batch_id=1, token=1, messages=messages)
    outcomes, uploads = process._documents(CFG, Batch(1, 1, 0, len(IDS)), attempt,
                                           process._fetch_parts(client, CFG, messages), run_id="r")
    bodies = []
    for u in uploads:
        doc = json.loads(u.body)
        doc["export"].pop("exported_at")
        bodies.append((u.key, json.dumps(doc, ensure_ascii=False)))
    return [(o.message_id, o.ok, o.error) for o in outcomes], bodies


@pytest.mark.parametrize("part_size", [
    pytest.param(1, id="one-message-parts"),
    pytest.param(3, id="parts-of-three"),
    pytest.param(len(IDS), id="one-part"),
])
def test_documents_and_outcomes_are_the_same_in_parts_as_in_one_request(monkeypatch, part_size):
    whole = documents(InMemory(), monkeypatch, 1 << 30)
    assert documents(InMemory(), monkeypatch, part_size) == whole
    outcomes, bodies = whole
    assert [mid for mid, ok, _ in outcomes if not ok] == [GONE, BAD]
    assert len(bodies) == len(IDS) - 2


def test_a_request_failing_in_a_later_part_fails_the_attempt(monkeypatch):
    with pytest.raises(TransientError, match="node gone"):
        documents(InMemory(fail_mget_with=TransientError("node gone")), monkeypatch, 2)
