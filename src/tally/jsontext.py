"""How deep JSON text nests, and reading stored JSON objects safely, both
without recursion.

Every JSON document tally takes in or stores — an event body, an admin
request body, a map query parameter, the traits of a company or user — nests
at most ``MAX_NESTING`` levels: ``{}`` is one level, ``{"a": [1]}`` two.
Python's JSON parsers and pickle recurse once per level and give up near a
thousand, so deeper input is refused before anything parses it, and stored
text is only ever read through ``read_object``, which cannot be broken by a
value stored before the limit existed.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

MAX_NESTING = 32

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")
# the structure of an object's text: strings, brackets and separators
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE, _COLON, _COMMA, _END = b'"'[0], b":"[0], b","[0], b"}"[0]


def nests_deeper(data: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON text ``data`` nests more than ``limit`` levels of
    objects and arrays (brackets inside strings do not count). Cheap: text
    with at most ``limit`` opening brackets is answered by counting them."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        # each pass removes the innermost level of every container
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


# a \u0000 escape that is not itself escaped (preceded by an even number of backslashes)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(data: bytes) -> bool:
    """Whether JSON text ``data`` holds the NUL character (``\\u0000``), which
    PostgreSQL cannot store in text (nor in ``jsonb``)."""
    if b"\\u0000" not in data:  # a raw NUL byte is no JSON at all: the parser refuses it
        return False
    return _NUL_ESCAPE.search(data) is not None


def nul_message(what: str) -> str:
    return f"{what} must not contain the NUL character (\\u0000)"


def nesting_message(what: str) -> str:
    return (
        f"{what} nests objects and arrays more than {MAX_NESTING} levels deep; "
        f"at most {MAX_NESTING} levels are allowed"
    )


def _members(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) texts of a JSON object text, found by a scan of its
    tokens that keeps a depth count instead of recursing."""
    out: list[tuple[bytes, bytes]] = []
    depth = 0
    key: bytes | None = None
    value_start = -1
    for match in _TOKEN.finditer(data):
        first = data[match.start()]
        if depth == 1:
            if first == _QUOTE and value_start < 0:
                key = match.group()
                continue
            if first == _COLON:
                value_start = match.end()
                continue
            if first in (_COMMA, _END):
                if key is not None and value_start >= 0:
                    out.append((key, data[value_start : match.start()].strip()))
                key, value_start = None, -1
                if first == _END:
                    break
                continue
        if first in _OPEN:
            depth += 1
        elif first in _CLOSE:
            depth -= 1
    return out


def _decode(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def read_object(text: str | bytes | None) -> dict[str, Any]:
    """A stored JSON object (traits), as a dict that nests at most
    ``MAX_NESTING`` levels. Text that is not an object reads as ``{}``; a
    member that nests deeper (stored before the limit) reads as its JSON
    text, a string, so that it can still be shown and never breaks a read."""
    if not text:
        return {}
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    if not nests_deeper(data):
        value = _decode(data)
        return value if isinstance(value, dict) else {}
    if not data.lstrip().startswith(b"{"):
        return {}
    out: dict[str, Any] = {}
    for key_text, value_text in _members(data):
        key = _decode(key_text)
        if not isinstance(key, str):
            continue
        shown = value_text.decode("utf-8", "replace")
        if nests_deeper(value_text, MAX_NESTING - 1):
            out[key] = shown
            continue
        try:
            out[key] = msgspec.json.decode(value_text)
        except msgspec.DecodeError:
            out[key] = shown
    return out
