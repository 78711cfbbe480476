"""Wire codecs: EDN (the original client's) and JSON (subprotocol ``chat_ws.json``).

Internal representation, shared by both codecs and by every handler:

* a message is a ``dict`` whose keys are ``str`` (EDN keywords and strings both become ``str``,
  without the colon: ``:dispatch-key`` -> ``"dispatch-key"``);
* EDN keyword *values* become :class:`Keyword`, a ``str`` subclass that compares equal to the plain
  string (``Keyword("ping") == "ping"``); JSON strings stay plain ``str``;
* vectors and lists become ``list``; sets become ``frozenset`` (JSON: arrays);
* ``nil``/``null`` -> ``None``; integers, floats and booleans as Python's;
* ``#inst`` -> timezone-aware ``datetime``; ``#uuid`` -> ``str``.

On output the EDN codec writes :class:`Keyword` values, and the values of the fields in
:data:`PROTOCOL_KEYWORD_FIELDS` plus the site's ``EDN_KEYWORD_FIELDS`` setting, as keywords;
everything else as EDN data. JSON writes keywords as
strings, sets as arrays and datetimes as ISO-8601 strings (milliseconds, ``Z``).

EDN input is read by :mod:`chat_ws.edn_reader`, which covers what clients send; a frame outside
its subset is read by edn_format, the full EDN reader.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

import edn_format

from chat_ws.edn_reader import Keyword, Unsupported, clean_string
from chat_ws.edn_reader import read as read_edn
from chat_ws.exceptions import InvalidMessage, MalformedMessage
from chat_ws.types import Message

__all__ = [
    "CODECS",
    "EDN",
    "EDN_SUBPROTOCOL",
    "JSON",
    "JSON_SUBPROTOCOL",
    "PROTOCOL_KEYWORD_FIELDS",
    "Codec",
    "EdnCodec",
    "JsonCodec",
    "Keyword",
    "edn_codec",
    "format_inst",
    "negotiate",
]

logger = logging.getLogger(__name__)

JSON_SUBPROTOCOL = "chat_ws.json"
EDN_SUBPROTOCOL = "chat_ws.edn"

PROTOCOL_KEYWORD_FIELDS = frozenset(
    {"dispatch-key", "p-key", "promise-keys", "error", "reason", "in-reply-to"}
)
"""Fields of the protocol whose string values the EDN codec always writes as keywords
(sets and lists element-wise); a site adds its own with the ``EDN_KEYWORD_FIELDS`` setting."""


class Codec(Protocol):
    """Turns wire text into messages and back."""

    name: str
    subprotocol: str | None

    def decode(self, text: str, *, max_nesting: int) -> Message:
        """Decode one frame; raise MalformedMessage when it is not a valid message map."""
        ...

    def encode(self, message: Message) -> str:
        """Encode one message; raise InvalidMessage when it holds unencodable data."""
        ...


def _check_depth(value: Any, max_nesting: int) -> None:
    """Raise MalformedMessage when containers nest deeper than max_nesting (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, frozenset)):
            children = item
        else:
            continue
        if depth > max_nesting:
            raise MalformedMessage("too-deep", f"nesting exceeds {max_nesting} levels")
        for child in children:
            if isinstance(child, (dict, list, frozenset)):
                stack.append((child, depth + 1))


def _require_map(value: Any) -> Message:
    if not isinstance(value, dict):
        raise MalformedMessage("not-a-map", f"expected a map, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------- EDN


def _from_edn(value: Any, depth: int, max_nesting: int) -> Any:
    """Convert edn_format's data to the internal representation."""
    if depth > max_nesting:
        raise MalformedMessage("too-deep", f"nesting exceeds {max_nesting} levels")
    if isinstance(value, edn_format.Keyword):
        return Keyword(value.name)
    if isinstance(value, str):  # strings and edn_format.Char
        return clean_string(str(value))
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        number = float(value)  # a Decimal (1.5M) beyond a float's range becomes inf
        if not math.isfinite(number):
            raise MalformedMessage("bad-number", "NaN and infinities are not accepted")
        return number
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, edn_format.Keyword):
                key: Any = k.name
            elif isinstance(k, str):
                key = clean_string(str(k))
            elif isinstance(k, int) and not isinstance(k, bool):
                key = k
            else:
                raise MalformedMessage("bad-key", f"unsupported map key type {type(k).__name__}")
            out[key] = _from_edn(v, depth + 1, max_nesting)
        return out
    if isinstance(value, (frozenset, set)):
        items = [_from_edn(v, depth + 1, max_nesting) for v in value]
        try:
            return frozenset(items)
        except TypeError as exc:
            raise MalformedMessage("bad-set", "sets may hold only scalar values") from exc
    if isinstance(value, Sequence):
        return [_from_edn(v, depth + 1, max_nesting) for v in value]
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, edn_format.Symbol):
        return clean_string(str(value))
    raise MalformedMessage("unsupported", f"unsupported EDN value {type(value).__name__}")


