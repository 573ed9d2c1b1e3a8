"""The library logs in to a real Dovecot: every protocol, mechanism and TLS mode.

What the client sends inside TLS is recorded (``MailServer.ssl_context``), so
the tests assert the exact AUTH line: SASL-IR / initial response in one line,
and never a password command, not even after a rejection.
"""

from __future__ import annotations

import email.message

import pytest

from gmail_xoauth2 import (
    IMAP4,
    POP3,
    SMTP,
    AuthenticationFailed,
    ConnectionLost,
    StaticTokenProvider,
)

from ._clients import (
    MECHANISMS,
    PROTOCOLS,
    TLS_MODES,
    Opened,
    auth_lines,
    open_client,
    password_commands,
)
from .conftest import MailServer, Transcript


def auth_verb(protocol: str) -> bytes:
    return b"AUTHENTICATE" if protocol == "imap" else b"AUTH"


@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_login_sends_one_auth_line_and_session_works(
    mail_server: MailServer,
    opened: Opened,
    user: str,
    protocol: str,
    mechanism: str,
    tls: str,
) -> None:
    endpoint = mail_server.endpoint(protocol, tls)
    token = mail_server.google.mint_access_token(user)
    transcript = Transcript()
    client = opened.add(
        open_client(
            endpoint,
            user,
            StaticTokenProvider(token),
            mechanism=mechanism,
            ssl_context=mail_server.ssl_context(transcript),
        )
    )
    initial = endpoint.initial_response(mechanism, user, token)
    expected = auth_verb(protocol) + b" " + mechanism.encode() + b" " + initial
    # One line carries the initial response (SASL-IR, RFC 4959 / RFC 4954 /
    # RFC 5034): no empty continuation round trip before it.
    assert auth_lines(protocol, transcript.lines()) == [expected]
    if isinstance(client, IMAP4):
        assert client.select("INBOX") == ("OK", [b"0"])
    elif isinstance(client, POP3):
        assert client.stat() == (0, 0)
    else:
        assert isinstance(client, SMTP)
        message = email.message.EmailMessage()
        message["From"], message["To"], message["Subject"] = user, user, "login"
        message.set_content("hello\n")
        assert client.send_message(message) == {}
        assert len(mail_server.messages(user)) == 1


KINDS = ("bad", "expired", "wrong-scope", "revoked")
# Dovecot's answers after the error challenge (see test_dovecot_wire.py).
SERVER_TEXT = {
    "imap": "NO [AUTHENTICATIONFAILED] Authentication failed.",
    "pop": "-ERR [AUTH] Authentication failed.",
    "smtp": "535 5.7.8 Authentication failed.",
}
STATUS = {"XOAUTH2": ("401", "mail"), "OAUTHBEARER": ("invalid_token", None)}


def rejected_token(mail_server: MailServer, user: str, kind: str) -> str:
    google = mail_server.google
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


# Every kind with XOAUTH2; OAUTHBEARER with one kind (Dovecot answers every
# rejection of a mechanism with the same challenge, and each costs ~0.5 s).
FAILURE_CASES = [(p, "XOAUTH2", k) for p in PROTOCOLS for k in KINDS] + [
    (p, "OAUTHBEARER", "expired") for p in PROTOCOLS
]


@pytest.mark.parametrize(("protocol", "mechanism", "kind"), FAILURE_CASES)
def test_rejected_token_raises_authentication_failed_without_fallback(
    mail_server: MailServer,
    user: str,
    protocol: str,
    mechanism: str,
    kind: str,
) -> None:
    endpoint = mail_server.endpoint(protocol)
    token = rejected_token(mail_server, user, kind)
    transcript = Transcript()
    with pytest.raises(AuthenticationFailed) as caught:
        open_client(
            endpoint,
            user,
            StaticTokenProvider(token),
            mechanism=mechanism,
            ssl_context=mail_server.ssl_context(transcript),
        )
    failure = caught.value
    status, scope = STATUS[mechanism]
    assert (failure.protocol, failure.mechanism) == (protocol, mechanism)
    assert (failure.status, failure.scope) == (status, scope)
    assert failure.server_text == SERVER_TEXT[protocol]
    assert token not in str(failure) and token not in repr(failure.args)
    lines = transcript.lines()
    initial = endpoint.initial_response(mechanism, user, token)
    expected = auth_verb(protocol) + b" " + mechanism.encode() + b" " + initial
    # The token cannot refresh: the same AUTH line, tried at most twice, and the
    # error challenge answered as RFC 7628 / Google's XOAUTH2 page ask.
    sent = auth_lines(protocol, lines)
    assert sent and set(sent) == {expected} and len(sent) <= 2
    answer = b"" if mechanism == "XOAUTH2" else b"AQ=="
    assert lines.count(answer) == len(sent)
    assert password_commands(protocol, lines) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_valid_token_without_mailbox_is_connection_lost_not_auth_failure(
    mail_server: MailServer, protocol: str
) -> None:
    # Dovecot closes the connection without a reply on a userdb miss; the
    # token was fine, so this must not read as a rejected token.
    stranger = mail_server.google.add_user("stranger@example.org")
    token = mail_server.google.mint_access_token(stranger)
    with pytest.raises(ConnectionLost) as caught:
        open_client(
            mail_server.endpoint(protocol),
            stranger,
            StaticTokenProvider(token),
            ssl_context=mail_server.ssl_context(),
        )
    assert not isinstance(caught.value, AuthenticationFailed)
    assert token not in str(caught.value)
