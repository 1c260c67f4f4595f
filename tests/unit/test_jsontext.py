"""``tally.jsontext``: the nesting limit, measured without recursion, and
stored objects read back whatever they hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tally.jsontext import MAX_NESTING, has_nul, nests_deeper, read_object

_TEXT = st.text(alphabet='ab[]{}"\\:, ', max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nest(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


@settings(max_examples=300, derandomize=True, database=None)
@given(_JSON, st.integers(min_value=0, max_value=8), st.booleans())
@example("[", 0, False)  # a bracket in a string, and no container at all
def test_nesting_is_measured_like_a_recursive_walk(value: Any, limit: int, pretty: bool) -> None:
    text = json.dumps(value, indent=2 if pretty else None).encode()
    assert nests_deeper(text, limit) == (depth(value) > limit)


def test_the_limit_is_32_levels_and_brackets_in_strings_do_not_count() -> None:
    assert not nests_deeper(nest(32).encode())
    assert nests_deeper(nest(33).encode())
    assert not nests_deeper(json.dumps({"a": "[" * 100, "b": '\\"{{{{'}).encode())
    assert nests_deeper(nest(100_000).encode())  # no recursion, whatever the depth


def test_a_stored_object_within_the_limit_reads_as_it_was() -> None:
    traits = {"plan": "pro", "n": None, "deep": json.loads(nest(MAX_NESTING - 1))}
    assert read_object(json.dumps(traits)) == traits
    assert read_object("") == {}
    assert read_object("[1]") == {}
    assert read_object("not json") == {}


def test_a_member_stored_deeper_than_the_limit_reads_as_its_text() -> None:
    """Values stored before the limit existed must not break a read: the
    deep member becomes its JSON text; its neighbours keep their values."""
    poison = nest(5_000)
    text = '{"plan": "pro", "poison": ' + poison + ', "s": "x\\"}{", "n": null, "z": [1, {}]}'
    out = read_object(text)
    assert out == {"plan": "pro", "poison": poison, "s": 'x"}{', "n": None, "z": [1, {}]}
    assert depth(out) <= MAX_NESTING
    assert read_object(nest(5_000)) == {}


def test_nul_is_found_only_where_json_text_holds_it() -> None:
    assert has_nul(rb'{"a":"\u0000"}')
    assert has_nul(rb'{"a":"x\\\u0000"}')  # an escaped backslash, then NUL
    assert not has_nul(rb'{"a":"x\\u0000"}')  # an escaped backslash, then the text u0000
    assert not has_nul(b'{"a":"plain"}')
