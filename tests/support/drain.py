"""Process every pending event the way ``tally serve`` does: the worker's own
loop (``Worker.run_until_idle``), so a test drains the queue exactly as the
server would, poison events set aside included."""

from __future__ import annotations

from tally.pipeline.worker import Worker
from tally.storage.base import Storage


async def drain(storage: Storage, batch_size: int = 500) -> int:
    """Process until no event is pending; returns how many were processed."""
    return await Worker(storage, batch_size=batch_size).run_until_idle()
