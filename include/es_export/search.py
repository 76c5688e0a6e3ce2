"""The search engines the package reads: Elasticsearch 8.x and 9.x, OpenSearch 2.x and 3.x (also
Amazon OpenSearch Service with IAM/SigV4). One small client interface over both Python clients.

The engine and its version come from the root endpoint, once per connection; anything else is
refused there with a message naming what was found. The rest of the package calls only
`SearchClient`'s methods, so the protocol differences live here: how a point-in-time is opened and
closed, the sort tie-breaker, the request shapes of each client, and the REST compatibility
headers Elasticsearch 8.x needs from the 9.x client.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from es_export import jsonio
from es_export.errors import ConfigError, ExportError, PartialResults, SourceError, SourceUnavailable, TransientError

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class PointInTimeGone(Exception):
    """A point-in-time was closed or expired between two pages."""


@dataclass(frozen=True)
class Engine:
    product: str  # "elasticsearch" or "opensearch"
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> int:
        parts = self.version.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def __str__(self) -> str:
        name = "OpenSearch" if self.product == "opensearch" else "Elasticsearch"
        return f"{name} {self.version}"


def detect(info: dict[str, Any]) -> Engine:
    """The engine a root endpoint (`GET /`) describes."""
    version = info.get("version") or {}
    number = str(version.get("number") or "")
    if not number:
        raise SourceError(f"the search endpoint's root answer has no version ({info!r}); is the URL the cluster's?")
    product = "opensearch" if version.get("distribution") == "opensearch" else "elasticsearch"
    return Engine(product, number)


def check_supported(engine: Engine) -> None:
    """Refuse an engine the export cannot read correctly, before any work."""
    if engine.product == "elasticsearch" and engine.major in (8, 9):
        return
    if engine.product == "opensearch" and (engine.major == 3 or (engine.major == 2 and engine.minor >= 4)):
        return
    if engine.product == "elasticsearch" and engine.major == 7:
        raise SourceError(f"the source is {engine}: Elasticsearch 7.x is not supported (its point-in-time needs "
                          "X-Pack and 7.10 on Amazon's service has none, and a scroll is not resumable). Upgrade "
                          "to Elasticsearch 8 or 9, or to OpenSearch 2.4 or later on Amazon OpenSearch Service")
    raise SourceError(f"the source is {engine}, which this package does not support; supported are "
                      "Elasticsearch 8.x and 9.x and OpenSearch 2.4 to 3.x")


def redact(url: str) -> str:
    """`url` without its user info (`user:password@`): what any message or log line may show of a URL."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


@dataclass(frozen=True)
class SearchSettings:
    """How to reach the cluster. Auth: basic (username/password), an API key, or AWS SigV4
    (`aws_region`; service `es` for Amazon OpenSearch Service)."""

    url: str
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    aws_region: str | None = None
    aws_service: str = "es"
    request_timeout: float = 120
    # A password or API key over plain http:// crosses the network readable: refused unless this says the
    # network is trusted (ES_ALLOW_HTTP_CREDENTIALS, the connection's extra allow_http_credentials).
    allow_http_credentials: bool = False

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"the search URL must start with http:// or https://, got {redact(self.url)!r}")
        if "@" in urlsplit(self.url).netloc:
            raise ConfigError(f"the search URL {redact(self.url)} carries a user name or password, which the client "
                              "would not send and every error would print; give them as the login and password "
                              "(the Airflow connection's, or ES_USERNAME/ES_PASSWORD or ES_SECRET_ARN for the "
                              "Lambda) and leave them out of the URL")
        if self.url.startswith("http://") and (self.password or self.api_key) and not self.allow_http_credentials:
            raise ConfigError(f"the search URL {self.url} is plain http://, so its password or API key would cross "
                              "the network unencrypted; use https://, or, on a network you trust, say so with the "
                              "connection's extra allow_http_credentials=true (ES_ALLOW_HTTP_CREDENTIALS=true for "
                              "the Lambda)")
        if self.aws_service == "aoss":
            raise ConfigError("OpenSearch Serverless (service 'aoss') is refused: it has no point-in-time and no "
                              "_mget across indices, which the export needs; use a managed OpenSearch domain "
                              "(service 'es')")
        if self.aws_region and (self.username or self.api_key):
            raise ConfigError("choose one authentication: AWS SigV4 (aws_region) or a login/API key, not both")


