"""IMAP4.idle(): Python 3.14's interface, renewed in time, across session ends."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from datetime import timedelta

import pytest

from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

# The fake Gmail's IMAP server is a separate module; skip until it is there.
pytest.importorskip("gmail_xoauth2.testing.imap_server")

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


@pytest.fixture
def imap(gmail: FakeGmail, clock: ManualClock) -> Iterator[IMAP4]:
    m = IMAP4(
        ALICE,
        gmail.token_provider(ALICE, clock=clock),
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff(sleep=lambda _: None),
        timeout=10,
    )
    m.select("INBOX")
    yield m
    m.logout()


def verbs(gmail: FakeGmail) -> list[tuple[int, bytes]]:
    """(connection, verb) of every client command line."""
    out = []
    for line in gmail.transcript("imap"):
        parts = line.data.split(b" ")
        if line.direction == "C":
            verb = parts[1].upper() if len(parts) > 1 else parts[0].upper()
            out.append((line.conn_id, verb))
    return out


def test_idle_yields_exists_when_mail_arrives(gmail: FakeGmail, imap: IMAP4) -> None:
    with imap.idle() as idler:
        gmail.deliver(ALICE, message(1))
        assert next(idler) == ("EXISTS", [b"1"])
    assert imap.state == "SELECTED"
    seen = [verb for _, verb in verbs(gmail)]
    assert seen[-2:] == [b"IDLE", b"DONE"]
    assert imap.noop()[0] == "OK"  # the connection is usable after IDLE


def test_idle_survives_the_server_ending_the_session(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    with imap.idle() as idler:
        gmail.deliver(ALICE, message(1))
        assert next(idler) == ("EXISTS", [b"1"])
        gmail.end_sessions(ALICE, "imap")
        gmail.deliver(ALICE, message(2))
        assert next(idler) == ("EXISTS", [b"2"])
    idles = [conn for conn, verb in verbs(gmail) if verb == b"IDLE"]
    assert len(set(idles)) == 2  # IDLE again on the new connection
    assert imap.reconnects == 1


def test_idle_is_renewed_before_29_minutes(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock
) -> None:
    with imap.idle() as idler:
        clock.advance(timedelta(minutes=27))
        gmail.deliver(ALICE, message(1))
        assert next(idler) == ("EXISTS", [b"1"])
    seen = [verb for _, verb in verbs(gmail)]
    assert seen[-4:] == [b"IDLE", b"DONE", b"IDLE", b"DONE"]
    assert imap.reconnects == 0


def test_idle_duration_ends_the_iteration(gmail: FakeGmail, imap: IMAP4) -> None:
    with imap.idle(duration=0) as idler:
        assert list(idler) == []


def test_burst_collects_responses_that_arrive_together(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    with imap.idle() as idler:
        gmail.deliver(ALICE, message(1))
        gmail.deliver(ALICE, message(2))
        batch = list(idler.burst(interval=0.2))
    # One EXISTS per delivery, or one for both: the last says 2 either way.
    assert {typ for typ, _ in batch} == {"EXISTS"}
    assert batch[-1] == ("EXISTS", [b"2"])


def test_commands_are_refused_while_idling(gmail: FakeGmail, imap: IMAP4) -> None:
    with imap.idle(), pytest.raises(imap.error, match="IDLING"):
        imap.noop()


# --- Python 3.14's response shape; the session deadline while idling -------------


def test_responses_are_type_and_data_list_as_python_314_yields_them(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    # imaplib 3.14: ``for typ, data in idler`` gives ('EXISTS', [b'1']); a
    # response with a literal arrives as one item, its fragments in the list.
    with imap.idle() as idler:
        gmail.deliver(ALICE, message(1))
        assert next(idler) == ("EXISTS", [b"1"])
        head = (b"1 (BODY[] {3}", b"abc")
        imap._append_untagged("FETCH", head)  # as _get_response feeds a literal
        imap._append_untagged("FETCH", b")")
        imap._append_untagged("FETCH", (b"2 (BODY[] {2}", b"de"))
        imap._append_untagged("FETCH", b")")
        assert next(idler) == ("FETCH", [head, b")"])
    # Left unread: back in untagged_responses one fragment at a time, as 3.14 does.
    assert imap.untagged_responses["FETCH"][-2:] == [(b"2 (BODY[] {2}", b"de"), b")"]


def never_woken(clock: ManualClock, waits: list[float]) -> object:
    """A wait_readable for which nothing arrives: it moves the clock instead."""

    def wait_readable(timeout: float | None) -> bool:
        assert timeout is not None, "IDLE waits forever"
        waits.append(timeout)
        assert len(waits) < 10, f"IDLE never ends: {waits}"
        clock.advance(timedelta(seconds=timeout))
        return False

    return wait_readable


def test_idle_duration_counts_the_time_spent_renewing(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 minutes with nothing arriving: one renewal at 27, then 13 more minutes.
    waits: list[float] = []
    monkeypatch.setattr(imap, "wait_readable", never_woken(clock, waits))
    with imap.idle(duration=40 * 60) as idler:
        assert list(idler) == []
    assert waits == [27 * 60, 13 * 60]
    assert [verb for _, verb in verbs(gmail)][-4:] == [
        b"IDLE",
        b"DONE",
        b"IDLE",
        b"DONE",
    ]


def test_idle_wakes_in_time_to_replace_a_session_whose_token_is_expiring(
    gmail: FakeGmail, imap: IMAP4, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One-hour tokens: the session must be replaced (politely, LOGOUT) before
    # the hour is up even though IDLE itself is renewed only every 27 minutes.
    deadline = imap._deadline.deadline
    assert deadline is not None
    waits: list[float] = []
    monkeypatch.setattr(imap, "wait_readable", never_woken(clock, waits))
    with imap.idle(duration=65 * 60) as idler:
        assert list(idler) == []
    assert imap.reconnects == 1
    first, second = sorted({conn for conn, _ in verbs(gmail)})
    old = [verb for conn, verb in verbs(gmail) if conn == first]
    assert old[-3:] == [b"IDLE", b"DONE", b"LOGOUT"]  # proactive, not a BYE
    new = [verb for conn, verb in verbs(gmail) if conn == second]
    assert new[-2:] == [b"IDLE", b"DONE"]
    assert sum(waits) == pytest.approx(65 * 60)


def test_mail_that_arrived_while_the_session_was_down_is_reported_by_idle(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    # The session ends between two IDLEs and mail arrives before the next one:
    # the reconnect's re-SELECT counts it, so IDLE itself would never say so.
    gmail.end_sessions(ALICE, "imap")
    gmail.deliver(ALICE, message(1))
    with imap.idle(duration=5) as idler:
        assert next(idler) == ("EXISTS", [b"1"])
    assert imap.reconnects == 1
    assert "EXISTS" not in imap.untagged_responses  # reported once, not twice


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Make every descriptor opened from now on 1,024 or more (past select())."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_waits_on_descriptors_above_1024(
    high_descriptors: None, gmail: FakeGmail, imap: IMAP4
) -> None:
    # A process holding hundreds of idle connections has descriptors past
    # select()'s 1,024; waiting must still work there.
    assert imap.sock.fileno() >= 1024
    with imap.idle() as idler:
        gmail.deliver(ALICE, message(1))
        assert next(idler) == ("EXISTS", [b"1"])
