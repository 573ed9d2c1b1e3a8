"""The errors gmail_xoauth2.aio.SMTP raises: the sync SMTP's, and aiosmtplib's too.

The sync :class:`~gmail_xoauth2.SMTP` raises classes that are also smtplib's;
its asyncio twin, an ``aiosmtplib.SMTP``, raises their subclasses that are
also aiosmtplib's, so code written for aiosmtplib keeps catching them
(``except aiosmtplib.SMTPServerDisconnected``), and code written for either
class of this library still does (``except gmail_xoauth2.DeliveryUnknown``,
``except smtplib.SMTPException``). Each keeps ``message`` (and ``code`` for a
rejected login) as aiosmtplib's exceptions have them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import ParamSpec, TypeVar

import aiosmtplib

from .._redact import scrub_exception
from .._smtp_errors import (
    SMTPAuthenticationFailed,
    SMTPConnectionLost,
    SMTPDeliveryUnknown,
    SMTPInsecureConnection,
    SMTPLimitExceeded,
    SMTPProtocolError,
    SMTPTimeout,
    SMTPTooManyConnections,
)
from ..errors import Error, recast

__all__ = [
    "AsyncSMTPAuthenticationFailed",
    "AsyncSMTPConnectionLost",
    "AsyncSMTPDeliveryUnknown",
    "AsyncSMTPInsecureConnection",
    "AsyncSMTPLimitExceeded",
    "AsyncSMTPProtocolError",
    "AsyncSMTPTimeout",
    "AsyncSMTPTooManyConnections",
    "aiosmtplib_errors",
]


class AsyncSMTPAuthenticationFailed(
    SMTPAuthenticationFailed, aiosmtplib.SMTPAuthenticationError
):
    """The token was refused; also an ``aiosmtplib.SMTPAuthenticationError``
    (``code``, ``message``)."""


class AsyncSMTPTooManyConnections(SMTPTooManyConnections, aiosmtplib.SMTPException):
    """Gmail refused another SMTP connection for this user."""


class AsyncSMTPInsecureConnection(SMTPInsecureConnection, aiosmtplib.SMTPException):
    """STARTTLS was missing, refused or broken, or the certificate did not verify."""


class AsyncSMTPProtocolError(SMTPProtocolError, aiosmtplib.SMTPException):
    """The server sent something that is not SMTP; the connection was closed."""


class AsyncSMTPLimitExceeded(SMTPLimitExceeded, AsyncSMTPProtocolError):
    """A reply passed one of the Limits; the connection was closed."""


class AsyncSMTPConnectionLost(SMTPConnectionLost, aiosmtplib.SMTPServerDisconnected):
    """The connection died; also an ``aiosmtplib.SMTPServerDisconnected``."""


class AsyncSMTPDeliveryUnknown(SMTPDeliveryUnknown, AsyncSMTPConnectionLost):
    """The connection died after the final dot: the message may or may not be sent."""


class AsyncSMTPTimeout(SMTPTimeout, aiosmtplib.SMTPTimeoutError):
    """The server did not answer in time; also an ``aiosmtplib.SMTPTimeoutError``."""


# Most specific first.
_TWINS: tuple[tuple[type[Error], type[Error]], ...] = (
    (SMTPDeliveryUnknown, AsyncSMTPDeliveryUnknown),
    (SMTPConnectionLost, AsyncSMTPConnectionLost),
    (SMTPTimeout, AsyncSMTPTimeout),
    (SMTPLimitExceeded, AsyncSMTPLimitExceeded),
    (SMTPProtocolError, AsyncSMTPProtocolError),
    (SMTPInsecureConnection, AsyncSMTPInsecureConnection),
    (SMTPTooManyConnections, AsyncSMTPTooManyConnections),
    (SMTPAuthenticationFailed, AsyncSMTPAuthenticationFailed),
)


def as_aiosmtplib(exc: BaseException) -> BaseException:
    """``exc`` as its twin that is also aiosmtplib's (or ``exc`` itself)."""
    if isinstance(exc, aiosmtplib.SMTPException) or not isinstance(exc, Error):
        return exc
    for sync_cls, twin in _TWINS:
        if isinstance(exc, sync_cls):
            copy = recast(exc, twin)
            copy.message = str(exc)  # type: ignore[attr-defined]
            if isinstance(exc, SMTPAuthenticationFailed):
                copy.code = exc.smtp_code  # type: ignore[attr-defined]
            return copy
    return exc


P = ParamSpec("P")
R = TypeVar("R")


def aiosmtplib_errors(
    method: Callable[P, Coroutine[object, object, R]],
) -> Callable[P, Coroutine[object, object, R]]:
    """Decorate a public coroutine: what it raises leaves scrubbed of secrets,
    and as aiosmtplib's too."""

    @wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except Error as exc:
            # Scrubbed before the copy: its message must not keep a secret.
            scrub_exception(exc)
            twin = as_aiosmtplib(exc)
            if twin is exc:
                raise
            raise twin from twin.__cause__

    return wrapper
