"""The fake Gmail's POP3, driven by plain poplib (and curl), line for line."""

from __future__ import annotations

import base64
import pathlib
import poplib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from gmail_xoauth2.sasl import oauthbearer_string, xoauth2_string
from gmail_xoauth2.testing._mailstore import ALL_MAIL, INBOX
from gmail_xoauth2.testing._server import gmail_id
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
BOB = "bob@example.com"
CHALLENGE = base64.b64encode(
    b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'
)
FIRST = b"Subject: one\r\n\r\nfirst body\r\n.dot line\r\n"
SECOND = b"Subject: two\r\nX-Extra: yes\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        fake.deliver(ALICE, FIRST)
        fake.deliver(ALICE, SECOND)
        yield fake


def connect(gmail: FakeGmail) -> poplib.POP3_SSL:
    return poplib.POP3_SSL(gmail.host, gmail.pop_port, context=gmail.ssl_context())


def login(gmail: FakeGmail, user: str = ALICE) -> poplib.POP3_SSL:
    pop = connect(gmail)
    # poplib has no AUTH; its private _shortcmd is what every client uses.
    assert pop._shortcmd(
        "AUTH XOAUTH2 " + xoauth2_string(user, gmail.mint_token(user))
    ) == (b"+OK Welcome.")
    return pop


def server_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("pop", conn_id) if line.direction == "S"
    ]


