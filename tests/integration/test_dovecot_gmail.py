"""The Gmail helpers' plain-IMAP half against a real Dovecot.

Dovecot here names its special folders in German and French (``Papierkorb``,
``Envoyés``, ``Alle Nachrichten``; see dovecot.conf.in), as Gmail does in an
account set to another language: the helpers find them by their RFC 6154
attribute, decode their modified UTF-7 names, select them by those names, and
delete for good by moving to the Trash (UID MOVE, or UID COPY and expunge) and
expunging there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gmail_xoauth2 import IMAP4
from gmail_xoauth2._imap_gmail import GmailCommands

from ._clients import MintingProvider
from .conftest import MailServer
from .test_dovecot_sessions import make_message

if issubclass(IMAP4, GmailCommands):
    _IMAP4: type[IMAP4] = IMAP4
else:
    # GmailCommands after IMAP4, where IMAP4's bases will put it: IMAP4.select
    # (which remembers the mailbox for a reconnect) runs first, as it will.
    class _IMAP4(IMAP4, GmailCommands):  # type: ignore[no-redef]
        """IMAP4 with the Gmail helpers, until IMAP4 lists them among its bases."""


def deliver(server: MailServer, user: str, subject: str) -> None:
    data = make_message("seed@example.com", user, subject).as_bytes()
    assert server.sink.deliver("seed@example.com", (user,), data).startswith("250")


@pytest.fixture
def imap(mail_server: MailServer, user: str) -> Iterator[Any]:
    for subject in ("one", "two", "three"):
        deliver(mail_server, user, subject)
    endpoint = mail_server.endpoint("imap")
    m = _IMAP4(
        user,
        MintingProvider(mail_server.google, user),
        endpoint.host,
        endpoint.port,
        ssl_context=mail_server.ssl_context(),
        timeout=10,
    )
    yield m
    m.logout()


def subjects(imap: Any) -> list[bytes]:
    _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return [item[1].strip() for item in data if isinstance(item, tuple)]


def test_special_folders_found_by_attribute_and_selected_by_name(imap: Any) -> None:
    assert imap.special_folders() == {
        "\\All": "Alle Nachrichten",
        "\\Drafts": "Brouillons",
        "\\Junk": "Spam",
        "\\Sent": "Envoyés",
        "\\Trash": "Papierkorb",
    }
    assert imap.special_folder("\\Important") is None
    for use in ("\\Sent", "\\All", "\\Trash"):
        typ, data = imap.select(imap.special_folder(use))
        assert (typ, data) == ("OK", [b"0"]), use


def test_delete_permanently_with_move(
    imap: Any, mail_server: MailServer, user: str
) -> None:
    assert "MOVE" in imap.capabilities
    imap.select("INBOX")
    assert imap.delete_permanently("INBOX", [1, 3]) == 2
    assert subjects(imap) == [b"Subject: two"]
    assert mail_server.messages(user, "Papierkorb") == []
    imap.select("Papierkorb")
    assert subjects(imap) == []


def test_delete_permanently_with_copy_and_expunge(
    imap: Any, mail_server: MailServer, user: str
) -> None:
    imap.capabilities = tuple(c for c in imap.capabilities if c != "MOVE")
    imap.select("INBOX")
    imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")  # the user's own: kept
    assert imap.delete_permanently("INBOX", [2]) == 1
    assert subjects(imap) == [b"Subject: one", b"Subject: three"]
    assert mail_server.messages(user, "Papierkorb") == []


def test_what_is_already_in_the_trash_is_deleted_there(
    imap: Any, mail_server: MailServer, user: str
) -> None:
    imap.select("INBOX")
    imap.uid("MOVE", "1:2", imap.special_folder("\\Trash"))
    trash = imap.special_folder("\\Trash")
    assert imap.delete_permanently(trash, [1]) == 1
    assert subjects(imap) == [b"Subject: two"]  # the Trash stays selected


def test_gmail_only_commands_fail_as_imaplib_errors(imap: Any) -> None:
    imap.select("INBOX")
    with pytest.raises(imap.error):
        imap.gmail_search("from:seed")
    with pytest.raises(imap.error):
        imap.labels([1])
