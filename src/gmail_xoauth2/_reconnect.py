"""What to do after a failed reconnect attempt: wait how long, or raise what. No I/O.

One series of attempts for the sync classes (which sleep) and the asyncio ones
(which await) alike, so the two styles cannot drift apart:

- a refusal for too many connections is waited out only when
  ``Backoff.too_many_connections`` says so, else raised;
- a token source that failed for now (a retryable :class:`TokenError`) is
  waited out like the server; any other TokenError is raised at once;
- a server that is unreachable, hangs up or times out (``transient``) is tried
  again while the :class:`Backoff` allows, then a :class:`ConnectionLost`;
- anything else (a rejected token, an insecure server...) is raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._backoff import Backoff
from .errors import ConnectionLost, TokenError, TooManyConnections

__all__ = ["Attempts"]


class Attempts:
    """The decisions of one reconnect series.

    Args:
        backoff: the waits and when to give up.
        where: what is being reached (``imap.gmail.com:993``), for logs and errors.
        transient: the failures worth another attempt.
        logger: where each wait is logged (once, at WARNING).
        lost: builds the error raised when the backoff gives up (the
            protocol's ConnectionLost subclass).
    """

    def __init__(
        self,
        backoff: Backoff,
        where: str,
        *,
        transient: tuple[type[BaseException], ...],
        logger: logging.Logger,
        lost: Callable[[str], Exception] = ConnectionLost,
    ) -> None:
        self._retry = backoff.start(where, logger=logger)
        self._where = where
        self._transient = transient
        self._lost = lost

    @property
    def attempts(self) -> int:
        """Attempts made so far."""
        return self._retry.attempts

    def failed(self, exc: BaseException) -> float:
        """The seconds to wait before the next attempt after ``exc``.

        Call it from the ``except`` clause that caught ``exc``.

        Raises:
            BaseException: ``exc`` itself, or a ConnectionLost from ``lost``
                chained to it, when no further attempt is to be made.
        """
        retry = self._retry
        if isinstance(exc, TooManyConnections):
            delay = retry.next_delay(exc, too_many=True)
        elif isinstance(exc, TokenError):
            delay = retry.next_delay(exc) if exc.retryable else None
        elif isinstance(exc, self._transient):
            delay = retry.next_delay(exc)
            if delay is None:
                raise self._lost(
                    f"could not reconnect to {self._where} after "
                    f"{retry.attempts} attempts: {exc}"
                ) from exc
        else:
            delay = None
        if delay is None:
            raise exc
        return delay
