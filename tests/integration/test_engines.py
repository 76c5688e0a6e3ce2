"""The compatibility suite: the export DAG, end to end, on every engine users run.

Elasticsearch 9 (the stack's node), Elasticsearch 8, OpenSearch 2 and OpenSearch 3 are real nodes
on this machine (devstack/engines.sh starts them from Maven Central jars, one after another). Each
gets the same seeded day, shaped the awkward way: the messages in a data stream (so every id lives
in a backing index, not in the name the configuration gives), ids with capitals, '/', ':', spaces
and non-ASCII, and a related index with dynamic mappings (`message_id` as text + .keyword). The
day is exported in both layouts, and the documents must be the same on every engine, apart from
the `export` block. The NDJSON run cuts the extract into 3 time slices (`extract_slices`), so the
sliced extract meets every engine and the data stream too.
"""

import json
import os
import subprocess
import uuid
from datetime import date, timedelta

import pytest
import urllib3

import seed_data
import support
from es_export import sink, tracking
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

ENGINES = ("es9", "es8", "opensearch2", "opensearch3")
LAYOUTS = ("per_message", "ndjson_gzip")
SLICES = {"per_message": 1, "ndjson_gzip": 3}  # both extract paths on every engine
SEED = SeedConfig(messages=160, days=1, start=date(2025, 6, 1), seed=83, large=0)
DAY = SEED.start
DB = "tracking_test_engines"


def engines_sh(*args: str) -> str:
    out = subprocess.run(["bash", str(support.ROOT / "devstack" / "engines.sh"), *args], capture_output=True,
                         text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        pytest.fail(f"engines.sh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def call(http, url: str, method: str, path: str, body=None, content_type="application/json") -> dict:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    resp = http.request(method, url + path, body=data, headers={"Content-Type": content_type})
    assert resp.status < 300, f"{method} {path}: {resp.status} {resp.data[:500]!r}"
    return json.loads(resp.data or b"{}")


def load_awkward_day(url: str, suffix: str) -> dict[str, str]:
    """The seeded day: messages in a data stream, history dynamically mapped, status and audit keyword."""
    http = urllib3.PoolManager()
    names = {"messages": f"cmp-messages-{suffix}", "message_history": f"cmp-history-{suffix}",
             "message_status": f"cmp-status-{suffix}", "message_audit": f"cmp-audit-{suffix}"}
    call(http, url, "PUT", f"/_index_template/cmp-{suffix}", {
        "index_patterns": [names["messages"]], "data_stream": {}, "priority": 500,
        "template": {"settings": {"number_of_shards": 2, "number_of_replicas": 0},
                     "mappings": {"properties": {"@timestamp": {"type": "date"}}}}})
    for name in ("message_status", "message_audit"):
        call(http, url, "PUT", f"/{names[name]}", {"settings": {"number_of_replicas": 0}, "mappings": {
            "properties": {"message_id": {"type": "keyword"}, "@timestamp": {"type": "date"}}}})
    call(http, url, "PUT", f"/{names['message_history']}", {"settings": {"number_of_replicas": 0}})  # dynamic
    lines: list[bytes] = []
    for d in seed_data.generate(SEED):
        doc = {**d.source, "@timestamp": d.source["timestamp"]}
        op = "create" if d.index == seed_data.MESSAGES_INDEX else "index"
        action = {op: {"_index": names[d.index], **({"_id": d.doc_id} if d.doc_id is not None else {})}}
        lines += [json.dumps(action).encode(), json.dumps(doc, ensure_ascii=False).encode()]
    resp = call(http, url, "POST", "/_bulk?refresh=true", b"\n".join(lines) + b"\n", "application/x-ndjson")
    assert not resp["errors"], json.dumps(resp)[:2000]
    return {"messages_index": names["messages"], "history_index": names["message_history"],
            "status_index": names["message_status"], "audit_index": names["message_audit"],
            "timestamp_field": "@timestamp"}


def drop_awkward_day(url: str, suffix: str) -> None:
    http = urllib3.PoolManager()
    http.request("DELETE", f"{url}/_data_stream/cmp-messages-{suffix}")
    http.request("DELETE", f"{url}/_index_template/cmp-{suffix}")
    http.request("DELETE", f"{url}/cmp-*-{suffix}?ignore_unavailable=true")


def point_airflow_at(monkeypatch, url: str, config: dict) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    monkeypatch.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", json.dumps(
        {"conn_type": "elasticsearch", "host": host, "port": int(port), "schema": "http"}))
    monkeypatch.setenv("AIRFLOW_VAR_ES_MESSAGE_EXPORT_CONFIG", json.dumps(config))
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_TRACKING", support.mysql_connection(DB))


def run_export(monkeypatch, url: str, config: dict, extract_slices: int = 1):
    point_airflow_at(monkeypatch, url, config)
    return support.run_dag("es_message_export", start=DAY.isoformat(), end=(DAY + timedelta(days=1)).isoformat(),
                           batch_size=50, extract_slices=extract_slices)


