"""Gmail's IMAP (X-GM-RAW, X-GM-LABELS, X-GM-THRID/MSGID, SPECIAL-USE) on the fake."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from gmail_xoauth2 import (
    IMAP4,
    Backoff,
    ConfigurationError,
    IMAPConnectionLost,
    ProtocolError,
)
from gmail_xoauth2._imap_gmail import GmailCommands
from gmail_xoauth2._mutf7 import ModifiedUTF7Error
from gmail_xoauth2.testing._mailstore import ALL_MAIL, TRASH
from gmail_xoauth2.testing.gmail import FakeGmail

ALICE = "alice@example.com"
BOB = "bob@example.com"

if issubclass(IMAP4, GmailCommands):
    _IMAP4: type[IMAP4] = IMAP4
else:
    # GmailCommands after IMAP4, where IMAP4's bases will put it: IMAP4.select
    # (which remembers the mailbox for a reconnect) runs first, as it will.
    class _IMAP4(IMAP4, GmailCommands):  # type: ignore[no-redef]
        """IMAP4 with the Gmail helpers, until IMAP4 lists them among its bases."""


def message(subject: str, *, reply_to: str | None = None, body: str = "hi") -> bytes:
    extra = f"In-Reply-To: <{reply_to}@x>\r\n" if reply_to else ""
    return (
        f"From: Bob <{BOB}>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n"
        f"{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    with FakeGmail() as fake:
        for subject in ("one", "two", "three"):
            fake.deliver(ALICE, message(subject))
        yield fake


@pytest.fixture
def imap(gmail: FakeGmail) -> Iterator[Any]:
    m = _IMAP4(
        ALICE,
        gmail.token_provider(ALICE),
        gmail.host,
        gmail.imap_port,
        ssl_context=gmail.ssl_context(),
        backoff=Backoff(sleep=lambda _: None),
        timeout=10,
    )
    m.select("INBOX")
    yield m
    m.logout()


def sent(gmail: FakeGmail) -> list[bytes]:
    """What the client sent, without imaplib's tags (literals as they are)."""
    return [
        re.sub(rb"^[A-Z]{4}\d+ ", b"", line.data)
        for line in gmail.transcript("imap")
        if line.direction == "C"
    ]


# --- X-GM-RAW ---------------------------------------------------------------------


def test_gmail_search_returns_uids_in_order(imap: Any, gmail: FakeGmail) -> None:
    assert imap.gmail_search("from:bob") == [1, 2, 3]
    assert imap.gmail_search('subject:two OR "subject:three"') == []
    assert imap.gmail_search("subject:two") == [2]
    assert imap.gmail_search("subject:nothing") == []
    assert b'UID SEARCH X-GM-RAW "subject:two"' in sent(gmail)


def test_gmail_search_quotes_the_query(imap: Any, gmail: FakeGmail) -> None:
    assert imap.gmail_search('subject:"two"') == [2]
    assert b'UID SEARCH X-GM-RAW "subject:\\"two\\""' in sent(gmail)


def test_a_query_that_is_not_ascii_goes_as_a_utf8_literal(
    imap: Any, gmail: FakeGmail
) -> None:
    gmail.deliver(ALICE, message("Réunion 😀"))
    query = "subject:Réunion 😀"
    assert imap.gmail_search(query) == [4]
    size = len(query.encode())
    lines = sent(gmail)
    at = lines.index(b"UID SEARCH CHARSET UTF-8 X-GM-RAW {%d}" % size)
    assert lines[at + 1] == query.encode()
    assert imap.gmail_search("Réunion") == [4]
    assert imap.gmail_search("") == [1, 2, 3, 4]


def test_a_refused_search_raises_imaplibs_error(imap: Any) -> None:
    with pytest.raises(imap.error):
        imap.gmail_search("frobnicate:yes")


# --- labels -------------------------------------------------------------------------


