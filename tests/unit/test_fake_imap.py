"""The fake Gmail's IMAP, driven by imaplib, IMAPClient, imap_tools and a raw socket."""

from __future__ import annotations

import base64
import imaplib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from imap_tools import MailBox
from imapclient import IMAPClient

from gmail_xoauth2.sasl import (
    oauthbearer_response,
    oauthbearer_string,
    xoauth2_response,
    xoauth2_string,
)
from gmail_xoauth2.testing._imap_fetch import parse_fetch_items, section_bytes
from gmail_xoauth2.testing._imap_parse import (
    ImapSyntaxError,
    SequenceSet,
    format_internaldate,
    parse_datetime,
    tokenize,
)
from gmail_xoauth2.testing._mailstore import ALL_MAIL, TRASH
from gmail_xoauth2.testing._server import gmail_id
from gmail_xoauth2.testing.clock import ManualClock
from gmail_xoauth2.testing.gmail import FakeGmail
from gmail_xoauth2.testing.imap_server import (
    CAPABILITIES_AUTHENTICATED,
    CAPABILITIES_PRE_AUTH,
)

ALICE = "alice@example.com"
BOB = "bob@example.com"
CHALLENGE = base64.b64encode(
    b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}'
)
INVALID = b"NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"


def message(subject: str, body: str = "hello\r\n", sender: str = BOB) -> bytes:
    return (
        f"From: Bob <{sender}>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n"
        f"\r\n{body}"
    ).encode()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2024, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def gmail(clock: ManualClock) -> Iterator[FakeGmail]:
    with FakeGmail(clock=clock) as fake:
        yield fake


@pytest.fixture
def mail(gmail: FakeGmail) -> FakeGmail:
    for subject in ("one", "two", "three"):
        gmail.deliver(ALICE, message(subject))
    return gmail


def connect(gmail: FakeGmail) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL(
        gmail.host, gmail.imap_port, ssl_context=gmail.ssl_context()
    )


def login(gmail: FakeGmail, user: str = ALICE) -> imaplib.IMAP4_SSL:
    imap = connect(gmail)
    token = gmail.mint_token(user)
    imap.authenticate("XOAUTH2", lambda _: xoauth2_response(user, token))
    return imap


def server_lines(gmail: FakeGmail, conn_id: int | None = None) -> list[bytes]:
    return [
        line.data for line in gmail.transcript("imap", conn_id) if line.direction == "S"
    ]


