"""A proxy in front of a real search node that answers as the engine does when a shard of some concrete
indices is lost (a node holding it died, it is relocating, a breaker tripped).

Every request goes to the real node; what the lost shards would change is then applied to the answer,
the way Elasticsearch and OpenSearch do it:

- a search (also one with a point-in-time, and each search of an `_msearch`) answers HTTP 200 with the
  other shards' hits and `_shards.failed` when partial results are allowed (their default), and the
  engine's `search_phase_execution_exception` (503) when `allow_partial_search_results=false`;
- `_count` answers with the other shards' count and `_shards.failed` (it takes no such flag);
- opening a point-in-time over a lost shard fails on Elasticsearch unless partial results are allowed,
  and succeeds without that shard on OpenSearch unless `allow_partial_pit_creation=false`;
- `_mget` answers an error for each document of a lost shard.

`lose_after_searches` loses the shards only after that many searches, so a scan sees them go mid-way.
A single node always re-allocates its own primaries, so this is how one machine shows a lost shard.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3

_FORWARDED = ("content-type", "accept", "authorization")


class ShardLossProxy:
    def __init__(self, upstream: str, *, opensearch: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.opensearch = opensearch
        self.lost: set[str] = set()
        self.pending: set[str] = set()  # lost once `lose_after_searches` searches have been answered
        self.lose_after_searches: int | None = None
        self.searches = 0
        self.requests: list[tuple[str, str]] = []  # (method, path with query), for the test to read
        self._http = urllib3.PoolManager(maxsize=8)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ShardLossProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ the engine's answers

    def failures(self, indices: set[str]) -> list[dict[str, Any]]:
        return [{"shard": 0, "index": index, "node": None, "reason": {
            "type": "no_shard_available_action_exception", "reason": f"[{index}][0] no shard available"}}
            for index in sorted(indices)]

    def refusal(self, indices: set[str]) -> dict[str, Any]:
        shards = " ".join(f"[[{index}][0]]" for index in sorted(indices))
        return {"error": {
            "root_cause": [{"type": "no_shard_available_action_exception", "reason": None, "index": i, "shard": "0"}
                           for i in sorted(indices)],
            "type": "search_phase_execution_exception",
            "reason": f"Search rejected due to missing shards {shards}. Consider using "
                      "`allow_partial_search_results` setting to bypass this error.",
            "phase": "query", "grouped": True, "failed_shards": self.failures(indices)}, "status": 503}

    def _partial(self, answer: dict[str, Any], lost: set[str]) -> dict[str, Any]:
        hits = answer.get("hits", {}).get("hits")
        if hits is not None:
            answer["hits"]["hits"] = [h for h in hits if h.get("_index") not in lost]
        shards = answer.setdefault("_shards", {"total": 1, "successful": 1, "skipped": 0, "failed": 0})
        shards["total"] = shards.get("total", 0) + len(lost)
        shards["failed"] = shards.get("failed", 0) + len(lost)
        shards["failures"] = shards.get("failures", []) + self.failures(lost)
        return answer

    def _lost_now(self, counts_as_search: bool) -> set[str]:
        if counts_as_search:
            self.searches += 1
            if self.lose_after_searches is not None and self.searches > self.lose_after_searches:
                self.lost |= self.pending
        return set(self.lost)

    # ------------------------------------------------------------------ HTTP

    def _forward(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        resp = self._http.request(method, self.upstream + target, body=body, headers=headers, retries=False,
                                  timeout=120)
        return resp.status, resp.data

    def answer(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
        """(status, JSON or bytes) for one request."""
        self.requests.append((method, target))
        parts = urlsplit(target)
        path, params = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        is_pit_open = path.endswith("/_pit") or path.endswith("/_search/point_in_time")
        is_search = path.endswith("/_search") and not is_pit_open
        lost = self._lost_now(is_search or path.endswith("/_msearch"))
        if not lost or method == "DELETE" or not (is_search or is_pit_open or path.endswith(
                ("/_count", "/_msearch", "/_mget"))):
            return self._forward(method, target, body, headers)
        if is_pit_open:
            allowed = (params.get("allow_partial_pit_creation", "true") != "false" if self.opensearch
                       else params.get("allow_partial_search_results") == "true")
            if not allowed:
                return 503, self.refusal(lost)
            status, data = self._forward(method, target, body, headers)
            return status, self._partial(json.loads(data), lost) if status == 200 else data
        if is_search:
            if params.get("allow_partial_search_results") == "false":
                return 503, self.refusal(lost)
            status, data = self._forward(method, target, body, headers)
            return status, self._partial(json.loads(data), lost) if status == 200 else data
        if path.endswith("/_count"):
            status, data = self._forward(method, target, body, headers)
            if status != 200:
                return status, data
            answer = json.loads(data)
            for index in lost:
                _, part = self._forward("POST", f"/{index}/_count", body, headers)
                answer["count"] -= json.loads(part).get("count", 0)
            return 200, self._partial(answer, lost)
        if path.endswith("/_msearch"):
            return self._msearch(target, body or b"", headers, lost)
        status, data = self._forward(method, target, body, headers)  # _mget
        answer = json.loads(data)
        answer["docs"] = [{"_index": d.get("_index"), "_id": d.get("_id"), "error": {
            "type": "no_shard_available_action_exception", "reason": "no shard available"}}
            if d.get("_index") in lost else d for d in answer.get("docs", [])]
        return status, answer

    def _msearch(self, target: str, body: bytes, headers: dict[str, str], lost: set[str]) -> tuple[int, Any]:
        status, data = self._forward("POST", target, body, headers)
        if status != 200:
            return status, data
        answer = json.loads(data)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        params = {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}
        for i, item in enumerate(answer.get("responses", [])):
            header = lines[2 * i] if 2 * i < len(lines) else {}
            flag = header.get("allow_partial_search_results", params.get("allow_partial_search_results", True))
            if str(flag).lower() == "false":
                answer["responses"][i] = self.refusal(lost)
            elif "error" not in item:
                self._partial(item, lost)
        return 200, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                status, answer = proxy.answer(self.command, self.path, body, headers)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if not proxy.opensearch:
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                return

        return Handler
