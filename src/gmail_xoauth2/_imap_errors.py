"""The login errors gmail_xoauth2.IMAP4 raises: ours, and imaplib's too.

Each class is the library's error and an :class:`imaplib.IMAP4.error`, what
imaplib raises for a refused login, so ``except M.error`` around code written
for imaplib keeps catching them. A lost connection is
:class:`~gmail_xoauth2.imap.IMAPConnectionLost`, an ``IMAP4.abort``.
"""

from __future__ import annotations

import imaplib

from .errors import AuthenticationFailed, TooManyConnections

__all__ = ["IMAPAuthenticationFailed", "IMAPTooManyConnections"]


class IMAPAuthenticationFailed(AuthenticationFailed, imaplib.IMAP4.error):
    """The IMAP server rejected the token: an :class:`AuthenticationFailed` and an
    :class:`imaplib.IMAP4.error`."""


class IMAPTooManyConnections(TooManyConnections, imaplib.IMAP4.error):
    """Gmail refused the IMAP login: the user has too many connections open."""