class Raw:
    """A bare TLS connection that sends exactly what a test writes."""

    def __init__(self, gmail: FakeGmail) -> None:
        sock = socket.create_connection((gmail.host, gmail.imap_port))
        self.sock = gmail.ssl_context().wrap_socket(sock, server_hostname=gmail.host)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data + b"\r\n")

    def line(self) -> bytes:
        return self.file.readline().removesuffix(b"\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(gmail: FakeGmail) -> Iterator[Raw]:
    conn = Raw(gmail)
    yield conn
    conn.close()


# -- the wire: greeting, capabilities, authentication --


def test_greeting_and_capabilities_are_gmails(gmail: FakeGmail) -> None:
    imap = connect(gmail)
    assert imap.welcome == (
        b"* OK Gimap ready for requests from 127.0.0.1 " + gmail_id(1).encode()
    )
    assert "AUTH=XOAUTH2" in imap.capabilities
    imap.shutdown()
    tag = gmail.transcript("imap")[1].data.split()[0]
    assert server_lines(gmail)[1:] == [
        b"* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN "
        b"X-GM-EXT-1 XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN "
        b"AUTH=OAUTHBEARER AUTH=XOAUTH",
        tag + b" OK Thats all she wrote! " + gmail_id(1).encode(),
    ]
    assert CAPABILITIES_PRE_AUTH == server_lines(gmail)[1].removeprefix(
        b"* CAPABILITY "
    )


def test_logout_says_goodbye_as_gmail(raw: Raw) -> None:
    raw.line()
    raw.send(b"z9 LOGOUT")
    assert raw.line() == b"* BYE LOGOUT Requested"
    assert raw.line() == b"z9 OK 73 good day (Success)"
    assert raw.line() == b""  # and hangs up


def test_sasl_ir_in_one_round_trip(gmail: FakeGmail, raw: Raw) -> None:
    assert raw.line().startswith(b"* OK Gimap ready")
    raw.send(
        b"a1 AUTHENTICATE XOAUTH2 "
        + xoauth2_string(ALICE, gmail.mint_token(ALICE)).encode()
    )
    assert raw.line() == b"* CAPABILITY " + CAPABILITIES_AUTHENTICATED
    assert raw.line() == b"a1 OK alice@example.com authenticated (Success)"
    raw.send(b"a2 CAPABILITY")
    assert raw.line() == b"* CAPABILITY " + CAPABILITIES_AUTHENTICATED
    assert b"SASL-IR" not in CAPABILITIES_AUTHENTICATED
    assert (
        b"UIDPLUS" in CAPABILITIES_AUTHENTICATED
        and b"MOVE" in CAPABILITIES_AUTHENTICATED
    )
    assert raw.line() == b"a2 OK Thats all she wrote! " + gmail_id(1).encode()


def test_bad_token_gets_the_challenge_then_no_after_the_empty_line(
    gmail: FakeGmail, raw: Raw
) -> None:
    raw.line()
    raw.send(b"a1 AUTHENTICATE XOAUTH2 " + xoauth2_string(ALICE, "ya29.bad").encode())
    assert raw.line() == b"+ " + CHALLENGE
    raw.send(b"")
    assert raw.line() == b"a1 " + INVALID


def test_abort_after_the_challenge_is_bad(gmail: FakeGmail, raw: Raw) -> None:
    raw.line()
    raw.send(b"a1 AUTHENTICATE XOAUTH2")
    assert raw.line() == b"+ "
    raw.send(xoauth2_string(ALICE, "ya29.bad").encode())
    assert raw.line() == b"+ " + CHALLENGE
    raw.send(b"*")
    assert raw.line() == b"a1 BAD Client aborted AUTHENTICATE command."


def test_imaplib_resending_its_token_still_gets_no(gmail: FakeGmail) -> None:
    imap = connect(gmail)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED\] Invalid"):
        imap.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, "ya29.bad"))
    imap.logout()
    client = [x.data for x in gmail.transcript("imap") if x.direction == "C"]
    # imaplib answers the challenge with its token again, as Gmail's logs show.
    assert client[2] == client[3] == xoauth2_string(ALICE, "ya29.bad").encode()
    assert b"+ " + CHALLENGE in server_lines(gmail)


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
        ALICE, scopes=["https://www.googleapis.com/auth/gmail.modify"]
    )


def _other_user(gmail: FakeGmail, clock: ManualClock) -> str:
    return gmail.mint_token(BOB)


@pytest.mark.parametrize(
    "make_token", [_unknown, _expired, _revoked, _wrong_scope, _other_user]
)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_every_bad_token_fails_alike(
    gmail: FakeGmail,
    clock: ManualClock,
    raw: Raw,
    make_token: Callable[[FakeGmail, ManualClock], str],
    mechanism: str,
) -> None:
    token = make_token(gmail, clock)
    build = xoauth2_string if mechanism == "XOAUTH2" else oauthbearer_string
    raw.line()
    raw.send(f"a1 AUTHENTICATE {mechanism} {build(ALICE, token)}".encode())
    assert raw.line() == b"+ " + CHALLENGE
    raw.send(b"")
    assert raw.line() == b"a1 " + INVALID


def test_oauthbearer_without_initial_response(gmail: FakeGmail) -> None:
    imap = connect(gmail)
    token = gmail.mint_token(ALICE)
    typ, data = imap.authenticate(
        "OAUTHBEARER", lambda _: oauthbearer_response(ALICE, token)
    )
    assert (typ, data) == ("OK", [b"alice@example.com authenticated (Success)"])
    imap.logout()


def test_login_and_plain_ask_for_an_app_password(gmail: FakeGmail, raw: Raw) -> None:
    raw.line()
    alert = (
        b"NO [ALERT] Application-specific password required: "
        b"https://support.google.com/accounts/answer/185833 (Failure)"
    )
    raw.send(b'a1 LOGIN alice@example.com "secret"')
    assert raw.line() == b"a1 " + alert
    raw.send(b"a2 AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0secret"))
    assert raw.line() == b"a2 " + alert


