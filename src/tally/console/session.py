"""Console sign-in: a pasted secret key opens a session.

The browser gets an opaque random token in an HttpOnly, SameSite=Strict
cookie (Secure over https); the database keeps only its hash, with the key it
was opened with and the session's CSRF token, so every ``tally serve``
process (and every machine on one PostgreSQL) knows every session. Each
request re-reads the session with its key (cached for
``TALLY_KEY_CACHE_SECONDS``), so a revoked key or a signed-out session stops
working within that delay. The key itself is never stored, logged or put in
a URL: it arrives in a POST body and is only hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from tally.api.auth import Authenticator
from tally.clock import Clock, to_micros
from tally.errors import Unauthorized
from tally.storage.base import Storage
from tally.storage.base_console import ConsoleSession

COOKIE = "tally_console"
SIGN_IN_COOKIE = "tally_console_signin"  # the sign-in form's double-submit token
SESSION_SECONDS = 12 * 3600
MAX_KEY_LENGTH = 200
MAX_CACHED = 10_000


class SignInRefused(Exception):
    """Why a key cannot open a session (shown on the sign-in page)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two tokens (false when either is missing)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


class Sessions:
    def __init__(
        self, storage: Storage, auth: Authenticator, clock: Clock, cache_seconds: float
    ) -> None:
        self._storage = storage
        self._auth = auth
        self._clock = clock
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[ConsoleSession | None, float]] = {}

    async def open(self, raw_key: str) -> tuple[str, ConsoleSession]:
        """A new session of ``raw_key``: (the cookie's token, the session)."""
        raw_key = raw_key.strip()
        if not raw_key:
            raise SignInRefused("Paste a secret key to sign in.")
        if len(raw_key) > MAX_KEY_LENGTH:
            raise SignInRefused("That is not a tally key: keys are about 40 characters long.")
        try:
            key = await self._auth.resolve(raw_key)
        except Unauthorized:
            raise SignInRefused("That key is unknown or has been revoked.") from None
        if not key.is_secret:
            raise SignInRefused(
                "That is a publishable key (api_…): it can only send events. "
                "Sign in with a secret key (sch_…); a read-only one is enough to look."
            )
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = to_micros(self._clock.now()) + SESSION_SECONDS * 1_000_000
        await self._storage.create_console_session(token_hash(token), key.id, csrf, expires)
        return token, ConsoleSession(key, csrf, expires)

    async def current(self, request: Request) -> ConsoleSession | None:
        """The session of the request's cookie, if it is valid."""
        token = request.cookies.get(COOKIE)
        if not token or len(token) > 100:
            return None
        digest = token_hash(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            session = hit[0]
        else:
            session = await self._storage.find_console_session(digest, to_micros(self._clock.now()))
            if self._ttl > 0:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[digest] = (session, now + self._ttl)
        if session is not None and session.expires_at <= to_micros(self._clock.now()):
            return None
        return session

    async def close(self, request: Request) -> None:
        token = request.cookies.get(COOKIE)
        if token and len(token) <= 100:
            digest = token_hash(token)
            self._cache.pop(digest, None)
            await self._storage.delete_console_session(digest)
