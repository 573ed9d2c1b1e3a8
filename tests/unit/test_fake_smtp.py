"""The fake Gmail's SMTP, driven by plain smtplib (and curl), line for line."""

from __future__ import annotations

import base64
import shutil
import smtplib
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from gmail_xoauth2.sasl import oauthbearer_response, xoauth2_response, xoauth2_string
from gmail_xoauth2.testing._mailstore import INBOX, SENT, MailEvent
from gmail_xoauth2.testing._server import gmail_id
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
BOB = "bob@example.com"
CHALLENGE = base64.b64encode(
    b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'
)
EHLO_TLS = [
    b"250-smtp.gmail.com at your service, [127.0.0.1]",
    b"250-SIZE 35882577",
    b"250-8BITMIME",
    b"250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
    b"250-ENHANCEDSTATUSCODES",
    b"250-PIPELINING",
    b"250-CHUNKING",
    b"250 SMTPUTF8",
]
MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\n"
    b"Subject: hi\r\n\r\nhello\r\n"
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock, aliases={ALICE: ["alice@work.example"]}) as fake:
        yield fake


def auth_object(raw: bytes) -> Callable[..., str]:
    """smtplib's authobject: the raw response first (or for the empty ``334 ``),
    then the empty line SASL asks for after an error challenge."""

    def answer(challenge: bytes | None = None) -> str:
        return raw.decode() if not challenge else ""

    return answer


def connect(gmail: FakeGmail) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL(gmail.host, gmail.smtp_port, context=gmail.ssl_context())


def login(gmail: FakeGmail, user: str = ALICE) -> smtplib.SMTP_SSL:
    smtp = connect(gmail)
    smtp.ehlo()
    code, _ = smtp.auth(
        "XOAUTH2", auth_object(xoauth2_response(user, gmail.mint_token(user)))
    )
    assert code == 235
    return smtp


def server_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("smtp", conn_id) if line.direction == "S"
    ]


def client_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("smtp", conn_id) if line.direction == "C"
    ]


