"""Reconnection as a policy: how long to wait between attempts, and when to give up.

Free of I/O but for the injectable ``sleep``: the token refresh and every
protocol's reconnect loop (IMAP, POP, SMTP) use the same :class:`Backoff`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff", "Retry", "Sleep", "sleep_async"]

_log = logging.getLogger("gmail_xoauth2")

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnect (and token refresh) attempts, and when to give up.

    Delay *n* (from 0) is ``min(cap, base * 2**n)``, less a random share of
    it (``jitter``: 1.0 is "full jitter", a value anywhere from 0 up to the
    delay; 0.0 none), so that many clients dropped at once do not come back
    in step.
    The default gives up after 5 waits (about a minute at most): right for
    interactive programs, which should hear of an outage. A program that must
    outlive outages of any length uses :meth:`forever`.

    Attributes:
        base: the first delay, in seconds.
        cap: the largest delay, in seconds.
        attempts: how many waits at most before giving up; None for no bound.
        max_elapsed: give up rather than wait past this many seconds since
            the first failure; None for no bound.
        jitter: the share of each delay drawn at random, from 0.0 (none) to
            1.0 (full jitter).
        too_many_connections: when Gmail refuses a login because the account
            has too many connections (15, shared by every mail client of the
            account), wait this many seconds (with jitter) and try again;
            None raises :class:`~gmail_xoauth2.TooManyConnections` at once.
        sleep: how to wait; tests inject one that records instead of waiting.
        rand: a source of floats in [0, 1); tests inject a fixed one.
        clock: a monotonic clock in seconds, for ``max_elapsed``.
    """

    base: float = 0.5
    cap: float = 30.0
    attempts: int | None = 5
    max_elapsed: float | None = None
    jitter: float = 1.0
    too_many_connections: float | None = None
    sleep: Sleep = field(default=time.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    clock: Callable[[], float] = field(
        default=time.monotonic, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        from .errors import ConfigurationError

        checks = [
            ("base", self.base, False),
            ("cap", self.cap, False),
            ("jitter", self.jitter, False),
            ("max_elapsed", self.max_elapsed, True),
            ("too_many_connections", self.too_many_connections, True),
        ]
        for name, value, optional in checks:
            if value is None and optional:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(
                    f"Backoff.{name} must be a number of seconds >= 0, not {value!r}"
                )
        if self.jitter > 1:
            raise ConfigurationError("Backoff.jitter is a share: 0.0 to 1.0")
        if self.attempts is not None and (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or self.attempts < 0
        ):
            raise ConfigurationError(
                f"Backoff.attempts must be an int >= 0 or None, not {self.attempts!r}"
            )

    @classmethod
    def forever(
        cls,
        *,
        base: float = 1.0,
        cap: float = 300.0,
        too_many_connections: float = 600.0,
        jitter: float = 1.0,
        sleep: Sleep = time.sleep,
    ) -> Backoff:
        """Never give up: for daemons that must outlive outages of any length.

        Waits grow to ``cap`` (5 minutes) and stay there; a refusal for too
        many connections is waited out too (10 minutes between tries: another
        client of the account has to let go first).
        """
        return cls(
            base=base,
            cap=cap,
            attempts=None,
            jitter=jitter,
            too_many_connections=too_many_connections,
            sleep=sleep,
        )

    @property
    def bounded(self) -> bool:
        """True when this policy gives up some day."""
        return self.attempts is not None or self.max_elapsed is not None

    def delay(self, n: int) -> float:
        """The wait before retry *n* (from 0), jitter drawn."""
        top = min(self.cap, self.base * 2.0 ** min(n, 64))
        return top * (1 - self.jitter * (1 - self.rand()))

    def delays(self) -> Iterator[float]:
        """Yield each delay after waiting it; stop when the policy gives up."""
        retry = self.start("the token endpoint", logger=_log, level=logging.DEBUG)
        while retry.wait("a transient failure"):
            yield retry.last_delay

    def start(
        self, what: str, *, logger: logging.Logger = _log, level: int = logging.WARNING
    ) -> Retry:
        """A new series of attempts at ``what`` (for example ``imap.gmail.com:993``)."""
        return Retry(self, what, logger, level)


class Retry:
    """One series of attempts under a :class:`Backoff`: wait, or give up.

    Every wait is logged once (at WARNING by default) with what is awaited
    and why; a series that gives up logs nothing more (the caller raises).
    """

    def __init__(
        self, backoff: Backoff, what: str, logger: logging.Logger, level: int
    ) -> None:
        self.backoff = backoff
        self.what = what
        self.waits = 0
        self.last_delay = 0.0
        self._logger = logger
        self._level = level
        self._started = backoff.clock()

    @property
    def attempts(self) -> int:
        """Attempts made so far: the first one and one after each wait."""
        return self.waits + 1

    def next_delay(self, cause: object, *, too_many: bool = False) -> float | None:
        """Decide the wait before the next attempt (logged); None to give up.

        The decision without the waiting: :meth:`wait` sleeps it, the asyncio
        classes await it (:meth:`wait_async`).

        Args:
            cause: why the last attempt failed (shown in the log line).
            too_many: the server refused for too many connections, which
                only ``too_many_connections`` allows waiting out.
        """
        backoff = self.backoff
        if too_many:
            if backoff.too_many_connections is None:
                return None
            # Half the jitter: the wait is for another client to let go.
            delay = backoff.too_many_connections * (
                1 - backoff.jitter * (1 - backoff.rand()) / 2
            )
        else:
            if backoff.attempts is not None and self.waits >= backoff.attempts:
                return None
            delay = backoff.delay(self.waits)
            if backoff.max_elapsed is not None:
                spent = backoff.clock() - self._started
                if spent + delay > backoff.max_elapsed:
                    return None
        self.waits += 1
        self.last_delay = delay
        self._logger.log(
            self._level,
            "%s unavailable (%s); trying again in %.1f s (attempt %d%s)",
            self.what,
            cause,
            delay,
            self.waits + 1,
            "" if backoff.attempts is None else f" of {backoff.attempts + 1}",
        )
        return delay

    def wait(self, cause: object, *, too_many: bool = False) -> bool:
        """Wait before the next attempt; False when the policy gives up.

        Args:
            cause: why the last attempt failed (shown in the log line).
            too_many: the server refused for too many connections.
        """
        delay = self.next_delay(cause, too_many=too_many)
        if delay is None:
            return False
        self.backoff.sleep(delay)
        return True

    async def wait_async(self, cause: object, *, too_many: bool = False) -> bool:
        """:meth:`wait` for asyncio: the loop runs on while this task waits.

        A ``sleep`` injected into the :class:`Backoff` (tests) is called
        instead of waiting, as in :meth:`wait`.
        """
        delay = self.next_delay(cause, too_many=too_many)
        if delay is None:
            return False
        await sleep_async(self.backoff, delay)
        return True


async def sleep_async(backoff: Backoff, delay: float) -> None:
    """Wait ``delay`` seconds on the event loop, or call the injected ``sleep``."""
    import asyncio

    if backoff.sleep is time.sleep:
        await asyncio.sleep(delay)
    else:
        backoff.sleep(delay)
        await asyncio.sleep(0)
