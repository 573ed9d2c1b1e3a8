"""gmail_xoauth2.aio.IMAP4 against the fake Gmail, and the sync IMAP4 beside it.

Behaviour both classes promise is written once and run against both styles:
the ``style`` fixture gives the sync :class:`gmail_xoauth2.IMAP4` or the asyncio
one behind :class:`Blocking`, which runs each coroutine to completion on one
event loop (so the test reads like the sync tests it mirrors). What only the
asyncio class has (async iterators, ``asyncio.Event`` stops, a handshake
semaphore, cancellation) is driven with ``asyncio.run`` directly.

The fake Gmail's ``ManualClock`` moves time; the fake's transcript is what the
client sent, asserted byte for byte where the protocol matters.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import inspect
import logging
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any

import pytest
from _hostile import assert_no_secret, attack, secrets_for

from gmail_xoauth2 import (
    Backoff,
    NewMessage,
    UIDValidityChanged,
    aio,
    errors,
    sasl,
)
from gmail_xoauth2._tokens import StaticTokenProvider
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
CHALLENGE = sasl.encode_error_challenge()
STYLES = ["sync", "async"]


def message(n: int) -> bytes:
    return (
        f"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: note {n}\r\n"
        f"Message-ID: <note-{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Recording:
    """A token provider that records every token it hands out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokens: list[str] = []
        self.forced = 0

    @property
    def expiry(self) -> object:
        return getattr(self.inner, "expiry", None)

    def token(self, *, force_refresh: bool = False) -> str:
        self.forced += force_refresh
        value: str = self.inner.token(force_refresh=force_refresh)
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


class Blocking:
    """An aio.IMAP4 driven from sync code: each coroutine runs on one loop.

    The loop does not run between two calls, as an application's loop would;
    what the server sends meanwhile waits in the socket, as it does for the
    sync class between two commands.
    """

    def __init__(self, imap: aio.IMAP4) -> None:
        self.imap = imap
        self.runner = asyncio.Runner()
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.imap, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self.runner.run(attr(*args, **kwargs))

    def logout(self) -> Any:
        try:
            return self.runner.run(self.imap.logout())
        finally:
            self.runner.close()
            self.closed = True

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logout()


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


def new_aio(
    gmail: FakeGmail,
    tokens: object,
    clock: ManualClock,
    backoff: Backoff | None = None,
    **kwargs: Any,
) -> aio.IMAP4:
    """An aio.IMAP4 for the fake (not connected: creating one does no I/O)."""
    kwargs.setdefault("ssl_context", gmail.ssl_context())
    kwargs.setdefault("timeout", 10)
    return aio.IMAP4(
        ALICE,
        tokens,  # type: ignore[arg-type]
        gmail.host,
        gmail.imap_port,
        clock=clock,
        backoff=backoff or Backoff(sleep=lambda _: None),
        **kwargs,
    )


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(
    style: str, gmail: FakeGmail, clock: ManualClock
) -> Iterator[Callable[..., Any]]:
    """Connect in the test's style: ``connect(tokens, backoff=None, **kwargs)``."""
    opened: list[Any] = []

    def open_(tokens: object, backoff: Backoff | None = None, **kwargs: Any) -> Any:
        if style == "sync":
            kwargs.setdefault("ssl_context", gmail.ssl_context())
            kwargs.setdefault("timeout", 10)
            client: Any = IMAP4(
                ALICE,
                tokens,  # type: ignore[arg-type]
                gmail.host,
                gmail.imap_port,
                clock=clock,
                backoff=backoff or Backoff(sleep=lambda _: None),
                **kwargs,
            )
        else:
            client = Blocking(new_aio(gmail, tokens, clock, backoff, **kwargs))
            opened.append(client)  # its loop is closed at teardown if need be
            client.connect()
        return client

    yield open_
    for client in opened:
        if not client.closed:
            client.logout()


@pytest.fixture
def imap(
    connect: Callable[..., Any], provider: Recording, backoff: Backoff
) -> Iterator[Any]:
    m = connect(provider, backoff)
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


def server_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("imap", conn_id) if line.direction == "S"
    ]


