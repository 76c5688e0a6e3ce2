"""What every tracking statement shares: naive UTC times, multi-row VALUES, transactions retried on lock errors."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")


def utc_naive(value: datetime) -> datetime:
    """As stored in DATETIME(6) columns: UTC without a zone."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most `size` items, streamed."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def values_sql(rows: int, width: int) -> str:
    one = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([one] * rows)


def rows(cur: Any) -> list[dict[str, Any]]:
    """The fetched rows as dicts by column name."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# Lock wait timeout and deadlock: the statement can simply be run again.
LOCK_ERRORS = {1205, 1213}


def in_transaction(conn: Any, work: Any, *, attempts: int = 6) -> Any:
    """Run `work(cursor)` in a transaction and commit, again from the start on a deadlock or lock timeout."""
    for attempt in range(attempts):
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
            return result
        except Exception as exc:
            code = exc.args[0] if exc.args else None
            if code not in LOCK_ERRORS or attempt == attempts - 1:
                raise
            conn.rollback()
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
    raise AssertionError("unreachable")
