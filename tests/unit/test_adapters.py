"""GmailMailBox: imap_tools' real MailBox API on IMAP4, against the fake Gmail."""

from __future__ import annotations

import imaplib
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from imap_tools import AND

from gmail_xoauth2 import errors
from gmail_xoauth2._backoff import Backoff
from gmail_xoauth2.adapters import GmailMailBox, _raw_line
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
TRASH = "[Gmail]/Trash"


def message(n: int) -> bytes:
    return (
        f"From: bob@example.com\r\nTo: {ALICE}\r\nSubject: note {n}\r\n"
        f"Message-ID: <note-{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


class Recording:
    """A token provider that records every token it hands out."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.tokens: list[str] = []

    @property
    def expiry(self) -> object:
        return getattr(self.inner, "expiry", None)

    def token(self, *, force_refresh: bool = False) -> str:
        value: str = self.inner.token(force_refresh=force_refresh)  # type: ignore[attr-defined]
        self.tokens.append(value)
        return value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        for n in range(1, 6):
            fake.deliver(ALICE, message(n))
        yield fake


@pytest.fixture
def provider(gmail: FakeGmail, clock: ManualClock) -> Recording:
    return Recording(gmail.token_provider(ALICE, clock=clock))


def open_mailbox(
    gmail: FakeGmail, tokens: object, clock: ManualClock, **kwargs: object
) -> GmailMailBox:
    return GmailMailBox(
        ALICE,
        tokens,  # type: ignore[arg-type]
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        clock=clock,
        backoff=Backoff(attempts=3, sleep=lambda _: None),
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def mailbox(
    gmail: FakeGmail, provider: Recording, clock: ManualClock
) -> Iterator[GmailMailBox]:
    with open_mailbox(gmail, provider, clock) as mb:
        yield mb


def sent(gmail: FakeGmail) -> list[tuple[int, bytes]]:
    """(connection, command without its tag) for every command the client sent."""
    out = []
    for line in gmail.transcript("imap"):
        if line.direction == "C":
            tag, space, command = line.data.partition(b" ")
            out.append((line.conn_id, command if space else tag))  # DONE: no tag
    return out


def verbs(gmail: FakeGmail) -> list[bytes]:
    return [command.split(b" ", 2)[0] for _, command in sent(gmail)]


# --- login ----------------------------------------------------------------------


def test_login_is_one_authenticate_then_the_initial_folder(
    gmail: FakeGmail, mailbox: GmailMailBox
) -> None:
    seen = verbs(gmail)
    assert seen[:2] == [b"CAPABILITY", b"AUTHENTICATE"]
    assert seen.count(b"AUTHENTICATE") == 1
    assert seen[-1] == b"SELECT"
    assert sent(gmail)[1][1].startswith(b"AUTHENTICATE XOAUTH2 ")
    assert mailbox.login_result[0] == "OK"
    assert mailbox.folder.get() == "INBOX"
    assert mailbox.client.state == "SELECTED"


def test_xoauth2_and_login_keep_mailbox_code_working_without_a_second_authenticate(
    gmail: FakeGmail, provider: Recording, clock: ManualClock
) -> None:
    with open_mailbox(gmail, provider, clock, initial_folder=None) as mb:
        assert mb.client.state == "AUTH"
        assert mb.xoauth2(ALICE.upper(), "not sent", initial_folder=TRASH) is mb
        assert mb.folder.get() == TRASH
        assert mb.login(ALICE, "not sent either") is mb
        with pytest.raises(errors.ConfigurationError, match="not bob@"):
            mb.xoauth2("bob@example.com", "token")
    assert verbs(gmail).count(b"AUTHENTICATE") == 1
    transcript = b"\n".join(line.data for line in gmail.transcript("imap"))
    assert b"not sent" not in transcript


def test_a_rejected_token_raises_authentication_failed(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    with pytest.raises(errors.AuthenticationFailed) as info:
        open_mailbox(gmail, lambda: "ya29.not-a-real-token", clock)
    assert isinstance(info.value, imaplib.IMAP4.error)
    assert info.value.status is not None  # decoded from the error challenge
    assert "ya29.not-a-real-token" not in str(info.value)


# --- the MailBox API ------------------------------------------------------------


def test_fetch_flag_move_and_delete(gmail: FakeGmail, mailbox: GmailMailBox) -> None:
    subjects = [msg.subject for msg in mailbox.fetch(mark_seen=False)]
    assert subjects == [f"note {n}" for n in range(1, 6)]
    assert mailbox.uids(AND(seen=False)) == ["1", "2", "3", "4", "5"]

    mailbox.flag(["1", "2"], "\\Seen", True)
    assert mailbox.uids(AND(seen=True)) == ["1", "2"]

    mailbox.move(["3"], TRASH)
    assert gmail.messages(ALICE, TRASH) == [message(3)]
    mailbox.delete(["4"])
    assert mailbox.uids() == ["1", "2", "5"]

    newest = list(mailbox.fetch(limit=1, reverse=True, headers_only=True))
    assert [msg.subject for msg in newest] == ["note 5"]
    mailbox.folder.set(TRASH)
    assert [msg.subject for msg in mailbox.fetch()] == ["note 3"]


@pytest.mark.parametrize("bulk", [False, 2, True])
def test_a_session_end_during_fetch_loses_and_repeats_nothing(
    gmail: FakeGmail, mailbox: GmailMailBox, bulk: bool | int
) -> None:
    seen = []
    for msg in mailbox.fetch(bulk=bulk):
        seen.append(msg.subject)
        if len(seen) == 1:
            # Gmail's "* BYE Session expired" while imap_tools is mid-iteration.
            assert gmail.end_sessions(ALICE, "imap") == 1
    assert seen == [f"note {n}" for n in range(1, 6)]
    assert mailbox.client.reconnects == (0 if bulk is True else 1)
    # The search ran once; a FETCH was never sent twice for the same message.
    commands = [command for _, command in sent(gmail)]
    assert sum(c.startswith(b"UID SEARCH") for c in commands) == 1
    fetches = [c for c in commands if c.startswith(b"UID FETCH")]
    assert len(fetches) == len(set(fetches))


def test_a_fetch_whose_reply_was_lost_is_sent_again_on_a_new_session(
    gmail: FakeGmail, mailbox: GmailMailBox
) -> None:
    seen = []
    for msg in mailbox.fetch(mark_seen=False):
        seen.append(msg.subject)
        if len(seen) == 2:
            # The connection drops after the server carried out the next FETCH.
            gmail.fail_next("imap", "UID FETCH", "drop_after")
    assert seen == [f"note {n}" for n in range(1, 6)]
    assert mailbox.client.reconnects == 1
    repeated = [
        (conn, command)
        for conn, command in sent(gmail)
        if command.startswith(b"UID FETCH 3 ")
    ]
    assert len(repeated) == 2 and repeated[0][0] != repeated[1][0]
    assert mailbox.folder.get() == "INBOX"


def test_a_move_cut_off_is_not_sent_twice(
    gmail: FakeGmail, mailbox: GmailMailBox
) -> None:
    gmail.fail_next("imap", "UID MOVE", "drop_after")
    with pytest.raises(errors.ConnectionLost) as info:
        mailbox.move(["1"], TRASH)
    assert info.value.outcome_unknown
    assert [c for _, c in sent(gmail) if c.startswith(b"UID MOVE")] == [
        b'UID MOVE 1 "[Gmail]/Trash"'
    ]
    assert mailbox.uids() == ["2", "3", "4", "5"]  # the mailbox is usable


# --- IDLE -----------------------------------------------------------------------


def test_idle_wait_reports_mail_that_came_while_the_session_was_down(
    gmail: FakeGmail, mailbox: GmailMailBox
) -> None:
    gmail.end_sessions(ALICE, "imap")
    gmail.deliver(ALICE, message(6))
    assert mailbox.idle.wait(timeout=10) == [b"* 6 EXISTS"]
    assert mailbox.client.reconnects == 1
    assert verbs(gmail)[-2:] == [b"IDLE", b"DONE"]
    assert mailbox.uids() == ["1", "2", "3", "4", "5", "6"]


def test_idle_start_poll_stop_leaves_no_idle_on_the_wire_between_polls(
    gmail: FakeGmail, mailbox: GmailMailBox
) -> None:
    with mailbox.idle as idle:
        assert idle.poll(timeout=0.05) == []
        assert verbs(gmail)[-2:] == [b"IDLE", b"DONE"]
    with pytest.raises(ValueError, match="29 minutes"):
        mailbox.idle.poll(timeout=30 * 60)


def test_idle_responses_are_raw_lines_as_imap_tools_returns_them() -> None:
    assert _raw_line("EXISTS", [b"7"]) == b"* 7 EXISTS"
    assert _raw_line("FETCH", [b"3 (FLAGS (\\Seen))"]) == b"* 3 FETCH (FLAGS (\\Seen))"
    assert _raw_line("OK", [b"Still here"]) == b"* OK Still here"
    literal = [(b"1 (BODY[] {3}", b"abc"), b")"]
    assert _raw_line("FETCH", literal) == b"* 1 FETCH (BODY[] {3}abc)"


# --- secrets and dependencies ---------------------------------------------------


def test_no_secret_in_logs_or_debug_output(
    gmail: FakeGmail,
    provider: Recording,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    with open_mailbox(gmail, provider, clock) as mb:
        mb.client.debug = 5
        gmail.end_sessions(ALICE, "imap")  # a second login, under debug output
        assert len(list(mb.fetch(headers_only=True))) == 5
        mb.client.print_log()
        text = repr(mb) + str(mb.login_result)
    out, err = capsys.readouterr()
    captured = out + err + caplog.text + text
    assert provider.tokens
    for token in provider.tokens:
        assert token not in captured


def test_gmail_xoauth2_never_imports_imap_tools_or_imapclient() -> None:
    code = (
        "import sys, gmail_xoauth2\n"
        "from gmail_xoauth2 import IMAP4\n"
        "assert 'imap_tools' not in sys.modules, 'imap_tools'\n"
        "assert 'imapclient' not in sys.modules, 'imapclient'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_without_imap_tools_the_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['imap_tools'] = None\n"
        "from gmail_xoauth2 import ConfigurationError\n"
        "from gmail_xoauth2.adapters import GmailMailBox\n"
        "try:\n"
        "    GmailMailBox('you@gmail.com', lambda: 'token')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert "pip install 'gmail-xoauth2[imap-tools]'" in result.stdout
    assert result.stdout.startswith("GmailMailBox needs imap_tools")
