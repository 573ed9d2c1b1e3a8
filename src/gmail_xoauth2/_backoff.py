"""Bounded, jittered exponential backoff, shared by token refresh and reconnects."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff", "Sleep"]

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