def test_greeting_ehlo_and_xoauth2_with_initial_response(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo("client.example")
        token = gmail.mint_token(ALICE)
        assert smtp.auth("XOAUTH2", auth_object(xoauth2_response(ALICE, token))) == (
            235,
            b"2.7.0 Accepted",
        )
    tail = b" " + gmail_id(1).encode() + b" - gsmtp"
    assert server_lines(gmail) == [
        b"220 smtp.gmail.com ESMTP" + tail,
        *EHLO_TLS,
        b"235 2.7.0 Accepted",
        b"221 2.0.0 closing connection" + tail,
    ]
    sent = client_lines(gmail)[1]
    assert sent == b"AUTH XOAUTH2 " + xoauth2_string(ALICE, token).encode()


def test_xoauth2_without_initial_response(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo()
        raw = xoauth2_response(ALICE, gmail.mint_token(ALICE))
        code, _ = smtp.auth("XOAUTH2", auth_object(raw), initial_response_ok=False)
    assert code == 235
    assert client_lines(gmail)[1:3] == [b"AUTH XOAUTH2", base64.b64encode(raw)]
    assert server_lines(gmail)[9:11] == [b"334 ", b"235 2.7.0 Accepted"]


def test_oauthbearer(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo()
        raw = oauthbearer_response(
            ALICE, gmail.mint_token(ALICE), host="127.0.0.1", port=gmail.smtp_port
        )
        assert smtp.auth("OAUTHBEARER", auth_object(raw))[0] == 235


def _unknown(gmail: FakeGmail, clock: ManualClock) -> str:
    return "ya29.never-issued"


def _expired(gmail: FakeGmail, clock: ManualClock) -> str:
    token = gmail.mint_token(ALICE, ttl=60)
    clock.advance(60)
    return token


def _revoked(gmail: FakeGmail, clock: ManualClock) -> str:
    token = gmail.mint_token(ALICE)
    gmail.revoke(ALICE)
    return token


def _wrong_scope(gmail: FakeGmail, clock: ManualClock) -> str:
    return gmail.google.mint_access_token(
        ALICE, scopes=["https://www.googleapis.com/auth/gmail.send"]
    )


def _other_user(gmail: FakeGmail, clock: ManualClock) -> str:
    return gmail.mint_token(BOB)


@pytest.mark.parametrize(
    "make_token", [_unknown, _expired, _revoked, _wrong_scope, _other_user]
)
def test_bad_tokens_get_gmails_challenge_then_535(
    gmail: FakeGmail,
    clock: ManualClock,
    make_token: Callable[[FakeGmail, ManualClock], str],
) -> None:
    token = make_token(gmail, clock)
    with connect(gmail) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            smtp.auth("XOAUTH2", auth_object(xoauth2_response(ALICE, token)))
    assert caught.value.smtp_code == 535
    tail = b" " + gmail_id(1).encode() + b" - gsmtp"
    assert server_lines(gmail)[9:12] == [
        b"334 " + CHALLENGE,
        b"535-5.7.8 Username and Password not accepted. Learn more at",
        b"535 5.7.8  https://support.google.com/mail/?p=BadCredentials" + tail,
    ]
    assert client_lines(gmail)[2] == b""
    assert gmail.messages(BOB) == []


def test_a_client_that_resends_the_token_still_fails(gmail: FakeGmail) -> None:
    raw = xoauth2_response(ALICE, "ya29.bad").decode()
    with connect(gmail) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            smtp.auth("XOAUTH2", lambda challenge=None: raw)
    assert caught.value.smtp_code == 535


def test_undecodable_and_aborted_responses(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", "XOAUTH2 not!base64") == (
            501,
            b"5.5.2 Cannot Decode response " + gmail_id(1).encode() + b" - gsmtp",
        )
        assert smtp.docmd("AUTH", "XOAUTH2")[0] == 334
        assert smtp.docmd("*")[0] == 501
        # A password mechanism is refused as a wrong password.
        assert smtp.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")[0] == 535


def test_send_delivers_files_sent_copy_and_keeps_own_from(gmail: FakeGmail) -> None:
    with login(gmail) as smtp:
        refused = smtp.sendmail(ALICE, [BOB, "carol@elsewhere.example"], MESSAGE)
    assert refused == {}
    assert gmail.messages(BOB) == [MESSAGE]
    assert gmail.messages(ALICE, SENT) == [MESSAGE]
    assert gmail.messages(ALICE, INBOX) == []
    stamp = str(int(gmail.clock().timestamp())).encode()
    tail = b" " + gmail_id(1).encode() + b" - gsmtp"
    assert server_lines(gmail)[10:16] == [
        b"250 2.1.0 OK" + tail,
        b"250 2.1.5 OK" + tail,
        b"250 2.1.5 OK" + tail,
        b"354 Go ahead" + tail,
        b"250 2.0.0 OK  " + stamp + tail,
        b"221 2.0.0 closing connection" + tail,
    ]


def test_sending_to_oneself_lands_in_inbox_too(gmail: FakeGmail) -> None:
    with login(gmail) as smtp:
        smtp.sendmail(ALICE, [ALICE], MESSAGE)
    assert gmail.messages(ALICE, INBOX) == [MESSAGE]
    assert gmail.messages(ALICE, SENT) == [MESSAGE]


def test_dot_stuffing_is_undone(gmail: FakeGmail) -> None:
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    with login(gmail) as smtp:
        smtp.sendmail(ALICE, [BOB], body)
    assert gmail.messages(BOB) == [body]
    assert b"..leading dot" in client_lines(gmail)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: Mallory <mallory@evil.example>", b"From: Mallory <alice@example.com>"),
        (b"From: mallory@evil.example", b"From: alice@example.com"),
        (b"From: Work <alice@work.example>", b"From: Work <alice@work.example>"),
        (b"From: ALICE@example.com", b"From: ALICE@example.com"),
    ],
)
def test_from_is_rewritten_unless_user_or_alias(
    gmail: FakeGmail, header: bytes, expected: bytes
) -> None:
    with login(gmail) as smtp:
        smtp.sendmail(ALICE, [BOB], header + b"\r\nSubject: x\r\n\r\nbody\r\n")
    assert gmail.messages(BOB) == [expected + b"\r\nSubject: x\r\n\r\nbody\r\n"]


def test_mail_before_auth_is_refused(gmail: FakeGmail) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            smtp.sendmail(ALICE, [BOB], MESSAGE)
    assert caught.value.smtp_code == 530
    assert server_lines(gmail)[9:11] == [
        b"530-5.7.0 Authentication Required. Learn more at",
        b"530 5.7.0  https://support.google.com/mail/?p=WantAuthError "
        + gmail_id(1).encode()
        + b" - gsmtp",
    ]
    assert gmail.messages(BOB) == []


def test_587_offers_auth_only_after_starttls(gmail: FakeGmail) -> None:
    token = gmail.mint_token(ALICE)
    with smtplib.SMTP(gmail.host, gmail.submission_port) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        assert "starttls" in smtp.esmtp_features
        assert smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_string(ALICE, token))[0] == 530
        smtp.starttls(context=gmail.ssl_context())
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        assert smtp.auth("XOAUTH2", auth_object(xoauth2_response(ALICE, token)))[0] == (
            235
        )
        smtp.sendmail(ALICE, [BOB], MESSAGE)
    assert gmail.messages(BOB) == [MESSAGE]
    tail = b" " + gmail_id(1).encode() + b" - gsmtp"
    lines = server_lines(gmail)
    assert lines[1:9] == [
        b"250-smtp.gmail.com at your service, [127.0.0.1]",
        b"250-SIZE 35882577",
        b"250-8BITMIME",
        b"250-STARTTLS",
        b"250-ENHANCEDSTATUSCODES",
        b"250-PIPELINING",
        b"250-CHUNKING",
        b"250 SMTPUTF8",
    ]
    assert lines[9:13] == [
        b"530-5.7.0 Must issue a STARTTLS command first. For more information, go to",
        b"530-5.7.0  https://support.google.com/a/answer/3221692 and review RFC 3207",
        b"530 5.7.0 specifications." + tail,
        b"220 2.0.0 Ready to start TLS",
    ]
    assert lines[13:21] == EHLO_TLS


