"""The POP3 wire under gmail_xoauth2.aio.POP3: bounded replies over a Stream, STLS.

The asyncio twin of :mod:`gmail_xoauth2._pop_wire`: the same Limits, reply
checks, STLS rules and error translation (shared, free of I/O), driven with
``await``. Every read is bounded in time by the reply's deadline
(``Limits.response_seconds``) and the connection's ``timeout``.
"""

from __future__ import annotations

import asyncio
import poplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from .._limits import Limits, ReplyMeter
from .._mailconn import Dead
from .._pop_reader import Body, capabilities, status_line, without_line_end
from .._pop_sasl import Command, Exchange, Read
from .._pop_wire import (
    Capabilities,
    LongResp,
    ends_session,
    out_of_step,
    redact,
    stls_failure,
    stls_injected,
    stls_missing,
    translate,
)
from .._redact import scrub_exception
from ..errors import ProtocolError
from ._stream import LineTooLong, Stream

__all__ = ["Wire"]

_CRLF = b"\r\n"


class Wire:
    """One POP3 connection: send commands, read replies within the Limits.

    A reply that is neither ``+OK`` nor ``-ERR``, bytes that answer no
    command, or a reply over the Limits raise ProtocolError (LimitExceeded)
    or Timeout, and the connection is closed: it is never resynchronised.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        limits: Limits,
        timeout: float | None,
        context: ssl.SSLContext,
        where: str,
    ) -> None:
        self.host = host
        self.port = port
        self.where = where
        self.stream: Stream | None = None
        self.tls = False
        self.welcome = b""
        self.capabilities: Capabilities = {}
        self.secrets: list[bytes] = []
        self._limits = limits
        self._timeout = timeout
        self._context = context
        self._room = limits.line_bytes + len(_CRLF)
        self.meter = ReplyMeter(limits, where=where)

    # -- opening ---------------------------------------------------------------

    async def open(self, *, starttls: bool) -> None:
        """Connect, start TLS (implicit or STLS), read the greeting; no token sent."""
        with self.translated("the greeting"):
            async with asyncio.timeout(self._timeout):
                self.stream = await Stream.connect(self.host, self.port)
                if not starttls:
                    await self.stream.start_tls(self._context, self.host)
                    self.tls = True
            self.welcome = await self.reply()
        if starttls:
            await self._start_tls()

    async def _start_tls(self) -> None:
        """CAPA, STLS and the TLS handshake (RFC 2595); any oddity is insecure."""
        with self.translated("STLS"):
            try:
                offered = await self.capa_or_none()
                if offered is None or "STLS" not in offered:
                    raise stls_missing(self.where)
                await self.command("STLS")
                stream = self._open_stream()
                if stream.buffered:
                    raise stls_injected(self.where)
                async with asyncio.timeout(self._timeout):
                    await stream.start_tls(self._context, self.host)
            except (poplib.error_proto, ssl.SSLError, ProtocolError) as exc:
                error = stls_failure(exc, self.where)
                if error is None:
                    raise
                raise error from exc
            self.tls = True
        with self.translated("CAPA"):
            # RFC 2595 section 4: forget what was learned before TLS; ask again.
            self.capabilities = await self.capa_or_none() or {}

    async def capa_or_none(self) -> Capabilities | None:
        """CAPA as a dict, or None without CAPA; connection errors pass through."""
        try:
            return await self.capa()
        except poplib.error_proto as exc:
            if ends_session(exc):
                raise
            return None

    async def capa(self) -> Capabilities:
        """CAPA (RFC 2449) as poplib's dict."""
        try:
            _, lines, _ = await self.long_command("CAPA")
        except poplib.error_proto as exc:
            if ends_session(exc):
                raise
            raise poplib.error_proto("-ERR CAPA not supported by server") from exc
        return capabilities(lines)

    async def authenticate(self, steps: Exchange) -> bool:
        """Drive the I/O-free AUTH exchange of :mod:`.._pop_sasl`."""
        reply: bytes | None = None
        try:
            while True:
                step = steps.send(reply)
                reply = None
                if isinstance(step, Read):
                    reply = await self.sasl_line()
                elif isinstance(step, Command):
                    await self.send(step.text.encode("utf-8"))
                else:
                    await self.send(step.data)
        except StopIteration as done:
            return bool(done.value)

    # -- reading -----------------------------------------------------------------

    def _open_stream(self) -> Stream:
        stream = self.stream
        if stream is None:
            raise Dead("the connection is closed")
        return stream

    async def line(self) -> tuple[bytes, int]:
        """One line of the current reply without its line end, and its size.

        Raises:
            LimitExceeded: the line is longer than ``Limits.line_bytes``, or
                the reply longer than ``Limits.response_bytes``.
            Timeout: the reply's deadline passed.
            StreamClosed: the server closed the connection.
        """
        stream = self._open_stream()
        meter = self.meter
        try:
            async with asyncio.timeout(meter.recv_timeout(self._timeout)):
                raw = await stream.readline(self._room)
        except TimeoutError as exc:
            if meter.expired():
                raise meter.too_slow() from exc
            raise
        except LineTooLong as exc:
            raise meter.too_large(
                f"a line of more than {self._limits.line_bytes} bytes", "line_bytes"
            ) from exc
        meter.charge(len(raw))
        line = without_line_end(raw)
        if len(line) > self._room - 2:
            meter.check_line(len(line))
        return line, len(raw)

    async def sasl_line(self) -> bytes:
        """One SASL reply line (a reply of its own, with its own deadline)."""
        self.meter.start()
        line, _ = await self.line()
        return line

    async def reply(self) -> bytes:
        """A status line: ``+OK ...`` returned, ``-ERR`` raised (poplib.error_proto)."""
        self.meter.start()
        line, _ = await self.line()
        # A status line is the server's words, not the caller's data: one that
        # quotes a secret back (a "+OK" too) is returned or raised without it.
        return status_line(redact(line, self.secrets), self.where)

    async def long_reply(self) -> LongResp:
        """A status line and the lines up to ``.``: ``(resp, lines, octets)``."""
        resp = await self.reply()
        body = Body(self._limits, self.meter)
        line = self.line
        while not body.add(*await line()):
            pass
        return resp, body.lines, body.octets

    # -- writing -----------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send one line; bytes the server sent unasked are out of step."""
        stream = self._open_stream()
        if stream.buffered:
            raise out_of_step(self.where, stream.buffered)
        stream.write(data + _CRLF)
        async with asyncio.timeout(self._timeout):
            await stream.drain()

    async def command(self, text: str) -> bytes:
        """Send a command; its status line (``-ERR`` raises poplib.error_proto)."""
        await self.send(text.encode("utf-8"))
        return await self.reply()

    async def long_command(self, text: str) -> LongResp:
        """Send a command with a multi-line answer: ``(resp, lines, octets)``."""
        await self.send(text.encode("utf-8"))
        return await self.long_reply()

    # -- state and errors ----------------------------------------------------------

    def peer_closed(self) -> bool:
        """True when the server sent something unasked or hung up (or never opened)."""
        stream = self.stream
        return stream is None or stream.peek_unasked()

    @contextmanager
    def translated(self, doing: str) -> Iterator[None]:
        """Translate stream, TLS and poplib failures; a dead connection becomes Dead.

        Every exception leaving here is scrubbed of secrets, with its chain;
        the connection is closed when it is no longer usable.
        """
        try:
            yield
        except BaseException as exc:
            error, dead = translate(exc, doing, where=self.where, timeout=self._timeout)
            if dead:
                self.abandon()
            scrub_exception(exc)
            if error is None:
                raise
            scrub_exception(error)
            raise error from exc

    def abandon(self) -> None:
        """Close without a word to the server."""
        stream, self.stream = self.stream, None
        self.tls = False
        if stream is not None:
            stream.close()