def documents(s3, bucket: str, prefix: str) -> dict[str, dict]:
    """message id -> its document without the export block, from either layout."""
    import gzip

    out = {}
    for key in sink.data_keys(s3, bucket, sink.day_prefix(prefix, DAY)):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in (gzip.decompress(body) if key.endswith(".gz") else body).splitlines():
            doc = json.loads(line)
            doc.pop("export")
            assert doc["message_id"] not in out, f"{doc['message_id']!r} exported twice"
            out[doc["message_id"]] = doc
    return out


def shard_loss_outcomes(url: str, engine: str, suffix: str) -> dict[str, str]:
    """What the extract, the count and a batch's details do on this engine when a shard of one of the two
    indices behind an alias is lost before or during the scan (tests/shard_loss.py answers for the
    engine); "ok <n>" when nothing is lost. Every request still reaches the real node, so a parameter
    the engine does not take (allow_partial_pit_creation, an _msearch header) fails here."""
    from dataclasses import replace

    from es_export import pipeline, search, source
    from es_export.config import ExportConfig, RunParams
    from shard_loss import ShardLossProxy

    http = urllib3.PoolManager()
    alias, lost = f"cmp-loss-{suffix}", f"cmp-loss-{suffix}-b"
    for part in ("a", "b"):
        name = f"cmp-loss-{suffix}-{part}"
        call(http, url, "PUT", f"/{name}", {"settings": {"number_of_replicas": 0, "number_of_shards": 2},
                                            "mappings": {"properties": {"timestamp": {"type": "date"},
                                                                        "message_id": {"type": "keyword"}}}})
        lines = b"".join(json.dumps({"index": {"_index": name, "_id": f"{part}-{i}"}}).encode() + b"\n"
                         + json.dumps({"timestamp": f"{DAY.isoformat()}T{i:02d}:00:00Z", "message_id": f"{part}-{i}"}
                                      ).encode() + b"\n" for i in range(10))
        call(http, url, "POST", "/_bulk?refresh=true", lines, "application/x-ndjson")
        call(http, url, "POST", "/_aliases", {"actions": [{"add": {"index": name, "alias": alias}}]})
    params = RunParams(start=f"{DAY.isoformat()}T00:00:00Z", end=f"{(DAY + timedelta(days=1)).isoformat()}T00:00:00Z")
    cfg = ExportConfig(messages_index=alias, history_index=alias, status_index=alias, audit_index=alias,
                       bucket="unused", scan_page_size=4, timestamp_field="timestamp")
    ids = [f"{p}-{i}" for p in ("a", "b") for i in range(10)]
    outcomes: dict[str, str] = {}

    def attempt(name: str, work) -> None:
        try:
            outcomes[name] = f"ok {work()}"
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test reads
            outcomes[name] = f"{type(exc).__name__}: {exc}"

    try:
        with ShardLossProxy(url, opensearch=engine.startswith("opensearch")) as proxy:
            client = search.connect(search.SearchSettings(url=proxy.url))

            def extract() -> int:
                support.reset_database(DB)
                conn = support.connect(DB)
                try:
                    job = pipeline.open_job(conn, dag_id="es_message_export", run_id=uuid.uuid4().hex[:8],
                                            params=params)
                    return pipeline.extract(client, conn, cfg, job).ids_found
                finally:
                    conn.close()

            def details() -> int:
                found = source.fetch_details(client, replace(cfg, message_id_field="message_id"), ids,
                                             {i: f"cmp-loss-{suffix}-{i[0]}" for i in ids})
                return sum(1 for d in found.values() if d.message is not None and d.related["history"])

            attempt("extract", extract)
            attempt("count", lambda: source.count_interval(client, cfg, params.start, params.end))
            attempt("details", details)
            proxy.lost = {lost}
            attempt("extract lost before", extract)
            attempt("count lost", lambda: source.count_interval(client, cfg, params.start, params.end))
            attempt("details lost", details)
            proxy.lost, proxy.pending, proxy.lose_after_searches, proxy.searches = set(), {lost}, 2, 0
            attempt("extract lost during", extract)
        # The node is gone now (the proxy stopped): a batch's details fail the attempt, not each message.
        attempt("details unreachable", lambda: len(pipeline.fetch_isolating(
            client, cfg, ids, {i: f"cmp-loss-{suffix}-{i[0]}" for i in ids})[1]))
    finally:
        http.request("DELETE", f"{url}/cmp-loss-{suffix}-*")
    return outcomes


