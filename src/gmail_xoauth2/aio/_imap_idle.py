"""IDLE and watch() for gmail_xoauth2.aio.IMAP4: async iterators that outlive sessions.

The same behaviour as the sync :class:`~gmail_xoauth2.Idler` and
:class:`~gmail_xoauth2.Watcher`: IDLE renewed every 27 minutes (RFC 2177),
the session replaced when it ends or is about to, growth while disconnected
reported as an ``EXISTS``; the watch's position and its new-message items come
from the same :class:`~gmail_xoauth2._imap_watch.WatchCursor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._backoff import Backoff
from .._imap_idle import IDLE_RENEW_AFTER
from .._imap_watch import Event, WatchCursor
from .._redact import get_logger, scrub_exception
from ..errors import ConfigurationError, ConnectionLost, Error, ProtocolError, Timeout
from ._imap_session import _Stopped, raise_as_imap

if TYPE_CHECKING:
    from .imap import IMAP4

__all__ = ["AsyncIdler", "AsyncWatcher"]

_log = get_logger("gmail_xoauth2.imap")
Untagged = tuple[str, list[Any]]


class AsyncIdler:
    """``async with imap.idle(duration) as idler: async for typ, data in idler:``.

    Iterating yields untagged responses as ``(type, data)`` (``('EXISTS',
    [b'4'])``); leaving the block sends ``DONE``. ``duration`` (seconds, None
    for no limit) ends the iteration; :meth:`stop` ends it from another task.
    While idling, no other command may be sent on the connection.
    """

    def __init__(self, imap: IMAP4, duration: float | None = None) -> None:
        if "IDLE" not in imap.capabilities and not imap._dead:
            raise imap.error("Server does not support IMAP4 IDLE")
        self._imap = imap
        self._duration = duration
        self._queue: list[Untagged] = []
        self._tag: bytes | None = None
        self._started: datetime | None = None
        self._renew_at: datetime | None = None
        self._stopped = asyncio.Event()
        self._held: asyncio.Lock | None = None

    def stop(self) -> None:
        """End the iteration soon (from any task of the loop)."""
        self._stopped.set()

    async def __aenter__(self) -> AsyncIdler:
        imap = self._imap
        self._held = imap._lock()
        await self._held.acquire()
        try:
            before, reconnects = imap._box.exists, imap.reconnects
            await imap._prepare_idle()
            if "IDLE" not in imap.capabilities:
                raise imap.error("Server does not support IMAP4 IDLE")
            if imap.reconnects != reconnects:
                self._report_growth(before)
            self._started = imap._deadline.now()
            imap._idle_queue = self._queue
            await self._guarded(self._begin)
        except BaseException as exc:
            imap._idle_queue = None
            if isinstance(exc, asyncio.CancelledError):
                imap._drop()  # IDLE may be half begun: out of step
            self._held.release()
            scrub_exception(exc)
            raise_as_imap(exc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        imap = self._imap
        try:
            if self._tag is not None and not imap._dead:
                await self._end()
        except ProtocolError as error:
            imap._drop()
            scrub_exception(error)
            raise_as_imap(error)
        except (ConnectionLost, Timeout) as error:
            _log.debug("connection lost while leaving IDLE: %s", error)
            imap._drop()
        finally:
            imap._idle_queue = None
            for typ, data in self._queue:
                imap.untagged_responses.setdefault(typ, []).extend(data)
            self._queue.clear()
            assert self._held is not None
            self._held.release()

    def __aiter__(self) -> AsyncIterator[Untagged]:
        return self

    async def __anext__(self) -> Untagged:
        try:
            item = await self._next()
        except BaseException as exc:
            scrub_exception(exc)
            raise_as_imap(exc)
        if item is None:
            raise StopAsyncIteration
        return item

    async def _next(self) -> Untagged | None:
        imap = self._imap
        while True:
            if self._queue:
                return self._queue.pop(0)
            if self._stopped.is_set():
                return None
            now = imap._deadline.now()
            end = None
            if self._duration is not None and self._started is not None:
                end = self._started + timedelta(seconds=self._duration)
                if now >= end:
                    return None
            renew_due = self._renew_at is not None and now >= self._renew_at
            if self._tag is None or renew_due or self._session_due():
                await self._guarded(self._renew)
                continue
            moments = [m for m in (end, self._renew_at, self._deadline()) if m]
            wait = max(0.0, (min(moments) - now).total_seconds()) if moments else None
            if not await self._wait_readable(wait):
                continue
            await self._guarded(self._read_one)

    async def _wait_readable(self, wait: float | None) -> bool:
        """Wait for a response, a stop or ``wait`` seconds; True if one came."""
        stream = self._imap._stream
        if stream is None:
            raise ConnectionLost("the connection was closed")
        if stream.has_line() or stream.at_eof:
            return True
        reader = asyncio.ensure_future(stream.wait_readable())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (reader, stopper):
                task.cancel()
            # Let them finish before the stream is read again.
            await asyncio.gather(reader, stopper, return_exceptions=True)
        return reader in done

    def _session_due(self) -> bool:
        imap = self._imap
        return imap._reconnect_enabled and imap._deadline.due()

    def _deadline(self) -> datetime | None:
        imap = self._imap
        return imap._deadline.deadline if imap._reconnect_enabled else None

    async def _begin(self) -> None:
        """Send IDLE and wait for the server's ``+`` continuation."""
        imap = self._imap
        tag = imap._new_tag()
        imap._send(tag + b" IDLE\r\n")
        while True:
            response = await imap._read()
            if response.kind == "continuation":
                break
            if response.kind == "untagged":
                imap._absorb(response)
                self._check_bye()
                continue
            raise imap.error(f"IDLE refused: {response.typ} {response.text!r}")
        self._tag = tag
        self._renew_at = imap._deadline.now() + IDLE_RENEW_AFTER
        _log.debug("IDLE started")

    async def _end(self) -> None:
        """Send DONE and read up to IDLE's tagged completion."""
        imap = self._imap
        tag, self._tag = self._tag, None
        imap._send(b"DONE\r\n")
        imap._meter.start()
        while True:
            response = await imap._read()
            if response.kind == "untagged":
                imap._absorb(response)
                self._check_bye()
                continue
            if response.kind == "continuation":
                raise ProtocolError(
                    f"{imap._where} sent a continuation request after DONE; the "
                    "connection was closed"
                )
            imap._check_tag(response, tag or b"")
            _log.debug("IDLE done")
            return

    async def _read_one(self) -> None:
        imap = self._imap
        imap._meter.start()  # each response while idling is a reply of its own
        response = await imap._read()
        if response.kind == "continuation":
            raise ProtocolError(
                f"{imap._where} sent a continuation request during IDLE; the "
                "connection was closed"
            )
        if response.kind == "tagged":
            # The server ended IDLE on its own; start it again.
            self._tag = None
            return
        imap._absorb(response)
        self._check_bye()

    def _check_bye(self) -> None:
        byes = [data[-1] for typ, data in self._queue[-4:] if typ == "BYE"]
        if byes:
            self._queue[:] = [item for item in self._queue if item[0] != "BYE"]
            raise ConnectionLost(f"server said BYE: {byes[-1]!r}")

    async def _renew(self) -> None:
        if self._tag is not None:
            await self._end()
        if self._session_due():
            await self._recover("the session ends soon", polite=True)
        await self._begin()

    async def _guarded(self, step: Any) -> None:
        """Run one step; if the session ended, replace it and IDLE again."""
        imap = self._imap
        try:
            await step()
            return
        except ProtocolError:
            imap._drop()
            raise
        except (ConnectionLost, Timeout) as exc:
            imap._drop()
            if not imap._reconnect_enabled:
                raise ConnectionLost(f"session ended during IDLE: {exc}") from exc
            await self._recover(f"session ended during IDLE: {exc}")
        try:
            await self._begin()
        except (ConnectionLost, Timeout) as exc:
            imap._drop()
            raise ConnectionLost(
                f"IDLE failed again after reconnecting: {exc}"
            ) from exc

    async def _recover(self, why: str, *, polite: bool = False) -> None:
        imap = self._imap
        self._tag = None
        before, validity = imap._box.exists, imap._box.uidvalidity
        imap._idle_queue = None
        try:
            await imap._replace(why, restore=imap._mailbox, polite=polite)
        finally:
            imap._idle_queue = self._queue
        after = imap._box.uidvalidity
        if after != validity and after is not None:
            self._queue.append(("UIDVALIDITY", [str(after).encode("ascii")]))
        self._report_growth(before)

    def _report_growth(self, before: int | None) -> None:
        imap = self._imap
        after = imap._box.exists
        if after is not None and after != before:
            self._queue.append(("EXISTS", [str(after).encode("ascii")]))
        imap.untagged_responses.pop("EXISTS", None)


