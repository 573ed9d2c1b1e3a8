"""The session lifecycle of gmail_xoauth2.aio.IMAP4: open, drop and replace a session.

The decisions are the sync class's, from the same I/O-free modules: what a
failed reconnect attempt leads to (:class:`~gmail_xoauth2._reconnect.Attempts`),
the AUTHENTICATE exchange (:class:`~gmail_xoauth2._imap_sasl.SaslExchange`),
when a session must be replaced (:class:`~gmail_xoauth2._session.SessionDeadline`)
and whether the mailbox changed meanwhile (:mod:`~gmail_xoauth2._imap_policy`).
Only the I/O is here: asyncio streams, awaited tokens, awaited waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ssl
from typing import Any, NoReturn

from .._backoff import Backoff, sleep_async
from .._imap_errors import as_imap_error
from .._imap_policy import TRACKED, Kind, MailboxState, observed, unchanged_error
from .._imap_sasl import SaslExchange, check_too_many
from .._limits import Limits, ReplyMeter
from .._mailconn import initial_response
from .._reconnect import Attempts
from .._redact import get_logger
from .._session import SessionDeadline, replacement_due
from ..errors import (
    AuthenticationFailed,
    ConnectionLost,
    Error,
    InsecureConnection,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TooManyConnections,
    recast,
)
from ._imap_wire import Response, read_response
from ._stream import Stream
from ._tokens import AsyncTokens

__all__ = ["AsyncSession", "raise_as_imap"]

_log = get_logger("gmail_xoauth2.imap")
_CRLF = b"\r\n"


def raise_as_imap(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as the sync IMAP4 raises it: its IMAP class, which is an
    imaplib error, and a lost connection as ``IMAPConnectionLost`` (an
    ``imaplib.IMAP4.abort``), so ``except imap.abort`` catches it here too."""
    imap_exc = as_imap_error(exc)
    if (
        imap_exc is exc
        and isinstance(exc, ConnectionLost)
        and not isinstance(exc, imaplib.IMAP4.error)
    ):
        from ..imap import IMAPConnectionLost

        imap_exc = recast(exc, IMAPConnectionLost)
    if imap_exc is exc:
        raise exc
    raise imap_exc from imap_exc.__cause__


class _Stopped(Exception):
    """Internal: a watch was stopped while a reconnect was backing off."""


