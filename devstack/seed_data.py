"""Sample data for the local stack: messages and their history, status and audit documents.

Run with ``python -m seed_data --messages 5000 --days 3 --start 2024-10-01 --seed 42`` (``make seed``).
The same arguments always produce the same documents, so tests can compute what Elasticsearch
holds without asking it. The data is awkward on purpose: nested objects, unicode text, a few
documents of hundreds of KB, and message ids that are not safe as S3 keys.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MESSAGES_INDEX = "messages"
HISTORY_INDEX = "message_history"
STATUS_INDEX = "message_status"
AUDIT_INDEX = "message_audit"

# Ids that break naive S3 keys or URLs: every AWKWARD_EVERY-th message gets one of these shapes.
AWKWARD_EVERY = 37
AWKWARD_SHAPES = (
    "tenant/{base}",
    "{base} with space",
    "../{base}",
    "{base}/..",
    "nachricht-ü-{base}",
    "消息-{base}",
    "{base}%2F+plus&amp",
    "{base}\\back",
    "o'brien\"; DROP TABLE job_runs; -- {base}",
)
LARGE_BODY_BYTES = 300_000

WORDS = (
    "order invoice shipment payment refund customer account delivery warehouse status update "
    "Grüße naïve café façade Ελλάδα Москва 東京 قطر emoji 🚀 ✅ ☃ αβγ"
).split()
CHANNELS = ("email", "sms", "push", "webhook")
STATES = ("queued", "sent", "delivered", "read", "bounced")
ACTORS = ("system", "alice@example.com", "bob@example.com", "Zoë Ørsted")

MAPPINGS = {
    MESSAGES_INDEX: {
        "dynamic": True,
        "properties": {
            "timestamp": {"type": "date"},
            "channel": {"type": "keyword"},
            "subject": {"type": "text"},
            "body": {"type": "text", "index": False},
        },
    },
    HISTORY_INDEX: {"properties": {"message_id": {"type": "keyword"}, "timestamp": {"type": "date"}}},
    STATUS_INDEX: {"properties": {"message_id": {"type": "keyword"}, "timestamp": {"type": "date"}}},
    AUDIT_INDEX: {"properties": {"message_id": {"type": "keyword"}, "timestamp": {"type": "date"}}},
}


@dataclass(frozen=True)
class SeedConfig:
    messages: int = 3000
    days: int = 3
    start: date = date(2024, 10, 1)
    seed: int = 42
    large: int = 3

    def __post_init__(self) -> None:
        if self.messages < 0:
            raise ValueError(f"messages must be >= 0, got {self.messages}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.large < 0:
            raise ValueError(f"large must be >= 0, got {self.large}")


@dataclass(frozen=True)
class SeedDoc:
    """One document to index: which index, its id (None lets Elasticsearch pick) and its body."""

    index: str
    doc_id: str | None
    source: dict


def message_id(cfg: SeedConfig, n: int) -> str:
    base = f"msg-{cfg.seed}-{n:08d}"
    if n % AWKWARD_EVERY == 1:
        shape = AWKWARD_SHAPES[(n // AWKWARD_EVERY) % len(AWKWARD_SHAPES)]
        return shape.format(base=base)
    return base


def message_day(cfg: SeedConfig, n: int) -> date:
    return cfg.start + timedelta(days=n * cfg.days // max(cfg.messages, 1))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_large(cfg: SeedConfig, n: int) -> bool:
    # Spread the large documents over the whole range so every day has a chance of one.
    if cfg.large == 0 or cfg.messages == 0:
        return False
    step = max(cfg.messages // cfg.large, 1)
    return n % step == step // 2 and n // step < cfg.large


def generate(cfg: SeedConfig) -> Iterator[SeedDoc]:
    """Yield every document of the data set, message by message, deterministically."""
    rng = random.Random(cfg.seed)
    for n in range(cfg.messages):
        mid = message_id(cfg, n)
        day = datetime.combine(message_day(cfg, n), datetime.min.time(), tzinfo=UTC)
        ts = day + timedelta(milliseconds=rng.randrange(86_400_000))
        body = _text(rng, rng.randint(5, 40))
        if _is_large(cfg, n):
            body = (body + " ") * (LARGE_BODY_BYTES // (len(body.encode()) + 1) + 1)
        yield SeedDoc(
            MESSAGES_INDEX,
            mid,
            {
                "timestamp": _iso(ts),
                "channel": rng.choice(CHANNELS),
                "subject": _text(rng, 6),
                "body": body,
                "sender": {"name": rng.choice(ACTORS), "address": {"country": rng.choice(("DE", "GR", "JP"))}},
                "recipients": [{"id": rng.randrange(10**6), "tags": ["a", "ß"]} for _ in range(rng.randint(1, 3))],
                "attributes": {"priority": rng.randint(1, 5), "nested": {"deep": {"flag": rng.random() < 0.5}}},
            },
        )
        for index, k_max in ((HISTORY_INDEX, 4), (STATUS_INDEX, 2), (AUDIT_INDEX, 3)):
            for k in range(rng.randint(0, k_max)):
                event_ts = ts + timedelta(seconds=rng.randint(1, 3600) + k * 3600)
                yield SeedDoc(index, None, _related(rng, index, mid, k, event_ts))


def _related(rng: random.Random, index: str, mid: str, k: int, ts: datetime) -> dict:
    doc: dict = {"message_id": mid, "timestamp": _iso(ts), "seq": k}
    if index == HISTORY_INDEX:
        doc["event"] = rng.choice(STATES)
        doc["detail"] = {"note": _text(rng, 4)}
    elif index == STATUS_INDEX:
        doc["status"] = rng.choice(STATES)
        doc["code"] = rng.randint(100, 599)
    else:
        doc["actor"] = rng.choice(ACTORS)
        doc["action"] = rng.choice(("create", "read", "update", "export"))
    return doc


def ids_for_day(cfg: SeedConfig, day: date) -> Iterator[str]:
    """The ids of the messages whose timestamp falls on `day` (UTC)."""
    return (message_id(cfg, n) for n in range(cfg.messages) if message_day(cfg, n) == day)


def create_indices(es, recreate: bool = False, index_names: dict[str, str] | None = None) -> None:
    names = index_names or {}
    for default_name, mapping in MAPPINGS.items():
        index = names.get(default_name, default_name)
        if recreate:
            es.indices.delete(index=index, ignore_unavailable=True)
        if not es.indices.exists(index=index):
            es.indices.create(
                index=index,
                mappings=mapping,
                settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
            )


def load(es, cfg: SeedConfig, recreate: bool = True, chunk_size: int = 2000,
         index_names: dict[str, str] | None = None) -> int:
    """Index the data set with the bulk API; returns the number of documents written.

    `index_names` maps the default index names to others (tests use their own indices).
    """
    from elasticsearch import helpers

    names = {name: (index_names or {}).get(name, name) for name in MAPPINGS}
    create_indices(es, recreate=recreate, index_names=names)
    indices = list(names.values())
    # Refreshing while bulk loading only costs time; refresh once at the end.
    es.indices.put_settings(index=indices, settings={"refresh_interval": "-1"})
    written = 0
    try:
        actions = (
            {"_index": names[d.index], **({"_id": d.doc_id} if d.doc_id is not None else {}), "_source": d.source}
            for d in generate(cfg)
        )
        for ok, _item in helpers.streaming_bulk(
            es, actions, chunk_size=chunk_size, max_chunk_bytes=20 * 1024 * 1024, raise_on_error=True
        ):
            written += ok
    finally:
        es.indices.put_settings(index=indices, settings={"refresh_interval": "1s"})
        es.indices.refresh(index=indices)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed_data", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=SeedConfig.messages, help="number of messages")
    parser.add_argument("--days", type=int, default=SeedConfig.days, help="spread over this many days")
    parser.add_argument("--start", type=date.fromisoformat, default=SeedConfig.start, help="first day (UTC)")
    parser.add_argument("--seed", type=int, default=SeedConfig.seed, help="random seed")
    parser.add_argument("--large", type=int, default=SeedConfig.large, help="documents of ~300 KB")
    parser.add_argument("--es-url", default=os.environ.get("ES_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--keep", action="store_true", help="add to the indices instead of recreating them")
    args = parser.parse_args(argv)
    try:
        cfg = SeedConfig(args.messages, args.days, args.start, args.seed, args.large)
    except ValueError as exc:
        parser.error(str(exc))

    started = time.monotonic()
    # Plain REST, so every engine takes it (Elasticsearch 8/9, OpenSearch 2/3).
    written = load_over_http(args.es_url, cfg, recreate=not args.keep)
    elapsed = time.monotonic() - started
    print(
        f"seeded {cfg.messages} messages over {cfg.days} day(s) from {cfg.start} (seed {cfg.seed}): "
        f"{written} documents in {elapsed:.1f}s ({written / max(elapsed, 1e-9):,.0f} docs/s) into {args.es_url}"
    )
    return 0


def load_over_http(url: str, cfg: SeedConfig, *, index_names: dict[str, str] | None = None,
                   mappings: dict[str, dict] | None = None, chunk_size: int = 1000, recreate: bool = False) -> int:
    """The same data set through the plain REST API, so any engine takes it (Elasticsearch 8/9,
    OpenSearch 2/3). `mappings` replaces the mapping of an index (None: dynamic mapping)."""
    import urllib3

    http = urllib3.PoolManager()
    names = {name: (index_names or {}).get(name, name) for name in MAPPINGS}
    chosen = {**MAPPINGS, **(mappings or {})}

    def call(method: str, path: str, body: bytes, content_type: str = "application/json") -> dict:
        resp = http.request(method, url.rstrip("/") + path, body=body, headers={"Content-Type": content_type})
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {resp.data[:500]!r}")
        return json.loads(resp.data)

    for default_name, index in names.items():
        if recreate:
            http.request("DELETE", url.rstrip("/") + f"/{index}")
        elif http.request("HEAD", url.rstrip("/") + f"/{index}").status == 200:
            continue  # add to what is there
        mapping = chosen.get(default_name)
        body = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}
        if mapping is not None:
            body["mappings"] = mapping
        call("PUT", f"/{index}", json.dumps(body).encode())
    written = 0
    batch: list[bytes] = []

    def flush() -> None:
        nonlocal written, batch
        if batch:
            resp = call("POST", "/_bulk", b"".join(batch), "application/x-ndjson")
            if resp.get("errors"):
                raise RuntimeError(f"bulk load failed: {json.dumps(resp)[:1000]}")
            written += len(resp["items"])
            batch = []

    for d in generate(cfg):
        action = {"index": {"_index": names[d.index], **({"_id": d.doc_id} if d.doc_id is not None else {})}}
        batch += [json.dumps(action).encode() + b"\n", json.dumps(d.source, ensure_ascii=False).encode() + b"\n"]
        if len(batch) >= 2 * chunk_size:
            flush()
    flush()
    call("POST", "/" + ",".join(names.values()) + "/_refresh", b"")
    return written


if __name__ == "__main__":
    sys.exit(main())