def test_commands_before_login_and_unknown_commands(gmail: FakeGmail, raw: Raw) -> None:
    raw.line()
    raw.send(b"a1 SELECT INBOX")
    assert raw.line() == b"a1 BAD Unknown command " + gmail_id(1).encode()
    raw.send(b'a2 FETCH "1')
    assert raw.line() == b"a2 BAD Could not parse command"
    raw.send(b"* NOOP")
    assert raw.line() == b"* BAD [CLIENTBUG] Invalid tag"
    raw.send(
        b"a4 AUTHENTICATE XOAUTH2 "
        + xoauth2_string(ALICE, gmail.mint_token(ALICE)).encode()
    )
    raw.line(), raw.line()
    raw.send(b"a5 FETCH 1 (UID)")
    assert raw.line() == b"a5 BAD Command received in Invalid state."
    raw.send(b"a6 BOGUS")
    assert raw.line() == b"a6 BAD Unknown command " + gmail_id(1).encode()
    raw.send(b"a3 ID NIL")
    assert raw.line().startswith(b'* ID ("name" "GImap" "vendor" "Google, Inc."')
    assert raw.line() == b"a3 OK Success"


# -- session end --


def test_session_ends_when_the_token_expires_on_the_clock(
    gmail: FakeGmail, clock: ManualClock
) -> None:
    imap = connect(gmail)
    token = gmail.mint_token(ALICE, ttl=600)
    imap.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, token))
    imap.select()
    clock.advance(599)
    assert imap.noop()[0] == "OK"
    clock.advance(1)  # the server says BYE and hangs up now, not at the next command
    assert server_lines(gmail)[-1] == b"* BYE Session expired, please login again."
    with pytest.raises(
        imaplib.IMAP4.abort, match="Session expired, please login again"
    ):
        imap.noop()
    imap.shutdown()


def test_end_sessions_and_too_many_connections(gmail: FakeGmail) -> None:
    sessions = [login(gmail) for _ in range(15)]
    extra = connect(gmail)
    token = gmail.mint_token(ALICE)
    with pytest.raises(imaplib.IMAP4.error, match="Too many simultaneous connections"):
        extra.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, token))
    assert server_lines(gmail)[-1].endswith(
        b" NO [ALERT] Too many simultaneous connections. (Failure)"
    )
    other = login(gmail, BOB)  # the limit is per user
    assert gmail.end_sessions(ALICE, "imap") == 15
    for imap in sessions:
        with pytest.raises(imaplib.IMAP4.abort, match="Session expired"):
            imap.noop()
        imap.shutdown()
    extra.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, token))
    extra.logout()
    other.logout()


# -- mailboxes, via imaplib --


def test_list_xlist_namespace_and_status(mail: FakeGmail) -> None:
    imap = login(mail)
    _typ, boxes = imap.list()
    assert boxes[:3] == [
        b'(\\HasNoChildren) "/" "INBOX"',
        b'(\\HasChildren \\Noselect) "/" "[Gmail]"',
        b'(\\All \\HasNoChildren) "/" "[Gmail]/All Mail"',
    ]
    assert imap.list('""', "%")[1] == boxes[:2]
    imap.xatom("XLIST", '""', "*")
    assert imap.response("XLIST")[1][0] == b'(\\HasNoChildren \\Inbox) "/" "Inbox"'
    assert imap.namespace()[1] == [b'(("" "/")) NIL NIL']
    assert imap.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")[1] == [
        b'"INBOX" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)'
    ]
    assert imap.create("Work")[0] == "OK"
    assert imap.create("Work")[1] == [
        b"[ALREADYEXISTS] Duplicate folder name Work (Failure)"
    ]
    assert imap.select("Nope") == (
        "NO",
        [b"[NONEXISTENT] Unknown Mailbox: Nope (Failure)"],
    )
    imap.logout()


def test_select_and_examine_lines(mail: FakeGmail) -> None:
    imap = login(mail)
    assert imap.select("INBOX") == ("OK", [b"3"])
    assert server_lines(mail)[-7:] == [
        b"* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen "
        b"$NotPhishing $Phishing)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen "
        b"$NotPhishing $Phishing \\*)] Flags permitted.",
        b"* OK [UIDVALIDITY 1] UIDs valid.",
        b"* 3 EXISTS",
        b"* 0 RECENT",
        b"* OK [UIDNEXT 4] Predicted next UID.",
        server_lines(mail)[-1][:5] + b" OK [READ-WRITE] INBOX selected. (Success)",
    ]
    imap.select("INBOX", readonly=True)
    assert server_lines(mail)[-1].endswith(b"OK [READ-ONLY] INBOX selected. (Success)")
    # Read-only: BODY[] does not set \Seen.
    imap.fetch("1", "(BODY[])")
    assert imap.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS ())"]
    imap.logout()


