"""gmail_xoauth2.SMTP against the fake Gmail: login, STARTTLS, no duplicate sends."""

from __future__ import annotations

import io
import logging
import smtplib
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage

import pytest

from gmail_xoauth2 import (
    MAIL_SCOPE,
    SMTP,
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    DeliveryUnknown,
    InsecureConnection,
    LimitExceeded,
    Limits,
    StaticTokenProvider,
    oauthbearer_string,
    xoauth2_string,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._limits import ReplyMeter
from gmail_xoauth2._smtp_reply import read_reply
from gmail_xoauth2.testing._mailstore import MailEvent
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
BOB = "bob@example.com"
EHLO = b"ehlo client.test"
MESSAGE = (
    b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
)
# Gmail's error challenge: {"status":"400","schemes":"Bearer","scope":MAIL_SCOPE}.
CHALLENGE = (
    b"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21h"
    b"aWwuZ29vZ2xlLmNvbS8ifQ=="
)


class MintingProvider:
    """Mints a fresh token from the fake Google; records every call."""

    def __init__(
        self, gmail: FakeGmail, user: str, first: str | None = None, ttl: int = 3599
    ) -> None:
        self.gmail = gmail
        self.ttl = ttl
        self.user = user
        self.calls: list[bool] = []
        self.issued: list[str] = []
        self._token = first
        self._expiry: datetime | None = gmail.clock() + timedelta(seconds=ttl)

    @property
    def expiry(self) -> datetime | None:
        return self._expiry

    def token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        now = self.gmail.clock()
        stale = self._expiry is None or now >= self._expiry - timedelta(minutes=5)
        if self._token is None or force_refresh or stale:
            self._token = self.gmail.mint_token(self.user, ttl=self.ttl)
            self._expiry = now + timedelta(seconds=self.ttl)
        self.issued.append(self._token)
        return self._token


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def connect(
    gmail: FakeGmail,
    tokens: object = None,
    *,
    submission: bool = False,
    sleeps: list[float] | None = None,
    **kwargs: object,
) -> SMTP:
    provider = tokens if tokens is not None else MintingProvider(gmail, ALICE)
    backoff = Backoff(attempts=2, sleep=(sleeps if sleeps is not None else []).append)
    port = gmail.submission_port if submission else gmail.smtp_port
    return SMTP(
        ALICE,
        provider,  # type: ignore[arg-type]
        gmail.host,
        port,
        starttls=True if submission else None,
        ssl_context=gmail.ssl_context(),
        clock=gmail.clock,
        backoff=backoff,
        local_hostname="client.test",
        **kwargs,  # type: ignore[arg-type]
    )


def client_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("smtp", conn_id) if line.direction == "C"
    ]


def commands(gmail: FakeGmail, verb: bytes) -> list[bytes]:
    return [line for line in client_lines(gmail) if line.upper().startswith(verb)]


def send(smtp: SMTP) -> dict[str, tuple[int, bytes]]:
    return smtp.sendmail(ALICE, [BOB], MESSAGE)


# -- login ----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_on_465_is_one_line_and_one_round_trip(
    gmail: FakeGmail, mechanism: str
) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider, mechanism=mechanism) as smtp:
        assert isinstance(smtp, smtplib.SMTP)
        token = provider.issued[0]
        if mechanism == "XOAUTH2":
            initial = xoauth2_string(ALICE, token)
        else:
            initial = oauthbearer_string(
                ALICE, token, host=gmail.host, port=gmail.smtp_port
            )
        wire = [(line.direction, line.data) for line in gmail.transcript("smtp", 1)]
        auth = wire.index(("C", f"AUTH {mechanism} {initial}".encode()))
        assert wire[auth + 1] == ("S", b"235 2.7.0 Accepted")
        assert client_lines(gmail, 1) == [EHLO, f"AUTH {mechanism} {initial}".encode()]
        assert send(smtp) == {}
    assert client_lines(gmail, 1)[-1] == b"quit"
    assert len(gmail.messages(BOB)) == 1


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_on_587_does_starttls_then_ehlo_again(
    gmail: FakeGmail, mechanism: str
) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider, submission=True, mechanism=mechanism) as smtp:
        lines = client_lines(gmail, 1)
        assert lines[:3] == [EHLO, b"STARTTLS", EHLO]
        assert lines[3].startswith(f"AUTH {mechanism} ".encode())
        assert len(lines) == 4
        assert smtp.has_extn("auth")
        assert send(smtp) == {}
    assert len(gmail.messages(BOB)) == 1


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_challenge_is_answered_then_refreshed_once(
    gmail: FakeGmail, mechanism: str, answer: bytes
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        connect(gmail, StaticTokenProvider("ya29.bogus"), mechanism=mechanism)
    error = info.value
    assert (error.protocol, error.mechanism, error.status) == ("smtp", mechanism, "400")
    assert error.scope == MAIL_SCOPE
    assert error.server_text.startswith("535 5.7.8 Username and Password not accepted")
    assert "ya29" not in str(error)
    wire = [(line.direction, line.data) for line in gmail.transcript("smtp", 1)]
    challenges = [
        i for i, line in enumerate(wire) if line == ("S", b"334 " + CHALLENGE)
    ]
    assert len(challenges) == 2  # the first try and the one retry
    for index in challenges:
        assert wire[index + 1] == ("C", answer)
        assert wire[index + 2][1].startswith(b"535-5.7.8")


def test_rejected_token_is_refreshed_once_and_recovers(gmail: FakeGmail) -> None:
    stale = gmail.mint_token(ALICE)
    gmail.google.revoke(stale)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(gmail, provider) as smtp:
        assert send(smtp) == {}
    assert provider.calls == [False, True]
    assert commands(gmail, b"AUTH") == [
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, stale).encode(),
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[1]).encode(),
    ]


