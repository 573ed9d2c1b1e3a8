"""gmail_xoauth2.IMAP4 against the fake Gmail: login, rejection, reconnects, secrets."""

from __future__ import annotations

import base64
import imaplib
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest

from gmail_xoauth2 import errors, sasl
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2._tokens import StaticTokenProvider
from gmail_xoauth2.imap import IMAP4, IMAPConnectionLost
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

# The fake Gmail's IMAP server is a separate module; skip until it is there.
pytest.importorskip("gmail_xoauth2.testing.imap_server")

ALICE = "alice@example.com"
CHALLENGE = sasl.encode_error_challenge()


def message(n: int) -> bytes:
    return (
        f"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: note {n}\r\n"
        f"Message-ID: <note-{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


class Recording:
    """A token provider that records every token it hands out."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.tokens: list[str] = []
        self.forced = 0

    @property
    def expiry(self) -> object:
        return getattr(self.inner, "expiry", None)

    def token(self, *, force_refresh: bool = False) -> str:
        self.forced += force_refresh
        value: str = self.inner.token(force_refresh=force_refresh)  # type: ignore[attr-defined]
        self.tokens.append(value)
        return value


class Sequence:
    """Hands out the given tokens in order, one per call."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls: list[bool] = []

    def token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        return self.tokens.pop(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backoff(sleeps: list[float]) -> Backoff:
    return Backoff(attempts=3, sleep=sleeps.append, rand=lambda: 0.5)


@pytest.fixture
def provider(gmail: FakeGmail, clock: ManualClock) -> Recording:
    return Recording(gmail.token_provider(ALICE, clock=clock))


def connect(
    gmail: FakeGmail,
    tokens: object,
    clock: ManualClock,
    backoff: Backoff | None = None,
    **kwargs: object,
) -> IMAP4:
    return IMAP4(
        ALICE,
        tokens,  # type: ignore[arg-type]
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=backoff or Backoff(sleep=lambda _: None),
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def imap(
    gmail: FakeGmail, provider: Recording, clock: ManualClock, backoff: Backoff
) -> Iterator[IMAP4]:
    m = connect(gmail, provider, clock, backoff)
    yield m
    m.logout()


def conn_ids(gmail: FakeGmail) -> list[int]:
    ids: list[int] = []
    for line in gmail.transcript("imap"):
        if line.conn_id not in ids:
            ids.append(line.conn_id)
    return ids


def client_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("imap", conn_id) if line.direction == "C"
    ]


def commands(gmail: FakeGmail, verb: bytes) -> list[bytes]:
    """Client command lines whose verb is ``verb`` (after the tag)."""
    out = []
    for data in client_lines(gmail):
        parts = data.split(b" ", 2)
        if len(parts) > 1 and parts[1].upper() == verb:
            out.append(data)
    return out


# --- login --------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_takes_one_round_trip_with_sasl_ir(
    gmail: FakeGmail, provider: Recording, clock: ManualClock, mechanism: str
) -> None:
    with connect(gmail, provider, clock, mechanism=mechanism) as m:
        assert isinstance(m, imaplib.IMAP4)
        assert m.state == "AUTH"
        [conn] = conn_ids(gmail)
        lines = client_lines(gmail, conn)
        # Gmail's greeting has no capabilities: one CAPABILITY, then one
        # AUTHENTICATE carrying the initial response, then (Gmail offers it)
        # COMPRESS DEFLATE, and nothing else.
        assert len(lines) == 3
        assert lines[2].split(b" ")[1:] == [b"COMPRESS", b"DEFLATE"]
        _, verb = lines[0].split(b" ")
        assert verb == b"CAPABILITY"
        tag1, auth, mech, initial = lines[1].split(b" ")
        assert (auth, mech) == (b"AUTHENTICATE", mechanism.encode())
        parsed = sasl.parse_client_response(mechanism, initial)
        assert (parsed.user, parsed.token) == (ALICE, provider.tokens[-1])
        server = [
            line.data
            for line in gmail.transcript("imap", conn)
            if line.direction == "S"
        ]
        assert server[-2].startswith(tag1 + b" OK")
        assert not any(line.startswith(b"+") for line in server)
    assert commands(gmail, b"LOGOUT")


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_answers_the_challenge_and_raises_with_status(
    gmail: FakeGmail, clock: ManualClock, mechanism: str, answer: bytes
) -> None:
    with pytest.raises(errors.AuthenticationFailed) as info:
        connect(gmail, StaticTokenProvider("ya29.bogus"), clock, mechanism=mechanism)
    exc = info.value
    assert (exc.status, exc.scope) == ("400", sasl.MAIL_SCOPE)
    assert (exc.protocol, exc.mechanism) == ("imap", mechanism)
    assert exc.server_text == "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    assert "ya29.bogus" not in str(exc)
    [conn] = conn_ids(gmail)
    transcript = gmail.transcript("imap", conn)
    challenge = next(
        i for i, line in enumerate(transcript) if line.data.startswith(b"+ ")
    )
    assert transcript[challenge].data == b"+ " + CHALLENGE
    after = [line for line in transcript[challenge + 1 :] if line.direction == "C"]
    # The line after Gmail's error challenge is exactly "\r\n" (or "AQ==\r\n").
    assert after[0].data == answer
    # A static token cannot be refreshed: it is not sent a second time.
    assert len(commands(gmail, b"AUTHENTICATE")) == 1


def test_rejected_token_is_refreshed_once_and_login_succeeds(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    tokens = Sequence("ya29.stale", gmail.mint_token(ALICE))
    with connect(gmail, tokens, clock) as m:
        assert m.state == "AUTH"
    assert tokens.calls == [False, True]
    assert len(commands(gmail, b"AUTHENTICATE")) == 2


def test_second_rejection_is_raised(gmail: FakeGmail, clock: ManualClock) -> None:
    tokens = Sequence("ya29.stale", "ya29.still-bad", "ya29.never-asked")
    with pytest.raises(errors.AuthenticationFailed):
        connect(gmail, tokens, clock)
    assert tokens.calls == [False, True]
    assert len(commands(gmail, b"AUTHENTICATE")) == 2


def test_too_many_connections_is_raised_without_retry(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    gmail.fail_next(
        "imap",
        "AUTHENTICATE",
        "reply",
        line="NO [ALERT] Too many simultaneous connections. (Failure)",
    )
    with pytest.raises(errors.TooManyConnections, match="15"):
        connect(gmail, provider, clock)
    assert len(commands(gmail, b"AUTHENTICATE")) == 1
    assert provider.forced == 0


def test_certificate_is_verified(gmail: FakeGmail, provider: Recording) -> None:
    import ssl

    with pytest.raises(errors.InsecureConnection):
        IMAP4(
            ALICE,
            provider,
            gmail.host,
            gmail.imap_port,
            ssl_context=ssl.create_default_context(),
        )
    assert provider.tokens == []


def test_bad_mechanism_is_a_configuration_error(provider: Recording) -> None:
    with pytest.raises(errors.ConfigurationError):
        IMAP4(ALICE, provider, "127.0.0.1", 1, mechanism="PLAIN")


# --- sessions end: proactive and reactive -------------------------------------


def test_expiring_token_is_replaced_at_the_next_command(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, provider: Recording
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX", readonly=True)
    first = provider.tokens[-1]
    clock.advance(timedelta(minutes=59, seconds=30))  # within a minute of expiry
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert b"note 1" in data[0][1]
    old, new = conn_ids(gmail)
    assert client_lines(gmail, old)[-1].endswith(b"LOGOUT")
    lines = client_lines(gmail, new)
    assert lines[2].split(b" ")[1:] == [b"COMPRESS", b"DEFLATE"]
    assert lines[3].split(b" ")[1:] == [b"EXAMINE", b"INBOX"]
    assert lines[4].split(b" ", 1)[1].startswith(b"FETCH 1 ")
    assert provider.tokens[-1] != first
    assert imap.reconnects == 1


def test_session_ended_by_server_is_replaced_before_the_next_command(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    assert gmail.end_sessions(ALICE, "imap") == 1
    typ, data = imap.search(None, "ALL")
    assert (typ, data) == ("OK", [b"1"])
    old, new = conn_ids(gmail)
    # Found dead before sending: SEARCH went out once, on the new connection.
    assert not [line for line in client_lines(gmail, old) if b"SEARCH" in line]
    assert [line for line in client_lines(gmail, new) if b"SEARCH" in line]
    assert imap.state == "SELECTED"


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
def test_read_is_repeated_once_after_the_connection_dies(
    gmail: FakeGmail, imap: IMAP4, action: str
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.fail_next("imap", "FETCH", action)  # type: ignore[arg-type]
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 1" in data[0][1]
    assert len(commands(gmail, b"FETCH")) == 2
    assert len(conn_ids(gmail)) == 2


def test_sequence_command_is_not_repeated_in_a_changed_mailbox(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))  # the client has not heard of it
    gmail.fail_next("imap", "FETCH", "drop_before")
    with pytest.raises(IMAPConnectionLost, match="EXISTS 1 -> 2") as info:
        imap.fetch("1", "(FLAGS)")
    assert info.value.outcome_unknown is False
    assert len(commands(gmail, b"FETCH")) == 1
    # The object stays usable, on the new session.
    assert imap.search(None, "ALL") == ("OK", [b"1 2"])


def test_an_expunge_and_an_arrival_while_disconnected_are_noticed(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    first = gmail.deliver(ALICE, message(1))
    gmail.deliver(ALICE, message(2))
    imap.select("INBOX")  # EXISTS 2, UIDNEXT 3
    gmail.deliver(ALICE, message(3))
    assert imap.noop()[0] == "OK"  # the client hears EXISTS 3: UIDNEXT is now 4
    # While there is no session, message 1 goes and message 4 comes: EXISTS is
    # 3 again, but sequence number 3 now names another message.
    gmail.end_sessions(ALICE, "imap")
    gmail.backend.store.remove(ALICE, "INBOX", [first])
    gmail.deliver(ALICE, message(4))
    with pytest.raises(IMAPConnectionLost, match="UIDNEXT 4 -> 5"):
        imap.fetch("3", "(FLAGS)")
    assert commands(gmail, b"FETCH") == []


def test_mail_arriving_in_session_does_not_stop_a_repeat(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))
    assert imap.noop()[0] == "OK"  # EXISTS 2: the expected UIDNEXT moves with it
    gmail.fail_next("imap", "FETCH", "drop_before")
    typ, data = imap.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 2" in data[0][1]
    assert len(commands(gmail, b"FETCH")) == 2


def test_uid_command_is_repeated_while_uidvalidity_holds(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    uid = gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))
    gmail.fail_next("imap", "UID FETCH", "drop_before")  # both words: see the fake
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 1" in data[0][1]
    assert len(commands(gmail, b"UID")) == 2
    assert len(conn_ids(gmail)) == 2


def test_reconnect_false_raises_a_stdlib_compatible_abort(
    gmail: FakeGmail, provider: Recording, clock: ManualClock
) -> None:
    with connect(gmail, provider, clock, reconnect=False) as m:
        m.select("INBOX")
        gmail.end_sessions(ALICE)
        with pytest.raises(imaplib.IMAP4.abort) as info:
            m.noop()
        assert isinstance(info.value, errors.ConnectionLost)
    assert len(conn_ids(gmail)) == 1


def test_unavailable_server_is_retried_with_backoff(
    gmail: FakeGmail, imap: IMAP4, sleeps: list[float]
) -> None:
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "GREETING", "drop_before", count=2)
    assert imap.noop()[0] == "OK"
    assert len(sleeps) == 2
    assert sleeps == [0.25, 0.5]  # jittered (rand 0.5) exponential bounds


def test_unavailable_server_gives_up_after_the_attempts(
    gmail: FakeGmail, imap: IMAP4, sleeps: list[float]
) -> None:
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "GREETING", "drop_before", count=10)
    with pytest.raises(errors.ConnectionLost, match="4 attempts"):
        imap.noop()
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("action", "line"), [("drop_before", None), ("reply", "* BYE System Error")]
)
def test_new_session_lost_while_reselecting_is_another_attempt(
    gmail: FakeGmail,
    imap: IMAP4,
    sleeps: list[float],
    action: str,
    line: str | None,
) -> None:
    # Found by the soak test: imaplib's abort escaped from the re-SELECT.
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "SELECT", action, line=line)  # type: ignore[arg-type]
    assert imap.noop()[0] == "OK"
    assert imap.state == "SELECTED"
    assert len(commands(gmail, b"SELECT")) == 3  # the first, then two attempts
    assert len(conn_ids(gmail)) == 3
    assert sleeps == [0.25]
    assert imap.reconnects == 1


