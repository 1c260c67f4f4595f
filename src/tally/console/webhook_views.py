"""webhook_views"""

from __future__ import annotations

pages: list = []
data: list = []
