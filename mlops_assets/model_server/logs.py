"""The server's log (uvicorn's logger), and how its messages name things."""

from __future__ import annotations

import logging
import time
from typing import Any

MOST_NAMED = 10  # rows (or columns) a refusal or a warning names, at most


# uvicorn's own logger: its handler and format, in the container's log.
log = logging.getLogger("uvicorn.error")


class Throttle:
    """When a warning that may repeat with every request is due: at most once every
    ``seconds``; :meth:`due` says how many times it was held back since it was last due."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._next = 0.0
        self._held_back = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return None
        self._next = now + self.seconds
        held_back, self._held_back = self._held_back, 0
        return held_back


def rows_named(rows: list[int]) -> str:
    return f"row {rows[0]}" if len(rows) == 1 else f"rows {named(rows)}"


def named(items: list[Any]) -> str:
    """``items`` as a list for a message: the first :data:`MOST_NAMED`, and how many more."""
    named = ", ".join(str(item) for item in items[:MOST_NAMED])
    return named if len(items) <= MOST_NAMED else f"{named} and {len(items) - MOST_NAMED} more"


# --- the Open Inference Protocol (V2) ------------------------------------------------------
