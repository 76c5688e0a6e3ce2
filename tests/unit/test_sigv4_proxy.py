"""devstack/sigv4_proxy.py: its signature check against requests signed by botocore and by
opensearch-py's signer, and its forwarding (in process, to a stub upstream)."""

import http.client
import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import sigv4_proxy
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sigv4_proxy import Expected, Refused, verify

pytestmark = pytest.mark.unit

KEY = "AKIAIOSFODNN7PROXY01"
SECRET = secrets.token_urlsafe(30)
EXPECTED = Expected(KEY, SECRET, "eu-west-1", "es")
HOST = "search-test.eu-west-1.es.amazonaws.com"


def signed(method="POST", target="/messages/_search?size=10", body=b'{"query":{"match_all":{}}}', *,
           secret=SECRET, region="eu-west-1", service="es", token=None, headers=None):
    """(target, headers, body) of a request signed by botocore's SigV4Auth, as a client sends it."""
    request = AWSRequest(method=method, url=f"https://{HOST}{target}", data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    auth = SigV4Auth(Credentials(KEY, secret, token), service, region)
    request.headers["X-Amz-Content-SHA256"] = auth.payload(request)
    auth.add_auth(request)
    return target, {"Host": HOST, **dict(request.headers.items())}, body


def opensearch_py_signed(method, url, body):
    """What opensearch-py's Urllib3AWSV4SignerAuth adds, with the Host header urllib3 sends."""
    from opensearchpy import Urllib3AWSV4SignerAuth

    headers = Urllib3AWSV4SignerAuth(Credentials(KEY, SECRET), "eu-west-1", "es")(method, url, body)
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else ""), {"Host": parts.netloc, **headers}


def test_a_request_signed_by_botocore_verifies():
    target, headers, body = signed()
    result = verify("POST", target, headers, body, EXPECTED)
    assert result.access_key == KEY
    assert result.signed_headers == ("content-type", "host", "x-amz-content-sha256", "x-amz-date")


@pytest.mark.parametrize("method,target,body", [
    ("GET", "/", b""),
    ("HEAD", "/messages", b""),
    ("DELETE", "/_search/point_in_time", b'{"pit_id":["abc=="]}'),
    ("PUT", "/a%20b/_doc/x%2Fy", "{\"t\":\"\u00e9\"}".encode()),
    ("GET", "/messages-*,history/_search?ignore_unavailable=true&allow_no_indices=false", b""),
    ("GET", "/_cat/indices?v", b""),
])
def test_requests_signed_by_botocore_verify_whatever_the_method_path_and_body(method, target, body):
    target, headers, body = signed(method, target, body)
    verify(method, target, headers, body, EXPECTED)


def test_a_session_token_is_signed_and_checked():
    target, headers, body = signed(token="FwoGZXIvYXdzEXAMPLE")
    verify("POST", target, headers, body, EXPECTED)
    with_token = Expected(KEY, SECRET, "eu-west-1", "es", session_token="FwoGZXIvYXdzEXAMPLE")
    verify("POST", target, headers, body, with_token)
    with pytest.raises(Refused, match="security token is not valid"):
        verify("POST", *signed(token="another"), with_token)
    with pytest.raises(Refused, match="needs a signed X-Amz-Security-Token"):
        verify("POST", *signed(), with_token)


@pytest.mark.parametrize("tamper,reason", [
    (lambda t, h, b: (t, h, b + b" "), "X-Amz-Content-SHA256 declares a SHA-256 that is not the body's"),
    (lambda t, h, b: (t.replace("/messages/", "/history/"), h, b), "signature we calculated does not match"),
    (lambda t, h, b: (t.replace("size=10", "size=11"), h, b), "signature we calculated does not match"),
    (lambda t, h, b: (t + "&from=5", h, b), "signature we calculated does not match"),
    (lambda t, h, b: (t, {**h, "Content-Type": "text/plain"}, b), "signature we calculated does not match"),
    (lambda t, h, b: (t, {**h, "Host": "evil.example.com"}, b), "signature we calculated does not match"),
    (lambda t, h, b: (t, {k: v for k, v in h.items() if k != "Content-Type"}, b),
     "signed header 'content-type' is not in the request"),
    (lambda t, h, b: (t, {k: v for k, v in h.items() if k != "Authorization"}, b), "no Authorization header"),
    (lambda t, h, b: (t, {**h, "Authorization": "Basic dXNlcjpwYXNz"}, b), "is not AWS4-HMAC-SHA256"),
    (lambda t, h, b: (t, {**h, "Authorization": h["Authorization"].replace(KEY, "AKIAOTHERKEY00000000")}, b),
     "access key id .* is not known"),
])
def test_a_tampered_request_fails(tamper, reason):
    target, headers, body = tamper(*signed())
    with pytest.raises(Refused, match=reason):
        verify("POST", target, headers, body, EXPECTED)


def test_the_body_hash_counts_even_when_the_client_does_not_sign_the_header():
    request = AWSRequest(method="POST", url=f"https://{HOST}/m/_search", data=b'{"size":1}')
    SigV4Auth(Credentials(KEY, SECRET), "es", "eu-west-1").add_auth(request)
    headers = {"Host": HOST, **dict(request.headers.items())}
    verify("POST", "/m/_search", headers, b'{"size":1}', EXPECTED)
    with pytest.raises(Refused, match="does not match"):
        verify("POST", "/m/_search", headers, b'{"size":2}', EXPECTED)


