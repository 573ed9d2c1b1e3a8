"""IMAP IDLE (RFC 2177) for gmail_xoauth2.IMAP4, with Python 3.14's interface.

Python 3.14 added ``imaplib.IMAP4.idle(duration=None)``; this offers the same
interface on every supported Python (and replaces the stdlib one on 3.14, so
behaviour does not depend on the version), renews IDLE before the 29 minutes
RFC 2177 allows, and replaces the session when the server ends it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._imap_errors import raise_as_imap
from ._redact import get_logger, scrub_exception
from .errors import Error, ProtocolError

if TYPE_CHECKING:
    from .imap import IMAP4

__all__ = ["IDLE_RENEW_AFTER", "Idler"]

_log = get_logger("gmail_xoauth2.imap")

IDLE_RENEW_AFTER = timedelta(minutes=27)
"""RFC 2177: "re-issue it at least every 29 minutes"; leave room for slack."""

Untagged = tuple[str, Any]


class Idler:
    """An iterable context manager for IDLE; get one from :meth:`IMAP4.idle`.

    Entering sends ``IDLE``; iterating yields untagged responses as
    ``(type, data)``, such as ``('EXISTS', [b'4'])``: as in Python 3.14, ``data``
    is a list, which holds every fragment of a response with a literal
    (``[(b'1 (BODY[] {3}', b'abc'), b')']``). Leaving sends ``DONE``.
    Responses not consumed in the block are left in ``untagged_responses``,
    as imaplib does. While idling, no other command may be sent.

    :meth:`stop`, from any thread, ends the iteration at once (the waiting
    thread wakes up, and leaving the block sends ``DONE`` as usual).
    """

    def __init__(self, imap: IMAP4, duration: float | None = None) -> None:
        if "IDLE" not in imap.capabilities:
            raise imap.error("Server does not support IMAP4 IDLE")
        self._imap = imap
        self._duration = duration
        self._queue: list[Untagged] = []
        self._tag: bytes | None = None
        self._saved_state = imap.state
        self._started: datetime | None = None
        self._renew_at: datetime | None = None
        self._stopped = threading.Event()
        # Written to by stop(): wakes the select() of the thread that idles.
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def stop(self) -> None:
        """End the iteration from any thread; the idling thread wakes at once."""
        self._stopped.set()
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[1].send(b"\0")

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped.is_set()

    # --- context manager and iterator (Python 3.14's interface) -------------

    def __enter__(self) -> Idler:
        try:
            return self._enter()
        except BaseException as exc:
            scrub_exception(exc)
            raise_as_imap(exc)

    def _enter(self) -> Idler:
        imap = self._imap
        before, reconnects = imap._box.exists, imap.reconnects
        imap._prepare_idle()
        if imap.reconnects != reconnects:
            # The session was replaced just before IDLE (it had ended, or its
            # token was about to expire): mail that came meanwhile was counted
            # by the re-SELECT, and IDLE will not announce it again.
            self._report_growth(before)
        self._saved_state = imap.state
        self._started = self._now()
        self._wake = socket.socketpair()
        imap._wake = self._wake[0]
        imap._idle_queue = self._queue
        try:
            self._guarded(self._begin)
        except BaseException:
            imap._idle_queue = None
            self._close_wake()
            raise
        imap.state = "IDLING"
        return self

    def _close_wake(self) -> None:
        wake, self._wake = self._wake, None
        self._imap._wake = None
        if wake is not None:
            for sock in wake:
                sock.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        imap = self._imap
        try:
            if self._tag is not None and not imap._dead:
                self._end()
        except ProtocolError as error:
            # What followed DONE was malformed or over a bound: out of step.
            imap._drop()
            scrub_exception(error)
            raise_as_imap(error)
        except TimeoutError as error:
            raise_as_imap(imap._timed_out("DONE", error))
        except imap._death as error:
            _log.debug("connection lost while leaving IDLE: %s", error)
            imap._drop()
        finally:
            self._close_wake()
            imap._idle_queue = None
            imap.state = self._saved_state
            for typ, data in self._queue:
                # One fragment at a time, as _get_response() would have stored them.
                for datum in data:
                    imap._keep_untagged(typ, datum)
            self._queue.clear()
        return False

    def __iter__(self) -> Idler:
        return self

    def __next__(self) -> Untagged:
        if self._stopped.is_set():
            raise StopIteration
        timeout = None
        if self._duration is not None and self._started is not None:
            left = self._duration - (self._now() - self._started).total_seconds()
            if left <= 0:
                raise StopIteration
            timeout = left
        response = self._pop(timeout)
        if response is None:
            raise StopIteration
        return response

    def burst(self, interval: float = 0.1) -> Iterator[Untagged]:
        """Yield the next response and any that follow within ``interval`` seconds.

        ::

            with M.idle() as idler:
                batch = list(idler.burst())
        """
        try:
            yield next(self)
        except StopIteration:
            return
        while (response := self._pop(interval)) is not None:
            yield response

    # --- the IDLE exchange --------------------------------------------------

    def _now(self) -> datetime:
        return self._imap._deadline.now()

    def _begin(self) -> None:
        """Send IDLE and wait for the server's ``+`` continuation."""
        imap = self._imap
        tag: bytes = imap._new_tag()
        imap._trace_out(tag + b" IDLE")
        imap.send(tag + b" IDLE\r\n")
        while imap._get_response() is not None:
            self._check_bye()
            result: Any = imap.tagged_commands.get(tag)
            if result is not None:
                del imap.tagged_commands[tag]
                typ, data = result
                raise imap.error(f"IDLE refused: {typ} {data[-1]!r}")
        self._tag = tag
        self._renew_at = self._now() + IDLE_RENEW_AFTER
        _log.debug("IDLE started")

    def _end(self) -> None:
        """Send DONE and read up to IDLE's tagged completion."""
        imap = self._imap
        tag = self._tag
        assert tag is not None
        self._tag = None
        imap._trace_out(b"DONE")
        imap.send(b"DONE\r\n")
        imap._meter.start()  # what follows DONE is one more reply to bound
        while imap.tagged_commands.get(tag) is None:
            imap._get_response()
            self._check_bye()
        del imap.tagged_commands[tag]
        _log.debug("IDLE done")

    def _check_bye(self) -> None:
        # Called after every response, which adds at most two items (a status
        # and its response code): look at the newest few, not the whole queue.
        if not any(typ == "BYE" for typ, _ in self._queue[-4:]):
            return
        byes = [data[-1] for typ, data in self._queue if typ == "BYE"]
        if byes:
            self._queue[:] = [item for item in self._queue if item[0] != "BYE"]
            raise self._imap.abort(f"server said BYE: {byes[-1]!r}")

    def _pop(self, timeout: float | None) -> Untagged | None:
        """The next response; None once ``timeout`` seconds passed without one.

        The wait is cut short to renew IDLE and to replace the session before
        its deadline; the time spent so counts against ``timeout``.
        """
        imap = self._imap
        end = None if timeout is None else self._now() + timedelta(seconds=timeout)
        waited = False
        while True:
            if self._queue:
                return self._queue.pop(0)
            if waited or self._stopped.is_set():
                return None
            now = self._now()
            if end is not None and now >= end:
                # Checked while responses keep arriving too, not only when
                # the wait for one times out.
                return None
            renew_due = self._renew_at is not None and now >= self._renew_at
            if self._tag is None or renew_due or self._session_due():
                self._guarded(self._renew)
                continue
            wait = None if end is None else max(0.0, (end - now).total_seconds())
            wake = self._wake_at()
            until_wake = None if wake is None else (wake - now).total_seconds()
            wake_first = until_wake is not None and (wait is None or until_wake < wait)
            if wake_first:
                wait = until_wake
            if not imap.wait_readable(wait):
                waited = not wake_first
                continue
            self._guarded(self._read_one)

    def _session_due(self) -> bool:
        """The session should be replaced now (never when reconnecting is off)."""
        imap = self._imap
        return imap._reconnect_enabled and imap._deadline.due()

    def _wake_at(self) -> datetime | None:
        """When to stop waiting: IDLE's renewal or the session's deadline."""
        imap = self._imap
        moments = [self._renew_at]
        if imap._reconnect_enabled:
            moments.append(imap._deadline.deadline)
        known = [moment for moment in moments if moment is not None]
        return min(known) if known else None

    def _read_one(self) -> None:
        imap = self._imap
        imap._meter.start()  # each response while idling is a reply of its own
        if imap._get_response() is None:
            # IDLE's continuation came when it started (RFC 2177): another
            # one is a broken server, and answering nothing to it forever
            # would never end.
            raise ProtocolError(
                f"{imap.host}:{imap.port} sent a continuation request during "
                "IDLE; the connection was closed"
            )
        self._check_bye()
        tag = self._tag
        if tag is not None and imap.tagged_commands.get(tag) is not None:
            # The server ended IDLE on its own; start it again.
            del imap.tagged_commands[tag]
            self._tag = None

    def _renew(self) -> None:
        """End IDLE and start it again; replace the session first if it is due."""
        if self._tag is not None:
            self._end()
        if self._session_due():
            self._recover("the session ends soon", polite=True)
        self._begin()

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run one protocol step; if the session ended, replace it and go on.

        Whatever it raises is scrubbed of secrets first (a server's BYE or
        refusal may quote them).
        """
        try:
            self._guarded_step(step)
        except BaseException as exc:
            scrub_exception(exc)
            raise_as_imap(exc)

    def _guarded_step(self, step: Callable[[], None]) -> None:
        imap = self._imap
        try:
            step()
            return
        except ProtocolError:
            # A malformed or oversized reply: the stream is out of step.
            imap._drop()
            raise
        except TimeoutError as exc:
            raise imap._timed_out("IDLE", exc) from exc
        except imap._death as exc:
            if isinstance(exc, imap.readonly) or isinstance(exc, Error):
                raise
            imap._drop()
            if not imap._reconnect_enabled:
                raise imap._lost(f"session ended during IDLE: {exc}") from exc
            self._recover(f"session ended during IDLE: {exc}")
        try:
            self._begin()
        except TimeoutError as exc:
            raise imap._timed_out("IDLE", exc) from exc
        except imap._death as exc:
            imap._drop()
            raise imap._lost(f"IDLE failed again after reconnecting: {exc}") from exc

    def _recover(self, why: str, *, polite: bool = False) -> None:
        imap = self._imap
        self._tag = None
        before, validity = imap._box.exists, imap._box.uidvalidity
        imap._idle_queue = None
        imap.state = self._saved_state
        try:
            imap._replace(why, restore=imap._mailbox, polite=polite)
        finally:
            imap._idle_queue = self._queue
        imap.state = "IDLING"
        after = imap._box.uidvalidity
        if after != validity and after is not None:
            # The mailbox selected again is not the one we idled on (RFC 3501
            # 2.3.1.1): say so, as the server does in SELECT's reply.
            self._queue.append(("UIDVALIDITY", [str(after).encode("ascii")]))
        self._report_growth(before)

    def _report_growth(self, before: int | None) -> None:
        """Queue an EXISTS if the re-SELECT after a reconnect counted more mail.

        Mail that arrived while there was no session: report it as the server
        would have, once (not also from ``untagged_responses``).
        """
        imap = self._imap
        after = imap._box.exists
        if after is not None and after != before:
            self._queue.append(("EXISTS", [str(after).encode("ascii")]))
        with contextlib.suppress(KeyError):
            del imap.untagged_responses["EXISTS"]
