"""AWS SigV4 (Amazon OpenSearch Service's IAM authentication), for real: a real OpenSearch 2 node
behind devstack/sigv4_proxy.py, which recomputes every request's signature with botocore and
refuses (403) what does not match, as the service does.

The export's own code signs (search.connect with aws_region: opensearch-py's
Urllib3AWSV4SignerAuth), the core pipeline exports a seeded day through the proxy, and a wrong
secret or another region is refused, by the proxy, before anything reaches the node.
"""

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import urllib3
from botocore.credentials import Credentials

import seed_data
import support
from es_export import pipeline, search, sink
from es_export.config import ExportConfig, RunParams
from es_export.errors import SourceError
from seed_data import SeedConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
ACCESS_KEY = "AKIAIOSFODNN7SIGV4T1"
SEED = SeedConfig(messages=80, days=2, start=date(2025, 7, 1), seed=97, large=0)
DAY = SEED.start
DB = "tracking_test_sigv4"


class RunningProxy:
    """devstack/sigv4_proxy.py in a subprocess; its JSON request log read back by the test."""

    def __init__(self, upstream: str, secret: str, session_token: str | None = None) -> None:
        self.upstream, self.secret = upstream, secret
        tag = uuid.uuid4().hex[:8]
        logs = ROOT / ".local" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log, self.out = logs / f"sigv4-proxy-{tag}.log", logs / f"sigv4-proxy-{tag}.out"
        env = {**os.environ, "SIGV4_ACCESS_KEY_ID": ACCESS_KEY, "SIGV4_SECRET_ACCESS_KEY": secret}
        if session_token:
            env["SIGV4_SESSION_TOKEN"] = session_token
        with open(self.log, "wb") as err, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "devstack" / "sigv4_proxy.py"), "--listen-port", "0", "--upstream",
                 upstream, "--region", REGION, "--service", "es"], env=env, stdout=out, stderr=err)
        self.url = self._wait_listening()

    def _wait_listening(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first = self.out.read_text().split(" ", 3)
            if len(first) >= 3 and first[:2] == ["listening", "on"]:
                return first[2]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the SigV4 proxy did not start:\n{self.out.read_text()}\n{self.log.read_text()[-3000:]}")

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def opensearch2_url() -> str:
    """The OpenSearch 2 node of devstack/engines.sh: the running one, or started (and left running)."""
    out = subprocess.run(["bash", str(ROOT / "devstack" / "engines.sh"), "up", "opensearch2"], capture_output=True,
                         text=True, check=False, env=os.environ.copy())
    if out.returncode != 0 or not out.stdout.strip():
        pytest.fail(f"engines.sh up opensearch2 failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def proxy():
    upstream = opensearch2_url()
    running = RunningProxy(upstream, secrets.token_urlsafe(30))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def indices(proxy):
    """The seed data in indices of this module's own on the node, loaded directly (not through the proxy)."""
    suffix = uuid.uuid4().hex[:8]
    names = {default: f"sigv4-{default}-{suffix}" for default in support.INDEX_KEYS.values()}
    seed_data.load_over_http(proxy.upstream, SEED, index_names=names)
    yield {key: names[default] for key, default in support.INDEX_KEYS.items()}
    with contextlib.suppress(Exception):
        urllib3.PoolManager().request("DELETE", f"{proxy.upstream}/{','.join(names.values())}")


def credentials(secret: str) -> Credentials:
    return Credentials(ACCESS_KEY, secret)


def new_events(proxy: RunningProxy, before: int) -> list[dict]:
    """What the proxy logged since `before`. It may log a request just after answering it, so wait
    (up to 5 s) for the first new line, then a moment for any last ones."""
    deadline = time.monotonic() + 5
    while len(proxy.events()) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return proxy.events()[before:]


def test_an_export_through_sigv4_runs_end_to_end(proxy, indices, s3):
    before = len(proxy.events())
    client = search.connect(search.SearchSettings(url=proxy.url, aws_region=REGION),
                            aws_credentials=credentials(proxy.secret))
    assert isinstance(client, search.OpenSearchClient)
    assert (client.engine.product, client.engine.major) == ("opensearch", 2)

    cfg = ExportConfig(**indices, bucket=f"sigv4-{uuid.uuid4().hex[:8]}", prefix="sigv4", scan_page_size=25)
    s3.create_bucket(Bucket=cfg.bucket)
    conn = support.new_tracking_database(DB)
    try:
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
        params = RunParams(start=start, end=start + timedelta(days=1), batch_size=30)
        job = pipeline.open_job(conn, dag_id="es_message_export", run_id=f"sigv4-{uuid.uuid4().hex[:8]}",
                                params=params)
        pipeline.extract(client, conn, cfg, job)
        batches = pipeline.plan(conn, cfg, job, params)
        assert len(batches) > 1
        for batch in batches:
            pipeline.process_batch(client, conn, s3, cfg, batch, run_id=job.run_id)
        report = pipeline.reconcile(client, conn, s3, cfg, job)
    finally:
        conn.close()

    ids = sorted(seed_data.ids_for_day(SEED, DAY))
    assert report.status == "completed", report
    assert report.es_count == report.completed == len(ids)
    keys = list(sink.data_keys(s3, cfg.bucket, sink.day_prefix(cfg.prefix, DAY)))
    assert len(keys) == len(ids)  # one object per message
    assert sorted(i for key in keys for i in sink.document_ids(s3, cfg.bucket, key)) == ids

    # Every request went through the proxy signed and verified: none refused, none an upstream error.
    events = new_events(proxy, before)
    assert {e["outcome"] for e in events} == {"forwarded"}, [e for e in events if e["outcome"] != "forwarded"]
    seen = {(e["method"], e["path"].split("?")[0].rsplit("/", 1)[-1]) for e in events}
    for call in [("GET", ""), ("POST", "point_in_time"), ("POST", "_search"), ("DELETE", "point_in_time"),
                 ("POST", "_msearch")]:
        assert call in seen, f"{call} not among {sorted(seen)}"
    # botocore's canonical query (what the proxy checked) was also the SigV4 specification's.
    assert [e for e in events if e.get("notes")] == []


def test_a_wrong_secret_is_refused_by_the_proxy(proxy):
    before = len(proxy.events())
    with pytest.raises(SourceError, match=r"refused the credentials \(HTTP 403\)"):
        search.connect(search.SearchSettings(url=proxy.url, aws_region=REGION),
                       aws_credentials=credentials(secrets.token_urlsafe(30)))
    (event,) = new_events(proxy, before)
    assert (event["method"], event["path"], event["status"], event["outcome"], event["reason"]) == (
        "GET", "/", 403, "refused", "SignatureDoesNotMatch")
    assert proxy.secret not in proxy.log.read_text()


def test_a_request_signed_for_another_region_is_refused(proxy):
    before = len(proxy.events())
    with pytest.raises(SourceError, match=r"refused the credentials \(HTTP 403\)"):
        search.connect(search.SearchSettings(url=proxy.url, aws_region="us-east-1"),
                       aws_credentials=credentials(proxy.secret))
    (event,) = new_events(proxy, before)
    assert (event["status"], event["outcome"]) == (403, "refused")
    assert "region 'us-east-1'" in event["message"] and "'eu-west-1'" in event["message"]


def test_an_unsigned_request_never_reaches_the_node(proxy):
    resp = urllib3.PoolManager().request("GET", f"{proxy.url}/_cat/indices")
    assert resp.status == 403
    assert "no Authorization header" in json.loads(resp.data)["message"]


def test_temporary_credentials_sign_their_session_token(proxy, indices):
    """A Lambda execution role or MWAA gives temporary credentials: the token must be sent and signed."""
    token = secrets.token_urlsafe(60)
    with_token = RunningProxy(proxy.upstream, proxy.secret, session_token=token)
    try:
        settings = search.SearchSettings(url=with_token.url, aws_region=REGION)
        client = search.connect(settings, aws_credentials=Credentials(ACCESS_KEY, proxy.secret, token))
        assert client.exists(indices["messages_index"])
        assert client.count(indices["messages_index"], {"match_all": {}}) > 0
        with pytest.raises(SourceError, match=r"refused the credentials \(HTTP 403\)"):
            search.connect(settings, aws_credentials=Credentials(ACCESS_KEY, proxy.secret))
        deadline = time.monotonic() + 10  # the proxy logs a request after it answered it
        while len(with_token.events()) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        outcomes = [(e["method"], e["outcome"], e.get("reason")) for e in with_token.events()]
        assert outcomes == [("GET", "forwarded", None), ("HEAD", "forwarded", None), ("POST", "forwarded", None),
                            ("GET", "refused", "InvalidClientTokenId")]
        assert token not in with_token.log.read_text()
    finally:
        with_token.stop()