def test_new_session_lost_while_reselecting_every_time_is_connection_lost(
    gmail: FakeGmail, imap: IMAP4, sleeps: list[float]
) -> None:
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "SELECT", "drop_before", count=4)
    with pytest.raises(errors.ConnectionLost, match="4 attempts") as info:
        imap.noop()
    assert info.value.outcome_unknown is False
    assert len(sleeps) == 3
    assert imap.state == "SELECTED"  # the next command tries again
    assert imap.noop()[0] == "OK"


# --- APPEND is never duplicated -----------------------------------------------


def test_append_cut_off_after_execution_raises_outcome_unknown(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    imap.select("INBOX")
    gmail.fail_next("imap", "APPEND", "drop_after")
    with pytest.raises(IMAPConnectionLost) as info:
        imap.append("INBOX", None, None, message(1))
    assert info.value.outcome_unknown is True
    assert "not sent again" in str(info.value)
    assert len(gmail.messages(ALICE)) == 1
    assert len(commands(gmail, b"APPEND")) == 1
    # Reconnected already, mailbox restored.
    assert imap.state == "SELECTED"
    assert imap.search(None, "ALL") == ("OK", [b"1"])


def test_append_cut_off_on_receipt_raises_and_is_not_resent(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.fail_next("imap", "APPEND", "drop_before")
    with pytest.raises(IMAPConnectionLost) as info:
        imap.append("INBOX", None, None, message(1))
    assert info.value.outcome_unknown is True
    assert gmail.messages(ALICE) == []
    assert len(commands(gmail, b"APPEND")) == 1


@pytest.mark.parametrize("how", ["end_sessions", "deadline"])
def test_append_on_a_dead_session_reconnects_first_and_sends_once(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, how: str
) -> None:
    imap.select("INBOX")
    if how == "end_sessions":
        gmail.end_sessions(ALICE)
    else:
        clock.advance(timedelta(minutes=59, seconds=30))
    typ, _ = imap.append("INBOX", None, None, message(1))
    assert typ == "OK"
    assert len(gmail.messages(ALICE)) == 1
    assert len(commands(gmail, b"APPEND")) == 1
    assert len(conn_ids(gmail)) == 2


# --- hours of work ---------------------------------------------------------------


def test_three_hours_of_fetch_and_search_see_every_message_once(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, provider: Recording
) -> None:
    imap.select("INBOX")
    seen: list[bytes] = []
    last_uid = 0
    for step in range(18):  # 18 x 10 minutes = 3 hours of 1-hour tokens
        gmail.deliver(ALICE, message(step))
        if step % 4 == 3:
            gmail.end_sessions(ALICE)
        clock.advance(timedelta(minutes=10))
        typ, data = imap.uid("SEARCH", f"UID {last_uid + 1}:*")
        assert typ == "OK"
        uids = [int(u) for u in data[0].split() if int(u) > last_uid]
        for uid in uids:
            typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER])")
            assert typ == "OK"
            seen.append(data[0][1])
            last_uid = uid
        typ, data = imap.search(None, "ALL")
        assert len(data[0].split()) == step + 1
        typ, data = imap.fetch(data[0].split()[-1].decode(), "(FLAGS)")
        assert typ == "OK"
    assert len(seen) == 18 == len(set(seen))
    assert len(gmail.messages(ALICE)) == 18
    # Sessions ended at 40, 80, 120 and 160 minutes; tokens expired at 60,
    # 120 and 180 (the one at 120 coincides).
    assert imap.reconnects >= 6
    assert len(set(provider.tokens)) >= 3


