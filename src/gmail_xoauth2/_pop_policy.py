"""POP3 session rules, free of I/O: pending deletions, message numbers, reconnects.

The sync :class:`~gmail_xoauth2.POP3` and the asyncio one ask :class:`Rules`
what to do at each command boundary, when a command's connection dies, and
when QUIT gets no answer; only the I/O differs between them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import NamedTuple

from .errors import ConnectionLost

__all__ = ["CLOSED_QUIT", "REPEATABLE", "Boundary", "Check", "Maildrop", "Rules"]

# Commands that may run once more on a new connection when theirs died: reads,
# and the marks (a lost session dropped them all, so marking again is safe;
# see Rules.died). Login commands and UTF8 change the session: never.
REPEATABLE = frozenset(
    {"STAT", "LIST", "UIDL", "RETR", "TOP", "NOOP", "CAPA", "DELE", "RSET"}
)


class Boundary(enum.Enum):
    """What to do with the connection before the next command."""

    KEEP = "keep"  # run the command on this connection
    REOPEN = "reopen"  # it is dead: connect again (with backoff)
    RETIRE = "retire"  # it is healthy but expiring: QUIT, then connect again


class Rules:
    """The decisions of one POP3 client, across its replaced sessions.

    Args:
        reconnect: replace dead or expiring connections transparently.
        user: the address, for logs.
        logger: where the decisions are logged (DEBUG: they are routine).
    """

    def __init__(self, *, reconnect: bool, user: str, logger: logging.Logger) -> None:
        self.maildrop = Maildrop()
        self.reconnect = reconnect
        self._user = user
        self._log = logger
        self._deferred_logged = False
        self.reason = ""  # why the connection is to be replaced (for the log)

    def logged_in(self) -> None:
        """A session began (first login or a reconnect)."""
        self._deferred_logged = False

    def at_boundary(self, *, closed: bool, due: bool) -> Boundary:
        """Before a command: ``closed`` (the server hung up or spoke unasked),
        ``due`` (the session deadline passed).

        Raises:
            ConnectionLost: deletions were pending on the closed connection
                (they were not applied), or reconnecting is disabled.
        """
        if closed:
            if self.maildrop.pending:
                raise self.maildrop.lost("the connection was closed before QUIT")
            if not self.reconnect:
                raise ConnectionLost("the POP3 connection is closed; reconnect=False")
            self.reason = "the server closed the connection"
            return Boundary.REOPEN
        if self.reconnect and due:
            if self.maildrop.pending:
                # Replacing the session would silently drop the marks, and
                # committing them early would take the choice (RSET) away: keep
                # the session until quit(); if the server ends it first, the
                # caller is told the deletions were not applied.
                if not self._deferred_logged:
                    self._log.debug(
                        "POP3 session for %s is due to be replaced but deletions "
                        "are pending; keeping it until quit()",
                        self._user,
                    )
                    self._deferred_logged = True
                return Boundary.KEEP
            self.reason = "the access token or session is about to expire"
            return Boundary.RETIRE
        return Boundary.KEEP

    def died(self, what: str, exc: BaseException, *, repeat: bool) -> None:
        """The connection died during ``what``: return to repeat it on a new one.

        Sets :attr:`reason`.

        Raises:
            ConnectionLost: deletions were pending (not applied), or the
                command may not be repeated (or reconnecting is disabled).
        """
        if self.maildrop.pending:
            raise self.maildrop.lost(f"the connection died during {what}") from exc
        if not (self.reconnect and repeat):
            raise ConnectionLost(
                f"the connection to the POP3 server died during {what}: {exc}"
            ) from exc
        self.reason = f"the connection died during {what} ({exc})"

    @staticmethod
    def died_again(what: str, exc: BaseException) -> ConnectionLost:
        """The error for a repeated command whose new connection died too."""
        return ConnectionLost(
            f"the connection to the POP3 server died again during {what} "
            f"after reconnecting: {exc}"
        )

    def replaced(self) -> None:
        """A new session replaced the old one."""
        self.maildrop.replaced()

    def marked(self, which: object) -> None:
        """DELE ``which`` was answered +OK."""
        self.maildrop.pending.add(str(which))

    def quit_on_closed(self) -> bytes:
        """quit() found the connection closed: fine, unless deletions were pending.

        Raises:
            ConnectionLost: they were (and were not applied).
        """
        if self.maildrop.pending:
            raise self.maildrop.lost("the connection was closed before QUIT")
        self.maildrop.forget()
        return CLOSED_QUIT

    def quit_unanswered(self, pending: bool, exc: BaseException) -> bytes:
        """QUIT got no POP3 answer: fine, unless deletions were pending.

        Raises:
            ConnectionLost: ``outcome_unknown``: the marks may or may not have
                been applied.
        """
        if pending:
            raise self.maildrop.unconfirmed() from exc
        self.maildrop.forget()
        return CLOSED_QUIT

    def block_failed(self) -> bool:
        """A ``with`` block raised: drop pending marks (True if there were any).

        Committing the block's deletions is not safe to assume: the caller
        closes without QUIT when this returns True.
        """
        count = len(self.maildrop.pending)
        if not count:
            return False
        self._log.warning(
            "the with block raised; %d pending POP3 deletion(s) not applied", count
        )
        self.maildrop.pending.clear()
        return True


CLOSED_QUIT = b"+OK connection already closed; no deletions were pending"


class Maildrop:
    """The client's view of one POP3 maildrop across replaced sessions.

    POP applies DELE marks only when the server answers QUIT with ``+OK``
    (RFC 1939 section 6), and numbers messages afresh in every session
    (section 5). This keeps the marks (so a lost session is reported, never
    hidden) and what the caller saw of the numbering (so a command is repeated
    on a new session only while its number still names the same message).
    """

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self._stat: tuple[int, int] | None = None
        self._uids: dict[int, bytes] = {}
        # The caller's numbering predates the current session: every numbered
        # command is checked until the caller looks again (STAT, LIST, UIDL).
        self._stale = False
        # A check found the maildrop changed: refuse numbers until then too.
        self._changed = False

    def forget(self) -> None:
        """Forget the marks and the numbering (the session ended on purpose)."""
        self.pending.clear()
        self._stat = None
        self._uids.clear()
        self._stale = self._changed = False

    def replaced(self) -> None:
        """A new session began: the numbers the caller saw may mean other messages."""
        self._stale = True

    def saw_stat(self, stat: tuple[int, int]) -> None:
        """Record a STAT answer."""
        self._stat = stat
        self._stale = self._changed = False

    def saw_listing(self, lines: list[bytes]) -> None:
        """Record a full LIST answer (``"n size"`` lines) as the STAT it implies."""
        sizes = [line.split()[-1] for line in lines if line.split()]
        self._stat = (
            len(lines),
            sum(_number(s.decode("ascii", "replace")) for s in sizes),
        )
        self._stale = self._changed = False

    def saw_uids(self, lines: list[bytes], *, complete: bool) -> None:
        """Record ``"n uid"`` lines from UIDL (all of them when ``complete``)."""
        if complete:
            self._uids.clear()
            self._stale = self._changed = False
        for line in lines:
            number, _, uid = line.partition(b" ")
            self._uids[_number(number.decode("ascii", "replace"))] = uid.strip()

    def lost(self, cause: str) -> ConnectionLost:
        """The error for marks lost with a session that never got to QUIT."""
        marked = ", ".join(sorted(self.pending, key=_number))
        count = len(self.pending)
        # The numbering the caller saw is kept: the next session checks it.
        self.pending.clear()
        return ConnectionLost(
            f"{cause}: the {count} deletion(s) marked with DELE (message(s) {marked}) "
            "were NOT applied and those messages are still on the server; POP3 "
            "applies deletions only when the server answers QUIT (RFC 1939). The "
            "next call reconnects; mark them again, then call quit()."
        )

    def unconfirmed(self) -> ConnectionLost:
        """The error for marks whose QUIT was sent but never answered."""
        count = len(self.pending)
        self.pending.clear()
        return ConnectionLost(
            "the connection closed before the server confirmed QUIT, so the "
            f"{count} deletion(s) marked with DELE may not have been applied "
            "(POP3 applies them only when it answers QUIT with +OK, RFC 1939); "
            "check with uidl() on a new connection before deleting again",
            outcome_unknown=True,
        )

    def check_number(
        self,
        which: object,
        uid_now: Callable[[int], bytes],
        stat_now: Callable[[], tuple[int, int]],
    ) -> None:
        """:meth:`to_check` and :meth:`checked` with blocking queries.

        Raises:
            ConnectionLost: the maildrop changed; nothing was repeated.
        """
        check = self.to_check(which)
        if check is not None:
            now = uid_now(check.number) if check.uid is not None else stat_now()
            self.checked(check, now)

    def to_check(self, which: object) -> Check | None:
        """On a new session, what to ask before ``which`` may be used; None: nothing.

        Compares the message's unique id (if the caller saw it) or the STAT
        answer (if the caller saw that) with the new session's, for every
        numbered command until the caller looks at the new session's maildrop
        (STAT, LIST or UIDL): not only the first. Once the maildrop was found
        changed, every number is refused until then (the marks made on this
        session stay pending: QUIT still applies them).

        Raises:
            ConnectionLost: the maildrop was already found changed.
        """
        if which is None or not self._stale:
            return None
        n = _number(str(which))
        if self._changed:
            raise _changed(n)
        if n in self._uids:
            return Check(n, self._uids[n])
        if self._stat is not None:
            return Check(n, None)
        return None

    def checked(self, check: Check, now: bytes | tuple[int, int]) -> None:
        """The server's answer to ``check`` (``UIDL n``'s id, or STAT).

        Raises:
            ConnectionLost: the maildrop changed; nothing was repeated.
        """
        same = now == (check.uid if check.uid is not None else self._stat)
        if not same:
            self._changed = True
            raise _changed(check.number)


class Check(NamedTuple):
    """What to compare before a number is used on a new session."""

    number: int
    uid: bytes | None  # the message's unique id as seen; None: compare STAT


def _changed(n: int) -> ConnectionLost:
    return ConnectionLost(
        "the POP3 session was replaced and the mailbox changed meanwhile, "
        f"so message {n} may now be another message; the command was not "
        "repeated. Call stat() or uidl() again."
    )


def _number(which: str) -> int:
    try:
        return int(which)
    except ValueError:
        return -1
