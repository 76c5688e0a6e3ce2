"""The refresh's guarantees: a message is rewritten when its source changed and only then; a change the
refresh had to leave to another run is looked at again; the watermark never passes what a run did not do."""

import uuid
from datetime import UTC, datetime

from es_export import pipeline, tracking
from es_export.config import RefreshParams
from scenarios import SEED, copies, day_params, export, refresh, rows, touch_history


def test_only_a_message_whose_source_changed_is_rewritten_and_only_once(es, conn, s3, cfg):
    day = SEED.start
    export(es, conn, s3, cfg, day)
    target = sorted(copies(s3, cfg, day))[0]
    before = datetime.now(UTC)  # the tier's indices are shared: only this test's change counts
    touch_history(es, cfg, target, "read")
    first = refresh(es, conn, s3, cfg, since=before)
    assert (first.taken, first.completed, first.found["rewritten"]) == (1, 1, 1)
    assert rows(conn, "SELECT job_id FROM message_tracking WHERE message_id = %s", target)[0][0] == first.job_id
    again = refresh(es, conn, s3, cfg)  # its overlap sees the same document: the object is current
    assert again.taken == 0 and again.found["unchanged"] >= 1


def test_a_change_left_to_another_run_is_looked_at_again_until_it_is_done(es, conn, s3, cfg):
    day = SEED.start
    export(es, conn, s3, cfg, day)
    target = sorted(copies(s3, cfg, day))[1]
    other = pipeline.open_job(conn, dag_id="es_message_export", run_id=f"rerun-{uuid.uuid4().hex[:6]}",
                              params=day_params(day, reprocess=True))
    pipeline.extract(es, conn, cfg, other)
    pipeline.plan(conn, cfg, other, day_params(day, reprocess=True))  # it now holds the day's messages
    before = datetime.now(UTC)
    touch_history(es, cfg, target, "while held")
    first = refresh(es, conn, s3, cfg, since=before)
    second = refresh(es, conn, s3, cfg, since=datetime.now(UTC))  # its window no longer holds the change
    assert first.found["left_to_others"] == 1 and second.found["left_to_others"] == 1 and second.taken == 0
    tracking.update_job(conn, other.job_id, status="failed")  # that run died before exporting it
    third = refresh(es, conn, s3, cfg, since=datetime.now(UTC))
    assert third.completed == 1 and copies(s3, cfg, day)[target] == 1


def test_a_refresh_that_stops_keeps_its_watermark_so_the_next_one_looks_again(es, conn, s3, cfg):
    day = SEED.start
    export(es, conn, s3, cfg, day)
    first = refresh(es, conn, s3, cfg, since=datetime.now(UTC))  # a watermark to keep
    targets = sorted(copies(s3, cfg, day))[2:4]
    for message_id in targets:
        touch_history(es, cfg, message_id, "late")
    stopped = refresh(es, conn, s3, cfg, stop_after_batches=1)
    assert stopped.unfinished == 1 and stopped.watermark == first.watermark
    job = pipeline.open_refresh_job(es, conn, cfg, dag_id="es_message_refresh", run_id="after-the-stop",
                                    params=RefreshParams())
    assert job.start < datetime.fromisoformat(stopped.window_end)  # it looks at the stopped run's window again
