"""New mail in a mailbox, each message reported once, for as long as a program runs.

:meth:`IMAP4.watch` returns a :class:`Watcher`: an iterator of
:class:`NewMessage` (a UID and the UIDVALIDITY it belongs to), in UID order,
each exactly once, across session ends, token refreshes and outages of any
length (with :meth:`Backoff.forever`, its default), including mail that
arrived while disconnected. It waits with IDLE when the server offers it
(one renewal every 27 minutes while nothing happens), else with NOOP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._backoff import Backoff, Sleep
from ._imap_policy import MailboxState
from ._redact import get_logger
from .errors import ConfigurationError, ConnectionLost, ProtocolError

if TYPE_CHECKING:
    from ._imap_idle import Idler
    from .imap import IMAP4

__all__ = ["NewMessage", "UIDValidityChanged", "WatchCursor", "Watcher", "uids"]

_log = get_logger("gmail_xoauth2.imap")


class NewMessage(NamedTuple):
    """A message that arrived in the watched mailbox."""

    uid: int
    """Its UID: ``imap.uid("FETCH", str(msg.uid), "(RFC822)")`` reads it."""
    uidvalidity: int
    """The UIDVALIDITY the UID belongs to (RFC 3501 section 2.3.1.1)."""


class UIDValidityChanged(NamedTuple):
    """The mailbox's UIDs were renumbered: UIDs kept from before mean nothing now.

    The watch goes on from the mailbox's next UID: messages already in the
    mailbox are not reported as new. Resynchronise whatever you keep by UID.
    """

    mailbox: str
    old: int | None
    new: int


Event = NewMessage | UIDValidityChanged


class _Stopped(Exception):
    """Internal: stop() was called while a reconnect was backing off."""


class WatchCursor:
    """Where a watch stands, free of I/O: the sync and asyncio watchers drive it.

    It knows the last UID reported and its UIDVALIDITY, turns a ``UID SEARCH``
    reply into the :class:`NewMessage` items to report (each once, in UID
    order), and notices a renumbered mailbox. When the mailbox state carries no
    UIDNEXT, :attr:`needs_highest` asks the driver for the highest UID
    (``UID SEARCH ALL``) through :meth:`set_highest`.
    """

    def __init__(
        self, mailbox: str, since_uid: int | None, uidvalidity: int | None
    ) -> None:
        if since_uid is not None and since_uid < 0:
            raise ConfigurationError("since_uid must be a UID (>= 0) or None")
        self.mailbox = mailbox
        self.last = since_uid
        self.validity = uidvalidity
        self.pending: deque[Event] = deque()
        self.needs_highest = False
        # Looked again once after a search that found nothing new although
        # the mailbox grew meanwhile; a second time, wait instead.
        self._relooked = False

    def begin(self, box: MailboxState) -> None:
        """The mailbox is selected: note where "new" begins (unless resuming)."""
        if self.last is None:
            # From now on: what is in the mailbox already is not news.
            self.validity = box.uidvalidity
            self._from_next(box)

    def _from_next(self, box: MailboxState) -> None:
        if box.uidnext:
            self.last = box.uidnext - 1
        else:
            self.needs_highest = True

    def set_highest(self, uid: int) -> None:
        """The highest UID in the mailbox, as asked by :attr:`needs_highest`."""
        self.last = uid
        self.needs_highest = False

    def renumbered(self, box: MailboxState) -> bool:
        """Queue a UIDValidityChanged if the mailbox was renumbered."""
        now = box.uidvalidity
        if now is None or now == self.validity:
            return False
        old, self.validity = self.validity, now
        self._from_next(box)
        _log.warning(
            "UIDVALIDITY of %s changed (%s -> %s): UIDs start afresh",
            self.mailbox,
            old,
            now,
        )
        self.pending.append(UIDValidityChanged(self.mailbox, old, now))
        return True

    def query(self) -> str:
        """The ``UID SEARCH`` criteria for what is new.

        "UID n:*" always matches the highest UID, even when it is below n
        (RFC 3501 section 6.4.8): :meth:`found` keeps only the UIDs above.
        """
        return f"UID {(self.last or 0) + 1}:*"

    def found(
        self, data: list[object], exists_before: int | None, exists_now: int | None
    ) -> bool:
        """Queue the new UIDs of a SEARCH reply; True if any, or if it is worth
        looking again at once (the mailbox grew while searching)."""
        last = self.last or 0
        fresh = sorted(uid for uid in uids(data) if uid > last)
        if not fresh:
            # A server may announce mail after the SEARCH results, in the same
            # reply (Dovecot does): IDLE would not say it again, so look again
            # - once: a server that announces growth on every search without
            # new UIDs must not keep the watch searching in a loop.
            grew = (
                exists_before is not None
                and exists_now is not None
                and exists_now > exists_before
            )
            self._relooked = grew and not self._relooked
            return self._relooked
        self._relooked = False
        validity = self.validity or 0
        self.pending.extend(NewMessage(uid, validity) for uid in fresh)
        self.last = fresh[-1]
        return True


class Watcher:
    """An iterator over new mail; get one from :meth:`IMAP4.watch`.

    Made, it has selected the mailbox and noted where "new" begins; iterating
    reports what arrives from then on.

    Between two items the connection is free: fetch or label the message
    with the same ``IMAP4``. :meth:`stop` (any thread) or the ``stop`` event
    ends the iteration within a second, whether it is idling or waiting
    between reconnect attempts; a command in flight finishes first (at most
    the connection's ``timeout``). Leaving a ``with`` block stops it too.
    """

    def __init__(
        self,
        imap: IMAP4,
        mailbox: str = "INBOX",
        *,
        since_uid: int | None = None,
        uidvalidity: int | None = None,
        backoff: Backoff | None = None,
        poll: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        self._cursor = WatchCursor(mailbox, since_uid, uidvalidity)
        if not poll > 0:
            raise ConfigurationError("poll must be a positive number of seconds")
        self._imap = imap
        self._mailbox = mailbox
        self._poll = poll
        self._stop = stop or threading.Event()
        policy = backoff or Backoff.forever()
        # Waits between reconnect attempts end early when stop() is called.
        self._backoff = dataclasses.replace(policy, sleep=self._sleep(policy))
        self._saved_backoff: Backoff | None = None
        self._idler: Idler | None = None
        self._done = False
        try:
            self._start()
        except BaseException:
            self._finish()
            raise

    # --- the public surface -------------------------------------------------

    @property
    def last_uid(self) -> int | None:
        """The highest UID reported (or skipped as already there); save it to
        resume with ``watch(since_uid=..., uidvalidity=...)`` after a restart."""
        return self._cursor.last

    @property
    def uidvalidity(self) -> int | None:
        """The UIDVALIDITY that :attr:`last_uid` belongs to."""
        return self._cursor.validity

    def stop(self) -> None:
        """End the iteration soon, from any thread (also wakes an IDLE wait)."""
        self._stop.set()
        idler = self._idler
        if idler is not None:
            idler.stop()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            return self._next()
        except _Stopped:
            self._finish()
            raise StopIteration from None
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self._finish()
            raise

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.stop()
        self._finish()
        return False

    # --- the loop -----------------------------------------------------------

    def _next(self) -> Event:
        if self._done:
            raise StopIteration
        while True:
            if self._cursor.pending:
                return self._cursor.pending.popleft()
            if self._stop.is_set():
                raise StopIteration
            if self._check_validity():
                continue
            if self._search():
                continue
            self._wait()

    def _start(self) -> None:
        imap = self._imap
        self._saved_backoff, imap._backoff = imap._backoff, self._backoff
        typ, data = imap.select(self._mailbox)
        if typ != "OK":
            raise ProtocolError(f"cannot watch {self._mailbox}: {data[-1]!r}")
        self._cursor.begin(imap._box)
        if self._cursor.needs_highest:
            self._cursor.set_highest(self._highest())
        _log.debug(
            "watching %s from UID %s (UIDVALIDITY %s)",
            self._mailbox,
            self._cursor.last,
            self._cursor.validity,
        )

    def _finish(self) -> None:
        """Put the connection's own backoff back; the watch is over."""
        self._done = True
        if self._saved_backoff is not None:
            self._imap._backoff = self._saved_backoff
            self._saved_backoff = None

    def _check_validity(self) -> bool:
        """Queue a UIDValidityChanged if the mailbox was renumbered."""
        if not self._cursor.renumbered(self._imap._box):
            return False
        if self._cursor.needs_highest:
            self._cursor.set_highest(self._highest())
        return True

    def _highest(self) -> int:
        typ, data = self._imap.uid("SEARCH", "ALL")
        return max(uids(data) if typ == "OK" else [], default=0)

    def _search(self) -> bool:
        """Queue the messages above the last UID reported; True if any, or if
        the mailbox grew meanwhile (then it is worth looking again)."""
        imap = self._imap
        exists = imap._box.exists
        try:
            typ, data = imap.uid("SEARCH", self._cursor.query())
        except ConnectionLost:
            if self._stop.is_set():
                raise StopIteration from None
            if self._imap._box.uidvalidity not in (None, self._cursor.validity):
                return self._check_validity()
            raise
        if typ != "OK":
            raise ProtocolError(f"UID SEARCH failed in {self._mailbox}: {data!r}")
        return self._cursor.found(data, exists, imap._box.exists)

    def _wait(self) -> None:
        """Wait for the mailbox to change (or stop): IDLE, else NOOP polling."""
        imap = self._imap
        if "IDLE" in imap.capabilities:
            with imap.idle() as idler:
                self._idler = idler
                try:
                    if self._stop.is_set():
                        idler.stop()
                    for typ, _ in idler:
                        if typ in ("EXISTS", "UIDVALIDITY"):
                            break
                finally:
                    self._idler = None
            return
        box = imap._box
        before = (box.exists, box.uidvalidity, imap.reconnects)
        while not self._stop.wait(self._poll):
            imap.noop()
            box = imap._box
            if (box.exists, box.uidvalidity, imap.reconnects) != before:
                return

    def _sleep(self, policy: Backoff) -> Sleep:
        stop = self._stop

        def sleep(seconds: float) -> None:
            if policy.sleep is _REAL_SLEEP:
                if stop.wait(seconds):
                    raise _Stopped
                return
            # An injected sleep (tests): use it, then honour a stop.
            policy.sleep(seconds)
            if stop.is_set():
                raise _Stopped

        return sleep


def uids(data: list[object]) -> list[int]:
    """The UIDs of a ``UID SEARCH`` reply (imaplib's data)."""
    found: list[int] = []
    for item in data:
        if isinstance(item, bytes):
            for word in item.split():
                with contextlib.suppress(ValueError):
                    found.append(int(word))
    return found


_REAL_SLEEP = Backoff().sleep
