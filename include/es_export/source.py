"""Reading the source cluster: stream the ids of an interval, fetch the full details of a batch.

Works on every engine `es_export.search` supports; a bare `elasticsearch` client is taken as
Elasticsearch 9.x. Messages may live in one index, a data stream, an alias or a pattern: each id is
streamed with the concrete index that holds it, and its details are fetched from there.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from es_export import jsonio
from es_export.config import ExportConfig
from es_export.errors import SourceError, TransientError
from es_export.search import PointInTimeGone, Searchable, SearchClient, adapt, check_complete, failed_search, values_of


class PointInTimeExpired(TransientError):
    """The scan's point-in-time was closed or expired between two pages (keep-alive too short)."""


# The date type family whose values sort as epoch milliseconds.
DATE_TYPES = {"date", "date_nanos"}
# Field types whose values match a message id exactly (text is analysed: it does not).
EXACT_TYPES = {"keyword", "constant_keyword", "wildcard", "long", "integer", "short", "byte", "unsigned_long"}
NUMERIC_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}


@dataclass(frozen=True)
class ScanPosition:
    """Where a scan can continue: its point-in-time and the sort values of the last hit read."""

    pit_id: str
    search_after: list[Any]


@dataclass(frozen=True)
class IdHit:
    message_id: str
    timestamp: datetime
    index: str | None = None  # the concrete index that holds the message
    position: ScanPosition | None = None  # where the scan stood after this hit


def _range_query(field: str, start: datetime, end: datetime) -> dict:
    return {"range": {field: {"gte": start.isoformat(), "lt": end.isoformat(), "format": "strict_date_optional_time"}}}


def _field_types(client: SearchClient, index: str, field: str) -> dict[str, dict[str, Any]]:
    """The mapping of `field` in each concrete index behind `index` (a name, alias, pattern or data stream)."""
    found = {}
    for concrete, idx in client.field_mapping(index, field).items():
        leaf = idx.get("mappings", {}).get(field, {}).get("mapping", {})
        mapping = next(iter(leaf.values()), None) if leaf else None
        if mapping:
            found[concrete] = mapping
    return found


def check_timestamp_field(es: Searchable, index: str, field: str, *, setting: str = "timestamp_field",
                          index_setting: str = "messages_index") -> None:
    """Refuse an index whose mapping lacks the timestamp field, instead of exporting nothing.

    Every concrete index behind `index` (an alias, a pattern, a data stream's backing indices) must
    map the field: a range query matches nothing in one that does not, and the count uses the same
    query, so its messages would be skipped with reconcile agreeing. An empty index is no risk.
    `setting` and `index_setting` name the configuration keys the messages tell the user to fix.
    """
    client = adapt(es)
    if not client.exists(index):
        raise SourceError(f"index {index!r} does not exist on the source cluster; check {index_setting} in the "
                          "configuration (an index, alias, data stream or pattern)")
    closed = client.closed_indices(index)
    if closed:
        raise SourceError(f"the concrete index(es) {closed[:10]} behind {index!r} are closed, so their messages "
                          "cannot be read (a pattern would skip them in silence); open them, or leave them out of "
                          f"{index_setting} (e.g. '{index},-{closed[0]}')")
    mappings = client.field_mapping(index, field)
    types = {str(m["type"]) for m in _field_types(client, index, field).values() if m.get("type")}
    if not types:
        raise SourceError(f"index {index!r} has no field {field!r} in its mapping; set {setting} in the "
                          "configuration to the date field that holds each document's time")
    if not types <= DATE_TYPES:
        raise SourceError(f"field {field!r} of index {index!r} is mapped as {sorted(types)}, not as a date; "
                          f"map it as date or point {setting} to a date field")
    unmapped = sorted(name for name, m in mappings.items() if not (m.get("mappings") or {}).get(field))
    holding = [name for name in unmapped if client.count(name, {"match_all": {}})]
    if holding:
        raise SourceError(f"the concrete index(es) {holding} behind {index!r} hold documents but do not map "
                          f"{field!r}, so none of their messages would be exported; map the field there, or "
                          f"narrow {index_setting} to the indices that hold these documents")


