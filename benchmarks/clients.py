"""Each client's way to log in, written the way its documentation shows it."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imap_tools import MailBox
from imapclient import IMAPClient

from gmail_xoauth2 import IMAP4, SMTP, StaticTokenProvider, xoauth2_response

__all__ = [
    "IMAP_LOGINS",
    "Endpoint",
    "imaplib_authobject",
    "smtplib_authobject",
]


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a client connects."""

    host: str
    port: int
    context: ssl.SSLContext
    user: str
    token: str


def imaplib_authobject(user: str, token: str) -> Callable[[bytes], bytes]:
    """The authobject most code passes to ``imaplib.IMAP4.authenticate``."""
    raw = xoauth2_response(user, token)
    return lambda _challenge: raw


def smtplib_authobject(user: str, token: str) -> Callable[..., str]:
    """smtplib calls it with no argument for the initial response (RFC 4954).

    smtplib base64-encodes what it returns; a later call is Gmail's error
    challenge, answered with an empty response.
    """
    raw = xoauth2_response(user, token).decode("ascii")

    def authobject(challenge: bytes | None = None) -> str:
        return raw if challenge is None else ""

    return authobject


def login_ours(e: Endpoint) -> IMAP4:
    return IMAP4(
        e.user,
        StaticTokenProvider(e.token),
        e.host,
        e.port,
        ssl_context=e.context,
    )


def login_imaplib(e: Endpoint) -> imaplib.IMAP4_SSL:
    conn = imaplib.IMAP4_SSL(e.host, e.port, ssl_context=e.context)
    conn.authenticate("XOAUTH2", imaplib_authobject(e.user, e.token))
    return conn


def login_imapclient(e: Endpoint) -> IMAPClient:
    client = IMAPClient(e.host, e.port, ssl_context=e.context)
    client.oauth2_login(e.user, e.token)
    return client


def login_imap_tools(e: Endpoint) -> MailBox:
    box = MailBox(e.host, e.port, ssl_context=e.context)
    return box.xoauth2(e.user, e.token, initial_folder=None)


IMAP_LOGINS: dict[str, Callable[[Endpoint], Any]] = {
    "gmail_xoauth2": login_ours,
    "imaplib": login_imaplib,
    "IMAPClient": login_imapclient,
    "imap_tools": login_imap_tools,
}


def logout(conn: Any) -> None:
    """Log out whichever client this is."""
    conn.logout()


def smtp_ours(e: Endpoint) -> SMTP:
    return SMTP(
        e.user, StaticTokenProvider(e.token), e.host, e.port, ssl_context=e.context
    )


def smtp_smtplib(e: Endpoint) -> smtplib.SMTP_SSL:
    conn = smtplib.SMTP_SSL(e.host, e.port, context=e.context)
    conn.ehlo()
    conn.auth("XOAUTH2", smtplib_authobject(e.user, e.token))
    return conn