def test_a_wrong_secret_fails_with_the_canonical_request_but_no_secret():
    target, headers, body = signed(secret="not-the-secret")
    with pytest.raises(Refused) as info:
        verify("POST", target, headers, body, EXPECTED)
    answer = json.dumps(info.value.body())
    assert info.value.code == "SignatureDoesNotMatch" and "POST\\n/messages/_search\\nsize=10\\n" in answer
    assert SECRET not in answer and "not-the-secret" not in answer


def test_another_region_or_service_is_refused():
    with pytest.raises(Refused, match="scope is for region 'us-east-1'; this endpoint is in 'eu-west-1'"):
        verify("POST", *signed(region="us-east-1"), EXPECTED)
    with pytest.raises(Refused, match="scope is for service 'aoss'"):
        verify("POST", *signed(service="aoss"), EXPECTED)


def test_a_request_older_than_five_minutes_is_refused():
    target, headers, body = signed()
    signed_at = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    verify("POST", target, headers, body, EXPECTED, now=signed_at + timedelta(minutes=4, seconds=59))
    with pytest.raises(Refused, match="more than 5 minutes before"):
        verify("POST", target, headers, body, EXPECTED, now=signed_at + timedelta(minutes=5, seconds=1))
    with pytest.raises(Refused, match="more than 5 minutes after"):
        verify("POST", target, headers, body, EXPECTED, now=signed_at - timedelta(minutes=6))


@pytest.mark.parametrize("method,path,params,body", [
    ("GET", "/", None, None),
    ("HEAD", "/messages", None, None),
    ("POST", "/messages/_search/point_in_time", {"keep_alive": "5m"}, None),
    ("POST", "/messages,message_history/_count", None, b'{"query":{"range":{"timestamp":{"gte":"now-1d"}}}}'),
    ("GET", "/messages/_mapping/field/timestamp", None, None),
    ("DELETE", "/_search/point_in_time", None, b'{"pit_id":["o463QQEKbWVzc2FnZXM=="]}'),
    ("GET", "/_cat/indices", {"v": "", "h": "index,health", "format": "json"}, None),
])
def test_what_opensearch_py_signs_verifies(method, path, params, body):
    from urllib.parse import urlencode

    target = path + (f"?{urlencode(params)}" if params else "")
    target, headers = opensearch_py_signed(method, f"https://{HOST}:443{target}", body)
    headers["Host"] = HOST  # urllib3 leaves out the default port
    assert verify(method, target, headers, body or b"", EXPECTED).notes == ()


def test_a_plus_for_a_space_in_the_query_is_verified_as_sent_and_noted():
    """urlencode (quote_plus) writes a space as '+'; the SigV4 specification's form is %20."""
    target, headers = opensearch_py_signed("GET", f"https://{HOST}/m/_search?q=a+b", None)
    headers["Host"] = HOST
    (note,) = verify("GET", target, headers, b"", EXPECTED).notes
    assert "'q=a%2Bb'" in note


# ---------------------------------------------------------------------------- the proxy, in process


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def _any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.command, self.path, dict(self.headers.items()), body))
        data = json.dumps({"method": self.command, "path": self.path, "length": len(body)}).encode()
        self.send_response(201 if self.command == "PUT" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    def log_message(self, *args):
        pass


@pytest.fixture()
def proxy():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    Upstream.seen = []
    server = sigv4_proxy.Proxy(("127.0.0.1", 0), EXPECTED, f"http://127.0.0.1:{upstream.server_port}")
    server.log_event = lambda event: None
    for s in (upstream, server):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield server
    for s in (server, upstream):
        s.shutdown()
        s.server_close()


def send(server, method, target, body, *, chunked=False, secret=SECRET):
    target, headers, body = signed(method, target, body, secret=secret)
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    headers = {k: v for k, v in headers.items() if k != "Host"}
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", HOST)
    for k, v in headers.items():
        conn.putheader(k, v)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 7):
            part = body[i:i + 7]
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.send(b"0\r\n\r\n")
    else:
        if body or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("chunked", [False, True])
def test_the_proxy_forwards_a_signed_request_and_relays_the_answer(proxy, method, chunked):
    body = b"" if method in ("GET", "HEAD") else b'{"query":{"term":{"message_id":"a b/\xc3\xa9"}}}'
    status, headers, data = send(proxy, method, "/messages/_search?size=2&q=x%20y", body,
                                 chunked=chunked and bool(body))
    assert status == (201 if method == "PUT" else 200) and headers["X-Upstream"] == "yes"
    ((seen_method, seen_path, seen_headers, seen_body),) = Upstream.seen
    assert (seen_method, seen_path, seen_body) == (method, "/messages/_search?size=2&q=x%20y", body)
    assert "Authorization" not in seen_headers and seen_headers["Host"].startswith("127.0.0.1:")
    assert seen_headers["X-Amz-Date"]
    if method == "HEAD":
        assert data == b""
    else:
        assert json.loads(data)["length"] == len(body)


def test_the_proxy_refuses_a_bad_signature_with_403_and_a_reason(proxy):
    status, headers, data = send(proxy, "POST", "/messages/_search", b"{}", secret="wrong")
    assert status == 403 and headers["x-amzn-ErrorType"] == "SignatureDoesNotMatch"
    assert "does not match" in json.loads(data)["message"]
    assert Upstream.seen == []
