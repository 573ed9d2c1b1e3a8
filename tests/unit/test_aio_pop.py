"""gmail_xoauth2.aio.POP3 and gmail_xoauth2.POP3, the same scenarios against both.

Each behaviour is written once and run against the sync class and the asyncio
one (``style``): the asyncio client is driven through :class:`Blocking`, which
runs each of its coroutines to completion on the test's own event loop, so a
scenario reads the same in both styles. The fake Gmail (and the scripted
hostile servers) run in threads, so the loop never waits on the test.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import poplib
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _hostile import TOKEN, USER, Outcome, Peer, assert_no_secret, attack, serving
from test_hostile_pop import (
    CAPA_STLS,
    QUICK,
    SMALL,
    at_auth,
    expect,
    from_the_start,
    greet,
    logged_in,
    plain,
    secrets,
)
from test_pop import ALICE, CHALLENGE, MESSAGES, MintingProvider, client_lines, wire

from gmail_xoauth2 import (
    MAIL_SCOPE,
    POP3,
    AuthenticationFailed,
    ConnectionLost,
    Error,
    InsecureConnection,
    LimitExceeded,
    Limits,
    POPConnectionLost,
    POPInsecureConnection,
    POPProtocolError,
    POPTimeout,
    ProtocolError,
    StaticTokenProvider,
    Timeout,
    TooManyConnections,
    aio,
    oauthbearer_string,
    xoauth2_string,
)
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.testing._pki import PKI, make_pki
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

MiB = 1 << 20
STYLES = ["sync", "async"]


# -- the asyncio client, driven from plain test code ----------------------------------


class Blocking:
    """An :class:`aio.POP3` whose coroutines run to completion on ``loop``."""

    def __init__(self, pop: aio.POP3, loop: asyncio.AbstractEventLoop) -> None:
        self.aio = pop
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.aio, name)
        if not inspect.iscoroutinefunction(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(value(*args, **kwargs))

        return call

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return self._loop.run_until_complete(self.aio.__aexit__(*exc))

    def __repr__(self) -> str:
        return repr(self.aio)


def new_client(
    style: str, loop: asyncio.AbstractEventLoop | None, *args: Any, **kwargs: Any
) -> Any:
    """A logged-in client of ``style``: POP3, or aio.POP3 behind Blocking."""
    if style == "sync":
        return POP3(*args, **kwargs)
    assert loop is not None
    pop = aio.POP3(*args, **kwargs)
    assert not pop.connected  # creating one does no I/O
    client = Blocking(pop, loop)
    client.connect()
    return client


def is_closed(pop: Any) -> bool:
    return not pop.connected if isinstance(pop, Blocking) else pop.sock is None


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


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


@pytest.fixture
def connect(
    style: str, loop: asyncio.AbstractEventLoop, gmail: FakeGmail, sleeps: list[float]
) -> Callable[..., Any]:
    def make(tokens: object = None, **kwargs: Any) -> Any:
        provider = tokens if tokens is not None else MintingProvider(gmail, ALICE)
        return new_client(
            style,
            loop,
            ALICE,
            provider,
            gmail.host,
            gmail.pop_port,
            ssl_context=gmail.ssl_context(),
            clock=gmail.clock,
            backoff=Backoff(attempts=2, sleep=sleeps.append),
            **kwargs,
        )

    return make


Connect = Callable[..., Any]


# -- login -----------------------------------------------------------------------------


def test_creating_an_aio_pop3_does_no_io(gmail: FakeGmail) -> None:
    pop = aio.POP3(ALICE, lambda: "never", gmail.host, gmail.pop_port)
    assert not pop.connected
    assert "closed" in repr(pop)
    assert gmail.connection_count("pop") == 0
    with pytest.raises(ValueError, match="mechanism"):
        aio.POP3(ALICE, lambda: "x", mechanism="PLAIN")


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_is_one_line_and_one_round_trip(
    connect: Connect, gmail: FakeGmail, mechanism: str
) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(provider, mechanism=mechanism) as pop:
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


def test_an_async_token_source_and_async_with(gmail: FakeGmail) -> None:
    calls: list[str] = []

    async def token() -> str:
        calls.append("token")
        return gmail.mint_token(ALICE)

    async def main() -> tuple[tuple[int, int], bytes]:
        pop = aio.POP3(
            ALICE,
            token,
            gmail.host,
            gmail.pop_port,
            ssl_context=gmail.ssl_context(),
            clock=gmail.clock,
        )
        async with pop:
            return await pop.stat(), (await pop.retr(1))[1][-1]

    assert asyncio.run(main()) == ((3, sum(map(len, MESSAGES))), b"first")
    assert calls == ["token"]
    assert client_lines(gmail)[-1] == b"QUIT"


def test_the_poplib_methods_keep_working(connect: Connect, gmail: FakeGmail) -> None:
    with connect() as pop:
        assert pop.list()[1] == [
            f"{n} {len(m)}".encode() for n, m in enumerate(MESSAGES, 1)
        ]
        assert pop.list(2) == f"+OK 2 {len(MESSAGES[1])}".encode()
        assert pop.retr(2)[1] == [b"Subject: two", b"", b"second"]
        assert pop.top(1, 0)[1] == [b"Subject: one", b""]
        assert pop.uidl(1).startswith(b"+OK 1 GmailId")
        assert len(pop.uidl()[1]) == 3
        assert pop.noop() == b"+OK"
        assert "SASL" in pop.capa()
        with pytest.raises(poplib.error_proto, match="no such message"):
            pop.retr(9)
        with pytest.raises(poplib.error_proto, match="already established"):
            pop.stls()


def test_message_lines_longer_than_2048_bytes_are_read(
    connect: Connect, gmail: FakeGmail
) -> None:
    long_line = b"x" * 300_000
    gmail.deliver(ALICE, b"Subject: long\r\n\r\n" + long_line + b"\r\n.hidden\r\n")
    with connect() as pop:
        _, lines, octets = pop.retr(4)
        assert lines == [b"Subject: long", b"", long_line, b".hidden"]
        assert octets == 15 + 2 + len(long_line) + 2 + 9  # "..hidden" counts 9


def test_limits_bound_what_the_server_may_send(
    connect: Connect, gmail: FakeGmail
) -> None:
    gmail.deliver(ALICE, b"Subject: wide\r\n\r\n" + b"y" * 5000 + b"\r\n")
    gmail.deliver(ALICE, b"Subject: tall\r\n\r\n" + (b"z" * 48 + b"\r\n") * 30)
    limits = Limits(line_bytes=4096, literal_bytes=1024)
    with connect(limits=limits) as pop:
        assert pop.limits is limits
        with pytest.raises(LimitExceeded, match="line_bytes"):
            pop.retr(4)
        assert is_closed(pop)  # closed, never resynchronised
        with pytest.raises(LimitExceeded, match="literal_bytes"):
            pop.retr(5)
        assert pop.retr(1)[1][-1] == b"first"  # the next command reconnects
    assert gmail.connection_count("pop") == 3


@pytest.mark.parametrize(
    ("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")]
)
def test_bad_token_challenge_is_answered_not_taken_for_ok(
    connect: Connect, gmail: FakeGmail, mechanism: str, answer: bytes
) -> None:
    provider = StaticTokenProvider("ya29.not-a-real-token")
    with pytest.raises(AuthenticationFailed) as info:
        connect(provider, mechanism=mechanism)
    error = info.value
    assert isinstance(error, poplib.error_proto)
    assert (error.protocol, error.mechanism) == ("pop", mechanism)
    assert (error.status, error.scope) == ("400", MAIL_SCOPE)
    assert error.server_text == "-ERR [AUTH] Invalid credentials."
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


def test_rejected_token_is_refreshed_once_and_recovers(
    connect: Connect, gmail: FakeGmail
) -> None:
    stale = gmail.mint_token(ALICE)
    gmail.google.revoke(stale)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(provider) as pop:
        assert pop.stat()[0] == 3
    assert provider.calls == [False, True]
    auth_lines = [line for line in client_lines(gmail, 1) if line.startswith(b"AUTH")]
    assert auth_lines == [
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, stale).encode(),
        b"AUTH XOAUTH2 " + xoauth2_string(ALICE, provider.issued[1]).encode(),
    ]


def test_garbage_challenge_does_not_crash(connect: Connect, gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "AUTH", "reply", line="+ not base64 at all!")
    provider = MintingProvider(gmail, ALICE)
    with connect(provider) as pop:
        assert pop.stat()[0] == 3
    assert client_lines(gmail, 1)[1] == b""
    assert provider.calls == [False, True]


def test_one_line_syntax_refusal_falls_back_to_two_lines(
    connect: Connect, gmail: FakeGmail
) -> None:
    gmail.fail_next("pop", "AUTH", "reply", line="-ERR bad command")
    provider = MintingProvider(gmail, ALICE)
    with connect(provider) as pop:
        initial = xoauth2_string(ALICE, provider.issued[0]).encode()
        assert wire(gmail, 1)[1:6] == [
            ("C", b"AUTH XOAUTH2 " + initial),
            ("S", b"-ERR bad command"),
            ("C", b"AUTH XOAUTH2"),
            ("S", b"+ "),
            ("C", initial),
        ]
        assert pop.stat()[0] == 3


def test_a_temporary_refusal_is_an_unavailable_server_not_a_bad_token(
    connect: Connect, gmail: FakeGmail
) -> None:
    provider = MintingProvider(gmail, ALICE)
    gmail.fail_next("pop", "AUTH", "reply", line="-ERR [SYS/TEMP] Try again later.")
    with pytest.raises(ConnectionLost, match="refused the login for now") as info:
        connect(provider)
    assert type(info.value) is POPConnectionLost
    assert provider.calls == [False]


def test_too_many_connections_is_not_retried(
    connect: Connect, gmail: FakeGmail
) -> None:
    line = "-ERR [SYS/TEMP] Too many simultaneous connections."
    gmail.fail_next("pop", "AUTH", "reply", line=line)
    with pytest.raises(TooManyConnections, match="15"):
        connect()
    assert gmail.connection_count("pop") == 1


@pytest.mark.parametrize(
    ("capa", "refusal", "match", "received"),
    [
        (b"+OK\r\nSASL XOAUTH2\r\n.\r\n", b"-ERR no\r\n", "STLS", [b"CAPA"]),
        (
            b"+OK\r\nSTLS\r\n.\r\n",
            b"-ERR [SYS/TEMP] TLS not available\r\n",
            "refused STLS",
            [b"CAPA", b"STLS"],
        ),
    ],
    ids=["stripped", "refused"],
)
def test_starttls_that_fails_sends_no_token(
    style: str,
    loop: asyncio.AbstractEventLoop,
    capa: bytes,
    refusal: bytes,
    match: str,
    received: list[bytes],
) -> None:
    lines: list[bytes] = []
    tokens: list[bool] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"+OK plain POP ready\r\n")
                stream.flush()
                for line in stream:
                    lines.append(line.rstrip(b"\r\n"))
                    stream.write(capa if line.upper().startswith(b"CAPA") else refusal)
                    stream.flush()

        thread = threading.Thread(target=serve)
        thread.start()
        with pytest.raises(InsecureConnection, match=match) as info:
            new_client(
                style,
                loop,
                ALICE,
                lambda: tokens.append(True) or "ya29.secret",  # type: ignore[func-returns-value]
                "127.0.0.1",
                port,
                starttls=True,
            )
        thread.join()
    assert type(info.value) is POPInsecureConnection
    assert lines == received
    assert tokens == []


# -- sessions end ----------------------------------------------------------------------


def test_reads_survive_a_session_ended_by_the_server(
    connect: Connect, gmail: FakeGmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gmail_xoauth2")
    with connect() as pop:
        assert pop.stat()[0] == 3
        assert gmail.end_sessions(ALICE, "pop") == 1
        assert pop.retr(1)[1][-1] == b"first"
        assert gmail.connection_count("pop") == 2
        # The goodbye was seen before the command: nothing was sent on it.
        assert client_lines(gmail, 1)[-1] == b"STAT"
    assert "server closed the connection" in caplog.text
    assert {r.levelname for r in caplog.records} == {"DEBUG"}


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
def test_a_read_is_repeated_once_after_a_drop(
    connect: Connect, gmail: FakeGmail, action: str
) -> None:
    with connect() as pop:
        gmail.fail_next("pop", "RETR", action)  # type: ignore[arg-type]
        assert pop.retr(3)[1] == [b"Subject: three", b"", b"third"]
        assert client_lines(gmail, 2)[1:] == [b"RETR 3"]
    assert gmail.connection_count("pop") == 2


def test_a_read_dropped_twice_raises(connect: Connect, gmail: FakeGmail) -> None:
    with connect() as pop:
        gmail.fail_next("pop", "STAT", "drop_before", count=2)
        with pytest.raises(ConnectionLost, match="again") as info:
            pop.stat()
        assert type(info.value) is POPConnectionLost
        assert pop.stat()[0] == 3


def test_proactive_reconnect_before_the_token_expires(
    connect: Connect, gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect() as pop:
        pop.stat()
        clock.advance(timedelta(seconds=3599 - 30))  # within the 60 s margin
        assert pop.stat()[0] == 3
        assert client_lines(gmail, 1)[-1] == b"QUIT"
        assert client_lines(gmail, 2)[1:] == [b"STAT"]


def test_three_hours_of_one_hour_tokens(
    connect: Connect, gmail: FakeGmail, clock: ManualClock
) -> None:
    provider = MintingProvider(gmail, ALICE)
    with connect(provider) as pop:
        for _ in range(18):
            assert pop.stat()[0] == 3
            assert pop.retr(2)[1][-1] == b"second"
            clock.advance(timedelta(minutes=10))
    assert gmail.connection_count("pop") >= 3
    assert True not in provider.calls


def test_a_session_ended_by_the_token_expiring_is_replaced(
    connect: Connect, gmail: FakeGmail, clock: ManualClock
) -> None:
    # Past the expiry: the fake ends the session, the next command reconnects.
    with connect() as pop:
        pop.uidl()
        clock.advance(timedelta(hours=2))
        assert pop.retr(1)[1][-1] == b"first"
    assert gmail.connection_count("pop") == 2


def test_unavailable_server_backs_off_then_gives_up(
    connect: Connect, gmail: FakeGmail, sleeps: list[float]
) -> None:
    with connect() as pop:
        gmail.end_sessions(ALICE, "pop")
        gmail.fail_next("pop", "GREETING", "drop_before", count=3)
        with pytest.raises(ConnectionLost, match="after 3 attempts"):
            pop.stat()
        assert len(sleeps) == 2
        assert pop.stat()[0] == 3


def test_a_temporary_refusal_at_login_backs_off_instead_of_refreshing(
    connect: Connect, gmail: FakeGmail, sleeps: list[float]
) -> None:
    with connect() as pop:
        refreshes = gmail.google.request_count("/token")
        gmail.end_sessions(ALICE, "pop")
        gmail.fail_next("pop", "AUTH", "reply", line=b"-ERR [SYS/TEMP] Try again")
        assert pop.stat()[0] == 3
        assert len(sleeps) == 1
        assert gmail.google.request_count("/token") == refreshes


def test_no_reconnect_when_disabled(connect: Connect, gmail: FakeGmail) -> None:
    pop = connect(reconnect=False)
    try:
        gmail.end_sessions(ALICE, "pop")
        with pytest.raises(ConnectionLost, match="reconnect=False"):
            pop.stat()
    finally:
        pop.close()
    assert gmail.connection_count("pop") == 1


def test_a_changed_mailbox_stops_a_numbered_retry(
    connect: Connect, gmail: FakeGmail
) -> None:
    with connect() as pop:
        pop.uidl()
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        gmail.fail_next("pop", "RETR", "drop_before")
        with pytest.raises(ConnectionLost, match="message 2 may now be another"):
            pop.retr(2)
        assert client_lines(gmail, 2)[1:] == [b"UIDL 2"]
        with pytest.raises(ConnectionLost, match="message 3 may now be another"):
            pop.dele(3)  # every number, until the caller looks again
        assert len(pop.uidl()[1]) == 2
        assert pop.retr(2)[1][-1] == b"third"


def test_a_changed_mailbox_stops_a_numbered_command_after_a_proactive_reconnect(
    connect: Connect, gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect() as pop:
        assert pop.stat()[0] == 3
        first_uid = gmail.backend.store.status(ALICE, "INBOX").messages[0].uid
        gmail.backend.store.remove(ALICE, "INBOX", [first_uid])
        clock.advance(timedelta(seconds=3599 - 30))
        with pytest.raises(ConnectionLost, match="message 1 may now be another"):
            pop.dele(1)
        assert client_lines(gmail, 2)[1:] == [b"STAT"]
    assert len(gmail.messages(ALICE)) == 2


def test_an_unchanged_mailbox_lets_a_numbered_command_run_after_a_reconnect(
    connect: Connect, gmail: FakeGmail
) -> None:
    with connect() as pop:
        pop.list()
        gmail.end_sessions(ALICE, "pop")
        assert pop.retr(2)[1][-1] == b"second"
        assert client_lines(gmail, 2)[1:] == [b"STAT", b"RETR 2"]


# -- deletions -------------------------------------------------------------------------


def test_quit_commits_deletions(connect: Connect, gmail: FakeGmail) -> None:
    pop = connect()
    assert pop.dele(1) == b"+OK marked for deletion"
    assert pop.quit() == b"+OK Farewell."
    assert gmail.messages(ALICE) == MESSAGES[1:]


def test_deletions_are_not_reported_when_quit_is_dropped(
    connect: Connect, gmail: FakeGmail
) -> None:
    pop = connect()
    pop.dele(1)
    gmail.fail_next("pop", "QUIT", "drop_before")
    with pytest.raises(ConnectionLost, match="may not have been applied") as info:
        pop.quit()
    assert info.value.outcome_unknown
    assert gmail.messages(ALICE) == MESSAGES


def test_a_refused_quit_is_raised_and_the_connection_closed(
    connect: Connect, gmail: FakeGmail
) -> None:
    line = "-ERR some deleted messages not removed"
    with pytest.raises(poplib.error_proto, match="not removed"):
        with connect() as pop:
            pop.dele(1)
            gmail.fail_next("pop", "QUIT", "reply", line=line)
    assert is_closed(pop)
    assert pop.stat()[0] == 3  # a new session
    pop.quit()


def test_pending_deletions_lost_with_the_connection_are_reported(
    connect: Connect, gmail: FakeGmail
) -> None:
    with connect() as pop:
        pop.dele(1)
        pop.dele(3)
        gmail.fail_next("pop", "STAT", "drop_after")
        with pytest.raises(ConnectionLost, match="NOT applied") as info:
            pop.stat()
        assert type(info.value) is POPConnectionLost
        assert not info.value.outcome_unknown
        assert "1, 3" in str(info.value)
        assert pop.stat()[0] == 3
    assert gmail.messages(ALICE) == MESSAGES


def test_session_ended_with_deletions_pending_is_reported(
    connect: Connect, gmail: FakeGmail
) -> None:
    pop = connect()
    pop.dele(2)
    gmail.end_sessions(ALICE, "pop")
    with pytest.raises(ConnectionLost, match="NOT applied"):
        pop.quit()
    assert gmail.messages(ALICE) == MESSAGES


def test_proactive_reconnect_waits_while_deletions_are_pending(
    connect: Connect, gmail: FakeGmail, clock: ManualClock
) -> None:
    pop = connect()
    pop.dele(1)
    clock.advance(timedelta(seconds=3599 - 30))
    assert pop.stat()[0] == 2  # same session: message 1 is still marked
    assert pop.quit() == b"+OK Farewell."
    assert gmail.connection_count("pop") == 1
    assert gmail.messages(ALICE) == MESSAGES[1:]


def test_rset_survives_a_drop_and_clears_the_marks(
    connect: Connect, gmail: FakeGmail
) -> None:
    with connect() as pop:
        pop.dele(1)
        gmail.fail_next("pop", "RSET", "drop_before")
        assert pop.rset() == b"+OK"
    assert gmail.messages(ALICE) == MESSAGES


def test_with_block_that_raises_applies_no_deletion(
    connect: Connect, gmail: FakeGmail
) -> None:
    with pytest.raises(RuntimeError), connect() as pop:
        pop.dele(1)
        raise RuntimeError("processing failed")
    assert gmail.messages(ALICE) == MESSAGES
    assert b"QUIT" not in client_lines(gmail)


def test_no_secret_in_logs_or_errors(
    connect: Connect, gmail: FakeGmail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stale = gmail.mint_token(ALICE)
    provider = MintingProvider(gmail, ALICE, first=stale)
    with connect(provider) as pop:
        gmail.google.revoke(stale)
        gmail.end_sessions(ALICE, "pop")
        pop.stat()  # reconnects: a rejected token, a refresh, a login
        with pytest.raises(poplib.error_proto) as info:
            pop.pass_("hunter2")
    printed = caplog.text + str(info.value) + repr(info.value.args)
    for token in provider.issued:
        assert token not in printed
        assert xoauth2_string(ALICE, token) not in printed
    assert "ya29" not in printed


# -- hostile servers (the scripts of test_hostile_pop) --------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"), hosts=("127.0.0.1",))


def hostile(
    style: str,
    pki: PKI,
    script: Callable[[Peer], None],
    operation: Callable[[Any], Any] | None = None,
    *,
    stls: bool = False,
    limits: Limits | None = None,
    mechanism: str = "XOAUTH2",
    server_context: Any = None,
) -> tuple[Outcome, list[bytes]]:
    """Run a client of ``style`` against ``script``, bounded; check what leaked."""
    context = server_context or pki.server_context()
    with serving(script, context, implicit=not stls) as server:

        def call() -> Any:
            loop = asyncio.new_event_loop() if style == "async" else None
            try:
                pop = new_client(
                    style,
                    loop,
                    USER,
                    lambda: TOKEN,
                    "127.0.0.1",
                    server.port,
                    starttls=stls,
                    ssl_context=pki.client_context(),
                    timeout=5.0,
                    mechanism=mechanism,
                    backoff=Backoff(attempts=1, sleep=lambda _: None),
                    limits=limits,
                )
                try:
                    return operation(pop) if operation else pop.getwelcome()
                finally:
                    pop.close()
            finally:
                if loop is not None:
                    loop.run_until_complete(loop.shutdown_default_executor())
                    loop.close()

        outcome = attack(call, seconds=10)
    assert_no_secret(outcome, secrets(server.port))
    if isinstance(outcome.error, Error):
        assert isinstance(outcome.error, poplib.error_proto), outcome.error
    return outcome, server.received


def raised(outcome: Outcome, cls: type[BaseException]) -> BaseException:
    assert isinstance(outcome.error, cls), repr(outcome.error)
    return outcome.error


@pytest.mark.parametrize("stls", [False, True], ids=["tls", "stls"])
def test_a_greeting_that_is_not_pop3_is_a_protocol_error(
    style: str, pki: PKI, stls: bool
) -> None:
    outcome, received = hostile(
        style, pki, from_the_start(lambda p: p.send(b"* OK IMAP4rev1"))(stls), stls=stls
    )
    assert type(raised(outcome, ProtocolError)) is POPProtocolError
    assert not received


def test_a_trickling_reply_times_out(style: str, pki: PKI) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK message follows\r\nSubject: hi\r\n")
        peer.trickle(b"slow body line\r\n")

    outcome, _ = hostile(
        style, pki, logged_in(then)(False), lambda pop: pop.retr(1), limits=QUICK
    )
    error = raised(outcome, Timeout)
    assert type(error) is POPTimeout
    assert "response_seconds" in str(error)
    assert outcome.seconds < 3


def test_an_endless_multiline_reply_is_cut_within_small_limits(
    style: str, pki: PKI
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"RETR")
        peer.send(b"+OK message follows")
        peer.flood(b"a line of a message that never ends" * 3 + b"\r\n")

    outcome, _ = hostile(
        style, pki, logged_in(then)(False), lambda pop: pop.retr(1), limits=SMALL
    )
    assert "literal_bytes" in str(raised(outcome, LimitExceeded))
    assert outcome.peak_bytes < 4 * MiB


def test_a_line_without_end_is_cut_at_line_bytes(style: str, pki: PKI) -> None:
    outcome, _ = hostile(
        style,
        pki,
        from_the_start(lambda p: p.flood(b"+OK ready\r"))(False),
        limits=SMALL,
    )
    raised(outcome, LimitExceeded)
    assert outcome.peak_bytes < 2 * MiB


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_continuations_during_auth_are_bounded(
    style: str, pki: PKI, mechanism: str
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.send(b"-ERR unknown command")  # the one-line form refused
        expect(peer, b"AUTH ")
        while True:
            peer.send(b"+ ")
            peer.line()

    outcome, received = hostile(style, pki, at_auth(then)(False), mechanism=mechanism)
    assert type(raised(outcome, ProtocolError)) is POPProtocolError
    assert received[-1] == (b"" if mechanism == "XOAUTH2" else b"AQ==")


def test_a_refusal_that_echoes_the_secret_leaks_nothing(style: str, pki: PKI) -> None:
    def then(peer: Peer) -> None:
        while True:
            line = expect(peer, b"AUTH ")
            peer.send(b"-ERR [AUTH] rejected: " + line)

    outcome, _ = hostile(style, pki, at_auth(then)(False))
    error = raised(outcome, AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed)
    assert "<redacted>" in error.server_text


def test_replies_out_of_step_are_a_protocol_error(style: str, pki: PKI) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"AUTH ")
        peer.send(b"+OK Welcome.\r\n+OK 3 300")  # STAT answered in advance
        peer.hang()

    outcome, received = hostile(
        style, pki, at_auth(then)(False), lambda pop: pop.stat()
    )
    assert type(raised(outcome, ProtocolError)) is POPProtocolError
    assert b"STAT" not in received


def test_plaintext_injected_after_stls_is_refused(style: str, pki: PKI) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(b"+OK Begin TLS\r\n+OK Welcome.")  # one write: one segment
        peer.hang()

    outcome, _ = hostile(style, pki, plain(then)(True), stls=True)
    assert "after its answer to STLS" in str(raised(outcome, InsecureConnection))


@pytest.mark.parametrize(
    "answer",
    [b"-ERR [SYS/PERM] no TLS for you", b"+ go ahead", b"\x16\x03\x01 not POP3"],
    ids=["err", "continuation", "garbage"],
)
def test_an_odd_answer_to_stls_sends_no_token(
    style: str, pki: PKI, answer: bytes
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(answer)

    outcome, received = hostile(style, pki, plain(then)(True), stls=True)
    assert type(raised(outcome, InsecureConnection)) is POPInsecureConnection
    assert received == [b"CAPA", b"STLS"]


def test_a_broken_handshake_after_stls_is_insecure(style: str, pki: PKI) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"CAPA")
        peer.send(CAPA_STLS)
        expect(peer, b"STLS")
        peer.send(b"+OK Begin TLS")
        peer.send(b"this is not a TLS record at all\r\n" * 10)
        peer.close()

    outcome, _ = hostile(style, pki, plain(then)(True), stls=True)
    raised(outcome, InsecureConnection)


def test_a_certificate_from_another_ca_sends_no_token(
    style: str, pki: PKI, tmp_path: Path
) -> None:
    other = make_pki(tmp_path, hosts=("127.0.0.1",)).server_context()
    outcome, received = hostile(
        style, pki, logged_in(lambda peer: None)(False), server_context=other
    )
    raised(outcome, InsecureConnection)
    assert not [line for line in received if line.startswith(b"AUTH")]


@pytest.mark.parametrize(
    "answer",
    [
        lambda peer: peer.send(b"HTTP/1.1 200 OK"),
        lambda peer: peer.trickle(b"+OK bye"),
        lambda peer: peer.flood(b"+OK "),
        Peer.close,
    ],
    ids=["garbage", "trickle", "flood", "closed"],
)
def test_deletions_are_never_reported_applied_without_ok(
    style: str, pki: PKI, answer: Callable[[Peer], None]
) -> None:
    def then(peer: Peer) -> None:
        expect(peer, b"DELE 1")
        peer.send(b"+OK marked")
        expect(peer, b"QUIT")
        answer(peer)

    def delete(pop: Any) -> object:
        pop.dele(1)
        return pop.quit()

    limits = Limits(line_bytes=MiB, response_seconds=0.5)
    outcome, _ = hostile(style, pki, logged_in(then)(False), delete, limits=limits)
    error = raised(outcome, ConnectionLost)
    assert isinstance(error, ConnectionLost) and error.outcome_unknown
    assert "may not have been applied" in str(error)
    assert outcome.peak_bytes < 4 * MiB


def test_the_greeting_script_helpers_match(style: str, pki: PKI) -> None:
    # A plain login then STAT over STLS: the whole happy path of the scripts.
    def script(peer: Peer) -> None:
        greet(peer, True)
        expect(peer, b"AUTH ")
        peer.send(b"+OK Welcome.")
        expect(peer, b"STAT")
        peer.send(b"+OK 2 320")

    outcome, received = hostile(style, pki, script, lambda pop: pop.stat(), stls=True)
    assert outcome.error is None and outcome.result == (2, 320)
    assert received[:3] == [b"CAPA", b"STLS", b"CAPA"]
