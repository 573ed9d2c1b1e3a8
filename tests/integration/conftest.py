"""Fixtures that run the integration scenarios against a private Dovecot 2.3.

One Dovecot, one fake Google and one SMTP relay sink serve the whole session;
every test gets fresh users, so tests do not see each other's mail or tokens.
Without root and Dovecot the tests skip, saying how to run them; with
``GMAIL_XOAUTH2_REQUIRE_INTEGRATION=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gmail_xoauth2.testing._pki import make_pki
from gmail_xoauth2.testing.google import FakeGoogle

from ._clients import Endpoint, Opened
from ._dovecot import (
    Dovecot,
    DovecotUnavailable,
    Ports,
    check_prerequisites,
    running_dovecot,
    scratch_root,
)
from ._relay import RelaySink

REQUIRE_ENV = "GMAIL_XOAUTH2_REQUIRE_INTEGRATION"
HOW_TO_RUN = (
    "to run the Dovecot integration tests, install Dovecot and the test user with "
    "`sudo scripts/install-test-deps.sh`, then run pytest as root"
)
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class Transcript:
    """What a client sent inside TLS, recorded by :func:`MailServer.ssl_context`."""

    chunks: list[bytes] = field(default_factory=list)

    def lines(self) -> list[bytes]:
        """Every line sent, without its CRLF."""
        return b"".join(self.chunks).split(b"\r\n")[:-1]


@dataclass
class MailServer:
    """The running private Dovecot and its helpers, as the tests see them.

    Attributes:
        host: where to connect for implicit TLS (127.0.0.1).
        starttls_host: where to connect for STARTTLS (127.0.0.2): from
            127.0.0.1 to 127.0.0.2 Dovecot does not count the connection as
            secured, so TLS is really required before AUTH.
        ports: the listening ports.
        google: the fake Google whose ``/tokeninfo`` Dovecot asks.
        dovecot: the server process (``kick``, ``messages``, ``doveadm``).
        sink: the SMTP relay sink behind submission.
    """

    host: str
    starttls_host: str
    ports: Ports
    ca_file: Path
    google: FakeGoogle
    dovecot: Dovecot
    sink: RelaySink

    def new_user(self) -> str:
        """A new address with a Google account and an empty mailbox."""
        return self.google.add_user(self.dovecot.new_user())

    def ssl_context(self, transcript: Transcript | None = None) -> ssl.SSLContext:
        """A client context trusting the test CA; records what is sent if asked."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if transcript is not None:
            chunks = transcript.chunks

            class RecordingSocket(ssl.SSLSocket):
                def sendall(self, data: bytes, flags: int = 0) -> None:  # type: ignore[override]
                    chunks.append(bytes(data))
                    super().sendall(data, flags)

            context.sslsocket_class = RecordingSocket
        return context

    def endpoint(self, protocol: str, tls: str = "implicit") -> Endpoint:
        """Where ``protocol`` listens with ``tls`` ("implicit" or "starttls")."""
        ports = self.ports
        implicit = {"imap": ports.imaps, "pop": ports.pop3s, "smtp": ports.submissions}
        plain = {"imap": ports.imap, "pop": ports.pop3, "smtp": ports.submission}
        if tls == "implicit":
            return Endpoint(protocol, self.host, implicit[protocol], starttls=False)
        return Endpoint(protocol, self.starttls_host, plain[protocol], starttls=True)

    def kick(self, user: str) -> int:
        """End ``user``'s sessions with ``doveadm kick``; return how many ended."""
        return self.dovecot.kick(user)

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """The raw messages in a mailbox, read from the Maildir files."""
        return self.dovecot.messages(user, mailbox)


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    try:
        check_prerequisites()
    except DovecotUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {exc}; {HOW_TO_RUN}", pytrace=False)
        pytest.skip(f"{exc}; {HOW_TO_RUN}")
    with scratch_root() as root, FakeGoogle() as google:
        (root / "pki").mkdir()
        pki = make_pki(root / "pki", hosts=("127.0.0.2",))
        with (
            RelaySink(str(root / "run" / "lmtp")) as sink,
            running_dovecot(
                root,
                pki=pki,
                tokeninfo_url=google.tokeninfo_uri + "?access_token=",
                relay_port=sink.port,
            ) as dovecot,
        ):
            yield MailServer(
                host="127.0.0.1",
                starttls_host="127.0.0.2",
                ports=dovecot.ports,
                ca_file=pki.ca_file,
                google=google,
                dovecot=dovecot,
                sink=sink,
            )


@pytest.fixture
def opened() -> Iterator[Opened]:
    """Register clients here; they are logged out or closed after the test."""
    registry = Opened()
    yield registry
    registry.close_all()


@pytest.fixture
def user(mail_server: MailServer) -> str:
    """A fresh address with a Google account and an empty mailbox."""
    return mail_server.new_user()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("mail_server")
    if report.failed and isinstance(server, MailServer):
        report.sections.append(("Dovecot log", server.dovecot.log_tail(30)))
