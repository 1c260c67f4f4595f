"""One error tree for tally.

Each class names a *category* of failure, never an HTTP status: only
``tally.api`` maps categories to statuses. Every message is one readable
sentence that says what was wrong.
"""

from __future__ import annotations


class TallyError(Exception):
    """Base of every error tally raises on purpose."""

    category = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(TallyError):
    """The input is malformed or breaks a rule."""

    category = "invalid"


class Unauthorized(TallyError):
    """No API key, or one tally does not know (or that was revoked)."""

    category = "unauthorized"


class Forbidden(TallyError):
    """The key is known but lacks the right for this call."""

    category = "forbidden"


class NotFound(TallyError):
    """The object does not exist in the caller's environment."""

    category = "not_found"


class TooLarge(TallyError):
    """The request or one of its parts exceeds a size limit."""

    category = "too_large"


class ConfigError(TallyError):
    """A setting is missing or malformed."""

    category = "config"