def test_greeting_and_capa(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    try:
        assert pop.getwelcome() == (
            b"+OK Gpop ready for requests from 127.0.0.1 " + gmail_id(1).encode()
        )
        pop.capa()
    finally:
        pop.quit()
    assert server_lines(gmail)[1:] == [
        b"+OK Capability list follows",
        b"USER",
        b"RESP-CODES",
        b"EXPIRE 0",
        b"LOGIN-DELAY 300",
        b"TOP",
        b"UIDL",
        b"X-GOOGLE-RICO",
        b"SASL PLAIN XOAUTH2 OAUTHBEARER",
        b".",
        b"+OK Farewell.",
    ]


def test_auth_xoauth2_one_line(gmail: FakeGmail) -> None:
    pop = login(gmail)
    assert pop.stat() == (2, len(FIRST) + len(SECOND))
    pop.quit()


def test_auth_xoauth2_two_lines(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    try:
        assert pop._shortcmd("AUTH XOAUTH2") == b"+ "
        token = gmail.mint_token(ALICE)
        assert pop._shortcmd(xoauth2_string(ALICE, token)) == b"+OK Welcome."
    finally:
        pop.quit()


def test_auth_oauthbearer(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    try:
        ir = oauthbearer_string(ALICE, gmail.mint_token(ALICE))
        assert pop._shortcmd("AUTH OAUTHBEARER " + ir) == b"+OK Welcome."
    finally:
        pop.quit()


def _unknown(gmail: FakeGmail, clock: ManualClock) -> str:
    return "ya29.never-issued"


def _expired(gmail: FakeGmail, clock: ManualClock) -> str:
    token = gmail.mint_token(ALICE, ttl=30)
    clock.advance(30)
    return token


def _revoked(gmail: FakeGmail, clock: ManualClock) -> str:
    token = gmail.mint_token(ALICE)
    gmail.revoke(ALICE)
    return token


def _wrong_scope(gmail: FakeGmail, clock: ManualClock) -> str:
    return gmail.google.mint_access_token(
        ALICE, scopes=["https://www.googleapis.com/auth/gmail.readonly"]
    )


def _other_user(gmail: FakeGmail, clock: ManualClock) -> str:
    return gmail.mint_token(BOB)


@pytest.mark.parametrize(
    "make_token", [_unknown, _expired, _revoked, _wrong_scope, _other_user]
)
def test_bad_tokens_get_the_challenge_then_err(
    gmail: FakeGmail,
    clock: ManualClock,
    make_token: Callable[[FakeGmail, ManualClock], str],
) -> None:
    token = make_token(gmail, clock)
    pop = connect(gmail)
    try:
        # poplib cannot tell "+ <challenge>" from "+OK": both start with "+".
        assert pop._shortcmd("AUTH XOAUTH2 " + xoauth2_string(ALICE, token)) == (
            b"+ " + CHALLENGE
        )
        with pytest.raises(poplib.error_proto) as caught:
            pop._shortcmd("")
        assert caught.value.args[0] == b"-ERR [AUTH] Invalid credentials."
        with pytest.raises(poplib.error_proto):
            pop.stat()
    finally:
        pop.quit()


def test_user_pass_is_refused(gmail: FakeGmail) -> None:
    pop = connect(gmail)
    try:
        assert pop.user(ALICE) == b"+OK send PASS"
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_("secret")
        assert caught.value.args[0] == (
            b"-ERR [AUTH] Username and password not accepted."
        )
    finally:
        pop.quit()


def test_list_uidl_retr_top(gmail: FakeGmail) -> None:
    pop = login(gmail)
    try:
        assert pop.list() == (
            f"+OK 2 messages ({len(FIRST) + len(SECOND)} octets)".encode(),
            [f"1 {len(FIRST)}".encode(), f"2 {len(SECOND)}".encode()],
            len(f"1 {len(FIRST)}") + len(f"2 {len(SECOND)}") + 4,
        )
        assert pop.list(2) == f"+OK 2 {len(SECOND)}".encode()
        status = gmail.backend.store.status(ALICE, INBOX)
        uids = [f"GmailId{m.gm_msgid:x}".encode() for m in status.messages]
        assert pop.uidl()[1] == [b"1 " + uids[0], b"2 " + uids[1]]
        assert pop.uidl(1) == b"+OK 1 " + uids[0]
        response, lines, _ = pop.retr(1)
        assert response == b"+OK message follows"
        assert lines == [b"Subject: one", b"", b"first body", b".dot line"]
        assert b"..dot line" in server_lines(gmail)
        assert pop.top(2, 1)[1] == [b"Subject: two", b"X-Extra: yes", b"", b"line 1"]
        with pytest.raises(poplib.error_proto, match="no such message"):
            pop.retr(3)
        assert pop.noop() == b"+OK"
    finally:
        pop.quit()


def test_deletions_apply_only_at_quit(gmail: FakeGmail) -> None:
    pop = login(gmail)
    assert pop.dele(1) == b"+OK marked for deletion"
    with pytest.raises(poplib.error_proto, match="already deleted"):
        pop.retr(1)
    assert pop.stat() == (1, len(SECOND))
    assert gmail.messages(ALICE) == [FIRST, SECOND]
    assert pop.quit() == b"+OK Farewell."
    assert gmail.messages(ALICE) == [SECOND]
    # Like Gmail's "archive Gmail's copy": still in All Mail.
    assert gmail.messages(ALICE, ALL_MAIL) == [FIRST, SECOND]


def test_rset_and_hanging_up_keep_messages(gmail: FakeGmail) -> None:
    pop = login(gmail)
    pop.dele(1)
    assert pop.rset() == b"+OK"
    pop.dele(2)
    pop.close()  # no QUIT: no UPDATE state, nothing deleted
    pop = login(gmail)
    try:
        assert pop.stat()[0] == 2
    finally:
        pop.quit()
    assert gmail.messages(ALICE) == [FIRST, SECOND]


def test_new_mail_shows_in_the_next_session(gmail: FakeGmail) -> None:
    pop = login(gmail)
    gmail.deliver(ALICE, b"Subject: three\r\n\r\n3\r\n")
    assert pop.stat()[0] == 2
    pop.quit()
    pop = login(gmail)
    try:
        assert pop.stat()[0] == 3
    finally:
        pop.quit()


def test_session_ends_when_its_token_expires(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    pop = connect(gmail)
    try:
        token = gmail.mint_token(ALICE, ttl=600)
        pop._shortcmd("AUTH XOAUTH2 " + xoauth2_string(ALICE, token))
        pop.dele(1)
        clock.advance(599)
        assert pop.noop() == b"+OK"
        clock.advance(1)
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.noop()
    finally:
        pop.close()
    assert gmail.messages(ALICE) == [FIRST, SECOND]


def test_expire_tokens_and_end_sessions(gmail: FakeGmail) -> None:
    first, second = login(gmail), login(gmail)
    try:
        gmail.expire_tokens(ALICE)
        for pop in (first, second):
            with pytest.raises(poplib.error_proto, match="EOF"):
                pop.stat()
    finally:
        first.close()
        second.close()
    third = login(gmail)
    try:
        assert gmail.end_sessions(ALICE, "pop") == 1
        assert gmail.end_sessions(ALICE, "smtp") == 0
        with pytest.raises(poplib.error_proto, match="EOF"):
            third.stat()
    finally:
        third.close()


def test_fault_drop_before_retr(gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "RETR", "drop_before")
    pop = login(gmail)
    try:
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.retr(1)
    finally:
        pop.close()
    assert server_lines(gmail)[-1] == b"+OK Welcome."


def test_fault_drop_after_quit_still_deletes(gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "QUIT", "drop_after")
    pop = login(gmail)
    pop.dele(2)
    try:
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.quit()
    finally:
        pop.close()
    assert gmail.messages(ALICE) == [FIRST]


def test_fault_reply_on_auth(gmail: FakeGmail) -> None:
    gmail.fail_next("pop", "AUTH", "reply", line="-ERR [SYS/TEMP] System error")
    pop = connect(gmail)
    try:
        with pytest.raises(poplib.error_proto) as caught:
            pop._shortcmd("AUTH XOAUTH2 " + xoauth2_string(ALICE, "ya29.any"))
        assert caught.value.args[0] == b"-ERR [SYS/TEMP] System error"
        # The token was never looked at: the next AUTH works.
        token = gmail.mint_token(ALICE)
        assert pop._shortcmd("AUTH XOAUTH2 " + xoauth2_string(ALICE, token)) == (
            b"+OK Welcome."
        )
    finally:
        pop.quit()


def test_hold_next_delays_the_reply_not_the_command(gmail: FakeGmail) -> None:
    expunged = threading.Event()
    gmail.backend.store.add_listener(
        lambda event: expunged.set() if event.kind == "expunge" else None
    )
    release = gmail.hold_next("pop", "QUIT")
    pop = login(gmail)
    pop.dele(1)
    results: list[bytes] = []
    quitter = threading.Thread(target=lambda: results.append(pop.quit()))
    quitter.start()
    assert expunged.wait(10)
    assert gmail.messages(ALICE) == [SECOND]
    assert quitter.is_alive()
    release.set()
    quitter.join(10)
    assert results == [b"+OK Farewell."]


def test_closing_the_fake_releases_a_held_reply(clock: ManualClock) -> None:
    gmail = FakeGmail(clock=clock).start()
    try:
        release = gmail.hold_next("pop", "NOOP")
        pop = login(gmail)
        errors: list[Exception] = []

        def noop() -> None:
            try:
                pop.noop()
            except (poplib.error_proto, OSError) as exc:
                errors.append(exc)

        reader = threading.Thread(target=noop)
        reader.start()
    finally:
        gmail.close()
    reader.join(10)
    pop.close()
    assert release.is_set()
    assert not reader.is_alive()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reads_with_oauth2_bearer(
    gmail: FakeGmail, tmp_path: pathlib.Path
) -> None:
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--url",
            f"pop3s://127.0.0.1:{gmail.pop_port}/2",
            "--cacert",
            gmail.ca_file,
            "--user",
            ALICE,
            "--oauth2-bearer",
            gmail.mint_token(ALICE),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECOND
