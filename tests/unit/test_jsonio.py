"""jsonio (msgspec) reads and writes documents exactly: every value of a tricky document survives a round
trip, a compact text comes back byte for byte, and what would change a value is refused."""

import json
import re

import pytest

from es_export import jsonio

pytestmark = pytest.mark.unit

# As Elasticsearch returns a _source: the text it was given, compact here.
TRICKY = (
    '{"message_id":"id with spaces  ","n":[0,-1,9223372036854775807,9223372036854775808,'
    '-123456789012345678901234567890,123456789012345678901234567890123456789],'
    '"f":[0.1,-0.0,1.5,2.5e-308,5e-324,1.7976931348623157e308,12345678.9,100.0,1e16,1e-7,0.30000000000000004],'
    '"s":["Grüße 🚀","漢字","\\u0000\\u001f","quote \\" backslash \\\\ slash /","line\\nbreak\\ttab",'
    '"\\u2028\\u2029","😀 as pair: \\ud83d\\ude00",""],'
    '"nested":[[[],[{}],[[1,[2,[3,{"deep":[null,true,false]}]]]]]],'
    '"same key order":{"z":1,"a":2,"m":{"y":[],"b":{}}},"empty":{},"null":null}'
)


def test_every_value_of_a_tricky_document_survives_a_round_trip():
    value = jsonio.decode(TRICKY)
    assert value == json.loads(TRICKY)  # what the json module reads, value for value
    assert type(value["n"][5]) is int and value["n"][5] == 123456789012345678901234567890123456789
    assert str(value["f"][1]) == "-0.0"
    assert list(value["same key order"]) == ["z", "a", "m"]
    again = jsonio.decode(jsonio.encode(value))
    assert again == value and json.dumps(again) == json.dumps(value)  # same keys in the same order, same types
    assert [type(v) for v in again["f"]] == [float] * len(value["f"])


def test_a_compact_text_comes_back_byte_for_byte():
    # json writes exponents as 1e+16 and 1e-07, msgspec as 1e16 and 1e-7: written that way, bytes are equal.
    compact = TRICKY.replace("\\ud83d\\ude00", "😀").replace("\\u2028\\u2029", "\u2028\u2029")
    assert jsonio.encode(jsonio.decode(compact)) == compact.encode()


def test_the_digest_text_is_json_modules_apart_from_the_exponent_spelling():
    value = jsonio.decode(TRICKY)
    ours = jsonio.encode(value)
    theirs = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert ours == re.sub(rb"e\+?(-?)0*(\d)", rb"e\1\2", theirs)  # json: 1e+16, 1e-07; msgspec: 1e16, 1e-7


@pytest.mark.parametrize("text", ['{"x":1.5e400}', '{"x":-1e309}', '{"x":NaN}', '{"x":Infinity}'])
def test_a_number_json_would_change_is_refused(text):
    with pytest.raises(jsonio.DecodeError):
        jsonio.decode(text)
    assert isinstance(jsonio.DecodeError("x"), ValueError)  # so a message holding it fails with the reason


def test_message_ids_reads_only_the_id():
    lines = [b'{"message_id":"a ","message":{"x":[1,2]},"export":{}}', b'{"message":null,"message_id":"b/c"}']
    assert jsonio.message_ids(lines) == ["a ", "b/c"]
    with pytest.raises(jsonio.DecodeError):
        jsonio.message_ids([b'{"message":{}}'])  # a document without its id is no document of ours
