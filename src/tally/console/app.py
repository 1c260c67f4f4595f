"""The console's routes: ``/`` (to the events page or the sign-in page) and
everything under ``/console/``. Pages need a session; data endpoints
(``/console/data/…``) answer 401 JSON without one; every POST needs the
session's CSRF token (a form field or the ``X-CSRF-Token`` header)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tally.api.common.bodies import read_body
from tally.api.state import AppState
from tally.console import entity_views, event_views, format, health_views, webhook_views
from tally.console.headers import SecurityHeaders
from tally.console.session import (
    COOKIE,
    SESSION_SECONDS,
    SIGN_IN_COOKIE,
    Sessions,
    SignInRefused,
    same_token,
)
from tally.console.session import set_cookie as set_session_cookie
from tally.errors import TallyError
from tally.keys import environment_kind
from tally.storage.base_console import ConsoleSession

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
View = Callable[["Console", Request, ConsoleSession], Awaitable[Response]]
STATUS = {"invalid": 400, "forbidden": 403, "not_found": 404, "too_large": 413}


class Console:
    """What the console's views share: storage, clock, sessions, templates."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.storage = state.storage
        self.clock = state.clock
        self.sessions = Sessions(
            state.storage, state.auth, state.clock, state.settings.key_cache_seconds
        )
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        format.register(self.templates.env)

    def render(
        self,
        request: Request,
        session: ConsoleSession | None,
        template: str,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        if session is not None:
            name = session.key.environment_name
            context.update(
                environment=name,
                environment_kind=environment_kind(name),
                csrf_token=session.csrf_token,
                can_write=session.key.can_write,
                key_prefix=session.key.prefix,
            )
        context.setdefault("nav", template.split(".")[0])
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- guards ----------------------------------------------------------------
    def guarded(
        self, view: View, *, data: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self.sessions.current(request)
            if session is None:
                if data:
                    return JSONResponse({"error": "sign in to the console first"}, 401)
                return RedirectResponse("/console/sign-in", 303)
            if request.method == "POST" and not await _csrf_ok(request, session.csrf_token):
                return self._refused(request, session, data)
            try:
                return await view(self, request, session)
            except TallyError as err:
                status = STATUS.get(err.category, 400)
                if data:
                    return JSONResponse({"error": err.message}, status)
                return self.render(
                    request, session, "error.html", status, message=err.message, nav=""
                )

        return endpoint

    def _refused(self, request: Request, session: ConsoleSession, data: bool) -> Response:
        message = "this form has expired or did not come from the console; reload and try again"
        if data:
            return JSONResponse({"error": message}, 403)
        return self.render(request, session, "error.html", 403, message=message, nav="")

    # -- sign-in and out ------------------------------------------------------
    async def home(self, request: Request) -> Response:
        session = await self.sessions.current(request)
        target = "/console/events" if session is not None else "/console/sign-in"
        return RedirectResponse(target, 303)

    async def sign_in_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        if await self.sessions.current(request) is not None and not error:
            return RedirectResponse("/console/events", 303)
        token = request.cookies.get(SIGN_IN_COOKIE) or ""
        if not token or len(token) > 100:
            token = secrets.token_urlsafe(32)
        response = self.render(
            request, None, "sign_in.html", status, error=error, sign_in_token=token, nav=""
        )
        set_session_cookie(response, request, SIGN_IN_COOKIE, token, 3600)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await _form(request)
        if form is None or not same_token(
            request.cookies.get(SIGN_IN_COOKIE), form.get("sign_in_token")
        ):
            return await self.sign_in_page(
                request, "The sign-in form expired; paste the key again.", 403
            )
        try:
            token, _ = await self.sessions.open(str(form.get("key") or ""))
        except SignInRefused as refused:
            # 200: the form again, with why (a 4xx document is a console error in browsers)
            return await self.sign_in_page(request, str(refused))
        response = RedirectResponse("/console/events", 303)
        set_session_cookie(response, request, COOKIE, token, SESSION_SECONDS)
        response.delete_cookie(SIGN_IN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def sign_out(self, request: Request, session: ConsoleSession) -> Response:
        await self.sessions.close(request)
        response = RedirectResponse("/console/sign-in", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


async def _form(request: Request) -> dict[str, Any] | None:
    """The urlencoded form of a POST (None when it is missing or too large)."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return None
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


async def _csrf_ok(request: Request, expected: str) -> bool:
    header = request.headers.get("x-csrf-token")
    if header is not None:
        return same_token(expected, header)
    form = await _form(request)
    return form is not None and same_token(expected, form.get("csrf_token"))


def console_routes(state: AppState) -> list[BaseRoute]:
    """``/`` and ``/console/…``."""
    c = Console(state)
    pages: list[tuple[str, View, list[str]]] = [
        ("/sign-out", Console.sign_out, ["POST"]),
        *event_views.pages,
        *entity_views.pages,
        *webhook_views.pages,
        *health_views.pages,
    ]
    data: list[tuple[str, View, list[str]]] = [
        *event_views.data,
        *health_views.data,
    ]

    async def sign_in_page(request: Request) -> Response:
        return await c.sign_in_page(request)

    routes: list[BaseRoute] = [
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", c.sign_in, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        *(Route(path, c.guarded(view), methods=methods) for path, view, methods in pages),
        *(
            Route(f"/data{path}", c.guarded(view, data=True), methods=methods)
            for path, view, methods in data
        ),
    ]
    return [
        Route("/", c.home, methods=["GET"], middleware=[Middleware(SecurityHeaders)]),
        Mount("/console", routes=routes, middleware=[Middleware(SecurityHeaders)]),
    ]
