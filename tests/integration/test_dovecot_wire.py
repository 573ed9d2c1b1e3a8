"""Prove the private Dovecot with the raw protocols before trusting it as a judge.

These tests use plain sockets, so they show what Dovecot itself sends: its
capabilities, the SASL error challenges, STARTTLS enforcement, the lines of
``doveadm kick``, and delivery through submission and the relay sink.
docs/testing-dovecot.md compares every one of these with Gmail.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl

import pytest

from gmail_xoauth2.sasl import (
    MAIL_SCOPE,
    decode_error_challenge,
    oauthbearer_string,
    xoauth2_string,
)

from .conftest import MailServer

# Dovecot 2.3's error challenges (mech-oauth2.c): fixed JSON, whatever the cause.
XOAUTH2_CHALLENGE = (
    b"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="
)
OAUTHBEARER_CHALLENGE = b"eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0="
# The client's answer to the challenge: empty (XOAUTH2), ^A (OAUTHBEARER).
ABORT = {"XOAUTH2": b"", "OAUTHBEARER": b"AQ=="}
STARTTLS_HOST = "127.0.0.2"
LOGGED_IN = re.compile(rb"a1 OK \[CAPABILITY IMAP4rev1 [^]]*\] Logged in")
FAILED = {
    "imap": b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
    "pop": b"-ERR [AUTH] Authentication failed.",
    "smtp": b"535 5.7.8 Authentication failed.",
}


class Wire:
    """A line-level client on a real socket, for exact bytes."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self.host = host
        sock = socket.create_connection((host, port), timeout=10)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname=host) if context else sock
        )
        self.file = self.sock.makefile("rb")

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")

    def line(self) -> bytes:
        data = self.file.readline()
        assert data.endswith(b"\r\n") or data == b"", data
        return data.removesuffix(b"\r\n")

    def until(self, last: bytes) -> list[bytes]:
        """Read lines up to and including the first that starts with ``last``."""
        lines = [self.line()]
        while not lines[-1].startswith(last):
            assert lines[-1], "connection closed"
            lines.append(self.line())
        return lines

    def starttls(self, context: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def wires() -> list[Wire]:
    opened: list[Wire] = []
    yield opened
    for wire in opened:
        wire.close()


def connect(
    server: MailServer,
    wires: list[Wire],
    port: int,
    *,
    tls: bool = True,
    host: str | None = None,
) -> Wire:
    wire = Wire(host or server.host, port, server.ssl_context() if tls else None)
    wires.append(wire)
    return wire


def sasl_string(mechanism: str, user: str, token: str, port: int) -> bytes:
    if mechanism == "XOAUTH2":
        return xoauth2_string(user, token).encode()
    return oauthbearer_string(user, token, host="127.0.0.1", port=port).encode()


def imap_login(wire: Wire, mechanism: str, initial: bytes) -> bytes:
    wire.line()  # greeting
    wire.send(b"a1 AUTHENTICATE " + mechanism.encode() + b" " + initial)
    return wire.until(b"a1 ")[-1]


# -- what the server offers ----------------------------------------------------


def capabilities(greeting: bytes) -> set[str]:
    inside = greeting.split(b"[CAPABILITY ", 1)[1].split(b"]", 1)[0]
    return set(inside.decode().split())


def test_imap_offers_only_bearer_mechanisms_and_sasl_ir(
    mail_server: MailServer, wires: list[Wire]
) -> None:
    wire = connect(mail_server, wires, mail_server.ports.imaps)
    caps = capabilities(wire.line())
    assert {"SASL-IR", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "LOGINDISABLED"} <= caps
    assert {c for c in caps if c.startswith("AUTH=")} == {
        "AUTH=XOAUTH2",
        "AUTH=OAUTHBEARER",
    }
    # LOGIN is refused before any password could be checked.
    wire.send(b"a1 LOGIN someone secret")
    assert wire.line() == b"a1 NO [ALERT] Unsupported authentication mechanism."


def test_pop_offers_only_bearer_mechanisms(
    mail_server: MailServer, wires: list[Wire]
) -> None:
    wire = connect(mail_server, wires, mail_server.ports.pop3s)
    assert wire.line().startswith(b"+OK ")
    wire.send(b"CAPA")
    lines = wire.until(b".")
    assert b"SASL XOAUTH2 OAUTHBEARER" in lines
    wire.send(b"AUTH PLAIN AHNvbWVvbmUAc2VjcmV0")
    assert wire.line() == b"-ERR [AUTH] Unsupported authentication mechanism."


def test_submission_offers_only_bearer_mechanisms(
    mail_server: MailServer, wires: list[Wire]
) -> None:
    wire = connect(mail_server, wires, mail_server.ports.submissions)
    assert wire.line().startswith(b"220 ")
    wire.send(b"EHLO client.test")
    assert b"250-AUTH XOAUTH2 OAUTHBEARER" in wire.until(b"250 ")
    wire.send(b"AUTH PLAIN AHNvbWVvbmUAc2VjcmV0")
    assert wire.line() == b"504 5.5.4 Unsupported authentication mechanism."


# -- STARTTLS is enforced (on 127.0.0.2; see the loopback pitfall) -----------


def test_imap_refuses_authenticate_before_starttls(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    initial = xoauth2_string(user, token).encode()
    plain = connect(
        mail_server, wires, mail_server.ports.imap, tls=False, host=STARTTLS_HOST
    )
    caps = capabilities(plain.line())
    assert "STARTTLS" in caps and not any(c.startswith("AUTH=") for c in caps)
    plain.send(b"a1 AUTHENTICATE XOAUTH2 " + initial)
    assert plain.line() == (
        b"a1 NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is enabled."
    )
    # A new connection: after such a refusal, Dovecot 2.3.19 answers the next
    # AUTHENTICATE on the same connection with "BAD Invalid base64 data".
    wire = connect(
        mail_server, wires, mail_server.ports.imap, tls=False, host=STARTTLS_HOST
    )
    wire.line()
    wire.send(b"a2 STARTTLS")
    assert wire.line() == b"a2 OK Begin TLS negotiation now."
    wire.starttls(mail_server.ssl_context())
    wire.send(b"a3 AUTHENTICATE XOAUTH2 " + initial)
    assert LOGGED_IN.fullmatch(wire.until(b"a3 ")[-1].replace(b"a3", b"a1", 1))


def test_pop_refuses_auth_before_stls(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    initial = xoauth2_string(user, token).encode()
    plain = connect(
        mail_server, wires, mail_server.ports.pop3, tls=False, host=STARTTLS_HOST
    )
    plain.line()
    plain.send(b"CAPA")
    lines = plain.until(b".")
    assert b"STLS" in lines and b"SASL" in lines  # SASL with no mechanism yet
    plain.send(b"AUTH XOAUTH2 " + initial)
    assert plain.line() == (
        b"-ERR [AUTH] Authentication not allowed until SSL/TLS is enabled."
    )
    wire = connect(
        mail_server, wires, mail_server.ports.pop3, tls=False, host=STARTTLS_HOST
    )
    wire.line()
    wire.send(b"STLS")
    assert wire.line() == b"+OK Begin TLS negotiation now."
    wire.starttls(mail_server.ssl_context())
    wire.send(b"AUTH XOAUTH2 " + initial)
    assert wire.line() == b"+OK Logged in."


def test_submission_refuses_auth_before_starttls(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    wire = connect(
        mail_server,
        wires,
        mail_server.ports.submission,
        tls=False,
        host=STARTTLS_HOST,
    )
    wire.line()
    wire.send(b"EHLO client.test")
    ehlo = wire.until(b"250 ")
    assert b"250-STARTTLS" in ehlo
    assert not any(line[4:].startswith(b"AUTH") for line in ehlo)
    wire.send(b"AUTH XOAUTH2 " + xoauth2_string(user, token).encode())
    assert wire.line() == b"530 5.7.0 TLS required."
    wire.send(b"STARTTLS")
    assert wire.line() == b"220 2.0.0 Begin TLS negotiation now."
    wire.starttls(mail_server.ssl_context())
    wire.send(b"EHLO client.test")
    assert b"250-AUTH XOAUTH2 OAUTHBEARER" in wire.until(b"250 ")
    wire.send(b"AUTH XOAUTH2 " + xoauth2_string(user, token).encode())
    assert wire.line() == b"235 2.7.0 Logged in."


def test_loopback_pitfall_same_ip_counts_as_secured(
    mail_server: MailServer, wires: list[Wire]
) -> None:
    # Why STARTTLS tests connect to 127.0.0.2: on 127.0.0.1 -> 127.0.0.1 Dovecot
    # offers AUTH without TLS, so a client that forgot STARTTLS would pass.
    wire = connect(mail_server, wires, mail_server.ports.imap, tls=False)
    assert "AUTH=XOAUTH2" in capabilities(wire.line())


# -- the error challenge and the final refusal, per protocol and mechanism ------

KINDS = ["bad", "expired", "wrong-scope", "revoked"]


def token_of_kind(server: MailServer, user: str, kind: str) -> str:
    google = server.google
    if kind == "bad":
        return "ya29.not-a-token-google-ever-issued"
    if kind == "wrong-scope":
        return google.mint_access_token(
            user, scopes=("https://www.googleapis.com/auth/gmail.modify",)
        )
    token = google.mint_access_token(user)
    if kind == "expired":
        google.expire_tokens(user)
    else:
        google.revoke(token)
    return token


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
def test_rejected_token_gets_error_challenge_then_failure(
    mail_server: MailServer,
    wires: list[Wire],
    user: str,
    protocol: str,
    mechanism: str,
    kind: str,
) -> None:
    port = {
        "imap": mail_server.ports.imaps,
        "pop": mail_server.ports.pop3s,
        "smtp": mail_server.ports.submissions,
    }[protocol]
    token = token_of_kind(mail_server, user, kind)
    initial = sasl_string(mechanism, user, token, port)
    wire = connect(mail_server, wires, port)
    wire.line()
    if protocol == "imap":
        wire.send(b"a1 AUTHENTICATE " + mechanism.encode() + b" " + initial)
        prefix = b"+ "
    elif protocol == "pop":
        wire.send(b"AUTH " + mechanism.encode() + b" " + initial)
        prefix = b"+ "
    else:
        wire.send(b"EHLO client.test")
        wire.until(b"250 ")
        wire.send(b"AUTH " + mechanism.encode() + b" " + initial)
        prefix = b"334 "
    challenge = wire.line()
    expected = XOAUTH2_CHALLENGE if mechanism == "XOAUTH2" else OAUTHBEARER_CHALLENGE
    assert challenge == prefix + expected
    decoded = decode_error_challenge(challenge.removeprefix(prefix))
    if mechanism == "XOAUTH2":
        expected_fields = ("401", "bearer", "mail")
        assert (decoded.status, decoded.schemes, decoded.scope) == expected_fields
    else:
        assert (decoded.status, decoded.schemes, decoded.scope) == (
            "invalid_token",
            None,
            None,
        )
    wire.send(ABORT[mechanism])
    assert wire.line() == FAILED[protocol]
    info = mail_server.google.lookup(token)
    if kind == "wrong-scope":
        assert info is not None and MAIL_SCOPE not in info.scopes
    else:
        assert info is None


def test_every_login_asks_tokeninfo(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    # auth_cache_size = 0: a token revoked after one login fails the next.
    token = mail_server.google.mint_access_token(user)
    initial = xoauth2_string(user, token).encode()
    before = mail_server.google.request_count("/tokeninfo")
    first = connect(mail_server, wires, mail_server.ports.imaps)
    assert LOGGED_IN.fullmatch(imap_login(first, "XOAUTH2", initial))
    mail_server.google.revoke(token)
    second = connect(mail_server, wires, mail_server.ports.imaps)
    second.line()
    second.send(b"a1 AUTHENTICATE XOAUTH2 " + initial)
    assert second.line() == b"+ " + XOAUTH2_CHALLENGE
    assert mail_server.google.request_count("/tokeninfo") == before + 2


# -- doveadm kick: what each protocol sees ------------------------------------


def test_kick_ends_imap_session_with_bye(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    wire = connect(mail_server, wires, mail_server.ports.imaps)
    assert LOGGED_IN.fullmatch(
        imap_login(wire, "XOAUTH2", xoauth2_string(user, token).encode())
    )
    assert mail_server.kick(user) == 1
    assert wire.line() == b"* BYE Server shutting down."
    assert wire.line() == b""  # EOF


def test_kick_ends_pop_session_with_sys_temp(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    wire = connect(mail_server, wires, mail_server.ports.pop3s)
    wire.line()
    wire.send(b"AUTH XOAUTH2 " + xoauth2_string(user, token).encode())
    assert wire.line() == b"+OK Logged in."
    assert mail_server.kick(user) == 1
    assert wire.line() == b"-ERR [SYS/TEMP] Server shutting down."
    assert wire.line() == b""


def test_kick_ends_submission_session_with_421(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    token = mail_server.google.mint_access_token(user)
    wire = connect(mail_server, wires, mail_server.ports.submissions)
    wire.line()
    wire.send(b"EHLO client.test")
    wire.until(b"250 ")
    wire.send(b"AUTH XOAUTH2 " + xoauth2_string(user, token).encode())
    assert wire.line() == b"235 2.7.0 Logged in."
    assert mail_server.kick(user) == 1
    assert wire.line() == b"421 4.3.2 mail.test Shutting down"
    assert wire.line() == b""


# -- delivery: submission -> relay sink -> LMTP -> INBOX -----------------------


def test_submission_delivers_into_recipient_inbox(
    mail_server: MailServer, wires: list[Wire], user: str
) -> None:
    recipient = mail_server.new_user()
    token = mail_server.google.mint_access_token(user)
    wire = connect(mail_server, wires, mail_server.ports.submissions)
    wire.line()
    wire.send(b"EHLO client.test")
    wire.until(b"250 ")
    wire.send(b"AUTH XOAUTH2 " + xoauth2_string(user, token).encode())
    assert wire.line() == b"235 2.7.0 Logged in."
    wire.send(f"MAIL FROM:<{user}>".encode())
    assert wire.line().startswith(b"250 ")
    wire.send(f"RCPT TO:<{recipient}>".encode())
    assert wire.line().startswith(b"250 ")
    wire.send(b"DATA")
    assert wire.line().startswith(b"354 ")
    body = b"Subject: wire\r\nMessage-ID: <wire@test>\r\n\r\n..leading dot\r\n"
    wire.send(body + b".")
    assert wire.line() == b"250 2.0.0 Ok: delivered"
    (message,) = mail_server.messages(recipient)
    assert b"Message-ID: <wire@test>\n" in message
    assert message.endswith(b"\n.leading dot\n")
    assert [r.rcpt_to for r in mail_server.sink.relayed if r.mail_from == user] == [
        (recipient,)
    ]


def test_base64_of_challenges_is_what_the_docs_quote() -> None:
    assert base64.b64decode(XOAUTH2_CHALLENGE) == (
        b'{"status":"401","schemes":"bearer","scope":"mail"}'
    )
    assert base64.b64decode(OAUTHBEARER_CHALLENGE) == b'{"status":"invalid_token"}'