def test_idle_session_times_out_on_the_clock(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with login(gmail) as smtp:
        clock.advance(timedelta(minutes=4))
        assert smtp.noop()[0] == 250
        clock.advance(timedelta(minutes=5))
        assert server_lines(gmail)[-1] == (
            b"451 4.4.2 Timeout - closing connection. "
            + gmail_id(1).encode()
            + b" - gsmtp"
        )
        # The unsolicited 451 waits in the client's buffer: it reads it as
        # the reply to its next command, then finds the connection closed.
        assert smtp.noop()[0] == 451
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_session_ends_when_its_token_expires(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect(gmail) as smtp:
        smtp.ehlo()
        raw = xoauth2_response(ALICE, gmail.mint_token(ALICE, ttl=120))
        assert smtp.auth("XOAUTH2", auth_object(raw))[0] == 235
        clock.advance(119)
        assert smtp.noop()[0] == 250
        clock.advance(1)
        assert server_lines(gmail)[-1].startswith(b"451 4.4.2 Timeout")
        # The unsolicited 451 waits in the client's buffer: it reads it as
        # the reply to its next command, then finds the connection closed.
        assert smtp.noop()[0] == 451
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_end_sessions_closes_authenticated_sessions_only(gmail: FakeGmail) -> None:
    with login(gmail) as smtp, connect(gmail) as anonymous:
        assert gmail.end_sessions(ALICE, "smtp") == 1
        # The unsolicited 451 waits in the client's buffer: it reads it as
        # the reply to its next command, then finds the connection closed.
        assert smtp.noop()[0] == 451
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
        assert anonymous.noop()[0] == 250


def test_fault_drop_before_data_delivers_nothing(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "DATA", "drop_before")
    with login(gmail) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.sendmail(ALICE, [BOB], MESSAGE)
    assert gmail.messages(BOB) == []
    assert client_lines(gmail)[-1] == b"data"


def test_fault_drop_after_data_delivers_without_reply(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "DATA", "drop_after")
    with login(gmail) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.sendmail(ALICE, [BOB], MESSAGE)
    assert gmail.messages(BOB) == [MESSAGE]
    # The 354 went out (it is part of the command); the final 250 did not.
    assert server_lines(gmail)[-1].startswith(b"354 Go ahead")


def test_fault_reply_421_closes(gmail: FakeGmail) -> None:
    gmail.fail_next(
        "smtp", "MAIL", "reply", line="421 4.7.0 Try again later, closing connection."
    )
    with login(gmail) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            smtp.sendmail(ALICE, [BOB], MESSAGE)
        assert caught.value.smtp_code == 421
    # The fault was used up: the next session sends.
    with login(gmail) as smtp:
        smtp.sendmail(ALICE, [BOB], MESSAGE)
    assert gmail.messages(BOB) == [MESSAGE]


def test_fault_on_greeting(gmail: FakeGmail) -> None:
    gmail.fail_next("smtp", "GREETING", "reply", line="421 4.7.0 Try again later")
    with pytest.raises(smtplib.SMTPConnectError):
        connect(gmail)


def test_hold_next_delays_the_reply_not_the_delivery(gmail: FakeGmail) -> None:
    delivered = threading.Event()

    def on_change(event: MailEvent) -> None:
        if event.user == BOB and event.mailbox == INBOX:
            delivered.set()

    gmail.backend.store.add_listener(on_change)
    release = gmail.hold_next("smtp", "DATA")
    results: list[object] = []
    with login(gmail) as smtp:
        sender = threading.Thread(
            target=lambda: results.append(smtp.sendmail(ALICE, [BOB], MESSAGE))
        )
        sender.start()
        assert delivered.wait(10)
        assert sender.is_alive()
        assert results == []
        release.set()
        sender.join(10)
    assert results == [{}]


def test_connection_count_and_transcript_filters(gmail: FakeGmail) -> None:
    with login(gmail):
        pass
    with login(gmail, BOB):
        pass
    assert gmail.connection_count("smtp") == 2
    assert gmail.connection_count() == 2
    assert gmail.transcript("smtp", 2)[0].data.endswith(
        gmail_id(2).encode() + b" - gsmtp"
    )
    assert {line.conn_id for line in gmail.transcript("smtp")} == {1, 2}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sends_with_oauth2_bearer(gmail: FakeGmail, tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--url",
            f"smtps://127.0.0.1:{gmail.smtp_port}",
            "--cacert",
            gmail.ca_file,
            "--mail-from",
            ALICE,
            "--mail-rcpt",
            BOB,
            "--user",
            ALICE,
            "--oauth2-bearer",
            gmail.mint_token(ALICE),
            "--upload-file",
            str(message),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert gmail.messages(BOB) == [MESSAGE]
    auth = [line for line in client_lines(gmail) if line.startswith(b"AUTH ")]
    assert auth[0].split()[1] in (b"OAUTHBEARER", b"XOAUTH2")
