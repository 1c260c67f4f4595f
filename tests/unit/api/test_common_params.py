"""The query parameters every resource of the API reads the same way
(``tally.api.common.params`` and ``paging``)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from tally.api.common.paging import MAX_LIMIT, page
from tally.api.common.params import echo, query_bool, query_int, query_list, query_map
from tally.errors import Invalid


def request(query: str) -> Request:
    return Request({"type": "http", "query_string": query.encode(), "headers": []})


def test_a_map_is_read_in_both_forms() -> None:
    assert query_map(request("keys[id]=acme&keys[slug]=a"), "keys") == {"id": "acme", "slug": "a"}
    assert query_map(request('keys={"id":"acme"}'), "keys") == {"id": "acme"}
    assert query_map(request("keys="), "keys") == {}  # sent empty: absent
    assert query_map(request("other[id]=acme"), "keys") == {}


@pytest.mark.parametrize("text", ["keys=[1]", "keys={", 'keys={"id":1}'])
def test_a_map_in_json_that_is_not_an_object_of_strings_is_refused(text: str) -> None:
    with pytest.raises(Invalid, match="keys"):
        query_map(request(text), "keys")


def test_bool_int_and_list() -> None:
    assert query_bool(request("a=TRUE&b=0&c="), "a") is True
    assert query_bool(request("b=0"), "b") is False
    assert query_bool(request("c="), "c") is None
    with pytest.raises(Invalid, match="a must be true or false, not 'yes'"):
        query_bool(request("a=yes"), "a")
    assert query_int(request("n=7"), "n", 1, 0, 9) == 7
    with pytest.raises(Invalid, match="n must be between 0 and 9, not 10"):
        query_int(request("n=10"), "n", 1, 0, 9)
    assert query_list(request("a=1&a[]=2&a="), "a") == ["1", "2"]
    with pytest.raises(Invalid, match="a takes at most 1 values"):
        query_list(request("a=1&a=2"), "a", most=1)


def test_paging_is_echoed_and_bounded() -> None:
    params: dict[str, Any] = {}
    assert page(request("offset=5"), params) == (100, 5)
    assert params == {"limit": 100, "offset": 5}
    with pytest.raises(Invalid, match=f"limit must be between 0 and {MAX_LIMIT}"):
        page(request(f"limit={MAX_LIMIT + 1}"), {})


def test_echo_leaves_out_what_was_not_sent() -> None:
    params: dict[str, Any] = {}
    assert echo(params, "q", None) is None
    assert echo(params, "ids", []) == []
    assert echo(params, "flag", False) is False
    assert params == {"flag": False}