def count_interval(es: Searchable, cfg: ExportConfig, start: datetime, end: datetime) -> int:
    return adapt(es).count(cfg.messages_index, _range_query(cfg.timestamp_field, start, end))


def scan(
    es: Searchable,
    index: str,
    query: dict,
    sort: list,
    page_size: int,
    keep_alive: str,
    source: bool | list[str] = False,
    *,
    resume: ScanPosition | None = None,
    keep_pit_on_error: bool = False,
) -> Iterator[dict]:
    """Yield every hit of `query` in `sort` order, page by page, with point-in-time + search_after.

    The point-in-time gives a stable view for the whole scan; each response may carry a newer PIT id,
    which the next request must use (each hit carries it as "_pit"). The engine's tie-breaker ends
    the sort, so `search_after` never skips or repeats a hit. `resume` continues a scan in its own
    point-in-time after the hit it names (PointInTimeExpired when that is gone). The PIT is closed
    in `finally`; with `keep_pit_on_error` only when the scan ended, so a retry can resume in it.

    A scan that makes no progress (a page ending where the last one did, more hits than the
    point-in-time holds: the sort and the engine disagree) stops with SourceError instead of looping.
    """
    client = adapt(es)
    sort = [*sort, client.tiebreaker]
    pit_id = resume.pit_id if resume else client.open_pit(index, keep_alive)
    search_after = resume.search_after if resume else None
    total: int | None = None
    read = 0
    ended = False
    try:
        while True:
            try:
                resp = client.search_pit(pit_id, keep_alive, query=query, sort=sort, size=page_size, source=source,
                                         search_after=search_after, track_total_hits=total is None)
            except PointInTimeGone as exc:
                raise PointInTimeExpired(f"the point-in-time over {index!r} expired or was closed "
                                         f"(keep_alive {keep_alive}): {exc}") from exc
            pit_id = resp.get("pit_id", pit_id)
            if total is None:
                counted = resp["hits"].get("total") or {}
                total = int(counted["value"]) if counted.get("relation") == "eq" else -1
            hits = resp["hits"]["hits"]
            read += len(hits)
            if total >= 0 and read > total:
                raise SourceError(f"the scan of {index!r} read {read} hits while its point-in-time holds {total}: "
                                  "the engine does not page the sort in order (mixed date types?); stopped")
            for hit in hits:
                hit["_pit"] = pit_id
            if not hits or len(hits) < page_size:
                yield from hits
                ended = True
                return
            if hits[-1]["sort"] == search_after:
                raise SourceError(f"the scan of {index!r} made no progress: a page ended at {search_after}, where "
                                  "the last one did; stopped instead of asking again")
            yield from hits
            search_after = hits[-1]["sort"]
    finally:
        if ended or not keep_pit_on_error:
            try:
                client.close_pit(pit_id)
            except Exception:  # noqa: BLE001 - the PIT expires on its own; never mask the real error
                pass


def epoch_millis(sort_value: Any) -> int:
    """A date sort value in epoch milliseconds; a date_nanos field gives a string with a fraction."""
    return int(Decimal(str(sort_value)))


def _timestamp_sort(client: SearchClient, index: str, field: str) -> tuple[list[Any], int]:
    """The sort of an id scan (its smallest and its largest value, to see a multi-valued timestamp) and
    how many sort units make a millisecond.

    Indices mapping `date` and `date_nanos` behind one name (a data stream whose timestamp became
    date_nanos, rolled over) sort as nanoseconds on both engines (`numeric_type`), so the coordinating
    node compares like with like; Elasticsearch prints a plain `date` in epoch milliseconds itself.
    """
    types = {m.get("type") for m in _field_types(client, index, field).values()}
    if "date_nanos" in types:
        keys = [{field: {"order": "asc", "mode": mode, "numeric_type": "date_nanos"}} for mode in ("min", "max")]
        return keys, 1_000_000
    if client.sort_format:
        return [{field: {"order": "asc", "mode": mode, "format": "epoch_millis"}} for mode in ("min", "max")], 1
    return [{field: {"order": "asc", "mode": mode}} for mode in ("min", "max")], 1


