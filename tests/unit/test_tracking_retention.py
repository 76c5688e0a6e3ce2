"""Retention's checks that need no database: the argument guards and the switch in the config."""

import pytest

from es_export import pipeline, tracking
from es_export.config import ExportConfig
from es_export.errors import TrackingError

pytestmark = pytest.mark.unit


class NoDatabase:
    """A connection that must not be used."""

    def cursor(self):
        raise AssertionError("the database was used")


@pytest.mark.parametrize("days", [pytest.param(None, id="null"), pytest.param(0, id="zero")])
def test_retention_off_touches_nothing(days):
    assert pipeline.purge_tracking(NoDatabase(), ExportConfig(tracking_retention_days=days)) == 0


@pytest.mark.parametrize(("days", "chunk_rows", "message"), [
    pytest.param(0, 10, "older_than_days must be a positive number of days, got 0", id="zero-days"),
    pytest.param(True, 10, "older_than_days must be a positive number of days, got True", id="bool-days"),
    pytest.param(30, 0, "chunk_rows must be at least 1, got 0", id="zero-chunk"),
])
def test_purge_refuses_bad_arguments_before_touching_the_database(days, chunk_rows, message):
    with pytest.raises(TrackingError, match=message):
        tracking.purge_completed(NoDatabase(), days, chunk_rows)
