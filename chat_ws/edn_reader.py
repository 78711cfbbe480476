"""A fast reader for the wire subset of EDN, straight into the codec's internal representation.

The subset: maps, vectors, lists, sets, keywords (namespaced too), strings with the escapes
``\\" \\\\ \\n \\t \\r \\b \\f \\uXXXX``, integers, floats, ``nil``/``true``/``false``, ``#inst`` and
``#uuid``; spaces, tabs, newlines, commas and ``;`` comments separate forms. The values are those
described in :mod:`chat_ws.codec`.

One compiled regex splits the text into tokens and a loop with an explicit stack builds the value,
so depth is bounded by ``max_nesting`` and never by the interpreter's recursion limit. Text outside
the subset raises :class:`Unsupported` (the codec then reads the frame with edn_format); text that no
EDN reader accepts raises MalformedMessage.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Any

from chat_ws.exceptions import MalformedMessage


class Keyword(str):
    """An EDN keyword value; equal to the plain string of its name."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f":{str(self)}"


class Unsupported(Exception):
    """The text uses EDN outside the wire subset; read it with the full parser instead."""


# Characters of keywords and symbols, exactly as edn_format's lexer has them.
_NAME = r"[\w.*+!\-?$%&=:#<>@]"
# What may follow a keyword, number, nil/true/false or tag so that edn_format ends the token there.
_END = r"""(?=[ \t\n,\[\](){}";]|\Z)"""

_TOKEN = re.compile(
    r"""
    [ \t\n,]*+(?:;[^\n]*+[ \t\n,]*+)*+               # whitespace, commas, comments
    (?:
      (   "[^"\\]*+(?:\\.[^"\\]*+)*+"               # string
        | :NAME++(?:/NAME++)?END                    # keyword
        | [+-]?(?:[0-9]++(?:\.[0-9]++(?:[eE][+-]?[0-9]++)?|[eE][+-]?[0-9]++)
                 |0|[1-9][0-9]*+)END                # float or integer
        | (?:nil|true|false|\#inst|\#uuid)END
        | \#?\{ | [\[\]()}]
      )
    | (\#_|.)                                       # anything else: outside the subset
    | \Z
    )
    """.replace("NAME", _NAME).replace("END", _END),
    re.VERBOSE | re.DOTALL,
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_INST = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_NUMBER_START = frozenset("0123456789+-")
_CLOSERS = frozenset("}])")
_MAP, _SET, _VECTOR, _LIST, _TOP = range(5)
_NO_KEY: Any = object()
_END_TOKEN = ("", "")


def _malformed(detail: str) -> MalformedMessage:
    return MalformedMessage("malformed-edn", detail)


def _escape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code is not None:
        return chr(int(code, 16))
    char = _SIMPLE_ESCAPES.get(match.group(2))
    if char is None:
        raise Unsupported(f"string escape \\{match.group(2)}")
    return char


def join_surrogates(text: str) -> str:
    """Combine UTF-16 surrogate pairs into code points; raise MalformedMessage on a lone one."""
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("bad-string", "a string holds an unpaired surrogate") from exc


def clean_string(text: str) -> str:
    """``text`` with surrogate pairs combined; MalformedMessage when it holds a lone surrogate."""
    if _SURROGATE.search(text) is None:
        return text
    return join_surrogates(text)


def _unescape(body: str) -> str:
    text = _ESCAPE.sub(_escape, body)
    if _SURROGATE.search(text) is not None:
        text = join_surrogates(text)
    return text


def _tagged(tag: str, token: tuple[str, str]) -> Any:
    """The value of ``#inst``/``#uuid`` followed by ``token``."""
    text = token[0]
    if text[:1] != '"':
        raise Unsupported(f"{tag} followed by something other than a string")
    text = text[1:-1]
    if "\\" in text:
        text = _unescape(text)
    if tag == "#uuid":
        try:
            return str(uuid.UUID(text))
        except ValueError as exc:
            raise _malformed(f"invalid #uuid {text[:60]!r}") from exc
    if _INST.match(text) is None:
        raise Unsupported("#inst in a form other than RFC 3339 date-time")
    try:
        # pyrfc3339, which edn_format uses, does the same: Z -> +00:00, then fromisoformat.
        return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] == "Z" else text)
    except ValueError as exc:
        raise _malformed(f"invalid #inst {text[:60]!r}: {exc}") from exc


