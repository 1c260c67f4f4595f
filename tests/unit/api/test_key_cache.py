"""The key cache: strangers' made-up keys never evict valid ones, its memory
is bounded, a revoked key stops working within the cache's time, and the
CLI's notice drops the cache at once (storage here is a counting stand-in:
the real server's behaviour is in tests/e2e/test_key_revocation.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tally.api.auth import Authenticator
from tally.api.key_cache import MAX_UNKNOWN, MAX_VALID, KeyCache
from tally.errors import Unauthorized
from tally.key_notice import KeyNotice, announce, notice_path
from tally.keys import hash_key
from tally.model import ApiKey

VALID = "sch_dev_" + "v" * 24


def api_key(name: str = "k") -> ApiKey:
    return ApiKey(name, "env_1", "secret", False, "sch_dev_vvvvvv", 0)


class Keys:
    """Storage's ``find_api_key`` over a set of valid keys, counting look-ups."""

    def __init__(self, *valid: str) -> None:
        self.valid = {hash_key(k): api_key(k) for k in valid}
        self.lookups: Counter[str] = Counter()

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        self.lookups[key_hash] += 1
        return self.valid.get(key_hash)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_invalid_keys_does_not_evict_a_valid_one() -> None:
    storage = Keys(VALID)
    auth = Authenticator(storage, 60.0)  # type: ignore[arg-type]

    async def main() -> None:
        await auth.resolve(VALID)
        for n in range(15_000):
            with pytest.raises(Unauthorized):
                await auth.resolve(f"sch_dev_made_up_{n}")
        await auth.resolve(VALID)

    asyncio.run(main())
    assert storage.lookups[hash_key(VALID)] == 1  # still cached
    assert len(auth._cache) <= MAX_UNKNOWN + 1  # bounded


def test_unknown_keys_are_cached_briefly_and_long_ones_not_at_all() -> None:
    clock = Clock()
    cache = KeyCache(60.0, clock=clock)
    cache.put("nope", None)
    cache.put("x" * 1000, None)
    assert cache.get("nope") == (True, None)
    assert cache.get("x" * 1000) == (False, None)
    clock.now += 1.01
    assert cache.get("nope") == (False, None)


def test_valid_keys_are_kept_least_recently_used_first_out() -> None:
    cache = KeyCache(60.0, max_valid=3)
    for name in "abc":
        cache.put(name, api_key(name))
    assert cache.get("a")[1] is not None  # a is used: b is now the oldest
    cache.put("d", api_key("d"))
    assert [cache.get(n)[0] for n in "abcd"] == [True, False, True, True]
    assert cache.valid_count == 3 and MAX_VALID >= 10_000


def test_a_revoked_key_stops_working_within_the_cache_time() -> None:
    storage = Keys(VALID)
    auth = Authenticator(storage, 5.0)  # type: ignore[arg-type]
    clock = Clock()
    auth._cache = KeyCache(5.0, clock=clock)

    async def main() -> None:
        await auth.resolve(VALID)
        storage.valid.clear()  # revoked elsewhere (another host): no notice
        clock.now += 4.9
        await auth.resolve(VALID)  # still trusted, as documented
        clock.now += 0.2
        with pytest.raises(Unauthorized, match="revoked"):
            await auth.resolve(VALID)

    asyncio.run(main())


def test_the_cli_notice_drops_the_cache_at_once(tmp_path: Path) -> None:
    path = notice_path(f"sqlite:///{tmp_path}/t.db")
    assert path == f"{tmp_path}/t.db-keys"
    storage = Keys(VALID)
    auth = Authenticator(storage, 3600.0, KeyNotice(path, check_every=0))  # type: ignore[arg-type]

    async def main() -> None:
        await auth.resolve(VALID)
        await auth.resolve(VALID)
        assert storage.lookups[hash_key(VALID)] == 1
        storage.valid.clear()
        announce(path)
        with pytest.raises(Unauthorized):
            await auth.resolve(VALID)
        announce(path)  # every notice counts, however close in time
        storage.valid = {hash_key(VALID): api_key()}
        await auth.resolve(VALID)

    asyncio.run(main())
    assert storage.lookups[hash_key(VALID)] == 3
    assert (Path(path).stat().st_mode & 0o777) == 0o600


def test_the_notice_is_looked_at_seldom(tmp_path: Path) -> None:
    """One stat per ``check_every`` at most, whatever the request rate."""
    clock = Clock()
    path = str(tmp_path / "t.db-keys")
    notice = KeyNotice(path, check_every=0.05, clock=clock)
    assert not notice.changed()  # looked: nothing yet
    announce(path)
    assert not notice.changed()  # not looked again so soon
    clock.now += 0.05
    assert notice.changed()
    clock.now += 0.05
    assert not notice.changed()


def test_postgres_notices_are_named_after_the_url() -> None:
    a = notice_path("postgresql://postgres@127.0.0.1/a")
    assert a == notice_path("postgresql://postgres@127.0.0.1/a")
    assert a != notice_path("postgresql://postgres@127.0.0.1/b")