def stream_ids(es: Searchable, cfg: ExportConfig, start: datetime, end: datetime, *,
               resume: ScanPosition | None = None) -> Iterator[IdHit]:
    """The ids (timestamps, concrete indices) of the messages whose timestamp is in [start, end), oldest first.

    A message has one timestamp: a document whose timestamp field holds several values matches the
    range of every day one of them falls in, so it is refused, naming it, rather than exported on
    one day and counted on another.
    """
    client = adapt(es)
    field = cfg.timestamp_field
    sort, per_ms = _timestamp_sort(client, cfg.messages_index, field)
    for hit in scan(client, cfg.messages_index, _range_query(field, start, end), sort, cfg.scan_page_size,
                    cfg.pit_keep_alive, resume=resume, keep_pit_on_error=True):
        smallest, largest = hit["sort"][0], hit["sort"][1]
        if smallest != largest:
            raise SourceError(f"message {hit['_id']!r} in {hit.get('_index')!r} has several values in {field!r} "
                              f"(from {smallest} to {largest}); a message needs one timestamp, so the export "
                              "stops instead of counting it on one day and exporting it on another. Give it one "
                              "value, or set timestamp_field to a single-valued field")
        millis = epoch_millis(smallest) // per_ms
        yield IdHit(hit["_id"], datetime.fromtimestamp(millis / 1000, tz=UTC), hit.get("_index"),
                    ScanPosition(hit["_pit"], hit["sort"]))


def refuse_copies(es: Searchable, moved: list[tuple[str, str, str]]) -> None:
    """Refuse messages found in a concrete index other than the one tracked, while the tracked one still holds
    them: two copies of one id (a shipper's retry across a rollover, an alias over v1 and v2 during a
    reindex). Exporting either would count two and export one, or move the message between days.

    `moved` holds (message id, tracked index, index just found). One whose tracked index no longer
    holds it moved (a reindex, a rollover) and is simply followed.
    """
    if not moved:
        return
    docs = adapt(es).mget([{"_index": old, "_id": mid} for mid, old, _ in moved])
    held = {(d.get("_index"), d.get("_id")) for d in docs if d.get("found")}
    copies = [(mid, old, new) for mid, old, new in moved if (old, mid) in held]
    if copies:
        named = "; ".join(f"{mid!r} in {old!r} and {new!r}" for mid, old, new in copies[:5])
        raise SourceError(f"{len(copies)} message id(s) are held by two concrete indices behind the messages index "
                          f"({named}): one id must be one message. Delete the copy that is wrong (or point "
                          "messages_index at one of the indices), then run the day again")


@dataclass
class MessageDetails:
    """Everything the source holds about one message."""

    message_id: str
    message: dict | None
    related: dict[str, list[dict]]


# Ids per `_msearch`: far below index.max_terms_count (65,536 by default) and within index.max_result_window
# (10,000 by default), which bounds an `ids` search's size.
IDS_PER_REQUEST = 10_000


def fetch_details(es: Searchable, cfg: ExportConfig, message_ids: list[str],
                  indices: dict[str, str | None] | None = None) -> dict[str, MessageDetails]:
    """Details of a batch in a few round trips: one `_msearch` per 10,000 ids (plus pages).

    `indices` names the concrete index of each message (from the extract); without one, the
    messages index itself is asked. A message missing there comes back with `message=None`, so the
    caller can mark it failed while the rest of the batch goes on.
    """
    client = adapt(es)
    fields = {section: exact_field(client, index, cfg.message_id_field)
              for section, index in cfg.related_indices().items()}
    details: dict[str, MessageDetails] = {}
    for start in range(0, len(message_ids), IDS_PER_REQUEST):
        part = message_ids[start:start + IDS_PER_REQUEST]
        details.update(_fetch_part(client, cfg, part, indices or {}, fields))
    return details