def refresh_outcome(s3, url: str, config: dict) -> dict:
    """After the day's export: a history entry for one message, its status document updated in place for
    another, a late message in the data stream; then es_message_refresh. What changed on S3, and how."""
    from datetime import UTC, datetime

    http = urllib3.PoolManager()
    before = documents(s3, config["bucket"], config["prefix"])
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    status = call(http, url, "POST", f"/{config['status_index']}/_search",
                  {"size": 1, "sort": [{"message_id": "asc"}]})["hits"]["hits"][0]
    a, b = sorted(set(before) - {status["_source"]["message_id"]})[0], status["_source"]["message_id"]
    call(http, url, "POST", f"/{config['history_index']}/_doc", {"message_id": a, "@timestamp": now, "event": "read"})
    call(http, url, "POST", f"/{config['status_index']}/_update/{status['_id']}",
         {"doc": {"status": "read", "updated_at": now}})
    late = f"late/{uuid.uuid4().hex[:4]}"
    call(http, url, "POST", f"/{config['messages_index']}/_create/{late.replace('/', '%2F')}",
         {"message_id": late, "@timestamp": f"{DAY.isoformat()}T12:00:00Z", "body": "delayed"})
    call(http, url, "POST", "/_refresh")
    run = support.run_dag("es_message_refresh")
    after = documents(s3, config["bucket"], config["prefix"])
    return {"state": run.state, "changed": sorted(m for m in before if after.get(m) != before[m]),
            "expected": sorted([a, b]), "late": late in after,
            "history_event": after[a]["history"][-1].get("event"),
            "status_read": any(x.get("status") == "read" for x in after[b]["status"])}


@pytest.fixture(scope="module")
def exports(s3, airflow_db):
    """The day exported from every engine in both layouts: (engine, layout) -> (run state, documents)."""
    bucket = f"engines-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    results = {}
    for engine in ENGINES:  # one node at a time: the machine has 2 cores
        url = os.environ["ES_URL"] if engine == "es9" else engines_sh("up", engine)
        suffix = f"{engine}-{uuid.uuid4().hex[:6]}"
        try:
            names = load_awkward_day(url, suffix)
            for layout in LAYOUTS:
                support.reset_database(DB)
                conn = support.connect(DB)
                tracking.migrate(conn)
                conn.close()
                prefix = f"{engine}/{layout}"
                with pytest.MonkeyPatch.context() as mp:
                    run = run_export(mp, url, {**names, "bucket": bucket, "prefix": prefix, "layout": layout},
                                     SLICES[layout])
                results[engine, layout] = (run.state, documents(s3, bucket, prefix),
                                           support.query(DB, "SELECT source_index FROM message_tracking LIMIT 1"))
                if layout == LAYOUTS[-1]:  # last: the refresh changes the source the other layout read
                    with pytest.MonkeyPatch.context() as mp:
                        config = {**names, "bucket": bucket, "prefix": prefix, "layout": layout,
                                  "related_changed_field": "@timestamp",
                                  "related_changed_fields": {"status": "updated_at"}, "settle_minutes": 0,
                                  "refresh_lookback_days": (date.today() - DAY).days + 2}
                        point_airflow_at(mp, url, config)
                        results[engine, "refresh"] = refresh_outcome(s3, url, config)
            results[engine, "shard_loss"] = shard_loss_outcomes(url, engine, suffix)
        finally:
            if engine != "es9":
                engines_sh("down", engine)
            else:  # the stack's own node: leave nothing behind
                drop_awkward_day(url, suffix)
    return results


@pytest.mark.parametrize("engine", ENGINES)
def test_a_lost_shard_fails_the_extract_count_and_details_on_every_engine(exports, engine):
    outcomes = exports[engine, "shard_loss"]
    assert (outcomes["extract"], outcomes["count"], outcomes["details"]) == ("ok 20", "ok 20", "ok 20"), outcomes
    for case in ("extract lost before", "extract lost during", "count lost", "details lost"):
        assert outcomes[case].startswith("PartialResults: "), (case, outcomes[case])
        assert "cmp-loss-" in outcomes[case], (case, outcomes[case])
    # Before, opensearch-py's ConnectionError split the batch down to single messages, each failed.
    assert outcomes["details unreachable"].startswith("ConnectionError"), outcomes["details unreachable"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_refresh_brings_changed_and_late_messages_to_the_archive_on_every_engine(exports, engine):
    outcome = exports[engine, "refresh"]
    assert outcome["state"] == "success", outcome
    assert outcome["changed"] == outcome["expected"] and outcome["late"], outcome
    assert outcome["history_event"] == "read" and outcome["status_read"], outcome


def test_every_engine_exports_the_day_in_both_layouts(exports):
    ids = sorted(seed_data.ids_for_day(SEED, DAY))
    assert any(" " in i or "/" in i for i in ids)  # the awkward ids are in the day
    for (engine, layout), (state, docs, concrete) in ((k, v) for k, v in exports.items() if k[1] in LAYOUTS):
        assert state == "success", f"{engine} {layout}"
        assert sorted(docs) == ids, f"{engine} {layout}"
        # The messages were read from the data stream's backing indices, not from its name.
        assert concrete[0][0].startswith(".ds-cmp-messages-"), f"{engine}: {concrete}"


def test_the_documents_are_the_same_on_every_engine(exports):
    reference = exports["es9", "per_message"][1]
    # The dynamically mapped history index still links every history document to its message.
    assert sum(len(d["history"]) for d in reference.values()) > 0
    for (engine, layout), (_, docs, _) in ((k, v) for k, v in exports.items() if k[1] in LAYOUTS):
        assert docs == reference, f"{engine} {layout} differs from Elasticsearch 9 per_message"