class AsyncSession:
    """Mixin for :class:`gmail_xoauth2.aio.IMAP4`: connection and session state."""

    # Set by IMAP4.__init__.
    state: str
    capabilities: tuple[str, ...]
    untagged_responses: dict[str, list[Any]]
    reconnects: int
    _user: str
    _tokens: AsyncTokens
    _server: tuple[str, int]
    _use_starttls: bool
    _ssl_context: ssl.SSLContext
    _timeout: float | None
    _mechanism: str
    _reconnect_enabled: bool
    _deadline: SessionDeadline
    _backoff: Backoff
    _limits: Limits
    _meter: ReplyMeter
    _handshakes: asyncio.Semaphore | None
    _compress: bool
    _stream: Stream | None
    _dead: bool
    _mailbox: tuple[str, bool] | None
    _box: MailboxState
    _selecting: bool
    _enabled: list[str]
    _sends: int
    _tagnum: int
    _tagpre: bytes
    _idle_queue: list[tuple[str, list[Any]]] | None
    _stop: asyncio.Event | None

    # --- wire -----------------------------------------------------------------

    def _new_tag(self) -> bytes:
        self._tagnum += 1
        self._meter.start()  # every command: a new reply to meter
        return self._tagpre + str(self._tagnum).encode("ascii")

    def _send(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionLost(f"{self._where} is not connected")
        try:
            stream.write(data)
        except ConnectionError as exc:
            raise ConnectionLost(f"{self._where}: {exc}") from exc
        self._sends += 1

    async def _read(self) -> Response:
        stream = self._stream
        if stream is None:
            raise ConnectionLost(f"{self._where} is not connected")
        return await read_response(stream, self._meter, self._limits, self._timeout)

    @property
    def _where(self) -> str:
        host, port = self._server
        return f"{host}:{port}"

    def _absorb(self, response: Response) -> None:
        """Store an untagged response as imaplib would, tracking the mailbox."""
        for typ, dat in response.pieces:
            if typ in TRACKED:
                self._box = observed(self._box, typ, dat, selecting=self._selecting)
            queue = self._idle_queue
            if queue is not None:
                if queue and not isinstance(queue[-1][1][-1], bytes):
                    queue[-1][1].append(dat)
                else:
                    queue.append((typ, [dat]))
                continue
            kept = self.untagged_responses.setdefault(typ, [])
            if typ in ("EXISTS", "RECENT"):
                # Only the latest count means anything; a long-lived session
                # must not pile them up.
                kept[:] = [dat]
            else:
                kept.append(dat)

    async def _take_unasked(self) -> str | None:
        """Read what the server sent between commands; why it ended, if it did."""
        stream = self._stream
        if stream is None:
            return "not connected"
        if not stream.buffered and stream.peek_unasked():
            # The socket holds bytes the loop has not delivered yet (a BYE, a
            # close): two turns of the loop read and decrypt them.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        while stream.has_line():
            self._meter.start()
            response = await self._read()
            if response.kind != "untagged":
                raise ProtocolError(
                    f"{self._where} sent {response.kind} response unasked; the "
                    "connection was closed"
                )
            self._absorb(response)
            if response.typ == "BYE":
                return f"BYE {response.pieces[0][1]!r}"
        if stream.at_eof:
            return "the connection was closed"
        return None

    # --- opening a session ----------------------------------------------------

    def _drop(self) -> None:
        """Close the connection; the next command reconnects."""
        self._dead = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    async def _open_session(self) -> None:
        """Connect, secure, greet, authenticate; on failure the socket is closed."""
        limit = self._handshakes or contextlib.nullcontext()
        try:
            async with limit:
                await self._connect_stream()
                await self._login()
                if self._compress and "COMPRESS=DEFLATE" in self.capabilities:
                    await self._negotiate_compress()
        except BaseException:
            self._drop()
            raise
        self._dead = False
        self._deadline.start(expiry=self._tokens.expiry)
        _log.debug("IMAP session for %s on %s ready", self._user, self._where)

    async def _negotiate_compress(self) -> None:
        """COMPRESS DEFLATE (RFC 4978), after TLS and authentication, as the
        sync class does: a NO or BAD leaves the session uncompressed."""
        typ, data = await self._exchange("COMPRESS", ("DEFLATE",))
        if typ != "OK":
            _log.debug("COMPRESS DEFLATE refused (%s %r); uncompressed", typ, data)
            return
        stream = self._stream
        assert stream is not None
        # The server compresses from the byte after its OK; so do we.
        stream.start_compression(self._where)
        _log.debug("COMPRESS DEFLATE on")

    async def _connect_stream(self) -> None:
        host, port = self._server
        self._drop()
        try:
            async with asyncio.timeout(self._timeout):
                self._stream = await Stream.connect(host, port)
        except TimeoutError as exc:
            raise Timeout(
                f"{self._where} did not accept a connection within {self._timeout}s"
            ) from exc
        except OSError as exc:
            raise ConnectionLost(f"could not connect to {self._where}: {exc}") from exc
        if not self._use_starttls:
            await self._handshake()
        await self._greet()
        if self._use_starttls:
            await self._starttls()

    async def _handshake(self) -> None:
        stream = self._stream
        assert stream is not None
        host, _ = self._server
        try:
            async with asyncio.timeout(self._timeout):
                await stream.start_tls(self._ssl_context, host)
        except ssl.SSLCertVerificationError as exc:
            raise InsecureConnection(
                f"the TLS certificate of {self._where} could not be verified "
                f"({exc.verify_message}); no token was sent"
            ) from exc
        except ValueError as exc:
            raise InsecureConnection(
                f"{self._where} sent bytes before the TLS handshake (a man in "
                "the middle may be injecting them); no token was sent"
            ) from exc
        except TimeoutError as exc:
            raise Timeout(
                f"{self._where} did not finish the TLS handshake within "
                f"{self._timeout}s"
            ) from exc
        except (ssl.SSLError, ConnectionError) as exc:
            raise ConnectionLost(f"TLS with {self._where} failed: {exc}") from exc

    async def _greet(self) -> None:
        self.untagged_responses = {}
        self.capabilities = ()
        self._meter.start()
        not_imap = ProtocolError(
            f"{self._where} did not greet like an IMAP server: is it the IMAP "
            "port, and is the TLS mode (starttls) right?"
        )
        try:
            greeting = await self._read()
        except LimitExceeded:
            raise
        except ProtocolError as exc:  # "+OK Gpop ready", "220 ESMTP", garbage
            raise not_imap from exc
        if greeting.kind != "untagged" or greeting.typ not in ("OK", "PREAUTH", "BYE"):
            raise not_imap
        text = greeting.pieces[0][1]
        if greeting.typ == "BYE":
            # RFC 3501 7.1.5: there but unavailable; back off and try again.
            raise ConnectionLost(f"{self._where} refused the connection: {text!r}")
        stream = self._stream
        assert stream is not None
        if greeting.typ == "PREAUTH" and stream.tls is None:
            raise InsecureConnection(
                f"{self._where} greeted with PREAUTH in clear, so STARTTLS cannot "
                "be used; refusing the connection (no token was sent)"
            )
        self.state = "AUTH" if greeting.typ == "PREAUTH" else "NONAUTH"
        self._absorb(greeting)
        await self._learn_capabilities()

    async def _learn_capabilities(self) -> None:
        caps = self.untagged_responses.pop("CAPABILITY", None)
        if not (caps and isinstance(caps[-1], bytes)):
            await self._exchange("CAPABILITY", ())
            caps = self.untagged_responses.pop("CAPABILITY", None)
            if not (caps and isinstance(caps[-1], bytes)):
                raise ProtocolError(f"{self._where} sent no CAPABILITY response")
        self.capabilities = tuple(caps[-1].decode("ascii", "replace").upper().split())

    async def _starttls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise InsecureConnection(
                f"{self._where} does not offer STARTTLS, so the connection cannot "
                "be encrypted; refusing to send the token in clear (no token was "
                "sent). Use implicit TLS (port 993) or a server that offers STARTTLS"
            )
        typ, data = await self._exchange("STARTTLS", ())
        if typ != "OK":
            raise InsecureConnection(
                f"{self._where} refused STARTTLS ({typ} {data[-1]!r}); the "
                "connection cannot be encrypted, so no token was sent"
            )
        await self._handshake()
        # Forget everything learned in clear (RFC 3501 section 6.2.1).
        self.untagged_responses = {}
        self.capabilities = ()
        await self._learn_capabilities()

    async def _login(self) -> None:
        """Authenticate; on a rejection refresh the token once and try again."""
        if self.state == "AUTH":
            return  # PREAUTH over TLS
        token = await self._tokens.token()
        try:
            await self._authenticate(token)
            return
        except TooManyConnections:
            raise
        except AuthenticationFailed as exc:
            first = exc
        fresh = await self._tokens.token(force_refresh=True)
        if fresh == token:
            raise first
        _log.debug(
            "token for %s rejected (status %s); retrying with a refreshed token",
            self._user,
            first.status,
        )
        if await self._take_unasked() is not None:
            await self._connect_stream()
        await self._authenticate(fresh)

    async def _authenticate(self, token: str) -> None:
        host, port = self._server
        exchange = SaslExchange(
            mechanism=self._mechanism,
            initial=initial_response(
                self._mechanism, self._user, token, host=host, port=port
            ),
            inline="SASL-IR" in self.capabilities,
            user=self._user,
            host=host,
            port=port,
        )
        tag = self._new_tag()
        line, _ = exchange.command(tag)
        self._send(line + _CRLF)
        while True:
            response = await self._read()
            if response.kind == "continuation":
                line, _ = exchange.answer(response.text)
                self._send(line + _CRLF)
                continue
            if response.kind == "untagged":
                if response.typ == "BYE":
                    check_too_many(self._user, [response.pieces[0][1]])
                    raise ConnectionLost(
                        f"{self._where} said BYE during AUTHENTICATE: "
                        f"{response.pieces[0][1]!r}"
                    )
                self._absorb(response)
                continue
            self._check_tag(response, tag)
            if response.typ == "OK":
                self.state = "AUTH"
                caps = self.untagged_responses.pop("CAPABILITY", None)
                if caps and isinstance(caps[-1], bytes):
                    self.capabilities = tuple(
                        caps[-1].decode("ascii", "replace").upper().split()
                    )
                _log.debug("authenticated as %s with %s", self._user, self._mechanism)
                return
            raise exchange.refused(response.typ, [response.text])

    def _check_tag(self, response: Response, tag: bytes) -> None:
        if response.tag != tag:
            raise ProtocolError(
                f"{self._where} answered with tag {response.tag!r}, not {tag!r}; "
                "the connection was closed"
            )

    async def _exchange(
        self, name: str, args: tuple[Any, ...], literal: bytes | None = None
    ) -> tuple[str, list[Any]]:
        """Send one command and read up to its completion (no reconnect logic)."""
        for typ in ("OK", "NO", "BAD"):
            self.untagged_responses.pop(typ, None)
        tag = self._new_tag()
        line = tag + b" " + name.encode("ascii")
        for arg in args:
            if arg is None:
                continue
            line += b" " + (
                bytes(arg) if isinstance(arg, bytes | bytearray) else str(arg).encode()
            )
        if literal is not None:
            line += b" {%d}" % len(literal)
        self._send(line + _CRLF)
        pending = literal
        while True:
            response = await self._read()
            if response.kind == "continuation":
                if pending is None:
                    raise ProtocolError(
                        f"{self._where} sent a continuation request in answer to "
                        f"{name}; the connection was closed"
                    )
                self._send(pending + _CRLF)
                pending = None
                continue
            if response.kind == "untagged":
                self._absorb(response)
                if response.typ == "BYE" and name != "LOGOUT":
                    raise ConnectionLost(
                        f"{self._where} said BYE: {response.pieces[0][1]!r}"
                    )
                continue
            self._check_tag(response, tag)
            return response.typ, [response.text]

    # --- replacing a session --------------------------------------------------

    async def _before_command(
        self, name: str, kind: Kind, known: MailboxState, restore: Any
    ) -> None:
        """Replace the session first if it is dead, ending, or ended by the server."""
        due = replacement_due(dead=self._dead, deadline=self._deadline)
        if due is not None:
            why, polite = due
        else:
            hung_up = await self._take_unasked()
            if hung_up is None:
                return
            why, polite = f"the server ended the session ({hung_up})", False
        if not self._reconnect_enabled:
            self._drop()
            raise ConnectionLost(f"cannot send {name}: {why} and reconnect is off")
        await self._replace(why, restore=restore, polite=polite)
        self._check_unchanged(name, kind, known)

    def _check_unchanged(
        self,
        name: str,
        kind: Kind,
        known: MailboxState,
        *,
        sent: bool = False,
        stores: bool = False,
    ) -> None:
        if self._mailbox is None:
            return
        problem = unchanged_error(
            name, self._mailbox[0], known, self._box, kind, sent=sent, stores=stores
        )
        if problem is not None:
            message, unknown = problem
            raise ConnectionLost(message, outcome_unknown=unknown)

    async def _replace(
        self, why: str, *, restore: tuple[str, bool] | None, polite: bool = False
    ) -> None:
        """Replace the connection: new socket, fresh token, same mailbox."""
        _log.debug("reconnecting %s to %s: %s", self._user, self._where, why)
        state = self.state
        if polite and not self._dead:
            with contextlib.suppress(Error, OSError):
                await self._exchange("LOGOUT", ())
        self._drop()
        attempts = Attempts(
            self._backoff,
            f"IMAP server {self._where}",
            transient=(ConnectionLost, Timeout),
            logger=_log,
        )
        while True:
            try:
                await self._open_session()
                await self._restore(restore)
            except _RestoreFailed:
                self.reconnects += 1
                raise
            except Exception as exc:
                self._drop()
                try:
                    delay = attempts.failed(exc)
                except BaseException:
                    self.state = state  # the next command tries again
                    raise
                await self._wait(delay)
                continue
            self.reconnects += 1
            return

    async def _wait(self, delay: float) -> None:
        """A backoff wait; a watch's stop event ends it early."""
        stop = self._stop
        if stop is None or self._backoff.sleep is not _REAL_SLEEP:
            await sleep_async(self._backoff, delay)
            if stop is not None and stop.is_set():
                raise _Stopped
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        if stop.is_set():
            raise _Stopped

    async def _restore(self, mailbox: tuple[str, bool] | None) -> None:
        for capability in self._enabled:
            await self._exchange("ENABLE", (capability,))
        if mailbox is None:
            return
        name, readonly = mailbox
        typ, data = await self._select_raw(name, readonly)
        if typ != "OK":
            self._mailbox = None
            raise _RestoreFailed(
                f"reconnected, but could not select {name} again: {data[-1]!r}"
            )

    async def _select_raw(self, mailbox: str, readonly: bool) -> tuple[str, list[Any]]:
        self._box = MailboxState()
        self._selecting = True
        try:
            typ, data = await self._exchange(
                "EXAMINE" if readonly else "SELECT", (mailbox,)
            )
        finally:
            self._selecting = False
        if typ == "OK":
            self.state = "SELECTED"
            self._mailbox = (mailbox, readonly)
        else:
            self.state = "AUTH"
            self._mailbox = None
        return typ, data


class _RestoreFailed(ConnectionLost):
    """The new session is up, but the mailbox could not be selected again."""


_REAL_SLEEP = Backoff().sleep
