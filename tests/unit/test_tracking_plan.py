import pytest

from es_export.tracking import effective_batch_size
from es_export.tracking._sql import values_sql

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("total", "batch_size", "max_batches", "expected"),
    [
        pytest.param(0, 500, 100, 500, id="empty"),
        pytest.param(1000, 500, 100, 500, id="fits"),
        pytest.param(100_000, 50, 1024, 98, id="raised-to-fit"),
        pytest.param(1_000_001, 500, 1000, 1001, id="rounds-up"),
    ],
)
def test_batch_size_is_raised_only_as_far_as_needed(total, batch_size, max_batches, expected):
    size = effective_batch_size(total, batch_size, max_batches)
    assert size == expected
    assert -(-total // size) <= max_batches


def test_multi_row_values():
    assert values_sql(2, 3) == "(%s, %s, %s), (%s, %s, %s)"