def exact_field(client: SearchClient, index: str, field: str) -> tuple[str, bool]:
    """The field to query for exact message ids in `index`, and whether it is numeric.

    A `text` field (the dynamic mapping of a JSON string) is analysed and matches ids with capitals,
    `/`, `:` or spaces wrongly; its `.keyword` sub-field matches exactly.
    """
    if not client.exists(index):
        raise SourceError(f"index {index!r} does not exist on the source cluster; check the related index names "
                          "(history_index, status_index, audit_index) in the configuration")
    mappings = _field_types(client, index, field)
    chosen: set[tuple[str, bool]] = set()
    for concrete, mapping in mappings.items():
        kind = mapping.get("type")
        if kind in EXACT_TYPES:
            chosen.add((field, kind in NUMERIC_TYPES))
            continue
        subfields = {name: sub.get("type") for name, sub in (mapping.get("fields") or {}).items()}
        exact = sorted(name for name, sub_type in subfields.items() if sub_type in ("keyword", "wildcard"))
        if kind == "text" and exact:
            chosen.add((f"{field}.{exact[0]}", False))
            continue
        raise SourceError(f"field {field!r} of index {concrete!r} is mapped as {kind!r} without an exact "
                          "(keyword) sub-field, so message ids cannot be matched exactly; map it as keyword, add a "
                          f"keyword sub-field, or set message_id_field to a field that holds the id exactly")
    if len(chosen) > 1:
        raise SourceError(f"field {field!r} is mapped differently in the indices behind {index!r} "
                          f"({sorted(chosen)}); give them one mapping")
    return next(iter(chosen), (field, False))


def _fetch_part(client: SearchClient, cfg: ExportConfig, message_ids: list[str], indices: dict[str, str | None],
                fields: dict[str, tuple[str, bool]]) -> dict[str, MessageDetails]:
    if not message_ids:
        return {}
    placed: dict[str, list[str]] = {}
    for mid in message_ids:
        placed.setdefault(indices.get(mid) or "", []).append(mid)
    unplaced = placed.pop("", [])
    sections = cfg.related_indices()
    queries = {section: _terms(*fields[section], message_ids) for section in sections}
    # One _msearch: an `ids` search per concrete index costs the cluster about half the CPU of an _mget
    # of the same documents (BENCHMARKS.md, issue 25), and the related searches ride along.
    searches: list[dict] = []
    for index, ids in placed.items():
        # Room for copies of an id (two routings), so a refusal can name them; within max_result_window.
        size = min(2 * len(ids), IDS_PER_REQUEST)
        searches += [{"index": index}, {"query": {"ids": {"values": ids}}, "size": size, "sort": ["_doc"],
                                        "track_total_hits": True}]
    for section, index in sections.items():
        searches += [{"index": index}, {"query": queries[section], "size": cfg.details_page_size,
                                        "track_total_hits": True}]
    results = client.msearch(searches)
    found: dict[str, dict | None] = {}
    for (index, ids), result in zip(placed.items(), results[:len(placed)], strict=True):
        for hit in _message_hits(result, index, len(ids)):
            found.setdefault(hit["_id"], hit.get("_source"))
    if unplaced:  # tracked before the extract kept concrete indices: the messages index itself is asked
        docs = client.mget([{"_index": cfg.messages_index, "_id": mid} for mid in unplaced])
        found.update((d["_id"], d.get("_source")) for d in docs if d.get("found"))
    details = {mid: MessageDetails(mid, found.get(mid), {section: [] for section in sections})
               for mid in message_ids}
    for section, hits in _related_hits(client, cfg, results[len(placed):], queries):
        for hit in hits:
            for mid in set(values_of(hit["_source"], cfg.message_id_field)):
                if mid in details:
                    details[mid].related[section].append(hit["_source"])
    for d in details.values():
        for docs_of_section in d.related.values():
            _sort_by_time(docs_of_section, cfg.timestamp_field)
    return details