# --- secrets ------------------------------------------------------------------------


def test_no_secret_in_debug_output_logs_or_print_log(
    gmail: FakeGmail,
    provider: Recording,
    clock: ManualClock,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(imaplib, "Debug", 5)
    m = connect(gmail, provider, clock)
    m.select("INBOX")
    gmail.end_sessions(ALICE)
    m.noop()  # reconnects, authenticating again at debug 5
    m.print_log()
    m.logout()
    out, err = capfd.readouterr()
    captured = out + err + caplog.text
    assert "AUTHENTICATE" in captured  # the debug output is really there
    assert len(provider.tokens) >= 2
    for token in provider.tokens:
        for mech in ("XOAUTH2", "OAUTHBEARER"):
            raw = (
                sasl.xoauth2_response(ALICE, token)
                if mech == "XOAUTH2"
                else sasl.oauthbearer_response(ALICE, token)
            )
            for secret in (token, repr(raw), base64.b64encode(raw).decode()):
                assert secret not in captured
    assert token not in repr(m)


def test_large_literals_arrive_byte_exact_and_the_stream_stays_in_step(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    # Bodies larger than the transport's read chunk take the single-allocation
    # path; the line after each literal must still parse.
    big = [
        b"Subject: big %d\r\n\r\n" % n + bytes(range(256)) * (1000 + 700 * n)
        for n in range(3)
    ]
    for raw in big:
        gmail.deliver(ALICE, raw)
    imap.select("INBOX", readonly=True)
    typ, data = imap.fetch("1:3", "(BODY.PEEK[])")
    assert typ == "OK"
    bodies = [item[1] for item in data if isinstance(item, tuple)]
    assert bodies == big
    assert all(type(body) is bytes for body in bodies)
    assert imap.noop()[0] == "OK"


def test_a_bye_greeting_is_an_unavailable_server_retried_with_backoff(
    gmail: FakeGmail, imap: IMAP4, sleeps: list[float]
) -> None:
    # RFC 3501 section 7.1.5: BYE as the greeting refuses the connection.
    # Found by the soak test: it was a ProtocolError ("not an IMAP server").
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "GREETING", "reply", line="* BYE System Error")
    assert imap.noop()[0] == "OK"
    assert imap.state == "SELECTED"
    assert sleeps == [0.25]


def test_a_bye_greeting_on_connect_is_connection_lost(
    gmail: FakeGmail, provider: Recording, clock: ManualClock
) -> None:
    gmail.fail_next("imap", "GREETING", "reply", line="* BYE System Error")
    with pytest.raises(errors.ConnectionLost, match="System Error"):
        connect(gmail, provider, clock)


def test_a_server_that_is_not_imap_is_a_protocol_error(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    # POP3's "+OK Gpop ready" greeting on the port given for IMAP.
    with pytest.raises(errors.ProtocolError, match="did not greet like an IMAP"):
        IMAP4(
            ALICE,
            StaticTokenProvider("ya29.unused"),
            gmail.host,
            gmail.pop_port,
            ssl_context=gmail.ssl_context(),
            clock=clock,
            timeout=10,
        )
