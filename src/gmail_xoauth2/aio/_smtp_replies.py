"""aiosmtplib's replies held to the sync SMTP's rules: checked, scrubbed, translated.

:class:`BoundedSMTP` is to :class:`gmail_xoauth2.aio.SMTP` what
:class:`.._smtp_reply.BoundedReplies` is to the sync class: every reply is
checked against the Limits by the same :func:`.._smtp_reply.check_reply` and
scrubbed of every secret, and every failure of aiosmtplib or the socket is
translated once into the library's errors (internal ``Dead`` for "the
connection is gone, another may do"), as the sync class's ``_wire`` does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.typing import Default

from .._limits import ReplyMeter
from .._mailconn import Dead
from .._redact import scrub, scrub_exception
from .._smtp_errors import SMTPLimitExceeded, SMTPProtocolError
from .._smtp_policy import (
    after_lost,
    bad_certificate,
    ends_session,
    quote,
    refusal,
    timed_out,
)
from .._smtp_reply import check_reply
from ..errors import Error, ProtocolError, Timeout

__all__ = ["BoundedSMTP", "Wait"]

_INVALID = -1  # aiosmtplib's code for a reply it could not read
Wait = float | Literal[Default.token] | None


class BoundedSMTP(aiosmtplib.SMTP):
    """An :class:`aiosmtplib.SMTP` whose replies are checked and whose errors are ours.

    A subclass sets ``_where`` and ``_server`` (for messages), ``_meter`` (the
    Limits) and keeps ``_sending`` and ``_dot_sent`` up to date during a send.
    """

    _where: str
    _server: str
    _meter: ReplyMeter
    _sending = False
    _dot_sent = False

    # -- replies: checked, scrubbed, their failures translated once ----------

    async def execute_command(
        self, *args: bytes, timeout: Wait = Default.token
    ) -> SMTPResponse:
        """aiosmtplib's, with every reply checked against the Limits and scrubbed.

        Raises:
            ProtocolError: the reply is not SMTP (the connection is closed).
            LimitExceeded: the reply is too large (the connection is closed).
        """
        try:
            reply = await super().execute_command(*args, timeout=timeout)
            return self._checked(reply)
        except (aiosmtplib.SMTPResponseException, Error) as exc:
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                if exc.code != _INVALID:
                    raise
                error: Exception = self._unreadable(exc)
            else:
                error = exc
            self.close()
            if self._sending and args[:1] == (b"RSET",):
                # aiosmtplib's own reset after a refusal: a broken reply to it
                # must not hide the refusal, so it is the disconnect it ignores.
                raise aiosmtplib.SMTPServerDisconnected(str(error)) from exc
            if error is exc:
                raise
            raise error from exc

    def _checked(self, reply: SMTPResponse) -> SMTPResponse:
        """``reply`` checked against the Limits and scrubbed of every secret."""
        try:
            check_reply(
                self._meter,
                reply.code,
                reply.message.encode("utf-8", "surrogateescape"),
            )
        except Error:
            self.close()
            raise
        return SMTPResponse(reply.code, scrub(reply.message))

    def _unreadable(self, exc: aiosmtplib.SMTPResponseException) -> ProtocolError:
        """Ours for a reply aiosmtplib could not read (code -1)."""
        if "too long" in exc.message:
            return SMTPLimitExceeded(
                f"{self._where} sent a reply longer than aiosmtplib reads (a line "
                "of 8 KiB, a reply of 32 KiB); the connection was closed"
            )
        return SMTPProtocolError(
            f"{self._where} sent something that is not an SMTP reply "
            f"({quote(exc.message)}); the connection was closed"
        )

    @asynccontextmanager
    async def _step(self, doing: str) -> AsyncIterator[None]:
        """Translate aiosmtplib and socket failures once, scrubbed of every secret."""
        try:
            yield
        except BaseException as exc:
            scrub_exception(exc)
            error = self._translate(exc, doing)
            if self._sending and isinstance(error, Dead | ProtocolError | Timeout):
                # Dead means "try again": never once the final dot went out.
                error = after_lost(error, dot_sent=self._dot_sent, server=self._server)
            if error is exc:
                raise
            scrub_exception(error)
            raise error from exc

    def _translate(self, exc: BaseException, doing: str) -> BaseException:
        """What ``exc`` becomes; a dead connection becomes Dead."""
        if isinstance(exc, Error | Dead):
            return exc
        if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts are too
            self.close()
            return timed_out(self._where, doing, self.timeout)
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == _INVALID:
            self.close()
            return self._unreadable(exc)
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            self.close()
            return bad_certificate(self._where, cause.verify_message)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            try:  # aiosmtplib reads any three digits as a code
                check_reply(
                    self._meter, exc.code, exc.message.encode("utf-8", "replace")
                )
            except Error as bad:
                self.close()
                return bad
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            self.close()
            return refusal(exc.code, exc.message, doing)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            # After the final dot a reply is the verdict on the message: it goes
            # to the caller and nothing is sent again.
            if not self._dot_sent and ends_session(exc.code, exc.message):
                self.close()
                return Dead(
                    f"the server ended the session: {exc.code} {quote(exc.message)}"
                )
            return exc
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            if any(ends_session(e.code, e.message) for e in exc.recipients):
                self.close()
                return Dead("the server ended the session during RCPT")
            return exc
        if isinstance(
            exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError
        ):
            self.close()
            return Dead(f"{quote(str(exc))} during {doing}")
        if isinstance(exc, ssl.SSLError):
            return exc  # the STARTTLS handshake: the caller knows what it means
        if isinstance(exc, OSError | EOFError):
            self.close()
            return Dead(f"{type(exc).__name__} during {doing}")
        return exc

    def close(self) -> None:
        """Drop the connection at once, as the sync class closes its socket.

        Every command has had its reply by then, so nothing is lost; a broken
        or hostile server does not get to hold a TLS shutdown open.
        """
        transport = self.transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()
        super().close()
