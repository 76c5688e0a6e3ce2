"""A local stand-in for Amazon OpenSearch Service's IAM authentication: an HTTP proxy that checks
AWS Signature Version 4 on every request before passing it to a real OpenSearch node.

    SIGV4_ACCESS_KEY_ID=AKIA... SIGV4_SECRET_ACCESS_KEY=... \\
        python devstack/sigv4_proxy.py --listen-port 9290 --upstream http://127.0.0.1:9210 \\
        --region eu-west-1 --service es

For each request the signature is computed again, independently of the client, with botocore's
`SigV4Auth` (its canonical request, string to sign and signing key): the request's own X-Amz-Date
is the timestamp, the headers are exactly those its Authorization header lists in SignedHeaders
(with the values received), the payload hash is the SHA-256 of the body received (an
X-Amz-Content-SHA256 header must equal it), an X-Amz-Security-Token header counts when signed
(SIGV4_SESSION_TOKEN, when set, must match it). The path and query are canonicalised from the
request line as received, as AWS does.

Refused with HTTP 403 and a JSON body saying why (AWS's own `{"message": ...}` shape): no or a
malformed Authorization header, an unknown access key id, a credential scope for another region or
service or date, a request signed more than 5 minutes before (or after) now, a signed header
missing, a body whose hash is not the one signed, a signature that does not match. On a match the
request goes to the upstream (method, path, query, headers but Authorization and Host, body) and
its status, headers and body come back.

The proxy prints `listening on URL` on stdout once it accepts connections (`--listen-port 0`
picks a free port), and one JSON line per request on stderr: method, path, status, and for a
refusal its reason code and message. Neither carries the secret key, a signature or a token.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW = timedelta(minutes=5)
AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$")
# Not forwarded: the proxy's own connection headers and the authentication it has checked.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "host", "content-length", "expect"}


class Refused(Exception):
    """The request does not carry a valid signature: `code` names the check, `message` says why."""

    def __init__(self, code: str, message: str, **detail: str) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail

    def body(self) -> dict[str, str]:
        return {"message": self.message, "reason": self.code, **self.detail}


@dataclass(frozen=True)
class Expected:
    """What a request must be signed with."""

    access_key: str
    secret_key: str = field(repr=False)
    region: str
    service: str = "es"
    session_token: str | None = field(default=None, repr=False)
    max_skew: timedelta = MAX_SKEW


@dataclass(frozen=True)
class Verified:
    access_key: str
    signed_headers: tuple[str, ...]
    # Where botocore's canonical query (the one checked) differs from the RFC 3986 form the SigV4
    # specification describes: the same request could be refused by AWS's own canonicalisation.
    notes: tuple[str, ...] = ()


class _ListedHeaders(SigV4Auth):
    """botocore's SigV4 over exactly the headers the request says it signed, as the server side must."""

    def __init__(self, credentials: Credentials, service: str, region: str, headers: HTTPHeaders) -> None:
        super().__init__(credentials, service, region)
        self._listed = headers

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._listed


