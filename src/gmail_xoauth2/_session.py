"""Shared reconnect policy for the protocol wrappers: when to reconnect, how to wait.

Protocol modules (imap, pop, smtp) use this; it knows nothing of any protocol.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ._backoff import Backoff
from ._tokens import Clock, TokenProvider, token_expiry, utcnow

__all__ = ["Backoff", "SessionDeadline", "replacement_due"]


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

    def start(
        self, provider: TokenProvider | None = None, *, expiry: datetime | None = None
    ) -> None:
        """Record a new session, authenticated with ``provider``'s current token
        (or a token that expires at ``expiry``)."""
        now = self._clock()
        candidates = []
        if provider is not None:
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


def replacement_due(
    *, dead: bool, deadline: SessionDeadline
) -> tuple[str, bool] | None:
    """Why a session must be replaced before the next command, known without I/O.

    Returns the reason and whether to say goodbye first (LOGOUT: the session is
    healthy but ends soon), or None: the driver then asks the server whether it
    ended the session meanwhile. The sync and the asyncio IMAP4 both decide so.
    """
    if dead:
        return "the previous connection was lost", False
    if deadline.due():
        return f"the session ends soon (deadline {deadline.deadline})", True
    return None