def _number(token: str) -> Any:
    """A number token that int() refused: a float, or an integer too long to convert."""
    if "." not in token and "e" not in token and "E" not in token:
        raise _malformed("integer too large")
    if len(token) > 64:
        # edn_format converts the exponent with int() too, which refuses very long ones.
        raise Unsupported("very long float")
    value = float(token)
    if math.isinf(value):  # NaN has no literal here
        raise MalformedMessage("bad-number", "NaN and infinities are not accepted")
    return value


def read(text: str, max_nesting: int) -> Any:
    """Read the single form of ``text``.

    A value nested in N containers counts as level N + 1; more than ``max_nesting`` levels raise
    MalformedMessage("too-deep").
    """
    if not text.isascii() and _SURROGATE.search(text) is not None:
        raise Unsupported("surrogate code point in the text")
    tokens = iter(_TOKEN.findall(text))
    stack: list[tuple[Any, int, Any]] = []
    cur: Any = None
    kind = _TOP
    key: Any = _NO_KEY
    depth = 0
    number_start = _NUMBER_START
    closers = _CLOSERS
    keyword = Keyword
    for tok, bad in tokens:
        c = tok[:1]
        if c in closers:
            if c == "}":
                if kind == _MAP:
                    if key is not _NO_KEY:
                        raise _malformed("a map needs an even number of forms")
                    value = cur
                elif kind == _SET:
                    try:
                        value = frozenset(cur)
                    except TypeError as exc:
                        raise MalformedMessage("bad-set", "sets may hold only scalar values") from exc
                else:
                    raise _malformed("unexpected }")
            elif c == "]":
                if kind != _VECTOR:
                    raise _malformed("unexpected ]")
                value = cur
            else:
                if kind != _LIST:
                    raise _malformed("unexpected )")
                value = cur
            cur, kind, key = stack.pop()
            depth -= 1
        else:
            if depth >= max_nesting:
                if not c:  # the end of the text, or a token outside the subset
                    break
                raise MalformedMessage("too-deep", f"nesting exceeds {max_nesting} levels")
            if c == ":":
                if kind == _MAP and key is _NO_KEY:
                    key = tok[1:]
                    continue
                value = keyword(tok[1:])
            elif c == '"':
                value = tok[1:-1]
                if "\\" in value:
                    value = _unescape(value)
            elif c in number_start:
                try:
                    value = int(tok)
                except ValueError:
                    value = _number(tok)
            elif c == "{" or c == "[" or c == "(" or tok == "#{":
                stack.append((cur, kind, key))
                if c == "{":
                    cur, kind = {}, _MAP
                else:
                    cur, kind = [], _VECTOR if c == "[" else _LIST if c == "(" else _SET
                key = _NO_KEY
                depth += 1
                continue
            elif c == "n":
                value = None
            elif c == "t":
                value = True
            elif c == "f":
                value = False
            elif c == "#":
                value = _tagged(tok, next(tokens, _END_TOKEN))
                if tok == "#uuid" and kind == _MAP and key is _NO_KEY:
                    raise MalformedMessage("bad-key", "unsupported map key type UUID")
            else:
                break
        if kind == _MAP:
            if key is _NO_KEY:
                t = type(value)
                if t is str or t is int:
                    key = value
                else:
                    raise MalformedMessage("bad-key", f"unsupported map key type {t.__name__}")
            else:
                cur[key] = value
                key = _NO_KEY
        elif kind == _TOP:
            tok, bad = next(tokens, _END_TOKEN)
            if tok or (bad and bad != "#_"):
                raise _malformed("text after the first form")
            if bad:
                raise Unsupported("#_ discard")
            return value
        else:
            cur.append(value)
    # Only the end marker and tokens outside the subset leave the loop.
    if bad == '"':
        raise _malformed("unterminated string")
    if bad:
        raise Unsupported(f"{bad!r} is outside the wire subset")
    raise _malformed("unexpected end of text" if stack or kind != _TOP else "no form")