def verbs(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    """The verb of every command line (b"UID FETCH" for UID commands; b"DONE")."""
    out = []
    for data in client_lines(gmail, conn_id):
        parts = data.split(b" ")
        if len(parts) < 2:
            out.append(parts[0].upper())
        elif parts[1].upper() == b"UID" and len(parts) > 2:
            out.append(b"UID " + parts[2].upper())
        else:
            out.append(parts[1].upper())
    return out


def no_compress(lines: list[bytes]) -> list[bytes]:
    """Lines without COMPRESS (the sync class deflates; the asyncio one does not)."""
    return [line for line in lines if line.split(b" ")[1:2] != [b"COMPRESS"]]


# --- login: the same exchange from both classes ---------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_is_one_authenticate_line_with_sasl_ir(
    gmail: FakeGmail,
    connect: Callable[..., Any],
    provider: Recording,
    mechanism: str,
) -> None:
    with connect(provider, mechanism=mechanism) as m:
        assert m.state == "AUTH"
        [conn] = conn_ids(gmail)
        lines = no_compress(client_lines(gmail, conn))
        # Gmail's greeting has no capabilities: one CAPABILITY, then one
        # AUTHENTICATE carrying the initial response (RFC 4959), nothing else.
        assert len(lines) == 2
        assert lines[0].split(b" ")[1:] == [b"CAPABILITY"]
        token = provider.tokens[-1]
        initial = (
            sasl.xoauth2_string(ALICE, token)
            if mechanism == "XOAUTH2"
            else sasl.oauthbearer_string(
                ALICE, token, host=gmail.host, port=gmail.imap_port
            )
        )
        tag = lines[1].split(b" ")[0]
        assert lines[1] == tag + b" AUTHENTICATE " + mechanism.encode() + b" " + (
            initial.encode()
        )
        server = server_lines(gmail, conn)
        assert not any(line.startswith(b"+") for line in server)
        assert any(line.startswith(tag + b" OK") for line in server)
    assert verbs(gmail)[-1] == b"LOGOUT"
    assert provider.forced == 0


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_answers_the_error_challenge_then_raises_with_status(
    gmail: FakeGmail, connect: Callable[..., Any], mechanism: str, answer: bytes
) -> None:
    with pytest.raises(errors.AuthenticationFailed) as info:
        connect(StaticTokenProvider("ya29.bogus"), mechanism=mechanism)
    exc = info.value
    assert isinstance(exc, imaplib.IMAP4.error)
    assert (exc.status, exc.scope) == ("400", sasl.MAIL_SCOPE)
    assert (exc.protocol, exc.mechanism) == ("imap", mechanism)
    assert exc.server_text == "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
    assert "ya29.bogus" not in str(exc) and "ya29.bogus" not in repr(exc)
    [conn] = conn_ids(gmail)
    transcript = gmail.transcript("imap", conn)
    at = next(i for i, line in enumerate(transcript) if line.data.startswith(b"+ "))
    assert transcript[at].data == b"+ " + CHALLENGE
    after = [line.data for line in transcript[at + 1 :] if line.direction == "C"]
    # The answer to Gmail's error challenge is exactly "\r\n" (or "AQ==\r\n").
    assert after[0] == answer
    # A static token cannot be refreshed: it is not sent a second time.
    assert verbs(gmail).count(b"AUTHENTICATE") == 1


def test_rejected_token_is_refreshed_once_and_login_succeeds(
    gmail: FakeGmail, connect: Callable[..., Any]
) -> None:
    tokens = Sequence("ya29.stale", gmail.mint_token(ALICE))
    with connect(tokens) as m:
        assert m.state == "AUTH"
    assert tokens.calls == [False, True]
    assert verbs(gmail).count(b"AUTHENTICATE") == 2


def test_second_rejection_is_raised_after_one_refresh(
    gmail: FakeGmail, connect: Callable[..., Any]
) -> None:
    tokens = Sequence("ya29.stale", "ya29.still-bad", "ya29.never-asked")
    with pytest.raises(errors.AuthenticationFailed) as info:
        connect(tokens)
    assert info.value.status == "400"
    assert tokens.calls == [False, True]
    assert verbs(gmail).count(b"AUTHENTICATE") == 2


