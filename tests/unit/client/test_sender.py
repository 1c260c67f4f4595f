"""``tally.client.sender``: refusals, retries and answers of ``/event-batch``.

The server here is a fake inside the unit test (``httpx.MockTransport`` or a
function); the end-to-end tests (tests/e2e/test_import.py) use the real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from tally.client.sender import Answer, BatchPoster, Fatal, read_answer, send_all

PREFIX = "events[{}] was refused, so nothing in this batch was stored: "


def judge(bad: set[bytes], sizes: list[int]) -> Callable[[list[bytes]], object]:
    """A server that checks a batch in order and names its first bad event."""

    async def post(events: list[bytes]) -> Answer:
        sizes.append(len(events))
        for i, event in enumerate(events):
            if event in bad:
                return Answer(ok=False, index=i, reason=f"bad {event.decode()}")
        return Answer(ok=True, duplicates=sum(1 for e in events if e.startswith(b"dup")))

    return post


def test_refused_events_are_set_aside_and_the_rest_stored() -> None:
    events = [f"e{i}".encode() for i in range(20)]
    bad = {b"e3", b"e4", b"e11", b"e19"}
    sizes: list[int] = []
    out = asyncio.run(send_all(events, judge(bad, sizes)))  # type: ignore[arg-type]
    assert sorted(p for p, _ in out.rejected) == [3, 4, 11, 19]
    assert dict(out.rejected)[11] == "bad e11"
    assert out.accepted == 16 and out.duplicates == 0
    assert out.requests == len(sizes)


def test_a_run_of_bad_events_costs_small_requests() -> None:
    events = [f"e{i}".encode() for i in range(1000)]
    bad = set(events)
    sizes: list[int] = []
    out = asyncio.run(send_all(events, judge(bad, sizes)))  # type: ignore[arg-type]
    assert len(out.rejected) == 1000 and out.accepted == 0
    # not 1000 + 999 + … events: the requests shrink to one event each
    assert sum(sizes) < 5 * 1000


def test_duplicates_are_counted_apart() -> None:
    events = [b"dup1", b"new1", b"dup2"]
    out = asyncio.run(send_all(events, judge(set(), [])))  # type: ignore[arg-type]
    assert (out.accepted, out.duplicates) == (1, 2)


def test_a_refusal_naming_no_event_is_narrowed_to_one() -> None:
    calls: list[int] = []

    async def post(events: list[bytes]) -> Answer:
        calls.append(len(events))
        if b"big" in events:
            return Answer(ok=False, reason="request too large")
        return Answer(ok=True)

    events = [b"a", b"b", b"big", b"c", b"d"]
    out = asyncio.run(send_all(events, post))
    assert out.rejected == [(2, "request too large")]
    assert out.accepted == 4


def test_read_answer_counts_duplicate_entries() -> None:
    body = {"data": {"events": [{"event_id": "e1"}, {"event_id": "e2", "duplicate": True}]}}
    assert read_answer(json.dumps(body).encode()) == 1
    assert read_answer(b'{"data": {"events": [{"event_id": "e1"}]}}') == 0
    assert read_answer(b"not json") == 0


def run_poster(
    answers: list[httpx.Response | Exception], give_up_after: float = 100.0
) -> tuple[Answer | Exception, int, list[float]]:
    """Post one batch to a transport answering ``answers`` in turn."""
    sent: list[httpx.Request] = []
    slept: list[float] = []
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = answers[min(len(sent), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def go() -> Answer | Exception:
        client = httpx.AsyncClient(base_url="http://t", transport=httpx.MockTransport(handler))
        poster = BatchPoster(client, give_up_after, sleep=sleep, clock=lambda: now[0])
        try:
            return await poster([b'{"a":1}', b'{"b":2}'])
        except Fatal as err:
            return err
        finally:
            await client.aclose()

    result = asyncio.run(go())
    assert all(r.content == b'{"events":[{"a":1},{"b":2}]}' for r in sent)
    return result, len(sent), slept


def created(duplicates: int = 0) -> httpx.Response:
    entries = [{"event_id": "e", "duplicate": True}] * duplicates + [{"event_id": "f"}]
    return httpx.Response(201, json={"data": {"events": entries}})


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, json={"error": "restarting"}),
        httpx.Response(500, text="oops"),
        httpx.Response(429, json={"error": "slow down"}),
        httpx.Response(408, json={"error": "timeout"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("closed"),
    ],
)
def test_retried_with_growing_delays(failure: httpx.Response | Exception) -> None:
    result, requests, slept = run_poster([failure, failure, failure, created(1)])
    assert result == Answer(ok=True, duplicates=1)
    assert requests == 4
    assert len(slept) == 3 and slept[0] < slept[1] < slept[2]


def test_a_refusal_is_never_retried_and_names_the_event() -> None:
    refused = httpx.Response(
        400, json={"error": PREFIX.format(7) + "quantity must be a non-zero integer"}
    )
    result, requests, _ = run_poster([refused, created()])
    assert result == Answer(ok=False, index=7, reason="quantity must be a non-zero integer")
    assert requests == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_other_client_errors_stop_the_import(status: int) -> None:
    result, requests, _ = run_poster([httpx.Response(status, json={"error": "no such key"})])
    assert isinstance(result, Fatal) and f"{status} no such key" in str(result)
    assert requests == 1


def test_it_gives_up_when_the_server_stays_away() -> None:
    result, requests, slept = run_poster([httpx.ConnectError("refused")], give_up_after=30.0)
    assert isinstance(result, Fatal) and "30 s" in str(result)
    assert sum(slept[:-1]) < 30.0 <= sum(slept)
    assert requests == len(slept) + 1


def test_retry_after_is_honoured() -> None:
    busy = httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "busy"})
    _, _, slept = run_poster([busy, created()])
    assert slept == [7.0]
