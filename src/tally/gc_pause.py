"""Python's cyclic garbage collector: held off during a batch, and kept off
what a process holds from start-up.

A processing batch allocates tens of thousands of short-lived objects
(decoded bodies, rows, records); reference counting frees them, but their
allocation alone triggers the cyclic collector again and again, and each
older-generation pass walks every live object of the process. Profiled on
SQLite with batches of 20,000 events, those passes took 12% of processing.
Held off for the batch, the collector runs once afterwards as usual.

A serving process also holds some 50,000 objects from start-up (modules,
classes, the app, its settings and connections) that live as long as it
does, and every full collection walked them all: 25 to 38 ms each on the
2-core development machine, every few seconds under load, and each one a
request that waited that long (the p99 of the read endpoints). Frozen once
start-up is done (``freeze_startup``), they are out of every later pass,
which then costs a few milliseconds at most.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection inside the block (threads included: the
    switch is per process). Nested or concurrent blocks never leave it off:
    only the block that turned it off turns it on again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_startup() -> None:
    """Collect start-up's garbage, then keep every object alive now out of
    the collector's passes for good (``gc.freeze``). For a long-running
    process, once it has opened what it serves with: what start-up made and
    later drops is freed by reference counting as usual; only a reference
    cycle of it would stay, once."""
    gc.collect()
    gc.freeze()
