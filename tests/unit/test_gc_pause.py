"""The collector's policy (``tally.gc_pause``): start-up frozen out of its
passes in a serving process, and only there."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tally.api.app import create_app
from tally.gc_pause import freeze_startup, gc_paused
from tally.settings import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Whatever a test freezes goes back to the collector afterwards."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_freeze_startup_keeps_what_lives_and_collects_the_garbage_first(unfrozen: None) -> None:
    kept = _Node()
    dropped = _Node()
    del dropped  # start-up's garbage, a cycle reference counting cannot free
    freeze_startup()
    frozen = gc.get_freeze_count()
    # the cycle was collected before the freeze: no _Node but the kept one is left
    # frozen objects are not the collector's: not even the kept one is listed
    assert [o for o in gc.get_objects() if isinstance(o, _Node)] == []
    gc.unfreeze()
    # back with the collector: the kept one only (the dropped cycle was collected)
    assert [o for o in gc.get_objects() if isinstance(o, _Node)] == [kept]
    assert frozen > 0


def test_a_later_pass_skips_what_was_frozen(unfrozen: None) -> None:
    freeze_startup()
    before = gc.get_freeze_count()
    made_later = [_Node() for _ in range(3)]
    gc.collect()
    assert gc.get_freeze_count() == before  # later objects stay the collector's
    assert sum(isinstance(o, _Node) for o in gc.get_objects()) == len(made_later)


def test_gc_paused_turns_the_collector_back_on(unfrozen: None) -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outer block turns it on again
    assert gc.isenabled()


def _start(tmp_path: Path, *, serving: bool) -> int:
    tmp_path.mkdir()
    settings = Settings(database_url=f"sqlite:///{tmp_path}/t.db", worker=False, deliver=False)
    with TestClient(create_app(settings, serving=serving)) as client:
        assert client.get("/health").status_code == 200
        return gc.get_freeze_count()


def test_a_serving_app_freezes_start_up_and_a_test_app_does_not(
    tmp_path: Path, unfrozen: None
) -> None:
    assert _start(tmp_path / "a", serving=False) == 0
    assert _start(tmp_path / "b", serving=True) > 0