# Brackets outside strings, comments and character literals, to bound nesting before parsing.
_BRACKETS_RE = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|;[^\n]*+|\\.|([\[({])|[\])}]', re.DOTALL)


def _text_depth(text: str) -> int:
    """The deepest bracket nesting of EDN text (over-counts only in text that is malformed anyway)."""
    depth = deepest = 0
    for match in _BRACKETS_RE.finditer(text):
        token = match.group()
        if match.group(1) is not None:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif token in ")]}":
            depth -= 1
    return deepest


class _EdnParsers(threading.local):
    """edn_format's own lexer and grammar, built once (per thread for the stateful parser).

    ``edn_format.loads`` builds both on every call and, in a Python run without ``-O``, logs
    the whole lexer specification at INFO each time; this builds them once, without a debug log.
    """

    lexer: Any = None
    parser: Any = None


_edn_parsers = _EdnParsers()


def _parse_edn_forms(text: str) -> list[Any]:
    """Every form in ``text``, as edn_format reads them."""
    parsers = _edn_parsers
    if parsers.parser is None:
        try:
            import ply.lex
            import ply.yacc
            from edn_format import edn_lex, edn_parse

            parsers.lexer = ply.lex.lex(module=edn_lex, reflags=re.UNICODE, errorlog=ply.lex.NullLogger())
            parsers.parser = ply.yacc.yacc(
                module=edn_parse, debug=False, write_tables=False, errorlog=ply.yacc.NullLogger()
            )
        except Exception:  # another edn_format layout; its public entry point still works
            logger.warning("cannot build edn_format's parser once; using edn_format.loads_all", exc_info=True)
            parsers.parser = False
    if parsers.parser is False:
        return list(edn_format.loads_all(text))
    return list(parsers.parser.parse(text, lexer=parsers.lexer.clone()))


def _decode_with_edn_format(text: str, max_nesting: int) -> Message:
    """Decode one EDN map with edn_format, the full EDN reader (the codec's original path)."""
    if _text_depth(text) > max_nesting:
        raise MalformedMessage("too-deep", f"nesting exceeds {max_nesting} levels")
    try:
        forms = _parse_edn_forms(text)
    except RecursionError as exc:
        raise MalformedMessage("too-deep", "nesting too deep to read") from exc
    except Exception as exc:  # edn_format raises many types on bad input
        raise MalformedMessage("malformed-edn", str(exc)[:200]) from exc
    if len(forms) != 1:
        raise MalformedMessage("malformed-edn", f"expected one form, got {len(forms)}")
    try:
        value = _from_edn(forms[0], 1, max_nesting)
    except MalformedMessage:
        raise
    except RecursionError as exc:
        raise MalformedMessage("too-deep", "nesting too deep to read") from exc
    except Exception as exc:  # a value edn_format built but cannot be converted
        raise MalformedMessage("unsupported", str(exc)[:200]) from exc
    return _require_map(value)


# Names written as keywords: readable by ClojureScript's reader and by edn_format (one "/" at most).
_KEYWORD_RE = re.compile(r"[A-Za-z*+!_?<>=.-][A-Za-z0-9*+!_?<>=.:#-]*(?:/[A-Za-z0-9*+!_?<>=.:#-]+)?\Z")
_EDN_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_EDN_ESCAPE_RE = re.compile(r'["\\\x00-\x1f\x7f]')


def _edn_escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    return _EDN_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _edn_string(text: str) -> str:
    if _EDN_ESCAPE_RE.search(text) is None:  # the common case: nothing to escape
        return '"' + text + '"'
    return '"' + _EDN_ESCAPE_RE.sub(_edn_escape, text) + '"'


