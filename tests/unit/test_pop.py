"""gmail_xoauth2.POP3 against the fake Gmail: login, session ends, safe deletions."""

from __future__ import annotations

import logging
import poplib
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from gmail_xoauth2 import (
    MAIL_SCOPE,
    POP3,
    AuthenticationFailed,
    ConnectionLost,
    InsecureConnection,
    LimitExceeded,
    Limits,
    StaticTokenProvider,
    TooManyConnections,
    oauthbearer_string,
    xoauth2_string,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._limits import DEFAULT_LIMITS
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
# Gmail's error challenge: {"status":"400","schemes":"Bearer","scope":MAIL_SCOPE}.
CHALLENGE = (
    b"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21h"
    b"aWwuZ29vZ2xlLmNvbS8ifQ=="
)
MESSAGES = [
    b"Subject: one\r\n\r\nfirst\r\n",
    b"Subject: two\r\n\r\nsecond\r\n",
    b"Subject: three\r\n\r\nthird\r\n",
]


class MintingProvider:
    """Mints a fresh token from the fake Google; records every call."""

    def __init__(self, gmail: FakeGmail, user: str, first: str | None = None) -> None:
        self.gmail = gmail
        self.user = user
        self.calls: list[bool] = []
        self.issued: list[str] = []
        self._token = first
        self._expiry: datetime | None = gmail.clock() + timedelta(hours=1)

    @property
    def expiry(self) -> datetime | None:
        return self._expiry

    def token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        now = self.gmail.clock()
        stale = self._expiry is None or now >= self._expiry - timedelta(minutes=5)
        if self._token is None or force_refresh or stale:
            self._token = self.gmail.mint_token(self.user)
            self._expiry = now + timedelta(seconds=3599)
        self.issued.append(self._token)
        return self._token


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        for raw in MESSAGES:
            fake.deliver(ALICE, raw)
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


def connect(
    gmail: FakeGmail,
    tokens: object = None,
    *,
    sleeps: list[float] | None = None,
    **kwargs: object,
) -> POP3:
    provider = tokens if tokens is not None else MintingProvider(gmail, ALICE)
    backoff = Backoff(attempts=2, sleep=(sleeps if sleeps is not None else []).append)
    return POP3(
        ALICE,
        provider,  # type: ignore[arg-type]
        gmail.host,
        gmail.pop_port,
        ssl_context=gmail.ssl_context(),
        clock=gmail.clock,
        backoff=backoff,
        **kwargs,  # type: ignore[arg-type]
    )


def client_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("pop", conn_id) if line.direction == "C"
    ]


def wire(gmail: FakeGmail, conn_id: int) -> list[tuple[str, bytes]]:
    return [(line.direction, line.data) for line in gmail.transcript("pop", conn_id)]


# -- login ----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_is_one_line_and_one_round_trip(gmail: FakeGmail, mechanism: str) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider, mechanism=mechanism) as pop:
        assert isinstance(pop, poplib.POP3)
        assert pop.getwelcome().startswith(b"+OK Gpop ready")
        token = provider.issued[0]
        if mechanism == "XOAUTH2":
            initial = xoauth2_string(ALICE, token)
        else:
            initial = oauthbearer_string(
                ALICE, token, host=gmail.host, port=gmail.pop_port
            )
        assert wire(gmail, 1)[1:] == [
            ("C", f"AUTH {mechanism} {initial}".encode()),
            ("S", b"+OK Welcome."),
        ]
        assert pop.stat() == (3, sum(len(m) for m in MESSAGES))
    assert client_lines(gmail)[-1] == b"QUIT"


