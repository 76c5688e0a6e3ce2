"""The design document's approach, written faithfully, as the baseline of `make bench`.

One search for the day's ids (`size=10000`, so it silently stops at 10,000 hits), one INSERT per
id, then per message: one query per index (message, history, status, audit), one PUT, one UPDATE.

    python bench/naive_export.py --index messages --day 2024-10-01 --bucket b --database db [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="messages")
    parser.add_argument("--history-index", default="message_history")
    parser.add_argument("--status-index", default="message_status")
    parser.add_argument("--audit-index", default="message_audit")
    parser.add_argument("--day", type=date.fromisoformat, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--limit", type=int, default=0, help="stop after this many messages (0: all found)")
    args = parser.parse_args()

    import boto3
    from elasticsearch import Elasticsearch

    from es_export import clients

    es = Elasticsearch(os.environ["ES_URL"], request_timeout=120)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    db = clients.mysql(clients.MySQLSettings.from_env(database=args.database))
    db.autocommit(True)
    with db.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS naive_tracking (message_id VARCHAR(512) PRIMARY KEY,"
                    " status VARCHAR(16), s3_key VARCHAR(1024))")
    started = time.monotonic()
    day_end = args.day + timedelta(days=1)
    hits = es.search(index=args.index, size=10000, source=False,
                     query={"range": {"timestamp": {"gte": args.day.isoformat(), "lt": day_end.isoformat()}}})
    ids = [h["_id"] for h in hits["hits"]["hits"]]
    if args.limit:
        ids = ids[:args.limit]
    with db.cursor() as cur:
        for mid in ids:
            cur.execute("INSERT IGNORE INTO naive_tracking (message_id, status) VALUES (%s, 'pending')", (mid,))
    for mid in ids:
        message = es.get(index=args.index, id=mid)["_source"]
        doc = {"message_id": mid, "message": message}
        for section, index in (("history", args.history_index), ("status", args.status_index),
                               ("audit", args.audit_index)):
            doc[section] = [h["_source"] for h in es.search(index=index, size=100,
                                                            query={"term": {"message_id": mid}})["hits"]["hits"]]
        key = f"naive/dt={args.day.isoformat()}/{mid}.json"
        s3.put_object(Bucket=args.bucket, Key=key, Body=json.dumps(doc).encode())
        with db.cursor() as cur:
            cur.execute("UPDATE naive_tracking SET status = 'completed', s3_key = %s WHERE message_id = %s",
                        (key, mid))
    elapsed = time.monotonic() - started
    print(json.dumps({"messages": len(ids), "seconds": round(elapsed, 2), "found": len(hits["hits"]["hits"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