def test_too_many_connections_is_raised_without_retry(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    gmail.fail_next(
        "imap",
        "AUTHENTICATE",
        "reply",
        line="NO [ALERT] Too many simultaneous connections. (Failure)",
    )
    with pytest.raises(errors.TooManyConnections, match="15"):
        connect(provider)
    assert verbs(gmail).count(b"AUTHENTICATE") == 1
    assert provider.forced == 0


def test_certificate_is_verified_before_any_token_is_asked_for(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    # The system CAs do not trust the fake's CA.
    with pytest.raises(errors.InsecureConnection) as info:
        connect(provider, ssl_context=ssl.create_default_context())
    assert isinstance(info.value, imaplib.IMAP4.error)
    assert provider.tokens == []
    assert client_lines(gmail) == []


def test_a_server_that_is_not_imap_is_a_protocol_error(
    style: str, gmail: FakeGmail, clock: ManualClock
) -> None:
    # POP3's "+OK Gpop ready" greeting on the port given for IMAP.
    kwargs: dict[str, Any] = dict(ssl_context=gmail.ssl_context(), clock=clock)
    tokens = StaticTokenProvider("ya29.unused")
    with pytest.raises(errors.ProtocolError, match="did not greet like an IMAP"):
        if style == "sync":
            IMAP4(ALICE, tokens, gmail.host, gmail.pop_port, timeout=10, **kwargs)
        else:
            m = aio.IMAP4(ALICE, tokens, gmail.host, gmail.pop_port, **kwargs)
            run(m.connect())


def test_a_bye_greeting_on_connect_is_connection_lost(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    gmail.fail_next("imap", "GREETING", "reply", line="* BYE System Error")
    with pytest.raises(errors.ConnectionLost, match="System Error"):
        connect(provider)


def test_creating_one_does_no_io_and_checks_its_arguments(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    m = new_aio(gmail, provider, clock)
    assert m.state == "LOGOUT" and gmail.connection_count("imap") == 0
    assert provider.tokens == []
    with pytest.raises(errors.ConfigurationError):
        aio.IMAP4(ALICE, provider, "127.0.0.1", 1, mechanism="PLAIN")  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigurationError):
        aio.IMAP4("", provider, "127.0.0.1", 1)  # type: ignore[arg-type]


# --- sessions end: proactive and reactive ---------------------------------------------


def test_expiring_token_is_replaced_politely_at_the_next_command(
    gmail: FakeGmail,
    imap: Any,
    clock: ManualClock,
    provider: Recording,
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX", readonly=True)
    first = provider.tokens[-1]
    clock.advance(timedelta(minutes=59, seconds=30))  # within a minute of expiry
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 1" in data[0][1]
    old, new = conn_ids(gmail)
    assert verbs(gmail, old)[-1] == b"LOGOUT"  # polite: not cut off by Gmail
    assert no_compress(client_lines(gmail, new))[2].split(b" ")[1:] == [
        b"EXAMINE",
        b"INBOX",
    ]
    assert verbs(gmail, new)[-1] == b"FETCH"
    assert provider.tokens[-1] != first
    assert imap.reconnects == 1
    assert imap.state == "SELECTED"


def test_session_ended_by_server_is_replaced_before_the_next_command(
    gmail: FakeGmail, imap: Any
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    assert gmail.end_sessions(ALICE, "imap") == 1
    assert imap.search(None, "ALL") == ("OK", [b"1"])
    old, new = conn_ids(gmail)
    # Found dead before sending: SEARCH went out once, on the new connection.
    assert b"SEARCH" not in verbs(gmail, old)
    assert verbs(gmail, new)[-2:] == [b"SELECT", b"SEARCH"]
    assert imap.state == "SELECTED"
    assert imap.reconnects == 1


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
def test_read_is_repeated_once_after_the_connection_dies(
    gmail: FakeGmail, imap: Any, action: str
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.fail_next("imap", "FETCH", action)  # type: ignore[arg-type]
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 1" in data[0][1]
    assert verbs(gmail).count(b"FETCH") == 2
    assert len(conn_ids(gmail)) == 2
    assert imap.state == "SELECTED"


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
def test_noop_is_repeated_after_the_connection_dies(
    gmail: FakeGmail, imap: Any, action: str
) -> None:
    imap.select("INBOX")
    gmail.fail_next("imap", "NOOP", action)  # type: ignore[arg-type]
    assert imap.noop()[0] == "OK"
    assert verbs(gmail).count(b"NOOP") == 2
    _, new = conn_ids(gmail)
    assert verbs(gmail, new)[-2:] == [b"SELECT", b"NOOP"]


def test_uid_fetch_is_repeated_while_uidvalidity_holds(
    gmail: FakeGmail, imap: Any
) -> None:
    uid = gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))  # the mailbox changed: UIDs still name messages
    gmail.fail_next("imap", "UID FETCH", "drop_before")
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"note 1" in data[0][1]
    assert verbs(gmail).count(b"UID FETCH") == 2
    assert len(conn_ids(gmail)) == 2


def test_sequence_command_is_not_repeated_in_a_changed_mailbox(
    gmail: FakeGmail, imap: Any
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))  # the client has not heard of it
    gmail.fail_next("imap", "FETCH", "drop_before")
    with pytest.raises(errors.ConnectionLost, match="EXISTS 1 -> 2") as info:
        imap.fetch("1", "(FLAGS)")
    assert isinstance(info.value, imaplib.IMAP4.abort)
    assert info.value.outcome_unknown is False
    assert verbs(gmail).count(b"FETCH") == 1
    # The object stays usable, on the new session.
    assert imap.search(None, "ALL") == ("OK", [b"1 2"])


def test_reconnect_false_raises_a_stdlib_compatible_abort(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    with connect(provider, reconnect=False) as m:
        m.select("INBOX")
        gmail.end_sessions(ALICE)
        with pytest.raises(imaplib.IMAP4.abort) as info:
            m.noop()
        assert isinstance(info.value, errors.ConnectionLost)
    assert len(conn_ids(gmail)) == 1


def test_unavailable_server_is_retried_with_backoff(
    gmail: FakeGmail, imap: Any, sleeps: list[float]
) -> None:
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "GREETING", "drop_before", count=2)
    assert imap.noop()[0] == "OK"
    assert sleeps == [0.25, 0.5]  # jittered (rand 0.5) exponential bounds
    assert imap.state == "SELECTED"


def test_unavailable_server_gives_up_after_the_attempts(
    gmail: FakeGmail, imap: Any, sleeps: list[float]
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
    imap: Any,
    sleeps: list[float],
    action: str,
    line: str | None,
) -> None:
    imap.select("INBOX")
    gmail.end_sessions(ALICE)
    gmail.fail_next("imap", "SELECT", action, line=line)  # type: ignore[arg-type]
    assert imap.noop()[0] == "OK"
    assert imap.state == "SELECTED"
    assert verbs(gmail).count(b"SELECT") == 3  # the first, then two attempts
    assert len(conn_ids(gmail)) == 3
    assert sleeps == [0.25]
    assert imap.reconnects == 1


def test_mailbox_gone_after_reconnect_leaves_the_state_auth(
    gmail: FakeGmail, imap: Any, connect: Callable[..., Any], provider: Recording
) -> None:
    assert imap.create("Work")[0] == "OK"
    imap.select("Work")
    other = connect(provider)
    assert other.delete("Work")[0] == "OK"
    other.logout()
    gmail.end_sessions(ALICE, "imap")
    with pytest.raises(errors.ConnectionLost, match="could not select Work again"):
        imap.noop()
    assert imap.state == "AUTH"
    assert imap.noop()[0] == "OK"
    assert imap.reconnects == 1


# --- never twice: APPEND, COPY, EXPUNGE... --------------------------------------------


def test_append_cut_off_after_execution_raises_outcome_unknown(
    gmail: FakeGmail, imap: Any
) -> None:
    imap.select("INBOX")
    gmail.fail_next("imap", "APPEND", "drop_after")
    with pytest.raises(errors.ConnectionLost) as info:
        imap.append("INBOX", None, None, message(1))
    assert info.value.outcome_unknown is True
    assert "not sent again" in str(info.value)
    assert len(gmail.messages(ALICE)) == 1
    assert verbs(gmail).count(b"APPEND") == 1
    # Reconnected already, mailbox restored.
    assert imap.state == "SELECTED"
    assert imap.search(None, "ALL") == ("OK", [b"1"])


def test_append_cut_off_on_receipt_raises_and_is_not_resent(
    gmail: FakeGmail, imap: Any
) -> None:
    gmail.fail_next("imap", "APPEND", "drop_before")
    with pytest.raises(errors.ConnectionLost) as info:
        imap.append("INBOX", None, None, message(1))
    assert info.value.outcome_unknown is True
    assert gmail.messages(ALICE) == []
    assert verbs(gmail).count(b"APPEND") == 1


@pytest.mark.parametrize("how", ["end_sessions", "deadline"])
def test_append_on_a_dead_session_reconnects_first_and_sends_once(
    gmail: FakeGmail, imap: Any, clock: ManualClock, how: str
) -> None:
    imap.select("INBOX")
    if how == "end_sessions":
        gmail.end_sessions(ALICE)
    else:
        clock.advance(timedelta(minutes=59, seconds=30))
    typ, _ = imap.append("INBOX", None, None, message(1))
    assert typ == "OK"
    assert gmail.messages(ALICE) == [message(1)]
    assert verbs(gmail).count(b"APPEND") == 1
    assert len(conn_ids(gmail)) == 2


ONCE: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    # id: (the verb the fake sees, how to send it)
    "COPY": ("COPY", lambda m, uid: m.copy("1", "Work")),
    "UID COPY": ("UID COPY", lambda m, uid: m.uid("COPY", uid, "Work")),
    "UID MOVE": ("UID MOVE", lambda m, uid: m.uid("MOVE", uid, "Work")),
    "EXPUNGE": ("EXPUNGE", lambda m, uid: m.expunge()),
    "CREATE": ("CREATE", lambda m, uid: m.create("Other")),
    "xatom": ("ID", lambda m, uid: m.xatom("ID", "NIL")),
}


@pytest.mark.parametrize("name", list(ONCE))
def test_command_cut_off_after_sending_is_never_sent_again(
    gmail: FakeGmail, imap: Any, name: str
) -> None:
    uid = str(gmail.deliver(ALICE, message(1)))
    assert imap.create("Work")[0] == "OK"
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    verb, send = ONCE[name]
    gmail.fail_next("imap", verb, "drop_after")
    before = len(verbs(gmail))
    with pytest.raises(errors.ConnectionLost) as info:
        send(imap, uid)
    assert info.value.outcome_unknown is True
    assert "not sent again" in str(info.value)
    assert verbs(gmail)[before:].count(verb.encode()) == 1
    # The object stays usable, on a new session, with INBOX selected again.
    assert imap.reconnects == 1
    assert imap.state == "SELECTED"
    assert imap.noop()[0] == "OK"


def test_store_cut_off_in_a_mailbox_that_changed_says_it_was_sent_once(
    gmail: FakeGmail, imap: Any
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))  # the client has not heard of it
    gmail.fail_next("imap", "STORE", "drop_after")
    with pytest.raises(errors.ConnectionLost, match="EXISTS 1 -> 2") as info:
        imap.store("1", "+FLAGS", "(\\Flagged)")
    assert info.value.outcome_unknown is True
    assert verbs(gmail).count(b"STORE") == 1


def test_timeout_after_append_was_sent_says_the_outcome_is_unknown(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    m = connect(provider, timeout=0.3)
    release = gmail.hold_next("imap", "APPEND")
    try:
        with pytest.raises(errors.Timeout, match="may or may not") as info:
            m.append("INBOX", None, None, message(1))
    finally:
        release.set()
    assert info.value.outcome_unknown
    assert verbs(gmail).count(b"APPEND") == 1
    m.logout()


def test_timeout_of_a_read_does_not_claim_an_unknown_outcome(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    m = connect(provider, timeout=0.3)
    release = gmail.hold_next("imap", "NOOP")
    try:
        with pytest.raises(errors.Timeout) as info:
            m.noop()
    finally:
        release.set()
    assert not info.value.outcome_unknown
    assert m.noop()[0] == "OK"  # the next command reconnects
    m.logout()


# --- after logout, CLOSE --------------------------------------------------------------


def test_commands_after_logout_raise_and_open_no_new_connection(
    gmail: FakeGmail, connect: Callable[..., Any], provider: Recording
) -> None:
    with connect(provider) as m:
        m.select("INBOX")
    assert m.state == "LOGOUT"
    if isinstance(m, Blocking):  # the facade's loop is gone: use a new one
        m.runner, m.closed = asyncio.Runner(), False
    with pytest.raises(imaplib.IMAP4.error, match="LOGOUT"):
        m.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        m.noop()
    assert gmail.connection_count("imap") == 1


def test_close_on_an_ended_session_reselects_then_closes_once(
    gmail: FakeGmail, imap: Any
) -> None:
    gmail.deliver(ALICE, message(1))
    gmail.deliver(ALICE, message(2))
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    gmail.end_sessions(ALICE, "imap")
    assert imap.close()[0] == "OK"
    assert imap.state == "AUTH"
    assert gmail.messages(ALICE) == [message(2)]
    assert verbs(gmail).count(b"CLOSE") == 1
    gmail.end_sessions(ALICE, "imap")
    assert imap.noop()[0] == "OK"
    assert imap.state == "AUTH"  # the closed mailbox is not selected again
    assert verbs(gmail).count(b"SELECT") == 2


# --- hours of work --------------------------------------------------------------------


def test_three_hours_of_fetch_and_search_see_every_message_once(
    gmail: FakeGmail, imap: Any, clock: ManualClock, provider: Recording
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
        for uid in [int(u) for u in data[0].split() if int(u) > last_uid]:
            typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[HEADER])")
            assert typ == "OK"
            seen.append(data[0][1])
            last_uid = uid
    assert len(seen) == 18 == len(set(seen))
    assert verbs(gmail).count(b"APPEND") == 0
    assert imap.reconnects >= 6
    assert len(set(provider.tokens)) >= 3


def test_large_literals_arrive_byte_exact_and_in_step(
    gmail: FakeGmail, imap: Any
) -> None:
    big = [
        b"Subject: big %d\r\n\r\n" % n + bytes(range(256)) * (1000 + 700 * n)
        for n in range(3)
    ]
    for raw in big:
        gmail.deliver(ALICE, raw)
    imap.select("INBOX", readonly=True)
    typ, data = imap.fetch("1:3", "(BODY.PEEK[])")
    assert typ == "OK"
    assert [item[1] for item in data if isinstance(item, tuple)] == big
    assert imap.noop()[0] == "OK"


# --- secrets --------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_no_secret_in_logs_errors_or_reprs_across_a_rejection_and_reconnect(
    gmail: FakeGmail, clock: ManualClock, mechanism: str
) -> None:
    handed: list[str] = []

    def tokens(*, force_refresh: bool = False) -> str:
        # The first token is refused; a refresh gives a good one.
        handed.append(gmail.mint_token(ALICE) if handed else "ya29.refused-secret")
        return handed[-1]

    class Source:
        token = staticmethod(tokens)

    async def main() -> str:
        m = new_aio(gmail, Source(), clock, mechanism=mechanism)
        async with m:
            await m.select("INBOX")
            gmail.end_sessions(ALICE)
            await m.noop()  # reconnects, authenticating again
            assert m.reconnects == 1
            return repr(m)

    outcome = attack(lambda: run(main()), seconds=20, trace=False)
    assert outcome.error is None, outcome.error
    assert len(handed) == 3
    assert any(
        "AUTHENTICATE" in r.getMessage() or "authenticated" in r.getMessage()
        for r in outcome.records
    )
    for token in handed:
        bearer = sasl.oauthbearer_response(
            ALICE, token, host=gmail.host, port=gmail.imap_port
        )
        forms = [*secrets_for(token, ALICE), base64.b64encode(bearer).decode()]
        assert_no_secret(outcome, forms)


# --- only the asyncio class: concurrency, IDLE and watch as async iterators -----------


def test_tasks_share_one_connection_one_command_at_a_time(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    for n in range(5):
        gmail.deliver(ALICE, message(n))

    async def main() -> list[Any]:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX", readonly=True)
            return await asyncio.gather(
                *(
                    m.fetch(str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    for n in range(1, 6)
                )
            )

    results = run(main())
    subjects = [data[0][1].strip() for _, data in results]
    assert subjects == [b"Subject: note %d" % n for n in range(5)]
    assert gmail.connection_count("imap") == 1


class Gate(asyncio.Semaphore):
    """A semaphore that counts who waits at it and who is inside."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.waiting = 0
        self.inside = 0
        self.most = 0

    async def acquire(self) -> bool:
        self.waiting += 1
        try:
            await super().acquire()
        finally:
            self.waiting -= 1
        self.inside += 1
        self.most = max(self.most, self.inside)
        return True

    def release(self) -> None:
        self.inside -= 1
        super().release()


def test_handshakes_semaphore_bounds_concurrent_logins(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    async def main() -> None:
        gate = Gate(2)
        arrived: list[int] = []
        two_in = asyncio.Event()
        release = asyncio.Event()

        class Held:
            async def token_async(self, *, force_refresh: bool = False) -> str:
                arrived.append(1)
                if len(arrived) == 2:
                    two_in.set()
                await release.wait()
                return gmail.mint_token(ALICE)

        clients = [new_aio(gmail, Held(), clock, handshakes=gate) for _ in range(6)]
        logins = asyncio.gather(*(m.connect() for m in clients))
        await two_in.wait()
        # Two are authenticating; the four others wait at the gate, unconnected.
        assert (gate.inside, gate.waiting) == (2, 4)
        assert len(arrived) == 2
        release.set()
        await logins
        assert all(m.state == "AUTH" for m in clients)
        assert gate.most == 2 and gate.inside == 0
        await asyncio.gather(*(m.logout() for m in clients))

    run(main())
    assert gmail.connection_count("imap") == 6


def test_a_cancelled_command_leaves_the_object_usable(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    release = gmail.hold_next("imap", "NOOP")

    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            sends = m._sends
            task = asyncio.ensure_future(m.noop())
            while m._sends == sends:  # until the NOOP is on the wire
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
            # Cut off mid-reply: the connection is out of step and replaced.
            assert await m.noop() == ("OK", [b"Success"])
            assert m.state == "SELECTED"

    try:
        run(main())
    finally:
        release.set()


def test_idle_yields_exists_when_mail_arrives(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            async with m.idle() as idler:
                gmail.deliver(ALICE, message(1))
                assert await idler.__anext__() == ("EXISTS", [b"1"])
            assert m.state == "SELECTED"
            assert verbs(gmail)[-2:] == [b"IDLE", b"DONE"]
            assert await m.noop() == ("OK", [b"Success"])

    run(main())
    assert client_lines(gmail)[-3] == b"DONE"


def test_idle_survives_the_server_ending_the_session(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    async def main() -> int:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            async with m.idle() as idler:
                gmail.deliver(ALICE, message(1))
                assert await idler.__anext__() == ("EXISTS", [b"1"])
                gmail.end_sessions(ALICE, "imap")
                gmail.deliver(ALICE, message(2))
                # Growth while the session was down is reported as EXISTS.
                assert await idler.__anext__() == ("EXISTS", [b"2"])
            return m.reconnects

    assert run(main()) == 1
    idles = [
        line.conn_id
        for line in gmail.transcript("imap")
        if line.direction == "C" and line.data.endswith(b" IDLE")
    ]
    assert len(set(idles)) == 2  # IDLE again on the new connection


def test_idle_reports_mail_that_arrived_while_the_session_was_down(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            gmail.end_sessions(ALICE, "imap")
            gmail.deliver(ALICE, message(1))
            async with m.idle(duration=5) as idler:
                assert await idler.__anext__() == ("EXISTS", [b"1"])
            assert m.reconnects == 1
            assert "EXISTS" not in m.untagged_responses  # reported once

    run(main())


def test_idle_duration_zero_ends_at_once_and_stop_ends_a_wait(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            async with m.idle(duration=0) as idler:
                assert [item async for item in idler] == []
            async with m.idle() as idler:
                asyncio.get_running_loop().call_soon(idler.stop)
                assert [item async for item in idler] == []
            assert verbs(gmail)[-4:] == [b"IDLE", b"DONE", b"IDLE", b"DONE"]

    run(main())


def test_commands_wait_while_idling_and_run_after(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            async with m.idle() as idler:
                noop = asyncio.ensure_future(m.noop())
                await asyncio.sleep(0)
                assert not noop.done()  # held back: no command inside IDLE
                idler.stop()
                assert [item async for item in idler] == []
            assert await noop == ("OK", [b"Success"])
            assert verbs(gmail)[-3:] == [b"IDLE", b"DONE", b"NOOP"]

    run(main())


def forever(clock: ManualClock, slept: list[float] | None = None) -> Backoff:
    """Backoff.forever() whose waits move the clock instead of passing."""

    def sleep(seconds: float) -> None:
        if slept is not None:
            slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    return Backoff.forever(sleep=sleep)


def test_watch_reports_new_mail_once_in_uid_order(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    gmail.deliver(ALICE, message(0))  # there before the watch: not news

    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(backoff=forever(clock)) as watcher:
                first = gmail.deliver(ALICE, message(1))
                second = gmail.deliver(ALICE, message(2))
                got = [await watcher.__anext__(), await watcher.__anext__()]
                validity = m._box.uidvalidity
                assert got == [
                    NewMessage(first, validity),
                    NewMessage(second, validity),
                ]
                # Between items the connection is free: read the message.
                typ, data = await m.uid("FETCH", str(first), "(BODY.PEEK[TEXT])")
                assert typ == "OK" and b"body 1" in data[0][1]
                third = gmail.deliver(ALICE, message(3))
                assert await watcher.__anext__() == NewMessage(third, validity)
                assert watcher.last_uid == third

    run(main())


def test_watch_a_different_uidvalidity_is_reported_not_replayed(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    for n in range(3):
        gmail.deliver(ALICE, message(n))

    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(
                since_uid=1, uidvalidity=999_999, backoff=forever(clock)
            ) as watcher:
                event = await watcher.__anext__()
                assert isinstance(event, UIDValidityChanged)
                assert (event.mailbox, event.old) == ("INBOX", 999_999)
                assert event.new == m._box.uidvalidity
                fresh = gmail.deliver(ALICE, message(9))
                assert await watcher.__anext__() == NewMessage(fresh, event.new)

    run(main())


def test_watch_across_session_ends_and_token_expiry_each_message_once(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    provider = gmail.token_provider(ALICE, clock=clock)
    refreshes = gmail.google.request_count("/token", grant_type="refresh_token")

    async def main() -> tuple[list[int], list[int], int]:
        expected: list[int] = []
        seen: list[int] = []
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(backoff=forever(clock)) as watcher:
                for round_ in range(3):
                    expected.append(gmail.deliver(ALICE, message(round_)))
                    seen.append((await watcher.__anext__()).uid)
                    gmail.end_sessions(ALICE, "imap")  # Gmail's "Session expired"
                    expected.append(gmail.deliver(ALICE, message(100 + round_)))
                    seen.append((await watcher.__anext__()).uid)
                # Then the token expires with mail waiting: one refresh, one report.
                gmail.expire_tokens(ALICE)
                before = gmail.google.request_count(
                    "/token", grant_type="refresh_token"
                )
                expected.append(gmail.deliver(ALICE, message(200)))
                seen.append((await watcher.__anext__()).uid)
                after = gmail.google.request_count("/token", grant_type="refresh_token")
                assert after == before + 1
                return expected, seen, m.reconnects

    expected, seen, reconnects = run(main())
    assert seen == expected
    assert reconnects == 4
    total = gmail.google.request_count("/token", grant_type="refresh_token")
    assert total - refreshes == 1  # session ends need none; the expiry one


def test_watch_stops_on_an_asyncio_event_set_while_it_idles(
    gmail: FakeGmail,
    clock: ManualClock,
    provider: Recording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gmail_xoauth2.aio._imap_idle import AsyncIdler

    real_wait = AsyncIdler._wait_readable

    async def main() -> None:
        stop = asyncio.Event()
        idling = asyncio.Event()

        async def wait_readable(self: AsyncIdler, wait: float | None) -> bool:
            idling.set()  # the watcher is about to block, in IDLE
            return await real_wait(self, wait)

        monkeypatch.setattr(AsyncIdler, "_wait_readable", wait_readable)
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(backoff=forever(clock), stop=stop) as watcher:
                events = asyncio.ensure_future(_collect(watcher))
                await idling.wait()
                stop.set()
                assert await asyncio.wait_for(events, 5) == []
                assert verbs(gmail)[-2:] == [b"IDLE", b"DONE"]
                assert await m.noop() == ("OK", [b"Success"])

    run(main())


async def _collect(watcher: Any) -> list[Any]:
    return [event async for event in watcher]


def test_watch_backoff_waits_are_logged_and_end_when_the_server_is_back(
    gmail: FakeGmail,
    clock: ManualClock,
    provider: Recording,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slept: list[float] = []

    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(backoff=forever(clock, slept)) as watcher:
                first = gmail.deliver(ALICE, message(1))
                assert (await watcher.__anext__()).uid == first
                gmail.end_sessions(ALICE)
                gmail.fail_next("imap", "GREETING", "drop_before", count=3)
                during = gmail.deliver(ALICE, message(2))
                with caplog.at_level(logging.WARNING, logger="gmail_xoauth2"):
                    assert (await watcher.__anext__()).uid == during
                watcher.stop()
                assert [event async for event in watcher] == []

    run(main())
    assert len(slept) == 3
    waits = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(waits) == len(slept)  # every wait logged once
    assert all("unavailable" in r.getMessage() for r in waits)


def test_watch_stop_event_ends_a_backoff_wait(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    stop = asyncio.Event()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        stop.set()  # stopped from elsewhere while the server is down

    async def main() -> list[Any]:
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(
                backoff=Backoff.forever(sleep=sleep), stop=stop
            ) as watcher:
                first = gmail.deliver(ALICE, message(1))
                assert (await watcher.__anext__()).uid == first
                gmail.end_sessions(ALICE)
                gmail.fail_next("imap", "GREETING", "drop_before", count=100)
                gmail.deliver(ALICE, message(2))
                return await _collect(watcher)

    assert run(main()) == []
    assert len(slept) == 1


def test_watch_polls_with_noop_when_the_server_has_no_idle(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    noops: list[int] = []

    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            m.capabilities = tuple(c for c in m.capabilities if c != "IDLE")
            real_noop = m.noop

            async def noop() -> Any:
                noops.append(1)
                if len(noops) == 3:  # mail arrives between the 2nd and 3rd poll
                    noops.append(gmail.deliver(ALICE, message(1)))
                return await real_noop()

            m.noop = noop  # type: ignore[method-assign]
            async with m.watch(backoff=forever(clock), poll=0.001) as watcher:
                event = await watcher.__anext__()
                assert isinstance(event, NewMessage) and event.uid == noops[-1]
                watcher.stop()
                assert await _collect(watcher) == []

    run(main())
    seen = verbs(gmail)
    assert b"IDLE" not in seen
    assert seen.count(b"NOOP") == 3
    assert seen.count(b"UID SEARCH") == 2  # the first look, then after the EXISTS


def test_concurrent_watch_and_commands_on_one_session(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    # Between items the connection is free: another task's commands run while
    # the watch waits in IDLE only after it leaves IDLE for its next look.
    async def main() -> None:
        async with new_aio(gmail, provider, clock) as m:
            async with m.watch(backoff=forever(clock)) as watcher:
                uid = gmail.deliver(ALICE, message(1))
                assert (await watcher.__anext__()).uid == uid
                typ, data = await m.uid("FETCH", str(uid), "(BODY.PEEK[TEXT])")
                assert typ == "OK" and data[0][1] == b"body 1\r\n"

    run(main())


def test_threads_and_loops_do_not_share_a_client(
    gmail: FakeGmail, clock: ManualClock, provider: Recording
) -> None:
    # One client per loop: two threads each run their own, side by side.
    results: list[Any] = []

    def worker() -> None:
        async def main() -> Any:
            async with new_aio(gmail, provider, clock) as m:
                return await m.select("INBOX", readonly=True)

        results.append(run(main()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == [("OK", [b"0"]), ("OK", [b"0"])]


def never_woken(clock: ManualClock, waits: list[float]) -> Any:
    """An AsyncIdler._wait_readable for which nothing arrives: it moves the clock."""

    async def wait_readable(self: Any, wait: float | None) -> bool:
        assert wait is not None, "IDLE waits forever"
        waits.append(wait)
        assert len(waits) < 10, f"IDLE never ends: {waits}"
        clock.advance(timedelta(seconds=wait))
        return False

    return wait_readable


def test_idle_is_renewed_and_the_session_replaced_before_the_token_expires(
    gmail: FakeGmail,
    clock: ManualClock,
    provider: Recording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 65 quiet minutes on one-hour tokens: IDLE renewed every 27 minutes
    # (RFC 2177), and the session replaced politely (LOGOUT) before the hour.
    from gmail_xoauth2.aio._imap_idle import AsyncIdler

    waits: list[float] = []
    monkeypatch.setattr(AsyncIdler, "_wait_readable", never_woken(clock, waits))

    async def main() -> int:
        async with new_aio(gmail, provider, clock) as m:
            await m.select("INBOX")
            async with m.idle(duration=65 * 60) as idler:
                assert [item async for item in idler] == []
            return m.reconnects

    assert run(main()) == 1
    assert sum(waits) == pytest.approx(65 * 60)
    first, second = conn_ids(gmail)
    old = verbs(gmail, first)
    assert old[-5:] == [b"IDLE", b"DONE", b"IDLE", b"DONE", b"LOGOUT"]
    assert verbs(gmail, second)[-3:] == [b"IDLE", b"DONE", b"LOGOUT"]