def test_stdlib_methods_keep_working(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        assert pop.list()[1] == [
            f"{n} {len(m)}".encode() for n, m in enumerate(MESSAGES, 1)
        ]
        assert pop.retr(2)[1] == [b"Subject: two", b"", b"second"]
        assert pop.top(1, 0)[1] == [b"Subject: one", b""]
        assert pop.uidl(1).startswith(b"+OK 1 GmailId")
        assert pop.noop() == b"+OK"
        assert "SASL" in pop.capa()
        with pytest.raises(poplib.error_proto, match="no such message"):
            pop.retr(9)
        with pytest.raises(poplib.error_proto, match="already established"):
            pop.stls()


def test_message_lines_longer_than_poplibs_2048_bytes_are_read(
    gmail: FakeGmail,
) -> None:
    # poplib refuses lines over 2048 bytes ("line too long"); a message may
    # hold far longer ones (a base64 part without line breaks, say).
    long_line = b"x" * 300_000
    gmail.deliver(ALICE, b"Subject: long\r\n\r\n" + long_line + b"\r\n.hidden\r\n")
    with connect(gmail) as pop:
        assert pop.limits is DEFAULT_LIMITS
        _, lines, octets = pop.retr(4)
        assert lines == [b"Subject: long", b"", long_line, b".hidden"]
        assert octets == 15 + 2 + len(long_line) + 2 + 9  # "..hidden" counts 9
        assert pop.top(4, 0)[1] == [b"Subject: long", b""]


def test_limits_bound_what_the_server_may_send(gmail: FakeGmail) -> None:
    gmail.deliver(ALICE, b"Subject: wide\r\n\r\n" + b"y" * 5000 + b"\r\n")
    gmail.deliver(ALICE, b"Subject: tall\r\n\r\n" + (b"z" * 48 + b"\r\n") * 30)
    limits = Limits(line_bytes=4096, literal_bytes=1024)
    with connect(gmail, limits=limits) as pop:
        assert pop.limits is limits
        with pytest.raises(LimitExceeded, match="line_bytes"):
            pop.retr(4)
        assert pop.sock is None  # closed, never resynchronised
        with pytest.raises(LimitExceeded, match="literal_bytes"):
            pop.retr(5)
        assert pop.retr(1)[1][-1] == b"first"  # the next command reconnects
    assert gmail.connection_count("pop") == 3


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_challenge_is_answered_not_taken_for_ok(
    gmail: FakeGmail, mechanism: str, answer: bytes
) -> None:
    provider = StaticTokenProvider("ya29.not-a-real-token")
    with pytest.raises(AuthenticationFailed) as info:
        connect(gmail, provider, mechanism=mechanism)
    error = info.value
    assert (error.protocol, error.mechanism) == ("pop", mechanism)
    assert error.status == "400"
    assert error.scope == MAIL_SCOPE
    assert error.server_text == "-ERR [AUTH] Invalid credentials."
    # The "+ <challenge>" was answered, then the -ERR read; after one forced
    # refresh (a static token cannot change) the second try, on the same
    # connection, was refused too.
    if mechanism == "XOAUTH2":
        initial = xoauth2_string(ALICE, "ya29.not-a-real-token")
    else:
        initial = oauthbearer_string(
            ALICE, "ya29.not-a-real-token", host=gmail.host, port=gmail.pop_port
        )
    attempt = [
        ("C", f"AUTH {mechanism} {initial}".encode()),
        ("S", b"+ " + CHALLENGE),
        ("C", answer),
        ("S", b"-ERR [AUTH] Invalid credentials."),
    ]
    assert wire(gmail, 1)[1:] == attempt * 2
    assert gmail.connection_count("pop") == 1
    assert "ya29" not in str(error)


def test_rejected_token_is_refreshed_once_and_recovers(gmail: FakeGmail) -> None:
    stale = gmail.mint_token(ALICE)
    gmail.google.revoke(stale)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(gmail, provider) as pop:
        assert pop.stat()[0] == 3
    assert provider.calls == [False, True]
    assert provider.issued[1] != stale
    auth_lines = [line for line in client_lines(gmail, 1) if line.startswith(b"AUTH")]
    assert auth_lines == [
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, stale).encode(),
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[1]).encode(),
    ]


def test_garbage_challenge_does_not_crash(gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "AUTH", "reply", line="+ not base64 at all!")
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider) as pop:
        assert pop.stat()[0] == 3
    # The odd challenge was answered with an empty line, then a fresh token
    # was used for the one retry.
    assert client_lines(gmail, 1)[1] == b""
    assert provider.calls == [False, True]


