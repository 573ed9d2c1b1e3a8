"""SMTP submission with OAuth 2.0 that reconnects and never sends a message twice."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from email.message import Message
from types import TracebackType
from typing import Any

from ._backoff import Backoff
from ._constants import GMAIL_SMTP_HOST
from ._limits import DEFAULT_LIMITS, Limits
from ._mailconn import Dead, login, peer_closed, reconnect
from ._redact import get_logger, scrub_exception
from ._session import SessionDeadline
from ._smtp_errors import (
    SMTPConnectionLost,
    SMTPInsecureConnection,
    SMTPTimeout,
)
from ._smtp_policy import (
    after_lost,
    bad_certificate,
    ends_session,
    no_starttls,
    not_sent,
    quote,
    refusal,
    starttls_refused,
    timed_out,
)
from ._smtp_reply import BoundedReplies, SMTPReplyMeter
from ._smtp_sasl import SaslExchange, check_mechanism
from ._tokens import Clock, TokenSource, as_token_provider
from .errors import (
    ConfigurationError,
    ConnectionLost,
    Error,
    LimitExceeded,
    ProtocolError,
    recast,
)

__all__ = ["SMTP"]

_log = get_logger(__name__)

_SUBMISSION_PORT = 587
_FINAL_DOT = b"\r\n.\r\n"

_Reply = tuple[int, bytes]
_SendErrs = dict[str, tuple[int, bytes]]


class SMTP(BoundedReplies):
    """An :class:`smtplib.SMTP` that logs in with OAuth 2.0 and survives session ends.

    The constructor connects (implicit TLS on 465; on 587, or with
    ``starttls=True``: EHLO, STARTTLS, EHLO again) and authenticates with
    ``AUTH XOAUTH2 <initial response>`` in one round trip. :meth:`sendmail` and
    :meth:`send_message` keep their stdlib signatures and return values, and:

    * a connection that is dead, ended by the server (Gmail's idle
      ``451 4.4.2 Timeout - closing connection.``, ``421 4.7.0 ...``) or whose
      token is about to expire is replaced before the send;
    * a send that fails before the message's final dot has gone out (the
      connection died, or the server closed it with 421 or Gmail's 451) is
      tried once more on a new connection;
    * after the final dot, the server's reply is the verdict: an error reply
      raises smtplib's own :class:`smtplib.SMTPDataError`, never a retry;
    * if the connection dies after the final dot and before the server's reply,
      or the reply is not SMTP, too large or too slow,
      :class:`DeliveryUnknown` is raised and the message is never sent again.

    Every reply is read within ``limits``: a server that sends an endless,
    huge, trickling or malformed reply ends the command in bounded time and
    memory with :class:`LimitExceeded`, :class:`Timeout` or
    :class:`ProtocolError`, and the connection is closed (the next command
    opens a new one).

    Args:
        user: the Gmail address.
        tokens: a token provider, or a zero-argument callable returning a token.
        host: the server.
        port: 465 (implicit TLS) or 587 (STARTTLS).
        starttls: plain connection upgraded with STARTTLS; None means "when
            port is 587".
        ssl_context: TLS settings; by default :func:`ssl.create_default_context`
            (certificates and host names verified).
        timeout: socket timeout, in seconds.
        mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        reconnect: replace dead or expiring connections transparently.
        clock: the time source for the proactive reconnect (tests inject one).
        backoff: the delays between reconnect attempts.
        local_hostname: the name sent with EHLO (default: this host's FQDN).
        limits: bounds on every reply (see :class:`Limits`): all the lines of
            one reply together are bounded by ``line_bytes``, their number by
            ``response_lines``, the time from its first byte to its last by
            ``response_seconds``. Default: ``Limits()``.

    Raises:
        AuthenticationFailed: the token was rejected, also after one refresh.
        TooManyConnections: Gmail refused another connection for this user.
        InsecureConnection: STARTTLS was needed but not offered, refused or
            broken (an answer that is not SMTP, data before the handshake, a
            failed handshake), or the certificate did not verify; no token was
            sent.
        ConnectionLost: the server could not be reached.
        Timeout: the server did not answer in time.
        ProtocolError: the server sent something that is not SMTP, or
            (:class:`LimitExceeded`) more than ``limits`` allow.
        TokenError: the token provider failed (``retryable`` when that was
            transient); no token was sent.
        ConfigurationError: an argument is wrong.

    Each of the library's errors above but the last two is raised as its SMTP
    class (:class:`SMTPAuthenticationFailed`, :class:`SMTPConnectionLost`...),
    an :class:`smtplib.SMTPException` too: a lost connection or a timeout is an
    :class:`smtplib.SMTPServerDisconnected`, a rejected token an
    :class:`smtplib.SMTPAuthenticationError` with smtplib's ``smtp_code`` and
    ``smtp_error``. Code written for smtplib catches them as it always did.
    """

    def __init__(
        self,
        user: str,
        tokens: TokenSource,
        host: str = GMAIL_SMTP_HOST,
        port: int = smtplib.SMTP_SSL_PORT,
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
        # No host here: smtplib would connect before our settings are in place.
        super().__init__(local_hostname=local_hostname, timeout=timeout)
        self._host = host
        self._port = port
        self._user = user
        self._tokens = as_token_provider(tokens)
        self._starttls = port == _SUBMISSION_PORT if starttls is None else starttls
        self._context = ssl_context or ssl.create_default_context()
        self._mechanism = mechanism
        self._reconnect = reconnect
        self._deadline = SessionDeadline(clock=clock)
        self._backoff = backoff or Backoff()
        self._server = f"{host}:{port}"
        self._where = f"the SMTP server {self._server}"
        self._meter = SMTPReplyMeter(limits or DEFAULT_LIMITS, where=self._where)
        self._secrets: list[str] = []
        self._in_data = False
        self._dot_sent = False
        self._sending = False
        try:
            self._connect()
        except BaseException as exc:
            self.close()
            scrub_exception(exc)
            if isinstance(exc, Dead):
                raise SMTPConnectionLost(
                    f"could not connect to the SMTP server {host}:{port}: {exc}"
                ) from exc
            raise

    # -- connection and authentication -------------------------------------

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # Called by smtplib.SMTP.connect; implicit TLS wraps the socket here.
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        if self._starttls:
            return sock  # type: ignore[no-any-return]
        try:
            return self._context.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise

    def _open(self) -> None:
        """Connect, EHLO and (on 587) STARTTLS and EHLO again; no token is sent."""
        _log.debug("connecting to SMTP server %s:%s", self._host, self._port)
        self._forget_session()
        with self._wire("the greeting"):
            code, message = self.connect(self._host, self._port)
        if code != 220:
            self.close()
            raise refusal(code, message, "the greeting")
        self._ehlo()
        if not self._starttls:
            return
        if not self.has_extn("starttls"):
            self.close()
            raise no_starttls(self._where)
        self._start_tls()
        self._ehlo()

    def _start_tls(self) -> None:
        """STARTTLS and the TLS handshake (RFC 3207); any oddity is insecure."""
        where = self._where
        try:
            with self._wire("STARTTLS"):
                code, message = self.docmd("STARTTLS")
        except ProtocolError as exc:
            if isinstance(exc, LimitExceeded):
                raise
            raise SMTPInsecureConnection(
                f"{where} answered STARTTLS with something that is not SMTP "
                f"({exc}); no token was sent"
            ) from exc
        if code != 220:
            self.close()
            raise starttls_refused(where, code, message)
        if self._unread():
            # Bytes sent before the handshake would be read as if they came
            # over TLS (the STARTTLS injection of CVE-2011-0411).
            self.close()
            raise SMTPInsecureConnection(
                f"{where} sent data after its answer to STARTTLS, before the TLS "
                "handshake; no token was sent"
            )
        plain, self.file = self.file, None
        if plain is not None:
            plain.close()  # what it buffered is dropped, never read over TLS
        assert self.sock is not None  # docmd() just used it
        with self._wire("the TLS handshake after STARTTLS"):
            try:
                self.sock = self._context.wrap_socket(
                    self.sock, server_hostname=self._host
                )
            except ssl.SSLCertVerificationError:
                raise  # InsecureConnection, naming the reason
            except ssl.SSLError as exc:
                self.close()
                raise SMTPInsecureConnection(
                    f"the TLS handshake with {where} after STARTTLS failed "
                    f"({exc.reason or exc}); no token was sent"
                ) from exc
        # RFC 3207 section 4.2: forget what was learned before TLS.
        self._forget_session()

    def _ehlo(self) -> None:
        with self._wire("EHLO"):
            code, message = self.ehlo()
        if code != 250:
            self.close()
            raise refusal(code, message, "EHLO")

    def _forget_session(self) -> None:
        self.helo_resp = self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False

    def _connect(self) -> None:
        """Open a connection and log in, refreshing the token once if rejected."""
        login(
            self._tokens,
            open_connection=self._open,
            authenticate=self._authenticate,
            peer_closed=self._peer_closed,
            abandon=self.close,
            where=self._where,
            logger=_log,
        )
        self._deadline.start(self._tokens)

    def _authenticate(self, token: str) -> None:
        """AUTH with the initial response (RFC 4954): one round trip."""
        exchange = SaslExchange(
            self._mechanism, self._user, token, host=self._host, port=self._port
        )
        self._secrets = exchange.secrets
        with self._wire("AUTH"):
            code, message = self.docmd("AUTH", exchange.argument())
            answer = exchange.answer(code, message)
            if answer is not None:
                code, message = self.docmd(answer)
        try:
            exchange.outcome(code, message)
        except (Dead, ProtocolError):
            self.close()
            raise

    # -- plumbing: errors translated once, scrubbed of every secret ------------

    @contextmanager
    def _wire(self, doing: str) -> Iterator[None]:
        """Translate socket and smtplib failures once, scrubbed of every secret."""
        try:
            yield
        except BaseException as exc:
            scrub_exception(exc)
            error = self._translate(exc, doing)
            if isinstance(error, Dead):
                # Dead means "try again": never once the final dot went out.
                error = after_lost(
                    error,
                    dot_sent=self._sending and self._dot_sent,
                    server=self._server,
                )
            if error is exc:
                raise
            scrub_exception(error)
            raise error from exc

    def _translate(self, exc: BaseException, doing: str) -> BaseException:
        """What ``exc`` becomes; a dead connection becomes Dead."""
        if isinstance(exc, Error):
            return exc  # ours already (DeliveryUnknown is an OSError: never retry it)
        if isinstance(exc, TimeoutError):
            self.close()
            return self._timeout(doing)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            self.close()
            if isinstance(exc.__context__, TimeoutError):
                return self._timeout(doing)
            return Dead(f"{exc} during {doing}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.close()
            return bad_certificate(self._where, exc.verify_message)
        if isinstance(exc, smtplib.SMTPResponseException):
            # After the final dot a reply is the verdict on the message: the
            # stdlib error goes to the caller and nothing is sent again.
            if not self._dot_sent and ends_session(exc.smtp_code, exc.smtp_error):
                self.close()
                return Dead(
                    f"the server ended the session: {exc.smtp_code} "
                    f"{quote(exc.smtp_error)}"
                )
            return exc
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            if any(ends_session(c, m) for c, m in exc.recipients.values()):
                self.close()
                return Dead("the server ended the session during RCPT")
            return exc
        if isinstance(exc, smtplib.SMTPException):
            return exc
        if isinstance(exc, OSError | EOFError):
            self.close()
            return Dead(f"{type(exc).__name__} during {doing}")
        return exc

    def _timeout(self, doing: str) -> SMTPTimeout:
        return timed_out(self._where, doing, self.timeout)

    def _peer_closed(self) -> bool:
        """True when the server sent something unasked (a 451/421 close) or hung up."""
        return peer_closed(self.sock)

    # -- reconnecting ------------------------------------------------------------

    def _reestablish(self, reason: str) -> None:
        """Replace the connection, backing off while the server is unavailable."""
        # Routine (Gmail closes an idle session after minutes): DEBUG.
        _log.debug(
            "reconnecting to SMTP server %s:%s for %s: %s",
            self._host,
            self._port,
            self._user,
            reason,
        )
        self.close()
        try:
            reconnect(
                self._connect,
                self.close,
                self._backoff,
                where=self._where,
                logger=_log,
            )
        except ConnectionLost as exc:
            if isinstance(exc, SMTPConnectionLost):
                raise
            # The shared reconnect loop gave up: SMTP's class, as everywhere.
            error = recast(exc, SMTPConnectionLost)
            raise error from error.__cause__

    def _server_goodbye(self) -> str:
        """Read what the server sent unasked before it hung up, for the log."""
        try:
            code, message = self.getreply()
        except (smtplib.SMTPException, OSError, Error):
            return "the server closed the connection"
        return f"the server closed the connection: {code} {quote(message)}"

    def _before_send(self) -> None:
        """Before a send: replace a dead, ended or expiring connection."""
        if self.sock is None:
            reason = "the previous connection was closed"
        elif self._peer_closed():
            reason = self._server_goodbye()
        elif self._reconnect and self._deadline.due():
            reason = "the access token is about to expire"
            try:
                smtplib.SMTP.quit(self)
            except (smtplib.SMTPException, OSError):
                pass
        else:
            return
        self.close()
        if not self._reconnect:
            raise SMTPConnectionLost(f"{reason}, and reconnect=False")
        self._reestablish(reason)

    # -- sending -------------------------------------------------------------------

    def send(self, s: Any) -> None:
        """Send raw data (smtplib's own), noting when a message's final dot went out."""
        super().send(s)
        if self._in_data and isinstance(s, bytes) and s.endswith(_FINAL_DOT):
            self._dot_sent = True

    def data(self, msg: Any) -> _Reply:
        """DATA (smtplib's own), but a connection lost after the final dot is not
        an ordinary disconnect: the server may have accepted the message.

        Raises:
            DeliveryUnknown: the final dot was sent and no reply came, or the
                reply was not SMTP, too large or too slow.
        """
        self._in_data, self._dot_sent = True, False
        try:
            return super().data(msg)
        except (smtplib.SMTPServerDisconnected, OSError, ProtocolError) as exc:
            if not self._dot_sent:
                raise
            self.close()
            raise after_lost(exc, dot_sent=True, server=self._server) from exc
        finally:
            self._in_data = False

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> _SendErrs:
        """Send a message as :meth:`smtplib.SMTP.sendmail` does, surviving session ends.

        Raises:
            DeliveryUnknown: the connection died after the final dot.
            ConnectionLost: the connection died twice before the final dot; the
                message was not sent.
        """
        self._before_send()
        args = (from_addr, to_addrs, msg, mail_options, rcpt_options)
        try:
            return self._sendmail_once(*args)
        except Dead as exc:
            if not self._reconnect:
                raise not_sent(exc, reconnect=False) from exc
            self._reestablish(f"{exc}, before the message was sent")
        try:
            return self._sendmail_once(*args)
        except Dead as exc:
            raise not_sent(exc, reconnect=True) from exc

    def _sendmail_once(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
    ) -> _SendErrs:
        self._dot_sent = False
        self._sending = True
        try:
            with self._wire("sending a message"):
                return super().sendmail(
                    from_addr, to_addrs, msg, mail_options, rcpt_options
                )
        finally:
            self._sending = False

    def send_message(
        self,
        msg: Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> _SendErrs:
        """Send a message object as :meth:`smtplib.SMTP.send_message` does."""
        self._before_send()
        return super().send_message(
            msg, from_addr, to_addrs, mail_options, rcpt_options
        )

    def noop(self) -> _Reply:
        """NOOP on a live connection: a dead, ended or expiring one is replaced."""
        return self._harmless("NOOP", super().noop)

    def rset(self) -> _Reply:
        """RSET on a live connection: a dead, ended or expiring one is replaced."""
        if self._sending:
            # smtplib's own reset after a refusal, inside sendmail: as is, but a
            # broken reply to it (the connection is closed) must not hide the
            # refusal, so it becomes the disconnect smtplib ignores there.
            try:
                return super().rset()
            except Error as exc:
                self.close()
                raise smtplib.SMTPServerDisconnected(str(exc)) from exc
        return self._harmless("RSET", super().rset)

    def _harmless(self, what: str, call: Callable[[], _Reply]) -> _Reply:
        """Run a command that changes nothing on the server, surviving session ends."""
        self._before_send()
        try:
            with self._wire(what):
                return call()
        except Dead as exc:
            if not self._reconnect:
                raise SMTPConnectionLost(f"{exc}, and reconnect=False") from exc
            self._reestablish(str(exc))
        try:
            with self._wire(what):
                return call()
        except Dead as exc:
            raise SMTPConnectionLost(f"{exc}, again after reconnecting") from exc

    def quit(self) -> _Reply:
        """QUIT and close; a connection the server already closed, or whose
        answer to QUIT is broken (not SMTP, too large, too slow), just closes."""
        try:
            if not self._peer_closed():
                return super().quit()
        except (smtplib.SMTPServerDisconnected, OSError, Error):
            pass
        self.close()
        self._forget_session()
        return (221, b"connection already closed")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.quit()
        except smtplib.SMTPException:
            if exc_type is None:
                raise
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.sock is None else "connected"
        return (
            f"<gmail_xoauth2.SMTP {self._user} at {self._host}:{self._port} "
            f"{self._mechanism} {state}>"
        )
