"""The rights an admin call needs: a secret key, and to change things one
that is not read-only (``Authenticator.admin``)."""

from __future__ import annotations

from starlette.requests import Request

from tally.api.state import AppState
from tally.model import ApiKey


async def admin(request: Request, area: str, *, write: bool) -> tuple[AppState, ApiKey]:
    """The app's state and the caller's key, which may use the admin ``area``
    (such as "webhooks") to read or, with ``write``, to change it."""
    state: AppState = request.app.state.tally
    key = await state.auth.admin(request, area=area, write=write)
    return state, key