def test_labels_keep_system_labels_apart(imap: Any, gmail: FakeGmail) -> None:
    assert imap.labels([1, 2]) == {1: {"\\Inbox"}, 2: {"\\Inbox"}}
    # A user label named like a system label stays apart from it.
    imap.add_labels([1, 2], ["Work", "\\Starred", "Starred"])
    assert imap.labels([1, 2, 3]) == {
        1: {"\\Inbox", "\\Starred", "Work", "Starred"},
        2: {"\\Inbox", "\\Starred", "Work", "Starred"},
        3: {"\\Inbox"},
    }
    assert b'UID STORE 1:2 +X-GM-LABELS ("Work" \\Starred "Starred")' in sent(gmail)


def test_labels_that_are_not_ascii_are_encoded_and_decoded(
    imap: Any, gmail: FakeGmail
) -> None:
    imap.add_labels([3], ["Reçus", 'say "hi" & 😀', "Проекты/2024"])
    assert imap.labels([3]) == {
        3: {"\\Inbox", "Reçus", 'say "hi" & 😀', "Проекты/2024"}
    }
    line = next(x for x in sent(gmail) if x.startswith(b"UID STORE"))
    assert line.startswith(
        b'UID STORE 3 +X-GM-LABELS ("Re&AOc-us" "say \\"hi\\" &- &2D3eAA-"'
    )
    # The fake names the label's folder as Gmail does: in modified UTF-7.
    assert gmail.messages(ALICE, "Re&AOc-us") == [message("three")]
    # And select() takes the decoded name.
    imap.select("Reçus")
    assert imap.gmail_search("subject:three") == [1]
    assert b'SELECT "Re&AOc-us"' not in sent(gmail)  # no space: no quotes
    assert b"SELECT Re&AOc-us" in sent(gmail)


def test_remove_and_set_labels(imap: Any) -> None:
    imap.add_labels([1], "Work")  # one str is one label
    imap.add_labels([1], ["Later"])
    imap.remove_labels([1], ["Later", "\\Inbox"])  # archived
    imap.select(imap.special_folder("\\All"))
    [uid] = imap.gmail_search("subject:one")
    assert imap.labels([uid]) == {uid: {"Work"}}
    imap.set_labels([uid], ["\\Important", "Done"])
    assert imap.labels([uid]) == {uid: {"\\Important", "Done"}}
    imap.set_labels([uid], [])
    assert imap.labels([uid]) == {uid: set()}


def test_nothing_is_sent_for_no_uids_or_no_labels(imap: Any, gmail: FakeGmail) -> None:
    before = len(sent(gmail))
    assert imap.labels([]) == {}
    assert imap.thread_ids([]) == {}
    imap.add_labels([], ["Work"])
    imap.remove_labels([1], [])
    assert imap.delete_permanently("INBOX", []) == 0
    assert len(sent(gmail)) == before


@pytest.mark.parametrize("uids", [[0], [-1], ["1"], [1.0], [True], 5])
def test_uids_must_be_positive_ints(imap: Any, uids: Any) -> None:
    with pytest.raises(ConfigurationError):
        imap.labels(uids)


def test_an_empty_label_is_refused(imap: Any) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        imap.add_labels([1], [""])


# --- thread and message ids --------------------------------------------------------


def test_thread_and_message_ids(imap: Any, gmail: FakeGmail) -> None:
    gmail.deliver(ALICE, message("re-one", reply_to="one"))
    threads = imap.thread_ids([1, 2, 3, 4])
    msgids = imap.message_ids([1, 2, 3, 4])
    assert set(threads) == set(msgids) == {1, 2, 3, 4}
    assert all(isinstance(v, int) for v in [*threads.values(), *msgids.values()])
    assert threads[4] == threads[1] != threads[2]
    assert len(set(msgids.values())) == 4
    # The same message in All Mail: another UID, the same ids.
    imap.select(imap.special_folder("all"))
    [uid] = imap.gmail_search("subject:re-one")
    assert imap.message_ids([uid]) == {uid: msgids[4]}
    assert imap.thread_ids([uid]) == {uid: threads[1]}


def test_helpers_work_across_a_session_end(imap: Any, gmail: FakeGmail) -> None:
    assert gmail.end_sessions(ALICE, "imap") >= 1
    assert imap.labels([1]) == {1: {"\\Inbox"}}
    assert imap.gmail_search("subject:two") == [2]


