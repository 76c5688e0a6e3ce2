"""What every tracking statement shares: naive UTC times, multi-row VALUES, transactions retried on lock errors,
and slices of an interval small enough for one short transaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol):
    """What tracking asks of a DB-API cursor (PyMySQL's, mysqlclient's), always used in a `with` block.

    A Protocol rather than a driver's class, so both drivers (and a test's fake) fit without a common base.
    """

    rowcount: int
    lastrowid: int  # read after an INSERT only
    description: Sequence[Sequence[Any]]  # read after a SELECT only: (name, type, ...) of each column

    def execute(self, query: str, args: Sequence[Any] | None = None) -> object: ...

    def fetchone(self) -> Any: ...  # a tuple, or None past the last row

    def fetchall(self) -> Sequence[tuple[Any, ...]]: ...

    def __enter__(self) -> Cursor: ...

    def __exit__(self, *exc: object) -> None: ...


class Connection(Protocol):
    """What the package asks of a DB-API connection with the `%s` paramstyle: mysqlclient's (Airflow) or
    PyMySQL's (Lambda). These four calls and nothing else, so any such driver fits."""

    def cursor(self) -> Cursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


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


def time_slices(conn: Connection, start: datetime, end: datetime, max_rows: int) -> Iterator[tuple[datetime, datetime]]:
    """[low, high) pieces of [start, end) that each hold at most `max_rows` message_tracking rows, in time order.

    Found by walking the message_ts index (`max_rows` index entries per piece, never the table), so
    a statement limited to one piece touches at most `max_rows` rows and uses that index whatever
    the table holds outside the interval. When more than `max_rows` rows share one timestamp, that
    timestamp is a piece of its own. Rows added meanwhile (an extract still running) may make a
    piece a little larger; each row lies in exactly one piece, whatever statements change in it.
    """
    low = utc_naive(start)
    end = utc_naive(end)
    while low < end:
        with conn.cursor() as cur:
            cur.execute("SELECT message_ts FROM message_tracking FORCE INDEX (ix_message_tracking_ts)"
                        " WHERE message_ts >= %s AND message_ts < %s ORDER BY message_ts LIMIT 1 OFFSET %s",
                        (low, end, max_rows))
            row = cur.fetchone()
            high = end if row is None else row[0]
            if high == low:  # more than `max_rows` rows at `low` itself
                cur.execute("SELECT MIN(message_ts) FROM message_tracking WHERE message_ts > %s AND message_ts < %s",
                            (low, end))
                high = cur.fetchone()[0] or end
        conn.commit()  # the next piece is found in a fresh snapshot
        yield low, high
        low = high


def rows(cur: Cursor) -> list[dict[str, Any]]:
    """The fetched rows as dicts by column name."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# Lock wait timeout and deadlock: the statement can simply be run again.
LOCK_ERRORS = {1205, 1213}


def in_transaction(conn: Connection, work: Callable[[Cursor], T], *, attempts: int = 6) -> T:
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