def test_fetch_items_and_implied_seen(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    raw = message("one")
    data = imap.fetch("1", "(UID RFC822.SIZE BODY.PEEK[] FLAGS)")[1]
    assert data[0] == (
        b"1 (UID 1 RFC822.SIZE %d BODY[] {%d}" % (len(raw), len(raw)),
        raw,
    )
    assert data[1] == b" FLAGS ())"
    data = imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)] BODY[TEXT]<1.3>)")[1]
    assert data[0] == (
        b"1 (BODY[HEADER.FIELDS (SUBJECT)] {16}",
        b"Subject: one\r\n\r\n",
    )
    assert data[1] == (b" BODY[TEXT]<1> {3}", b"ell")
    assert data[2] == b" FLAGS (\\Seen))"  # BODY[] set \Seen and says so
    _typ, data = imap.uid(
        "FETCH", "2", "(INTERNALDATE X-GM-MSGID X-GM-THRID X-GM-LABELS)"
    )
    assert data[0].startswith(b"2 (X-GM-THRID ")
    assert data[0].endswith(
        b' X-GM-LABELS (\\Inbox) UID 2 INTERNALDATE "01-Mar-2024 12:00:00 +0000")'
    )
    data = imap.fetch("1:*", "(RFC822.HEADER)")[1]
    assert len([d for d in data if isinstance(d, tuple)]) == 3
    imap.logout()


def gm_ids(imap: imaplib.IMAP4_SSL, uid: int) -> tuple[bytes, bytes]:
    """The X-GM-THRID and X-GM-MSGID of ``uid``, each fetched alone."""
    [data] = imap.uid("FETCH", str(uid), "(X-GM-THRID X-GM-MSGID)")[1]
    assert isinstance(data, bytes)
    found = re.search(rb"X-GM-THRID (\d+) X-GM-MSGID (\d+)", data)
    assert found is not None
    return found[1], found[2]


def test_fetch_answers_in_gmails_order_whatever_the_request_order(
    mail: FakeGmail,
) -> None:
    # Gmail puts X-GM-THRID, X-GM-MSGID, X-GM-LABELS first, then UID, then the
    # rest as asked; getmail6 parses the extensions by that position.
    imap = login(mail)
    imap.select()
    thrid, msgid = gm_ids(imap, 2)
    gm = b"X-GM-THRID %s X-GM-MSGID %s X-GM-LABELS (\\Inbox)" % (thrid, msgid)
    imap.uid("FETCH", "2", "(FLAGS X-GM-LABELS RFC822.SIZE X-GM-MSGID X-GM-THRID)")
    imap.fetch("2", "(X-GM-LABELS FLAGS UID X-GM-THRID X-GM-MSGID)")
    imap.fetch("2", "(FLAGS X-GM-MSGID)")
    imap.uid("FETCH", "2", "(FLAGS)")
    size = len(message("two"))
    fetched = [line for line in server_lines(mail) if line.startswith(b"* 2 FETCH")]
    assert fetched[-4:] == [
        b"* 2 FETCH (%s UID 2 FLAGS () RFC822.SIZE %d)" % (gm, size),
        b"* 2 FETCH (%s UID 2 FLAGS ())" % gm,
        b"* 2 FETCH (X-GM-MSGID %s FLAGS ())" % msgid,
        b"* 2 FETCH (UID 2 FLAGS ())",
    ]
    imap.logout()


def test_fetch_puts_uid_after_the_gmail_items_and_before_the_rest(
    mail: FakeGmail,
) -> None:
    imap = login(mail)
    imap.select()
    thrid, _ = gm_ids(imap, 1)
    imap.fetch("1", "(INTERNALDATE X-GM-THRID UID)")
    assert [line for line in server_lines(mail) if b"FETCH" in line][-1] == (
        b'* 1 FETCH (X-GM-THRID %s UID 1 INTERNALDATE "01-Mar-2024 12:00:00 +0000")'
        % thrid
    )
    imap.logout()