# --- special folders ------------------------------------------------------------------


def test_special_folders_from_list(imap: Any, gmail: FakeGmail) -> None:
    assert imap.special_folders() == {
        "\\All": "[Gmail]/All Mail",
        "\\Drafts": "[Gmail]/Drafts",
        "\\Important": "[Gmail]/Important",
        "\\Sent": "[Gmail]/Sent Mail",
        "\\Junk": "[Gmail]/Spam",
        "\\Flagged": "[Gmail]/Starred",
        "\\Trash": "[Gmail]/Trash",
    }
    assert b'LIST "" "*"' in sent(gmail)
    assert imap.special_folder("\\Trash") == "[Gmail]/Trash"
    assert imap.special_folder("junk") == "[Gmail]/Spam"
    assert imap.special_folder("\\Archive") is None
    typ, data = imap.select(imap.special_folder("\\All"))
    assert (typ, data) == ("OK", [b"3"])
    assert b'SELECT "[Gmail]/All Mail"' in sent(gmail)


def test_an_unknown_special_use_is_refused(imap: Any) -> None:
    with pytest.raises(ConfigurationError, match="not a special use"):
        imap.special_folder("\\Spam")


def test_select_sends_names_already_in_imaps_form_unchanged(
    imap: Any, gmail: FakeGmail
) -> None:
    imap.select('"[Gmail]/All Mail"')
    imap.select("INBOX")
    imap.select("[Gmail]/Spam")
    assert sent(gmail)[-3:] == [
        b'SELECT "[Gmail]/All Mail"',
        b"SELECT INBOX",
        b"SELECT [Gmail]/Spam",
    ]
    assert imap.mailbox_argument("R&D") == "R&-D"
    assert imap.mailbox_argument("R&-D") == "R&-D"
    assert imap.mailbox_argument('"Envoyés"') == '"Envoy&AOk-s"'
    assert imap.mailbox_argument("") == '""'
    assert imap.mailbox_argument('a "b"\\') == '"a \\"b\\"\\\\"'


# --- a true delete -------------------------------------------------------------------


def test_delete_permanently_moves_to_trash_and_expunges_there(
    imap: Any, gmail: FakeGmail
) -> None:
    imap.add_labels([1], ["Work"])
    assert imap.delete_permanently("INBOX", [1, 2]) == 2
    assert gmail.messages(ALICE) == [message("three")]
    assert gmail.messages(ALICE, ALL_MAIL) == [message("three")]
    assert gmail.messages(ALICE, TRASH) == []
    assert gmail.messages(ALICE, "Work") == []
    lines = sent(gmail)
    at = lines.index(b"UID MOVE 1:2 [Gmail]/Trash")
    assert lines[at + 1 :] == [
        b"SELECT [Gmail]/Trash",
        b"UID STORE 1:2 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 1:2",
        b"SELECT INBOX",
    ]
    assert imap.gmail_search("") == [3]  # INBOX is selected again


def test_delete_permanently_leaves_other_trash_alone(
    imap: Any, gmail: FakeGmail
) -> None:
    gmail.deliver(ALICE, message("already binned"), TRASH)
    trash = imap.special_folder("\\Trash")
    imap.select(trash)
    imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")  # the user's own, not ours
    imap.select("INBOX")
    assert imap.delete_permanently("INBOX", [3]) == 1
    assert gmail.messages(ALICE, TRASH) == [message("already binned")]
    assert imap.delete_permanently(trash, [1]) == 1
    assert gmail.messages(ALICE, TRASH) == []
    # In the Trash already: no move, and the Trash stays selected.
    assert sent(gmail)[-3:] == [
        b"SELECT [Gmail]/Trash",
        b"UID STORE 1 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 1",
    ]