def test_garbage_challenge_does_not_crash(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "AUTH", "reply", line="334 }}not base64{{")
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider) as smtp:
        assert send(smtp) == {}
    assert provider.calls == [False, True]


def test_starttls_stripping_is_refused_before_any_token() -> None:
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"220 mitm.example ESMTP\r\n")
                stream.flush()
                for line in stream:
                    received.append(line.rstrip(b"\r\n"))
                    if line.upper().startswith(b"EHLO"):
                        # STARTTLS stripped; AUTH offered in clear.
                        stream.write(b"250-mitm.example\r\n250 AUTH XOAUTH2\r\n")
                    else:
                        stream.write(b"502 no\r\n")
                    stream.flush()

        thread = threading.Thread(target=serve)
        thread.start()
        tokens: list[bool] = []
        with pytest.raises(InsecureConnection, match="STARTTLS"):
            SMTP(
                ALICE,
                lambda: tokens.append(True) or "ya29.secret",
                "127.0.0.1",
                port,
                starttls=True,
                local_hostname="client.test",
            )
        thread.join()
    assert received == [EHLO]
    assert tokens == []


def test_a_refused_starttls_sends_no_token(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "STARTTLS", "reply", line="454 4.7.0 TLS not available")
    provider = MintingProvider(gmail, ALICE)
    with pytest.raises(InsecureConnection, match="refused STARTTLS") as info:
        connect(gmail, provider, submission=True)
    assert "454 4.7.0 TLS not available" in str(info.value)
    assert client_lines(gmail, 1) == [EHLO, b"STARTTLS"]
    assert provider.calls == []


# -- sends are never duplicated -------------------------------------------------------


