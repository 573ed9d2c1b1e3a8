"""The errors gmail_xoauth2.SMTP raises: ours, and smtplib's too.

Each class is the library's error (``except gmail_xoauth2.Timeout``) and an
:class:`smtplib.SMTPException` (``except smtplib.SMTPException``), so code
written for smtplib keeps catching what this library raises. SMTP raises
these where the failure is found; nothing is converted afterwards.
"""

from __future__ import annotations

import smtplib

from .errors import (
    AuthenticationFailed,
    ConnectionLost,
    DeliveryUnknown,
    InsecureConnection,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TooManyConnections,
)

__all__ = [
    "SMTPAuthenticationFailed",
    "SMTPConnectionLost",
    "SMTPDeliveryUnknown",
    "SMTPInsecureConnection",
    "SMTPLimitExceeded",
    "SMTPProtocolError",
    "SMTPTimeout",
    "SMTPTooManyConnections",
]


class SMTPAuthenticationFailed(AuthenticationFailed, smtplib.SMTPAuthenticationError):
    """The SMTP server rejected the token: an :class:`AuthenticationFailed` and an
    :class:`smtplib.SMTPAuthenticationError`.

    Attributes:
        smtp_code: the reply's code (``535``), as smtplib's.
        smtp_error: the reply's text (bytes, its lines joined by ``\\n``), as
            smtplib's; scrubbed of secrets.
    """

    def __init__(
        self,
        message: str,
        *,
        smtp_code: int,
        smtp_error: bytes,
        mechanism: str,
        status: str | None = None,
        scope: str | None = None,
        server_text: str = "",
    ) -> None:
        super().__init__(
            message,
            protocol="smtp",
            mechanism=mechanism,
            status=status,
            scope=scope,
            server_text=server_text,
        )
        self.smtp_code = smtp_code
        self.smtp_error = smtp_error


class SMTPTooManyConnections(TooManyConnections, smtplib.SMTPException):
    """Gmail refused another SMTP connection for this user."""


class SMTPInsecureConnection(InsecureConnection, smtplib.SMTPException):
    """STARTTLS was missing, refused or broken, or the certificate did not
    verify; no token was sent."""


class SMTPProtocolError(ProtocolError, smtplib.SMTPException):
    """The SMTP server sent something that is not SMTP; the connection was closed."""


class SMTPLimitExceeded(LimitExceeded, SMTPProtocolError):
    """An SMTP reply passed one of the Limits; the connection was closed."""


class SMTPConnectionLost(ConnectionLost, smtplib.SMTPServerDisconnected):
    """The SMTP connection died: a :class:`ConnectionLost` and an
    :class:`smtplib.SMTPServerDisconnected`."""


class SMTPDeliveryUnknown(DeliveryUnknown, SMTPConnectionLost):
    """The connection died after the message's final dot, before the reply:
    the message may or may not have been accepted; it was not sent again."""


class SMTPTimeout(Timeout, smtplib.SMTPServerDisconnected):
    """The SMTP server did not answer in time, and the connection was closed
    (smtplib reports a timed-out read as a disconnect too)."""