class AsyncWatcher:
    """``async for event in imap.watch("INBOX"):`` — see :meth:`IMAP4.watch`.

    Yields :class:`~gmail_xoauth2.NewMessage` and
    :class:`~gmail_xoauth2.UIDValidityChanged` items, each once, across session
    ends, token refreshes and outages of any length (``Backoff.forever()`` by
    default). Between two items the connection is free for other commands.
    ``stop`` (an :class:`asyncio.Event`) or :meth:`stop` ends the iteration.
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
        stop: asyncio.Event | None = None,
    ) -> None:
        self._cursor = WatchCursor(mailbox, since_uid, uidvalidity)
        if not poll > 0:
            raise ConfigurationError("poll must be a positive number of seconds")
        self._imap = imap
        self._mailbox = mailbox
        self._poll = poll
        self._stop = stop or asyncio.Event()
        self._backoff = backoff or Backoff.forever()
        self._saved: tuple[Backoff, asyncio.Event | None] | None = None
        self._idler: AsyncIdler | None = None
        self._started = False
        self._done = False

    @property
    def last_uid(self) -> int | None:
        """The highest UID reported; save it to resume after a restart."""
        return self._cursor.last

    @property
    def uidvalidity(self) -> int | None:
        """The UIDVALIDITY that :attr:`last_uid` belongs to."""
        return self._cursor.validity

    def stop(self) -> None:
        """End the iteration soon (wakes an IDLE wait and a backoff wait)."""
        self._stop.set()
        if self._idler is not None:
            self._idler.stop()

    def __aiter__(self) -> AsyncWatcher:
        return self

    async def __aenter__(self) -> AsyncWatcher:
        """Select the mailbox and note where "new" begins (as the sync watch()
        does when it returns), so mail that arrives from now on is reported."""
        if not self._started:
            try:
                await self._start()
            except BaseException as exc:
                self._finish()
                scrub_exception(exc)
                if isinstance(exc, Error):
                    raise_as_imap(exc)
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        self._finish()

    async def __anext__(self) -> Event:
        try:
            return await self._next()
        except (_Stopped, StopAsyncIteration):
            self._finish()
            raise StopAsyncIteration from None
        except BaseException as exc:
            self._finish()
            scrub_exception(exc)
            if isinstance(exc, Error):
                raise_as_imap(exc)
            raise

    async def _next(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        cursor = self._cursor
        while True:
            if cursor.pending:
                return cursor.pending.popleft()
            if self._stop.is_set():
                raise StopAsyncIteration
            if await self._check_validity():
                continue
            if await self._search():
                continue
            await self._wait()

    async def _start(self) -> None:
        imap = self._imap
        self._started = True
        self._saved = (imap._backoff, imap._stop)
        imap._backoff = dataclasses.replace(self._backoff)
        imap._stop = self._stop
        typ, data = await imap.select(self._mailbox)
        if typ != "OK":
            raise ProtocolError(f"cannot watch {self._mailbox}: {data[-1]!r}")
        self._cursor.begin(imap._box)
        if self._cursor.needs_highest:
            self._cursor.set_highest(await self._highest())
        _log.debug(
            "watching %s from UID %s (UIDVALIDITY %s)",
            self._mailbox,
            self._cursor.last,
            self._cursor.validity,
        )

    def _finish(self) -> None:
        self._done = True
        if self._saved is not None:
            self._imap._backoff, self._imap._stop = self._saved
            self._saved = None

    async def _highest(self) -> int:
        from .._imap_watch import uids

        typ, data = await self._imap.uid("SEARCH", "ALL")
        return max(uids(data) if typ == "OK" else [], default=0)

    async def _check_validity(self) -> bool:
        if not self._cursor.renumbered(self._imap._box):
            return False
        if self._cursor.needs_highest:
            self._cursor.set_highest(await self._highest())
        return True

    async def _search(self) -> bool:
        imap = self._imap
        exists = imap._box.exists
        try:
            typ, data = await imap.uid("SEARCH", self._cursor.query())
        except ConnectionLost:
            if self._stop.is_set():
                raise StopAsyncIteration from None
            if imap._box.uidvalidity not in (None, self._cursor.validity):
                return await self._check_validity()
            raise
        if typ != "OK":
            raise ProtocolError(f"UID SEARCH failed in {self._mailbox}: {data!r}")
        return self._cursor.found(data, exists, imap._box.exists)

    async def _wait(self) -> None:
        imap = self._imap
        if "IDLE" in imap.capabilities:
            idler = imap.idle()
            idler._stopped = self._stop  # the watch's stop ends the wait at once
            async with idler:
                self._idler = idler
                try:
                    async for typ, _ in idler:
                        if typ in ("EXISTS", "UIDVALIDITY"):
                            break
                finally:
                    self._idler = None
            return
        box = imap._box
        before = (box.exists, box.uidvalidity, imap.reconnects)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            await imap.noop()
            box = imap._box
            if (box.exists, box.uidvalidity, imap.reconnects) != before:
                return
