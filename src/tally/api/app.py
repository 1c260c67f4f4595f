"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tally.api import health, metrics, openapi
from tally.api.asgi import nul_screen
from tally.api.auth import Authenticator
from tally.api.catalog.routes import routes as catalog_routes
from tally.api.common.envelope import error_response, plain_error
from tally.api.common.routing import ApiRoute
from tally.api.companies.routes import routes as company_routes
from tally.api.events.routes import routes as event_routes
from tally.api.state import AppState
from tally.api.webhooks.routes import routes as webhook_routes
from tally.background import open_serving_storage, start_loops
from tally.clock import Clock, SystemClock, to_micros
from tally.console.app import console_routes
from tally.effects.sender import Guard
from tally.effects.targets import Resolver, SystemResolver
from tally.errors import TallyError
from tally.gc_pause import freeze_startup
from tally.key_notice import KeyNotice, notice_path
from tally.observe.lag import LagWatch
from tally.observe.metrics import flush_every, share_through
from tally.observe.requests import ObserveRequests
from tally.settings import Settings
from tally.storage.base import Storage

log = logging.getLogger(__name__)


async def _tally_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TallyError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return plain_error(f"no such endpoint: {request.method} {request.url.path}", 404)
    if exc.status_code == 405:
        return plain_error(
            f"{request.method} is not allowed on {request.url.path}", 405, headers=exc.headers
        )
    return plain_error(str(exc.detail), exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return plain_error("internal error; the request may be retried", 500)


def api_routes() -> list[BaseRoute]:
    """The route table of the API; each route carries its OpenAPI operation,
    and the document (``tally.api.openapi``) is built from this table."""
    return [
        *event_routes,  # first: POST /events is the hot path, matched in order
        ApiRoute("GET", "/health", health.health, openapi.HEALTH),
        ApiRoute("GET", "/openapi.json", openapi.serve, openapi.SELF),
        *company_routes,
        *catalog_routes,
        *webhook_routes,
        *metrics.routes,
    ]


def create_app(
    settings: Settings,
    storage: Storage | None = None,
    clock: Clock | None = None,
    resolver: Resolver | None = None,
    *,
    serving: bool = False,
) -> Starlette:
    """Build the app. Storage is opened (and closed) by the app's lifespan;
    ``resolver`` resolves webhook hosts (tests pass a table). ``serving``:
    this process serves the app until it stops (``tally serve``), so once
    started, what start-up made is kept out of the garbage collector's
    passes (``tally.gc_pause.freeze_startup``; never in a process that builds
    app after app, such as the tests')."""
    clock = clock or SystemClock()
    if settings.metrics_dir:  # one of the processes of a tally serve
        share_through(settings.metrics_dir)
    store = storage or open_serving_storage(settings, clock)
    state = AppState(
        settings=settings,
        storage=store,
        clock=clock,
        auth=Authenticator(
            store, settings.key_cache_seconds, KeyNotice(notice_path(settings.database_url))
        ),
        guard=Guard(settings.webhook_allow_private, resolver or SystemResolver()),
        lag=LagWatch(
            store.pending_backlog, lambda: to_micros(clock.now()), settings.lag_warning_seconds
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        stop = asyncio.Event()
        tasks = start_loops(settings, store, stop, clock)
        tasks.append(asyncio.create_task(flush_every(stop), name="tally-metrics-flush"))
        if settings.metrics_dir:  # a tally serve: one of its processes warns of a lag
            watch = state.lag.watch(stop, settings.metrics_dir)
            tasks.append(asyncio.create_task(watch, name="tally-lag-watch"))
        if serving:
            freeze_startup()
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                await task
            await store.close()

    app = Starlette(
        routes=[*api_routes(), *(console_routes(state) if settings.console else [])],
        middleware=[Middleware(ObserveRequests, screen=nul_screen)],
        exception_handlers={
            TallyError: _tally_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.tally = state
    return app


def app_from_environment() -> Starlette:
    """The app of one ``tally serve --workers N`` process, from ``TALLY_…`` variables."""
    return create_app(Settings.from_env(), serving=True)
