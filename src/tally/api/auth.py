"""Who is calling: the ``X-Schematic-Api-Key`` header, resolved to a key
record through a short-lived cache (``key_cache``: revocation takes effect
within ``key_cache_seconds``, and at once on this host when the CLI's notice
says keys changed: ``tally.key_notice``)."""

from __future__ import annotations

from starlette.requests import Request

from tally.api.key_cache import KeyCache
from tally.errors import Forbidden, Unauthorized
from tally.key_notice import KeyNotice
from tally.keys import hash_key
from tally.model import ApiKey
from tally.observe.requests import note_environment
from tally.storage.base import Storage

HEADER = "x-schematic-api-key"


class Authenticator:
    def __init__(
        self, storage: Storage, ttl_seconds: float, notice: KeyNotice | None = None
    ) -> None:
        self._storage = storage
        self._cache = KeyCache(ttl_seconds)
        self._notice = notice

    async def key_for(self, request: Request) -> ApiKey:
        return await self.resolve(request.headers.get(HEADER))

    async def resolve(self, raw: str | None) -> ApiKey:
        """The key record of the header value ``raw``."""
        if not raw:
            raise Unauthorized("missing API key: send it in the X-Schematic-Api-Key header")
        if self._notice is not None and self._notice.changed():
            self._cache.clear()
        hit, key = self._cache.get(raw)
        if not hit:
            key = await self._storage.find_api_key(hash_key(raw))
            self._cache.put(raw, key)
        if key is None:
            raise Unauthorized("invalid API key: it is unknown or has been revoked")
        note_environment(key.environment_id)
        return key

    async def writer(self, raw: str | None) -> ApiKey:
        """The key of the header value ``raw``, which must be allowed to write."""
        key = await self.resolve(raw)
        if not key.can_write:
            raise Forbidden("read-only API keys cannot write events")
        return key

    async def admin(self, request: Request, *, area: str, write: bool) -> ApiKey:
        """A secret key (and, to change things, a read-write one) for an admin
        ``area`` such as "companies and users"."""
        key = await self.key_for(request)
        if not key.is_secret:
            raise Forbidden(f"publishable API keys cannot use the {area} API; use a secret key")
        if write and not key.can_write:
            raise Forbidden(f"read-only API keys cannot change {area}")
        return key

    async def event_reader(self, request: Request) -> ApiKey:
        key = await self.key_for(request)
        if not key.can_read_events:
            raise Forbidden("publishable API keys cannot read events; use a secret key")
        return key