def test_one_line_syntax_refusal_falls_back_to_two_lines(gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "AUTH", "reply", line="-ERR bad command")
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider) as pop:
        initial = xoauth2_string(ALICE, provider.issued[0]).encode()
        assert wire(gmail, 1)[1:6] == [
            ("C", b"AUTH XOAUTH2 " + initial),
            ("S", b"-ERR bad command"),
            ("C", b"AUTH XOAUTH2"),
            ("S", b"+ "),
            ("C", initial),
        ]
        assert pop.stat()[0] == 3
    assert provider.calls == [False]


def test_a_refusal_with_a_response_code_is_not_a_syntax_refusal(
    gmail: FakeGmail,
) -> None:
    # RFC 2449/3206 codes refuse the login, not the one-line syntax: no
    # two-line fallback sending the token again.
    line = "-ERR [SYS/PERM] Your account is not enabled for POP access."
    gmail.fail_next("pop", "AUTH", "reply", line=line, count=2)
    with pytest.raises(AuthenticationFailed) as info:
        connect(gmail)
    assert info.value.server_text == line
    auth = [x for x in client_lines(gmail) if x.startswith(b"AUTH")]
    assert [x.split(b" ")[:2] for x in auth] == [[b"AUTH", b"XOAUTH2"]] * 2
    assert all(len(x.split(b" ")) == 3 for x in auth)


@pytest.mark.parametrize(
    "line",
    [
        "-ERR [SYS/TEMP] Try again later.",
        "-ERR [IN-USE] Mailbox in use.",
        "-ERR [LOGIN-DELAY] Try again later.",
    ],
)
def test_a_temporary_refusal_is_an_unavailable_server_not_a_bad_token(
    gmail: FakeGmail, line: str
) -> None:
    # Neither a refresh nor the two-line form can help: one AUTH, no refresh.
    provider = MintingProvider(gmail, ALICE)
    gmail.fail_next("pop", "AUTH", "reply", line=line)
    with pytest.raises(ConnectionLost, match="refused the login for now"):
        connect(gmail, provider)
    assert provider.calls == [False]
    auth = [x for x in client_lines(gmail) if x.startswith(b"AUTH")]
    assert len(auth) == 1 and len(auth[0].split(b" ")) == 3


def test_too_many_connections_is_not_retried(gmail: FakeGmail) -> None:
    gmail.fail_next(
        "pop",
        "AUTH",
        "reply",
        line="-ERR [SYS/TEMP] Too many simultaneous connections.",
    )
    provider = MintingProvider(gmail, ALICE)
    with pytest.raises(TooManyConnections, match="15"):
        connect(gmail, provider)
    assert provider.calls == [False]
    assert gmail.connection_count("pop") == 1


def _plain_pop_login(
    capa: bytes, refusal: bytes, match: str
) -> tuple[list[bytes], list[bool]]:
    """Log in with starttls=True against a plain one-shot server; it must refuse.

    The server answers CAPA with ``capa`` and anything else with ``refusal``.
    Returns the lines the server received and the tokens the provider handed out.
    """
    received: list[bytes] = []
    tokens: list[bool] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"+OK plain POP ready\r\n")
                stream.flush()
                for line in stream:
                    received.append(line.rstrip(b"\r\n"))
                    upper = line.upper()
                    stream.write(capa if upper.startswith(b"CAPA") else refusal)
                    stream.flush()

        thread = threading.Thread(target=serve)
        thread.start()
        with pytest.raises(InsecureConnection, match=match):
            POP3(
                ALICE,
                lambda: tokens.append(True) or "ya29.secret",
                "127.0.0.1",
                port,
                starttls=True,
            )
        thread.join()
    return received, tokens


def test_starttls_stripping_is_refused_before_any_token() -> None:
    received, tokens = _plain_pop_login(
        b"+OK\r\nUSER\r\nSASL XOAUTH2\r\n.\r\n", b"-ERR no\r\n", "STLS"
    )
    assert received == [b"CAPA"]
    assert tokens == []


