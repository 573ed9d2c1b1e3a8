"""What a POP3 session has marked and seen: pending deletions and message numbers."""

from __future__ import annotations

from collections.abc import Callable

from .errors import ConnectionLost

__all__ = ["Maildrop"]


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
        """On a new session, check that ``which`` names the message it named.

        Compares the message's unique id (if the caller saw it) or the STAT
        answer (if the caller saw that) with the new session's, for every
        numbered command until the caller looks at the new session's maildrop
        (STAT, LIST or UIDL): not only the first. Once the maildrop was found
        changed, every number is refused until then (the marks made on this
        session stay pending: QUIT still applies them).

        Raises:
            ConnectionLost: the maildrop changed; nothing was repeated.
        """
        if which is None or not self._stale:
            return
        n = _number(str(which))
        if self._changed:
            same = False
        elif n in self._uids:
            same = uid_now(n) == self._uids[n]
        elif self._stat is not None:
            same = stat_now() == self._stat
        else:
            return
        if not same:
            self._changed = True
            raise ConnectionLost(
                "the POP3 session was replaced and the mailbox changed meanwhile, "
                f"so message {n} may now be another message; the command was not "
                "repeated. Call stat() or uidl() again."
            )


def _number(which: str) -> int:
    try:
        return int(which)
    except ValueError:
        return -1
