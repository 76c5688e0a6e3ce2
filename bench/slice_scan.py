"""Would a sliced extract pay? The day's id scan with 1, 2 and 4 point-in-time slices read in parallel.

    set -a; . .local/stack.env; set +a
    PYTHONPATH=include:devstack:bench python bench/slice_scan.py --messages 100000

The extract reads one point-in-time in timestamp order with search_after. A sliced extract would give each
mapped task one `slice` of the same point-in-time. This reads the seeded day (bench/export_steps.py's
indices) the way the extract does (same query, sort, page size, only the id and timestamp fields), once per
slice count, each slice in its own thread, and prints the ids a second and the speed-up over one slice.
Threads share this interpreter; separate mapped tasks would not, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from elasticsearch import Elasticsearch
from export_steps import DAY, index_names, prepare

PAGE = 10_000


def read_slice(es: Elasticsearch, pit_id: str, query: dict, slice_id: int, slices: int) -> int:
    """Every hit of one slice, page by page; returns how many."""
    count, after = 0, None
    while True:
        body: dict = {"query": query, "size": PAGE, "sort": [{"timestamp": "asc"}, {"_shard_doc": "asc"}],
                      "_source": False, "fields": ["message_id"], "pit": {"id": pit_id, "keep_alive": "2m"},
                      "track_total_hits": False}
        if slices > 1:
            body["slice"] = {"id": slice_id, "max": slices}
        if after:
            body["search_after"] = after
        hits = es.search(body=body)["hits"]["hits"]
        if not hits:
            return count
        count += len(hits)
        after = hits[-1]["sort"]


def scan(es: Elasticsearch, index: str, slices: int) -> tuple[int, float]:
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    query = {"range": {"timestamp": {"gte": start.isoformat(), "lt": (start + timedelta(days=1)).isoformat()}}}
    pit_id = es.open_point_in_time(index=index, keep_alive="2m")["id"]
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(slices) as pool:
            total = sum(pool.map(lambda i: read_slice(es, pit_id, query, i, slices), range(slices)))
        return total, time.monotonic() - started
    finally:
        es.close_point_in_time(id=pit_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prepare(args.messages)
    es = Elasticsearch(os.environ["ES_URL"], request_timeout=300)
    index = index_names(args.messages)["messages"]
    shards = es.indices.get_settings(index=index)[index]["settings"]["index"]["number_of_shards"]
    print(f"{args.messages:,} messages of one day, index {index} ({shards} shard(s)), {os.cpu_count()} cores, "
          f"best of {args.rounds} rounds")
    baseline = None
    for slices in (1, 2, 4):
        best = min(scan(es, index, slices)[1] for _ in range(args.rounds))
        total = scan(es, index, slices)[0]
        assert total == args.messages, f"{slices} slice(s) read {total} ids, not {args.messages}"
        baseline = baseline or best
        print(f"  {slices} slice(s): {args.messages / best:>9,.0f} ids/s   speed-up {baseline / best:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