def test_drop_after_the_final_dot_is_delivery_unknown(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        gmail.fail_next("smtp", "DATA", "drop_after")
        with pytest.raises(DeliveryUnknown) as info:
            send(smtp)
        assert info.value.outcome_unknown
        assert len(commands(gmail, b"MAIL")) == 1
        # The connection is replaced for the next send.
        assert send(smtp) == {}
    assert len(gmail.messages(BOB)) == 2
    assert len(commands(gmail, b"MAIL")) == 2


def test_a_session_end_after_the_final_dot_is_not_retried(gmail: FakeGmail) -> None:
    def end_session_on_delivery(event: MailEvent) -> None:
        # Gmail ends the session after storing the message, before its 250.
        # Bob's copy is stored last (after Alice's Sent Mail): end it then, so
        # the message is in his inbox by the time the client reads the 451.
        if event.user == BOB:
            gmail.end_sessions(ALICE, "smtp")

    with connect(gmail) as smtp:
        gmail.backend.store.add_listener(end_session_on_delivery)
        with pytest.raises(smtplib.SMTPDataError) as info:
            send(smtp)
        gmail.backend.store.remove_listener(end_session_on_delivery)
        assert info.value.smtp_code == 451
    assert len(commands(gmail, b"MAIL")) == 1
    assert len(gmail.messages(BOB)) == 1


@pytest.mark.parametrize(
    ("verb", "action"),
    [
        ("MAIL", "drop_before"),
        ("MAIL", "drop_after"),
        ("RCPT", "drop_before"),
        ("RCPT", "drop_after"),
        ("DATA", "drop_before"),
    ],
)
def test_a_drop_before_the_final_dot_is_retried_once(
    gmail: FakeGmail, verb: str, action: str
) -> None:
    with connect(gmail) as smtp:
        gmail.fail_next("smtp", verb, action)  # type: ignore[arg-type]
        assert send(smtp) == {}
    assert gmail.connection_count("smtp") == 2
    assert len(gmail.messages(BOB)) == 1


def test_dropped_twice_before_the_dot_is_not_sent(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        gmail.fail_next("smtp", "RCPT", "drop_before", count=2)
        with pytest.raises(ConnectionLost, match="not sent") as info:
            send(smtp)
        assert not info.value.outcome_unknown
    assert gmail.messages(BOB) == []


def test_a_421_reply_is_retried_on_a_new_connection(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        gmail.fail_next(
            "smtp",
            "MAIL",
            "reply",
            line="421 4.7.0 Try again later, closing connection.",
        )
        assert send(smtp) == {}
    assert len(gmail.messages(BOB)) == 1


def test_an_ordinary_refusal_is_the_stdlib_error(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        gmail.fail_next("smtp", "RCPT", "reply", line="550 5.1.1 No such user")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(smtp)
        assert send(smtp) == {}
    assert gmail.connection_count("smtp") == 1


# -- sessions end -----------------------------------------------------------------


def test_a_send_after_gmail_ends_the_session(
    gmail: FakeGmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gmail_xoauth2")
    with connect(gmail, submission=True) as smtp:
        assert gmail.end_sessions(ALICE, "smtp") == 1
        assert send(smtp) == {}
        assert client_lines(gmail, 2)[:3] == [EHLO, b"STARTTLS", EHLO]
    assert "451 4.4.2 Timeout - closing connection." in caplog.text
    # Routine: a daemon meets this every few minutes, so nothing above DEBUG.
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * len(caplog.records)
    assert len(gmail.messages(BOB)) == 1


def test_a_send_after_the_idle_timeout(gmail: FakeGmail, clock: ManualClock) -> None:
    with connect(gmail) as smtp:
        clock.advance(timedelta(minutes=6))  # Gmail drops idle sessions
        assert send(smtp) == {}
    assert gmail.connection_count("smtp") == 2
    assert len(gmail.messages(BOB)) == 1


def test_proactive_reconnect_before_the_token_expires(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    # Tokens of 4 minutes, so the deadline comes before Gmail's idle close.
    provider = MintingProvider(gmail, ALICE, ttl=240)
    with connect(gmail, provider) as smtp:
        clock.advance(timedelta(seconds=200))  # 40 s before expiry: due
        assert send(smtp) == {}
        assert client_lines(gmail, 1)[-1] == b"quit"
        # smtplib writes "mail FROM:" up to 3.12 and "mail from:" from 3.13.
        assert [line.lower() for line in commands(gmail, b"MAIL")] == [
            b"mail from:<alice@example.com> size=%d" % len(MESSAGE)
        ]
        assert client_lines(gmail, 2)[:2] == [
            EHLO,
            b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[-1]).encode(),
        ]
    assert gmail.connection_count("smtp") == 2
    assert len(set(provider.issued)) == 2


def test_no_reconnect_when_disabled(gmail: FakeGmail) -> None:
    with connect(gmail, reconnect=False) as smtp:
        gmail.end_sessions(ALICE, "smtp")
        with pytest.raises(ConnectionLost, match="reconnect=False"):
            send(smtp)
    assert gmail.connection_count("smtp") == 1
    assert gmail.messages(BOB) == []


def test_unavailable_server_backs_off_then_gives_up(gmail: FakeGmail) -> None:
    sleeps: list[float] = []
    with connect(gmail, sleeps=sleeps) as smtp:
        gmail.end_sessions(ALICE, "smtp")
        gmail.fail_next("smtp", "GREETING", "drop_before", count=3)
        with pytest.raises(ConnectionLost, match="after 3 attempts"):
            send(smtp)
        assert len(sleeps) == 2
        assert send(smtp) == {}
    assert len(gmail.messages(BOB)) == 1


def test_send_message_and_quit(gmail: FakeGmail) -> None:
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = BOB
    message["Subject"] = "object"
    message.set_content("hello")
    smtp = connect(gmail)
    gmail.end_sessions(ALICE, "smtp")
    assert smtp.send_message(message) == {}
    assert smtp.quit()[0] == 221
    assert smtp.sock is None
    assert len(gmail.messages(BOB)) == 1


def test_quit_after_the_server_closed_is_quiet(gmail: FakeGmail) -> None:
    smtp = connect(gmail)
    gmail.end_sessions(ALICE, "smtp")
    assert smtp.quit() == (221, b"connection already closed")
    with connect(gmail) as smtp:
        gmail.end_sessions(ALICE, "smtp")
    assert smtp.sock is None


@pytest.mark.parametrize("verb", ["noop", "rset"])
def test_noop_and_rset_after_gmail_ends_the_session(
    gmail: FakeGmail, verb: str
) -> None:
    with connect(gmail) as smtp:
        gmail.end_sessions(ALICE, "smtp")
        # Not Gmail's 451 read as the reply, nor "Server not connected".
        assert getattr(smtp, verb)()[0] == 250
        assert client_lines(gmail, 2)[-1] == verb.encode()
        gmail.fail_next("smtp", verb.upper(), "drop_before")
        assert getattr(smtp, verb)()[0] == 250
        assert send(smtp) == {}
    assert gmail.connection_count("smtp") == 3


def test_noop_on_a_dead_connection_without_reconnect(gmail: FakeGmail) -> None:
    with connect(gmail, reconnect=False) as smtp:
        gmail.end_sessions(ALICE, "smtp")
        with pytest.raises(ConnectionLost, match="reconnect=False"):
            smtp.noop()
    assert gmail.connection_count("smtp") == 1


def test_a_refused_send_still_resets_on_the_same_connection(gmail: FakeGmail) -> None:
    with connect(gmail, reconnect=False) as smtp:
        gmail.fail_next("smtp", "MAIL", "reply", line="550 5.7.1 Not allowed")
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            send(smtp)
        assert info.value.smtp_code == 550
        assert client_lines(gmail, 1)[-1] == b"rset"
        assert send(smtp) == {}
    assert gmail.connection_count("smtp") == 1


# -- secrets ---------------------------------------------------------------------


def test_no_secret_in_debug_output_or_logs(
    gmail: FakeGmail,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stale = gmail.mint_token(ALICE)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(gmail, provider, submission=True) as smtp:
        smtp.set_debuglevel(2)
        gmail.google.revoke(stale)
        gmail.end_sessions(ALICE, "smtp")
        send(smtp)  # reconnects: a rejected token, a refresh, a login, a send
    out, err = capfd.readouterr()
    printed = out + err + caplog.text
    assert "send: 'AUTH XOAUTH2 <redacted>\\r\\n'" in printed
    assert "334 " in printed  # the challenge is shown; it holds no secret
    assert len(set(provider.issued)) == 2
    for token in provider.issued:
        assert token not in printed
        assert xoauth2_string(ALICE, token) not in printed
    assert "ya29" not in printed


# -- replies within limits ----------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"250 ok\r\n",
        b"250-hostile.test\r\n250-8BITMIME\r\n250-SIZE 35882577\r\n250 AUTH X\r\n",
        b"250\r\n",
        b"250-\r\n250 \r\n",
        b"220  spaced out \t\r\n",
        b"250 bare LF\n",
        b"535-5.7.8 first\r\n535 5.7.8 second \xff\r\n",
        b"250-" + b"x" * 20_000 + b"\r\n250 long\r\n",
    ],
    ids=lambda wire: repr(wire[:24]),
)
def test_a_reply_reads_as_smtplib_reads_it(wire: bytes) -> None:
    ours = io.BufferedReader(io.BytesIO(wire + b"250 next\r\n"))
    code, text, size = read_reply(ours, ReplyMeter(Limits()))
    stdlib = smtplib.SMTP()
    stdlib.file = io.BytesIO(wire)
    if len(wire) <= 8192:  # smtplib's own line limit
        assert (code, text) == stdlib.getreply()
    assert size == len(wire)
    assert ours.read() == b"250 next\r\n"  # the next reply is left alone


def test_all_the_lines_of_a_reply_count_against_line_bytes() -> None:
    meter = ReplyMeter(Limits(line_bytes=1000), where="the server")
    wire = b"250-" + b"x" * 90 + b"\r\n"
    with pytest.raises(LimitExceeded, match=r"1000 bytes \(Limits\.line_bytes\)"):
        read_reply(io.BufferedReader(io.BytesIO(wire * 11)), meter)
    meter = ReplyMeter(Limits(response_lines=10), where="the server")
    with pytest.raises(LimitExceeded, match=r"10 lines \(Limits\.response_lines\)"):
        read_reply(io.BufferedReader(io.BytesIO(b"250-\r\n" * 11)), meter)


def test_limits_must_be_limits() -> None:
    with pytest.raises(ConfigurationError, match=r"gmail_xoauth2\.Limits"):
        SMTP(ALICE, lambda: "ya29.x", limits={"line_bytes": 1})  # type: ignore[arg-type]


def test_getreply_on_a_closed_connection(gmail: FakeGmail) -> None:
    smtp = connect(gmail, limits=Limits(response_seconds=None))
    smtp.close()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.getreply()
