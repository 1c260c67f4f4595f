"""API keys: their shapes, kinds and hashing (no I/O), plus the one
coroutine that creates a key in storage."""

from __future__ import annotations

import hashlib

from tally.ids import random_token
from tally.model import ApiKey
from tally.storage.base import Storage

SECRET_PREFIXES = {"development": "sch_dev_", "staging": "sch_stag_", "production": "sch_prod_"}
PUBLISHABLE_PREFIX = "api_"
DISPLAY_PREFIX_LENGTH = 14


def environment_kind(name: str) -> str:
    """``development``, ``staging`` and ``production`` name their kind; any
    other name is a development environment."""
    return name if name in SECRET_PREFIXES else "development"


def generate_key(kind: str, environment_kind_: str) -> str:
    if kind == "publishable":
        return PUBLISHABLE_PREFIX + random_token(24)
    return SECRET_PREFIXES[environment_kind_] + random_token(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


async def create_key(
    storage: Storage, environment_name: str, *, publishable: bool = False, read_only: bool = False
) -> tuple[ApiKey, str, bool]:
    """Create a key in ``environment_name`` (creating the environment when it
    does not exist yet). Returns the key record, the key itself (shown once)
    and whether the environment was created."""
    env, created = await storage.ensure_environment(
        environment_name, environment_kind(environment_name)
    )
    kind = "publishable" if publishable else "secret"
    plaintext = generate_key(kind, env.kind)
    record = await storage.create_api_key(
        env.id, kind, read_only, hash_key(plaintext), display_prefix(plaintext)
    )
    return record, plaintext, created
