"""Shared reconnect policy for the protocol wrappers: when to reconnect, how to wait.

Protocol modules (imap, pop, smtp) use this; it knows nothing of any protocol.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ._tokens import Clock, TokenProvider, token_expiry, utcnow

__all__ = ["Backoff", "SessionDeadline"]

_log = logging.getLogger(__name__)

Sleep = Callable[[float], None]


@dataclass
class Backoff:
    """Bounded, jittered exponential backoff between reconnect attempts.

    Delay n (from 0) is a random value in ``[0, min(cap, base * 2**n)]``
    ("full jitter"), so many clients dropped at once do not reconnect in step.
    After ``attempts`` delays the iterator stops and the caller gives up.

    Attributes:
        base: first delay's upper bound, in seconds.
        cap: largest delay, in seconds.
        attempts: how many delays (and so retries) at most.
        sleep: how to wait; tests inject one that records instead of waiting.
        rand: a source of floats in [0, 1); tests inject a fixed one.
    """

    base: float = 0.5
    cap: float = 30.0
    attempts: int = 5
    sleep: Sleep = field(default=time.sleep, repr=False)
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delays(self) -> Iterator[float]:
        """Yield each delay after waiting it; stop when attempts run out."""
        for n in range(self.attempts):
            delay = self.rand() * min(self.cap, self.base * (2**n))
            _log.debug("backing off %.2fs before attempt %d", delay, n + 2)
            self.sleep(delay)
            yield delay


class SessionDeadline:
    """When a connection should be re-established before the server ends it.

    Gmail ends a session authenticated with OAuth when its access token expires,
    and any IMAP session after about 24 hours (POP: 7 days). A connection records
    the token's expiry when it authenticates; :meth:`due` is True from
    ``margin`` before the earlier of the two, so the wrapper reconnects at the
    next command boundary and a healthy program never meets the expiry
    mid-command.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        margin: timedelta = timedelta(seconds=60),
        session_limit: timedelta | None = None,
    ) -> None:
        self._clock = clock or utcnow
        self._margin = margin
        self._session_limit = session_limit
        self._deadline: datetime | None = None

    @property
    def deadline(self) -> datetime | None:
        """The moment from which :meth:`due` is True, or None if never."""
        return self._deadline

    def start(self, provider: TokenProvider) -> None:
        """Record a new session, authenticated with ``provider``'s current token."""
        now = self._clock()
        candidates = []
        expiry = token_expiry(provider)
        if expiry is not None:
            candidates.append(expiry - self._margin)
        if self._session_limit is not None:
            candidates.append(now + self._session_limit)
        self._deadline = min(candidates) if candidates else None

    def due(self) -> bool:
        """True when the session should be replaced before the next command."""
        return self._deadline is not None and self._clock() >= self._deadline

    def now(self) -> datetime:
        """The current time on this deadline's clock."""
        return self._clock()