def check_complete(answer: dict[str, Any], what: str) -> dict[str, Any]:
    """`answer` itself, or PartialResults when a shard failed or the search timed out.

    Both engines answer HTTP 200 with the hits of the shards that answered when a shard is missing,
    rejected, trips a breaker or times out; the package asks for complete results wherever the API
    lets it, and checks every answer whatever it asked.
    """
    shards = answer.get("_shards") or {}
    failed = int(shards.get("failed") or 0)
    if failed or answer.get("timed_out"):
        failures = shards.get("failures") or []
        named = "; ".join(f"[{f.get('index')}][{f.get('shard')}] {_reason(f.get('reason'))}" for f in failures[:5])
        raise PartialResults(
            f"{what} answered with only part of the data: "
            + (f"{failed} of {shards.get('total')} shard(s) failed ({named or 'no reason given'})" if failed
               else "the search timed out")
            + ". Nothing was recorded from it; the task's retry asks again once the cluster's shards are back "
            "(check GET _cluster/health and _cat/shards)")
    return answer


def _reason(reason: Any) -> str:
    if isinstance(reason, dict):
        return f"{reason.get('type')}: {reason.get('reason')}"
    return str(reason)


# What Elasticsearch and OpenSearch answer when asked for complete results while a shard is missing.
_MISSING_SHARDS = {"search_phase_execution_exception", "no_shard_available_action_exception"}