def test_delete_permanently_without_move_copies_and_expunges(
    imap: Any, gmail: FakeGmail
) -> None:
    imap.capabilities = tuple(c for c in imap.capabilities if c != "MOVE")
    assert imap.delete_permanently("INBOX", [2]) == 1
    assert gmail.messages(ALICE) == [message("one"), message("three")]
    assert len(gmail.messages(ALICE, ALL_MAIL)) == 2
    lines = sent(gmail)
    at = lines.index(b"UID COPY 2 [Gmail]/Trash")
    assert lines[at + 1 : at + 4] == [
        b"UID STORE 2 +FLAGS.SILENT (\\Deleted)",
        b"UID EXPUNGE 2",
        b"SELECT [Gmail]/Trash",
    ]


def test_delete_permanently_without_uidplus_finds_them_by_gmail_id(
    imap: Any, gmail: FakeGmail
) -> None:
    gmail.deliver(ALICE, message("already binned"), TRASH)
    imap.capabilities = tuple(c for c in imap.capabilities if c != "UIDPLUS")
    assert imap.delete_permanently("INBOX", [1]) == 1
    assert gmail.messages(ALICE, TRASH) == [message("already binned")]
    assert b"EXPUNGE" in sent(gmail)
    assert not any(x.startswith(b"UID EXPUNGE") for x in sent(gmail))


def test_delete_permanently_needs_a_way_to_find_the_moved_messages(
    imap: Any, gmail: FakeGmail
) -> None:
    imap.capabilities = tuple(
        c for c in imap.capabilities if c not in ("UIDPLUS", "X-GM-EXT-1")
    )
    with pytest.raises(imap.error, match="neither UIDPLUS"):
        imap.delete_permanently("INBOX", [1])
    assert len(gmail.messages(ALICE)) == 3


def test_a_move_cut_short_is_never_sent_again(imap: Any, gmail: FakeGmail) -> None:
    gmail.fail_next("imap", "UID MOVE", "drop_after")
    with pytest.raises(IMAPConnectionLost) as caught:
        imap.delete_permanently("INBOX", [1])
    assert caught.value.outcome_unknown
    assert sum(x.startswith(b"UID MOVE") for x in sent(gmail)) == 1
    # The messages are in the Trash, not deleted: the caller decides.
    assert gmail.messages(ALICE, TRASH) == [message("one")]
    assert imap.gmail_search("") == [2, 3]


# --- replies that cannot be parsed ----------------------------------------------------


class Canned(GmailCommands):
    """GmailCommands answering from canned imaplib data, without a connection."""

    def __init__(self, replies: dict[str, list[Any]], *, utf8: bool = False) -> None:
        # imaplib.IMAP4.__init__ would connect: set only what the helpers read.
        self.replies = replies
        self.utf8_enabled = utf8
        self.capabilities = ("IMAP4REV1",)

    def uid(self, command: str, *args: str | bytes | None) -> tuple[str, list[Any]]:
        return "OK", self.replies[command]

    def list(self, directory: str = '""', pattern: str = "*") -> tuple[str, list[Any]]:
        return "OK", self.replies["LIST"]


def test_localized_special_folders_are_decoded() -> None:
    imap = Canned(
        {
            "LIST": [
                b'(\\HasNoChildren) "/" "INBOX"',
                b'(\\HasChildren \\Noselect) "/" "[Google Mail]"',
                b'(\\All \\HasNoChildren) "/" "[Google Mail]/Alle Nachrichten"',
                b'(\\HasNoChildren \\Sent) "/" "[Google Mail]/Gesendet"',
                b'(\\HasNoChildren \\Trash) "/" "[Google Mail]/Papierkorb"',
                b'(\\Drafts \\HasNoChildren) "/" [Gmail]/Brouillons',
                (b'(\\HasNoChildren \\Junk) "/" {21}', b"[Gmail]/Pourriel&AOk-"),
                b"",  # imaplib: the rest of the line after the literal
                b'(\\HasNoChildren \\Important) "/" "&BBIEMAQ2BD0EPgQ1-"',
                b'(\\HasNoChildren \\Flagged \\Noselect) "/" "Gone"',
            ]
        }
    )
    assert imap.special_folders() == {
        "\\All": "[Google Mail]/Alle Nachrichten",
        "\\Sent": "[Google Mail]/Gesendet",
        "\\Trash": "[Google Mail]/Papierkorb",
        "\\Drafts": "[Gmail]/Brouillons",
        "\\Junk": "[Gmail]/Pourrielé",
        "\\Important": "Важное",
    }
    assert Canned(
        {"LIST": [b'(\\Sent) "/" "[Gmail]/Envoy\xc3\xa9s"']}, utf8=True
    ).special_folders() == {"\\Sent": "[Gmail]/Envoyés"}


