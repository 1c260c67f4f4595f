"""Sending events through ``POST /event-batch``.

``BatchPoster`` makes one request and reads its answer, retrying with
exponential backoff (and jitter) on connection errors, timeouts, 5xx, 408
and 429 — a resend is safe: every event carries an idempotency key. Any
other 4xx is never retried: a 400/413/422 is a refusal of the batch, any
other one (a wrong key, a wrong URL) stops the import.

``send_all`` gets every event of a chunk stored, or set aside with the
server's reason: ``/event-batch`` refuses a whole batch for one bad event and
names it (``events[i]``), so the bad event is taken out and the rest sent again.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import msgspec

BATCH_PATH = "/event-batch"
MAX_EVENTS = 1000  # the server's limit per /event-batch
FIRST_DELAY = 0.25
MAX_DELAY = 15.0
_REFUSED = re.compile(
    r"^events\[(\d+)\] was refused, so nothing in this batch was stored: (.*)$", re.DOTALL
)
_REFUSALS = (400, 413, 422)


class Fatal(Exception):
    """The import cannot go on: the server refuses the key or the URL, or has
    not answered for too long. What was acknowledged is in the checkpoint."""


@dataclass(frozen=True)
class Answer:
    """The server's answer to one batch: stored (``ok``, with how many of its
    events were duplicates), or refused (``index``: the event it names)."""

    ok: bool
    duplicates: int = 0
    index: int | None = None
    reason: str = ""


Post = Callable[[list[bytes]], Awaitable[Answer]]


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)
    requests: int = 0


async def send_all(events: Sequence[bytes], post: Post) -> Outcome:
    """Send ``events``; a refused event is set aside with the server's reason
    and the others sent again, until each is stored or set aside.

    The server checks a batch in order, so the events before a refused one
    passed: they go next, alone. After a refusal of the first event the next
    request is half as large, so a run of bad events costs small requests
    rather than the whole batch once per bad event; after a success the
    request is as large as what is left."""
    pending = list(range(len(events)))
    cap = len(pending)
    out = Outcome()
    while pending:
        part = pending[:cap]
        answer = await post([events[p] for p in part])
        out.requests += 1
        if answer.ok:
            out.duplicates += answer.duplicates
            out.accepted += len(part) - answer.duplicates
            del pending[: len(part)]
            cap = len(pending)
        elif answer.index is not None and 0 <= answer.index < len(part):
            out.rejected.append((part[answer.index], answer.reason))
            del pending[answer.index]
            cap = answer.index or max(1, len(part) // 2)
        elif len(part) == 1:  # a refusal that names no event: it is this one
            out.rejected.append((part[0], answer.reason))
            del pending[0]
            cap = len(pending)
        else:  # which one is unknown: halve until it is alone
            cap = max(1, len(part) // 2)
    return out


class _Entry(msgspec.Struct):
    duplicate: bool = False


class _Data(msgspec.Struct):
    events: list[_Entry]


class _Created(msgspec.Struct):
    data: _Data


class _Error(msgspec.Struct):
    error: str = ""


def read_answer(content: bytes) -> int:
    """How many entries of a 201 answer are duplicates (``"duplicate": true``;
    a server that does not say so counts none)."""
    try:
        created = msgspec.json.decode(content, type=_Created)
    except msgspec.DecodeError:
        return 0
    return sum(1 for entry in created.data.events if entry.duplicate)


def read_refusal(status: int, content: bytes) -> Answer:
    message = error_message(status, content)
    match = _REFUSED.match(message)
    if match:
        return Answer(ok=False, index=int(match.group(1)), reason=match.group(2))
    return Answer(ok=False, reason=message)


def error_message(status: int, content: bytes) -> str:
    try:
        message = msgspec.json.decode(content, type=_Error).error
    except msgspec.DecodeError:
        message = ""
    return message or f"HTTP {status}: {content[:200].decode('utf-8', 'replace')}"


def batch_body(events: Sequence[bytes]) -> bytes:
    return b'{"events":[' + b",".join(events) + b"]}"


class BatchPoster:
    """``post`` for ``send_all`` over an ``httpx.AsyncClient`` whose base URL
    and headers (the API key) are set."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        give_up_after: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str], None] = lambda problem: None,
    ) -> None:
        self._client = client
        self._give_up_after = give_up_after
        self._sleep = sleep
        self._clock = clock
        self._on_retry = on_retry
        self.retries = 0

    async def __call__(self, events: list[bytes]) -> Answer:
        body = batch_body(events)
        delay = FIRST_DELAY
        failing_since: float | None = None
        while True:
            wait = 0.0
            try:
                resp = await self._client.post(BATCH_PATH, content=body)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}".rstrip(": ")
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return Answer(ok=True, duplicates=read_answer(resp.content))
                if status in _REFUSALS:
                    return read_refusal(status, resp.content)
                problem = f"{status} {error_message(status, resp.content)}"
                if not (status in (408, 429) or status >= 500):
                    raise Fatal(f"the server answered {problem}")
                wait = _retry_after(resp.headers.get("retry-after"))
            now = self._clock()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= self._give_up_after:
                raise Fatal(
                    f"the server has not taken a batch for {self._give_up_after:g} s "
                    f"(last: {problem})"
                )
            self.retries += 1
            self._on_retry(problem)
            await self._sleep(max(wait, delay * random.uniform(0.8, 1.2)))
            delay = min(delay * 2, MAX_DELAY)


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return min(seconds, MAX_DELAY) if math.isfinite(seconds) and seconds > 0 else 0.0
