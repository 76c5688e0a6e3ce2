"""`make mutation`: one-line mutations of the code that holds the exactly-once guarantees, each run against
the guarantees tier (tests/guarantees). A mutation the tier does not fail "survived": either a guarantee
no test holds, or an equivalent mutation, which the list names as such.

Not part of `make test` (about half a minute per mutation). A short script rather than mutmut or
cosmic-ray: both mutate whole modules at random, while this list names the lines that hold a guarantee
and says which guarantee each one is, and both need their own runner configuration for a tier that
talks to services. Needs the local stack (`make up`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "include" / "es_export"


@dataclass(frozen=True)
class Mutation:
    path: str  # under include/es_export
    old: str  # must occur exactly once in the file
    new: str
    what: str  # the guarantee it breaks
    equivalent: str = ""  # why no test can tell it apart, for an equivalent mutation


MUTATIONS = [
    # ---- fences and attempts (tracking/batches.py)
    Mutation("tracking/batches.py", "if int(row[0]) != token or row[1] != Status.RUNNING:",
             "if row[1] != Status.RUNNING:", "a stale attempt's token is refused"),
    Mutation("tracking/batches.py", "if int(row[0]) != token or row[1] != Status.RUNNING:",
             "if int(row[0]) != token:", "an attempt of a batch a person reopened is refused"),
    Mutation("tracking/batches.py", "        if row[1] == Status.COMPLETED:\n            return BatchAttempt(",
             "        if False:\n            return BatchAttempt(", "a batch delivered twice is exported once"),
    Mutation("tracking/batches.py", "if expect is not None and (expect.job_id, expect.batch_no) != (job_id, batch_no):",
             "if False:", "a forged payload cannot name another batch"),
    Mutation("tracking/batches.py", "(Status.RUNNING, lease_seconds, batch_id, Status.PENDING, Status.FAILED,",
             "(Status.RUNNING, lease_seconds, batch_id, Status.PENDING, Status.PENDING,",
             "a batch that failed on one receive is exported by the next"),
    Mutation("tracking/batches.py", '" status = IF(attempts >= %s,', '" status = IF(attempts > %s,',
             "a message is dead after max_attempts"),
    Mutation("tracking/batches.py", "LEAST(%s * POW(2, attempts - 1), %s)", "LEAST(%s * POW(2, attempts), %s)",
             "the backoff starts at base_seconds"),
    Mutation("tracking/batches.py", '"DELETE FROM object_uploads WHERE batch_id = %s AND attempt = %s",',
             '"SELECT %s, %s",', "a recorded file is no longer in flight"),
    Mutation("tracking/batches.py", '"UPDATE batch_progress SET status = %s, attempts = %s, receives = receives + 1,"',
             '"UPDATE batch_progress SET status = %s, attempts = %s, receives = receives,"',
             "a receive is counted (the SQS wait settles after max_receive)"),
    Mutation("tracking/batches.py", '"UPDATE batch_progress SET dispatched_at = UTC_TIMESTAMP(6), receives = 0,"',
             '"UPDATE batch_progress SET dispatched_at = UTC_TIMESTAMP(6),"',
             "a new queue message counts its receives from zero"),
    Mutation("model.py", "if self.status is Status.FAILED and self.receives >= max_receive:",
             "if self.status is Status.FAILED and self.receives + 2 >= max_receive:",
             "stalls are not receives"),
    # ---- claims (tracking/claims.py, tracking/jobs.py)
    Mutation("tracking/claims.py", '+ ", ".join(["%s"] * len(taken)) + ") AND NOT " + HELD_BY_LIVE_JOB + ")"',
             '+ ", ".join(["%s"] * len(taken)) + ") AND NOT (0 AND " + HELD_BY_LIVE_JOB + "))"',
             "a message another live run holds is not claimed twice"),
    Mutation("tracking/jobs.py", "LIVE_JOB = f\"j.status = '{Status.RUNNING}' AND",
             "LIVE_JOB = f\"j.status IN ('{Status.RUNNING}', 'failed') AND", "an ended run holds nothing"),
    Mutation("tracking/claims.py", "taken = [Status.PENDING, Status.FAILED, Status.COMPLETED] if reprocess",
             "taken = [Status.PENDING, Status.FAILED] if reprocess", "reprocess exports completed messages again"),
    Mutation("tracking/claims.py", '           " OR (status = %s AND lease_expires_at < UTC_TIMESTAMP(6))"',
             '           " OR (status = %s AND lease_expires_at > UTC_TIMESTAMP(6))"',
             "the retry takes the messages of a worker that died"),
    Mutation("tracking/claims.py", "        if old_ts == new_ts:", "        if True:",
             "a message whose timestamp moved is exported on its new day"),
    # ---- which documents are live (tracking/objects.py, pipeline/archive.py, sink.py)
    Mutation("tracking/objects.py", 'message_tracking WHERE status = %s AND s3_key IS NOT NULL',
             'message_tracking WHERE status <> %s AND s3_key IS NOT NULL',
             "only a completed message's older copies are superseded"),
    Mutation("tracking/objects.py", '" AND s3_key <> %s AND message_id IN ("', '" AND s3_key = %s AND message_id IN ("',
             "a live document is never removed"),
    Mutation("tracking/objects.py", "\" AND b.status = 'running')\")", "\")\")",
             "a failed attempt's file is an orphan"),
    Mutation("tracking/objects.py", "WHERE b.status = 'running' AND b.lease_expires_at < UTC_TIMESTAMP(6)",
             "WHERE b.status = 'running' AND b.lease_expires_at > UTC_TIMESTAMP(6)",
             "a file of a worker that died becomes an orphan once its lease ran out"),
    Mutation("pipeline/archive.py", "return set(ids) - tracking.object_references(conn, key, status=Status.COMPLETED)",
             "return set(ids)", "an orphan keeps the documents its attempt did record"),
    Mutation("pipeline/archive.py", '        if state == "writing":\n            return None, 0',
             '        if False:\n            return None, 0', "a file still being written is not touched"),
    Mutation("pipeline/archive.py", "        if state == \"orphan\":\n            def removable",
             "        if False:\n            def removable", "an orphan's unrecorded documents are removed"),
    Mutation("sink.py", "if message_id not in remove]", "if message_id in remove]",
             "only the removable documents are removed"),
    # ---- process (pipeline/process.py)
    Mutation("pipeline/process.py", "            tracking.note_uploads(conn, attempt, [u.key for u in uploads])",
             "            pass", "an uploaded file is known before it exists"),
    Mutation("pipeline/process.py", "    archive.sweep_orphans(conn, s3, cfg, batch_id=batch.batch_id)", "    pass",
             "a fenced-out attempt's file is swept by the batch's next attempt"),
    Mutation("pipeline/process.py",
             "    archive.prune(conn, s3, cfg, {m.s3_key for m in messages if m.s3_key} - {u.key for u in uploads})",
             "    pass", "a message's older copy is removed once it is exported again"),
    Mutation("pipeline/process.py", "                                   expect=batch)",
             "                                   expect=None)",
             "a payload is checked against its batch row"),
    # ---- reconcile (pipeline/reconcile.py, pipeline/archive.py)
    Mutation("pipeline/reconcile.py", "    if r.objects_missing:", "    if False:",
             "a missing object is named even when a stray one evens the count"),
    Mutation("pipeline/reconcile.py", "    if r.objects_stray:", "    if False:",
             "a stray object is named even when a missing one evens the count"),
    Mutation("pipeline/reconcile.py", "    if r.documents_missing:", "    if False:",
             "a document missing from its file is reported"),
    Mutation("pipeline/reconcile.py", "    if r.es_count != r.ids_found:", "    if False:",
             "a run whose source changed meanwhile is red"),
    Mutation("pipeline/reconcile.py",
             "report.status = Status.COMPLETED if not (report.problems or report.failed or report.dead)",
             "report.status = Status.COMPLETED if not (report.problems or report.dead)",
             "a run with a failed message is red"),
    Mutation("pipeline/archive.py", "        if matched < expected:", "        if False:",
             "reconcile names the missing objects"),
    Mutation("pipeline/archive.py", "        if key not in named and len(audit.stray_objects) < EXAMPLES:",
             "        if False:", "reconcile names the stray objects"),
    # ---- the payload (payload.py)
    Mutation("payload.py", "    if refused:\n", "    if False:\n", "a payload cannot carry settings"),
    Mutation("payload.py", "differ = [name for name, value in expect.items() if actual[name] != value]",
             "differ: list[str] = []", "a payload expecting other settings is refused"),
    # ---- what the cluster may do (search.py, source.py)
    Mutation("search.py", "    if failed or answer.get(\"timed_out\"):", "    if False:",
             "an answer missing a shard is refused, not exported short"),
    Mutation("search.py", "            allow_partial_search_results=False))",
             "            allow_partial_search_results=True))", "a point-in-time is never opened without a shard",
             equivalent="an Elasticsearch point-in-time opened without a shard answers with _shards.failed, which "
                        "check_complete refuses all the same; the flag only has the engine refuse it first"),
    Mutation("source.py", "    if copies:\n", "    if False:\n",
             "one id in two indices is refused, not tracked once and counted twice"),
    # ---- attempts (tracking/batches.py)
    Mutation("tracking/batches.py", '"UPDATE message_tracking SET status = %s, attempts = 0, failed_job_id = NULL,',
             '"UPDATE message_tracking SET status = %s, attempts = attempts + 1, failed_job_id = NULL,',
             "attempts count failures since the last export"),
    Mutation("tracking/batches.py", '"attempts = attempts + 1, failed_job_id = COALESCE(failed_job_id, job_id),"',
             '"attempts = attempts + 1, failed_job_id = job_id,"',
             "es_message_retry's job_id is the job that failed a message first"),
    # ---- the search range (source.py)
    Mutation("source.py", '"lt": end.isoformat()', '"lte": end.isoformat()', "the interval's end is exclusive"),
    Mutation("source.py", '"gte": start.isoformat()', '"gt": start.isoformat()', "the interval's start is inclusive"),
    Mutation("source.py", "        return keys, 1_000_000", "        return keys, 1",
             "a date_nanos timestamp is tracked at its real time"),
    # ---- the refresh (pipeline/refresh.py, tracking/refresh.py)
    Mutation("pipeline/refresh.py", "        elif source.version_of(details[r.message_id]) != r.source_version:",
             "        elif True:", "a message whose source did not change is not rewritten"),
    Mutation("pipeline/refresh.py", "    tracking.forget_rechecks(conn, [m for m in rechecked if m not in held])",
             "    tracking.forget_rechecks(conn, rechecked)",
             "a change left to another run is looked at again until it is done"),
    Mutation("pipeline/refresh.py", "    if found is not None and not unfinished:", "    if found is not None:",
             "the watermark never passes what a run did not export"),
    Mutation("pipeline/process.py", "{mid: source.version_of(d) for mid, d in details.items()})", "{})",
             "an exported message records the version of the source its object holds"),
    # ---- issue 25's cheaper tracking (tracking/batches.py, tracking/claims.py)
    Mutation("tracking/batches.py", "    if len({v for _, v in values}) == 1:", "    if values:",
             "each exported message records the object that holds it, not its batch's first"),
    Mutation("tracking/claims.py", "    return unbatched(conn, job)", "    return 0",
             "a run says how many messages it exports, also after a retried plan"),
    Mutation("tracking/claims.py", "hit.index, job.job_id, job.dag_id, job.run_id]",
             "hit.index, None, job.dag_id, job.run_id]", "an extracted message is held by its job",
             equivalent="a row tracked with no job id is held through its dag_id and run_id (HELD_BY_LIVE_JOB), "
                        "which name the same job: only the claim's extra write differs, which "
                        "tests/integration/test_pipeline.py counts"),
    # ---- issue 26's Parquet files (parquet.py, sink.py)
    Mutation("sink.py", "    kept = [message_id for message_id in ids if message_id not in remove]",
             "    kept = ids", "a superseded row is removed from its Parquet file"),
    Mutation("parquet.py", "    kept = table.filter(pa.compute.invert(removed))", "    kept = table",
             "a Parquet file rewritten without superseded rows holds none of them"),
    Mutation("sink.py", "        return parquet.message_ids(body)", "        return parquet.message_ids(body)[1:]",
             "reconcile reads every row of a Parquet file back"),
]


def run_tier(timeout: int) -> tuple[bool, float, str]:
    """(the guarantees tier passed, seconds, the end of its output)."""
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "guarantees",
                               "tests/guarantees"], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, "GUARANTEES_DB": "tracking_test_mutation"})
        passed, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        passed, output = False, "timed out"  # a mutation that hangs the tier is caught by it
    return passed, time.monotonic() - began, output[-3000:]


def apply(mutation: Mutation) -> tuple[Path, str]:
    path = CORE / mutation.path
    original = path.read_text()
    found = original.count(mutation.old)
    if found != 1:
        raise SystemExit(f"mutation of {mutation.path} ({mutation.what}): its line occurs {found} times, not once; "
                         "update tests/mutations.py")
    mutated = original.replace(mutation.old, mutation.new)
    compile(mutated, str(path), "exec")  # a mutation that does not compile would be 'killed' for nothing
    path.write_text(mutated)
    return path, original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="run these mutation numbers (1-based) only")
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args(argv)
    passed, seconds, output = run_tier(args.timeout)
    if not passed:
        print(output)
        print("the guarantees tier fails without any mutation: fix that first (make test-guarantees)")
        return 2
    print(f"guarantees tier unmutated: passed in {seconds:.0f} s; {len(MUTATIONS)} mutations")
    killed = survived = 0
    for number, mutation in enumerate(MUTATIONS, 1):
        if args.only and number not in args.only:
            continue
        path, original = apply(mutation)
        try:
            passed, seconds, _ = run_tier(args.timeout)
        finally:
            path.write_text(original)
        verdict = "survived" + (f" (equivalent: {mutation.equivalent})" if mutation.equivalent else "") if passed \
            else "killed"
        killed += not passed
        survived += passed
        print(f"{number:2d}. {verdict:8s} {seconds:5.0f} s  {mutation.path}: {mutation.what}", flush=True)
    print(f"killed {killed}, survived {survived}")
    return 0 if survived == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