def test_labels_in_every_form_gmail_sends() -> None:
    imap = Canned(
        {
            "FETCH": [
                b'1 (X-GM-LABELS ("\\\\Important" \\Inbox Work "Muy Importante")'
                b" UID 7)",
                (b"2 (UID 8 X-GM-LABELS (\\Sent {9}", b"Re&AOc-us"),
                b"))",
                b"3 (FLAGS (\\Seen))",  # unsolicited: no UID
                (b"4 (UID 9 X-GM-LABELS ({1}", b"a"),
                (b" {1}", b"b"),
                b"))",
                b"5 (UID 10 X-GM-LABELS ())",
            ]
        }
    )
    assert imap.labels([7, 8, 9, 10]) == {
        7: {"\\Important", "\\Inbox", "Work", "Muy Importante"},
        8: {"\\Sent", "Reçus"},
        9: {"a", "b"},
        10: set(),
    }


@pytest.mark.parametrize(
    ("command", "data"),
    [
        ("FETCH", [b"1 (UID 7 X-GM-LABELS (Work)"]),  # unbalanced
        ("FETCH", [b"1 (UID 7 X-GM-LABELS)"]),  # odd pairs
        ("FETCH", [b"1 (UID seven X-GM-LABELS ())"]),
        ("FETCH", [b"1 (UID 7 X-GM-LABELS Work)"]),  # not a list
        ("FETCH", [b'1 (UID 7 X-GM-LABELS ("&Jjo"))']),  # bad modified UTF-7
        ("FETCH", [b'1 (UID 7 X-GM-LABELS ("\xff"))']),
        ("FETCH", [b"1 UID 7"]),
        ("FETCH", [(b"1 (UID 7 X-GM-LABELS ({9}", b"abc"), b"))"]),
        ("FETCH", [42]),
        ("FETCH", [(b"1 (UID 7 X-GM-LABELS ({3}", None)]),
        ("FETCH", [b"1 (UID 7 X-GM-LABELS ())))"]),
    ],
)
def test_labels_that_cannot_be_parsed_raise_protocol_error(
    command: str, data: list[Any]
) -> None:
    with pytest.raises(ProtocolError):
        Canned({command: data}).labels([7])


@pytest.mark.parametrize(
    ("method", "command", "data"),
    [
        ("thread_ids", "FETCH", [b"1 (UID 7 X-GM-THRID abc)"]),
        ("message_ids", "FETCH", [b"1 (UID 7 X-GM-MSGID (1))"]),
        ("message_ids", "FETCH", [b"1 (UID 7 X-GM-MSGID -1)"]),
        ("gmail_search", "SEARCH", [b"1 2 x"]),
        ("gmail_search", "SEARCH", [(b"1", b"2")]),
        ("special_folders", "LIST", [b'(\\Trash) "/"']),
        ("special_folders", "LIST", [b'\\Trash "/" "Bin"']),
        ("special_folders", "LIST", [b'(\\Trash) "/" "&-&"']),
        ("special_folders", "LIST", [b'(\\Trash) "/" ("Bin")']),
    ],
)
def test_other_replies_that_cannot_be_parsed_raise_protocol_error(
    method: str, command: str, data: list[Any]
) -> None:
    imap = Canned({command: data})
    args: list[Any] = [] if method == "special_folders" else [[7]]
    if method == "gmail_search":
        args = ["x"]
    with pytest.raises(ProtocolError):
        getattr(imap, method)(*args)


def test_a_bad_label_raises_the_codecs_error() -> None:
    with pytest.raises(ModifiedUTF7Error):
        Canned({"FETCH": [b'1 (UID 7 X-GM-LABELS ("a&b"))']}).labels([7])
