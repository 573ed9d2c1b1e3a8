"""The errors gmail_xoauth2.IMAP4 raises: ours, and imaplib's too.

Each class is the library's error and an :class:`imaplib.IMAP4.error`, so
``except M.error`` around code written for imaplib keeps catching them: a
refused login is an ``IMAP4.error``, as in imaplib; a reply that ended the
connection (malformed, over a bound, too slow) is an ``IMAP4.abort``, as a
lost connection is (:class:`~gmail_xoauth2.imap.IMAPConnectionLost`).
Inside the class the plain errors are raised (an ``abort`` there would be
taken for a connection to replace); :func:`as_imap_error` recasts them once,
on their way out.
"""

from __future__ import annotations

import imaplib
from typing import NoReturn

from .errors import (
    AuthenticationFailed,
    Error,
    InsecureConnection,
    LimitExceeded,
    ProtocolError,
    Timeout,
    TooManyConnections,
    recast,
)

__all__ = [
    "IMAPAuthenticationFailed",
    "IMAPInsecureConnection",
    "IMAPLimitExceeded",
    "IMAPProtocolError",
    "IMAPTimeout",
    "IMAPTooManyConnections",
    "as_imap_error",
    "raise_as_imap",
]


class IMAPAuthenticationFailed(AuthenticationFailed, imaplib.IMAP4.error):
    """The IMAP server rejected the token: an :class:`AuthenticationFailed` and an
    :class:`imaplib.IMAP4.error`."""


class IMAPTooManyConnections(TooManyConnections, imaplib.IMAP4.error):
    """Gmail refused the IMAP login: the user has too many connections open."""


class IMAPInsecureConnection(InsecureConnection, imaplib.IMAP4.error):
    """TLS could not be had (STARTTLS refused, PREAUTH in clear, a bad
    certificate); no token was sent."""


class IMAPProtocolError(ProtocolError, imaplib.IMAP4.abort):
    """The IMAP server sent something that is not IMAP; the connection was closed."""


class IMAPLimitExceeded(LimitExceeded, IMAPProtocolError):
    """The IMAP server sent more than the connection's Limits allow; closed."""


class IMAPTimeout(Timeout, imaplib.IMAP4.abort):
    """The IMAP server did not answer (or finish answering) in time; closed."""


_RECAST: tuple[tuple[type[Error], type[Error]], ...] = (
    (LimitExceeded, IMAPLimitExceeded),
    (ProtocolError, IMAPProtocolError),
    (Timeout, IMAPTimeout),
    (InsecureConnection, IMAPInsecureConnection),
    (AuthenticationFailed, IMAPAuthenticationFailed),
    (TooManyConnections, IMAPTooManyConnections),
)


def as_imap_error(exc: BaseException) -> BaseException:
    """``exc`` as its IMAP class (also an imaplib error), or ``exc`` itself.

    Token and configuration errors, and errors that already are imaplib's,
    are returned as they are.
    """
    if isinstance(exc, imaplib.IMAP4.error) or not isinstance(exc, Error):
        return exc
    for base, cls in _RECAST:
        if isinstance(exc, base):
            return recast(exc, cls)
    return exc


def raise_as_imap(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as its IMAP class (see :func:`as_imap_error`)."""
    imap_exc = as_imap_error(exc)
    if imap_exc is exc:
        raise exc
    raise imap_exc from imap_exc.__cause__
