"""``tally.ids``: a prefix plus a 32-hex-digit, time-sortable part."""

from __future__ import annotations

import re
import threading
import time
from itertools import pairwise

from tally import ids

ULID_PART = re.compile(r"^[0-9a-f]{32}$")  # 48-bit ms timestamp + 80 random bits, hex


def decode(part: str) -> int:
    return ids.decode(part)


def test_id_is_prefix_underscore_and_32_hex_digits() -> None:
    event_id = ids.new_id("evt")
    prefix, part = event_id.split("_", 1)
    assert prefix == "evt"
    assert len(part) == 32
    assert ULID_PART.match(part)


def test_prefixes_are_kept_verbatim() -> None:
    for prefix in ("env", "comp", "user", "feat", "wh", "key"):
        made = ids.new_id(prefix)
        assert made.startswith(prefix + "_")
        assert len(made) == len(prefix) + 1 + 32


def test_ids_are_strictly_increasing_within_a_process() -> None:
    made = [ids.new_id("evt") for _ in range(50_000)]
    assert all(a < b for a, b in pairwise(made))
    assert len(set(made)) == len(made)


def test_raw_parts_are_strictly_increasing_as_numbers_too() -> None:
    gen = ids.IdGenerator()
    values = [decode(gen.next_raw()) for _ in range(10_000)]
    assert all(a < b for a, b in pairwise(values))


def test_timestamp_part_is_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    part = ids.IdGenerator().next_raw()
    after = time.time_ns() // 1_000_000
    ms = decode(part) >> 80
    assert before <= ms <= after


def test_ids_made_later_sort_later() -> None:
    first = ids.new_id("evt")
    time.sleep(0.003)
    second = ids.new_id("evt")
    assert first < second
    assert decode(second.split("_")[1]) >> 80 > decode(first.split("_")[1]) >> 80


def test_generator_is_thread_safe_and_unique() -> None:
    gen = ids.IdGenerator()
    results: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def work(out: list[str]) -> None:
        start.wait()
        for _ in range(5_000):
            out.append(gen.new("evt"))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for out in results for i in out]
    assert len(set(everything)) == 40_000
    for out in results:  # each thread sees its own ids increasing
        assert all(a < b for a, b in pairwise(out))


def test_random_token_is_url_safe_and_unique() -> None:
    tokens = {ids.random_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9]+", token)
        assert len(token) == 32  # 24 bytes of base64
