"""The local stack itself: a real Elasticsearch 9 node, MariaDB through MySqlHook, S3 through S3Hook."""

import uuid
from collections import Counter

import pytest
from elasticsearch import helpers

from es_export.source import scan

pytestmark = pytest.mark.integration


def test_elasticsearch_node_is_healthy_and_9x(es):
    info = es.info()
    assert info["version"]["number"].startswith("9.")
    assert es.cluster.health(wait_for_status="yellow", timeout="10s")["status"] in {"green", "yellow"}


def test_elasticsearch_answers_as_elasticsearch(es):
    import urllib.request

    with urllib.request.urlopen(es.transport.node_pool.get().base_url + "/") as resp:
        assert resp.headers["X-Elastic-Product"] == "Elasticsearch"


@pytest.fixture(scope="module")
def scan_index(es):
    index = f"stack-scan-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, settings={"number_of_shards": 2, "number_of_replicas": 0},
                      mappings={"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}})
    helpers.bulk(es, ({"_index": index, "_id": f"doc-{n}", "n": n, "tag": f"t{n % 7}"} for n in range(20_000)),
                 chunk_size=5000)
    es.indices.refresh(index=index)
    yield index
    es.indices.delete(index=index)


def test_pit_search_after_scan_returns_every_id_exactly_once(es, scan_index):
    seen = Counter(hit["_id"] for hit in scan(es, scan_index, {"match_all": {}}, [{"n": "asc"}, {"_shard_doc": "asc"}],
                                             page_size=1000, keep_alive="1m"))
    assert len(seen) == 20_000
    assert set(seen.values()) == {1}


def test_scan_closes_its_point_in_time(es, scan_index):
    before = es.nodes.stats(metric="indices")["nodes"]
    open_before = sum(n["indices"]["search"]["open_contexts"] for n in before.values())
    it = scan(es, scan_index, {"match_all": {}}, [{"_shard_doc": "asc"}], page_size=10, keep_alive="5m")
    next(it)
    it.close()  # consumer stops early
    after = es.nodes.stats(metric="indices")["nodes"]
    assert sum(n["indices"]["search"]["open_contexts"] for n in after.values()) <= open_before


def test_mget_and_msearch(es, scan_index):
    docs = es.mget(index=scan_index, ids=["doc-1", "doc-19999", "missing"])["docs"]
    assert [d["found"] for d in docs] == [True, True, False]
    resp = es.msearch(searches=[{"index": scan_index}, {"query": {"term": {"tag": "t3"}}, "size": 0},
                                {"index": scan_index}, {"query": {"range": {"n": {"lt": 10}}}, "size": 10}])
    totals = [r["hits"]["total"]["value"] for r in resp["responses"]]
    assert totals == [sum(1 for n in range(20_000) if n % 7 == 3), 10]


def test_mariadb_round_trip_through_mysqlhook():
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    hook = MySqlHook(mysql_conn_id="mysql_tracking")
    hook.run("CREATE TABLE IF NOT EXISTS stack_check (id INT PRIMARY KEY, v VARCHAR(50)) CHARSET utf8mb4")
    hook.run("REPLACE INTO stack_check VALUES (%s, %s)", parameters=(1, "grüße 🚀"))
    assert hook.get_first("SELECT v FROM stack_check WHERE id = %s", parameters=(1,))[0] == "grüße 🚀"
    hook.run("DROP TABLE stack_check")


def test_s3_put_get_through_s3hook():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    bucket = f"stack-check-{uuid.uuid4().hex[:8]}"
    hook.create_bucket(bucket_name=bucket)
    hook.load_string("héllo", key="a/b.json", bucket_name=bucket, replace=True)
    assert hook.read_key("a/b.json", bucket_name=bucket) == "héllo"
    hook.delete_objects(bucket=bucket, keys=["a/b.json"])
    hook.delete_bucket(bucket_name=bucket)
