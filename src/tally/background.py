"""The loops a serving process runs beside its requests: the processing
worker (``TALLY_WORKER``), the delivery loop (``TALLY_DELIVER``) and, with
either, the pruning loop (``TALLY_PRUNE``). The app runs them, or, on
SQLite, the storage process (``tally.storage.process``). Both open
their storage here, handed the pipeline's processing."""

from __future__ import annotations

import asyncio

from tally.clock import Clock
from tally.effects.delivery import Deliverer, DeliveryConfig
from tally.pipeline.processing import PIPELINE
from tally.pipeline.worker import Worker
from tally.retention.loop import Pruner
from tally.settings import Settings
from tally.storage import open_storage
from tally.storage.base import Storage


def open_serving_storage(settings: Settings, clock: Clock | None = None) -> Storage:
    """The storage of a serving process (the app's own, or the storage
    process's), handed the pipeline's processing, which its worker, its
    processing as stored and its admin upserts run (storage never imports
    the pipeline: ``tally.storage.base_batch``)."""
    return open_storage(settings, clock, processing=PIPELINE)


def start_loops(
    settings: Settings, storage: Storage, stop: asyncio.Event, clock: Clock | None = None
) -> list[asyncio.Task[None]]:
    """Start the loops the settings ask for; each ends once ``stop`` is set."""
    tasks: list[asyncio.Task[None]] = []
    storage.process_as_stored(settings.worker and settings.process_as_stored)
    if settings.worker:
        worker = Worker(
            storage,
            batch_size=settings.worker_batch_size,
            linger_seconds=settings.worker_linger_ms / 1000,
        )
        tasks.append(asyncio.create_task(worker.run_forever(stop), name="tally-worker"))
    if settings.deliver:
        deliverer = Deliverer(storage, DeliveryConfig.from_settings(settings), clock)
        tasks.append(asyncio.create_task(deliverer.run_forever(stop), name="tally-delivery"))
    if settings.prune and tasks:
        pruner = Pruner(storage, settings.retention, clock)
        tasks.append(asyncio.create_task(pruner.run_forever(stop), name="tally-prune"))
    return tasks
