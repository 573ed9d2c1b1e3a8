"""IMAP4.watch(): every new message once, in UID order, through session ends,
outages of any length and UIDVALIDITY changes; stoppable from another thread.

Time is the fake Gmail's ManualClock: backoff waits and quiet IDLE waits move
it instead of passing, so a ten-minute outage or a whole day take no time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from _outage import OutageProxy

from gmail_xoauth2 import Backoff, NewMessage, UIDValidityChanged, Watcher
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"


def message(n: int) -> bytes:
    return f"From: bob@example.com\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


def connect(gmail: FakeGmail, clock: ManualClock, port: int | None = None) -> IMAP4:
    return IMAP4(
        ALICE,
        gmail.token_provider(ALICE, clock=clock),
        gmail.host,
        port or gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff(sleep=lambda _: None),
        timeout=10,
    )


@pytest.fixture
def imap(gmail: FakeGmail, clock: ManualClock) -> Iterator[IMAP4]:
    m = connect(gmail, clock)
    yield m
    m.logout()


def verbs(gmail: FakeGmail) -> list[bytes]:
    """The verb of every command the client sent (UID commands as b"UID SEARCH")."""
    out = []
    for line in gmail.transcript("imap"):
        if line.direction != "C":
            continue
        parts = line.data.split(b" ")
        if len(parts) < 2:
            out.append(parts[0].upper())
        elif parts[1].upper() == b"UID" and len(parts) > 2:
            out.append(b"UID " + parts[2].upper())
        else:
            out.append(parts[1].upper())
    return out


def forever(clock: ManualClock, slept: list[float] | None = None) -> Backoff:
    """Backoff.forever() whose waits move the clock instead of passing."""

    def sleep(seconds: float) -> None:
        if slept is not None:
            slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    return Backoff.forever(sleep=sleep)


def test_reports_new_mail_once_in_uid_order_not_what_was_there(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock
) -> None:
    gmail.deliver(ALICE, message(0))  # there before the watch: not news
    watcher = imap.watch(backoff=forever(clock))
    assert isinstance(watcher, Watcher)
    first = gmail.deliver(ALICE, message(1))
    second = gmail.deliver(ALICE, message(2))
    got = [next(watcher), next(watcher)]
    validity = imap._box.uidvalidity
    assert got == [NewMessage(first, validity), NewMessage(second, validity)]
    # Between items the connection is free: read the message.
    typ, data = imap.uid("FETCH", str(first), "(BODY.PEEK[TEXT])")
    assert typ == "OK" and b"body 1" in data[0][1]
    third = gmail.deliver(ALICE, message(3))
    assert next(watcher) == NewMessage(third, validity)
    assert watcher.last_uid == third


def test_resumes_after_the_uid_a_previous_run_saved(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock
) -> None:
    uids = [gmail.deliver(ALICE, message(n)) for n in range(3)]
    imap.select("INBOX")
    validity = imap._box.uidvalidity
    watcher = imap.watch(
        since_uid=uids[0], uidvalidity=validity, backoff=forever(clock)
    )
    assert [next(watcher).uid for _ in range(2)] == uids[1:]  # type: ignore[union-attr]


def test_a_different_uidvalidity_is_reported_not_replayed(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock
) -> None:
    for n in range(3):
        gmail.deliver(ALICE, message(n))
    watcher = imap.watch(since_uid=1, uidvalidity=999_999, backoff=forever(clock))
    event = next(watcher)
    assert isinstance(event, UIDValidityChanged)
    assert (event.mailbox, event.old) == ("INBOX", 999_999)
    assert event.new == imap._box.uidvalidity
    # Messages already there are not reported as new under the new numbering.
    fresh = gmail.deliver(ALICE, message(9))
    assert next(watcher) == NewMessage(fresh, event.new)


def test_session_ends_and_token_refreshes_lose_and_repeat_nothing(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock
) -> None:
    watcher = imap.watch(backoff=forever(clock))
    expected, seen = [], []
    for round_ in range(4):
        expected.append(gmail.deliver(ALICE, message(round_)))
        seen.append(next(watcher).uid)  # type: ignore[union-attr]
        gmail.end_sessions(ALICE, "imap")  # Gmail's "Session expired"
        expected.append(gmail.deliver(ALICE, message(100 + round_)))  # while down
        clock.advance(timedelta(minutes=50))  # and the token expires meanwhile
        seen.append(next(watcher).uid)  # type: ignore[union-attr]
    assert seen == expected
    assert imap.reconnects >= 4


def test_a_ten_minute_outage_with_mail_arriving_during_it(
    gmail: FakeGmail, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = OutageProxy((gmail.host, gmail.imap_port))
    slept: list[float] = []
    back_at = clock() + timedelta(minutes=10)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))
        if clock() >= back_at and not proxy.is_up:
            proxy.up()

    try:
        imap = connect(gmail, clock, proxy.port)
        watcher = imap.watch(backoff=Backoff.forever(sleep=sleep, cap=60.0))
        first = gmail.deliver(ALICE, message(1))
        assert next(watcher).uid == first  # type: ignore[union-attr]
        proxy.down()  # every connection cut, every new one refused
        during = [gmail.deliver(ALICE, message(n)) for n in (2, 3)]
        with caplog.at_level(logging.WARNING, logger="gmail_xoauth2"):
            got = [next(watcher).uid for _ in during]  # type: ignore[union-attr]
        assert got == during
        assert sum(slept) >= 10 * 60
        waits = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(waits) == len(slept)  # every wait logged once
        assert all("unavailable" in r.getMessage() for r in waits)
        after = gmail.deliver(ALICE, message(4))
        assert next(watcher).uid == after  # type: ignore[union-attr]
        watcher.stop()
        assert list(watcher) == []
        imap.logout()
    finally:
        proxy.close()


def test_stop_from_another_thread_ends_an_idle_wait_at_once(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = imap.watch(backoff=forever(clock))
    events: list[object] = []
    idling = threading.Event()
    real_wait = imap.wait_readable

    def wait_readable(timeout: float | None) -> bool:
        idling.set()  # the watcher is about to block, in IDLE
        return real_wait(timeout)

    monkeypatch.setattr(imap, "wait_readable", wait_readable)
    thread = threading.Thread(target=lambda: events.extend(watcher))
    thread.start()
    assert idling.wait(10)
    watcher.stop()
    thread.join(timeout=1.0)
    assert not thread.is_alive(), "stop() did not end the watch within a second"
    assert events == []
    assert verbs(gmail)[-2:] == [b"IDLE", b"DONE"]
    assert imap.noop()[0] == "OK"  # the connection is usable afterwards


def test_a_quiet_day_costs_one_idle_per_27_minutes_and_one_per_session(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = imap.watch(backoff=forever(clock))
    end = clock() + timedelta(days=1)
    waits: list[float] = []

    def wait_readable(timeout: float | None) -> bool:
        # Nothing arrives all day: the wait moves the clock instead.
        assert timeout is not None, "a watch must wake up to renew IDLE"
        waits.append(timeout)
        clock.advance(timedelta(seconds=timeout))
        if clock() >= end:
            watcher.stop()
        return False

    monkeypatch.setattr(imap, "wait_readable", wait_readable)
    assert list(watcher) == []
    seen = verbs(gmail)
    sessions = seen.count(b"AUTHENTICATE")
    idles = seen.count(b"IDLE")
    # One-hour tokens: a new session about every hour (plus the first one).
    assert 24 <= sessions <= 26
    assert idles <= (24 * 60) // 27 + sessions
    assert seen.count(b"UID SEARCH") == 1  # the first look, nothing after
    assert seen.count(b"NOOP") == 0
    print(
        f"quiet day: {sessions} sessions, {idles} IDLE, {seen.count(b'DONE')} DONE, "
        f"{seen.count(b'SELECT')} SELECT, {seen.count(b'LOGOUT')} LOGOUT, "
        f"{len(seen)} commands in all"
    )


def test_polls_with_noop_when_the_server_has_no_idle(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    imap.capabilities = tuple(c for c in imap.capabilities if c != "IDLE")
    watcher = imap.watch(backoff=forever(clock), poll=0.001)
    real_noop = imap.noop
    noops: list[int] = []

    def noop() -> tuple[str, list[bytes]]:
        noops.append(1)
        if len(noops) == 3:  # mail arrives between the second and third poll
            noops.append(gmail.deliver(ALICE, message(1)))
        return real_noop()

    monkeypatch.setattr(imap, "noop", noop)
    event = next(watcher)
    assert isinstance(event, NewMessage) and event.uid == noops[-1]
    watcher.stop()
    assert list(watcher) == []
    seen = verbs(gmail)
    assert b"IDLE" not in seen
    assert seen.count(b"NOOP") == 3
    assert seen.count(b"UID SEARCH") == 2  # the first look, then after the EXISTS


def test_a_server_announcing_growth_on_every_search_does_not_loop_the_watch(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from _hostile import TOKEN, USER, Peer, attack, serving

    from gmail_xoauth2 import StaticTokenProvider
    from gmail_xoauth2.testing._pki import make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"), hosts=("127.0.0.1",))
    searches: list[bytes] = []

    def script(peer: Peer) -> None:
        peer.send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE] ready")
        peer.send(peer.tag() + b" OK authenticated")
        tag = peer.tag()
        peer.send(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok")
        peer.send(tag + b" OK [READ-WRITE] SELECT completed")
        exists = 1
        while True:
            line = peer.line()
            tag, verb = line.split(b" ")[:2]
            if verb == b"IDLE":
                peer.close()  # the watch went to wait: enough
            searches.append(line)
            exists += 1  # "grows" on every search, with no new UID
            peer.send(b"* SEARCH 1\r\n* %d EXISTS" % exists)
            peer.send(tag + b" OK SEARCH completed")

    with serving(script, pki.server_context()) as server:

        def run() -> object:
            imap = IMAP4(
                USER,
                StaticTokenProvider(TOKEN),
                "127.0.0.1",
                server.port,
                ssl_context=pki.client_context(),
                timeout=5,
                backoff=Backoff(attempts=0, sleep=lambda _: None),
            )
            return next(imap.watch())

        outcome = attack(run, seconds=15)
    # The first look, then one more because the mailbox grew; then IDLE.
    assert len(searches) == 2, searches
    assert outcome.error is not None  # the server hung up during IDLE