def test_a_refused_stls_sends_no_token() -> None:
    received, tokens = _plain_pop_login(
        b"+OK\r\nSTLS\r\nSASL XOAUTH2\r\n.\r\n",
        b"-ERR [SYS/TEMP] TLS not available\r\n",
        "refused STLS",
    )
    assert received == [b"CAPA", b"STLS"]
    assert tokens == []


# -- sessions end -----------------------------------------------------------------


def test_reads_survive_a_session_ended_by_the_server(
    gmail: FakeGmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gmail_xoauth2")
    with connect(gmail) as pop:
        assert pop.stat()[0] == 3
        assert gmail.end_sessions(ALICE, "pop") == 1
        assert pop.retr(1)[1][-1] == b"first"
        assert gmail.connection_count("pop") == 2
    assert "server closed the connection" in caplog.text
    # Routine: a daemon meets this every few minutes, so nothing above DEBUG.
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * len(caplog.records)


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
def test_a_read_is_repeated_once_after_a_drop(gmail: FakeGmail, action: str) -> None:
    with connect(gmail) as pop:
        gmail.fail_next("pop", "RETR", action)  # type: ignore[arg-type]
        assert pop.retr(3)[1] == [b"Subject: three", b"", b"third"]
        assert client_lines(gmail, 2)[1:] == [b"RETR 3"]
    assert gmail.connection_count("pop") == 2


def test_a_read_dropped_twice_raises(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        gmail.fail_next("pop", "STAT", "drop_before", count=2)
        with pytest.raises(ConnectionLost, match="again"):
            pop.stat()
        assert pop.stat()[0] == 3


def test_proactive_reconnect_before_the_token_expires(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect(gmail) as pop:
        pop.stat()
        clock.advance(timedelta(seconds=3599 - 30))  # within the 60 s margin
        assert pop.stat()[0] == 3
        # The old session was ended politely before the new one started.
        assert client_lines(gmail, 1)[-1] == b"QUIT"
        assert client_lines(gmail, 2)[1:] == [b"STAT"]


def test_three_hours_of_one_hour_tokens(gmail: FakeGmail, clock: ManualClock) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(gmail, provider) as pop:
        for _ in range(18):
            assert pop.stat()[0] == 3
            assert pop.retr(2)[1][-1] == b"second"
            clock.advance(timedelta(minutes=10))
    assert gmail.connection_count("pop") >= 3
    assert True not in provider.calls


def test_unavailable_server_backs_off_then_gives_up(
    gmail: FakeGmail, sleeps: list[float]
) -> None:
    with connect(gmail, sleeps=sleeps) as pop:
        gmail.end_sessions(ALICE, "pop")
        gmail.fail_next("pop", "GREETING", "drop_before", count=3)
        with pytest.raises(ConnectionLost, match="after 3 attempts"):
            pop.stat()
        assert len(sleeps) == 2
        # The server is back: the next call reconnects.
        assert pop.stat()[0] == 3


def test_unavailable_server_recovers_within_the_backoff(
    gmail: FakeGmail, sleeps: list[float]
) -> None:
    with connect(gmail, sleeps=sleeps) as pop:
        gmail.end_sessions(ALICE, "pop")
        gmail.fail_next("pop", "GREETING", "drop_before", count=2)
        assert pop.stat()[0] == 3
    assert len(sleeps) == 2


def test_no_reconnect_when_disabled(gmail: FakeGmail) -> None:
    pop = connect(gmail, reconnect=False)
    try:
        gmail.end_sessions(ALICE, "pop")
        with pytest.raises(ConnectionLost, match="reconnect=False"):
            pop.stat()
    finally:
        pop.close()
    assert gmail.connection_count("pop") == 1


def test_a_changed_mailbox_stops_a_numbered_retry(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        pop.uidl()
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        gmail.fail_next("pop", "RETR", "drop_before")
        with pytest.raises(ConnectionLost, match="message 2 may now be another"):
            pop.retr(2)
        assert client_lines(gmail, 2)[1:] == [b"UIDL 2"]


def test_a_changed_mailbox_stops_a_numbered_command_after_the_session_ended(
    gmail: FakeGmail,
) -> None:
    with connect(gmail) as pop:
        pop.uidl()
        gmail.end_sessions(ALICE, "pop")
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        # Message 2 is now "three": RETR 2 must not quietly return it.
        with pytest.raises(ConnectionLost, match="message 2 may now be another"):
            pop.retr(2)
        assert client_lines(gmail, 2)[1:] == [b"UIDL 2"]


def test_a_changed_mailbox_stops_a_numbered_command_after_a_proactive_reconnect(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect(gmail) as pop:
        assert pop.stat()[0] == 3
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        clock.advance(timedelta(seconds=3599 - 30))  # due: the next call reconnects
        with pytest.raises(ConnectionLost, match="message 1 may now be another"):
            pop.dele(1)
        assert client_lines(gmail, 2)[1:] == [b"STAT"]
    assert len(gmail.messages(ALICE)) == 2


def test_an_unchanged_mailbox_lets_a_numbered_command_run_after_a_reconnect(
    gmail: FakeGmail,
) -> None:
    with connect(gmail) as pop:
        pop.list()
        gmail.end_sessions(ALICE, "pop")
        assert pop.retr(2)[1][-1] == b"second"
        assert client_lines(gmail, 2)[1:] == [b"STAT", b"RETR 2"]


def test_a_listing_is_enough_to_stop_a_numbered_retry(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        pop.list()
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        gmail.fail_next("pop", "TOP", "drop_before")
        with pytest.raises(ConnectionLost, match="message 2 may now be another"):
            pop.top(2, 0)


def test_every_numbered_command_on_a_new_session_is_checked(gmail: FakeGmail) -> None:
    # Found by the soak test: only the first command after the reconnect was
    # checked, so RETR 3 then returned (and DELE 3 would delete) "four".
    gmail.deliver(ALICE, b"Subject: four\r\n\r\nfourth\r\n")
    with connect(gmail) as pop:
        pop.uidl()
        second = gmail.backend.store.status(ALICE, "INBOX").messages[1].uid
        gmail.backend.store.remove(ALICE, "INBOX", [second])
        gmail.end_sessions(ALICE, "pop")
        assert pop.retr(1)[1][-1] == b"first"  # still message 1
        with pytest.raises(ConnectionLost, match="message 3 may now be another"):
            pop.retr(3)
        with pytest.raises(ConnectionLost, match="message 3 may now be another"):
            pop.dele(3)
    assert len(gmail.messages(ALICE)) == 3  # nothing deleted


def test_looking_again_on_the_new_session_ends_the_checks(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        pop.uidl()
        first = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first])
        gmail.end_sessions(ALICE, "pop")
        assert len(pop.uidl()[1]) == 2  # the caller sees the new numbering
        before = len(gmail.transcript("pop"))
        assert pop.retr(2)[1][-1] == b"third"
        sent = [t.data for t in gmail.transcript("pop")[before:] if t.direction == "C"]
        assert sent == [b"RETR 2"]  # no check: the numbers are this session's


# -- deletions ----------------------------------------------------------------------


def test_quit_commits_deletions(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    assert pop.dele(1) == b"+OK marked for deletion"
    assert pop.quit() == b"+OK Farewell."
    assert gmail.messages(ALICE) == MESSAGES[1:]


def test_deletions_are_not_reported_when_quit_is_dropped(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    pop.dele(1)
    gmail.fail_next("pop", "QUIT", "drop_before")
    with pytest.raises(ConnectionLost, match="may not have been applied") as info:
        pop.quit()
    assert info.value.outcome_unknown
    assert gmail.messages(ALICE) == MESSAGES


def test_a_refused_quit_is_raised_and_the_connection_closed(gmail: FakeGmail) -> None:
    with pytest.raises(poplib.error_proto, match="not removed"):
        with connect(gmail) as pop:
            pop.dele(1)
            gmail.fail_next(
                "pop", "QUIT", "reply", line="-ERR some deleted messages not removed"
            )
    # RFC 1939 section 6: the session is over after the reply to QUIT.
    assert pop.sock is None
    assert "closed" in repr(pop)
    assert pop.stat()[0] == 3  # a new session
    pop.quit()


def test_pending_deletions_lost_with_the_connection_are_reported(
    gmail: FakeGmail,
) -> None:
    with connect(gmail) as pop:
        pop.dele(1)
        pop.dele(3)
        gmail.fail_next("pop", "STAT", "drop_after")
        with pytest.raises(ConnectionLost, match="NOT applied") as info:
            pop.stat()
        assert not info.value.outcome_unknown
        assert "1, 3" in str(info.value)
        assert gmail.messages(ALICE) == MESSAGES
        # The next call starts a new session; nothing is marked there.
        assert pop.stat()[0] == 3
    assert gmail.messages(ALICE) == MESSAGES


def test_numbering_is_still_checked_after_pending_deletions_were_lost(
    gmail: FakeGmail,
) -> None:
    with connect(gmail) as pop:
        pop.uidl()
        pop.dele(2)
        gmail.fail_next("pop", "NOOP", "drop_before")
        with pytest.raises(ConnectionLost, match="NOT applied"):
            pop.noop()
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        # Marking "2" again on the new session would mark "three" instead.
        with pytest.raises(ConnectionLost, match="message 2 may now be another"):
            pop.dele(2)
    assert len(gmail.messages(ALICE)) == 2


def test_session_ended_with_deletions_pending_is_reported(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    pop.dele(2)
    gmail.end_sessions(ALICE, "pop")
    with pytest.raises(ConnectionLost, match="NOT applied"):
        pop.quit()
    assert gmail.messages(ALICE) == MESSAGES


def test_proactive_reconnect_waits_while_deletions_are_pending(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    pop = connect(gmail)
    pop.dele(1)
    clock.advance(timedelta(seconds=3599 - 30))
    assert pop.stat()[0] == 2  # same session: message 1 is still marked
    assert pop.quit() == b"+OK Farewell."
    assert gmail.connection_count("pop") == 1
    assert gmail.messages(ALICE) == MESSAGES[1:]


def test_rset_survives_a_drop_and_clears_the_marks(gmail: FakeGmail) -> None:
    with connect(gmail) as pop:
        pop.dele(1)
        gmail.fail_next("pop", "RSET", "drop_before")
        assert pop.rset() == b"+OK"
    assert gmail.messages(ALICE) == MESSAGES


def test_with_block_that_raises_applies_no_deletion(gmail: FakeGmail) -> None:
    with pytest.raises(RuntimeError), connect(gmail) as pop:
        pop.dele(1)
        raise RuntimeError("processing failed")
    assert gmail.messages(ALICE) == MESSAGES
    assert b"QUIT" not in client_lines(gmail)


# -- secrets ---------------------------------------------------------------------


def test_no_secret_in_debug_output_or_logs(
    gmail: FakeGmail,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stale = gmail.mint_token(ALICE)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(gmail, provider) as pop:
        pop.set_debuglevel(2)
        gmail.google.revoke(stale)
        gmail.end_sessions(ALICE, "pop")
        pop.stat()  # reconnects: a rejected token, a refresh, a login
        with pytest.raises(poplib.error_proto):
            pop.pass_("hunter2")
    out, err = capfd.readouterr()
    printed = out + err + caplog.text
    assert "*cmd* 'AUTH XOAUTH2 <redacted>'" in printed
    assert "*cmd* 'PASS <redacted>'" in printed
    for token in provider.issued:
        assert token not in printed
        assert xoauth2_string(ALICE, token) not in printed
    assert "hunter2" not in printed
    assert "ya29" not in printed


def test_a_temporary_refusal_at_login_backs_off_instead_of_refreshing(
    gmail: FakeGmail, sleeps: list[float]
) -> None:
    with connect(gmail, sleeps=sleeps) as pop:
        refreshes = gmail.google.request_count("/token")
        gmail.end_sessions(ALICE, "pop")
        gmail.fail_next(
            "pop", "AUTH", "reply", line=b"-ERR [SYS/TEMP] Try again later", count=1
        )
        assert pop.stat()[0] == 3
        assert len(sleeps) == 1  # backed off once, then logged in
        assert gmail.google.request_count("/token") == refreshes  # no refresh
