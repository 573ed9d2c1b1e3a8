"""SMTP submission for asyncio: an aiosmtplib.SMTP that logs in with OAuth 2.0,
reconnects, and never sends a message twice.

A thin driver: what to send for AUTH and what its replies mean
(:mod:`.._smtp_sasl`), what a lost connection or an ended session means at each
stage of a send (:mod:`.._smtp_policy`), how a reply is checked against the
Limits (:func:`.._smtp_reply.check_reply`), when to reconnect
(:class:`.._session.SessionDeadline`) and how long to wait
(:class:`.._reconnect.Attempts`) are decided once, for this class and the sync
:class:`gmail_xoauth2.SMTP` alike.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Sequence
from email.message import Message
from typing import Any, cast

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.typing import Default

from .._backoff import Backoff
from .._constants import GMAIL_SMTP_HOST
from .._limits import DEFAULT_LIMITS, Limits
from .._mailconn import Dead, login_async, reconnect_async
from .._redact import get_logger, scrub_exception
from .._session import SessionDeadline
from .._smtp_errors import (
    SMTPConnectionLost,
    SMTPInsecureConnection,
)
from .._smtp_policy import (
    bad_certificate,
    no_starttls,
    not_sent,
    refusal,
    starttls_refused,
)
from .._smtp_reply import SMTPReplyMeter
from .._smtp_sasl import SaslExchange, check_mechanism
from .._tokens import Clock
from ..errors import (
    ConfigurationError,
    Error,
    LimitExceeded,
    ProtocolError,
)
from ._smtp_errors import aiosmtplib_errors
from ._smtp_replies import BoundedSMTP, Wait
from ._tokens import AsyncTokens, AsyncTokenSource, as_async_tokens

__all__ = ["SMTP"]

_log = get_logger("gmail_xoauth2.smtp")

_SUBMISSION_PORT = 587
_INVALID = -1  # aiosmtplib's code for a reply it could not read
_Sent = tuple[dict[str, SMTPResponse], str]


class SMTP(BoundedSMTP):
    """An :class:`aiosmtplib.SMTP` logging in with OAuth 2.0, surviving session ends.

    The asyncio twin of :class:`gmail_xoauth2.SMTP`, with its arguments and
    guarantees. Creating one does no I/O; ``await smtp.connect()`` or
    ``async with smtp:`` connects (implicit TLS on 465; on 587, or with
    ``starttls=True``: EHLO, STARTTLS, which must succeed, EHLO again) and
    authenticates with ``AUTH XOAUTH2`` (or ``OAUTHBEARER``) and the initial
    response, answering Gmail's error challenge and refreshing a rejected
    token once. :meth:`sendmail` and :meth:`send_message` keep aiosmtplib's
    signatures and return values, and:

    * a connection that is closed, ended by the server or whose token is about
      to expire is replaced before the send;
    * a send that fails before the message's final dot has gone out (the
      connection died, or the server closed it with 421 or Gmail's 451) is
      tried once more on a new connection;
    * after the final dot, the server's reply is the verdict: an error reply
      raises aiosmtplib's :class:`aiosmtplib.SMTPDataError`, never a retry;
    * if the connection dies after the final dot and before the server's
      reply, or the reply is not SMTP, too large or too slow,
      :class:`~gmail_xoauth2.DeliveryUnknown` is raised and the message is
      never sent again.

    Sends from many tasks share the connection one at a time.

    Replies are read by aiosmtplib, which refuses a line over 8 KiB and a
    reply over 32 KiB (:class:`~gmail_xoauth2.LimitExceeded`) and a line
    that is not a reply (:class:`~gmail_xoauth2.ProtocolError`); each reply
    is then checked against ``limits`` (its code, ``line_bytes`` for its lines
    together, ``response_lines``), and must arrive whole within ``timeout`` or
    ``Limits.response_seconds``, whichever is shorter. Either way the
    connection is closed and the next command opens a new one.

    The library's errors are the sync class's (:class:`SMTPConnectionLost`,
    :class:`SMTPDeliveryUnknown`...): ``except gmail_xoauth2.DeliveryUnknown``
    catches them from both. A server's verdict on a message (a refused sender
    or recipients, an error reply to the data) is aiosmtplib's own exception.

    Args:
        user: the Gmail address.
        tokens: a token provider (``token_async()`` or ``token()``), or a
            callable returning a token, plain or ``async``.
        host: the server.
        port: 465 (implicit TLS) or 587 (STARTTLS).
        starttls: plain connection upgraded with STARTTLS; None means "when
            port is 587".
        ssl_context: TLS settings; by default :func:`ssl.create_default_context`
            (certificates and host names verified).
        timeout: how long a reply may take, in seconds.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: replace dead or expiring connections transparently.
        clock: the time source for the proactive reconnect (tests inject one).
        backoff: the delays between reconnect attempts.
        local_hostname: the name sent with EHLO (default: this host's FQDN).
        limits: bounds on every reply (see :class:`~gmail_xoauth2.Limits`).
    """

    def __init__(
        self,
        user: str,
        tokens: AsyncTokenSource | AsyncTokens,
        host: str = GMAIL_SMTP_HOST,
        port: int = aiosmtplib.smtp.SMTP_TLS_PORT,
        *,
        starttls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        mechanism: str = "XOAUTH2",
        reconnect: bool = True,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        local_hostname: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        mechanism = check_mechanism(mechanism)
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigurationError(
                f"limits must be a gmail_xoauth2.Limits, not {type(limits).__name__}"
            )
        limits = limits or DEFAULT_LIMITS
        starttls = port == _SUBMISSION_PORT if starttls is None else starttls
        seconds = limits.response_seconds
        super().__init__(
            hostname=host,
            port=port,
            local_hostname=local_hostname,
            # aiosmtplib bounds the whole reply by its timeout: the shorter one.
            timeout=timeout if seconds is None else min(timeout, seconds),
            use_tls=not starttls,
            start_tls=False,  # done here: refused or missing is an error
            tls_context=ssl_context or ssl.create_default_context(),
        )
        self._host = host
        self._port = port
        self._user = user
        self._tokens = as_async_tokens(tokens)
        self._starttls = starttls
        self._mechanism = mechanism
        self._reconnect = reconnect
        self._deadline = SessionDeadline(clock=clock)
        self._backoff = backoff or Backoff()
        self._server = f"{host}:{port}"
        self._where = f"the SMTP server {self._server}"
        self._meter = SMTPReplyMeter(limits, where=self._where)
        self._lock = asyncio.Lock()
        self._greeting: SMTPResponse | None = None
        self._sending = False
        self._dot_sent = False

    # -- connection and authentication -------------------------------------

    @aiosmtplib_errors
    async def connect(self, **kwargs: Any) -> SMTPResponse:
        """Connect and authenticate (the settings are the constructor's).

        Returns:
            The greeting of the server that accepted the login.
        """
        if kwargs:
            raise ConfigurationError(
                "aio.SMTP takes its settings in the constructor; connect() takes "
                f"none (got {', '.join(sorted(kwargs))})"
            )
        async with self._lock:
            if not self.is_connected:
                await self._exits(self._connect())
        assert self._greeting is not None
        return self._greeting

    async def _open(self) -> None:
        """Connect, EHLO and (on 587) STARTTLS and EHLO again; no token is sent."""
        _log.debug("connecting to SMTP server %s", self._server)
        self.close()  # forgets the last session and frees aiosmtplib's connect lock
        async with self._step("the greeting"):
            greeting = await super().connect()
        self._greeting = self._checked(greeting)
        await self._ehlo()
        if not self._starttls:
            return
        if not self.supports_extension("starttls"):
            self.close()
            raise no_starttls(self._where)
        await self._start_tls()
        await self._ehlo()

    async def _ehlo(self) -> None:
        try:
            async with self._step("EHLO"):
                await self.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            self.close()
            raise refusal(exc.code, exc.message, "EHLO") from exc

    async def _start_tls(self) -> None:
        """STARTTLS and the TLS handshake (RFC 3207); any oddity is insecure.

        aiosmtplib drops whatever arrived after the answer and before the
        handshake (the STARTTLS injection of CVE-2011-0411), so it is never
        read as if it came over TLS.
        """
        try:
            async with self._step("STARTTLS"):
                await self.starttls()
            return
        except LimitExceeded:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            self.close()
            raise starttls_refused(self._where, exc.code, exc.message) from exc
        except ProtocolError as exc:
            self.close()
            raise SMTPInsecureConnection(
                f"{self._where} answered STARTTLS with something that is not SMTP "
                f"({exc}); no token was sent"
            ) from exc
        except ssl.SSLError as exc:
            self.close()
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise bad_certificate(self._where, exc.verify_message) from exc
            raise SMTPInsecureConnection(
                f"the TLS handshake with {self._where} after STARTTLS failed "
                f"({exc.reason or exc}); no token was sent"
            ) from exc

    async def _connect(self) -> None:
        """Open a connection and log in (the shared plan: a rejected token is
        refreshed once, on the same connection if the server kept it open)."""

        async def peer_closed() -> bool:
            return not self.is_connected

        await login_async(
            lambda force: self._tokens.token(force_refresh=force),
            open_connection=self._open,
            authenticate=self._authenticate,
            peer_closed=peer_closed,
            abandon=self.close,
            where=self._where,
            logger=_log,
        )
        self._deadline.start(expiry=self._tokens.expiry)

    async def _authenticate(self, token: str) -> None:
        """AUTH with the initial response (RFC 4954): one round trip."""
        exchange = SaslExchange(
            self._mechanism, self._user, token, host=self._host, port=self._port
        )
        async with self._step("AUTH"):
            mechanism, initial = exchange.argument().encode("ascii").split(b" ")
            reply = await self.execute_command(b"AUTH", mechanism, initial)
            answer = exchange.answer(reply.code, reply.message)
            if answer is not None:
                reply = await self.execute_command(answer.encode("ascii"))
        try:
            exchange.outcome(reply.code, reply.message)
        except (Dead, ProtocolError):
            self.close()
            raise

    async def _exits(self, work: Any) -> None:
        """Await ``work``; what leaves is scrubbed, and never the internal Dead."""
        try:
            await work
        except BaseException as exc:
            self.close()
            scrub_exception(exc)
            if isinstance(exc, Dead):
                error = SMTPConnectionLost(f"could not connect to {self._where}: {exc}")
                raise error from exc
            raise

    # -- reconnecting ------------------------------------------------------------

    async def _reestablish(self, reason: str) -> None:
        """Replace the connection, backing off while the server is unavailable."""
        # Routine (Gmail closes an idle session after minutes): DEBUG.
        _log.debug(
            "reconnecting to SMTP server %s for %s: %s",
            self._server,
            self._user,
            reason,
        )
        await reconnect_async(
            self._connect,
            self.close,
            self._backoff,
            where=self._where,
            logger=_log,
            lost=SMTPConnectionLost,
        )

    async def _before_send(self) -> None:
        """Before a send: connect, or replace a closed or expiring connection."""
        if self._greeting is None:
            await self._exits(self._connect())  # never connected: the first time
            return
        if not self.is_connected:
            reason = "the server closed the connection"
        elif self._reconnect and self._deadline.due():
            reason = "the access token is about to expire"
            try:
                await super().quit()
            except (aiosmtplib.SMTPException, Error, OSError):
                pass
        else:
            return
        self.close()
        if not self._reconnect:
            raise SMTPConnectionLost(f"{reason}, and reconnect=False")
        await self._reestablish(reason)

    # -- sending -------------------------------------------------------------------

    @aiosmtplib_errors
    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Wait = Default.token,
    ) -> _Sent:
        """Send as :meth:`aiosmtplib.SMTP.sendmail` does, surviving session ends.

        Raises:
            DeliveryUnknown: the connection died after the final dot.
            ConnectionLost: the connection died twice before the final dot; the
                message was not sent.
        """
        mail = list(mail_options or ())
        rcpt = list(rcpt_options or ())
        async with self._lock:
            await self._before_send()
            args = (sender, recipients, message, mail, rcpt, timeout)
            try:
                return await self._sendmail_once(*args)
            except Dead as exc:
                if not self._reconnect:
                    raise not_sent(exc, reconnect=False) from exc
                await self._reestablish(f"{exc}, before the message was sent")
            try:
                return await self._sendmail_once(*args)
            except Dead as exc:
                raise not_sent(exc, reconnect=True) from exc

    async def _sendmail_once(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        mail_options: list[str],
        rcpt_options: list[str],
        timeout: Wait,
    ) -> _Sent:
        self._dot_sent = False
        self._sending = True
        try:
            async with self._step("sending a message"):
                return await super().sendmail(
                    sender,
                    recipients,
                    message,
                    mail_options=list(mail_options),
                    rcpt_options=list(rcpt_options),
                    timeout=timeout,
                )
        finally:
            self._sending = False

    @aiosmtplib_errors
    async def data(
        self, message: str | bytes, /, *, timeout: Wait = Default.token
    ) -> SMTPResponse:
        """DATA (aiosmtplib's), noting when the message's final dot went out.

        Raises:
            aiosmtplib.SMTPDataError: the server refused the message (a verdict).
        """
        await self._ehlo_or_helo_if_needed()
        if isinstance(message, str):
            message = message.encode("ascii")
        start = await self.execute_command(b"DATA", timeout=timeout)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        payload = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
        protocol.write(payload + b".\r\n")
        self._dot_sent = True  # from here on, never again
        try:
            reply = await protocol.read_response(
                timeout=self.timeout if timeout is Default.token else timeout
            )
        except aiosmtplib.SMTPResponseException as exc:
            self.close()
            if exc.code != _INVALID:
                raise
            raise self._unreadable(exc) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        reply = self._checked(reply)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    @aiosmtplib_errors
    async def send_message(
        self,
        message: Message,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Wait = Default.token,
    ) -> _Sent:
        """Send a message object as :meth:`aiosmtplib.SMTP.send_message` does."""
        async with self._lock:
            await self._before_send()
        try:
            async with self._step("EHLO"):
                return await super().send_message(
                    message,
                    sender=sender,
                    recipients=recipients,
                    mail_options=mail_options,
                    rcpt_options=rcpt_options,
                    timeout=timeout,
                )
        except Dead as exc:  # the EHLO before the send (sendmail's are its own)
            raise not_sent(exc, reconnect=self._reconnect) from exc

    @aiosmtplib_errors
    async def noop(self, *, timeout: Wait = Default.token) -> SMTPResponse:
        """NOOP on a live connection: a dead, ended or expiring one is replaced."""
        async with self._lock:
            return await self._harmless("NOOP", super().noop, timeout)

    @aiosmtplib_errors
    async def rset(self, *, timeout: Wait = Default.token) -> SMTPResponse:
        """RSET on a live connection: a dead, ended or expiring one is replaced."""
        if self._sending:
            return await super().rset(timeout=timeout)  # aiosmtplib's, in a send
        async with self._lock:
            return await self._harmless("RSET", super().rset, timeout)

    async def _harmless(self, what: str, call: Any, timeout: Wait) -> SMTPResponse:
        """Run a command that changes nothing on the server, surviving session ends."""
        await self._before_send()
        try:
            async with self._step(what):
                return cast(SMTPResponse, await call(timeout=timeout))
        except Dead as exc:
            if not self._reconnect:
                raise SMTPConnectionLost(f"{exc}, and reconnect=False") from exc
            await self._reestablish(str(exc))
        try:
            async with self._step(what):
                return cast(SMTPResponse, await call(timeout=timeout))
        except Dead as exc:
            raise SMTPConnectionLost(f"{exc}, again after reconnecting") from exc

    async def quit(self, *, timeout: Wait = Default.token) -> SMTPResponse:
        """QUIT and close; a connection the server already closed, or whose
        answer to QUIT is broken (not SMTP, too large, too slow), just closes."""
        try:
            if self.is_connected:
                return await super().quit(timeout=timeout)
        except (aiosmtplib.SMTPException, Error, OSError):
            pass
        self.close()
        return SMTPResponse(221, "connection already closed")

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "closed"
        return (
            f"<gmail_xoauth2.aio.SMTP {self._user} at {self._server} "
            f"{self._mechanism} {state}>"
        )
