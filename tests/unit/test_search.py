"""The engine rules of es_export.search and the source's field choices, without a cluster."""

import pytest

from es_export import search, source
from es_export.errors import ConfigError, SourceError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("info", "engine"), [
    pytest.param({"version": {"number": "9.5.3", "build_flavor": "default"}}, "Elasticsearch 9.5.3", id="es9"),
    pytest.param({"version": {"number": "8.19.21"}}, "Elasticsearch 8.19.21", id="es8"),
    pytest.param({"version": {"number": "2.19.1", "distribution": "opensearch"}}, "OpenSearch 2.19.1", id="os2"),
    pytest.param({"version": {"number": "3.8.0", "distribution": "opensearch"}}, "OpenSearch 3.8.0", id="os3"),
])
def test_supported_engines_are_detected_from_the_root_endpoint(info, engine):
    found = search.detect(info)
    search.check_supported(found)
    assert str(found) == engine


@pytest.mark.parametrize(("info", "message"), [
    pytest.param({"version": {"number": "7.10.2", "distribution": "oss"}},
                 "the source is Elasticsearch 7.10.2: Elasticsearch 7.x is not supported", id="es7.10"),
    pytest.param({"version": {"number": "1.3.19", "distribution": "opensearch"}},
                 "the source is OpenSearch 1.3.19, which this package does not support", id="os1"),
    pytest.param({"version": {"number": "2.3.0", "distribution": "opensearch"}},
                 "the source is OpenSearch 2.3.0, which this package does not support", id="os2.3-no-pit"),
    pytest.param({"version": {"number": "6.8.23"}}, "Elasticsearch 6.8.23, which", id="es6"),
])
def test_other_engines_are_refused_naming_what_was_found(info, message):
    with pytest.raises(SourceError, match=message):
        search.check_supported(search.detect(info))


def test_serverless_and_mixed_auth_are_refused_before_any_request():
    with pytest.raises(ConfigError, match="OpenSearch Serverless .* is refused"):
        search.SearchSettings(url="https://x.aoss.amazonaws.com", aws_region="eu-west-1", aws_service="aoss")
    with pytest.raises(ConfigError, match="choose one authentication"):
        search.SearchSettings(url="https://x", aws_region="eu-west-1", username="u")
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        search.SearchSettings(url="localhost:9200")


@pytest.mark.parametrize("url", ["https://exporter:S3cr3t@es.internal:9200", "http://exporter:S3cr3t@10.0.0.5:9200/",
                                 "https://:S3cr3t@es.internal", "https://exporter@es.internal:9200"])
def test_a_url_carrying_credentials_is_refused_without_repeating_them(url):
    with pytest.raises(ConfigError, match="carries a user name or password") as refused:
        search.SearchSettings(url=url)
    assert "S3cr3t" not in str(refused.value) and "exporter" not in str(refused.value)
    assert "es.internal" in str(refused.value) or "10.0.0.5" in str(refused.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://exporter:S3cr3t@es.internal:9200/path?q=1", "https://es.internal:9200/path?q=1"),
    ("http://u@[::1]:9200", "http://[::1]:9200"),
    ("https://es.internal:9200", "https://es.internal:9200"),
])
def test_redact_drops_the_user_info_of_a_url(url, shown):
    assert search.redact(url) == shown


def test_credentials_over_plain_http_are_refused_unless_the_network_is_trusted():
    for login in ({"username": "u", "password": "p"}, {"api_key": "k"}):
        with pytest.raises(ConfigError, match="plain http://, so its password or API key would cross"):
            search.SearchSettings(url="http://es.internal:9200", **login)
        search.SearchSettings(url="https://es.internal:9200", **login)
        search.SearchSettings(url="http://es.internal:9200", allow_http_credentials=True, **login)
    search.SearchSettings(url="http://127.0.0.1:9200")  # no credentials: nothing to protect


@pytest.mark.parametrize(("doc", "field", "ids"), [
    pytest.param({"message_id": "a/B c"}, "message_id", ["a/B c"], id="string"),
    pytest.param({"message_id": 42}, "message_id", ["42"], id="number"),
    pytest.param({"message_id": 42.0}, "message_id", ["42"], id="whole-float"),
    pytest.param({"message_id": ["m1", "m2"]}, "message_id", ["m1", "m2"], id="array"),
    pytest.param({"meta": {"message_id": "m1"}}, "meta.message_id", ["m1"], id="dotted-path"),
    pytest.param({"meta.message_id": "m1"}, "meta.message_id", ["m1"], id="flattened-key"),
    pytest.param({"message_id": {"x": 1}}, "message_id", [], id="object-ignored"),
    pytest.param({"other": 1}, "message_id", [], id="absent"),
])
def test_related_documents_name_their_messages_in_every_shape(doc, field, ids):
    assert list(search.values_of(doc, field)) == ids


def test_date_nanos_sort_values_become_milliseconds():
    assert source.epoch_millis("1727740800123.456") == 1727740800123
    assert source.epoch_millis(1727740800123) == 1727740800123


