"""gmail_xoauth2.IMAP4 at the edges of a session: after logout, CLOSE, timeouts."""

from __future__ import annotations

import base64
import imaplib
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest

from gmail_xoauth2 import errors, sasl
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.imap import IMAP4
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

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


def connect(
    gmail: FakeGmail, clock: ManualClock, timeout: float = 10, **kwargs: object
) -> IMAP4:
    return IMAP4(
        ALICE,
        gmail.token_provider(ALICE, clock=clock),
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff(sleep=lambda _: None),
        timeout=timeout,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def imap(gmail: FakeGmail, clock: ManualClock) -> Iterator[IMAP4]:
    m = connect(gmail, clock)
    yield m
    m.logout()


def verbs(gmail: FakeGmail) -> list[bytes]:
    out = []
    for line in gmail.transcript("imap"):
        parts = line.data.split(b" ")
        if line.direction == "C" and len(parts) > 1:
            out.append(parts[1].upper())
    return out


# --- after logout() the object is closed, as imaplib's is ---------------------


def test_commands_after_logout_raise_and_open_no_new_connection(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with connect(gmail, clock) as m:
        m.select("INBOX")
    assert m.state == "LOGOUT"
    with pytest.raises(imaplib.IMAP4.error, match="LOGOUT"):
        m.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        m.noop()
    with pytest.raises(imaplib.IMAP4.error, match="LOGOUT"), m.idle():
        pass  # pragma: no cover
    assert gmail.connection_count("imap") == 1


def test_logout_after_the_server_ended_the_session_opens_no_connection(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    m = connect(gmail, clock)
    gmail.end_sessions(ALICE, "imap")
    assert m.logout()[0] == "BYE"
    assert m.state == "LOGOUT"
    assert gmail.connection_count("imap") == 1


# --- CLOSE and UNSELECT on a session that ended ---------------------------------


def test_close_on_an_ended_session_reselects_then_closes_once(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.deliver(ALICE, message(1))
    gmail.deliver(ALICE, message(2))
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    gmail.end_sessions(ALICE, "imap")
    typ, _ = imap.close()
    assert typ == "OK"
    assert imap.state == "AUTH"
    # CLOSE did what it was asked for (RFC 3501 6.4.2: expunge), once.
    assert gmail.messages(ALICE) == [message(2)]
    assert verbs(gmail).count(b"CLOSE") == 1
    # The closed mailbox is not selected again by a later reconnect.
    gmail.end_sessions(ALICE, "imap")
    assert imap.noop()[0] == "OK"
    assert imap.state == "AUTH"
    assert verbs(gmail)[-1] == b"NOOP"
    assert verbs(gmail).count(b"SELECT") == 2


def test_unselect_on_an_ended_session_succeeds(gmail: FakeGmail, imap: IMAP4) -> None:
    imap.select("INBOX", readonly=True)
    gmail.end_sessions(ALICE, "imap")
    assert imap.unselect()[0] == "OK"
    assert imap.state == "AUTH"


def test_close_cut_off_after_sending_forgets_the_mailbox(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    imap.select("INBOX")
    gmail.fail_next("imap", "CLOSE", "drop_after")
    with pytest.raises(errors.ConnectionLost) as info:
        imap.close()
    assert info.value.outcome_unknown is True
    assert imap.state == "AUTH"
    gmail.end_sessions(ALICE, "imap")
    assert imap.noop()[0] == "OK"
    assert imap.state == "AUTH"  # INBOX was not selected again behind our back


# --- timeouts -------------------------------------------------------------------


def test_timeout_after_append_was_sent_says_the_outcome_is_unknown(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    m = connect(gmail, clock, timeout=0.3)
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
    gmail: FakeGmail, clock: ManualClock
) -> None:
    m = connect(gmail, clock, timeout=0.3)
    release = gmail.hold_next("imap", "NOOP")
    try:
        with pytest.raises(errors.Timeout) as info:
            m.noop()
    finally:
        release.set()
    assert "may or may not" not in str(info.value)
    assert not info.value.outcome_unknown
    assert m.noop()[0] == "OK"  # the next command reconnects
    m.logout()


# --- secrets at the highest debug level, both mechanisms, a rejected token ------


class FirstRejected:
    """Hands out a token the server rejects, then a good one on force_refresh."""

    def __init__(self, gmail: FakeGmail) -> None:
        self.gmail = gmail
        self.tokens = ["ya29.rejected-secret-token"]

    def token(self, *, force_refresh: bool = False) -> str:
        if force_refresh:
            self.tokens.append(self.gmail.mint_token(ALICE))
        return self.tokens[-1]


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_no_secret_in_debug_output_with_a_rejected_then_refreshed_token(
    gmail: FakeGmail,
    clock: ManualClock,
    mechanism: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(imaplib, "Debug", 5)
    tokens = FirstRejected(gmail)
    m = IMAP4(
        ALICE,
        tokens,
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        timeout=10,
        mechanism=mechanism,
    )
    m.select("INBOX")
    m.print_log()
    m.logout()
    out, err = capfd.readouterr()
    captured = out + err + caplog.text + repr(m)
    assert "AUTHENTICATE" in captured and "redacted" in captured
    assert len(tokens.tokens) == 2
    for token in tokens.tokens:
        raw = (
            sasl.xoauth2_response(ALICE, token)
            if mechanism == "XOAUTH2"
            else sasl.oauthbearer_response(
                ALICE, token, host=gmail.host, port=gmail.imap_port
            )
        )
        for secret in (token, token[5:], base64.b64encode(raw).decode()):
            assert secret not in captured


# --- the 24-hour cap, for tokens whose expiry is unknown ---------------------------


def test_session_is_replaced_before_gmails_24_hour_limit_without_a_token_expiry(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    token = gmail.mint_token(ALICE, ttl=3 * 24 * 3600)
    m = IMAP4(
        ALICE,
        lambda: token,  # a bare callable: no expiry known, only the session cap
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        timeout=10,
    )
    m.select("INBOX", readonly=True)
    clock.advance(timedelta(hours=23))
    assert m.noop()[0] == "OK"
    assert m.reconnects == 0
    clock.advance(timedelta(minutes=31))
    assert m.noop()[0] == "OK"
    assert m.reconnects == 1
    assert verbs(gmail)[-6:] == [
        b"LOGOUT",
        b"CAPABILITY",
        b"AUTHENTICATE",
        b"COMPRESS",
        b"EXAMINE",
        b"NOOP",
    ]
    assert m.state == "SELECTED" and m.is_readonly
    m.logout()


# --- commands that must never run twice -----------------------------------------

ONCE: dict[str, tuple[str, object]] = {
    # id: (the verb the fake sees, how to send it)
    "COPY": ("COPY", lambda m, uid: m.copy("1", "Work")),
    "MOVE": ("MOVE", lambda m, uid: m._simple_command("MOVE", "1", "Work")),
    "UID COPY": ("UID COPY", lambda m, uid: m.uid("COPY", uid, "Work")),
    "UID MOVE": ("UID MOVE", lambda m, uid: m.uid("MOVE", uid, "Work")),
    "UID EXPUNGE": ("UID EXPUNGE", lambda m, uid: m.uid("EXPUNGE", uid)),
    "EXPUNGE": ("EXPUNGE", lambda m, uid: m.expunge()),
    "CREATE": ("CREATE", lambda m, uid: m.create("Other")),
    "DELETE": ("DELETE", lambda m, uid: m.delete("Work")),
    "RENAME": ("RENAME", lambda m, uid: m.rename("Work", "Play")),
    "xatom": ("ID", lambda m, uid: m.xatom("ID", "NIL")),
}


@pytest.mark.parametrize("name", list(ONCE))
def test_command_cut_off_after_sending_is_never_sent_again(
    gmail: FakeGmail, imap: IMAP4, name: str
) -> None:
    uid = str(gmail.deliver(ALICE, message(1)))
    assert imap.create("Work")[0] == "OK"
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    verb, send = ONCE[name]
    gmail.fail_next("imap", verb, "drop_after")
    before = len(gmail.transcript("imap"))
    with pytest.raises(errors.ConnectionLost) as info:
        send(imap, uid)  # type: ignore[operator]
    assert info.value.outcome_unknown is True
    assert "not sent again" in str(info.value)
    words = verb.encode().split()
    sent = [
        line.data
        for line in gmail.transcript("imap")[before:]
        if line.direction == "C"
        and line.data.upper().split(b" ")[1 : 1 + len(words)] == words
    ]
    assert len(sent) == 1, sent
    # The object stays usable, on a new session, with INBOX selected again.
    assert imap.reconnects == 1
    assert imap.state == "SELECTED"
    assert imap.noop()[0] == "OK"


def test_mailbox_gone_after_reconnect_leaves_the_state_auth(
    gmail: FakeGmail, clock: ManualClock, imap: IMAP4
) -> None:
    assert imap.create("Work")[0] == "OK"
    imap.select("Work")
    with connect(gmail, clock) as other:
        assert other.delete("Work")[0] == "OK"
    gmail.end_sessions(ALICE, "imap")
    with pytest.raises(errors.ConnectionLost, match="could not select Work again"):
        imap.noop()
    # The new session is up, with no mailbox selected: say so, as imaplib would.
    assert imap.state == "AUTH"
    with pytest.raises(imaplib.IMAP4.error, match="illegal in state AUTH"):
        imap.fetch("1", "(FLAGS)")
    assert imap.noop()[0] == "OK"
    assert imap.reconnects == 1


def test_store_cut_off_in_a_mailbox_that_changed_says_it_was_sent_once(
    gmail: FakeGmail, imap: IMAP4
) -> None:
    gmail.deliver(ALICE, message(1))
    imap.select("INBOX")
    gmail.deliver(ALICE, message(2))  # the client has not heard of it
    gmail.fail_next("imap", "STORE", "drop_after")
    with pytest.raises(errors.ConnectionLost, match="EXISTS 1 -> 2") as info:
        imap.store("1", "+FLAGS", "(\\Flagged)")
    # It reached the server (and was carried out there): not "was not sent".
    assert info.value.outcome_unknown is True
    assert "not sent again" in str(info.value)
    assert verbs(gmail).count(b"STORE") == 1
