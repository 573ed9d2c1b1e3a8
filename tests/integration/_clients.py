"""Open the library's IMAP4, POP3 and SMTP against the private Dovecot."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gmail_xoauth2 import IMAP4, POP3, SMTP
from gmail_xoauth2.sasl import oauthbearer_string, xoauth2_string
from gmail_xoauth2.testing.google import FakeGoogle

PROTOCOLS = ("imap", "pop", "smtp")
MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
TLS_MODES = ("implicit", "starttls")


class MintingProvider:
    """A token provider that mints a new token at the fake Google on refresh."""

    def __init__(self, google: FakeGoogle, user: str) -> None:
        self._google = google
        self._user = user
        self._lock = threading.Lock()
        self.current = google.mint_access_token(user)
        self.refreshes = 0

    def token(self, *, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self.current = self._google.mint_access_token(self._user)
                self.refreshes += 1
            return self.current


@dataclass
class Endpoint:
    """Where a protocol listens for one TLS mode."""

    protocol: str
    host: str
    port: int
    starttls: bool

    def initial_response(self, mechanism: str, user: str, token: str) -> bytes:
        """The base64 initial response the library must send, exactly."""
        if mechanism == "XOAUTH2":
            return xoauth2_string(user, token).encode()
        return oauthbearer_string(user, token, host=self.host, port=self.port).encode()


def auth_lines(protocol: str, lines: list[bytes]) -> list[bytes]:
    """The AUTH/AUTHENTICATE lines of a transcript, without IMAP tags."""
    found = []
    for line in lines:
        words = line.split(b" ", 1)
        if protocol == "imap" and len(words) == 2:
            line = words[1]
        if line.upper().startswith((b"AUTH ", b"AUTHENTICATE ")):
            found.append(line)
    return found


def password_commands(protocol: str, lines: list[bytes]) -> list[bytes]:
    """Commands that would send a password (LOGIN, PLAIN, USER/PASS, APOP)."""
    bad = []
    for line in lines:
        words = line.upper().split()
        if protocol == "imap" and len(words) >= 2:
            words = words[1:]
        if not words:
            continue
        if words[0] in (b"LOGIN", b"USER", b"PASS", b"APOP") or (
            words[0] in (b"AUTH", b"AUTHENTICATE")
            and len(words) > 1
            and words[1] in (b"PLAIN", b"LOGIN", b"CRAM-MD5")
        ):
            bad.append(line)
    return bad


@dataclass
class Opened:
    """Clients opened by a test, closed at teardown whatever happened."""

    clients: list[Any] = field(default_factory=list)

    def add(self, client: Any) -> Any:
        self.clients.append(client)
        return client

    def close_all(self) -> None:
        for client in reversed(self.clients):
            closer: Callable[[], Any] = (
                client.logout if isinstance(client, IMAP4) else client.quit
            )
            try:
                closer()
            except Exception:
                client.close() if not isinstance(client, IMAP4) else client.shutdown()


def open_client(
    endpoint: Endpoint, user: str, tokens: Any, **kwargs: Any
) -> IMAP4 | POP3 | SMTP:
    """The library's client for ``endpoint``, logged in as ``user``."""
    cls = {"imap": IMAP4, "pop": POP3, "smtp": SMTP}[endpoint.protocol]
    client: IMAP4 | POP3 | SMTP = cls(
        user,
        tokens,
        endpoint.host,
        endpoint.port,
        starttls=endpoint.starttls,
        timeout=10.0,
        **kwargs,
    )
    return client