def _header_list(headers: Any) -> list[tuple[str, str]]:
    """(name, value) pairs, repeated names kept: from an email.message.Message, a mapping or pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]


def _one(pairs: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in pairs if k.lower() == name]
    if len(values) > 1:
        raise Refused("DuplicateHeader", f"the request has {len(values)} {name} headers")
    return values[0] if values else None


def spec_canonical_query(query: str) -> str:
    """The canonical query string of AWS's SigV4 specification, from a query as sent: every name and
    value percent-decoded and encoded again per RFC 3986 (unreserved characters bare, everything
    else %XX in capitals, a '+' is a literal plus), sorted by encoded name, then value."""
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def verify(method: str, target: str, headers: Any, body: bytes, expected: Expected, *,
           now: datetime | None = None) -> Verified:
    """Check the SigV4 signature of one request as received: `target` is the request line's path and
    query, `headers` what came with it. Returns what was verified; raises Refused otherwise."""
    pairs = _header_list(headers)
    authorization = _one(pairs, "authorization")
    if authorization is None:
        raise Refused("MissingAuthenticationToken", "the request is not signed: it has no Authorization header")
    match = AUTHORIZATION.match(authorization.strip())
    if not match:
        algorithm = authorization.split(None, 1)[0] if authorization.strip() else ""
        if algorithm != ALGORITHM:
            raise Refused("IncompleteSignature", f"the Authorization header is not {ALGORITHM} (it starts with "
                                                 f"{algorithm[:20]!r})")
        raise Refused("IncompleteSignature", "the Authorization header is malformed: it needs Credential=, "
                                             "SignedHeaders= and Signature=")
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise Refused("IncompleteSignature", "the credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request")
    access_key, scope_date, region, service, _ = scope
    if not hmac.compare_digest(access_key.encode(), expected.access_key.encode()):
        raise Refused("InvalidClientTokenId", "the access key id in the credential is not known here")
    if region != expected.region:
        raise Refused("SignatureDoesNotMatch", f"the credential scope is for region {region!r}; this endpoint is "
                                               f"in {expected.region!r}")
    if service != expected.service:
        raise Refused("SignatureDoesNotMatch", f"the credential scope is for service {service!r}; this endpoint "
                                               f"is {expected.service!r}")

    amz_date = _one(pairs, "x-amz-date")
    if amz_date is None:
        raise Refused("IncompleteSignature", "the request has no X-Amz-Date header")
    try:
        signed_at = datetime.strptime(amz_date.strip(), TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise Refused("IncompleteSignature", f"X-Amz-Date {amz_date!r} is not of the form YYYYMMDDTHHMMSSZ") from None
    if scope_date != amz_date.strip()[:8]:
        raise Refused("SignatureDoesNotMatch", f"the credential scope's date {scope_date} is not the date of "
                                               f"X-Amz-Date {amz_date.strip()}")
    now = now or datetime.now(UTC)
    if now - signed_at > expected.max_skew:
        raise Refused("InvalidSignatureException", f"the request was signed at {amz_date.strip()}, more than "
                                                   f"{int(expected.max_skew.total_seconds() // 60)} minutes "
                                                   f"before the server's time {now.strftime(TIMESTAMP_FORMAT)}")
    if signed_at - now > expected.max_skew:
        raise Refused("InvalidSignatureException", f"the request is signed for {amz_date.strip()}, more than "
                                                   f"{int(expected.max_skew.total_seconds() // 60)} minutes after "
                                                   f"the server's time {now.strftime(TIMESTAMP_FORMAT)}")

    listed = match["signed"].split(";")
    if listed != sorted(set(listed)) or any(n != n.lower() or not n for n in listed):
        raise Refused("IncompleteSignature", "SignedHeaders must be lower-case names, sorted, each once")
    for required in ("host", "x-amz-date"):
        if required not in listed:
            raise Refused("IncompleteSignature", f"the {required} header must be signed")
    to_sign = HTTPHeaders()
    for name in listed:
        values = [v for k, v in pairs if k.lower() == name]
        if not values:
            raise Refused("IncompleteSignature", f"the signed header {name!r} is not in the request")
        for value in values:
            to_sign[name] = value

    body = body or b""
    body_hash = hashlib.sha256(body).hexdigest()
    claimed = _one(pairs, "x-amz-content-sha256")
    if claimed is not None and claimed.strip() != body_hash:
        what = "an unsigned payload" if claimed.strip().startswith(("UNSIGNED-PAYLOAD", "STREAMING-")) else \
            "a SHA-256 that is not the body's"
        raise Refused("SignatureDoesNotMatch", f"X-Amz-Content-SHA256 declares {what}; this endpoint signs "
                                               "the body's own hash")
    token = _one(pairs, "x-amz-security-token")
    if expected.session_token is not None:
        if token is None or "x-amz-security-token" not in listed:
            raise Refused("InvalidClientTokenId", "this endpoint needs a signed X-Amz-Security-Token header")
        if not hmac.compare_digest(token.encode(), expected.session_token.encode()):
            raise Refused("InvalidClientTokenId", "the security token is not valid")

    split = urlsplit(target)
    path, query = split.path or "/", split.query
    host = to_sign["host"]
    # The request as botocore sees one to sign: URL from the received Host, path and query, unchanged.
    request = AWSRequest(method=method.upper(), url=f"http://{host}{path}" + (f"?{query}" if query else ""),
                         data=body, headers=to_sign)
    request.context["timestamp"] = amz_date.strip()
    # botocore takes X-Amz-Content-SHA256 when it is among the signed headers (checked above to be the
    # body's hash); otherwise it hashes the body itself (always, over http).
    signer = _ListedHeaders(Credentials(expected.access_key, expected.secret_key, token), service, region, to_sign)
    canonical = signer.canonical_request(request)
    if canonical.rsplit("\n", 1)[1] != body_hash:
        raise Refused("SignatureDoesNotMatch", "the payload hash in the canonical request is not the body's")
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(signature, match["signature"].lower()):
        shown = canonical if token is None else canonical.replace(token, "<x-amz-security-token>")
        raise Refused("SignatureDoesNotMatch", "the request signature we calculated does not match the signature "
                                               "you provided", canonical_request=shown, string_to_sign=string_to_sign)
    notes = []
    if query and spec_canonical_query(query) != signer.canonical_query_string(request):
        notes.append(f"query {query!r} was verified as {signer.canonical_query_string(request)!r}; the SigV4 "
                     f"specification's canonical form is {spec_canonical_query(query)!r} (a '+' from form "
                     "encoding would be %20 there: either way not the '+' signed)")
    return Verified(access_key, tuple(listed), tuple(notes))


# ---------------------------------------------------------------------------- the HTTP proxy


class Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], expected: Expected, upstream: str, timeout: float = 120) -> None:
        super().__init__(address, Handler)
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--upstream must be an http(s) URL, got {upstream!r}")
        self.expected, self.upstream, self.upstream_timeout = expected, parts, timeout
        self.log_lock = threading.Lock()

    def log_event(self, event: dict[str, Any]) -> None:
        with self.log_lock:
            print(json.dumps(event, ensure_ascii=False), file=sys.stderr, flush=True)

    def upstream_connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.upstream.scheme == "https" else http.client.HTTPConnection
        return cls(self.upstream.hostname, self.upstream.port, timeout=self.upstream_timeout)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Python clients pool connections
    server: Proxy

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one JSON line per request instead (log_event)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        event: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                 "method": self.command, "path": self.path}
        try:
            body = self._read_body()
        except ValueError as exc:
            event.update(status=400, outcome="bad request", reason=str(exc))
            self._reply(400, {"message": f"cannot read the request body: {exc}"})
            self.close_connection = True
            self.server.log_event(event)
            return
        try:
            verified = verify(self.command, self.path, self.headers, body, self.server.expected)
        except Refused as refused:
            event.update(status=403, outcome="refused", reason=refused.code, message=refused.message)
            self._reply(403, refused.body())
            self.server.log_event(event)
            return
        if verified.notes:
            event["notes"] = list(verified.notes)
        try:
            status = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            event.update(status=502, outcome="upstream error", reason=f"{type(exc).__name__}: {exc}")
            self._reply(502, {"message": f"the upstream did not answer: {type(exc).__name__}: {exc}"})
            self.close_connection = True
            self.server.log_event(event)
            return
        event.update(status=status, outcome="forwarded")
        self.server.log_event(event)

    def _forward(self, body: bytes) -> int:
        conn = self.server.upstream_connection()
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return resp.status
        finally:
            conn.close()

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if "reason" in payload:
            self.send_header("x-amzn-ErrorType", str(payload["reason"]))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, required=True, help="0: a free port")
    parser.add_argument("--upstream", required=True, help="the OpenSearch node, e.g. http://127.0.0.1:9210")
    parser.add_argument("--region", required=True)
    parser.add_argument("--service", default="es")
    args = parser.parse_args(argv)
    key, secret = os.environ.get("SIGV4_ACCESS_KEY_ID"), os.environ.get("SIGV4_SECRET_ACCESS_KEY")
    if not key or not secret:
        parser.error("set SIGV4_ACCESS_KEY_ID and SIGV4_SECRET_ACCESS_KEY (the credentials requests must be "
                     "signed with)")
    expected = Expected(key, secret, args.region, args.service, os.environ.get("SIGV4_SESSION_TOKEN") or None)
    server = Proxy((args.listen_host, args.listen_port), expected, args.upstream)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port} (upstream {args.upstream}, region {args.region}, service "
          f"{args.service})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