class Mapped(search.SearchClient):
    """A cluster that only answers field mappings (one per concrete index)."""

    def __init__(self, mappings):
        self.mappings = mappings

    def exists(self, index):
        return True

    def field_mapping(self, index, field):
        leaf = field.split(".")[-1]
        return {name: {"mappings": {field: {"full_name": field, "mapping": {leaf: m}}}}
                for name, m in self.mappings.items()}


@pytest.mark.parametrize(("mappings", "chosen"), [
    pytest.param({"h": {"type": "keyword"}}, ("message_id", False), id="keyword"),
    pytest.param({"h": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}},
                 ("message_id.keyword", False), id="dynamic-text-with-keyword"),
    pytest.param({"h": {"type": "long"}}, ("message_id", True), id="numeric"),
    pytest.param({}, ("message_id", False), id="not-mapped-yet"),
])
def test_the_exact_field_is_chosen_from_the_mapping(mappings, chosen):
    assert source.exact_field(Mapped(mappings), "h", "message_id") == chosen


def test_a_text_field_without_an_exact_sub_field_is_refused_naming_index_and_fix():
    with pytest.raises(SourceError, match="field 'message_id' of index 'h-2024' is mapped as 'text' without an "
                                          "exact \\(keyword\\) sub-field"):
        source.exact_field(Mapped({"h-2024": {"type": "text"}}), "h-*", "message_id")


class LoopingClient(search.SearchClient):
    """An engine whose pages never move on: every search answers the same full page."""

    def __init__(self, total: int):
        self.total, self.searches = total, 0

    def open_pit(self, index, keep_alive):
        return "pit"

    def close_pit(self, pit_id):
        pass

    def search_pit(self, pit_id, keep_alive, *, query, sort, size, source, search_after, track_total_hits=False):
        self.searches += 1
        hits = [{"_id": f"m{i}", "sort": [1000, i]} for i in range(size)]
        total = {"total": {"value": self.total, "relation": "eq"}} if track_total_hits else {}
        return {"pit_id": pit_id, "hits": {**total, "hits": hits}}


@pytest.mark.parametrize(("total", "message"), [
    pytest.param(1000, "made no progress: a page ended at", id="same-page-again"),
    pytest.param(15, "read 20 hits while its point-in-time holds 15", id="more-hits-than-the-pit-holds"),
])
def test_a_scan_that_makes_no_progress_stops_instead_of_looping(total, message):
    client = LoopingClient(total)
    with pytest.raises(SourceError, match=message):
        list(source.scan(client, "messages", {"match_all": {}}, [], 10, "1m"))
    assert client.searches <= 2


@pytest.mark.parametrize(("answer", "message"), [
    pytest.param({"_shards": {"total": 4, "successful": 3, "failed": 1, "failures": [
        {"index": "m-b", "shard": 2, "reason": {"type": "node_not_connected_exception", "reason": "gone"}}]}},
        "1 of 4 shard\\(s\\) failed \\(\\[m-b\\]\\[2\\] node_not_connected_exception: gone\\)", id="failed-shard"),
    pytest.param({"timed_out": True, "_shards": {"total": 1, "failed": 0}}, "the search timed out", id="timed-out"),
])
def test_a_partial_answer_is_refused_naming_the_shard(answer, message):
    from es_export.errors import PartialResults

    with pytest.raises(PartialResults, match=message):
        search.check_complete(answer, "the count of 'm'")
    assert search.check_complete({"_shards": {"total": 2, "failed": 0}, "count": 3}, "x")["count"] == 3


@pytest.mark.parametrize(("item", "kind", "words"), [
    ({"status": 503, "error": {"type": "search_phase_execution_exception", "reason": "Search rejected due to "
                                "missing shards [[m][0]]"}}, "PartialResults", "cluster's shards are back"),
    ({"status": 400, "error": {"type": "search_phase_execution_exception", "reason": "all shards failed: Result "
                                "window is too large ... index.max_result_window"}}, "SourceError", "batch_size"),
    ({"status": 400, "error": {"type": "index_closed_exception", "reason": "closed"}}, "SourceError",
     "open it (POST <index>/_open)"),
    ({"status": 400, "error": {"type": "illegal_argument_exception", "reason": "bad"}}, "SourceError",
     "refused the same way"),
    ({"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}},
     "TransientError", "retry asks again"),
    ({"status": 500, "error": {"type": "null_pointer_exception", "reason": "boom"}}, "TransientError", "HTTP 500"),
])
def test_an_msearch_item_error_is_retried_only_when_a_retry_can_get_past_it(item, kind, words):
    """Missing shards and overload are retried; a refusal (4xx) fails at once, saying what to fix, instead of
    spending every message's attempts on retries that meet it again."""
    error = search.failed_search(item, "reading the batch's messages from 'm'")
    assert type(error).__name__ == kind and words in str(error)
    assert error.retryable is (kind != "SourceError")
