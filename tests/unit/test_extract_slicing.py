"""How the extract cuts an interval into time slices, and which saved checkpoint belongs to which slice."""

from datetime import UTC, datetime, timedelta

import pytest

from es_export.config import ExportConfig, RunParams
from es_export.errors import ConfigError
from es_export.model import ExtractSlice, Job
from es_export.pipeline import slices_of

pytestmark = pytest.mark.unit

START = datetime(2025, 3, 2, tzinfo=UTC)


def job(end=START + timedelta(days=1), start=START):
    return Job(1, "d", "r", start, end)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 32])
def test_slices_cover_the_interval_without_gap_or_overlap(count):
    parts = slices_of(job(), count)
    assert [p.no for p in parts] == list(range(count))
    assert parts[0].start_ms == int(START.timestamp() * 1000)
    assert parts[-1].end_ms == int((START + timedelta(days=1)).timestamp() * 1000)
    assert all(a.end_ms == b.start_ms for a, b in zip(parts, parts[1:], strict=False))
    lengths = {p.end_ms - p.start_ms for p in parts}
    assert max(lengths) - min(lengths) <= 1


def test_three_slices_of_a_day_cut_at_8_and_16():
    cuts = [datetime.fromtimestamp(p.start_ms / 1000, tz=UTC).hour for p in slices_of(job(), 3)]
    assert cuts == [0, 8, 16]


def test_an_interval_too_short_for_the_slices_is_refused():
    with pytest.raises(ConfigError, match="extract_slices=3 cannot cut the interval 2025-03-02T00:00:00"):
        slices_of(job(end=START + timedelta(milliseconds=2)), 3)
    # ... and as a run param, before any work starts.
    with pytest.raises(ConfigError, match="extract_slices=3 cannot cut the range from start 2025-03-02T00:00:00"):
        RunParams(start=START, end=START + timedelta(milliseconds=2), extract_slices=3)


def test_a_checkpoint_belongs_only_to_the_slice_with_its_bounds():
    part = ExtractSlice(1, 3, 100, 200)
    assert part.matches(100, 200)
    assert not part.matches(100, 300)  # the same slice number of another cut
    assert not part.matches(None, None)  # saved before slicing: it covered the whole interval
    assert ExtractSlice(0, 1, 0, 300).matches(None, None)
    assert part.matches(100, 200, 150) and part.matches(100, 200, 100)
    assert not part.matches(100, 200, 250)  # a position older code wrote for the whole interval
    assert part.label() == "slice 2 of 3"


def test_the_run_param_overrides_the_configured_slice_count():
    cfg = ExportConfig(extract_slices=4)
    resolved = RunParams.resolve({}, START, START + timedelta(days=1), extract_slices=cfg.extract_slices)
    assert resolved.extract_slices == 4
    asked = RunParams.resolve({"extract_slices": 2}, START, START + timedelta(days=1), extract_slices=4)
    assert asked.extract_slices == 2
    assert RunParams.from_dict(resolved.as_dict()) == resolved


def test_a_spec_written_before_slicing_reads_as_one_slice():
    old = {"start": START.isoformat(), "end": (START + timedelta(days=1)).isoformat(), "dispatch": "local",
           "batch_size": 500, "reprocess": False}
    assert RunParams.from_dict(old).extract_slices == 1