def _utc_millis(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmm`` in UTC (a naive datetime is taken as UTC); four-digit years."""
    m = moment.astimezone(timezone.utc) if moment.tzinfo else moment
    return m.isoformat(timespec="milliseconds")[:23]  # datetime's C formatter, offset cut off


def format_inst(moment: datetime) -> str:
    """RFC 3339 with milliseconds, as ClojureScript prints an #inst."""
    return _utc_millis(moment) + "-00:00"


def _edn_keyword_or_string(text: str) -> str:
    return ":" + text if _KEYWORD_RE.match(text) else _edn_string(text)


_MAP_KEYS: dict[str, str] = {}  # map keys as written: a protocol has few, and they repeat
_MAP_KEYS_MAX = 4096  # past this many distinct keys, new ones are written without caching


def _edn_map_key(key: str) -> str:
    found = _MAP_KEYS.get(key)
    if found is None:
        found = _edn_keyword_or_string(key)
        if len(_MAP_KEYS) < _MAP_KEYS_MAX:
            _MAP_KEYS[key] = found
    return found


def _to_edn(value: Any, as_keyword: bool, out: list[str], fields: frozenset[str]) -> None:
    if isinstance(value, str):
        if as_keyword or isinstance(value, Keyword):
            out.append(_edn_keyword_or_string(value))
        else:
            out.append(_edn_string(value))
    elif value is None:
        out.append("nil")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        if math.isnan(value):
            out.append("##NaN")
        elif math.isinf(value):
            out.append("##Inf" if value > 0 else "##-Inf")
        else:
            out.append(repr(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(", ")
            first = False
            if isinstance(k, str):
                out.append(_edn_map_key(k))
            else:
                _to_edn(k, False, out, fields)
            out.append(" ")
            _to_edn(v, k in fields, out, fields)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(" ")
            _to_edn(v, as_keyword, out, fields)
        out.append("]")
    elif isinstance(value, (set, frozenset)):
        out.append("#{")
        for i, v in enumerate(sorted(value, key=repr)):
            if i:
                out.append(" ")
            _to_edn(v, as_keyword, out, fields)
        out.append("}")
    elif isinstance(value, datetime):
        out.append('#inst "' + format_inst(value) + '"')
    elif isinstance(value, uuid.UUID):
        out.append('#uuid "' + str(value) + '"')
    elif isinstance(value, Decimal):
        out.append(repr(float(value)))
    else:
        raise InvalidMessage(f"cannot encode {type(value).__name__} as EDN")


_REREAD_REASONS = frozenset({"bad-key", "bad-set", "bad-string", "bad-number"})
"""Errors of the fast reader that edn_format may not see (in a value a repeated key replaces)."""


class EdnCodec:
    """EDN text frames, exactly as the original ClojureScript client reads and writes them."""

    name = "edn"
    subprotocol: str | None = None

    def __init__(self, keyword_fields: Iterable[str] = ()) -> None:
        self.keyword_fields = PROTOCOL_KEYWORD_FIELDS | frozenset(keyword_fields)

    def decode(self, text: str, *, max_nesting: int) -> Message:
        """Decode one EDN map: the fast reader, or edn_format for text outside its subset."""
        try:
            value = read_edn(text, max_nesting)
        except Unsupported as exc:
            logger.debug("EDN frame outside the fast reader's subset (%s); using edn_format", exc)
            return _decode_with_edn_format(text, max_nesting)
        except MalformedMessage as exc:
            if exc.reason not in _REREAD_REASONS:
                raise
            # edn_format keeps only the last value of a repeated map key and never looks at the
            # others, so a bad value there was accepted; let edn_format judge, as it always did.
            return _decode_with_edn_format(text, max_nesting)
        return _require_map(value)

    def encode(self, message: Message) -> str:
        """Encode one map as EDN text."""
        out: list[str] = []
        _to_edn(message, False, out, self.keyword_fields)
        return "".join(out)


# ----------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise MalformedMessage("bad-number", f"{name} is not accepted")


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, datetime):
        return _utc_millis(value) + "Z"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class JsonCodec:
    """JSON text frames: keys and keyword values as strings, sets as arrays."""

    name = "json"
    subprotocol: str | None = JSON_SUBPROTOCOL

    _encoder = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
    )

    def decode(self, text: str, *, max_nesting: int) -> Message:
        """Decode one JSON object."""
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except MalformedMessage:
            raise
        except RecursionError as exc:
            raise MalformedMessage("too-deep", "nesting too deep to read") from exc
        except ValueError as exc:
            raise MalformedMessage("malformed-json", str(exc)[:200]) from exc
        message = _require_map(value)
        _check_depth(message, max_nesting)
        return message

    def encode(self, message: Message) -> str:
        """Encode one map as JSON text."""
        try:
            return self._encoder.encode(message)
        except (TypeError, ValueError) as exc:
            raise InvalidMessage(str(exc)) from exc


EDN = EdnCodec()
JSON = JsonCodec()
CODECS: dict[str, Codec] = {"edn": EDN, "json": JSON}


@lru_cache(maxsize=8)
def edn_codec(keyword_fields: frozenset[str] = frozenset()) -> EdnCodec:
    """The EDN codec that also writes the values of ``keyword_fields`` as keywords (shared)."""
    return EdnCodec(keyword_fields) if keyword_fields else EDN


def negotiate(
    offered: list[str], default: str = "edn", keyword_fields: frozenset[str] = frozenset()
) -> tuple[Codec, str | None]:
    """Pick the codec for the subprotocols a client offers; return it and the one to accept.

    ``keyword_fields`` are the site's extra EDN keyword fields (the ``EDN_KEYWORD_FIELDS`` setting).
    """
    if JSON_SUBPROTOCOL in offered:
        return JSON, JSON_SUBPROTOCOL
    edn = edn_codec(keyword_fields)
    if EDN_SUBPROTOCOL in offered:
        return edn, EDN_SUBPROTOCOL
    return (edn if default == "edn" else CODECS[default]), None