def _refused(exc: Exception, what: str) -> Exception:
    """The engine's refusal to answer with partial results (missing shards) as PartialResults; else `exc`."""
    body = getattr(exc, "body", None) or getattr(exc, "info", None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("type") in _MISSING_SHARDS:
        return _shards_missing(what, error.get("reason"))
    return exc


def _shards_missing(what: str, reason: Any) -> PartialResults:
    return PartialResults(f"{what} was refused because not every shard could answer ({reason}); the task's retry "
                          "asks again once the cluster's shards are back (check GET _cluster/health and _cat/shards)")


def failed_search(result: dict[str, Any], what: str) -> ExportError:
    """The error of one search of an `_msearch` (which answers HTTP 200 around it) as the export's own, by
    its status: missing shards (503) are PartialResults and 429/5xx a TransientError, both retried; any
    other 4xx (a closed index, a window or terms limit below the batch) is a SourceError, which a retry
    would only meet again."""
    error, status = result.get("error"), result.get("status")
    kind = error.get("type") if isinstance(error, dict) else None
    reason = _reason(error)
    if not isinstance(status, int) or status >= 500 or status == 429:
        if kind in _MISSING_SHARDS:
            return _shards_missing(what, error.get("reason") if isinstance(error, dict) else reason)
        return TransientError(f"{what} failed (HTTP {status}): {reason}; the task's retry asks again")
    if "index_closed_exception" in reason:
        hint = "the index is closed: open it (POST <index>/_open), then clear the task"
    elif "max_result_window" in reason or "max_terms_count" in reason:
        hint = ("the index allows fewer hits or terms a search than a batch asks for: raise its "
                "index.max_result_window / index.max_terms_count to at least 10000, or trigger with a smaller "
                "batch_size, then clear the task")
    else:
        hint = "a retry would be refused the same way: fix the index or the configuration, then clear the task"
    return SourceError(f"{what} was refused (HTTP {status}): {reason}; {hint}")


class SearchClient:
    """What the export asks of a cluster; `ElasticsearchClient` and `OpenSearchClient` implement it."""

    engine: Engine | None = None
    tiebreaker: dict[str, str] = {"_shard_doc": "asc"}
    # Elasticsearch can give any date sort value in epoch milliseconds; OpenSearch has no sort format
    # and gives a date_nanos field's value in nanoseconds.
    sort_format = True

    def exists(self, index: str) -> bool:
        raise NotImplementedError

    def field_mapping(self, index: str, field: str) -> dict[str, Any]:
        raise NotImplementedError

    def count(self, index: str, query: dict[str, Any]) -> int:
        raise NotImplementedError

    def closed_indices(self, index: str) -> list[str]:
        """The closed concrete indices behind `index`: a pattern skips them in silence, an alias refuses."""
        raise NotImplementedError

    def open_pit(self, index: str, keep_alive: str) -> str:
        raise NotImplementedError

    def search_pit(self, pit_id: str, keep_alive: str, *, query: dict[str, Any], sort: list[Any], size: int,
                   source: bool | list[str], search_after: list[Any] | None,
                   track_total_hits: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def close_pit(self, pit_id: str) -> None:
        raise NotImplementedError

    def mget(self, docs: list[dict[str, str]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError


# What a function that reads the cluster takes: a SearchClient, or a bare `elasticsearch` client that
# `adapt` wraps (as Elasticsearch 9.x).
Searchable: TypeAlias = "SearchClient | Elasticsearch"


class ElasticsearchClient(SearchClient):
    """The `elasticsearch` 9.x Python client (for 8.x servers it sends compatible-with=8 headers)."""

    def __init__(self, es: Any, engine: Engine | None = None) -> None:
        self.es, self.engine = es, engine

    def exists(self, index: str) -> bool:
        return bool(self.es.indices.exists(index=index))

    def field_mapping(self, index: str, field: str) -> dict[str, Any]:
        resp = self.es.indices.get_field_mapping(index=index, fields=field)
        return dict(getattr(resp, "body", resp))

    def count(self, index: str, query: dict[str, Any]) -> int:
        # The count API takes no allow_partial_search_results: its _shards decides.
        what = f"the count of {index!r}"
        return int(check_complete(dict(self._call(what, self.es.count, index=index, query=query)), what)["count"])

    def closed_indices(self, index: str) -> list[str]:
        rows = self.es.cat.indices(index=index, expand_wildcards="all", h="index,status", format="json")
        return sorted(r["index"] for r in getattr(rows, "body", rows) if r.get("status") == "close")

    def open_pit(self, index: str, keep_alive: str) -> str:
        what = f"opening a point-in-time over {index!r}"
        answer = dict(self._call(what, self.es.open_point_in_time, index=index, keep_alive=keep_alive,
                                 allow_partial_search_results=False))
        return str(check_complete(answer, what)["id"])

    def search_pit(self, pit_id: str, keep_alive: str, *, query: dict[str, Any], sort: list[Any], size: int,
                   source: bool | list[str], search_after: list[Any] | None,
                   track_total_hits: bool = False) -> dict[str, Any]:
        from elasticsearch import NotFoundError

        try:
            answer = self._call("a point-in-time search", self.es.search, pit={"id": pit_id, "keep_alive": keep_alive},
                                query=query, sort=sort, size=size, source=source, search_after=search_after,
                                track_total_hits=track_total_hits, allow_partial_search_results=False)
        except NotFoundError as exc:
            raise PointInTimeGone(str(exc)) from exc
        return check_complete(dict(answer), "a point-in-time search")

    def close_pit(self, pit_id: str) -> None:
        self.es.close_point_in_time(id=pit_id)

    def mget(self, docs: list[dict[str, str]]) -> list[dict[str, Any]]:
        return _complete_docs(list(self._call("_mget", self.es.mget, docs=docs)["docs"]))

    def msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("_msearch", self.es.msearch, searches=_no_partial(searches))["responses"])

    @staticmethod
    def _call(what: str, method: Any, **kwargs: Any) -> Any:
        from elasticsearch import ApiError, NotFoundError

        try:
            return method(**kwargs)
        except NotFoundError:
            raise  # a point-in-time gone answers 404 with the same exception type: the caller tells them apart
        except ApiError as exc:
            refused = _refused(exc, what)
            if refused is exc:
                raise
            raise refused from exc


class OpenSearchClient(SearchClient):
    """The `opensearch-py` client: OpenSearch 2.4+ and 3.x, Amazon OpenSearch Service (SigV4)."""

    # OpenSearch adds no hidden tie-breaker to a point-in-time search; _id is unique and sortable there.
    tiebreaker = {"_id": "asc"}
    sort_format = False

    def __init__(self, client: Any, engine: Engine | None = None) -> None:
        self.client, self.engine = client, engine

    def exists(self, index: str) -> bool:
        return bool(self.client.indices.exists(index=index))

    def field_mapping(self, index: str, field: str) -> dict[str, Any]:
        return dict(self.client.indices.get_field_mapping(index=index, fields=field))

    def count(self, index: str, query: dict[str, Any]) -> int:
        what = f"the count of {index!r}"
        answer = self._call(what, self.client.count, index=index, body={"query": query})
        return int(check_complete(dict(answer), what)["count"])

    def closed_indices(self, index: str) -> list[str]:
        rows = self.client.cat.indices(index=index, expand_wildcards="all", h="index,status", format="json")
        return sorted(r["index"] for r in rows if r.get("status") == "close")

    def open_pit(self, index: str, keep_alive: str) -> str:
        # OpenSearch creates a point-in-time without the missing shards unless told not to.
        what = f"opening a point-in-time over {index!r}"
        answer = self._call(what, self.client.create_pit, index=index,
                            params={"keep_alive": keep_alive, "allow_partial_pit_creation": "false"})
        return str(check_complete(dict(answer), what)["pit_id"])

    def search_pit(self, pit_id: str, keep_alive: str, *, query: dict[str, Any], sort: list[Any], size: int,
                   source: bool | list[str], search_after: list[Any] | None,
                   track_total_hits: bool = False) -> dict[str, Any]:
        from opensearchpy import NotFoundError

        body: dict[str, Any] = {"pit": {"id": pit_id, "keep_alive": keep_alive}, "query": query, "sort": sort,
                                "size": size, "_source": source, "track_total_hits": track_total_hits}
        if search_after is not None:
            body["search_after"] = search_after
        try:
            answer = self._call("a point-in-time search", self.client.search, body=body,
                                params={"allow_partial_search_results": "false"})
        except NotFoundError as exc:
            raise PointInTimeGone(str(exc)) from exc
        return check_complete(dict(answer), "a point-in-time search")

    def close_pit(self, pit_id: str) -> None:
        self.client.delete_pit(body={"pit_id": [pit_id]})

    def mget(self, docs: list[dict[str, str]]) -> list[dict[str, Any]]:
        return _complete_docs(list(self._call("_mget", self.client.mget, body={"docs": docs})["docs"]))

    def msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("_msearch", self.client.msearch, body=_no_partial(searches))["responses"])

    @staticmethod
    def _call(what: str, method: Any, **kwargs: Any) -> Any:
        from opensearchpy import NotFoundError, TransportError

        try:
            return method(**kwargs)
        except NotFoundError:
            raise
        except TransportError as exc:
            refused = _refused(exc, what)
            if refused is exc:
                raise
            raise refused from exc


def _no_partial(searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An _msearch body whose every search asks for complete results (its header, the even lines)."""
    return [{**line, "allow_partial_search_results": False} if i % 2 == 0 else line for i, line in enumerate(searches)]


def _complete_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The docs of an _mget, or PartialResults when one could not be read (its shard is missing). A document
    of an index that no longer exists is not found, as it is."""
    docs = [{"_index": d.get("_index"), "_id": d.get("_id"), "found": False}
            if isinstance(d.get("error"), dict) and d["error"].get("type") == "index_not_found_exception" else d
            for d in docs]
    errors = [d for d in docs if d.get("error")]
    if not errors:
        return docs
    named = "; ".join(f"{d.get('_index')}/{d.get('_id')}: {_reason(d['error'])}" for d in errors[:3])
    if any("shard" in str(_reason(d["error"])) for d in errors):
        raise PartialResults(f"_mget could not read {len(errors)} document(s) ({named}); the task's retry asks "
                             "again once the cluster's shards are back")
    raise SourceError(f"_mget could not read {len(errors)} document(s): {named}")


def adapt(client: Searchable) -> SearchClient:
    """A SearchClient as it is, or a bare `elasticsearch` client (or a test's wrapper of one) wrapped."""
    return client if isinstance(client, SearchClient) else ElasticsearchClient(client)


def connect(settings: SearchSettings, *, aws_credentials: Any = None) -> SearchClient:
    """Detect the engine from the root endpoint and return the client that speaks to it."""
    info = root_info(settings, aws_credentials=aws_credentials)
    engine = detect(info)
    check_supported(engine)
    if engine.product == "opensearch":
        return OpenSearchClient(_opensearch(settings, aws_credentials), engine)
    if settings.aws_region:
        raise ConfigError(f"the source is {engine}: AWS SigV4 is supported for Amazon OpenSearch Service (OpenSearch "
                          "2.4+); an Elasticsearch cluster needs a login or an API key")
    return ElasticsearchClient(_elasticsearch(settings, compatible_with=engine.major), engine)


def root_info(settings: SearchSettings, *, aws_credentials: Any = None) -> dict[str, Any]:
    """`GET /` with the settings' authentication, by plain HTTP: neither Python client answers for
    the other product (the elasticsearch client refuses OpenSearch outright). urllib3 only, which the
    Lambda runtime has."""
    import base64
    import json

    import urllib3

    url = settings.url.rstrip("/") + "/"
    headers = {"Accept": "application/json"}
    if settings.aws_region:
        from opensearchpy import Urllib3AWSV4SignerAuth

        signer = Urllib3AWSV4SignerAuth(_credentials(aws_credentials), settings.aws_region, settings.aws_service)
        headers.update(signer("GET", url, None, headers))
    elif settings.api_key:
        headers["Authorization"] = f"ApiKey {settings.api_key}"
    elif settings.username:
        token = base64.b64encode(f"{settings.username}:{settings.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if settings.verify_certs else "CERT_NONE"}
    if settings.ca_certs:
        tls["ca_certs"] = settings.ca_certs
    shown = redact(settings.url)
    try:
        resp = urllib3.PoolManager(**tls).request("GET", url, headers=headers, timeout=30, retries=2)
    except urllib3.exceptions.HTTPError as exc:
        raise SourceUnavailable(f"cannot reach the search cluster at {shown}: {type(exc).__name__}: {exc}; "
                                "the task's retry tries again") from exc
    if resp.status in (401, 403):
        raise SourceError(f"the search cluster at {shown} refused the credentials (HTTP {resp.status}); "
                          "check the connection's login, API key or IAM permissions")
    if resp.status >= 500 or resp.status == 429:
        raise SourceUnavailable(f"GET / of the search cluster at {shown} answered HTTP {resp.status} (a node "
                                "down, restarting or overloaded); the task's retry tries again")
    if resp.status != 200:
        raise SourceError(f"GET / of the search cluster at {shown} answered HTTP {resp.status}")
    return dict(json.loads(resp.data))


def _credentials(aws_credentials: Any) -> Any:
    if aws_credentials is not None:
        return aws_credentials
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise ConfigError("AWS SigV4 needs AWS credentials (the aws_default connection in Airflow, the execution "
                          "role in Lambda), and none were found")
    return credentials


def _opensearch(settings: SearchSettings, aws_credentials: Any) -> Any:
    from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth

    kwargs: dict[str, Any] = {"timeout": settings.request_timeout, "max_retries": 3, "retry_on_timeout": True,
                              "verify_certs": settings.verify_certs, "ca_certs": settings.ca_certs}
    if settings.aws_region:
        kwargs["http_auth"] = Urllib3AWSV4SignerAuth(_credentials(aws_credentials), settings.aws_region,
                                                     settings.aws_service)
    elif settings.api_key:
        kwargs["headers"] = {"Authorization": f"ApiKey {settings.api_key}"}
    elif settings.username:
        kwargs["http_auth"] = (settings.username, settings.password or "")
    return OpenSearch(hosts=[settings.url], serializer=_opensearch_serializer(), **kwargs)


def _elasticsearch(settings: SearchSettings, *, compatible_with: int) -> Any:
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {"request_timeout": settings.request_timeout, "retry_on_timeout": True,
                              "max_retries": 3, "verify_certs": settings.verify_certs}
    if settings.ca_certs:
        kwargs["ca_certs"] = settings.ca_certs
    if settings.api_key:
        kwargs["api_key"] = settings.api_key
    elif settings.username:
        kwargs["basic_auth"] = (settings.username, settings.password or "")
    if compatible_with == 8:
        kwargs["node_class"] = _compatible_with_8_node()
    return Elasticsearch(settings.url, serializers=_elasticsearch_serializers(), **kwargs)


def _unreadable(data: bytes | str, exc: Exception) -> str:
    # Never the body itself: it can be megabytes of documents, and it would land in the task log.
    return f"the search cluster's answer ({len(data)} bytes) cannot be read exactly as JSON: {exc}"


def _elasticsearch_serializers() -> dict[str, Any]:
    """The 9.x client's JSON serializers (plain and compatibility mode) reading answers with `jsonio`."""
    from elastic_transport import SerializationError
    from elasticsearch.serializer import CompatibilityModeJsonSerializer, JsonSerializer

    def loads(data: bytes) -> Any:
        if data == b"":  # what the client's own serializer answers for an empty body
            return None
        try:
            return jsonio.decode(data)
        except jsonio.DecodeError as exc:
            raise SerializationError(_unreadable(data, exc)) from exc

    class Plain(JsonSerializer):
        def loads(self, data: bytes) -> Any:
            return loads(data)

    class Compatible(CompatibilityModeJsonSerializer):
        def loads(self, data: bytes) -> Any:
            return loads(data)

    return {Plain.mimetype: Plain(), Compatible.mimetype: Compatible()}


def _opensearch_serializer() -> Any:
    """opensearch-py's JSON serializer reading answers with `jsonio`."""
    from opensearchpy.exceptions import SerializationError
    from opensearchpy.serializer import JSONSerializer

    class Jsonio(JSONSerializer):
        def loads(self, s: str) -> Any:
            try:
                return jsonio.decode(s)
            except jsonio.DecodeError as exc:
                raise SerializationError(_unreadable(s, exc)) from exc

    return Jsonio()


def _compatible_with_8_node() -> type:
    """A transport node that asks for REST compatibility with 8: the 9.x client sets compatible-with=9 on
    every request (overriding any header passed in), which an 8.x server refuses."""
    from elastic_transport import HttpHeaders, Urllib3HttpNode
    from elastic_transport._models import DEFAULT, DefaultType
    from elastic_transport._node._base import NodeApiResponse

    class CompatibleWith8(Urllib3HttpNode):
        def perform_request(self, method: str, target: str, body: bytes | None = None,
                            headers: HttpHeaders | None = None,
                            request_timeout: DefaultType | float | None = DEFAULT) -> NodeApiResponse:
            if headers is not None:
                headers = headers.copy()
                for name in ("accept", "content-type"):
                    if name in headers:
                        headers[name] = headers[name].replace("compatible-with=9", "compatible-with=8")
            return super().perform_request(method, target, body=body, headers=headers,
                                           request_timeout=request_timeout)

    return CompatibleWith8


def unavailable(exc: BaseException) -> bool:
    """Whether an error of either client means the cluster could not answer now (unreachable, timed out,
    5xx, 429, an auth refusal of IAM included as 401/403 cannot be fixed by splitting a batch either):
    the one place that tells a cluster's trouble from a problem of the data."""
    if isinstance(exc, SourceUnavailable | PartialResults):
        return True
    if isinstance(exc.__cause__, jsonio.DecodeError):
        return False  # an answer that holds what jsonio refuses (1.5e400): the data of some message
    try:
        from elastic_transport import ConnectionError as EsConnectionError
        from elastic_transport import TransportError as EsTransportError
        from elasticsearch import ApiError
    except ImportError:  # pragma: no cover - both clients are installed wherever the package runs
        EsConnectionError = EsTransportError = ApiError = ()  # type: ignore[misc,assignment]  # noqa: N806
    if isinstance(exc, EsConnectionError | EsTransportError):
        return True
    if isinstance(exc, ApiError):
        return exc.meta.status >= 500 or exc.meta.status in (401, 403, 429)
    try:
        from opensearchpy.exceptions import ConnectionError as OsConnectionError
        from opensearchpy.exceptions import TransportError as OsTransportError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, OsConnectionError):  # also ConnectionTimeout and SSLError
        return True
    if isinstance(exc, OsTransportError):
        status = exc.status_code
        return not isinstance(status, int) or status >= 500 or status in (401, 403, 429)
    return False


def values_of(source: dict[str, Any], field: str) -> Iterable[str]:
    """The message ids a related document names in `field` (a dotted path, or a flattened key): a
    string, a number, or an array of them (a document linked to several messages)."""
    value: Any = source.get(field)
    if value is None and "." in field:
        value = source
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or item is None or isinstance(item, dict | list):
            continue
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        yield str(item)
