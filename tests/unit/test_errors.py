"""The error tree: each protocol's errors are the standard library's too, and ours.

Code written for smtplib, poplib or imaplib catches what gmail_xoauth2 raises;
code written for this library still does; every error keeps its fields through
pickle; and a rejected token reads the same on IMAP, POP and SMTP.
"""

from __future__ import annotations

import imaplib
import pickle
import poplib
import re
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import gmail_xoauth2
from gmail_xoauth2 import (
    IMAP4,
    MAIL_SCOPE,
    POP3,
    SMTP,
    AuthenticationFailed,
    ConnectionLost,
    DeliveryUnknown,
    Error,
    IMAPAuthenticationFailed,
    IMAPConnectionLost,
    IMAPInsecureConnection,
    IMAPLimitExceeded,
    IMAPProtocolError,
    IMAPTimeout,
    IMAPTooManyConnections,
    InsecureConnection,
    LimitExceeded,
    POPAuthenticationFailed,
    POPConnectionLost,
    POPInsecureConnection,
    POPLimitExceeded,
    POPProtocolError,
    POPTimeout,
    POPTooManyConnections,
    ProtocolError,
    SMTPAuthenticationFailed,
    SMTPConnectionLost,
    SMTPDeliveryUnknown,
    SMTPInsecureConnection,
    SMTPLimitExceeded,
    SMTPProtocolError,
    SMTPTimeout,
    SMTPTooManyConnections,
    StaticTokenProvider,
    Timeout,
    TokenError,
    TooManyConnections,
    errors,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
BOB = "bob@example.com"
MESSAGE = "the server at 127.0.0.1:465 did something; here is what to do"

# Each protocol class: (ours, the standard library's it must also be).
PROTOCOL_CLASSES: dict[type[Error], tuple[type[Error], type[BaseException]]] = {
    SMTPAuthenticationFailed: (
        AuthenticationFailed,
        smtplib.SMTPAuthenticationError,
    ),
    SMTPTooManyConnections: (TooManyConnections, smtplib.SMTPException),
    SMTPInsecureConnection: (InsecureConnection, smtplib.SMTPException),
    SMTPProtocolError: (ProtocolError, smtplib.SMTPException),
    SMTPLimitExceeded: (LimitExceeded, smtplib.SMTPException),
    SMTPConnectionLost: (ConnectionLost, smtplib.SMTPServerDisconnected),
    SMTPDeliveryUnknown: (DeliveryUnknown, smtplib.SMTPServerDisconnected),
    SMTPTimeout: (Timeout, smtplib.SMTPServerDisconnected),
    POPAuthenticationFailed: (AuthenticationFailed, poplib.error_proto),
    POPTooManyConnections: (TooManyConnections, poplib.error_proto),
    POPInsecureConnection: (InsecureConnection, poplib.error_proto),
    POPProtocolError: (ProtocolError, poplib.error_proto),
    POPLimitExceeded: (LimitExceeded, poplib.error_proto),
    POPConnectionLost: (ConnectionLost, poplib.error_proto),
    POPTimeout: (Timeout, poplib.error_proto),
    IMAPAuthenticationFailed: (AuthenticationFailed, imaplib.IMAP4.error),
    IMAPTooManyConnections: (TooManyConnections, imaplib.IMAP4.error),
    IMAPConnectionLost: (ConnectionLost, imaplib.IMAP4.abort),
    IMAPInsecureConnection: (InsecureConnection, imaplib.IMAP4.error),
    IMAPProtocolError: (ProtocolError, imaplib.IMAP4.abort),
    IMAPLimitExceeded: (LimitExceeded, imaplib.IMAP4.abort),
    IMAPTimeout: (Timeout, imaplib.IMAP4.abort),
}


def make(cls: type[Error]) -> Error:
    """An instance of ``cls`` with every field set to something not the default."""
    if issubclass(cls, SMTPAuthenticationFailed):
        return cls(
            MESSAGE,
            smtp_code=535,
            smtp_error=b"5.7.8 Username and Password not accepted.\n5.7.8 more",
            mechanism="OAUTHBEARER",
            status="400",
            scope=MAIL_SCOPE,
            server_text="535 5.7.8 Username and Password not accepted.",
        )
    if issubclass(cls, AuthenticationFailed):
        return cls(
            MESSAGE,
            protocol="pop",
            mechanism="OAUTHBEARER",
            status="401",
            scope=MAIL_SCOPE,
            server_text="-ERR [AUTH] Invalid credentials.",
        )
    if issubclass(cls, ConnectionLost | Timeout):
        return cls(MESSAGE, outcome_unknown=True)
    return cls(MESSAGE)


def fields(exc: BaseException) -> dict[str, Any]:
    return {k: v for k, v in vars(exc).items() if not k.startswith("__")}


@pytest.mark.parametrize("cls", list(PROTOCOL_CLASSES), ids=lambda c: c.__name__)
def test_a_protocol_error_is_ours_and_the_standard_librarys(cls: type[Error]) -> None:
    ours, stdlib = PROTOCOL_CLASSES[cls]
    exc = make(cls)
    assert isinstance(exc, ours) and isinstance(exc, Error)
    assert isinstance(exc, stdlib)
    # Our class first: its methods (pickling, fields) win over the stdlib's.
    assert cls.__mro__.index(ours) < cls.__mro__.index(stdlib)
    # The message alone, whatever the stdlib class does with its arguments
    # (smtplib's would print "(535, b'...')", OSError's "[Errno ...] ...").
    assert str(exc) == MESSAGE
    assert exc.args == (MESSAGE,)
    if isinstance(exc, OSError):
        assert exc.errno is None and exc.strerror is None
    assert getattr(gmail_xoauth2, cls.__name__) is cls
    assert cls.__name__ in gmail_xoauth2.__all__


@pytest.mark.parametrize("cls", list(PROTOCOL_CLASSES), ids=lambda c: c.__name__)
def test_a_protocol_error_pickles_with_its_fields(cls: type[Error]) -> None:
    exc = make(cls)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is cls
    assert copy.args == exc.args and str(copy) == str(exc)
    assert fields(copy) == fields(exc)
    if issubclass(cls, AuthenticationFailed | ConnectionLost | Timeout):
        assert fields(exc)  # something was compared


def test_the_fields_survive_pickling() -> None:
    auth = pickle.loads(pickle.dumps(make(SMTPAuthenticationFailed)))
    assert isinstance(auth, SMTPAuthenticationFailed)
    assert (auth.protocol, auth.mechanism) == ("smtp", "OAUTHBEARER")
    assert auth.status == "400"
    assert (auth.scope, auth.server_text) == (
        MAIL_SCOPE,
        "535 5.7.8 Username and Password not accepted.",
    )
    assert (auth.smtp_code, auth.smtp_error[:9]) == (535, b"5.7.8 Use")
    lost = pickle.loads(pickle.dumps(make(POPConnectionLost)))
    assert isinstance(lost, POPConnectionLost) and lost.outcome_unknown is True
    retryable = pickle.loads(pickle.dumps(TokenError("down", retryable=True)))
    assert retryable.retryable is True


def test_every_exported_error_is_drawn_in_the_tree() -> None:
    doc = errors.__doc__ or ""
    for name in gmail_xoauth2.__all__:
        value = getattr(gmail_xoauth2, name)
        if isinstance(value, type) and issubclass(value, Error):
            assert re.search(rf"\b{name}\b", doc), f"{name} is not in the tree"


def test_recast_keeps_the_message_the_fields_the_cause_and_the_traceback() -> None:
    def fail() -> None:
        try:
            raise ConnectionResetError(104, "reset")
        except OSError as exc:
            raise Timeout("no answer", outcome_unknown=True) from exc

    with pytest.raises(Timeout) as info:
        fail()
    generic = info.value
    copy = errors.recast(generic, POPTimeout)
    assert type(copy) is POPTimeout
    assert (copy.args, copy.outcome_unknown) == (("no answer",), True)
    assert copy.__cause__ is generic.__cause__
    assert copy.__traceback__ is generic.__traceback__


def test_errors_imports_no_protocol_module() -> None:
    # errors.py is on the `token` command's fast path.
    code = (
        "import sys, gmail_xoauth2, gmail_xoauth2.errors; "
        "print(sorted({'imaplib', 'poplib', 'smtplib', 'ssl'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- on the wire: code written for the standard library catches them -----------


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail() as fake:
        yield fake


Connect = Callable[..., Any]


def connector(gmail: FakeGmail, protocol: str) -> Connect:
    cls, port = {
        "imap": (IMAP4, gmail.imap_port),
        "pop": (POP3, gmail.pop_port),
        "smtp": (SMTP, gmail.smtp_port),
    }[protocol]

    def connect(tokens: object, **kwargs: Any) -> Any:
        return cls(
            ALICE,
            tokens,
            gmail.host,
            port,
            ssl_context=gmail.ssl_context(),
            timeout=10,
            backoff=Backoff(attempts=1, sleep=lambda _: None),
            **kwargs,
        )

    return connect


def test_smtplib_code_catches_a_rejected_token(gmail: FakeGmail) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        connector(gmail, "smtp")(StaticTokenProvider(gmail.mint_token(BOB)))
    error = info.value
    assert isinstance(error, AuthenticationFailed)
    assert error.smtp_code == 535
    assert error.smtp_error.startswith(b"5.7.8 Username and Password not accepted.")
    assert b"\n" in error.smtp_error  # as smtplib gives a multi-line reply
    assert "\n" not in str(error) and "\n" not in error.server_text


def test_smtplib_code_catches_a_lost_connection(gmail: FakeGmail) -> None:
    smtp = connector(gmail, "smtp")(lambda: gmail.mint_token(ALICE), reconnect=False)
    assert gmail.end_sessions(ALICE, "smtp") == 1
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        smtp.sendmail(ALICE, [BOB], b"Subject: hi\r\n\r\nhello\r\n")
    assert isinstance(info.value, gmail_xoauth2.ConnectionLost)
    assert type(info.value) is SMTPConnectionLost
    smtp.close()


def test_smtplib_code_catches_an_unreachable_server(gmail: FakeGmail) -> None:
    with pytest.raises(smtplib.SMTPServerDisconnected) as info:
        SMTP(ALICE, lambda: "t", "127.0.0.1", 9, timeout=5)
    assert type(info.value) is SMTPConnectionLost
    assert isinstance(info.value.__cause__, Exception)


def test_poplib_code_catches_a_rejected_token(gmail: FakeGmail) -> None:
    with pytest.raises(poplib.error_proto) as info:
        connector(gmail, "pop")(StaticTokenProvider(gmail.mint_token(BOB)))
    assert type(info.value) is POPAuthenticationFailed
    assert info.value.server_text == "-ERR [AUTH] Invalid credentials."


def test_poplib_code_catches_a_lost_connection(gmail: FakeGmail) -> None:
    pop = connector(gmail, "pop")(lambda: gmail.mint_token(ALICE), reconnect=False)
    assert gmail.end_sessions(ALICE, "pop") == 1
    with pytest.raises(poplib.error_proto) as info:
        pop.stat()
    assert type(info.value) is POPConnectionLost
    assert "reconnect=False" in str(info.value)
    pop.close()


def test_poplib_code_catches_an_unreachable_server() -> None:
    with pytest.raises(poplib.error_proto) as info:
        POP3(ALICE, lambda: "t", "127.0.0.1", 9, timeout=5)
    assert type(info.value) is POPConnectionLost
    # The cause shown is the socket's, not a generic twin of the same error.
    assert isinstance(info.value.__cause__, Exception)
    assert not isinstance(info.value.__cause__, Error)


def test_imaplib_code_catches_a_rejected_token(gmail: FakeGmail) -> None:
    connect = connector(gmail, "imap")
    with pytest.raises(imaplib.IMAP4.error) as info:
        connect(StaticTokenProvider(gmail.mint_token(BOB)))
    assert type(info.value) is IMAPAuthenticationFailed
    assert not isinstance(info.value, imaplib.IMAP4.abort)  # not a lost connection


def test_imaplib_code_catches_too_many_connections(gmail: FakeGmail) -> None:
    gmail.fail_next(
        "imap",
        "AUTHENTICATE",
        "reply",
        line="NO [ALERT] Too many simultaneous connections. (Failure)",
    )
    with pytest.raises(imaplib.IMAP4.error) as info:
        connector(gmail, "imap")(lambda: gmail.mint_token(ALICE))
    assert type(info.value) is IMAPTooManyConnections


# --- one message for a rejected token -------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "name"), [("imap", "IMAP"), ("pop", "POP3"), ("smtp", "SMTP")]
)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_token_for_another_account_reads_the_same_everywhere(
    gmail: FakeGmail, protocol: str, name: str, mechanism: str
) -> None:
    token = gmail.mint_token(BOB)
    connect = connector(gmail, protocol)
    with pytest.raises(AuthenticationFailed) as info:
        connect(StaticTokenProvider(token), mechanism=mechanism)
    error = info.value
    message = str(error)
    port = {"imap": gmail.imap_port, "pop": gmail.pop_port, "smtp": gmail.smtp_port}
    assert message == (
        f"{name} server {gmail.host}:{port[protocol]} rejected the {mechanism} login "
        f"of {ALICE} (status 400, scope {MAIL_SCOPE}): "
        f'"{error.server_text}"; likely causes, most likely first: '
        "1. the access token is expired or revoked: get a new one "
        "(`gmail-xoauth2 token --force-refresh`; if the refresh is refused too, run "
        "`gmail-xoauth2 authorize` again); "
        f"2. the token lacks the {MAIL_SCOPE} scope: authorize again with it; "
        f"3. the token was authorized for another account than {ALICE}: authorize "
        f"as {ALICE}, or log in as the account that authorized it"
    )
    assert (error.protocol, error.mechanism, error.status) == (
        protocol,
        mechanism,
        "400",
    )
    assert "\n" not in message and "\r" not in message
    assert token not in message


def test_a_refusal_without_a_challenge_says_so(gmail: FakeGmail) -> None:
    line = "-ERR [SYS/PERM] Your account is not enabled for POP access."
    gmail.fail_next("pop", "AUTH", "reply", line=line, count=2)
    with pytest.raises(POPAuthenticationFailed) as info:
        connector(gmail, "pop")(lambda: gmail.mint_token(ALICE))
    message = str(info.value)
    assert info.value.status is None
    assert f'(no error challenge): "{line}"; if the reply does not say why' in message


def test_a_multi_line_smtp_refusal_is_quoted_on_one_line(gmail: FakeGmail) -> None:
    gmail.fail_next(
        "smtp",
        "AUTH",
        "reply",
        line="454-4.7.0 Too many simultaneous connections\r\n454 4.7.0 for alice",
    )
    with pytest.raises(SMTPTooManyConnections) as info:
        connector(gmail, "smtp")(lambda: gmail.mint_token(ALICE))
    message = str(info.value)
    assert "Too many simultaneous connections 4.7.0 for alice" in message
    assert "\n" not in message and "\r" not in message
