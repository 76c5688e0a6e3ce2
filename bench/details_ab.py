"""Elasticsearch CPU of reading batches' details, the messages by `_mget` against by an `ids` search inside
the batch's `_msearch` (issue 25), in alternating rounds on the same documents.

    PYTHONPATH=include:devstack:bench python bench/details_ab.py --messages 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import time

from export_steps import cpu_seconds, export_config, prepare


def main() -> int:
    from elasticsearch import Elasticsearch

    from es_export import source

    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    prepare(args.messages)
    es = Elasticsearch(os.environ["ES_URL"], request_timeout=300)
    cfg = export_config(args.messages)
    ids = [h["_id"] for h in source.scan(es, cfg.messages_index, {"match_all": {}}, [{"_shard_doc": "asc"}],
                                         5000, "5m")]
    concrete = next(iter(es.indices.get(index=cfg.messages_index)))
    for r in range(1, args.rounds + 1):
        for how in ("_mget", "ids search"):
            before, started = cpu_seconds(), time.monotonic()
            for i in range(0, len(ids), args.batch_size):
                part = ids[i:i + args.batch_size]
                # Without the concrete index the messages index is asked with _mget (rows tracked before
                # the extract kept indices); with it, by an ids search.
                source.fetch_details(es, cfg, part, dict.fromkeys(part, concrete) if how == "ids search" else None)
            after, seconds = cpu_seconds(), time.monotonic() - started
            es_cpu = after["elasticsearch"] - before["elasticsearch"]
            print(f"round {r} {how:10}: {len(ids):,} messages in {seconds:5.1f}s, Elasticsearch CPU {es_cpu:5.2f}s "
                  f"({es_cpu / len(ids) * 1e6:4.1f} µs a message)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
