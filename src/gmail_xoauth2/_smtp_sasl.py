"""SMTP AUTH with OAuth 2.0 as an I/O-free exchange: what to send, what a reply means.

The sync :class:`~gmail_xoauth2.SMTP` (over smtplib) and the asyncio one (over
aiosmtplib) drive the same :class:`SaslExchange`, so they send the same lines
and reach the same verdicts:

- the initial response rides on the AUTH line (RFC 4954 section 4): one round
  trip when the token is good;
- Gmail answers a bad token with ``334 <base64 JSON>``, its error challenge,
  which is answered once with an empty line (XOAUTH2, Google's "OAuth 2.0
  Mechanism" page) or ``^A`` (OAUTHBEARER, RFC 7628 section 3.2.3) so that the
  final ``535`` follows; a second ``334`` is a ProtocolError;
- ``235`` (and ``503``, already authenticated) is success; Gmail's "too many
  simultaneous connections" is :class:`TooManyConnections`; any other 4xx
  (``421``, ``454``) is a temporary refusal, not a verdict on the token
  (internal :class:`Dead`: try again on a new connection); anything else is
  :class:`AuthenticationFailed`, with the error challenge decoded.
"""

from __future__ import annotations

from ._limits import SASL_ROUNDS
from ._mailconn import ABORT, MECHANISMS, decode_challenge, initial_response
from ._redact import get_logger
from ._rejection import rejection_message
from ._smtp_errors import SMTPAuthenticationFailed, SMTPProtocolError
from ._smtp_policy import is_too_many, quote, refusal
from .errors import ConfigurationError
from .sasl import ErrorChallenge

__all__ = ["SaslExchange", "check_mechanism"]

_log = get_logger("gmail_xoauth2.smtp")


def check_mechanism(mechanism: str) -> str:
    """``mechanism`` in capitals, if this library speaks it.

    Raises:
        ConfigurationError: it is neither XOAUTH2 nor OAUTHBEARER.
    """
    upper = mechanism.upper()
    if upper not in MECHANISMS:
        raise ConfigurationError(
            f"mechanism must be 'XOAUTH2' or 'OAUTHBEARER', not {upper!r}"
        )
    return upper


class SaslExchange:
    """One ``AUTH`` exchange with ``token``, free of I/O.

    Send ``AUTH`` with :meth:`argument`; give each reply to :meth:`answer`,
    sending what it returns until it returns None; then :meth:`outcome` says
    whether the login succeeded (it returns) or what to raise.

    Building the exchange registers the token and the SASL strings with the
    scrubber, so no exception, log record or debug line shows them.

    Args:
        mechanism: ``XOAUTH2`` or ``OAUTHBEARER``.
        user: the address logging in.
        token: the access token.
        host: the server (OAUTHBEARER names it; messages too).
        port: its port.
    """

    def __init__(
        self, mechanism: str, user: str, token: str, *, host: str, port: int
    ) -> None:
        self.mechanism = mechanism
        self.user = user
        self.host = host
        self.port = port
        self._initial = initial_response(
            mechanism, user, token, host=host, port=port
        ).decode("ascii")
        self.secrets = [self._initial, token]
        self.challenge: ErrorChallenge | None = None
        self._answered = False

    @property
    def where(self) -> str:
        return f"the SMTP server {self.host}:{self.port}"

    def argument(self) -> str:
        """What follows ``AUTH``: the mechanism and the initial response."""
        return f"{self.mechanism} {self._initial}"

    def answer(self, code: int, message: bytes | str) -> str | None:
        """The line answering this reply, or None when the exchange is over.

        Only the first ``334`` is answered: the initial response went with
        ``AUTH``, so the one continuation left is the error challenge.
        """
        if code != 334 or self._answered:
            return None
        self._answered = True
        data = (
            message.encode("ascii", "replace") if isinstance(message, str) else message
        )
        self.challenge = decode_challenge(data)
        _log.debug("error challenge received; answering it to end the exchange")
        return ABORT[self.mechanism].decode("ascii")

    def outcome(self, code: int, message: bytes | str) -> None:
        """Return when the final reply accepts the login; else raise its meaning.

        Raises:
            SMTPAuthenticationFailed: the server rejected the token.
            SMTPTooManyConnections: Gmail's per-account connection limit.
            SMTPProtocolError: a continuation after the error challenge (close
                the connection).
            Dead: a temporary refusal (421, 454): close the connection, try
                again on a new one.
        """
        if code in (235, 503):
            _log.debug("SMTP %s login accepted for %s", self.mechanism, self.user)
            return
        if code == 334:
            raise SMTPProtocolError(
                f"{self.where} sent a continuation (334) after the error "
                f"challenge; no mechanism has more than {SASL_ROUNDS} rounds, so "
                "the connection was closed"
            )
        text = quote(message)
        if is_too_many(text) or 400 <= code < 500:
            raise refusal(code, message, "AUTH")
        status = self.challenge.status if self.challenge else None
        scope = self.challenge.scope if self.challenge else None
        server_text = f"{code} {text}"  # "535-5.7.8 ..." / "535 5.7.8 ..." as one line
        raw = (
            message
            if isinstance(message, bytes)
            else message.encode("utf-8", "replace")
        )
        raise SMTPAuthenticationFailed(
            rejection_message(
                protocol="smtp",
                server=f"{self.host}:{self.port}",
                user=self.user,
                mechanism=self.mechanism,
                server_text=server_text,
                status=status,
                scope=scope,
            ),
            smtp_code=code,
            smtp_error=raw,
            mechanism=self.mechanism,
            status=status,
            scope=scope,
            server_text=server_text,
        )
