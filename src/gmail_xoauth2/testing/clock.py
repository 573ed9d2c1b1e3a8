"""A manual clock for tests: time moves only when a test advances it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """A callable clock (aware UTC) that moves only on :meth:`advance`.

    Listeners added with :meth:`on_advance` run after every advance, in the
    advancing thread; the fake servers use this to end expired sessions at once.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[datetime], None]] = []

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move time forward by ``delta`` (a timedelta or seconds); return now."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += delta
            now = self._now
            listeners = list(self._listeners)
        for listener in listeners:
            listener(now)
        return now

    def on_advance(self, listener: Callable[[datetime], None]) -> None:
        """Call ``listener(now)`` after every :meth:`advance`."""
        with self._lock:
            self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"ManualClock({self():%Y-%m-%dT%H:%M:%S%z})"
