"""What every route reaches through ``request.app.state.tally``."""

from __future__ import annotations

from dataclasses import dataclass

from tally.api.auth import Authenticator
from tally.clock import Clock
from tally.effects.sender import Guard
from tally.observe.lag import LagWatch
from tally.settings import Settings
from tally.storage.base import Storage


@dataclass(slots=True)
class AppState:
    settings: Settings
    storage: Storage
    clock: Clock
    auth: Authenticator
    guard: Guard  # where webhooks may be sent (tally.effects.targets)
    lag: LagWatch  # GET /health's figures and tally serve's lag warning