def test_search_keys(mail: FakeGmail) -> None:
    mail.deliver(
        ALICE, message("four", "needle in here\r\n", sender="carol@example.com")
    )
    imap = login(mail)
    imap.select()
    imap.store("2", "+FLAGS", "(\\Seen \\Flagged)")

    def search(*criteria: str) -> bytes:
        return imap.search(None, *criteria)[1][0]

    assert search("ALL") == b"1 2 3 4"
    assert search("SEEN") == b"2" and search("UNSEEN") == b"1 3 4"
    assert search("FLAGGED") == b"2" and search("NOT", "FLAGGED") == b"1 3 4"
    assert search("FROM", "carol") == b"4" and search("TO", "alice") == b"1 2 3 4"
    assert search("SUBJECT", "thr") == b"3" and search("TEXT", "needle") == b"4"
    assert (
        search("BODY", "NEEDLE") == b"4"
        and search("HEADER", "Message-ID", "two@") == b"2"
    )
    assert search("OR", "SUBJECT", "one", "SUBJECT", "two") == b"1 2"
    assert (
        search("SINCE", "1-Mar-2024") == b"1 2 3 4"
        and search("BEFORE", "1-Mar-2024") == b""
    )
    assert search("2:3") == b"2 3" and search("UID", "3:*") == b"3 4"
    assert search("X-GM-RAW", '"from:carol needle"') == b"4"
    assert search("X-GM-RAW", '"is:unread -subject:one"') == b"3 4"
    assert imap.uid("SEARCH", None, "SUBJECT", "four")[1] == [b"4"]
    assert server_lines(mail)[-1].endswith(b"OK SEARCH completed (Success)")
    with pytest.raises(imaplib.IMAP4.error, match="Could not parse command"):
        imap.search(None, "BOGUS")
    imap.logout()


def test_append_with_literals_and_appenduid(gmail: FakeGmail) -> None:
    imap = login(gmail)
    body = message("appended")
    typ, data = imap.append("INBOX", "(\\Seen)", '"05-Feb-2024 10:11:12 +0100"', body)
    assert (typ, data) == ("OK", [b"[APPENDUID 1 1] (Success)"])
    assert gmail.messages(ALICE) == [body]
    assert b"+ go ahead" in server_lines(gmail)
    imap.select()
    assert imap.fetch("1", "(FLAGS INTERNALDATE)")[1] == [
        b'1 (FLAGS (\\Seen) INTERNALDATE "05-Feb-2024 10:11:12 +0100")'
    ]
    assert imap.append("Missing", None, None, body)[1] == [
        b"[TRYCREATE] No folder Missing (Failure)"
    ]
    imap.logout()


def test_literal_plus_needs_no_continuation(gmail: FakeGmail, raw: Raw) -> None:
    raw.line()
    raw.send(
        b"a1 AUTHENTICATE XOAUTH2 "
        + xoauth2_string(ALICE, gmail.mint_token(ALICE)).encode()
    )
    raw.line(), raw.line()
    body = b"Subject: plus\r\n\r\nx\r\n"
    raw.sock.sendall(b"a2 APPEND INBOX {%d+}\r\n%s\r\n" % (len(body), body))
    assert raw.line() == b"a2 OK [APPENDUID 1 1] (Success)"
    raw.send(b"a3 SELECT INBOX")
    while not (line := raw.line()).startswith(b"a3 "):
        pass
    raw.send(b"a4 FETCH 1 BODY.PEEK[]")
    assert raw.line() == b"* 1 FETCH (BODY[] {%d}" % len(body)
    assert raw.file.read(len(body)) == body
    assert raw.line() == b")"
    assert raw.line() == b"a4 OK Success"
    # The transcript keeps the literal apart from the lines around it.
    assert body in [x.data for x in gmail.transcript("imap") if x.direction == "S"]
    assert line.endswith(b"(Success)")


