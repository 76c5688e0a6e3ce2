"""Reading Elasticsearch: stream the ids of an interval, fetch the full details of a batch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import NotFoundError

from es_export.config import ExportConfig
from es_export.errors import SourceError, TransientError


class PointInTimeExpired(TransientError):
    """The scan's point-in-time was closed or expired between two pages (keep-alive too short)."""


# The date type family whose values sort as epoch milliseconds.
DATE_TYPES = {"date", "date_nanos"}


@dataclass(frozen=True)
class IdHit:
    message_id: str
    timestamp: datetime


def _range_query(field: str, start: datetime, end: datetime) -> dict:
    return {"range": {field: {"gte": start.isoformat(), "lt": end.isoformat(), "format": "strict_date_optional_time"}}}


def check_timestamp_field(es: Any, index: str, field: str) -> None:
    """Refuse an index whose mapping lacks the timestamp field, instead of exporting nothing."""
    if not es.indices.exists(index=index):
        raise SourceError(f"Elasticsearch index {index!r} does not exist; check messages_index in the configuration")
    mappings = es.indices.get_field_mapping(index=index, fields=field).body
    types = {
        m.get("mapping", {}).get(field.split(".")[-1], {}).get("type")
        for idx in mappings.values()
        for m in [idx.get("mappings", {}).get(field, {})]
    }
    types.discard(None)
    if not types:
        raise SourceError(f"index {index!r} has no field {field!r} in its mapping; set timestamp_field in the "
                          "configuration to the field that holds each message's time")
    if not types <= DATE_TYPES:
        raise SourceError(f"field {field!r} of index {index!r} is mapped as {sorted(types)}, not as a date; "
                          "map it as date or point timestamp_field to a date field")


def count_interval(es: Any, cfg: ExportConfig, start: datetime, end: datetime) -> int:
    resp = es.count(index=cfg.messages_index, query=_range_query(cfg.timestamp_field, start, end))
    return int(resp["count"])


def scan(
    es: Any,
    index: str,
    query: dict,
    sort: list,
    page_size: int,
    keep_alive: str,
    source: bool | list[str] = False,
) -> Iterator[dict]:
    """Yield every hit of `query` in `sort` order, page by page, with point-in-time + search_after.

    The point-in-time gives a stable view for the whole scan; each response may carry a newer PIT id,
    which the next request must use. The PIT is closed in `finally`, also when the consumer stops early.
    """
    pit_id = es.open_point_in_time(index=index, keep_alive=keep_alive)["id"]
    try:
        search_after = None
        while True:
            try:
                resp = es.search(
                    pit={"id": pit_id, "keep_alive": keep_alive},
                    query=query,
                    sort=sort,
                    size=page_size,
                    source=source,
                    search_after=search_after,
                    track_total_hits=False,
                )
            except NotFoundError as exc:
                raise PointInTimeExpired(f"the point-in-time over {index!r} expired or was closed "
                                         f"(keep_alive {keep_alive}): {exc}") from exc
            pit_id = resp.get("pit_id", pit_id)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            yield from hits
            if len(hits) < page_size:
                return
            search_after = hits[-1]["sort"]
    finally:
        try:
            es.close_point_in_time(id=pit_id)
        except Exception:  # noqa: BLE001 - the PIT expires on its own; never mask the real error
            pass


def stream_ids(es: Any, cfg: ExportConfig, start: datetime, end: datetime) -> Iterator[IdHit]:
    """The ids (and timestamps) of the messages whose timestamp is in [start, end), oldest first."""
    sort = [{cfg.timestamp_field: {"order": "asc", "format": "epoch_millis"}}, {"_shard_doc": "asc"}]
    for hit in scan(es, cfg.messages_index, _range_query(cfg.timestamp_field, start, end), sort,
                    cfg.scan_page_size, cfg.pit_keep_alive):
        millis = int(hit["sort"][0])
        yield IdHit(hit["_id"], datetime.fromtimestamp(millis / 1000, tz=UTC))


@dataclass
class MessageDetails:
    """Everything Elasticsearch holds about one message."""

    message_id: str
    message: dict | None
    related: dict[str, list[dict]]


# Ids per `_mget` and per `terms` query: far below index.max_terms_count (65,536 by default).
IDS_PER_REQUEST = 10_000


def fetch_details(es: Any, cfg: ExportConfig, message_ids: list[str]) -> dict[str, MessageDetails]:
    """Details of a batch in a few round trips: one `_mget`, one `_msearch` per 10,000 ids (plus pages).

    A message missing from the messages index comes back with `message=None`, so the caller can
    mark it failed while the rest of the batch goes on.
    """
    details: dict[str, MessageDetails] = {}
    for start in range(0, len(message_ids), IDS_PER_REQUEST):
        details.update(_fetch_part(es, cfg, message_ids[start:start + IDS_PER_REQUEST]))
    return details


def _fetch_part(es: Any, cfg: ExportConfig, message_ids: list[str]) -> dict[str, MessageDetails]:
    if not message_ids:
        return {}
    docs = es.mget(index=cfg.messages_index, ids=message_ids)["docs"]
    details = {
        d["_id"]: MessageDetails(d["_id"], d.get("_source") if d.get("found") else None, {})
        for d in docs
    }
    for mid in message_ids:  # an id the server did not echo back at all is missing too
        details.setdefault(mid, MessageDetails(mid, None, {}))
    for section in cfg.related_indices():
        for d in details.values():
            d.related[section] = []
    for section, hits in _related_hits(es, cfg, message_ids):
        for hit in hits:
            mid = hit["_source"].get(cfg.message_id_field)
            if mid in details:
                details[mid].related[section].append(hit["_source"])
    for d in details.values():
        for docs_of_section in d.related.values():
            _sort_by_time(docs_of_section, cfg.timestamp_field)
    return details


def _sort_by_time(docs: list[dict], field: str) -> None:
    """Time order; ties broken by content, so the output never depends on Elasticsearch's order.

    Serialising every document for the tie-break cost ~10% of a batch, so it is done only when
    two documents share a timestamp.
    """
    times = [str(doc.get(field, "")) for doc in docs]
    if len(set(times)) == len(times):
        docs.sort(key=lambda doc: str(doc.get(field, "")))
    else:
        docs.sort(key=lambda doc: (str(doc.get(field, "")), _canonical(doc)))


def _canonical(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def _related_hits(es: Any, cfg: ExportConfig, message_ids: list[str]) -> Iterable[tuple[str, list[dict]]]:
    sections = cfg.related_indices()
    query = {"terms": {cfg.message_id_field: message_ids}}
    searches: list[dict] = []
    for index in sections.values():
        searches.append({"index": index})
        searches.append({"query": query, "size": cfg.details_page_size, "track_total_hits": True})
    resp = es.msearch(searches=searches)
    for (section, index), result in zip(sections.items(), resp["responses"], strict=True):
        if "error" in result:
            reason = result["error"].get("reason") if isinstance(result["error"], dict) else result["error"]
            if result.get("status") == 404:
                raise SourceError(f"Elasticsearch index {index!r} does not exist; check {section}_index "
                                  "in the configuration")
            raise TransientError(f"searching {index!r} for the batch's {section} failed: {reason}")
        hits = result["hits"]["hits"]
        total = result["hits"]["total"]["value"]
        if total > len(hits):
            # More related documents than one page holds: page through this index alone.
            sort = [{"_shard_doc": "asc"}]
            hits = list(scan(es, index, query, sort, cfg.details_page_size, cfg.pit_keep_alive, source=True))
        yield section, hits
