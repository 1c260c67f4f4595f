"""In-process HTTP tests of the tally app: one app per test on a fresh SQLite
file, a FrozenClock, and keys of every kind made through ``tally.keys``."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from tally.api.app import create_app
from tally.clock import FrozenClock
from tally.effects.targets import Resolver, TableResolver
from tally.keys import create_key
from tally.settings import Settings
from tests.support.clock import NOW, NOW_TEXT, frozen_clock  # noqa: F401 (NOW*: for the tests)
from tests.support.drain import drain

# Starlette 1.x warns at import when the test client falls back to httpx
# (it prefers httpx2); the warning is about the test tool, not about tally.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient`",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient


@dataclass
class Api:
    """The running app, its client and clock, and one key of each kind."""

    app: Starlette
    client: TestClient
    clock: FrozenClock
    secret: str
    publishable: str
    read_only: str
    other_env: str  # a secret key of a second environment ("staging")
    secret_id: str
    environment_id: str
    other_environment_id: str

    @property
    def storage(self) -> Any:
        return self.app.state.tally.storage

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a coroutine function on the client's event loop."""
        return self.client.portal.call(functools.partial(fn, *args, **kwargs))

    def drain(self) -> int:
        """Process every pending event (``tests.support.drain``); returns how many."""
        return int(self.run(drain, self.storage, 1000))

    def new_key(self, environment: str = "development", **kwargs: bool) -> tuple[Any, str]:
        record, plaintext, _ = self.run(create_key, self.storage, environment, **kwargs)
        return record, plaintext

    def revoke(self, key_id: str) -> Any:
        return self.run(self.storage.revoke_api_key, key_id)

    # -- requests -----------------------------------------------------------
    def headers(self, key: str | None) -> dict[str, str]:
        return {} if key is None else {"X-Schematic-Api-Key": key}

    def post(self, path: str, payload: Any = None, *, key: str | None = "", **kwargs: Any) -> Any:
        use = self.secret if key == "" else key
        if payload is not None:
            kwargs["json"] = payload
        headers = {**self.headers(use), **kwargs.pop("headers", {})}
        return self.client.post(path, headers=headers, **kwargs)

    def get(self, path: str, *, key: str | None = "", **kwargs: Any) -> Any:
        use = self.secret if key == "" else key
        headers = {**self.headers(use), **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def create(self, event_type: str, body: Any, *, key: str | None = "", **fields: Any) -> Any:
        return self.post("/events", {"event_type": event_type, "body": body, **fields}, key=key)

    def list_events(self, *, key: str | None = "", **params: Any) -> list[dict[str, Any]]:
        response = self.get("/events", key=key, params=params)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


def make_app(
    tmp_path: Path,
    clock: FrozenClock,
    *,
    worker: bool = False,
    deliver: bool = False,
    resolver: Resolver | None = None,
    **settings: Any,
) -> Starlette:
    """The app under test. The processing worker and the delivery loop are off
    by default, so that an accepted event stays exactly as ingestion stored it
    (``pending``). Webhooks may target private addresses (the test receivers
    are on 127.0.0.1) unless ``webhook_allow_private=False``; host names are
    resolved through ``resolver`` (by default a table that knows no name: no
    test asks a DNS server)."""
    config = Settings(
        database_url=f"sqlite:///{tmp_path}/t.db",
        key_cache_seconds=0,
        worker=worker,
        deliver=deliver,
        **{"webhook_allow_private": True, **settings},
    )
    return create_app(config, storage=None, clock=clock, resolver=resolver or TableResolver())


@pytest.fixture
def clock() -> FrozenClock:
    return frozen_clock()


@contextlib.contextmanager
def open_api(
    tmp_path: Path, clock: FrozenClock, *, worker: bool = False, wrap: Any = None, **settings: Any
) -> Iterator[Api]:
    """Start the app (its lifespan opens storage) and make one key of each kind.
    ``wrap`` turns the app into the ASGI callable the client drives;
    ``settings`` go to ``make_app``."""
    app = make_app(tmp_path, clock, worker=worker, **settings)
    with TestClient(wrap(app) if wrap is not None else app) as client:
        storage = app.state.tally.storage

        def key(environment: str, **kwargs: bool) -> tuple[Any, str]:
            record, plaintext, _ = client.portal.call(
                functools.partial(create_key, storage, environment, **kwargs)
            )
            return record, plaintext

        secret_record, secret = key("development")
        _, publishable = key("development", publishable=True)
        _, read_only = key("development", read_only=True)
        other_record, other = key("staging")
        assert secret.startswith("sch_dev_")
        assert publishable.startswith("api_")
        assert read_only.startswith("sch_dev_")
        assert other.startswith("sch_stag_")
        assert other_record.environment_id != secret_record.environment_id
        yield Api(
            app=app,
            client=client,
            clock=clock,
            secret=secret,
            publishable=publishable,
            read_only=read_only,
            other_env=other,
            secret_id=secret_record.id,
            environment_id=secret_record.environment_id,
            other_environment_id=other_record.environment_id,
        )


@pytest.fixture
def api(tmp_path: Path, clock: FrozenClock) -> Iterator[Api]:
    with open_api(tmp_path, clock) as running:
        yield running
