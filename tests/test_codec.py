"""The wire codecs: the original client's EDN frames, server EDN, JSON, negotiation and bad input."""

from __future__ import annotations

import logging
import math
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import edn_format
import pytest

from chat_ws.codec import (
    EDN,
    JSON,
    JSON_SUBPROTOCOL,
    EdnCodec,
    Keyword,
    _decode_with_edn_format,
    edn_codec,
    format_inst,
    negotiate,
)
from chat_ws.exceptions import InvalidMessage, MalformedMessage

CID = "5f0c0000-aaaa-bbbb-cccc-000000000000"
NESTING = 32  # the default MAX_NESTING
INST_RE = re.compile(r':timestamp #inst "\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}-00:00"')


def decode_both(text: str, max_nesting: int = NESTING) -> dict[str, Any]:
    """Decode with the codec and with the edn_format path; both must give the same message."""
    fast = EDN.decode(text, max_nesting=max_nesting)
    slow = _decode_with_edn_format(text, max_nesting)
    assert fast == slow
    assert typed(fast) == typed(slow)
    return fast


def typed(value: Any) -> Any:
    """A comparable form of a message that also tells Keyword from str and int from bool."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, frozenset):
        return frozenset((type(v).__name__, v) for v in value)
    return (type(value).__name__, value)


# ------------------------------------------------------------------------- client frames (EDN)

CLIENT_FRAMES = [
    (
        f'{{:dispatch-key :ping, :ping-id 12, :client-id "{CID}"}}',
        {"dispatch-key": "ping", "ping-id": 12, "client-id": CID},
    ),
    (
        f'{{:dispatch-key :start-conversation, :client-id "{CID}"}}',
        {"dispatch-key": "start-conversation", "client-id": CID},
    ),
    (
        f'{{:dispatch-key :domain-expert-says, :msg-text "Bicycles.", :promise-keys #{{:promise-4711}}, '
        f':client-id "{CID}"}}',
        {
            "dispatch-key": "domain-expert-says",
            "msg-text": "Bicycles.",
            "promise-keys": frozenset({"promise-4711"}),
            "client-id": CID,
        },
    ),
    (
        f'{{:dispatch-key :alive-confirm, :client-id "{CID}"}}',
        {"dispatch-key": "alive-confirm", "client-id": CID},
    ),
    (
        f'{{:dispatch-key :close-channel, :client-id "{CID}"}}',
        {"dispatch-key": "close-channel", "client-id": CID},
    ),
    (
        '{:dispatch-key :ping, :ping-id 3, :client-id "5f0c…"}',
        {"dispatch-key": "ping", "ping-id": 3, "client-id": "5f0c…"},
    ),
]


@pytest.mark.parametrize(("text", "expected"), CLIENT_FRAMES)
def test_original_client_frames_decode_to_internal_maps(text: str, expected: dict[str, Any]) -> None:
    message = decode_both(text)
    assert message == expected
    assert all(type(k) is str for k in message)
    assert type(message["dispatch-key"]) is Keyword
    assert type(message["client-id"]) is str


def test_promise_keys_are_a_set_of_keywords() -> None:
    message = decode_both(CLIENT_FRAMES[2][0])
    keys = message["promise-keys"]
    assert type(keys) is frozenset
    assert [type(k) for k in keys] == [Keyword]
    assert message["msg-text"] == "Bicycles." and type(message["msg-text"]) is str


def test_server_frames_decode_too() -> None:
    message = decode_both('{:dispatch-key :ping-confirm, :timestamp #inst "2026-11-27T10:00:00.000-00:00"}')
    assert message["timestamp"] == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    assert message["timestamp"].tzinfo is not None
    message = decode_both(
        '{:dispatch-key :iviewr-says, :text "What products do you make?", :p-key :promise-4711, '
        ':timestamp #inst "2026-11-27T10:00:00.123+02:00", :id #uuid "5F0C0000-AAAA-BBBB-CCCC-000000000000"}'
    )
    assert message["p-key"] == "promise-4711" and type(message["p-key"]) is Keyword
    assert message["timestamp"] == datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=timezone.utc)
    assert message["id"] == CID and type(message["id"]) is str


def test_edn_data_types() -> None:
    message = decode_both(
        '{:a [1 -2 +3 0 1.5 -2.5e3 1E2 nil true false] :b (1 "two") :c #{1 :x "y"} :d {:e {:f []}}'
        ' "string key" 1, 7 :int-key, :ns/name :ns/value ; comment\n :s "\\"\\\\\\n\\t\\r\\b\\f\\u00e9\\ud83d\\ude00"}'
    )
    assert message == {
        "a": [1, -2, 3, 0, 1.5, -2500.0, 100.0, None, True, False],
        "b": [1, "two"],
        "c": frozenset({1, "x", "y"}),
        "d": {"e": {"f": []}},
        "string key": 1,
        7: "int-key",
        "ns/name": "ns/value",
        "s": '"\\\n\t\r\b\fé😀',
    }
    assert type(message["a"][8]) is bool


def test_frames_outside_the_fast_subset_decode_as_before() -> None:
    assert EDN.decode("{:a foo, :b \\c, :c 1.5M, :d 2N #_ :discarded}", max_nesting=NESTING) == {
        "a": "foo",
        "b": "c",
        "c": 1.5,
        "d": 2,
    }
    assert EDN.decode('{:a "\\x41\\101"}', max_nesting=NESTING) == {"a": "AA"}


def test_a_bad_value_replaced_by_a_repeated_key_is_accepted_as_before() -> None:
    # edn_format keeps only the last value of a repeated key; the values it drops were never checked.
    assert decode_both("{:a #{[1]} :a 1}") == {"a": 1}
    assert decode_both("{1 :a true :b}") == {1: "b"}


def test_nesting_counts_levels_of_values() -> None:
    # A value inside N containers is at level N + 1, on both paths.
    assert decode_both("{:a []}", max_nesting=2) == {"a": []}
    assert decode_both("{:a [1]}", max_nesting=3) == {"a": [1]}
    for text in ("{:a [1]}", "{:a [[]]}", "{:a 1 :b #{:x}}"):
        with pytest.raises(MalformedMessage) as fast:
            EDN.decode(text, max_nesting=2)
        with pytest.raises(MalformedMessage) as slow:
            _decode_with_edn_format(text, 2)
        assert fast.value.reason == slow.value.reason == "too-deep", text


def test_fallback_emits_no_edn_format_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edn_format"):
        assert EDN.decode("{:dispatch-key :ping :x foo}", max_nesting=NESTING)["x"] == "foo"
        assert _decode_with_edn_format("{:dispatch-key :ping}", NESTING) == {"dispatch-key": "ping"}
    assert [r for r in caplog.records if r.name.startswith("edn_format")] == []


# ------------------------------------------------------------------------- server frames (EDN)

SERVER_MESSAGES = [
    {"dispatch-key": "ping-confirm", "ping-id": 12},
    {"dispatch-key": "iviewr-says", "text": "What products do you make?", "p-key": "promise-4711"},
    {"dispatch-key": "clear-promise-keys", "promise-keys": ["promise-4711", "promise-4712"]},
    {"dispatch-key": "alive?"},
    {"dispatch-key": "load-table", "table": {"rows": [[1, "a"], [2.5, None]], "ok": True}},
    {"dispatch-key": "error", "error": "malformed-message", "reason": Keyword("too-deep"), "text": 'a "quote"'},
]


@pytest.mark.parametrize("message", SERVER_MESSAGES)
def test_server_messages_encode_to_edn_the_original_client_reads(message: dict[str, Any]) -> None:
    stamped = {**message, "timestamp": datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone.utc)}
    text = EDN.encode(stamped)
    assert INST_RE.search(text), text
    assert text.endswith(':timestamp #inst "2026-11-27T10:00:00.123-00:00"}')

    read = edn_format.loads(text)
    assert all(isinstance(k, edn_format.Keyword) for k in read)
    assert read[edn_format.Keyword("dispatch-key")] == edn_format.Keyword(message["dispatch-key"])
    if "p-key" in message:
        assert read[edn_format.Keyword("p-key")] == edn_format.Keyword(message["p-key"])
    if "promise-keys" in message:
        assert list(read[edn_format.Keyword("promise-keys")]) == [
            edn_format.Keyword(k) for k in message["promise-keys"]
        ]
    assert read[edn_format.Keyword("timestamp")] == datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=timezone.utc)

    back = decode_both(text)
    assert back == {**message, "timestamp": datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=timezone.utc)}


def test_promise_key_sets_encode_as_keyword_sets() -> None:
    text = EDN.encode({"dispatch-key": "domain-expert-says", "promise-keys": frozenset({"promise-2", "promise-1"})})
    assert text == "{:dispatch-key :domain-expert-says, :promise-keys #{:promise-1 :promise-2}}"
    read = edn_format.loads(text)
    assert read[edn_format.Keyword("promise-keys")] == frozenset(
        {edn_format.Keyword("promise-1"), edn_format.Keyword("promise-2")}
    )


def test_format_inst() -> None:
    assert format_inst(datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.006-00:00"
    plus_two = timezone(timedelta(hours=2))
    assert format_inst(datetime(2026, 1, 2, 3, 4, 5, tzinfo=plus_two)) == "2026-01-02T01:04:05.000-00:00"


def test_keywords_the_readers_cannot_read_are_written_as_strings() -> None:
    for name in ("a'b", "a/b/c", "a/", "has space", "1abc", ""):
        text = EDN.encode({"dispatch-key": name})
        assert decode_both(text) == {"dispatch-key": name}, text
    assert EDN.encode({"k": Keyword("ns/name")}) == "{:k :ns/name}"


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(InvalidMessage):
        EDN.encode({"dispatch-key": "x", "v": object()})


def test_keyword_is_its_string() -> None:
    assert Keyword("ping") == "ping" and hash(Keyword("ping")) == hash("ping")
    assert repr(Keyword("ping")) == ":ping"
    assert str(Keyword("ping")) == "ping" and type(str(Keyword("ping"))) is str


# ------------------------------------------------------------------------- JSON


def test_json_decodes_keys_and_values_as_strings() -> None:
    message = JSON.decode(
        '{"dispatch-key":"domain-expert-says","msg-text":"Bicycles.","promise-keys":["promise-4711"]}',
        max_nesting=NESTING,
    )
    assert message == {"dispatch-key": "domain-expert-says", "msg-text": "Bicycles.", "promise-keys": ["promise-4711"]}
    assert type(message["dispatch-key"]) is str


def test_json_encodes_keywords_as_strings_sets_as_arrays_and_iso_timestamps() -> None:
    text = JSON.encode(
        {
            "dispatch-key": Keyword("clear-promise-keys"),
            "promise-keys": frozenset({Keyword("promise-2"), Keyword("promise-1")}),
            "timestamp": datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone.utc),
            "id": uuid.UUID(CID),
            "text": "é",
        }
    )
    assert text == (
        '{"dispatch-key":"clear-promise-keys","promise-keys":["promise-1","promise-2"],'
        f'"timestamp":"2026-11-27T10:00:00.123Z","id":"{CID}","text":"é"}}'
    )


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}'])
def test_json_refuses_nan_on_input(text: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        JSON.decode(text, max_nesting=NESTING)
    assert exc.value.reason == "bad-number"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_refuses_nan_on_output(value: float) -> None:
    with pytest.raises(InvalidMessage):
        JSON.encode({"dispatch-key": "x", "v": value})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"dispatch-key":', "malformed-json"),
        ("[1, 2]", "not-a-map"),
        ('{"a": [[1]]}', None),
        ("[" * 100_000 + "]" * 100_000, "too-deep"),
    ],
)
def test_json_bad_input(text: str, reason: str | None) -> None:
    if reason is None:
        assert JSON.decode(text, max_nesting=3) == {"a": [[1]]}
        with pytest.raises(MalformedMessage):
            JSON.decode(text, max_nesting=2)
        return
    with pytest.raises(MalformedMessage) as exc:
        JSON.decode(text, max_nesting=NESTING)
    assert exc.value.reason == reason


# ------------------------------------------------------------------------- negotiation


def test_negotiate() -> None:
    assert negotiate([JSON_SUBPROTOCOL]) == (JSON, JSON_SUBPROTOCOL)
    assert negotiate(["chat_ws.edn", JSON_SUBPROTOCOL]) == (JSON, JSON_SUBPROTOCOL)
    assert negotiate(["chat_ws.edn"]) == (EDN, "chat_ws.edn")
    assert negotiate([]) == (EDN, None)
    assert negotiate(["something-else"]) == (EDN, None)
    assert negotiate([], default="json") == (JSON, None)
    assert isinstance(negotiate([])[0], EdnCodec)


# ------------------------------------------------------------------------- bad EDN input

DEEP = "[" * 100_000 + "]" * 100_000

BAD_EDN = [
    ("{:dispatch-key", "malformed-edn"),
    ("{:dispatch-key :ping :x}", "malformed-edn"),
    ("{:a 1]", "malformed-edn"),
    ('{:a "unterminated}', "malformed-edn"),
    ("", "malformed-edn"),
    ("   ; only a comment", "malformed-edn"),
    ("[1 2 3]", "not-a-map"),
    ("42", "not-a-map"),
    ('"text"', "not-a-map"),
    ("nil", "not-a-map"),
    ("{:dispatch-key :ping} {:x 1}", "malformed-edn"),
    ("{:dispatch-key :ping} :x", "malformed-edn"),
    ("{:dispatch-key :ping} x", "malformed-edn"),
    ("{:dispatch-key :ping :x #evil/tag 1}", "malformed-edn"),
    ("{:dispatch-key :ping :x #=(+ 1 2)}", "malformed-edn"),
    ('{:dispatch-key :ping :x #inst "garbage"}', "malformed-edn"),
    ('{:dispatch-key :ping :x #inst "2026-13-01T00:00:00Z"}', "malformed-edn"),
    ('{:dispatch-key :ping :x #inst "2026-01-01"}', "unsupported"),
    ('{:dispatch-key :ping :x #uuid "not-a-uuid"}', "malformed-edn"),
    ("{:dispatch-key :ping :x " + "9" * 5000 + "}", "malformed-edn"),
    ("{:dispatch-key :ping :x -" + "9" * 5000 + "}", "malformed-edn"),
    ("{:dispatch-key :ping :x ##NaN}", "bad-number"),
    ("{:dispatch-key :ping :x ##Inf}", "bad-number"),
    ("{:dispatch-key :ping :x ##-Inf}", "bad-number"),
    ("{:dispatch-key :ping :x 1e999}", "bad-number"),
    ("{:dispatch-key :ping :x 1e999M}", "bad-number"),
    ("{:dispatch-key :ping :x 1/2}", "unsupported"),
    ("{:dispatch-key :ping :x ^:meta [1]}", "unsupported"),
    ("{nil 1}", "bad-key"),
    ("{[1] 1}", "bad-key"),
    ("{1.5 1}", "bad-key"),
    ("{true 1}", "bad-key"),
    ('{#uuid "5f0c0000-aaaa-bbbb-cccc-000000000000" 1}', "bad-key"),
    ("{:x #{[1]}}", "bad-set"),
    ("{:x #{{:a 1}}}", "bad-set"),
    (DEEP, "too-deep"),
    ("{:dispatch-key :ping :x " + DEEP + "}", "too-deep"),
    ("{:dispatch-key :ping :x #_ " + DEEP + "}", "too-deep"),
    ("#_ " + DEEP + " {:dispatch-key :ping}", "too-deep"),
    ("{:x " + "#{" * 100_000 + "}" * 100_000 + "}", "too-deep"),
    ("{:x " + "{:a " * 100_000 + "}" * 100_000 + "}", "too-deep"),
    ('{:dispatch-key :ping :x "\\ud800"}', "bad-string"),
    ('{:dispatch-key :ping :x "\\udc00\\ud800"}', "bad-string"),
    ('{:dispatch-key :ping :x "\\ud83d x"}', "bad-string"),
    ('{"\\ud800" 1}', "bad-string"),
    ('{:dispatch-key :ping :x "\ud800"}', "bad-string"),
    ("{:dispatch-key :ping :x foo\ud800}", "malformed-edn"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_EDN, ids=[t[:40] for t, _ in BAD_EDN])
def test_bad_edn_is_a_malformed_message(text: str, reason: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        EDN.decode(text, max_nesting=NESTING)
    assert exc.value.reason == reason


# ------------------------------------------------------------------ site keyword fields
def test_edn_writes_protocol_fields_as_keywords_and_site_fields_only_when_configured() -> None:
    message = {"dispatch-key": "iviewr-says", "conversation-id": "process", "reason": "timeout"}
    assert EDN.encode(message) == '{:dispatch-key :iviewr-says, :conversation-id "process", :reason :timeout}'
    site = edn_codec(frozenset({"conversation-id"}))
    assert site.encode(message) == "{:dispatch-key :iviewr-says, :conversation-id :process, :reason :timeout}"
    assert edn_codec(frozenset({"conversation-id"})) is site  # one codec per field set, shared
    assert edn_codec() is EDN


def test_negotiate_gives_the_site_fields_to_edn_only() -> None:
    fields = frozenset({"msg-type"})
    codec, accepted = negotiate([], "edn", fields)
    assert accepted is None and codec.encode({"dispatch-key": "x", "msg-type": "a"}) == "{:dispatch-key :x, :msg-type :a}"
    codec, accepted = negotiate(["chat_ws.json"], "edn", fields)
    assert accepted == "chat_ws.json" and codec is JSON