def test_expunge_numbers_and_store_replies(gmail: FakeGmail) -> None:
    for n in range(1, 6):
        gmail.deliver(ALICE, message(f"m{n}"))
    imap = login(gmail)
    imap.select()
    assert imap.store("2,3,5", "+FLAGS", "(\\Deleted)")[1] == [
        b"2 (FLAGS (\\Deleted))",
        b"3 (FLAGS (\\Deleted))",
        b"5 (FLAGS (\\Deleted))",
    ]
    assert imap.uid("STORE", "1", "+FLAGS.SILENT", "(\\Seen)")[1] == [None]
    assert imap.expunge() == ("OK", [b"2", b"2", b"3"])
    assert imap.fetch("1:*", "(UID)")[1] == [b"1 (UID 1)", b"2 (UID 4)"]
    assert [m.split(b"\r\n")[2] for m in gmail.messages(ALICE)] == [
        b"Subject: m1",
        b"Subject: m4",
    ]
    assert len(gmail.messages(ALICE, ALL_MAIL)) == 5  # archived, as Gmail does
    imap.logout()


def test_copy_move_and_labels(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    assert imap.copy("1", "[Gmail]/Trash") == ("OK", [b"[COPYUID 9 1 1] (Success)"])
    imap.response("COPYUID")
    assert imap.uid("MOVE", "2:3", "[Gmail]/Trash")[0] == "OK"
    assert imap.response("COPYUID") == ("COPYUID", [b"9 2:3 2:3"])
    assert imap.response("EXPUNGE") == ("EXPUNGE", [b"2", b"2"])
    assert len(mail.messages(ALICE, TRASH)) == 3 and len(mail.messages(ALICE)) == 1
    data = imap.store("1", "+X-GM-LABELS", "(Work \\Starred)")[1]
    assert data == [b'1 (X-GM-LABELS (\\Inbox \\Starred \\Trash "Work"))']
    assert mail.messages(ALICE, "Work") == [message("one")]
    imap.store("1", "-X-GM-LABELS", "(\\Inbox)")
    assert imap.noop()[0] == "OK"
    assert imap.response("EXPUNGE") == ("EXPUNGE", [b"1"])
    assert mail.messages(ALICE) == []
    imap.logout()


def test_a_second_session_sees_changes_with_correct_numbers(mail: FakeGmail) -> None:
    first, second = login(mail), login(mail)
    first.select()
    second.select()
    assert first.response("EXISTS") == ("EXISTS", [b"3"])
    second.store("1", "+FLAGS", "(\\Deleted)")
    second.expunge()
    mail.deliver(ALICE, message("four"))
    # Until first hears of the expunge, its numbers do not move.
    assert first.fetch("2", "(UID)")[1] == [b"2 (UID 2)"]
    assert first.response("EXISTS") == ("EXISTS", [b"4"])
    first.noop()
    assert first.response("EXPUNGE") == ("EXPUNGE", [b"1"])
    assert first.fetch("1:*", "(UID)")[1] == [b"1 (UID 2)", b"2 (UID 3)", b"3 (UID 4)"]
    first.logout()
    second.logout()


def test_close_expunges_silently_and_unselect_does_not(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.unselect()
    assert len(mail.messages(ALICE)) == 3
    imap.select()
    assert imap.close() == ("OK", [b"Returned to authenticated state. (Success)"])
    assert len(mail.messages(ALICE)) == 2
    imap.logout()


# -- IDLE --


def test_idle_pushes_exists_and_expunge(mail: FakeGmail) -> None:
    client = IMAPClient(mail.host, port=mail.imap_port, ssl_context=mail.ssl_context())
    client.oauth2_login(ALICE, mail.mint_token(ALICE))
    client.select_folder("INBOX")
    client.idle()
    mail.deliver(ALICE, message("four"))
    assert client.idle_check(timeout=30) == [(4, b"EXISTS")]
    other = login(mail)
    other.select()
    other.store("2", "+FLAGS", "(\\Deleted)")
    assert client.idle_check(timeout=30) == [
        (2, b"FETCH", (b"UID", 2, b"FLAGS", (b"\\Deleted",)))
    ]
    other.expunge()
    assert client.idle_check(timeout=30) == [(2, b"EXPUNGE")]
    text, responses = client.idle_done()
    assert text == b"IDLE terminated (Success)" and responses == []
    assert b"+ idling" in server_lines(mail)
    other.logout()
    client.logout()


# -- other clients --


def test_imapclient_reads_searches_flags_and_moves(mail: FakeGmail) -> None:
    with IMAPClient(
        mail.host, port=mail.imap_port, ssl_context=mail.ssl_context()
    ) as c:
        assert c.oauth2_login(ALICE, mail.mint_token(ALICE)) == [
            b"alice@example.com authenticated (Success)"
        ]
        assert c.find_special_folder(b"\\Trash") == "[Gmail]/Trash"
        assert c.select_folder("INBOX")[b"EXISTS"] == 3
        uids = c.search(["SUBJECT", "two"])
        assert uids == [2]
        data = c.fetch(uids, ["BODY.PEEK[]", "X-GM-LABELS", "FLAGS", "ENVELOPE"])
        assert data[2][b"BODY[]"] == message("two")
        assert data[2][b"X-GM-LABELS"] == (b"\\Inbox",)
        assert data[2][b"ENVELOPE"].subject == b"two"
        c.add_flags(uids, [b"\\Seen"])
        assert c.get_flags(uids) == {2: (b"\\Seen",)}
        c.move(uids, "[Gmail]/Trash")
        assert c.search() == [1, 3]
        assert c.gmail_search("subject:three") == [3]
        c.delete_messages([1])
        c.expunge()
        assert c.search() == [3]


def test_imap_tools_login_fetch_and_delete(mail: FakeGmail) -> None:
    box = MailBox(mail.host, port=mail.imap_port, ssl_context=mail.ssl_context())
    box.xoauth2(ALICE, mail.mint_token(ALICE))
    try:
        subjects = [m.subject for m in box.fetch(mark_seen=False)]
        assert subjects == ["one", "two", "three"]
        assert [m.subject for m in box.fetch("SUBJECT two")] == ["two"]
        box.delete(box.uids("SUBJECT one"))
        assert [f.name for f in box.folder.list()][:2] == ["INBOX", "[Gmail]"]
        assert box.folder.status("INBOX")["MESSAGES"] == 2
        box.move(box.uids("SUBJECT three"), "[Gmail]/Spam")
        assert len(mail.messages(ALICE, "[Gmail]/Spam")) == 1
    finally:
        box.logout()


# -- fault controls --


def test_fault_drop_before_fetch(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    mail.fail_next("imap", "FETCH", "drop_before")
    with pytest.raises(imaplib.IMAP4.abort):
        imap.fetch("1", "(BODY[])")
    imap.shutdown()
    assert "\\Seen" not in repr(mail.messages(ALICE))  # never ran
    assert server_lines(mail)[-1].endswith(b"[READ-WRITE] INBOX selected. (Success)")


def test_fault_drop_after_append_stores_the_message(gmail: FakeGmail) -> None:
    imap = login(gmail)
    gmail.fail_next("imap", "APPEND", "drop_after")
    with pytest.raises(imaplib.IMAP4.abort):
        imap.append("INBOX", None, None, message("kept"))
    imap.shutdown()
    assert gmail.messages(ALICE) == [message("kept")]


def test_fault_replies_system_error_and_too_many(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    mail.fail_next("imap", "UID FETCH", "reply", line="* BYE System Error")
    assert imap.fetch("1", "(UID)")[0] == "OK"  # only UID FETCH is armed
    with pytest.raises(imaplib.IMAP4.abort, match="System Error"):
        imap.uid("FETCH", "1", "(UID)")
    imap.shutdown()
    mail.fail_next(
        "imap",
        "AUTHENTICATE",
        "reply",
        line="NO [ALERT] Too many simultaneous connections. (Failure)",
    )
    imap = connect(mail)
    token = mail.mint_token(ALICE)
    with pytest.raises(imaplib.IMAP4.error, match="Too many simultaneous"):
        imap.authenticate("XOAUTH2", lambda _: xoauth2_response(ALICE, token))
    imap.logout()


def test_hold_next_delays_the_reply_until_released(mail: FakeGmail) -> None:
    imap = login(mail)
    release = mail.hold_next("imap", "NOOP")
    result: list[tuple[str, list[bytes | None]]] = []
    done = threading.Event()

    def noop() -> None:
        result.append(imap.noop())
        done.set()

    thread = threading.Thread(target=noop)
    thread.start()
    assert not done.is_set()
    release.set()
    assert done.wait(30)
    thread.join()
    assert result == [("OK", [b"Success"])]
    imap.logout()


# -- the pure parts --


def test_tokenizer_literals_lists_and_brackets() -> None:
    assert tokenize(b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (TO)]<0.9>)") == [
        "a",
        "UID",
        "FETCH",
        "1:*",
        ["FLAGS", "BODY.PEEK[HEADER.FIELDS (TO)]<0.9>"],
    ]
    assert tokenize(b'b APPEND "In \\"x\\"" {3}\r\nabc {2+}\r\nde') == [
        "b",
        "APPEND",
        'In "x"',
        b"abc",
        b"de",
    ]
    for bad in (b"c (FLAGS", b'd "open', b"e {9}\r\nshort", b"f )"):
        with pytest.raises(ImapSyntaxError):
            tokenize(bad)


def test_sequence_sets() -> None:
    assert SequenceSet.parse("1,3:4,7:*").select(range(1, 10), 9) == [1, 3, 4, 7, 8, 9]
    assert SequenceSet.parse("5:*").contains(3, 3)  # n:* always holds the last
    with pytest.raises(ImapSyntaxError):
        SequenceSet.parse("0:2")


def test_dates_and_sections() -> None:
    when = parse_datetime("17-Jul-1996 02:44:25 -0700")
    assert format_internaldate(when) == b'"17-Jul-1996 02:44:25 -0700"'
    raw = (
        b"Content-Type: multipart/mixed; boundary=XX\r\nSubject: s\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
        b"--XX\r\n\r\npart two\r\n--XX--\r\n"
    )
    items = parse_fetch_items(
        tokenize(b"(BODY[1] BODY[2.MIME] BODY[HEADER] BODY[9])")[0]
    )
    assert [section_bytes(raw, i) for i in items] == [
        b"part one",
        b"\r\n",
        b"Content-Type: multipart/mixed; boundary=XX\r\nSubject: s\r\n\r\n",
        b"",
    ]


def test_session_expiry_ends_an_idle_at_once(
    mail: FakeGmail, clock: ManualClock
) -> None:
    client = IMAPClient(mail.host, port=mail.imap_port, ssl_context=mail.ssl_context())
    client.oauth2_login(ALICE, mail.mint_token(ALICE, ttl=60))
    client.select_folder("INBOX")
    client.idle()
    clock.advance(60)
    assert client.idle_check(timeout=30) == [
        (b"BYE", *b"Session expired, please login again.".split())
    ]
    client.shutdown()


def test_uid_expunge_removes_only_the_named_deleted_messages(mail: FakeGmail) -> None:
    imap = login(mail)
    imap.select()
    imap.store("1:3", "+FLAGS.SILENT", "(\\Deleted)")
    assert imap.uid("EXPUNGE", "2:3")[0] == "OK"
    assert imap.response("EXPUNGE") == ("EXPUNGE", [b"2", b"2"])
    assert imap.fetch("1:*", "(UID FLAGS)")[1] == [b"1 (UID 1 FLAGS (\\Deleted))"]
    imap.logout()


def test_labels_are_renamed_and_deleted_but_mail_stays_in_all_mail() -> None:
    import imaplib

    from gmail_xoauth2.testing import FakeGmail

    with FakeGmail() as gmail:
        user = gmail.users[0]
        imap = imaplib.IMAP4_SSL(
            gmail.host, gmail.imap_port, ssl_context=gmail.ssl_context()
        )
        try:
            token = gmail.mint_token(user)
            imap.authenticate(
                "XOAUTH2", lambda _: f"user={user}\1auth=Bearer {token}\1\1".encode()
            )
            assert imap.create("Projects")[0] == "OK"
            raw = b"Subject: plan\r\n\r\nbody\r\n"
            assert imap.append("Projects", None, None, raw)[0] == "OK"
            assert imap.rename("Projects", "Work")[0] == "OK"
            assert gmail.messages(user, "Work") == [raw]
            names = b"".join(line for line in imap.list()[1] if line)
            assert b'"Work"' in names and b'"Projects"' not in names
            assert imap.rename("INBOX", "Other")[0] == "NO"
            assert imap.delete('"[Gmail]/Sent Mail"')[0] == "NO"
            assert imap.delete("Work")[0] == "OK"
            assert imap.delete("Work")[0] == "NO"
            assert raw in gmail.messages(user, "[Gmail]/All Mail")
        finally:
            imap.logout()
