"""Why an event could not be processed."""

from __future__ import annotations


class ProcessingFailed(Exception):
    """The event cannot be processed; ``str(err)`` tells a person what to fix.
    The event becomes ``failed`` with this message and the batch goes on."""
