"""The fast EDN reader: its subset, its refusals, and properties against edn_format."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat_ws.codec import EDN, PROTOCOL_KEYWORD_FIELDS, _decode_with_edn_format
from chat_ws.edn_reader import Keyword, Unsupported, read
from chat_ws.exceptions import MalformedMessage

NESTING = 64
PROPERTY = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def typed(value: Any) -> Any:
    """A comparable form that also tells Keyword from str, int from bool and keeps tz offsets."""
    if isinstance(value, dict):
        return ("map", [((type(k).__name__, k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, frozenset):
        return ("set", frozenset(typed(v) for v in value))
    if isinstance(value, datetime):
        return ("datetime", value, value.utcoffset())
    return (type(value).__name__, value)


# ------------------------------------------------------------------------- the subset


def test_reads_the_wire_subset() -> None:
    value = read(
        '{:dispatch-key :domain-expert-says, :msg-text "Bicycles.", :promise-keys #{:promise-4711},'
        ' :ns/k [1 -2 +3 1.5 -1e3 nil true false] "s" (1 2), 3 {}, :t #inst "2026-11-27T10:00:00.000-00:00",'
        ' :u #uuid "5F0C0000-AAAA-BBBB-CCCC-000000000000" ; trailing comment\n}',
        NESTING,
    )
    assert typed(value) == typed(
        {
            "dispatch-key": Keyword("domain-expert-says"),
            "msg-text": "Bicycles.",
            "promise-keys": frozenset({Keyword("promise-4711")}),
            "ns/k": [1, -2, 3, 1.5, -1000.0, None, True, False],
            "s": [1, 2],
            3: {},
            "t": datetime(2026, 11, 27, 10, tzinfo=timezone.utc),
            "u": "5f0c0000-aaaa-bbbb-cccc-000000000000",
        }
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (r"plain", "plain"),
        (r"\"q\" \\ \n\t\r\b\f", '"q" \\ \n\t\r\b\f'),
        (r"\u00e9\u00E9", "éé"),
        (r"\ud83d\ude00", "😀"),
        (r"\\u0041", "\\u0041"),
        ("raw\nnewline and ünïcödé 😀", "raw\nnewline and ünïcödé 😀"),
        ("", ""),
    ],
)
def test_string_escapes(body: str, expected: str) -> None:
    assert read('"' + body + '"', NESTING) == expected


def test_keyword_keys_are_plain_strings_and_values_keywords() -> None:
    value = read("{:a :b, :c #{:d} :e [:f]}", NESTING)
    assert [type(k) for k in value] == [str, str, str]
    assert type(value["a"]) is Keyword
    assert [type(v) for v in value["c"]] == [Keyword]
    assert type(value["e"][0]) is Keyword


def test_instants_keep_their_offset() -> None:
    value = read(
        '[#inst "2026-11-27T10:00:00.5+05:30" #inst "2026-11-27T10:00:00Z" #inst"2026-11-27T10:00:00-00:00"]', 8
    )
    assert value[0] == datetime(2026, 11, 27, 4, 30, 0, 500000, tzinfo=timezone.utc)
    assert value[0].utcoffset() == timedelta(hours=5, minutes=30)
    assert value[1] == value[2] == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def test_nesting_limit_counts_levels_of_values() -> None:
    assert read("{:a []}", 2) == {"a": []}
    with pytest.raises(MalformedMessage, match="too-deep"):
        read("{:a [1]}", 2)
    with pytest.raises(MalformedMessage, match="too-deep"):
        read("{:a {:b 1}}", 2)
    assert read("{:a {:b 1}}", 3) == {"a": {"b": 1}}


def test_deep_nesting_is_read_without_recursion() -> None:
    levels = 100_000
    with pytest.raises(MalformedMessage, match="too-deep"):
        read("[" * levels + "]" * levels, 32)
    value = read("[" * levels + "]" * levels, levels + 1)
    depth = 0
    while value:
        value = value[0]
        depth += 1
    assert depth == levels - 1


@pytest.mark.parametrize(
    "text",
    [
        "{:a foo}",
        "{:a \\c}",
        "{:a #foo 1}",
        "{:a #=(+ 1 2)}",
        "{:a 1/2}",
        "{:a 1M}",
        "{:a 1.5M}",
        "{:a 1N}",
        "{:a 0x1F}",
        "{:a 012}",
        "{:a ##NaN}",
        "{:a ##Inf}",
        "{:a #_ 1}",
        "#_ 1 {:a 1}",
        "{:a 1} #_ 2",
        "{:a ^:meta [1]}",
        "#:ns{:a 1}",
        '{:a "\\x41"}',
        '{:a "\\101"}',
        '{:a "\\U0001F600"}',
        '{:a "\\u12"}',
        '{:a #inst "2026-01-01"}',
        '{:a #inst "2026-11-27 10:00:00Z"}',
        "{:a #inst 5}",
        "{:a\r1}",
        "{:a/ 1}",
        "{:a/b/c 1}",
        "{:a nilly}",
        "{:a 1.}",
        "{:a \ud800}",
    ],
)
def test_text_outside_the_subset_is_unsupported(text: str) -> None:
    with pytest.raises(Unsupported):
        read(text, NESTING)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed-edn"),
        (" , ; nothing\n", "malformed-edn"),
        ("{:a 1", "malformed-edn"),
        ("{:a}", "malformed-edn"),
        ("{:a 1]", "malformed-edn"),
        ("[1)", "malformed-edn"),
        ("(1]", "malformed-edn"),
        ("#{1]", "malformed-edn"),
        ("}", "malformed-edn"),
        ('{:a "open}', "malformed-edn"),
        ("{} {}", "malformed-edn"),
        ("{} x", "malformed-edn"),
        ("{} \r", "malformed-edn"),
        ("{:a " + "1" * 5000 + "}", "malformed-edn"),
        ('{:a #uuid "nope"}', "malformed-edn"),
        ('{:a #inst "2026-02-30T00:00:00Z"}', "malformed-edn"),
        ("{:a 1e999}", "bad-number"),
        ("{:a -1e999}", "bad-number"),
        ("{nil 1}", "bad-key"),
        ("{1.5 1}", "bad-key"),
        ("{[] 1}", "bad-key"),
        ('{#inst "2026-11-27T10:00:00Z" 1}', "bad-key"),
        ('{#uuid "5f0c0000-aaaa-bbbb-cccc-000000000000" 1}', "bad-key"),
        ("{:a #{[]}}", "bad-set"),
        ('{:a "\\ud800"}', "bad-string"),
        ('{:a "\\ude00\\ud83d"}', "bad-string"),
        ("[" * 100 + "]" * 100, "too-deep"),
    ],
)
def test_malformed_text(text: str, reason: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        read(text, NESTING)
    assert exc.value.reason == reason


# ------------------------------------------------------------------------- properties

KEYWORD_NAMES = st.from_regex(
    r"[A-Za-z*+!_?<>=.-][A-Za-z0-9*+!_?<>=.:#-]{0,10}(/[A-Za-z0-9*+!_?<>=.:#-]{1,8})?", fullmatch=True
)
INSTANTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=timezone.utc)
)
HASHABLES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), KEYWORD_NAMES.map(Keyword))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    KEYWORD_NAMES.map(Keyword),
    INSTANTS,
)
KEYS = st.one_of(st.text(max_size=12), KEYWORD_NAMES, st.integers()).filter(lambda k: k not in PROTOCOL_KEYWORD_FIELDS)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
        st.frozensets(HASHABLES, max_size=4),
    ),
    max_leaves=12,
)
MESSAGES = st.dictionaries(KEYS, VALUES, max_size=6)


@PROPERTY
@given(MESSAGES)
def test_encoded_messages_read_back_equal(message: dict[Any, Any]) -> None:
    text = EDN.encode(message)
    assert typed(read(text, NESTING)) == typed(message)


# EDN text of the subset, written the many ways a client may write it.
SEPARATORS = st.sampled_from([" ", ",", ", ", "\n", "\t", " ; a comment\n", ",,  ", "\n\t, "])
OPTIONAL_SEPARATORS = st.one_of(st.just(""), SEPARATORS)
STRING_PARTS = st.one_of(
    st.characters(blacklist_characters='"\\', blacklist_categories=("Cs",)),
    st.sampled_from(['\\"', "\\\\", "\\n", "\\t", "\\r", "\\b", "\\f"]),
    st.integers(0, 0xFFFF)
    .filter(lambda c: not 0xD800 <= c <= 0xDFFF)
    .flatmap(lambda c: st.sampled_from([f"\\u{c:04x}", f"\\u{c:04X}"])),
    st.integers(0x10000, 0x10FFFF).map(
        lambda c: f"\\u{0xD800 + ((c - 0x10000) >> 10):04x}\\u{0xDC00 + ((c - 0x10000) & 0x3FF):04x}"
    ),
)
STRING_TEXT = st.lists(STRING_PARTS, max_size=12).map(lambda parts: '"' + "".join(parts) + '"')
KEYWORD_TEXT = KEYWORD_NAMES.map(lambda name: ":" + name)
INT_TEXT = st.one_of(st.integers().map(str), st.integers(0, 10**6).map(lambda i: f"+{i}"), st.just("-0"))
FLOAT_TEXT = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.from_regex(r"\.[0-9]{1,6}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,2}", fullmatch=True)),
) | st.builds(
    lambda whole, exp: f"{whole}{exp}",
    st.from_regex(r"-?[0-9]{1,4}", fullmatch=True),
    st.from_regex(r"[eE][+-]?[0-9]{1,2}", fullmatch=True),
)
INST_TEXT = st.builds(
    lambda d, frac, zone, space: f'#inst{space}"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:'
    f'{d.minute:02d}:{d.second:02d}{frac}{zone}"',
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,9}", fullmatch=True)),
    st.one_of(
        st.sampled_from(["Z", "+00:00", "-00:00"]),
        st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)),
    ),
    st.sampled_from([" ", "", " ; tag comment\n "]),
)
UUID_TEXT = st.builds(lambda u, upper: f'#uuid "{str(u).upper() if upper else u}"', st.uuids(), st.booleans())
SET_ELEMENTS = st.one_of(KEYWORD_TEXT, INT_TEXT, st.sampled_from(["nil", "true", "false"]), INST_TEXT, UUID_TEXT)
ATOMS = st.one_of(
    KEYWORD_TEXT, STRING_TEXT, INT_TEXT, FLOAT_TEXT, st.sampled_from(["nil", "true", "false"]), INST_TEXT, UUID_TEXT
)
MAP_KEYS = st.one_of(KEYWORD_TEXT, STRING_TEXT, INT_TEXT)


@st.composite
def joined(draw: st.DrawFn, opening: str, closing: str, items: list[str]) -> str:
    out = [opening, draw(OPTIONAL_SEPARATORS)]
    for i, item in enumerate(items):
        if i:
            out.append(draw(SEPARATORS))
        out.append(item)
    out += [draw(OPTIONAL_SEPARATORS), closing]
    return "".join(out)


def collections(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.lists(st.tuples(MAP_KEYS, children), max_size=4).map(lambda kv: [x for pair in kv for x in pair])
    return st.one_of(
        st.lists(children, max_size=4).flatmap(lambda items: joined("[", "]", items)),
        st.lists(children, max_size=4).flatmap(lambda items: joined("(", ")", items)),
        st.lists(SET_ELEMENTS, max_size=4).flatmap(lambda items: joined("#{", "}", items)),
        pairs.flatmap(lambda items: joined("{", "}", items)),
    )


FORMS = st.recursive(ATOMS, collections, max_leaves=10)
MAP_TEXT = st.lists(st.tuples(MAP_KEYS, FORMS), max_size=5).flatmap(
    lambda kv: joined("{", "}", [x for pair in kv for x in pair])
)
FRAMES = st.builds(
    lambda before, body, after: before + body + after, OPTIONAL_SEPARATORS, MAP_TEXT, OPTIONAL_SEPARATORS
)


@PROPERTY
@given(FRAMES)
def test_fast_reader_agrees_with_edn_format(text: str) -> None:
    try:
        expected: Any = typed(_decode_with_edn_format(text, NESTING))
    except MalformedMessage as exc:
        expected = exc.reason
    try:
        fast: Any = typed(read(text, NESTING))
    except MalformedMessage as exc:
        fast = exc.reason
    assert fast == expected


def reads_or_refuses(text: str) -> None:
    try:
        read(text, NESTING)
    except (MalformedMessage, Unsupported):
        pass
    try:
        assert isinstance(EDN.decode(text, max_nesting=NESTING), dict)
    except MalformedMessage:
        pass


@PROPERTY
@given(st.text())
def test_arbitrary_text_is_a_message_or_malformed(text: str) -> None:
    reads_or_refuses(text)


@PROPERTY
@given(st.text(alphabet='{}[]()#:;"\\ ,\n\r0123456789.eE+-/_^!?*anilstrueflsNMxu\ud800\udc00é', max_size=60))
def test_edn_like_text_is_a_message_or_malformed(text: str) -> None:
    reads_or_refuses(text)
    reads_or_refuses("{:x " + text + "}")
