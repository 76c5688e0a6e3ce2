import socket
import subprocess
import sys
from datetime import date
from itertools import islice
from pathlib import Path

import pytest

import seed_data
from seed_data import SeedConfig, generate

pytestmark = pytest.mark.unit


def test_same_seed_same_documents():
    cfg = SeedConfig(messages=300, days=3, seed=7)
    assert list(generate(cfg)) == list(generate(cfg))


def test_other_seed_other_documents():
    a = [d.source for d in islice(generate(SeedConfig(messages=50, seed=1)), 20)]
    b = [d.source for d in islice(generate(SeedConfig(messages=50, seed=2)), 20)]
    assert a != b


def test_awkward_ids_are_present():
    ids = [d.doc_id for d in generate(SeedConfig(messages=1000)) if d.index == seed_data.MESSAGES_INDEX]
    assert len(ids) == len(set(ids)) == 1000
    assert any("/" in i for i in ids)
    assert any(" " in i for i in ids)
    assert any(".." in i for i in ids)
    assert any(not i.isascii() for i in ids)


def test_messages_are_spread_over_the_days_and_related_docs_point_back():
    cfg = SeedConfig(messages=300, days=3, start=date(2024, 10, 1))
    docs = list(generate(cfg))
    messages = {d.doc_id: d.source for d in docs if d.index == seed_data.MESSAGES_INDEX}
    days = {m["timestamp"][:10] for m in messages.values()}
    assert days == {"2024-10-01", "2024-10-02", "2024-10-03"}
    related = [d for d in docs if d.index != seed_data.MESSAGES_INDEX]
    assert related and all(d.source["message_id"] in messages for d in related)
    assert sum(1 for _ in seed_data.ids_for_day(cfg, date(2024, 10, 2))) == sum(
        1 for m in messages.values() if m["timestamp"].startswith("2024-10-02"))


def test_a_few_large_documents():
    sizes = [len(d.source["body"].encode()) for d in generate(SeedConfig(messages=1000, large=3))
             if d.index == seed_data.MESSAGES_INDEX]
    assert sum(1 for s in sizes if s >= 200_000) == 3


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="days must be >= 1, got 0"):
        SeedConfig(days=0)


def test_runs_as_a_script(tmp_path):
    # `python devstack/seed_data.py` (docker-compose.yaml) and `python -m seed_data` (make seed) run main()
    # when the module has been read to its end: a closed port must fail on connecting, not on a missing name.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = subprocess.run([sys.executable, str(Path(seed_data.__file__)), "--messages", "1",
                          "--es-url", f"http://127.0.0.1:{port}"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, check=False)
    assert run.returncode != 0
    assert "NameError" not in run.stderr
    assert "Connection refused" in run.stderr or "Failed to establish" in run.stderr, run.stderr[-2000:]
