"""JSON in and out of the package (search responses, exported documents, digests, files read back), with
msgspec: several times faster than the json module, and as exact.

- Integers of any size are kept exactly, as json keeps them (orjson refuses those beyond 64 bits).
- Text is written as UTF-8, compact, with each object's keys in the order the source gave them.
- A number beyond double range (1.5e400) is refused when read, where json would read `inf` and a
  document would then change: the message holding it fails with the reason, its batch goes on.
- Floats are written in their shortest exact form; only the exponent's spelling differs from json's
  (`1e16` and `1e-7` where json writes `1e+16` and `1e-07`), the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

DecodeError = msgspec.DecodeError  # a ValueError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class _Identified(msgspec.Struct):
    """What reading an exported document back needs: its id, every other field skipped unparsed."""

    message_id: str


_id_decoder = msgspec.json.Decoder(_Identified)


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON; TypeError for a value of no type msgspec writes, ValueError for a lone surrogate
    in a string. (It writes sets and bytes too, but documents read by `decode` hold only JSON's types.)"""
    return _encoder.encode(value)


def decode(data: bytes | str) -> Any:
    """The value of a JSON text; DecodeError (a ValueError) naming where it is malformed."""
    return _decoder.decode(data)


def message_ids(lines: Iterable[bytes]) -> list[str]:
    """The `message_id` of each exported document (one JSON object a line), without parsing the rest."""
    return [_id_decoder.decode(line).message_id for line in lines]