def _message_hits(result: dict[str, Any], index: str, asked: int) -> list[dict[str, Any]]:
    """The messages an `ids` search of one concrete index found; none when the index is gone (deleted by
    its retention since the extract), so its messages fail as not found while the batch goes on. Two
    documents of one id in one index (indexed with two routings) are refused: one id is one message."""
    what = f"reading the batch's messages from {index!r}"
    if "error" in result:
        error = result["error"]
        if result.get("status") == 404 or (isinstance(error, dict)
                                           and error.get("type") == "index_not_found_exception"):
            return []
        raise failed_search(result, what)
    hits = list(check_complete(result, what)["hits"]["hits"])
    total = result["hits"]["total"]["value"]
    counts = Counter(hit["_id"] for hit in hits)
    if total > asked or len(counts) < len(hits):
        twice = sorted(mid for mid, n in counts.items() if n > 1)[:5]
        named = f", e.g. {twice}" if twice else ""
        raise SourceError(f"index {index!r} holds {total} documents for the {asked} message ids the batch asked of "
                          f"it: an id is indexed more than once, with two routings{named}. One id must be one "
                          "message: delete the wrong copies, then clear the task")
    return hits


def _sort_by_time(docs: list[dict], field: str) -> None:
    """Time order; ties broken by content, so the output never depends on the engine's order.

    Serialising every document for the tie-break cost ~10% of a batch, so it is done only when
    two documents share a timestamp.
    """
    if len(docs) < 2:
        return
    times = [str(doc.get(field, "")) for doc in docs]
    if len(set(times)) == len(times):
        docs.sort(key=lambda doc: str(doc.get(field, "")))
    else:
        docs.sort(key=lambda doc: (str(doc.get(field, "")), _canonical(doc)))


def _canonical(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


def _terms(field: str, numeric: bool, message_ids: list[str]) -> dict:
    # A numeric field cannot be asked for an id that is not a number (the engine refuses the query).
    values: list[Any] = [int(m) for m in message_ids if m.lstrip("-").isdigit()] if numeric else message_ids
    return {"terms": {field: values}}


def _related_hits(client: SearchClient, cfg: ExportConfig, results: list[dict[str, Any]],
                  queries: dict[str, dict]) -> Iterable[tuple[str, list[dict]]]:
    for (section, index), result in zip(cfg.related_indices().items(), results, strict=True):
        if "error" in result:
            if result.get("status") == 404:
                raise SourceError(f"index {index!r} does not exist on the source cluster; check {section}_index "
                                  "in the configuration")
            raise failed_search(result, f"searching {index!r} for the batch's {section}")
        check_complete(result, f"searching {index!r} for the batch's {section}")
        hits = result["hits"]["hits"]
        total = result["hits"]["total"]["value"]
        if total > len(hits):
            # More related documents than one page holds: page through this index alone.
            hits = list(scan(client, index, queries[section], [], cfg.details_page_size, cfg.pit_keep_alive,
                             source=True))
        yield section, hits


def check_changed_fields(es: Searchable, cfg: ExportConfig) -> None:
    """Refuse to refresh when a related index has no date field telling when its documents changed: a
    refresh of it would find no change at all, in silence."""
    for section, index in cfg.related_indices().items():
        setting = (f"related_changed_fields.{section}" if section in cfg.related_changed_fields
                   else "related_changed_field (or related_changed_fields." + section + ")")
        try:
            check_timestamp_field(es, index, cfg.changed_field(section), setting=setting,
                                  index_setting=f"{section}_index")
        except SourceError as exc:
            raise SourceError(f"the {section} index cannot be refreshed: {exc}") from None


def changed_message_ids(es: Searchable, cfg: ExportConfig, start: datetime, end: datetime) -> Iterator[str]:
    """The message ids named by related documents (history, status, audit) written or changed in
    [start, end) by their change-time field; an id comes once per document that names it."""
    client = adapt(es)
    for section, index in cfg.related_indices().items():
        query = _range_query(cfg.changed_field(section), start, end)
        for hit in scan(client, index, query, [], cfg.scan_page_size, cfg.pit_keep_alive,
                        source=[cfg.message_id_field]):
            yield from values_of(hit.get("_source") or {}, cfg.message_id_field)


def version_of(details: MessageDetails) -> str:
    """A digest of what the source holds about a message (its document and related documents): equal
    digests, equal objects (apart from the export metadata), so an unchanged message is not rewritten."""
    text = jsonio.encode({"message": details.message, "related": details.related})
    return hashlib.blake2b(text, digest_size=16).hexdigest()
